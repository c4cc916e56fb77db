package broker

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/upstream"
)

// handleLogout ends the broker session (GET /v2/logout?client_id&returnTo, the identity
// SaaS's logout endpoint): it deletes the session record named by the session cookie (when
// the cookie's secret matches) and clears the cookie. With client_id it then redirects to
// returnTo when allowedReturnTo admits it, or without returnTo to the client's first
// post_logout_redirect_uri; otherwise it shows a small page.
//
// With federated and a live session in this browser nothing ends until the user confirms
// (askLogout): a link on any site must not sign the user out of the upstream IdP,
// which would end their single sign-on everywhere. The confirmation is POST /v2/logout with
// the token derived from the session cookie, as at /oidc/logout.
func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
		if err := r.ParseForm(); err != nil {
			s.logoutFailed(w, r, s.newEvent(r), "the logout request could not be read")
			return
		}
		q = r.PostForm
	}
	tag, cookie, sess := s.sessionFromCookie(r)
	if q.Has("federated") && sess != nil && !logoutConfirmed(r, q, cookie) {
		s.askLogout(w, "/v2/logout", q, []string{"client_id", "returnTo"}, cookie,
			s.client(r.Context(), q.Get("client_id")), "the broker and of your identity provider")
		return
	}
	if !s.endCookieSession(w, r, tag, sess) {
		sess = nil
	}
	c := s.client(r.Context(), q.Get("client_id"))
	target := q.Get("returnTo")
	if c != nil && target == "" && len(c.PostLogoutRedirectURIs) > 0 {
		target = c.PostLogoutRedirectURIs[0]
	}
	if c == nil || !allowedReturnTo(c, target) {
		target = ""
	}
	s.finishLogout(w, r, q.Has("federated"), sess, target)
}

// handleOIDCLogout is OpenID Connect RP-Initiated Logout 1.0 (GET or POST /oidc/logout, the
// discovery end_session_endpoint; docs/conformance.md#logout-id-token-hint and the rows after
// it). Parameters: id_token_hint (an ID token
// this broker issued; expired ones are accepted, §2), logout_hint (the sid of that ID token,
// or of the cookie's session), client_id, post_logout_redirect_uri (exactly one of the
// client's post_logout_redirect_uris; needs id_token_hint or client_id), state. A request
// that fails a check ends no session, records flo and gets an error page (never a redirect).
// Otherwise the session of the cookie ends, and so does the one the hint names (its sid) when
// it belongs to the hint's client; each ended session records slo.
func (s *Server) handleOIDCLogout(w http.ResponseWriter, r *http.Request) {
	ev := s.newEvent(r)
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		s.logoutFailed(w, r, ev, "the logout request could not be read")
		return
	}
	p := r.Form
	for _, k := range oidcLogoutParams {
		if len(p[k]) > 1 {
			s.logoutFailed(w, r, ev, k+" must not be repeated")
			return
		}
	}
	var hint *idTokenHint
	if raw := p.Get("id_token_hint"); raw != "" {
		var err error
		if hint, err = s.parseIDTokenHint(raw); err != nil {
			s.logoutFailed(w, r, ev, "id_token_hint is not an ID token this broker issued")
			return
		}
	}
	clientID := p.Get("client_id")
	switch {
	case hint != nil && clientID != "" && !slices.Contains([]string(hint.Audience), clientID):
		s.logoutFailed(w, r, ev, "client_id is not the audience of the id_token_hint")
		return
	case hint != nil && clientID == "" && len(hint.Audience) == 1:
		clientID = hint.Audience[0]
	}
	client := s.client(r.Context(), clientID)
	if clientID != "" && client == nil {
		s.logoutFailed(w, r, ev, "unknown client_id")
		return
	}
	if client != nil {
		withClient(ev, client)
	}
	target := p.Get("post_logout_redirect_uri")
	switch {
	case target != "" && client == nil:
		s.logoutFailed(w, r, ev, "post_logout_redirect_uri needs id_token_hint or client_id")
		return
	case target != "" && !slices.Contains(client.PostLogoutRedirectURIs, target):
		s.logoutFailed(w, r, ev, "post_logout_redirect_uri is not registered for this application")
		return
	}
	// The browser's session, read once: for logout_hint, the confirmation and the logout.
	tag, cookie, sess := s.sessionFromCookie(r)
	if lh := p.Get("logout_hint"); lh != "" {
		sid := tag // the cookie's session, its secret checked
		if hint != nil {
			sid = hint.SID
		}
		if sid == "" || subtle.ConstantTimeCompare([]byte(lh), []byte(sid)) != 1 {
			s.logoutFailed(w, r, ev, "logout_hint does not name the session of the id_token_hint or of this browser")
			return
		}
	}
	// RP-Initiated Logout §2: the End-User MUST be asked when no id_token_hint names this
	// browser's session. The answer is a POST carrying a token derived from the session
	// cookie, which another site cannot compute (logout CSRF).
	if tag != "" && (hint == nil || hint.SID != tag) && !logoutConfirmed(r, p, cookie) {
		s.askLogout(w, "/oidc/logout", p, oidcLogoutParams, cookie, client, "the broker")
		return
	}
	if !s.endCookieSession(w, r, tag, sess) {
		tag, sess = "", nil
	}
	own := sess != nil // this browser's session: it holds the cookie (and confirmed, or its hint named it)
	if hint != nil && hint.SID != "" && hint.SID != tag {
		if rec := s.loadSession(r, hint.SID); rec != nil && slices.ContainsFunc([]string(hint.Audience), rec.hasClient) &&
			s.endSession(r, hint.SID, rec) && sess == nil {
			sess = rec
		}
	}
	federated := p.Has("federated")
	if federated && sess != nil && !own {
		// The hint's session belongs to another browser (or one whose cookie is gone), and the
		// hint may come from anyone who holds that ID token: the broker session ends, but the
		// upstream logout (with the upstream ID token in this browser's URL) is only carried
		// out from the session's own browser.
		s.federatedEvent(r, sess, codeFederatedNotThisBrowser,
			"federated logout is carried out only from the browser of the session (its broker cookie); the broker session ended")
		federated = false
	}
	if target != "" {
		u, err := url.Parse(target)
		if err != nil { // validated at start-up; fail closed anyway
			target = ""
		} else if st := p.Get("state"); st != "" {
			q := u.Query()
			q.Set("state", st)
			u.RawQuery = q.Encode()
			target = u.String()
		}
	}
	s.finishLogout(w, r, federated, sess, target)
}

