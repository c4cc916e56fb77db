package upstream

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"

	"github.com/dpop-broker/dpop-broker/discovery"
)

// Client authentication toward the upstream (OpenID Connect Core §9, RFC 7523 §2.2):
// client_secret_basic and client_secret_post carry the connection's secret; private_key_jwt a
// fresh signed assertion per HTTP request, so that a DPoP nonce retry of the same token request
// never replays an assertion's jti.

// CodeClientAuthUnsupported: the upstream's discovery does not offer the connection's client
// authentication method (token_endpoint_auth_methods_supported) or assertion alg
// (token_endpoint_auth_signing_alg_values_supported).
const CodeClientAuthUnsupported = "client_auth_not_supported"

// ClientAuthAlgs are the private_key_jwt assertion algs the broker signs with.
var ClientAuthAlgs = []string{"RS256", "ES256", "PS256"}

// AssertionKey is one of the broker's client-authentication keys: its private key and key id
// (published in the broker's client-authentication JWK Set).
type AssertionKey struct {
	Key crypto.Signer
	KID string
}

// AssertionType is the client_assertion_type of a JWT client assertion (RFC 7523 §2.2).
const AssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// assertionLifetime is how long a client assertion is valid: long enough for one request with
// its clock skew, short enough that a captured one is soon useless (RFC 7523 §3 item 4).
const assertionLifetime = 60 * time.Second

// normalizeClientAuth checks the client authentication method and the assertion alg, and
// defaults the alg of private_key_jwt to RS256.
func (cfg *Config) normalizeClientAuth() error {
	switch cfg.TokenEndpointAuthMethod {
	case "", discovery.AuthClientSecretBasic, discovery.AuthClientSecretPost:
		if cfg.TokenEndpointAuthSigningAlg != "" {
			return errors.New("token_endpoint_auth_signing_alg applies to token_endpoint_auth_method private_key_jwt only")
		}
	case discovery.AuthPrivateKeyJWT:
		if cfg.TokenEndpointAuthSigningAlg == "" {
			cfg.TokenEndpointAuthSigningAlg = "RS256"
		}
		if !slices.Contains(ClientAuthAlgs, cfg.TokenEndpointAuthSigningAlg) {
			return fmt.Errorf("token_endpoint_auth_signing_alg %q is not supported (RS256, ES256 or PS256)", cfg.TokenEndpointAuthSigningAlg)
		}
	default:
		return fmt.Errorf("token_endpoint_auth_method %q is not supported (client_secret_basic, client_secret_post or private_key_jwt)", cfg.TokenEndpointAuthMethod)
	}
	return nil
}

// setupClientAuth puts, for private_key_jwt, the assertion transport under every upstream
// request of the connection (it acts only on requests marked by withAssertion).
func (c *Connection) setupClientAuth() error {
	if c.cfg.TokenEndpointAuthMethod != discovery.AuthPrivateKeyJWT {
		return nil
	}
	alg := c.cfg.TokenEndpointAuthSigningAlg
	k, ok := c.opts.ClientAuthKeys[alg]
	if !ok || k.Key == nil {
		return fmt.Errorf("no client-authentication key configured for %s (private_key_jwt)", alg)
	}
	opts := (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", k.KID)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(alg), Key: k.Key}, opts)
	if err != nil {
		return fmt.Errorf("client-authentication key cannot sign %s: %w", alg, err)
	}
	hc := *c.plain
	hc.Transport = &assertionTransport{base: c.plain.Transport, sign: func(aud string) (string, error) {
		return c.assertion(signer, aud)
	}}
	c.plain = &hc
	return nil
}

// assertion returns a client assertion for aud (RFC 7523 §3): iss and sub the client_id, a
// unique jti, iat now, exp assertionLifetime later.
func (c *Connection) assertion(signer jose.Signer, aud string) (string, error) {
	jti, err := randomString()
	if err != nil {
		return "", err
	}
	now := c.opts.Now()
	claims := jwt.Claims{
		Issuer: c.cfg.ClientID, Subject: c.cfg.ClientID, Audience: jwt.Audience{aud}, ID: jti,
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(assertionLifetime)),
	}
	return jwt.Signed(signer).Claims(claims).Serialize()
}

type assertionKey struct{}

// withAssertion marks ctx so that the connection's form POSTs made with it carry a fresh
// client assertion for aud (private_key_jwt).
func withAssertion(ctx context.Context, aud string) context.Context {
	return context.WithValue(ctx, assertionKey{}, aud)
}

// maxFormBody bounds the form body the assertion transport rewrites (a token or pushed
// authorization request of the broker's own making).
const maxFormBody = 64 << 10

// assertionTransport adds client_assertion_type and a freshly signed client_assertion to the
// form body of every request whose context withAssertion marked. It sits beneath the DPoP
// transport, so every attempt (a use_dpop_nonce retry included) gets its own assertion.
type assertionTransport struct {
	base http.RoundTripper
	sign func(aud string) (string, error)
}

