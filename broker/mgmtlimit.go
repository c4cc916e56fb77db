package broker

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/dpop-broker/dpop-broker/logs"
)

// byToken is details.rate_limit.by (and the metric's key label) of a refusal by the
// per-token management limit.
const byToken = "token"

// mgmtLimited applies the management API's rate limits to the call c, before the guard in
// mgmt.go authenticates it, and answers 429 when one refuses it (true: the call is answered).
func (s *Server) mgmtLimited(c *mgmtCall, a *mgmtAuth) bool {
	now, ip := s.now(), logs.IPKey(s.clientIP(c.r))
	if ref := s.guard.peek(s.guard.mgmtIP, ip, now); ref != nil {
		s.apiRefused(c, ref, nil) // the token is not looked at
		return true
	}
	tok := a.match(bearerToken(c.r))
	if tok == nil {
		if ref := s.guard.check(s.guard.mgmtIP, ip, now); ref != nil {
			s.apiRefused(c, ref, nil)
			return true
		}
		return false // answered 401 by the guard
	}
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

// peek reports, without spending anything, whether key's bucket in table t (nil =
// unlimited) has a request left at now: nil, or the refusal (counted) its next request would
// get.
func (g *guard) peek(t *limiterTable, key string, now time.Time) *refusal {
	if t == nil {
		return nil
	}
	ref := t.room(key, now)
	g.count(ref)
	return ref
}

// room is take without spending: nil when key has a request left at now.
func (t *limiterTable) room(key string, now time.Time) *refusal {
	t.mu.Lock()
	defer t.mu.Unlock()
	tokens := t.keys.GetOrCreate(key).TokensAt(now)
	if tokens >= 1 {
		return nil
	}
	wait := time.Duration((1 - tokens) / float64(t.limit) * float64(time.Second))
	return &refusal{endpoint: t.endpoint, by: t.key, limit: t.spec, burst: t.burst, retryAfter: max(wait, 0)}
}
