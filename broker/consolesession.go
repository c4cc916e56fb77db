package broker

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// Who may enter the console and how (docs: README "Operators' console"):
//   - through the broker: the console is a built-in public client (config.ConsoleClientID,
//     PKCE S256, nonce) whose redirect URI is console.url + "/callback"; the code is redeemed
//     at the broker's own token endpoint in-process, the ID token verified with go-oidc, and
//     console.admins decide (user id, verified email, or a group claim value);
//   - break-glass: a management token (management.tokens), with that token's scopes.
// A sign-in through the broker in flight is a sealed cookie (consolesignin.go). A console
// session is a store record (sessions.KindConsole, named by the SHA-256 of the
// cookie's secret) with an absolute lifetime (console.session_lifetime) and a CSRF token every
// POST must carry. Sign-ins, refusals and sign-outs are sapi/fapi events naming the operator.

const (
	consoleCookie      = "dpop_broker_console"       // the console session
	consoleLoginCookie = "dpop_broker_console_login" // a sign-in through the broker in flight
	consoleLoginTTL    = 10 * time.Minute
	// consoleOperatorMax bounds the operator name kept in a session and its events.
	consoleOperatorMax = 256
)

// consoleSession is the stored console session.
type consoleSession struct {
	Operator string   `json:"operator"` // user id (broker) or "token:NAME" (break-glass)
	Via      string   `json:"via"`      // "broker" or "token"
	Scopes   []string `json:"scopes"`   // management scopes the operator holds
	CSRF     string   `json:"csrf"`
	SID      string   `json:"sid,omitempty"`      // via broker: the broker session of the sign-in
	TokenFP  string   `json:"token_fp,omitempty"` // via token: the token's fingerprint (consoleguard.go)
	Expires  int64    `json:"exp"`                // unix seconds
	id       string   // store id (never the cookie value)
}

// allows reports whether the operator holds scope.
func (cs *consoleSession) allows(scope string) bool { return slices.Contains(cs.Scopes, scope) }

// consoleLoginState is a sign-in through the broker in flight, sealed in the browser's sign-in
// cookie (consolesignin.go).
type consoleLoginState struct {
	State    string `json:"state"`
	Verifier string `json:"verifier"` // PKCE code_verifier (never logged)
	Nonce    string `json:"nonce"`
	Expires  int64  `json:"exp"` // unix seconds
}

// consoleAdminScopes are the scopes of an operator who signed in through the broker and is
// listed in console.admins: everything the console can do.
var consoleAdminScopes = []string{
	config.ScopeReadConnections, config.ScopeUpdateConnections, config.ScopeReadLogs,
	config.ScopeReadSessions, config.ScopeDeleteSessions, config.ScopeReadClients,
}

// consoleSecure reports whether the console's cookies are Secure and __Host- prefixed: when
// console.url is https; without console.url, when the public URL is https and the console is
// served there (no admin_listen), or when this request came over TLS (admin_listen: the
// scheme browsers use there is not configured).
func (s *Server) consoleSecure(r *http.Request) bool {
	if s.cfg.Console.URL == "" && s.cfg.AdminListen != "" {
		return r.TLS != nil
	}
	return strings.HasPrefix(s.cfg.ConsoleURL(), "https://")
}

// consoleCookieFor is the console cookie base with value for r's answer: HttpOnly,
// SameSite=Lax (the sign-in returns through a cross-site redirect), Secure and __Host-
// (consoleSecure), else scoped to the console's path.
func (s *Server) consoleCookieFor(r *http.Request, base, value string, maxAge int) *http.Cookie {
	c := &http.Cookie{Name: base, Value: value, Path: s.consolePath(), MaxAge: maxAge, HttpOnly: true, SameSite: http.SameSiteLaxMode}
	if s.consoleSecure(r) {
		c.Name, c.Path, c.Secure = hostPrefix+base, "/", true
	}
	return c
}

// consoleCookieValue is the value of r's console cookie base ("" when absent or too long).
func (s *Server) consoleCookieValue(r *http.Request, base string) string {
	return s.consoleCookieValueUpTo(r, base, 128)
}

