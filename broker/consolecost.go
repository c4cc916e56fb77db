package broker

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/dpop-broker/dpop-broker/discovery"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// What the console costs the broker, bounded (docs: README "Operators' console", SECURITY.md):
//   - every console request is held to the management API's rate limits: a signed-in operator
//     to rate_limits.management.per_token (keyed by the operator; a break-glass operator shares
//     its token's bucket with the API), anyone else to rate_limits.management.per_ip;
//   - the Overview's closed buckets are read once per span every consoleOverviewTTL on a
//     replica, however many operators look, concurrent views sharing one read; each view
//     reads only the buckets since (normally the current one), so new logins show at once;
//   - a connection's live discovery check is fetched once every consoleDiscoveryTTL on a
//     replica, concurrent views sharing one fetch.

const (
	consoleOverviewTTL  = 30 * time.Second
	consoleDiscoveryTTL = 5 * time.Second
	// consoleFlightKeys bounds the keys a flightCache remembers.
	consoleFlightKeys = 1024
	// consoleFlightWait bounds one shared read or fetch.
	consoleFlightWait = 20 * time.Second
)

// flightCache keeps the answer of a read per key for a while, and runs one read per key at a
// time: callers that arrive while it runs wait for its answer (single flight). Errors are not
// kept. The zero value is ready; at most consoleFlightKeys keys are kept (stale ones are
// dropped first, then everything that is not in flight).
type flightCache[V any] struct {
	mu      sync.Mutex
	entries map[string]*flight[V]
}

type flight[V any] struct {
	done chan struct{}
	at   time.Time // when the read finished
	val  V
	err  error
}

// get returns key's answer if one finished less than ttl before now, else waits for the read
// in flight, else runs read (with a context that outlives a caller who leaves).
func (c *flightCache[V]) get(ctx context.Context, key string, now time.Time, ttl time.Duration, read func(context.Context) (V, error)) (V, error) {
	c.mu.Lock()
	if c.entries == nil {
		c.entries = map[string]*flight[V]{}
	}
	f := c.entries[key]
	if f != nil && !f.finished(now, ttl) {
		c.mu.Unlock()
		select {
		case <-f.done:
			return f.val, f.err
		case <-ctx.Done():
			var zero V
			return zero, ctx.Err()
		}
	}
	if len(c.entries) >= consoleFlightKeys {
		c.prune(now, ttl)
	}
	f = &flight[V]{done: make(chan struct{})}
	c.entries[key] = f
	c.mu.Unlock()

	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), consoleFlightWait)
	defer cancel()
	val, err := read(rctx)
	c.mu.Lock()
	f.val, f.err, f.at = val, err, now
	if err != nil && c.entries[key] == f {
		delete(c.entries, key) // the next caller reads again
	}
	close(f.done)
	c.mu.Unlock()
	return val, err
}

// finished reports whether f's read is over and its answer too old (or an error) at now: a
// new read is due. c.mu is held.
func (f *flight[V]) finished(now time.Time, ttl time.Duration) bool {
	select {
	case <-f.done:
		return f.err != nil || now.Sub(f.at) >= ttl || now.Before(f.at)
	default:
		return false // in flight
	}
}

// prune drops stale entries, and everything not in flight when that is not enough.
func (c *flightCache[V]) prune(now time.Time, ttl time.Duration) {
	for k, f := range c.entries {
		if f.finished(now, ttl) {
			delete(c.entries, k)
		}
	}
	if len(c.entries) < consoleFlightKeys {
		return
	}
	for k, f := range c.entries {
		select {
		case <-f.done:
			delete(c.entries, k)
		default:
		}
	}
}

// consoleCaches are a replica's console caches (consolecost.go).
type consoleCaches struct {
	overviews flightCache[overviewRead]
	discovery flightCache[consoleFetch]
	// overviewTTL and discoveryTTL replace consoleOverviewTTL and consoleDiscoveryTTL when
	// set (tests that must not depend on how fast they run).
	overviewTTL, discoveryTTL time.Duration
}

// consoleFetch is one fetch of a connection's discovery document.
type consoleFetch struct {
	doc      *discovery.Document
	err      error
	duration time.Duration
	at       time.Time // when the fetch started (s.now())
}

// consoleLimitKey is the per-token management limit's key for an operator: a break-glass
// operator's token name (the same bucket as the token's API calls), else "console:" and the
// operator.
func consoleLimitKey(sess *consoleSession) string {
	if name, ok := strings.CutPrefix(sess.Operator, "token:"); ok && sess.Via == "token" {
		return name
	}
	return "console:" + sess.Operator
}

// consoleRateLimited applies the management API's rate limits to a console request (sess nil:
// before sign-in, per client IP) and answers 429 when one refuses it (true: answered).
func (s *Server) consoleRateLimited(w http.ResponseWriter, r *http.Request, sess *consoleSession) bool {
	var ref *refusal
	operator, via := "", ""
	if sess == nil {
		ref = s.guard.check(s.guard.mgmtIP, logs.IPKey(s.clientIP(r)), s.now())
	} else {
		operator, via = sess.Operator, sess.Via
		ref = s.guard.check(s.guard.mgmtToken, consoleLimitKey(sess), s.now())
	}
	if ref == nil {
		return false
	}
	ref.endpoint = "console"
	s.consoleTooMany(w, r, ref, operator, via)
	return true
}

