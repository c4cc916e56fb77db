// Package discovery fetches, validates and caches upstream OpenID Connect discovery documents
// and decides, with typed errors, whether an upstream can do the DPoP a connection asks for.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// Stable error codes, used as details.error in login events.
const (
	CodeDPoPNotSupported = "dpop_not_supported"
	CodeDPoPAlgMismatch  = "dpop_alg_mismatch"
)

// Sentinels matched by *CapabilityError through errors.Is.
var (
	ErrDPoPNotSupported = errors.New("discovery: upstream does not support DPoP")
	ErrDPoPAlgMismatch  = errors.New("discovery: upstream does not offer the DPoP algorithm")
)

// CapabilityError says why an upstream cannot do the configured DPoP.
type CapabilityError struct {
	Issuer  string
	Alg     string   // configured algorithm
	Offered []string // dpop_signing_alg_values_supported (nil when absent)
}

// Code returns CodeDPoPNotSupported or CodeDPoPAlgMismatch.
func (e *CapabilityError) Code() string {
	if e.Offered == nil {
		return CodeDPoPNotSupported
	}
	return CodeDPoPAlgMismatch
}

func (e *CapabilityError) Error() string {
	if e.Offered == nil {
		return fmt.Sprintf("upstream %s does not support DPoP: its discovery document has no dpop_signing_alg_values_supported", e.Issuer)
	}
	return fmt.Sprintf("upstream %s does not offer DPoP algorithm %s: dpop_signing_alg_values_supported is [%s]", e.Issuer, e.Alg, strings.Join(e.Offered, ", "))
}

// Is matches ErrDPoPNotSupported or ErrDPoPAlgMismatch.
func (e *CapabilityError) Is(target error) bool {
	if e.Offered == nil {
		return target == ErrDPoPNotSupported
	}
	return target == ErrDPoPAlgMismatch
}

// Document is the part of a discovery document the broker uses. Provider is go-oidc's view
// of the same document (for ID-token verification and userinfo).
type Document struct {
	Issuer                            string   `json:"issuer"`
	AuthorizationEndpoint             string   `json:"authorization_endpoint"`
	TokenEndpoint                     string   `json:"token_endpoint"`
	UserinfoEndpoint                  string   `json:"userinfo_endpoint"`
	JWKSURI                           string   `json:"jwks_uri"`
	ScopesSupported                   []string `json:"scopes_supported"`
	ResponseTypesSupported            []string `json:"response_types_supported"`
	CodeChallengeMethodsSupported     []string `json:"code_challenge_methods_supported"`
	TokenEndpointAuthMethodsSupported []string `json:"token_endpoint_auth_methods_supported"`
	IDTokenSigningAlgValuesSupported  []string `json:"id_token_signing_alg_values_supported"`
	// DPoPSigningAlgValuesSupported is nil when the member is absent.
	DPoPSigningAlgValuesSupported             []string `json:"dpop_signing_alg_values_supported"`
	AuthorizationResponseIssParameterSupported bool    `json:"authorization_response_iss_parameter_supported"`

	Provider *oidc.Provider `json:"-"`
}

// CheckDPoP returns the JOSE alg label to put in proofs for the configuration alg, or a
// *CapabilityError (MD-4). Ed25519 is accepted when the upstream lists "Ed25519" (label
// Ed25519) or "EdDSA" (label EdDSA).
func (d *Document) CheckDPoP(alg string) (wireAlg string, err error) { panic("not implemented") }

// SupportsS256 reports whether code_challenge_methods_supported lists S256 (PK-5).
func (d *Document) SupportsS256() bool { panic("not implemented") }

// AuthStyle returns the token-endpoint client authentication to use: "client_secret_basic"
// when listed or when the list is absent, else "client_secret_post" when listed.
func (d *Document) AuthStyle() string { panic("not implemented") }

// Client fetches documents over HTTP and caches each for TTL (errors are not cached).
type Client struct {
	HTTP *http.Client  // default: a client with a 10 s timeout
	TTL  time.Duration // default 15 minutes
	Now  func() time.Time
}

// Get returns the document for issuer, fetched from discoveryURL (default:
// issuer + "/.well-known/openid-configuration", MD-3). It enforces that the document's issuer
// equals issuer exactly (MD-1) and that the required members are present (MD-2).
func (c *Client) Get(ctx context.Context, issuer, discoveryURL string) (*Document, error) {
	panic("not implemented")
}
