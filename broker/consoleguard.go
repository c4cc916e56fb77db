package broker

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dpop-broker/dpop-broker/discovery"
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
//   - email and group rules admit users of their connection only (config.Console.ConnectionOf);
//   - the break-glass form is refused when the browser says it came from another site or
//     origin (Sec-Fetch-Site, Origin: consoleFormProblem), and carries a pre-session CSRF token
//     equal to its cookie (double submit; see preCSRFLabel for what the token's MAC does and
//     does not stop); the sign-in through the broker asks for max_age (console.max_age) and
//     checks the ID token's auth_time.

const (
	consolePreCookie = "dpop_broker_console_pre" // the sign-in page's CSRF token (before a session)
	consolePreTTL    = time.Hour
	// consoleScope is the scope of the console's sign-in; its ID token's claims are the
	// session's claims under it (scopedClaims), and so are the claims console.admins re-check.
	consoleScope = "openid profile email"
	// consoleAuthTimeLeeway allows for the time between the broker's answer from a session
	// (whose auth_time it checked against max_age) and the console's check of the ID token.
	consoleAuthTimeLeeway = time.Minute
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
		return nil, nil, consoleStoreDown
	case oerr != nil:
		return nil, nil, "the broker session of this sign-in has ended (signed out, or ended by an administrator)"
	}
	return sess, raw, ""
}

// consoleBrokerAdminProblem says why the broker session sess does not (or no longer) make
// its user a console administrator ("" = it does): console.admins asked on its connection and
// its claims under consoleScope, and its upstream the pinned one (consolepin.go).
func (s *Server) consoleBrokerAdminProblem(sess *sessionRecord) string {
	claims := scopedClaims(sess.Claims, consoleScope)
	claims["sub"] = sess.UserID
	if !s.consoleAdmin(sess.Connection, claims) {
		return "the user " + clip(sess.UserID, consoleOperatorMax) + " is not a console administrator (console.admins)"
	}
	return s.consolePinProblem(sess)
}

// consoleStoreDown is the refusal of a console request the store could not serve: the only
// one that does not end the console session (consoleRecheck).
const consoleStoreDown = "the store is unavailable"