// consoleCookieValueUpTo is consoleCookieValue for a value of at most maxLen bytes.
func (s *Server) consoleCookieValueUpTo(r *http.Request, base string, maxLen int) string {
	name := base
	if s.consoleSecure(r) {
		name = hostPrefix + base
	}
	c, err := r.Cookie(name)
	if err != nil || len(c.Value) > maxLen {
		return ""
	}
	return c.Value
}

func consoleRecordID(prefix, secret string) string {
	h := sha256.Sum256([]byte(secret))
	return prefix + hex.EncodeToString(h[:])
}

// consoleSessionOf returns the request's live console session, or nil and why not.
func (s *Server) consoleSessionOf(r *http.Request) (*consoleSession, string) {
	v := s.consoleCookieValue(r, consoleCookie)
	if v == "" {
		return nil, "no console session"
	}
	id := consoleRecordID("s.", v)
	raw, err := s.store.Get(r.Context(), sessions.KindConsole, id)
	if err != nil {
		if !errors.Is(err, sessions.ErrNotFound) {
			s.log.Error("console session could not be read", "err", err)
			return nil, "the store is unavailable"
		}
		return nil, "the console session has ended"
	}
	var cs consoleSession
	if err := json.Unmarshal(raw, &cs); err != nil || cs.CSRF == "" || cs.Operator == "" {
		return nil, "the console session does not decode"
	}
	if s.now().Unix() >= cs.Expires {
		return nil, "the console session has ended"
	}
	if problem, final := s.consoleRecheck(r.Context(), &cs); problem != "" {
		if final {
			s.endRefusedConsoleSession(r.Context(), id, cs.Operator)
		}
		return nil, problem
	}
	cs.id = id
	return &cs, ""
}

// consoleEndTimeout bounds the store work of ending a refused console session.
const consoleEndTimeout = 2 * time.Second

// endRefusedConsoleSession ends the console session id of operator that consoleRecheck refused
// for good: its record and its entry in the operator's index are deleted (best effort, at most
// consoleEndTimeout, whatever the request's context), so the cookie opens nothing again even
// when what opened the session comes back. A failure is logged; the next request with the
// cookie is refused again and tries again.
func (s *Server) endRefusedConsoleSession(ctx context.Context, id, operator string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), consoleEndTimeout)
	defer cancel()
	if err := s.store.Delete(ctx, sessions.KindConsole, id); err != nil && !errors.Is(err, sessions.ErrNotFound) {
		s.log.Warn("refused console session could not be ended", "err", err)
		return
	}
	if err := sessions.IndexRemove(ctx, s.store, consoleOperatorIndexID(clip(operator, consoleOperatorMax)), s.now(), id); err != nil {
		s.log.Warn("ended console session left in its operator's index", "err", err)
	}
}

// consoleCSRFProblem checks a console write: consoleFormProblem with the session's token.
func (s *Server) consoleCSRFProblem(w http.ResponseWriter, r *http.Request, cs *consoleSession) string {
	return s.consoleFormProblem(w, r, "console write", cs.CSRF, "missing or wrong CSRF token")
}

// consoleEvent records a console sign-in, sign-out or refusal as a sapi (ok) or fapi event
// naming the operator (when known) and the console action.
func (s *Server) consoleEvent(r *http.Request, ok bool, status int, operator, via, action, problem string) {
	s.write(r, s.newConsoleEvent(r, ok, status, operator, via, action, problem))
}

// newConsoleEvent builds consoleEvent's event without writing it.
func (s *Server) newConsoleEvent(r *http.Request, ok bool, status int, operator, via, action, problem string) *logs.Event {
	ev := s.newEvent(r)
	ev.Type, ev.Class = logs.TypeSuccessAPI, logs.ClassAdmin
	if !ok {
		ev.Type, ev.Class = logs.TypeFailedAPI, logs.ClassAudit
		if operator == "" {
			ev.Class = logs.ClassUnauthenticated
		}
		ev.Details["error"] = map[string]any{"message": s.clipEvent(problem, 512), "errorCode": "console_refused"}
		// A wrong break-glass token, or no console session: printed even when the limits drop it.
		ev.CredentialCheck = status == http.StatusUnauthorized
	}
	req := map[string]any{"method": r.Method, "path": s.clipEvent(r.URL.Path, 256)}
	if operator != "" {
		auth := map[string]any{"user": s.clipEvent(operator, consoleOperatorMax)}
		if via != "" {
			auth["via"] = via
		}
		req["auth"] = auth
	}
	ev.Details["request"] = req
	ev.Details["response"] = map[string]any{"statusCode": status}
	ev.Details["console"] = map[string]any{"action": action}
	return ev
}