// logoutConfirmed reports whether r is the user's answer to a logout confirmation page: a POST
// carrying the token derived from this browser's session cookie.
func logoutConfirmed(r *http.Request, p url.Values, cookie string) bool {
	return r.Method == http.MethodPost && subtle.ConstantTimeCompare([]byte(p.Get("confirm")), []byte(logoutConfirmToken(cookie))) == 1
}

// oidcLogoutParams are the parameters of /oidc/logout: none may be repeated, and the
// confirmation form posts them back.
var oidcLogoutParams = []string{"id_token_hint", "logout_hint", "client_id", "post_logout_redirect_uri", "state"}

// askLogout shows the logout confirmation page of the endpoint at path: a form that posts the
// parameters keys of p (and federated) back with the confirmation token of the session cookie
// (logoutConfirmed). The message names client (nil: none) and what the user signs out of.
func (s *Server) askLogout(w http.ResponseWriter, path string, p url.Values, keys []string, cookie string, client *config.Client, of string) {
	fields := []pageField{{"confirm", logoutConfirmToken(cookie)}}
	for _, k := range keys {
		if v := p.Get(k); v != "" {
			fields = append(fields, pageField{k, v})
		}
	}
	if p.Has("federated") {
		fields = append(fields, pageField{"federated", "true"})
	}
	msg := "Do you want to sign out of " + of + "?"
	if client != nil {
		msg = clientName(client) + " asks to sign you out of " + of + "."
	}
	renderPage(w, http.StatusOK, page{Title: "Sign out", Message: msg, Form: &pageForm{
		Action: s.base + path, ID: "confirm-logout", Button: "Sign out", Fields: fields,
	}})
}

// finishLogout answers a logout whose broker sessions have ended: with federated (on either
// endpoint, as the identity SaaS offers it) and an ended session, through the upstream's end_session_endpoint first
// (federatedLogout); then to target, already checked against the client's registration, or
// the signed-out page when target is "".
func (s *Server) finishLogout(w http.ResponseWriter, r *http.Request, federated bool, sess *sessionRecord, target string) {
	if federated && sess != nil && s.federatedLogout(w, r, sess, target) {
		return
	}
	redirectOrSignedOut(w, r, target)
}

func redirectOrSignedOut(w http.ResponseWriter, r *http.Request, target string) {
	if target == "" {
		signedOut(w)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, target, http.StatusFound)
}

// federatedLogoutTTL bounds the round trip through the upstream's logout.
const federatedLogoutTTL = 10 * time.Minute

