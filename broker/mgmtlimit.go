package broker

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/dpop-broker/dpop-broker/logs"
)

// byToken is details.rate_limit.by (and the metric's key label) of a refusal by the
// per-token management limit.
const byToken = "token"

// mgmtLimited applies the management API's rate limits to the call c, before the guard in
// mgmt.go authenticates it, and answers 429 when one refuses it (true: the call is answered).
// The per-IP bucket is spent before the token is compared and given back when it matches:
// calls in flight at once cannot all find the bucket full and each try a token.
func (s *Server) mgmtLimited(c *mgmtCall, a *mgmtAuth) bool {
	now, ip := s.now(), logs.IPKey(s.clientIP(c.r))
	ref, refund := s.guard.hold(s.guard.mgmtIP, ip, now)
	if ref != nil {
		s.apiRefused(c, ref, nil) // the token is not looked at
		return true
	}
	tok := a.match(bearerToken(c.r))
	if tok == nil {
		return false // answered 401 by the guard; the request stays spent
	}
	refund(s.now())
	if ref := s.guard.check(s.guard.mgmtToken, tok.name, now); ref != nil {
		s.apiRefused(c, ref, tok)
		return true
	}
	return false
}

// bearerToken is the token of an "Authorization: Bearer TOKEN" header, "" for anything else
// (the guard in mgmt.go answers those).
func bearerToken(r *http.Request) string {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// apiRefused answers a rate-limited management call: 429 with Retry-After and the SaaS error
// body {statusCode, error, message, errorCode: too_many_requests}, and a fapi event with
// details.rate_limit, naming tok (the token the per-token limit refused) when set. The event
// is an unauthenticated one, limited like every refusal, also when the token is valid: a
// token's flood of refused calls cannot fill the audit trail.
func (s *Server) apiRefused(c *mgmtCall, ref *refusal, tok *mgmtToken) {
	c.token = tok
	d := ref.description()
	msg := strings.ToUpper(d[:1]) + d[1:] // "Too many requests …; retry after N s"
	ref.setRetryAfter(c.w)
	c.w.Header().Set("Content-Type", "application/json; charset=utf-8")
	c.w.WriteHeader(http.StatusTooManyRequests)
	_ = json.NewEncoder(c.w).Encode(map[string]any{
		"statusCode": http.StatusTooManyRequests, "error": http.StatusText(http.StatusTooManyRequests),
		"message": msg, "errorCode": codeTooManyRequests,
	})
	ev := s.mgmtEvent(c, http.StatusTooManyRequests)
	ev.Type, ev.Class = logs.TypeFailedAPI, logs.ClassUnauthenticated
	ev.Details["error"] = map[string]any{"message": msg, "errorCode": codeTooManyRequests}
	ev.Details["rate_limit"] = ref.details()
	s.write(c.r, ev)
}

// hold spends one request of key in table t (nil = unlimited) at now, like check, and
// returns with it a refund that gives the request back (the request was not an attempt, or
// it succeeded): a limit on failures is spent before what it guards is read, so requests in
// flight at once cannot each find the bucket full. The refund (called with the time it is
// made) gives back at most one request, however often it is called.
func (g *guard) hold(t *limiterTable, key string, now time.Time) (*refusal, func(time.Time)) {
	if t == nil {
		return nil, func(time.Time) {}
	}
	ref := t.take(key, now)
	g.count(ref)
	if ref != nil {
		return ref, func(time.Time) {}
	}
	var once sync.Once
	return nil, func(at time.Time) { once.Do(func() { t.refund(key, at) }) }
}

// refund gives back one request of key at now (the bucket never holds more than its burst).
func (t *limiterTable) refund(key string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	lim, ok := t.keys.Get(key)
	if !ok {
		return // forgotten: its next bucket starts full
	}
	// A reservation of -1 request adds one token (golang.org/x/time/rate: n is subtracted
	// from the tokens); the limiter caps the bucket at its burst at its next use.
	lim.ReserveN(now, -1)
}