// consoleRefused answers a refused console request with a page and records a fapi event.
func (s *Server) consoleRefused(w http.ResponseWriter, r *http.Request, status int, problem, operator string) {
	s.consoleRefusedView(w, r, status, problem, operator, "", &consoleView{})
}

// consoleRefusedIn is consoleRefused for a signed-in operator's request c: the page keeps the
// console's navigation and sign-out form.
func (s *Server) consoleRefusedIn(c *consoleRequest, status int, problem string) {
	v := &consoleView{}
	c.fillView(v)
	s.consoleRefusedView(c.w, c.r, status, problem, c.sess.Operator, c.sess.Via, v)
}

// consoleRefusedVia is consoleRefused naming how the operator signed in ("broker" or
// "token"), so the Logs view does not take the refusal for a management API call.
func (s *Server) consoleRefusedVia(w http.ResponseWriter, r *http.Request, status int, problem, operator, via string) {
	s.consoleRefusedView(w, r, status, problem, operator, via, &consoleView{})
}

// consoleRefusedView is consoleRefused rendered in v (the layout's session parts, the
// refused page's data), its event naming how the operator signed in (via, "" unknown).
func (s *Server) consoleRefusedView(w http.ResponseWriter, r *http.Request, status int, problem, operator, via string, v *consoleView) {
	s.consoleEvent(r, false, status, operator, via, "refused", problem)
	v.Title, v.Problem, v.Operator = "Not allowed", sentence(problem), operator
	s.renderConsole(w, status, "refused", v)
}

// consoleRefusedData is the refused page's data.
type consoleRefusedData struct {
	// BrokerLogout signs a refused user out of the broker (GET /v2/logout as the console's
	// client) and returns to the sign-in page: without it, signing in again would reuse the
	// broker session of the same user.
	BrokerLogout string
	// ConsoleURL is console.url, where the console answers, on the page of a request that
	// came for another host (its links go there, not back to the refused host).
	ConsoleURL string
	// Scope is the management scope the refused page needs; the page says how to get it (a
	// management token with it, or a sign-in through the broker as an administrator when
	// AdminSignIn: console.admins is set).
	Scope       string
	AdminSignIn bool
}

// consoleBrokerLogoutURL is the broker's logout endpoint for the console's client, returning
// to the console's sign-in page (its redirect URI's origin: allowedReturnTo).
func (s *Server) consoleBrokerLogoutURL() string {
	return s.base + "/v2/logout?" + url.Values{
		"client_id": {config.ConsoleClientID},
		"returnTo":  {s.cfg.ConsoleURL() + "/signin?done=broker_signed_out"},
	}.Encode()
}

// sentence is msg with a capital first letter and a closing full stop, for a page.
func sentence(msg string) string {
	if msg == "" {
		return ""
	}
	msg = strings.ToUpper(msg[:1]) + msg[1:]
	if !strings.HasSuffix(msg, ".") {
		msg += "."
	}
	return msg
}

// consoleSessionsPerOperator bounds the live console sessions of one operator (a break-glass
// token, or a user signed in through the broker): a sign-in beyond it ends the operator's
// session that would expire first, as a login beyond maxUserSessions ends the user's oldest
// broker session. So a token that signs in in a loop holds at most this many records.
const consoleSessionsPerOperator = 10

// consoleOperatorIndexID is the store id of the index of operator's console sessions.
func consoleOperatorIndexID(operator string) string {
	return sessions.IndexID("console-operator", operator)
}

