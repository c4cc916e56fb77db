// Package upstream drives one upstream connection: the authorization URL (PKCE, state, nonce),
// the back-channel code exchange with DPoP and nonce retry, ID-token verification and userinfo.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/dpop-broker/dpop-broker/discovery"
	"github.com/dpop-broker/dpop-broker/dpop"
)

// Config is one connection as the broker configures it.
type Config struct {
	ID           string // con_…
	Name         string
	Strategy     string // "oidc" or "okta"
	Issuer       string
	DiscoveryURL string // optional
	// Okta: Domain and optional AuthorizationServerID derive Issuer when Issuer is empty.
	Domain                string
	AuthorizationServerID string
	ClientID              string
	ClientSecret          string
	Scopes                []string // default openid profile email
	Type                  string   // "back_channel"
	DPoPSigningAlg        string   // "" = DPoP off; ES256, Ed25519, RS256, PS256
	IDTokenAlgs           []string // default RS256 (ID-4)
	FetchUserinfo         bool
	UpstreamParams        map[string]string
}

// Options are the DPoP timing and collaborators shared by all connections.
type Options struct {
	HTTP       *http.Client // base client (timeouts); default 10 s timeout
	Discovery  *discovery.Client
	Signers    map[string]*dpop.Signer // by configuration alg name (ES256, Ed25519, RS256, PS256)
	Nonces     dpop.NonceCache
	MaxRetries int
	RetryDelay time.Duration
	Jitter     time.Duration
	ClockSkew  time.Duration // leeway for exp/iat on upstream ID tokens
	Now        func() time.Time
}

// Stable error codes for login events (details.error).
const (
	CodeDPoPNotSupported = discovery.CodeDPoPNotSupported
	CodeDPoPAlgMismatch  = discovery.CodeDPoPAlgMismatch
	CodeUseDPoPNonce     = "use_dpop_nonce"     // nonce retries exhausted
	CodeInvalidDPoPProof = "invalid_dpop_proof" // upstream rejected our proof
	CodeUpstreamError    = "upstream_error"     // token endpoint error / unreachable / malformed
	CodeIDTokenInvalid   = "id_token_invalid"
	CodeDiscovery        = "discovery_failed"
	CodeUserinfo         = "userinfo_failed"
)

// Error is a failed upstream step with a stable Code.
type Error struct {
	Code        string
	Description string
	OAuthError  string // the upstream's "error" member, when it sent one
	Err         error
}

func (e *Error) Error() string { return fmt.Sprintf("upstream: %s: %s", e.Code, e.Description) }
func (e *Error) Unwrap() error { return e.Err }

// CodeOf returns the stable code of err (an *Error), or CodeUpstreamError.
func CodeOf(err error) string {
	var ue *Error
	if errors.As(err, &ue) {
		return ue.Code
	}
	return CodeUpstreamError
}

// Connection is one configured upstream, safe for concurrent use.
type Connection struct {
	// unexported
}

// New returns a connection. It does not contact the upstream.
func New(cfg Config, opts Options) (*Connection, error) { panic("not implemented") }

// Config returns the connection's configuration.
func (c *Connection) Config() Config { panic("not implemented") }

// Start is what the broker must keep (in the login transaction) between Begin and Finish.
type Start struct {
	AuthURL      string `json:"-"`
	State        string `json:"state"`
	Nonce        string `json:"nonce"`
	Verifier     string `json:"verifier,omitempty"` // PKCE; empty when upstream lacks S256
	DPoPAlg      string `json:"dpop_alg,omitempty"` // wire alg label when DPoP is on
	Issuer       string `json:"issuer"`
	IssSupported bool   `json:"iss_supported,omitempty"` // RFC 9207 advertised upstream
}

// Begin fetches discovery, checks DPoP capability (a *discovery.CapabilityError wrapped in
// *Error with code dpop_not_supported / dpop_alg_mismatch — nothing is sent upstream), and
// builds the authorization URL with state, nonce and PKCE S256 for redirectURI.
func (c *Connection) Begin(ctx context.Context, redirectURI string) (*Start, error) {
	panic("not implemented")
}

// Result is the outcome of a code exchange.
type Result struct {
	Subject         string
	Claims          map[string]any // ID-token claims, merged with userinfo when fetched
	IDTokenAlg      string
	TokenType       string // as the upstream sent it
	DPoPBound       bool   // token_type == DPoP (DC-10)
	DPoPAlg         string // "" when DPoP is off
	NonceRetries    int
	NonceUsed       bool
	UserinfoStatus  string // "", "SUCCESS", "FAILURE"
	UserinfoBound   bool
	ExchangeLatency time.Duration
}

// Finish exchanges code (client authentication per discovery, PKCE verifier, DPoP proof with
// nonce retry), verifies the ID token with go-oidc (iss, aud, azp, exp, iat, nonce, alg), and
// fetches userinfo when configured. On failure it returns a partial Result (DPoP facts known so
// far) and an *Error.
func (c *Connection) Finish(ctx context.Context, st *Start, redirectURI, code string) (*Result, error) {
	panic("not implemented")
}
