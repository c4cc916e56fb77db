package dpop

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	oteltrace "go.opentelemetry.io/otel/trace"
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
	NonceUsed    bool // a proof carried a server nonce (one the server then rejected as stale does not count)
	// NonceDropped: a server rejected a proof carrying a remembered nonce (invalid_dpop_proof),
	// so the nonce was forgotten and the request retried once without it.
	NonceDropped bool
	Alg          string
}

type traceKey struct{}

// traceBox serialises updates to a Trace shared by concurrent requests on one context.
type traceBox struct {
	mu sync.Mutex
	t  *Trace
}

func (b *traceBox) update(f func(t *Trace)) {
	if b == nil || b.t == nil {
		return
	}
	b.mu.Lock()
	f(b.t)
	b.mu.Unlock()
}

// WithTrace returns a context whose DPoP requests are recorded in t.
func WithTrace(ctx context.Context, t *Trace) context.Context {
	return context.WithValue(ctx, traceKey{}, &traceBox{t: t})
}

func traceFrom(ctx context.Context) *traceBox {
	b, _ := ctx.Value(traceKey{}).(*traceBox)
	return b
}

// NonceCache keeps the latest DPoP-Nonce per server. Keys are opaque strings built by the
// Transport (origin plus "as" or "rs" role, so AS and RS nonces stay apart, RFC 9449 §8/§9).
// SetNonce with "" forgets the key. NewNonceCache and NewNonceCacheWith return bounded
// in-memory caches (age and entries); see also NonceDropper.
type NonceCache interface {
	Nonce(key string) string
	SetNonce(key, nonce string)
}

// NonceKey returns the NonceCache key the Transport uses for an origin ("https://host:port",
// lower case) and a role ("as" or "rs").
func NonceKey(origin, role string) string { return origin + " " + role }

// Transport is an http.RoundTripper that adds a fresh DPoP proof to every request. When a
// request carries "Authorization: DPoP <at>" the proof gets ath and the RS nonce; otherwise
// the AS nonce. On 400 {"error":"use_dpop_nonce"} or 401 with WWW-Authenticate DPoP
// error="use_dpop_nonce" and a DPoP-Nonce header, it remembers the nonce, waits RetryDelay
// plus a random part of Jitter, and retries with a new proof (new jti), at most MaxRetries
// times; then it fails with *NonceRetryError. The DPoP-Nonce of every response is remembered.
//
// A remembered nonce can go stale for good: the server stopped using nonces (reconfigured, or
// a new deployment behind the same URL) and rejects any proof carrying one. So when a proof
// that carried a remembered nonce is answered invalid_dpop_proof (400 JSON error, or 401 with
// WWW-Authenticate DPoP error="invalid_dpop_proof") without a new DPoP-Nonce, the Transport
// forgets that nonce and retries once, at once, with a new proof without a nonce
// (Trace.NonceDropped). A use_dpop_nonce answer to that retry is handled as above, within
// MaxRetries; a second invalid_dpop_proof is returned to the caller.
// Requests with a body must have GetBody set (http.NewRequest does this).
type Transport struct {
	Base       http.RoundTripper // default http.DefaultTransport
	Signer     *Signer
	Nonces     NonceCache // default: a private in-memory cache
	MaxRetries int        // default 1 when zero; negative means no retry
	RetryDelay time.Duration
	Jitter     time.Duration
	Now        func() time.Time // default time.Now

	// A Transport must not be copied after first use.
	once   sync.Once
	nonces NonceCache
}

func (t *Transport) nonceCache() NonceCache {
	if t.Nonces != nil {
		return t.Nonces
	}
	t.once.Do(func() { t.nonces = NewNonceCache() })
	return t.nonces
}

func (t *Transport) maxRetries() int {
	switch {
	case t.MaxRetries == 0:
		return 1
	case t.MaxRetries < 0:
		return 0
	}
	return t.MaxRetries
}

