package broker

import (
	"context"
	"net/http"

	"github.com/dpop-broker/dpop-broker/dpop"
	"github.com/dpop-broker/dpop-broker/logs"
)

// bySession is details.rate_limit.by (and the metric's key label) of a refusal by a
// per-session limit: /userinfo's, or /authorize's for logins answered from the session
// (ssolimit.go).
const bySession = "session"

// guardUserinfo applies the per-IP limit of /userinfo before anything else.
func (s *Server) guardUserinfo(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if ref := s.guard.check(s.guard.userinfoIP, logs.IPKey(s.clientIP(r)), s.now()); ref != nil {
			s.userinfoRefused(w, r, ref, nil)
			return
		}
		next(w, r)
	}
}

// chargeUserinfoSession spends one request of the session of claims, a token that passed
// every check (with its proof, not yet in the replay cache), and answers 429 when the bucket
// is empty (true: the request is answered).
func (s *Server) chargeUserinfoSession(w http.ResponseWriter, r *http.Request, claims *accessClaims) bool {
	ref := s.guard.check(s.guard.userinfoSession, claims.SID, s.now())
	if ref == nil {
		return false
	}
	s.userinfoRefused(w, r, ref, claims)
	return true
}

// userinfoRefused answers a rate-limited /userinfo request: 429 with Retry-After and the
// OAuth error body {"error":"too_many_requests","error_description":...} (no
// WWW-Authenticate: 429 is no authentication challenge), and an api_limit event naming the
// user and app when the token was valid (claims set).
func (s *Server) userinfoRefused(w http.ResponseWriter, r *http.Request, ref *refusal, claims *accessClaims) {
	ev := s.newEvent(r)
	ev.Type, ev.Class = logs.TypeAPILimit, logs.ClassUnauthenticated // limited like every refusal
	ev.Details["request"] = map[string]any{"method": r.Method, "path": "/userinfo"}
	if claims != nil {
		ev.UserID = claims.Subject
		ev.Details["session_id"] = claims.SID
		if c := s.cachedClient(claims.ClientID); c != nil {
			withClient(ev, c)
		}
	}
	ref.setRetryAfter(w)
	s.recordRefusal(r, ev, ref)
	writeOAuthError(w, &oauthError{Status: http.StatusTooManyRequests, Code: codeTooManyRequests, Description: ref.description()})
}

// claimUserinfoProof records a /userinfo proof in the replay cache (RFC 9449 §11.1), once its
// token, the token's session and the per-session limit have passed; nil proof (Bearer):
// nothing to claim. A replayed proof is a 401 invalid_dpop_proof; a cache that cannot take
// it (unreachable, or its budget full: store.memory.max_replay_records) fails closed, 503.
func (s *Server) claimUserinfoProof(ctx context.Context, proof *dpop.Result) *oauthError {
	err := s.verifier.Claim(ctx, proof)
	if err == nil {
		return nil
	}
	oerr := proofError(err, true)
	switch {
	case storeFull(err):
		s.log.Error("DPoP replay cache full: proofs are refused until records expire", "endpoint", "/userinfo", "err", err)
	case oerr.Status == http.StatusServiceUnavailable:
		s.log.Error("DPoP proof check failed", "err", err)
	}
	return oerr
}