// consoleRecheck checks, at every request, that what opened the console session cs still
// holds, and narrows its scopes to what the operator holds now; it returns why not ("" = ok)
// and whether the refusal is final: every refusal is but the store's being unavailable, and
// the caller ends a session refused for good (consoleSessionOf), so that restoring what
// opened it (a token put back in management.tokens, an administrator back in console.admins)
// never brings it back.
func (s *Server) consoleRecheck(ctx context.Context, cs *consoleSession) (problem string, final bool) {
	switch cs.Via {
	case "token":
		tok := s.mgmt.byFingerprint(cs.TokenFP)
		if tok == nil || "token:"+tok.name != cs.Operator {
			return "the management token of this console session is no longer configured", true
		}
		cs.Scopes = slices.DeleteFunc(cs.Scopes, func(sc string) bool { return !slices.Contains(tok.scopes, sc) })
	case "broker":
		if !s.cfg.ConsoleSignIn() {
			return "sign-in through the broker is no longer configured (console.admins)", true
		}
		sess, raw, problem := s.consoleBrokerSession(ctx, cs.SID, cs.Operator)
		if problem != "" {
			return problem, problem != consoleStoreDown
		}
		if problem := s.consoleBrokerAdminProblem(sess); problem != "" {
			return "the operator is no longer a console administrator: " + problem, true
		}
		cs.Scopes = slices.DeleteFunc(cs.Scopes, func(sc string) bool { return !slices.Contains(consoleAdminScopes, sc) })
		s.slideSession(ctx, cs.SID, raw, sess) // using the console is a use of the session
	default:
		return "the console session does not decode", true
	}
	return "", false
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

// consolePreCSRF returns the sign-in page's CSRF token, setting its cookie when the browser
// has none yet (or one the broker did not make).
func (s *Server) consolePreCSRF(w http.ResponseWriter, r *http.Request) string {
	if v := s.consoleCookieValue(r, consolePreCookie); s.mgmt.validPreCSRF(v) {
		return v
	}
	v := s.mgmt.newPreCSRF()
	http.SetCookie(w, s.consoleCookieFor(r, consolePreCookie, v, int(consolePreTTL.Seconds())))
	return v
}

// The pre-session CSRF token is a random nonce and its MAC, "NONCE.MAC" (double submit: the
// form's csrf field must equal the cookie). What protects what against a cross-site form:
//   - Sec-Fetch-Site (current Chromium, Firefox and Safari send it) refuses it whatever the
//     attacker's page does; Origin refuses it unless that page made its Origin opaque
//     ("null", which a no-referrer policy does and which says nothing: consoleFormProblem).
//     These are the real protection.
//   - over https the cookie is __Host- (consoleCookieFor): no other host can set it, so the
//     double submit holds by itself there, also in a browser that sends neither header.
//   - over plain http a sibling host can set ("toss") the cookie. The MAC only makes it toss
//     a value the broker made: a value of its own choosing is refused. It does not stop an
//     attacker who GETs /console/signin himself and tosses the genuine NONCE.MAC pair he got
//     (the token is bound to nothing: there is no session yet). Only the headers above then
//     refuse his form; a browser that sends neither has no protection left there.
//
// The MAC key is derived once, in newMgmtAuth, from the configured management tokens' hashes
// (a secret every replica shares; the break-glass form exists only with tokens): rotating a
// token only means reloading the sign-in page.
const preCSRFLabel = "dpop-broker console pre-session CSRF v1"

// preCSRFKey derives the pre-session CSRF tokens' MAC key from the tokens' hashes.
func preCSRFKey(tokens []mgmtToken) []byte {
	k := hmac.New(sha256.New, []byte(preCSRFLabel))
	for i := range tokens {
		k.Write(tokens[i].hash[:])
	}
	return k.Sum(nil)
}

// preCSRFMAC is the MAC of nonce under a's pre-session CSRF key.
func (a *mgmtAuth) preCSRFMAC(nonce string) string {
	m := hmac.New(sha256.New, a.preCSRFKey)
	m.Write([]byte(nonce))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// newPreCSRF returns a fresh pre-session CSRF token.
func (a *mgmtAuth) newPreCSRF() string {
	nonce := randomString(24)
	return nonce + "." + a.preCSRFMAC(nonce)
}

// validPreCSRF reports whether v is a pre-session CSRF token the broker made (constant time).
// A valid one proves only that: anyone may fetch one from the sign-in page (preCSRFLabel).
func (a *mgmtAuth) validPreCSRF(v string) bool {
	nonce, mac, ok := strings.Cut(v, ".")
	return ok && len(nonce) >= 16 && hmac.Equal([]byte(mac), []byte(a.preCSRFMAC(nonce)))
}

// consoleHostGuard answers a console request whose Host is not the console's own
// (consoleHostProblem) with a refusal page, before anything else looks at it.
func (s *Server) consoleHostGuard(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if problem := s.consoleHostProblem(r); problem != "" {
			// The page's links go to console.url (the refused host would refuse them too).
			var d consoleRefusedData
			if s.cfg.Console.URL != "" {
				d.ConsoleURL = s.cfg.ConsoleURL()
			}
			v := &consoleView{Data: d}
			if d.ConsoleURL != "" {
				v.Home = d.ConsoleURL + "/"
			}
			s.consoleRefusedView(w, r, http.StatusMisdirectedRequest, problem, "", "", v)
			return
		}
		next(w, r)
	}
}

// consoleHostProblem says why the console does not answer at r's Host ("" = it does): with
// console.url, only at its host; on admin_listen without console.url, only at a loopback
// host (discovery.LoopbackHost: localhost or a loopback IP literal, any port), so a DNS-rebinding name cannot reach it (its
// origin would pass as the console's: consoleOrigin). Served on the public URL without
// console.url the Host is not checked: the console's origin is the public URL's, configured.
// No X-Forwarded-Host is honoured: a proxy in front must pass the Host through.
func (s *Server) consoleHostProblem(r *http.Request) string {
	switch {
	case s.cfg.Console.URL != "":
		if u := s.consoleURL; u == nil || hostKey(u.Scheme, u.Host) != hostKey(u.Scheme, r.Host) {
			return "the console answers only at console.url's host; this request came for the host " + strconv.Quote(clip(r.Host, 128))
		}
	case s.cfg.AdminListen != "":
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if !discovery.LoopbackHost(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")) {
			return "the console on admin_listen without console.url answers only at a loopback address (127.0.0.1, [::1] or localhost); this request came for the host " +
				strconv.Quote(clip(r.Host, 128)) + ": set console.url to the URL operators' browsers use"
		}
	}
	return ""
}

// hostKey is host (host[:port]) compared case-insensitively, without scheme's default port.
func hostKey(scheme, host string) string {
	host = strings.ToLower(host)
	if p := map[string]string{"https": ":443", "http": ":80"}[strings.ToLower(scheme)]; p != "" {
		host = strings.TrimSuffix(host, p)
	}
	return host
}

// consoleOrigin is the origin browsers use for the console: console.url's, or the public
// URL's without admin_listen; on admin_listen without console.url, this request's host (a
// loopback one: consoleHostProblem).
func (s *Server) consoleOrigin(r *http.Request) string {
	if s.cfg.Console.URL == "" && s.cfg.AdminListen != "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		return scheme + "://" + r.Host
	}
	if s.consoleURL == nil {
		return ""
	}
	return s.consoleURL.Scheme + "://" + s.consoleURL.Host
}