// federatedLogout sends the browser to the ended session's upstream end_session_endpoint
// (id_token_hint = the upstream ID token of that login) with /logout/federated as the way back,
// where target is remembered under the state. When the upstream cannot be asked (no
// end_session_endpoint, discovery or store failure) it records federated_logout_failed and
// reports false: the broker's own logout stands and the caller answers as without federated.
func (s *Server) federatedLogout(w http.ResponseWriter, r *http.Request, sess *sessionRecord, target string) bool {
	fail := func(code, desc string) bool {
		s.federatedEvent(r, sess, code, desc)
		return false
	}
	snap, err := s.reg.current(r.Context(), false)
	if err != nil {
		return fail(codeStoreUnavailable, err.Error())
	}
	conn := snap.byName[sess.Connection]
	if conn == nil || conn.err != nil {
		return fail(codeConnectionUnusable, "the session's connection "+clip(sess.Connection, 64)+" is gone or unusable")
	}
	state := randomString(32)
	rec, _ := json.Marshal(federatedLogoutRecord{Target: target}) // plain struct: never fails
	if err := s.store.Put(r.Context(), sessions.KindLogout, state, rec, federatedLogoutTTL); err != nil {
		return fail(codeStoreUnavailable, err.Error())
	}
	u, err := conn.up.LogoutURL(r.Context(), sess.UpstreamIDToken, s.base+"/logout/federated", state)
	if err != nil {
		_ = s.store.Delete(r.Context(), sessions.KindLogout, state)
		return fail(upstream.CodeOf(err), err.Error())
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, u, http.StatusFound)
	return true
}

// codeFederatedNotThisBrowser: a federated logout asked for a session of another browser
// (an id_token_hint without that session's cookie); the upstream was not asked.
const codeFederatedNotThisBrowser = "federated_not_this_browser"

// federatedEvent records federated_logout_failed for the ended session sess: the broker's own
// logout stands, the upstream's did not happen (code and desc say why).
func (s *Server) federatedEvent(r *http.Request, sess *sessionRecord, code, desc string) {
	ev := s.newEvent(r)
	ev.Class = logs.ClassAudit // a session ended: the browser held its cookie or a valid id_token_hint
	ev.Type = logs.TypeFederatedLogoutFailed
	ev.UserID, ev.Connection = sess.UserID, sess.Connection
	if c := s.cachedClient(sess.ClientID); c != nil {
		withClient(ev, c)
	}
	ev.Details["error"], ev.Details["error_description"] = code, s.clipEvent(desc, 512)
	s.write(r, ev)
}

// federatedLogoutRecord is kept under the state of a federated logout.
type federatedLogoutRecord struct {
	Target string `json:"target,omitempty"`
}

// handleFederatedReturn is where the upstream sends the browser back after a federated logout
// (GET /logout/federated?state): on to the app's target remembered under state (single use),
// or the signed-out page.
func (s *Server) handleFederatedReturn(w http.ResponseWriter, r *http.Request) {
	target := ""
	if st := r.URL.Query().Get("state"); st != "" && len(st) <= 64 {
		if raw, err := s.store.Take(r.Context(), sessions.KindLogout, st); err == nil {
			var rec federatedLogoutRecord
			if json.Unmarshal(raw, &rec) == nil {
				target = rec.Target
			}
		}
	}
	redirectOrSignedOut(w, r, target)
}

// logoutFailed records flo with details.error invalid_request and shows the reason.
func (s *Server) logoutFailed(w http.ResponseWriter, r *http.Request, ev *logs.Event, desc string) {
	ev.Type = logs.TypeFailedLogout
	ev.Details["error"] = "invalid_request"
	ev.Details["error_description"] = desc
	s.write(r, ev)
	renderPage(w, http.StatusBadRequest, page{Title: "Sign-out failed", Error: "invalid_request", Message: desc})
}

func signedOut(w http.ResponseWriter) {
	renderPage(w, http.StatusOK, page{Title: "Signed out", Message: "You are signed out of the broker."})
}

// idTokenHint is what /oidc/logout reads from an id_token_hint.
type idTokenHint struct {
	Issuer   string       `json:"iss"`
	Audience jwt.Audience `json:"aud"`
	SID      string       `json:"sid"`
}

// parseIDTokenHint checks that raw is an ID token this broker signed (current or previous
// signing key, typ JWT, this issuer) and returns its claims. Expiry is not checked: an
// expired ID token is a valid hint (RP-Initiated Logout §2).
func (s *Server) parseIDTokenHint(raw string) (*idTokenHint, error) {
	if len(raw) > 8192 {
		return nil, errors.New("id_token_hint too long")
	}
	t, err := jwt.ParseSigned(raw, s.keys.VerificationAlgs())
	if err != nil || len(t.Headers) != 1 || t.Headers[0].ExtraHeaders[jose.HeaderType] != "JWT" {
		return nil, errors.New("not an ID token")
	}
	pub, alg, ok := s.keys.VerificationKey(t.Headers[0].KeyID)
	if !ok || t.Headers[0].Algorithm != string(alg) {
		return nil, errors.New("unknown signing key")
	}
	var c idTokenHint
	if err := t.Claims(pub, &c); err != nil {
		return nil, errors.New("bad signature")
	}
	if c.Issuer != s.issuer || len(c.Audience) == 0 {
		return nil, errors.New("not issued by this broker")
	}
	return &c, nil
}

