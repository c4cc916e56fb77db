package broker

import (
	"net/http"

	"github.com/dpop-broker/dpop-broker/logs"
)

// TokenRateLimits are the limits of /oauth/token and /oauth/revoke: per client IP, per
// authenticated confidential client, and per refresh-token family.
type TokenRateLimits struct {
	EndpointRateLimits `yaml:",inline"`
	// PerRefreshFamily limits the refreshes of one refresh-token family (one login's chain of
	// rotated refresh tokens, shared by all the tabs of an SPA). It is charged only once the
	// presented token is known to be the family's live token, so a made-up or rotated-out
	// token spends nothing; and before the request's DPoP proof is stored in the replay
	// cache, so a refused refresh stores nothing. A public client has no secret: without it
	// one login could refresh at the per-IP rate, storing a proof jti and writing an event
	// each time.
	PerRefreshFamily RateLimit `yaml:"per_refresh_family"`
}

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