// maxChallengeBody bounds how much of a 400 body is read to look for use_dpop_nonce.
const maxChallengeBody = 64 << 10

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	closeBody := func() {
		if req.Body != nil {
			_ = req.Body.Close()
		}
	}
	if t.Signer == nil {
		closeBody()
		return nil, errors.New("dpop: transport has no signer")
	}
	if req.URL == nil {
		closeBody()
		return nil, errors.New("dpop: request has no URL")
	}
	htu, err := htuOf(req.URL)
	if err != nil {
		closeBody()
		return nil, err
	}
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	now := t.Now
	if now == nil {
		now = time.Now
	}
	ctx := req.Context()
	trace := traceFrom(ctx)
	nonces := t.nonceCache()
	at, role := "", "as"
	if tok, ok := dpopToken(req.Header.Get("Authorization")); ok {
		at, role = tok, "rs"
	}
	key := NonceKey(strings.ToLower(req.URL.Scheme)+"://"+strings.ToLower(req.URL.Host), role)
	limit := t.maxRetries()
	hasBody := req.Body != nil && req.Body != http.NoBody

	// At most limit use_dpop_nonce retries plus one retry after dropping a stale nonce.
	retries, dropped := 0, false
	for attempt := 0; ; attempt++ {
		nonce := nonces.Nonce(key)
		proof, err := t.Signer.proof(req.Method, htu, nonce, at, now())
		if err != nil {
			if attempt == 0 {
				closeBody()
			}
			return nil, err
		}
		r := req.Clone(ctx)
		if attempt > 0 && hasBody {
			if req.GetBody == nil {
				return nil, fmt.Errorf("dpop: cannot retry %s %s: request body has no GetBody", req.Method, htu)
			}
			body, err := req.GetBody()
			if err != nil {
				return nil, fmt.Errorf("dpop: reset request body for retry: %w", err)
			}
			r.Body = body
		}
		r.Header.Set("DPoP", proof)
		trace.update(func(tr *Trace) {
			tr.Requests++
			tr.Alg = t.Signer.Alg()
			if nonce != "" {
				tr.NonceUsed = true
			}
		})

		resp, err := base.RoundTrip(r)
		if err != nil {
			return nil, err
		}
		newNonce := resp.Header.Get("DPoP-Nonce")
		if !validNonce(newNonce) {
			newNonce = "" // absent, oversized or malformed: never remembered, never sent
		}
		if newNonce != "" {
			nonces.SetNonce(key, newNonce)
		}
		switch proofRejection(resp) {
		case ErrCodeUseNonce:
			if newNonce == "" {
				return resp, nil // a challenge without a nonce to retry with: hand it back
			}
			discard(resp)
			if retries == limit {
				return nil, &NonceRetryError{URL: htu, Retries: retries}
			}
			if err := t.wait(ctx); err != nil {
				return nil, fmt.Errorf("dpop: waiting to retry %s: %w", htu, err)
			}
			retries++
			trace.update(func(tr *Trace) { tr.NonceRetries++ })
			// The caller's span (the broker's token exchange or userinfo), if any, tells each
			// retry apart; the nonce itself is not recorded.
			if span := oteltrace.SpanFromContext(ctx); span.IsRecording() {
				span.AddEvent("dpop.use_dpop_nonce", oteltrace.WithAttributes(
					attribute.Int("dpop.retry", retries), attribute.Int("http.response.status_code", resp.StatusCode)))
			}
		case ErrCodeInvalidProof:
			if nonce == "" || dropped || newNonce != "" {
				// Not a stale nonce: no nonce was sent, it was already dropped once, or the
				// server still issues nonces (it reports nonce trouble as use_dpop_nonce).
				return resp, nil
			}
			discard(resp)
			dropNonce(nonces, key, nonce)
			dropped = true
			trace.update(func(tr *Trace) { tr.NonceDropped, tr.NonceUsed = true, false })
			if span := oteltrace.SpanFromContext(ctx); span.IsRecording() {
				span.AddEvent("dpop.stale_nonce_dropped")
			}
		default:
			return resp, nil
		}
	}
}

// wait sleeps RetryDelay plus a random part of Jitter, or until ctx ends.
func (t *Transport) wait(ctx context.Context) error {
	d := t.RetryDelay
	if t.Jitter > 0 {
		d += rand.N(t.Jitter)
	}
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// dpopToken returns the access token of an "Authorization: DPoP <at>" header.
func dpopToken(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "DPoP") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// discard drains a little of the body (so the connection can be reused) and closes it.
func discard(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxChallengeBody))
	_ = resp.Body.Close()
}