// consoleTooMany answers a console request a limit refused: 429 with Retry-After and the
// refused page, and a fapi event with details.rate_limit naming the operator (when known)
// and how they signed in (via).
// The event is an unauthenticated one, limited like every refusal, also for an operator: a
// flood of refused requests cannot fill the audit trail.
func (s *Server) consoleTooMany(w http.ResponseWriter, r *http.Request, ref *refusal, operator, via string) {
	ref.setRetryAfter(w)
	s.consoleRejection(r, http.StatusTooManyRequests, operator, via, "rate_limited", ref.description(), ref.details())
	s.renderConsole(w, http.StatusTooManyRequests, "refused", &consoleView{Title: "Too many requests", Problem: sentence(ref.description()), Operator: operator})
}

// consoleRejection records a refused console request as a fapi event of the unauthenticated
// class (limited like every refusal) naming the operator when known (and via, how they
// signed in): errorCode
// console_refused, the console action, the problem, and rateLimit (nil: none) as
// details.rate_limit.
func (s *Server) consoleRejection(r *http.Request, status int, operator, via, action, problem string, rateLimit map[string]any) {
	ev := s.newConsoleEvent(r, false, status, operator, via, action, problem)
	ev.Class = logs.ClassUnauthenticated // limited like every refusal, even an operator's
	if rateLimit != nil {
		ev.Details["rate_limit"] = rateLimit
	}
	s.write(r, ev)
}

// consoleBadRequest records an operator's input the console answered with 400. A mistyped
// read (a Logs search or time range, an Overview period, a Sessions user id: a GET) is an
// input error the page shows, not an audit event: it is logged at debug level only. A
// refused write (a DPoP choice: a POST) is a fapi event naming the operator, as every
// console write is an sapi or fapi event; so are the operator's other refusals (sign-in,
// CSRF, scope, rate limit: consoleRefused, consoleRejection).
func (c *consoleRequest) consoleBadRequest(problem string) {
	if c.r.Method == http.MethodGet || c.r.Method == http.MethodHead {
		c.s.log.Debug("console: input refused", "operator", c.sess.Operator, "path", c.r.URL.Path, "problem", clip(problem, 256))
		return
	}
	c.s.consoleRejection(c.r, http.StatusBadRequest, c.sess.Operator, c.sess.Via, "bad_request", problem, nil)
}

// overviewRead is a cached read of a span's closed buckets: those before until (the start of
// the bucket that was current when it was read).
type overviewRead struct {
	until   time.Time
	buckets []sessions.TallyBucket
}

// cachedOverview is overview with the span's closed buckets read through the replica's cache
// (one read per span every consoleOverviewTTL, concurrent views sharing it) and the buckets
// from the cached read's end to now read fresh (normally the current one), so the logins just
// made always show.
func (s *Server) cachedOverview(ctx context.Context, sp overviewSpan) (*loginOverview, error) {
	now := s.now()
	step := sp.Step.Duration()
	end := now.Truncate(step).Add(step)
	from := end.Add(-sp.Range).Truncate(sp.PointWidth())
	closed, err := s.console.overviews.get(ctx, sp.Name, now, cmp.Or(s.console.overviewTTL, consoleOverviewTTL), func(ctx context.Context) (overviewRead, error) {
		until := now.Truncate(step)
		bs, err := s.events.Tallies(ctx, sp.Step, from, until)
		return overviewRead{until: until, buckets: bs}, err
	})
	if err != nil {
		return nil, fmt.Errorf("overview: %w", err)
	}
	// The cached read ends in the span (before it when old; after the current bucket's start
	// only if the clock went back).
	freshFrom := closed.until
	if freshFrom.Before(from) {
		freshFrom = from
	}
	if cur := now.Truncate(step); freshFrom.After(cur) {
		freshFrom = cur
	}
	fresh, err := s.events.Tallies(ctx, sp.Step, freshFrom, end)
	if err != nil {
		return nil, fmt.Errorf("overview: %w", err)
	}
	bs := make([]sessions.TallyBucket, 0, len(closed.buckets)+len(fresh))
	for _, b := range closed.buckets {
		if !b.Start.Before(from) && b.Start.Before(freshFrom) {
			bs = append(bs, b)
		}
	}
	return summarize(sp, from, end, append(bs, fresh...)), nil
}

// cachedDiscovery fetches the discovery document of issuer (at discoveryURL when set) through
// the replica's cache: one fetch per upstream every consoleDiscoveryTTL, concurrent checks
// sharing it. The answer's error is the fetch's, for the API's reasons.
func (s *Server) cachedDiscovery(ctx context.Context, issuer, discoveryURL string) consoleFetch {
	f, err := s.console.discovery.get(ctx, issuer+"\n"+discoveryURL, s.now(), cmp.Or(s.console.discoveryTTL, consoleDiscoveryTTL), func(ctx context.Context) (consoleFetch, error) {
		ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		at, start := s.now(), time.Now()
		doc, err := (&discovery.Client{HTTP: s.discoveryHTTP, Now: s.now}).Get(ctx, issuer, discoveryURL)
		return consoleFetch{doc: doc, err: err, duration: time.Since(start).Round(time.Millisecond), at: at}, nil
	})
	if err != nil { // the caller left before the shared fetch answered
		return consoleFetch{err: err}
	}
	return f
}