// startConsoleSession stores a new session for operator and sets its cookie; bound names
// what opened it (SID or TokenFP, re-checked at every request by consoleRecheck). The session
// is stored, then indexed under its operator (sessions.IndexAdd, at most
// consoleSessionsPerOperator): the sessions pushed out are ended, and a session that could not
// be indexed is ended at once. In that order every stored session is in the index or gone,
// however many sign-ins of one operator run at once (indexed first, a session pushed out by a
// concurrent sign-in before it was stored would live on out of the index).
func (s *Server) startConsoleSession(w http.ResponseWriter, r *http.Request, operator, via string, scopes []string, bound consoleSession) error {
	ctx, now, life := r.Context(), s.now(), s.cfg.ConsoleSession()
	secret := randomString(32)
	cs := consoleSession{Operator: clip(operator, consoleOperatorMax), Via: via, Scopes: scopes, CSRF: randomString(24), Expires: now.Add(life).Unix(),
		SID: bound.SID, TokenFP: bound.TokenFP}
	raw, err := json.Marshal(cs)
	if err != nil {
		return err
	}
	id := consoleRecordID("s.", secret)
	if err := s.store.Put(ctx, sessions.KindConsole, id, raw, life); err != nil {
		return fmt.Errorf("store console session: %w", err)
	}
	evicted, err := sessions.IndexAdd(ctx, s.store, consoleOperatorIndexID(cs.Operator), id, now.Add(life), now, consoleSessionsPerOperator)
	if err != nil {
		evicted = []string{id}
		err = fmt.Errorf("index console session: %w", err)
	}
	for _, old := range evicted {
		if derr := s.store.Delete(context.WithoutCancel(ctx), sessions.KindConsole, old); derr != nil {
			s.log.Warn("console session pushed out of its operator's index not ended", "err", derr)
		}
	}
	if err != nil {
		return err
	}
	http.SetCookie(w, s.consoleCookieFor(r, consoleCookie, secret, int(life.Seconds())))
	return nil
}

// signInView is the sign-in page's data.
type signInView struct {
	Broker bool   // sign-in through the broker is configured (console.admins)
	Reason string // why the visitor is on this page again
	CSRF   string // the break-glass form's pre-session CSRF token (consoleguard.go)
}

func (s *Server) consoleSignInPage(w http.ResponseWriter, r *http.Request) {
	pre := s.consolePreCSRF(w, r)
	s.renderConsole(w, http.StatusOK, "signin", &consoleView{Title: "Sign in", Data: signInView{Broker: s.cfg.ConsoleSignIn(), CSRF: pre},
		Notice: consoleNotices[r.URL.Query().Get("done")]})
}

// consoleLogin starts a sign-in through the broker: a code flow of the built-in client. Its
// state is sealed in the sign-in cookie (consolesignin.go): nothing is stored or held, so
// starting sign-ins needs no bound.
func (s *Server) consoleLogin(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.ConsoleSignIn() {
		s.consoleRefused(w, r, http.StatusNotFound, "sign-in through the broker is not configured (console.admins)", "")
		return
	}
	st := consoleLoginState{State: randomString(24), Verifier: randomString(32), Nonce: randomString(24),
		Expires: s.now().Add(consoleLoginTTL).Unix()}
	sealed, err := s.consoleSeal.seal(&st)
	if err != nil {
		s.log.Error("console sign-in could not be sealed", "err", err)
		s.consoleRefused(w, r, http.StatusInternalServerError, "the sign-in could not be started", "")
		return
	}
	http.SetCookie(w, s.consoleCookieFor(r, consoleLoginCookie, sealed, int(consoleLoginTTL.Seconds())))
	q := url.Values{
		"response_type": {"code"}, "client_id": {config.ConsoleClientID}, "redirect_uri": {s.consoleRedirectURI()},
		"scope": {consoleScope}, "state": {st.State}, "nonce": {st.Nonce},
		"code_challenge": {hashString(st.Verifier)}, "code_challenge_method": {"S256"},
		"max_age": {s.consoleMaxAgeParam()},
	}
	if c := s.cfg.Console.Connection; c != "" {
		q.Set("connection", c)
	}
	http.Redirect(w, r, s.base+"/authorize?"+q.Encode(), http.StatusSeeOther)
}

// consoleClient is the console's built-in client of cfg in snap (nil without
// console.admins): a public client (PKCE) whose one redirect URI is the console's callback,
// allowed on console.connection, or on every connection when that is empty.
func consoleClient(cfg *config.Config, snap *connSnapshot) *config.Client {
	if !cfg.ConsoleSignIn() {
		return nil
	}
	cl := &config.Client{
		ClientID: config.ConsoleClientID, Name: "dpop-broker console", TokenEndpointAuthMethod: config.AuthNone,
		RedirectURIs: []string{consoleRedirectURIOf(cfg)},
	}
	if c := cfg.Console.Connection; c != "" {
		cl.Connections = []string{c}
	} else {
		for _, c := range snap.list {
			cl.Connections = append(cl.Connections, c.cfg.Name)
		}
	}
	return cl
}