// sessionFromCookie returns the tag, the cookie value and the record of the live session this
// browser's session cookie names (its secret checked against the record); tag "" when none
// (or when the store cannot be read: logout then ends nothing it cannot see).
func (s *Server) sessionFromCookie(r *http.Request) (tag, cookie string, sess *sessionRecord) {
	t, _, rec, err := s.cookieSession(r)
	if err != nil || rec == nil {
		return "", "", nil
	}
	c, _ := s.readCookie(r, sessionCookie)
	return t, c.Value, rec
}

// loadSession reads the session with tag, or nil.
func (s *Server) loadSession(r *http.Request, tag string) *sessionRecord {
	var sess sessionRecord
	if _, err := s.readSession(r.Context(), tag, &sess); err != nil {
		return nil
	}
	return &sess
}

// logoutConfirmToken is the confirmation token of the logout form for a session cookie value.
func logoutConfirmToken(cookie string) string {
	return hashString("dpop-broker logout confirmation\x00" + cookie)
}

// endCookieSession clears the session cookie and ends the session it named (tag and sess from
// sessionFromCookie; nil sess = none); it reports whether a session ended.
func (s *Server) endCookieSession(w http.ResponseWriter, r *http.Request, tag string, sess *sessionRecord) bool {
	http.SetCookie(w, s.brokerCookie(sessionCookie, "", "/", -1))
	return sess != nil && s.endSession(r, tag, sess)
}

// endSession ends the session with tag (its record sess, already read and authorized; the
// apps holding it are notified), records slo and reports whether it ended it (false: it had
// already ended, or the store failed).
func (s *Server) endSession(r *http.Request, tag string, sess *sessionRecord) bool {
	ended, err := s.endSessionLogged(r.Context(), r, tag, "", nil)
	if err != nil {
		s.log.Warn("session not deleted at logout", "err", logs.KeepLevel(err))
	}
	return ended != nil
}

// endSessionLogged ends the session tag (endSessionTag, under ctx) and records slo for it with
// details.session_id, details.reason (when set) and extra. It returns the ended record, nil
// when none was live.
func (s *Server) endSessionLogged(ctx context.Context, r *http.Request, tag, reason string, extra map[string]any) (*sessionRecord, error) {
	ended, err := s.endSessionTag(ctx, tag)
	if err != nil || ended == nil {
		return nil, err
	}
	ev := s.newEvent(r)
	ev.Type = logs.TypeSuccessLogout
	ev.UserID = ended.UserID
	ev.Connection = ended.Connection
	if c := s.cachedClient(ended.ClientID); c != nil {
		withClient(ev, c)
	}
	if snap, err := s.reg.current(ctx, false); err == nil && snap.byName[ended.Connection] != nil {
		c := snap.byName[ended.Connection]
		ev.ConnectionID, ev.Strategy, ev.StrategyType = c.id, c.cfg.Strategy, "enterprise"
	}
	ev.Details["session_id"] = tag
	if reason != "" {
		ev.Details["reason"] = reason
	}
	for k, v := range extra {
		ev.Details[k] = v
	}
	s.write(r, ev)
	return ended, nil
}

// allowedReturnTo reports whether /v2/logout may send the browser to returnTo: one of the
// client's post_logout_redirect_uris (its Allowed Logout URLs) when it has some; else, for
// clients configured before that list existed, an absolute URL on the origin of one of the
// client's redirect URIs.
func allowedReturnTo(c *config.Client, returnTo string) bool {
	if len(c.PostLogoutRedirectURIs) > 0 {
		return returnTo != "" && slices.Contains(c.PostLogoutRedirectURIs, returnTo)
	}
	u, err := url.Parse(returnTo)
	if returnTo == "" || err != nil || !u.IsAbs() || u.Host == "" || u.User != nil {
		return false
	}
	for _, ru := range c.RedirectURIs {
		if r, err := url.Parse(ru); err == nil && strings.EqualFold(r.Scheme, u.Scheme) && strings.EqualFold(r.Host, u.Host) {
			return true
		}
	}
	return false
}
