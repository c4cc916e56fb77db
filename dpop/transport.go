package dpop

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// ErrNonceRetriesExhausted is matched (errors.Is) by a *NonceRetryError.
var ErrNonceRetriesExhausted = errors.New("dpop: use_dpop_nonce retries exhausted")

// NonceRetryError says the server kept answering use_dpop_nonce after Retries retries.
type NonceRetryError struct {
	URL     string // request URL without query
	Retries int
}

func (e *NonceRetryError) Error() string {
	return fmt.Sprintf("dpop: %s still demands a new DPoP nonce after %d retries", e.URL, e.Retries)
}

// Is makes errors.Is(err, ErrNonceRetriesExhausted) true.
func (e *NonceRetryError) Is(target error) bool { return target == ErrNonceRetriesExhausted }

// Trace records what the Transport did for the requests made with a context carrying it. It is
// filled in by the transport; read it after the call returns.
type Trace struct {
	Requests     int  // proofs sent
	NonceRetries int  // retries made because of use_dpop_nonce
	NonceUsed    bool // a proof carried a server nonce
	Alg          string
}

// WithTrace returns a context whose DPoP requests are recorded in t.
func WithTrace(ctx context.Context, t *Trace) context.Context { panic("not implemented") }

// NonceCache keeps the latest DPoP-Nonce per server. Keys are opaque strings built by the
// Transport (origin plus "as" or "rs" role, so AS and RS nonces stay apart, RFC 9449 §8/§9).
type NonceCache interface {
	Nonce(key string) string
	SetNonce(key, nonce string)
}

// NewNonceCache returns an in-memory, concurrency-safe NonceCache.
func NewNonceCache() NonceCache { panic("not implemented") }

// Transport is an http.RoundTripper that adds a fresh DPoP proof to every request. When a
// request carries "Authorization: DPoP <at>" the proof gets ath and the RS nonce; otherwise
// the AS nonce. On 400 {"error":"use_dpop_nonce"} or 401 with WWW-Authenticate DPoP
// error="use_dpop_nonce" and a DPoP-Nonce header, it remembers the nonce, waits RetryDelay
// plus a random part of Jitter, and retries with a new proof (new jti), at most MaxRetries
// times; then it fails with *NonceRetryError. The DPoP-Nonce of every response is remembered.
// Requests with a body must have GetBody set (http.NewRequest does this).
type Transport struct {
	Base       http.RoundTripper // default http.DefaultTransport
	Signer     *Signer
	Nonces     NonceCache // default: a private in-memory cache
	MaxRetries int        // default 1 when zero; negative means no retry
	RetryDelay time.Duration
	Jitter     time.Duration
	Now        func() time.Time // default time.Now
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) { panic("not implemented") }
