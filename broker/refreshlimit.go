package broker

import (
	"net/http"

	"github.com/dpop-broker/dpop-broker/logs"
)

// byRefreshFamily is details.rate_limit.by (and the metric's key label) of a refusal by the
// per-family limit.
const byRefreshFamily = "refresh_family"

// chargeRefreshFamily spends one refresh of p's family, whose live token the request
// presented (refresh.go calls it before the proof's replay claim). A refusal is answered 429
// too_many_requests with Retry-After (tokenLimited) and leaves the token live for a retry.
func (s *Server) chargeRefreshFamily(p *presentedRefresh, x *exchange) *oauthError {
	ref := s.guard.check(s.guard.refreshFamily, p.fam, s.now())
	if ref == nil {
		return nil
	}
	x.limited = ref
	return &oauthError{Status: http.StatusTooManyRequests, Code: codeTooManyRequests, Description: ref.description()}
}

// tokenLimited completes the answer and event of a token request a limit refused inside the
// grant (chargeRefreshFamily): Retry-After, details.rate_limit, and the unauthenticated
// class, so that, like every refusal, a flood of them is limited (logs.unauthenticated)
// instead of filling the audit trail.
func (s *Server) tokenLimited(w http.ResponseWriter, ev *logs.Event, x *exchange) {
	if x.limited == nil {
		return
	}
	x.limited.setRetryAfter(w)
	ev.Details["rate_limit"] = x.limited.details()
	ev.Class = logs.ClassUnauthenticated
}