// consoleLoginCSRFProblem checks a break-glass sign-in: consoleFormProblem with the sign-in
// page's CSRF token (its cookie).
func (s *Server) consoleLoginCSRFProblem(w http.ResponseWriter, r *http.Request) string {
	want := s.consoleCookieValue(r, consolePreCookie)
	if !s.mgmt.validPreCSRF(want) {
		want = "" // a cookie the broker did not make never matches
	}
	return s.consoleFormProblem(w, r, "sign-in", want,
		"missing or wrong sign-in CSRF token; reload the sign-in page and try again")
}

// consoleFormProblem checks a console form (what names it in the refusal): sent from the
// console's own origin (Sec-Fetch-Site and Origin, when the browser sends them), carrying a
// csrf field equal to want (constant time; an empty want never matches, and wrongToken is
// the refusal). It parses the form. An opaque Origin ("null") says nothing: browsers send it
// for the console's own forms, whose pages are Referrer-Policy: no-referrer (Fetch,
// "serializing a request origin"); Sec-Fetch-Site and the token still decide.
func (s *Server) consoleFormProblem(w http.ResponseWriter, r *http.Request, what, want, wrongToken string) string {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return "cross-site " + what + " refused (Sec-Fetch-Site: " + clip(site, 32) + ")"
	}
	if o := r.Header.Get("Origin"); o != "" && o != "null" && o != s.consoleOrigin(r) {
		return "cross-origin " + what + " refused (Origin: " + clip(o, 128) + ")"
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	if err := r.ParseForm(); err != nil {
		return "the form does not decode"
	}
	got := r.PostForm.Get("csrf")
	if want == "" || got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		return wrongToken
	}
	return ""
}

// consoleMaxAgeParam is the max_age of the console's authorize request, in seconds.
func (s *Server) consoleMaxAgeParam() string {
	return strconv.Itoa(int(s.cfg.ConsoleMaxAge() / time.Second))
}

// consoleAuthTimeProblem checks the console ID token's auth_time against console.max_age.
func (s *Server) consoleAuthTimeProblem(claims map[string]any) string {
	at, ok := claims["auth_time"].(float64)
	if !ok || at <= 0 {
		return "the ID token carries no auth_time"
	}
	if s.now().Sub(time.Unix(int64(at), 0)) > s.cfg.ConsoleMaxAge()+consoleAuthTimeLeeway {
		return "the user authenticated longer ago than console.max_age allows; sign in again"
	}
	return ""
}
