package dpop

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// Proof error codes (RFC 9449 §5, §7.1, §8).
const (
	ErrCodeInvalidProof = "invalid_dpop_proof"
	ErrCodeUseNonce     = "use_dpop_nonce"
)

// ProofError is a rejected proof: Code is invalid_dpop_proof or use_dpop_nonce, Check names the
// spec item that failed (e.g. "DS-4"), Description is safe to send to the client.
type ProofError struct {
	Code        string
	Check       string
	Description string
}

func (e *ProofError) Error() string {
	return fmt.Sprintf("dpop: %s (%s): %s", e.Code, e.Check, e.Description)
}

// ReplayCache remembers proof identifiers for the acceptance window. Claim returns true the first
// time key is claimed and false for every later claim within ttl (DS-15). It must be shared by
// all replicas (the broker backs it with the store: SET NX PX).
type ReplayCache interface {
	Claim(ctx context.Context, key string, ttl time.Duration) (bool, error)
}

// NewMemoryReplayCache returns a bounded in-process ReplayCache for a single process.
func NewMemoryReplayCache(maxEntries int) ReplayCache { panic("not implemented") }

// NonceSource issues and checks server nonces (DS-10, DS-16) without shared state: a nonce is
// the current time step MACed with a secret all replicas share, so any replica can check it.
// Nonces rotate every Period; the current and the previous step are accepted.
type NonceSource struct {
	// unexported
}

// NewNonceSource returns a source for secret (≥ 32 bytes) rotating every period.
func NewNonceSource(secret []byte, period time.Duration, now func() time.Time) (*NonceSource, error) {
	panic("not implemented")
}

// Nonce returns the current nonce.
func (n *NonceSource) Nonce() string { panic("not implemented") }

// Valid reports whether nonce is the current or the previous step's nonce.
func (n *NonceSource) Valid(nonce string) bool { panic("not implemented") }

// Verifier checks proofs at an authorization server or resource server (RFC 9449 §4.3, DS-1…DS-16).
type Verifier struct {
	Algs         []string      // allowed JOSE algs; default ES256, ES384, ES512, EdDSA, Ed25519, RS256, PS256
	MaxAge       time.Duration // iat may be this old; default 300 s (DS-14)
	MaxFuture    time.Duration // iat may be this far ahead; default 30 s (DS-14)
	Replay       ReplayCache   // required: nil fails closed
	Nonces       *NonceSource  // when set and RequireNonce, proofs must carry a valid nonce
	RequireNonce bool
	Now          func() time.Time
}

// Check is the request a proof must match.
type Check struct {
	Method      string // request method (DS-8)
	URL         string // the endpoint's configured public URL; query/fragment ignored (DS-9, DS-13)
	AccessToken string // RS: the presented access token, for ath (DS-12); "" at the AS
	JKT         string // when non-empty, the proof key's thumbprint must equal it (DS-12, DS-20, DS-21)
}

// Result is an accepted proof.
type Result struct {
	JKT   string // RFC 7638 thumbprint of the proof key (DS-19)
	Alg   string
	JTI   string
	IAT   time.Time
	Nonce string
}

// Verify checks the DPoP header values of one request (pass r.Header.Values("DPoP")). It returns
// a *ProofError for every rejection; other errors (replay cache unreachable) mean "fail closed".
func (v *Verifier) Verify(ctx context.Context, headers []string, c Check) (*Result, error) {
	panic("not implemented")
}

// Challenge writes the DPoP-Nonce header (with Cache-Control: no-store) when the verifier uses
// nonces. Call it on responses that should carry a fresh nonce.
func (v *Verifier) Challenge(h http.Header) { panic("not implemented") }