// consoleRedirectURI is the built-in client's redirect URI.
func (s *Server) consoleRedirectURI() string { return consoleRedirectURIOf(s.cfg) }

// consoleRedirectURIOf is the redirect URI of cfg's built-in console client: the one place it
// is made, so the client's registered URI and the URI a sign-in sends are always the same.
func consoleRedirectURIOf(cfg *config.Config) string { return cfg.ConsoleURL() + "/callback" }

// consoleCallback finishes a sign-in through the broker: the sign-in cookie opened and
// cleared (single use), its state compared, the code redeemed at the token endpoint, the ID
// token verified, console.admins asked.
func (s *Server) consoleCallback(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, s.consoleCookieFor(r, consoleLoginCookie, "", -1))
	q := r.URL.Query()
	sealed := s.consoleCookieValueUpTo(r, consoleLoginCookie, consoleLoginMax)
	if sealed == "" {
		s.consoleRefused(w, r, http.StatusBadRequest, "the sign-in was not started in this browser (no sign-in cookie); start again", "")
		return
	}
	st, err := s.consoleSeal.open(sealed, s.now().Unix())
	if err != nil || len(q["state"]) != 1 ||
		subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(st.State)) != 1 {
		s.consoleRefused(w, r, http.StatusBadRequest, "the sign-in expired or its state does not match; start again", "")
		return
	}
	if e := q.Get("error"); e != "" {
		s.consoleRefused(w, r, http.StatusForbidden, "the broker refused the sign-in: "+clip(e, 64), "")
		return
	}
	claims, problem := s.consoleRedeem(r, q.Get("code"), st)
	if problem != "" {
		s.consoleRefused(w, r, http.StatusForbidden, problem, "")
		return
	}
	user, _ := claims["sub"].(string)
	sid, _ := claims["sid"].(string)
	sess, _, problem := s.consoleBrokerSession(r.Context(), sid, user)
	if problem != "" {
		s.consoleRefusedVia(w, r, http.StatusForbidden, problem, user, "broker")
		return
	}
	if problem := s.consoleBrokerAdminProblem(sess); problem != "" {
		s.consoleRefusedView(w, r, http.StatusForbidden, problem, user, "broker",
			&consoleView{Data: consoleRefusedData{BrokerLogout: s.consoleBrokerLogoutURL()}})
		return
	}
	if err := s.startConsoleSession(w, r, user, "broker", consoleAdminScopes, consoleSession{SID: sid}); err != nil {
		s.log.Error("console sign-in failed", "err", err)
		s.consoleRefusedVia(w, r, http.StatusServiceUnavailable, "the store is unavailable; try again shortly", user, "broker")
		return
	}
	s.consoleEvent(r, true, http.StatusSeeOther, user, "broker", "sign_in", "")
	http.Redirect(w, r, s.consolePath()+"/", http.StatusSeeOther)
}

// consoleRedeem redeems code at the broker's token endpoint (in-process, the same checks and
// events as any app's) and verifies the ID token; it returns its claims or why not.
func (s *Server) consoleRedeem(r *http.Request, code string, st *consoleLoginState) (map[string]any, string) {
	if code == "" || len(code) > 512 {
		return nil, "the callback carries no usable code"
	}
	form := url.Values{
		"grant_type": {"authorization_code"}, "client_id": {config.ConsoleClientID}, "code": {code},
		"redirect_uri": {s.consoleRedirectURI()}, "code_verifier": {st.Verifier},
	}
	tr := s.inProcessRequest(r, http.MethodPost, "/oauth/token", "application/x-www-form-urlencoded", []byte(form.Encode()))
	rec := &capturedResponse{header: http.Header{}}
	s.handleToken(rec, tr)
	var tok tokenResponse
	if rec.status != http.StatusOK || json.Unmarshal(rec.body.Bytes(), &tok) != nil || tok.IDToken == "" {
		return nil, fmt.Sprintf("the broker's token endpoint refused the console's code (HTTP %d)", rec.status)
	}
	keys := []crypto.PublicKey{s.keys.Signing.Public()}
	v := oidc.NewVerifier(s.issuer, &oidc.StaticKeySet{PublicKeys: keys}, &oidc.Config{
		ClientID: config.ConsoleClientID, SupportedSigningAlgs: []string{string(s.keys.SigningAlg)}, Now: s.now,
	})
	idt, err := v.Verify(context.WithoutCancel(r.Context()), tok.IDToken)
	if err != nil {
		s.log.Error("console ID token does not verify", "err", err)
		return nil, "the ID token does not verify"
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(st.Nonce)) != 1 {
		return nil, "the ID token's nonce does not match the sign-in"
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return nil, "the ID token's claims do not decode"
	}
	if problem := s.consoleAuthTimeProblem(claims); problem != "" {
		return nil, problem
	}
	return claims, ""
}

