package broker

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"slices"
)

// The console's guards against a session outliving its grounds and against forged sign-ins
// (docs: README "Operators' console", SECURITY.md):
//   - a console session opened through the broker is tied to the broker session of its
//     sign-in (the ID token's sid): every console request reads that session, so signing out
//     of the broker, or ending the user's sessions (DELETE /api/v2/users/{id}/sessions or
//     /api/v2/sessions/{id}), ends the console session too; and console.admins are asked
//     again, on the connection and claims of that session, so a rule removed from the
//     configuration takes effect at the next request;
//   - a break-glass session names its management token by a fingerprint: a token removed
//     from management.tokens ends it, and its scopes are those the token holds now;
//   - email and group rules admit users of their connection only (config.Console.ConnectionOf),
//     and email addresses compare with ASCII case folding only.

const (
	// consoleScope is the scope of the console's sign-in; its ID token's claims are the
	// session's claims under it (scopedClaims), and so are the claims console.admins re-check.
	consoleScope = "openid profile email"
)

// consoleAdmin reports whether console.admins admit the user of claims, who signed in
// through the connection conn: a user_id rule equal to sub; on the rule's connection only,
// an email rule equal (ASCII case-insensitively; non-ASCII addresses never match) to a
// verified email, or a group rule whose value is in its claim (a string or strings).
func (s *Server) consoleAdmin(conn string, claims map[string]any) bool {
	sub, _ := claims["sub"].(string)
	email, _ := claims["email"].(string)
	verified, _ := claims["email_verified"].(bool)
	cs := &s.cfg.Console
	for _, a := range cs.Admins {
		if a.UserID != "" {
			if sub != "" && a.UserID == sub {
				return true
			}
			continue
		}
		if c := cs.ConnectionOf(a); c == "" || c != conn {
			continue // fail closed: validation refuses a rule without a connection
		}
		switch {
		case a.Email != "" && verified && asciiEmailEqual(a.Email, email):
			return true
		case a.Group != "" && a.Claim != "" && claimHasValue(claims[a.Claim], a.Group):
			return true
		}
	}
	return false
}

// claimHasValue reports whether the claim c is want or an array holding it.
func claimHasValue(c any, want string) bool {
	switch g := c.(type) {
	case string:
		return g == want
	case []any:
		return slices.Contains(g, any(want))
	case []string:
		return slices.Contains(g, want)
	}
	return false
}

// asciiEmailEqual compares two addresses with ASCII case folding only: Unicode folding
// would let "ſam@example.com" (long s) or a Kelvin sign stand for an ASCII address. Either
// address with a byte outside printable ASCII never matches.
func asciiEmailEqual(rule, email string) bool {
	if rule == "" || len(rule) != len(email) {
		return false
	}
	for i := 0; i < len(rule); i++ {
		a, b := rule[i], email[i]
		if a < 0x21 || a > 0x7e || b < 0x21 || b > 0x7e {
			return false
		}
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}

// consoleBrokerSession reads the live broker session sid of user behind a console sign-in,
// or says why there is none.
func (s *Server) consoleBrokerSession(ctx context.Context, sid, user string) (*sessionRecord, []byte, string) {
	if sid == "" {
		return nil, nil, "the sign-in carries no broker session (sid)"
	}
	sess, raw, oerr := s.liveSession(ctx, sid, user, "")
	switch {
	case oerr == errStoreDown:
		return nil, nil, "the store is unavailable"
	case oerr != nil:
		return nil, nil, "the broker session of this sign-in has ended (signed out, or ended by an administrator)"
	}
	return sess, raw, ""
}

// consoleBrokerAdmin reports whether the broker session sess still makes its user a console
// administrator: console.admins asked on its connection and its claims under consoleScope.
func (s *Server) consoleBrokerAdmin(sess *sessionRecord) bool {
	claims := scopedClaims(sess.Claims, consoleScope)
	claims["sub"] = sess.UserID
	return s.consoleAdmin(sess.Connection, claims)
}

// consoleRecheck checks, at every request, that what opened the console session cs still
// holds, and narrows its scopes to what the operator holds now; it returns why not ("" = ok).
func (s *Server) consoleRecheck(ctx context.Context, cs *consoleSession) string {
	switch cs.Via {
	case "token":
		tok := s.mgmt.byFingerprint(cs.TokenFP)
		if tok == nil || "token:"+tok.name != cs.Operator {
			return "the management token of this console session is no longer configured"
		}
		cs.Scopes = slices.DeleteFunc(cs.Scopes, func(sc string) bool { return !slices.Contains(tok.scopes, sc) })
	case "broker":
		if !s.cfg.ConsoleSignIn() {
			return "sign-in through the broker is no longer configured (console.admins)"
		}
		sess, raw, problem := s.consoleBrokerSession(ctx, cs.SID, cs.Operator)
		if problem != "" {
			return problem
		}
		if !s.consoleBrokerAdmin(sess) {
			return "the operator is no longer a console administrator (console.admins)"
		}
		cs.Scopes = slices.DeleteFunc(cs.Scopes, func(sc string) bool { return !slices.Contains(consoleAdminScopes, sc) })
		s.slideSession(ctx, cs.SID, raw, sess) // using the console is a use of the session
	default:
		return "the console session does not decode"
	}
	return ""
}

// fingerprint names a management token in a console session without anything that would
// authenticate: the SHA-256 of the token's SHA-256.
func (t *mgmtToken) fingerprint() string {
	h := sha256.Sum256(t.hash[:])
	return hex.EncodeToString(h[:])
}

// byFingerprint returns the configured token with fingerprint fp (nil when none).
func (a *mgmtAuth) byFingerprint(fp string) *mgmtToken {
	var found *mgmtToken
	for i := range a.tokens {
		if fp != "" && subtle.ConstantTimeCompare([]byte(a.tokens[i].fingerprint()), []byte(fp)) == 1 {
			found = &a.tokens[i]
		}
	}
	return found
}
