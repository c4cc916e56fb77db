package demoidp

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/go-jose/go-jose/v4"
)

// Metadata describes a provider's discovery document (OpenID Connect Discovery 1.0 §3, with
// the OAuth members of RFC 8414 §2). The endpoints sit below Issuer at this package's paths:
// /authorize, /token, /userinfo, /jwks and /logout. Zero fields leave optional members out.
type Metadata struct {
	// Issuer is advertised exactly as given (a trailing slash is significant, OpenID Connect
	// Discovery 1.0 §4.3); endpoint URLs are built on it without its trailing slash.
	Issuer string
	// IDTokenAlgs is id_token_signing_alg_values_supported (a required member).
	IDTokenAlgs []string
	// AuthMethods is token_endpoint_auth_methods_supported.
	AuthMethods []string
	// DPoPAlgs is dpop_signing_alg_values_supported (RFC 9449 §5.1); nil leaves it out, which
	// tells clients the provider does not do DPoP.
	DPoPAlgs []string
	// GrantTypes, ResponseModes, Scopes and Claims are grant_types_supported,
	// response_modes_supported, scopes_supported and claims_supported.
	GrantTypes, ResponseModes, Scopes, Claims []string
	// PKCE advertises code_challenge_methods_supported ["S256"] (RFC 7636, RFC 8414 §2).
	PKCE bool
	// Userinfo advertises userinfo_endpoint.
	Userinfo bool
	// EndSession advertises end_session_endpoint (OpenID Connect RP-Initiated Logout 1.0 §2.1).
	EndSession bool
	// IssParameter advertises authorization_response_iss_parameter_supported (RFC 9207 §3).
	IssParameter bool
	// Backchannel advertises backchannel_logout_supported and
	// backchannel_logout_session_supported (OpenID Connect Back-Channel Logout 1.0 §2.1): the
	// provider sends logout tokens, with sid, and its ID tokens carry sid.
	Backchannel bool
}

// Document returns the discovery document as a JSON object. It always has the members OpenID
// Connect Discovery 1.0 §3 requires: issuer, authorization_endpoint, token_endpoint, jwks_uri,
// response_types_supported ["code"], subject_types_supported ["public"] and
// id_token_signing_alg_values_supported.
func (m Metadata) Document() map[string]any {
	base := strings.TrimSuffix(m.Issuer, "/")
	d := map[string]any{
		"issuer":                                m.Issuer,
		"authorization_endpoint":                base + "/authorize",
		"token_endpoint":                        base + "/token",
		"jwks_uri":                              base + "/jwks",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": slices.Clone(m.IDTokenAlgs),
	}
	optional := map[string][]string{
		"token_endpoint_auth_methods_supported": m.AuthMethods,
		"dpop_signing_alg_values_supported":     m.DPoPAlgs,
		"grant_types_supported":                 m.GrantTypes,
		"response_modes_supported":              m.ResponseModes,
		"scopes_supported":                      m.Scopes,
		"claims_supported":                      m.Claims,
	}
	for member, values := range optional {
		if values != nil {
			d[member] = slices.Clone(values)
		}
	}
	if m.PKCE {
		d["code_challenge_methods_supported"] = []string{"S256"}
	}
	if m.Userinfo {
		d["userinfo_endpoint"] = base + "/userinfo"
	}
	if m.EndSession {
		d["end_session_endpoint"] = base + "/logout"
	}
	if m.IssParameter {
		d["authorization_response_iss_parameter_supported"] = true
	}
	if m.Backchannel {
		d["backchannel_logout_supported"] = true
		d["backchannel_logout_session_supported"] = true
	}
	return d
}

// SigningKey is a provider's ID-token signing key with the JWK Set (RFC 7517 §5) that
// publishes its public half. The key is named by its RFC 7638 thumbprint: KeyID is the kid of
// the JWK and of every token Signer signs.
type SigningKey struct {
	Signer jose.Signer // compact JWS, typ JWT, kid KeyID
	KeyID  string
	Public crypto.PublicKey
	JWKS   []byte // the JSON served at jwks_uri: the public key with alg, use "sig" and kid
}

// NewSigningKey wraps key, to sign with alg.
func NewSigningKey(key crypto.Signer, alg jose.SignatureAlgorithm) (*SigningKey, error) {
	pub := jose.JSONWebKey{Key: key.Public(), Algorithm: string(alg), Use: "sig"}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("signing key thumbprint: %w", err)
	}
	pub.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", pub.KeyID))
	if err != nil {
		return nil, fmt.Errorf("signer for %s: %w", alg, err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pub}})
	if err != nil {
		return nil, fmt.Errorf("JWK Set: %w", err)
	}
	return &SigningKey{Signer: signer, KeyID: pub.KeyID, Public: key.Public(), JWKS: jwks}, nil
}

// ServeJSON answers with body, a JSON document built once (discovery document, JWK Set).
func ServeJSON(body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}
}

// processRSAKey is the RSA key the providers of this process sign with, unless one asks for a
// key of its own: generating a 2048-bit key takes from tens to hundreds of milliseconds, and a
// test binary starts hundreds of providers.
var processRSAKey = sync.OnceValues(func() (*rsa.PrivateKey, error) {
	return rsa.GenerateKey(rand.Reader, 2048)
})

// RSAKey returns a 2048-bit RSA signing key: the one generated for this process on first use,
// or with fresh a new one (a provider whose key must differ from the others', e.g. to rotate
// keys behind one issuer).
func RSAKey(fresh bool) (*rsa.PrivateKey, error) {
	if fresh {
		return rsa.GenerateKey(rand.Reader, 2048)
	}
	return processRSAKey()
}
