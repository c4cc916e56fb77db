package broker

import (
	"cmp"
	"net/http"

	"github.com/dpop-broker/dpop-broker/logs"
)

// Console sign-ins through the broker in flight: each stores a record (consolesession.go) for
// consoleLoginTTL unless its callback comes first, so they are bounded like /authorize's
// logins in progress: per client IP (IPv6 /64) by rate_limits.live_transactions_per_ip, in the
// same table as /authorize's, and on each replica by consoleSignInsInFlight whatever the
// addresses. A refusal is a 429 page and a limited fapi event; nothing is stored. The break-
// glass sign-in stores nothing before it succeeds and is not counted.

// consoleSignInsInFlight bounds the console sign-ins through the broker in flight on one
// replica.
const consoleSignInsInFlight = 1000

// byConsoleSignIns is details.rate_limit.by (and the metric's key label) of a refusal by
// consoleSignInsInFlight.
const byConsoleSignIns = "console_sign_ins"

// consoleSignInSlots is the replica's table of sign-ins through the broker in flight (one key).
func (s *Server) consoleSignInSlots() *liveTxTable {
	s.console.once.Do(func() {
		s.console.signIns = newLiveTxTable(cmp.Or(s.console.signInCap, consoleSignInsInFlight), 1)
	})
	return s.console.signIns
}

// holdConsoleSignIn takes the slots of a sign-in through the broker that expires at exp
// (unix ms): one of the client IP's live transactions and one of the replica's. It returns
// the client-IP key (kept with the sign-in, to give the slot back), or the refusal.
func (s *Server) holdConsoleSignIn(r *http.Request, exp int64) (string, *refusal) {
	key, now := logs.IPKey(s.clientIP(r)), s.now()
	if s.guard.liveTx != nil {
		if ref := s.guard.liveTx.reserveUpTo(key, now, exp, s.guard.liveTxLimit); ref != nil {
			ref.endpoint = "console"
			s.guard.count(ref)
			return "", ref
		}
	}
	if ref := s.consoleSignInSlots().reserve("", now, exp); ref != nil {
		if s.guard.liveTx != nil {
			s.guard.liveTx.release(key, exp, now)
		}
		ref.endpoint, ref.by = "console", byConsoleSignIns
		s.guard.count(ref)
		return "", ref
	}
	return key, nil
}

// freeConsoleSignIn gives back the slots of a sign-in (its client-IP key and expiry): its
// callback came, or it was not stored after all. Unknown slots (another replica's) change
// nothing.
func (s *Server) freeConsoleSignIn(key string, exp int64) {
	now := s.now()
	if s.guard.liveTx != nil && key != "" {
		s.guard.liveTx.release(key, exp, now)
	}
	s.consoleSignInSlots().release("", exp, now)
}