func (t *assertionTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.base
	if base == nil {
		base = http.DefaultTransport
	}
	aud, _ := req.Context().Value(assertionKey{}).(string)
	if aud == "" {
		return base.RoundTrip(req)
	}
	if req.Body != nil {
		defer req.Body.Close()
	}
	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(io.LimitReader(req.Body, maxFormBody+1))
		if err != nil {
			return nil, fmt.Errorf("client assertion: read request body: %w", err)
		}
		if len(b) > maxFormBody {
			return nil, errors.New("client assertion: request body too large")
		}
		body = b
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, fmt.Errorf("client assertion: request body is not a form: %w", err)
	}
	a, err := t.sign(aud)
	if err != nil {
		return nil, fmt.Errorf("client assertion: sign: %w", err)
	}
	form.Del("client_secret")
	form.Set("client_assertion_type", AssertionType)
	form.Set("client_assertion", a)
	enc := []byte(form.Encode())
	r := req.Clone(req.Context())
	r.Header.Del("Authorization") // never a secret beside the assertion
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Body = io.NopCloser(bytes.NewReader(enc))
	r.ContentLength = int64(len(enc))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(enc)), nil }
	return base.RoundTrip(r)
}

// authMethod returns the client authentication method to use with the upstream of doc: the
// configured one when doc offers it (else an *Error with code client_auth_not_supported), or
// by discovery (client_secret_basic, else client_secret_post).
func (c *Connection) authMethod(doc *discovery.Document) (string, error) {
	m := c.cfg.TokenEndpointAuthMethod
	if m == "" {
		if c.cfg.ClientSecret == "" {
			return "none", nil // public client: client_id in the body, no secret
		}
		if m = doc.AuthStyle(); m == "" {
			return "", &Error{Code: CodeClientAuthUnsupported, Description: fmt.Sprintf("upstream %s supports neither client_secret_basic nor client_secret_post (token_endpoint_auth_methods_supported %v)", doc.Issuer, doc.TokenEndpointAuthMethodsSupported)}
		}
		return m, nil
	}
	if err := CheckAuthMethod(doc, m, c.cfg.TokenEndpointAuthSigningAlg); err != nil {
		return "", &Error{Code: CodeClientAuthUnsupported, Description: err.Error(), Err: err}
	}
	return m, nil
}

// CheckAuthMethod reports why the upstream of doc does not accept client authentication
// method m (with assertion alg for private_key_jwt), or nil when it does.
func CheckAuthMethod(doc *discovery.Document, m, alg string) error {
	if !doc.SupportsAuthMethod(m) {
		listed := "absent, which means client_secret_basic only (OpenID Connect Discovery 1.0 §3)"
		if doc.TokenEndpointAuthMethodsSupported != nil {
			listed = "[" + strings.Join(doc.TokenEndpointAuthMethodsSupported, ", ") + "]"
		}
		return fmt.Errorf("upstream %s does not accept token_endpoint_auth_method %s: its token_endpoint_auth_methods_supported is %s", doc.Issuer, m, listed)
	}
	if m == discovery.AuthPrivateKeyJWT && !doc.SupportsAuthSigningAlg(alg) {
		return fmt.Errorf("upstream %s does not accept private_key_jwt assertions signed with %s: its token_endpoint_auth_signing_alg_values_supported is [%s]", doc.Issuer, alg, strings.Join(doc.TokenEndpointAuthSigningAlgValuesSupported, ", "))
	}
	return nil
}

// authStyle maps a method from authMethod to how x/oauth2 sends the credentials; the secret
// is empty when the method sends none (private_key_jwt: the assertion transport adds the
// assertion; a public client: client_id only).
func (c *Connection) authStyle(method string) (oauth2.AuthStyle, string) {
	switch method {
	case discovery.AuthClientSecretBasic:
		return oauth2.AuthStyleInHeader, c.cfg.ClientSecret
	case discovery.AuthClientSecretPost:
		return oauth2.AuthStyleInParams, c.cfg.ClientSecret
	}
	return oauth2.AuthStyleInParams, ""
}

// authenticate adds the connection's client authentication for method to a form POST the
// broker builds itself (the pushed authorization request): the secret to form
// (client_secret_post), or to the returned headers (client_secret_basic); for private_key_jwt
// the returned context is marked for an assertion with audience aud.
func (c *Connection) authenticate(ctx context.Context, form url.Values, method, aud string) (context.Context, http.Header) {
	h := http.Header{}
	switch method {
	case discovery.AuthClientSecretBasic:
		// RFC 6749 §2.3.1: both form-urlencoded before the Basic encoding.
		r := &http.Request{Header: h}
		r.SetBasicAuth(url.QueryEscape(c.cfg.ClientID), url.QueryEscape(c.cfg.ClientSecret))
	case discovery.AuthClientSecretPost:
		form.Set("client_secret", c.cfg.ClientSecret)
	case discovery.AuthPrivateKeyJWT:
		ctx = withAssertion(ctx, aud)
	}
	return ctx, h
}
