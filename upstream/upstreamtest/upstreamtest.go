// Package upstreamtest runs a small in-process OpenID provider that can demand DPoP with server
// nonces; the broker's tests, the demo and the load benchmark use it as the upstream IdP.
package upstreamtest

import (
	"net/http"
	"sync/atomic"
	"time"
)

// Options shape the provider's behaviour. The zero value is a plain OIDC provider without DPoP.
type Options struct {
	ClientID     string // default "broker"
	ClientSecret string // default "broker-secret"
	// DPoPAlgs is advertised as dpop_signing_alg_values_supported; nil = member absent (no DPoP).
	DPoPAlgs     []string
	RequireDPoP  bool // token endpoint refuses requests without a valid proof (invalid_dpop_proof)
	RequireNonce bool // every proof must carry the current server nonce (use_dpop_nonce + DPoP-Nonce)
	// AlwaysNonce makes the server answer use_dpop_nonce forever (to exhaust retries).
	AlwaysNonce bool
	AnswerBearer bool // token_type "Bearer" even when a valid proof came (no binding)
	NoPKCE       bool // do not advertise code_challenge_methods_supported
	AuthMethods  []string // token_endpoint_auth_methods_supported; default client_secret_basic, client_secret_post
	IssParameter bool     // send RFC 9207 iss on the redirect and advertise it
	// Interactive shows a login page with a "Sign in" button instead of redirecting at once.
	Interactive bool
	// Subject and claims of the user that signs in; defaults: sub "alice", name "Alice Example",
	// email "alice@example.com".
	Subject string
	Claims  map[string]any
	// Faults for negative tests.
	AuthorizeError string        // redirect back with error=<this> (e.g. access_denied)
	IDTokenAud     string        // override aud
	IDTokenNonce   string        // override nonce
	IDTokenIssuer  string        // override iss
	IDTokenTTL     time.Duration // default 5 minutes; negative = already expired
	Now            func() time.Time
}

// Stats counts what the provider saw.
type Stats struct {
	TokenRequests   atomic.Int64
	NonceChallenges atomic.Int64
	ProofsAccepted  atomic.Int64
	UserinfoCalls   atomic.Int64
}

// Provider is the running IdP.
type Provider struct {
	URL   string // issuer, e.g. http://127.0.0.1:PORT
	Stats *Stats
	// unexported
}

// NewHandler returns the provider's handler for issuer (the URL it will be served at). Routes:
// /.well-known/openid-configuration, /authorize, /token, /userinfo, /jwks.
func NewHandler(issuer string, opts Options) (http.Handler, *Stats, error) { panic("not implemented") }

// Start serves a provider on a fresh 127.0.0.1 port; Close stops it.
func Start(opts Options) (*Provider, error) { panic("not implemented") }

// Close stops the provider.
func (p *Provider) Close() { panic("not implemented") }
