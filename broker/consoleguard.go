package broker

import (
	"context"
	"slices"
)

// The console's guards against operators it should not admit (docs: README "Operators'
// console", SECURITY.md): email and group rules admit users of their connection only
// (config.Console.ConnectionOf), the connection of the broker session the sign-in created or
// used; email addresses compare with ASCII case folding only.

const (
	// consoleScope is the scope of the console's sign-in; its ID token's claims are the
	// session's claims under it (scopedClaims), and so are the claims console.admins ask.
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