// proofRejection returns the DPoP error of resp: use_dpop_nonce or invalid_dpop_proof from a
// 400 JSON body (AS, RFC 9449 §5, §8) or from a 401 DPoP challenge's error (RS, §7.1, §9);
// otherwise "". A 400 body it reads is put back so the caller can still read it.
func proofRejection(resp *http.Response) string {
	switch resp.StatusCode {
	case http.StatusBadRequest:
		if resp.Body == nil || resp.Body == http.NoBody {
			return ""
		}
		buf, err := io.ReadAll(io.LimitReader(resp.Body, maxChallengeBody))
		resp.Body = &replayBody{Reader: io.MultiReader(bytes.NewReader(buf), resp.Body), c: resp.Body}
		if err != nil {
			return ""
		}
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(buf, &e) == nil && dpopErrorCode(e.Error) {
			return e.Error
		}
	case http.StatusUnauthorized:
		for _, v := range resp.Header.Values("WWW-Authenticate") {
			for _, c := range parseChallenges(v) {
				if strings.EqualFold(c.scheme, "DPoP") && dpopErrorCode(c.params["error"]) {
					return c.params["error"]
				}
			}
		}
	}
	return ""
}

// dpopErrorCode reports whether code is one of the DPoP proof errors the Transport acts on.
func dpopErrorCode(code string) bool {
	return code == ErrCodeUseNonce || code == ErrCodeInvalidProof
}

type replayBody struct {
	io.Reader
	c io.Closer
}

func (b *replayBody) Close() error { return b.c.Close() }

type challenge struct {
	scheme string
	params map[string]string
}

// parseChallenges parses a WWW-Authenticate value (RFC 9110 §11.6.1) into challenges with
// their auth-params; token68 credentials are skipped.
func parseChallenges(s string) []challenge {
	var out []challenge
	p := &lexer{s: s}
	for !p.done() { // each pass consumes at least one byte
		p.skipSpaceComma()
		scheme := p.token()
		if scheme == "" {
			if !p.done() {
				p.i++ // stray byte
			}
			continue
		}
		c := challenge{scheme: scheme, params: map[string]string{}}
		for first := true; !p.done(); first = false { // each pass consumes a param or breaks
			save := p.i
			if first {
				p.skipSpace()
				if p.done() || p.peek() == ',' {
					break
				}
			} else {
				p.skipSpaceComma()
			}
			nameAt := p.i
			name := p.token()
			p.skipSpace()
			if name != "" && p.eat('=') {
				p.skipSpace()
				if b := p.peek(); b == '"' || (b != 0 && isTChar(b) && b != '=') {
					var val string
					if b == '"' {
						val = p.quoted()
					} else {
						val = p.token()
					}
					c.params[strings.ToLower(name)] = val
					continue
				}
			}
			if first { // token68: skip it, it ends the challenge
				p.i = nameAt
				p.token68()
				break
			}
			p.i = save // the next challenge's scheme
			break
		}
		out = append(out, c)
	}
	return out
}

type lexer struct {
	s string
	i int
}

func (p *lexer) done() bool { return p.i >= len(p.s) }

func (p *lexer) peek() byte {
	if p.done() {
		return 0
	}
	return p.s[p.i]
}

func (p *lexer) eat(b byte) bool {
	if !p.done() && p.s[p.i] == b {
		p.i++
		return true
	}
	return false
}

func (p *lexer) skipSpace() {
	for !p.done() && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func (p *lexer) skipSpaceComma() {
	for !p.done() && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == ',') {
		p.i++
	}
}

func isTChar(b byte) bool {
	switch {
	case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0
}

func (p *lexer) token() string {
	start := p.i
	for !p.done() && isTChar(p.s[p.i]) {
		p.i++
	}
	return p.s[start:p.i]
}

func (p *lexer) token68() {
	for !p.done() && (isTChar(p.s[p.i]) || p.s[p.i] == '/') {
		p.i++
	}
	for !p.done() && p.s[p.i] == '=' {
		p.i++
	}
}

func (p *lexer) quoted() string {
	p.i++ // opening quote
	var b strings.Builder
	for !p.done() {
		c := p.s[p.i]
		p.i++
		switch c {
		case '"':
			return b.String()
		case '\\':
			if !p.done() {
				b.WriteByte(p.s[p.i])
				p.i++
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