// consoleTokenLogin is the break-glass sign-in with a management token; a valid token spends
// its per-token bucket (each sign-in stores a session). Failed attempts spend the management
// API's per-IP bucket (rate_limits.management.per_ip), the very bucket of the API's failed
// calls: an address guesses tokens at one rate, whether through the API or the console. The
// bucket is spent before the form is read (sign-ins in flight at once cannot all find it
// full) and given back when the request was no attempt (refused before the token was
// compared, or no token) or the token is valid.
func (s *Server) consoleTokenLogin(w http.ResponseWriter, r *http.Request) {
	ref, refund := s.guard.hold(s.guard.mgmtIP, logs.IPKey(s.clientIP(r)), s.now())
	if ref != nil {
		ref.setRetryAfter(w)
		s.consoleRefused(w, r, http.StatusTooManyRequests, ref.description(), "")
		return
	}
	if problem := s.consoleLoginCSRFProblem(w, r); problem != "" {
		refund(s.now())
		s.consoleRefused(w, r, http.StatusForbidden, problem, "")
		return
	}
	var tok *mgmtToken
	if r.PostForm.Get("token") != "" {
		tok = s.mgmt.match(r.PostForm.Get("token"))
	} else {
		refund(s.now())
	}
	if tok == nil {
		s.consoleRefused(w, r, http.StatusUnauthorized, "the management token is not valid", "")
		return
	}
	refund(s.now())
	operator := "token:" + tok.name
	// Every sign-in with the token is one of its requests (rate_limits.management.per_token,
	// the bucket of its API calls and console pages): a valid token cannot sign in faster.
	if ref := s.guard.check(s.guard.mgmtToken, tok.name, s.now()); ref != nil {
		ref.endpoint = "console"
		s.consoleTooMany(w, r, ref, operator, "token")
		return
	}
	if err := s.startConsoleSession(w, r, operator, "token", slices.Clone(tok.scopes), consoleSession{TokenFP: tok.fingerprint()}); err != nil {
		s.log.Error("console sign-in failed", "err", err)
		s.consoleRefusedVia(w, r, http.StatusServiceUnavailable, "the store is unavailable; try again shortly", operator, "token")
		return
	}
	s.consoleEvent(r, true, http.StatusSeeOther, operator, "token", "sign_in", "")
	http.Redirect(w, r, s.consolePath()+"/", http.StatusSeeOther)
}

// consoleSignOut ends the console session.
func (s *Server) consoleSignOut(c *consoleRequest) {
	if err := c.s.store.Delete(c.r.Context(), sessions.KindConsole, c.sess.id); err != nil && !errors.Is(err, sessions.ErrNotFound) {
		s.log.Error("console session could not be ended", "err", err)
	} else if err := sessions.IndexRemove(c.r.Context(), s.store, consoleOperatorIndexID(c.sess.Operator), s.now(), c.sess.id); err != nil {
		s.log.Warn("ended console session left in its operator's index", "err", err)
	}
	http.SetCookie(c.w, s.consoleCookieFor(c.r, consoleCookie, "", -1))
	s.consoleEvent(c.r, true, http.StatusSeeOther, c.sess.Operator, c.sess.Via, "sign_out", "")
	http.Redirect(c.w, c.r, s.consolePath()+"/signin?done=signed_out", http.StatusSeeOther)
}
