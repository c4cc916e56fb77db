package broker

import (
	"net/http"

	"github.com/dpop-broker/dpop-broker/logs"
)

// sessionSignInsBusy is the reason on the 429 page of a login refused by the per-session limit.
const sessionSignInsBusy = "Your browser is signing in to applications too often."

// sessionLoginRefused spends one login of the browser's session d
// (rate_limits.authorize.per_session, keyed by its sid) and, when the bucket is empty, answers
// the request (true). d has passed every single sign-on check, its cookie secret included, and
// nothing has been written for the login yet: so a request that only names a session (its sid
// is in every ID token issued from it) spends nothing, and a refused one writes neither the
// session, nor a code, nor an event of the audit trail. Every login the session answers writes
// an s or ssa event there, which only authenticated parties can fill; without this limit one
// signed-in browser could rewrite the whole trail at the per-IP rate of /authorize.
//
// The refusal is answered as the other /authorize limits answer: the 429 page with
// Retry-After. prompt=none gets an answer its app can read instead (OIDC Core §3.1.2.6):
// temporarily_unavailable (RFC 6749 §4.1.2.1) at its redirect_uri, or posted for
// response_mode=web_message. Either is recorded as a refusal, f or fsa with details.error
// too_many_requests, details.rate_limit, the user and details.session_id, in the
// unauthenticated class: limited per address like every refusal, so the limit's own events
// cannot flush the audit trail either.
func (s *Server) sessionLoginRefused(w http.ResponseWriter, r *http.Request, d ssoDecision, app *appRequest, ev *logs.Event) bool {
	ref := s.guard.check(s.guard.authorizeSession, d.tag, s.now())
	if ref == nil {
		return false
	}
	ev.Type, ev.Class = "", logs.ClassUnauthenticated // not ssa: refused, and limited like every refusal
	ev.UserID = d.sess.UserID
	ev.Details["session_id"] = d.tag
	if !app.silent {
		s.refusedPage(w, r, ref, ev, tooManySignIns, sessionSignInsBusy)
		return true
	}
	ev.Details["rate_limit"] = ref.details()
	s.failLogin(w, r, ev, loginFailure{App: app, Code: codeTooManyRequests, OAuthError: "temporarily_unavailable",
		Description: ref.description()})
	return true
}
