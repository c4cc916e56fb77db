package broker

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/upstream"
)

// codeRecord is the broker's authorization code (id "TAG.SECRET"), taken once at /oauth/token.
// The user's claims are not stored with it: /oauth/token reads the code's session anyway (a
// code of an ended session gets no tokens) and takes them from there, as refreshes do.
type codeRecord struct {
	App    appRequest `json:"app"`
	SID    string     `json:"sid"` // session tag
	UserID string     `json:"user_id"`
	// Claims are the ID token's source claims: set from the session at redemption. Codes
	// written before the claims moved out of the code still carry them; the session's win.
	Claims   map[string]any `json:"claims,omitempty"`
	AuthTime int64          `json:"auth_time"`
	AMR      []string       `json:"amr,omitempty"`
	ACR      string         `json:"acr,omitempty"`
	Expires  int64          `json:"exp"` // unix ms
}

// sessionCookie carries "TAG.SECRET" of the broker session (for logout); its name over https
// is cookieName(sessionCookie).
const sessionCookie = "dpop_broker_session"

func (s *Server) handleCallback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ev := s.newEvent(r)
	state := q.Get("state")
	if state == "" {
		s.failLogin(w, r, ev, loginFailure{Status: http.StatusBadRequest, Code: codeInvalidState,
			Description: "The upstream response has no state parameter."})
		return
	}
	// Only the browser that started the login can take its transaction (compare-and-take,
	// txID): a leaked state used elsewhere first leaves the login in flight intact.
	cookieHash := s.txCookieHash(r)
	if cookieHash == "" {
		s.failLogin(w, r, ev, loginFailure{Status: http.StatusBadRequest, Code: codeInvalidState,
			Description: "login transaction unknown, expired or already used, or started in another browser (this browser has no transaction cookie)"})
		return
	}
	tx, err := s.takeTransaction(r, state, cookieHash)
	if err != nil {
		if storeDown(err) {
			s.failLogin(w, r, ev, s.storeFailure(err))
			return
		}
		s.failLogin(w, r, ev, loginFailure{Status: http.StatusBadRequest, Code: codeInvalidState,
			Description: "login transaction unknown, expired or already used, or started in another browser"})
		return
	}
	// The login's trace, begun at /authorize, goes on here (tracing.go).
	r = r.WithContext(joinTrace(r.Context(), tx.App.Trace))
	s.clearTxCookie(w)
	s.freeTx(tx) // its live-transaction slot (bounded.go)
	// The registry's snapshot (as current as /authorize's: registry.go), unless it lacks the
	// login's client or connection.
	snap, err := s.reg.current(r.Context(), false)
	if err != nil {
		s.failLogin(w, r, ev, s.storeFailure(err))
		return
	}
	if snap.clients[tx.App.ClientID] == nil || snap.byName[tx.Connection] == nil {
		// Created on another replica a moment ago (the watch has not reported it yet), or
		// gone: look now.
		if snap, err = s.reg.current(r.Context(), true); err != nil {
			s.failLogin(w, r, ev, s.storeFailure(err))
			return
		}
	}
	var client *config.Client
	if c := snap.clients[tx.App.ClientID]; c != nil {
		client = c.cfg
	}
	conn := snap.byName[tx.Connection]
	if client == nil || conn == nil || conn.up == nil { // configuration changed since /authorize
		f := loginFailure{Status: http.StatusBadRequest, Code: codeInvalidState,
			Description: "the application or connection of this login no longer exists"}
		if client != nil {
			f.Back = appHomeLink(client, tx.App.RedirectURI)
		}
		s.failLogin(w, r, ev, f)
		return
	}
	withClient(ev, client)
	withConnection(ev, conn)
	if tx.HomeRealmDomain != "" {
		ev.Details[detailHomeRealmDomain] = tx.HomeRealmDomain
	}
	app := &tx.App

	if subtle.ConstantTimeCompare([]byte(cookieHash), []byte(tx.CookieHash)) != 1 { // taken by this hash: cannot differ
		s.failLogin(w, r, ev, loginFailure{App: app, OAuthError: "invalid_request", Code: codeInvalidState,
			Description: "the login was not started in this browser (transaction cookie mismatched)"})
		return
	}
	if desc := s.callbackProblem(r, tx, conn); desc != "" {
		// The event names the paths; the app learns only that the response was refused.
		ev.Details["callback"] = s.clipEvent(s.callbackHere(r), 256)
		s.failLogin(w, r, ev, loginFailure{App: app, OAuthError: "invalid_request", Code: codeCallbackMismatch, Description: desc,
			AppDescription: "the identity provider's response arrived at the wrong callback (" + codeCallbackMismatch + "): the login is refused"})
		return
	}
	if desc := issProblem(q, tx.Start); desc != "" {
		// The event has the issuers; the app is not shown the iss an attacker sent (nor ours).
		s.failLogin(w, r, ev, loginFailure{App: app, OAuthError: "invalid_request", Code: codeInvalidIss, Description: desc,
			AppDescription: "the identity provider's response failed the issuer check (" + codeInvalidIss + "): the login is refused"})
		return
	}
	if e := q.Get("error"); e != "" {
		// The error and its description came with the browser's redirect: anyone holding a
		// login's state can send them, so the event marks them unverified (the console says so).
		ev.Details[detailErrorFrom] = errorFromRedirect
		code := safeErrorCode(e)
		desc := s.clipEvent(q.Get("error_description"), 256)
		if desc == "" {
			desc = "the upstream identity provider returned " + code
		}
		s.failLogin(w, r, ev, loginFailure{App: app, Code: code, Description: desc})
		return
	}
	code := q.Get("code")
	if code == "" {
		s.failLogin(w, r, ev, loginFailure{App: app, OAuthError: "server_error", Code: upstream.CodeUpstreamError,
			Description: "the upstream returned neither code nor error"})
		return
	}
	// One budget for the whole exchange (JWKS, token with nonce retries, userinfo), so a chain
	// of slow upstream calls ends with a precise f event before the HTTP server's write
	// deadline would cut the browser off with nothing logged.
	ctx, cancel := context.WithTimeout(r.Context(), config.LoginExchangeBudget)
	res, err := conn.up.Finish(ctx, tx.Start, s.txCallback(tx), code)
	cancel()
	withResult(ev, res)
	s.metrics.upstream(conn.cfg.Name, res)
	if err != nil {
		ecode, desc := upstream.CodeOf(err), err.Error()
		var ue *upstream.Error
		if errors.As(err, &ue) && ue.Description != "" {
			desc = ue.Description
		}
		if ue != nil && ue.OAuthError != "" {
			ev.Details["upstream_error"] = safeErrorCode(ue.OAuthError)
		}
		s.log.Warn("upstream code exchange failed", "connection", conn.cfg.Name, "error", ecode, "err", err)
		// The detail goes to the log; the app gets the stable code.
		s.failLogin(w, r, ev, loginFailure{App: app, OAuthError: "server_error", Code: ecode, Description: desc,
			AppDescription: "upstream login failed (" + ecode + ")"})
		return
	}
	s.completeLogin(w, r, tx, client, conn, res, ev)
}

// completeLogin records the upstream login in the browser's session and sends the app its
// code. The same user signing in again at the same connection (prompt=login, max_age, a
// requested re-authentication) re-authenticates the browser's live session in place: its sid
// and its apps stay. Otherwise a new session is created, with its first code, in one atomic
// write with the success event; a session of another user (or connection) in this browser
// ends first, so that one browser holds one signed-in user.
func (s *Server) completeLogin(w http.ResponseWriter, r *http.Request, tx *transaction, client *config.Client, conn *connection, res *upstream.Result, ev *logs.Event) {
	now := s.now()
	userID := conn.cfg.Strategy + "|" + conn.cfg.Name + "|" + res.Subject
	claims := res.Profile // the connection's claim mapping (claims.go)
	withUser(ev, userID, claims)
	// The browser's session: re-authenticated in place when it is this user's (a concurrent
	// change, such as a refresh sliding it, is read again, a few times at most), else ended.
	for attempt := 0; ; attempt++ {
		oldTag, oldRaw, old, err := s.cookieSession(r)
		if err != nil {
			s.failLogin(w, r, ev, s.storeFailure(err))
			return
		}
		if old == nil {
			break
		}
		if old.UserID == userID && old.Connection == conn.cfg.Name && old.live(now, s.cfg.SessionIdle()) && attempt < 3 {
			if s.reauthenticate(w, r, tx, client, res, claims, oldTag, oldRaw, old, ev) {
				return
			}
			continue
		}
		s.endReplacedSession(r, oldTag, old) // never left live behind a new cookie
		break
	}
	tag := randomString(16)
	sessionSecret := randomString(32)
	sess := sessionRecord{
		UserID: userID, Connection: conn.cfg.Name, ClientID: client.ClientID, Claims: claims,
		CookieHash: hashString(sessionSecret), Clients: []string{client.ClientID},
		Created: now.Unix(), Seen: now.Unix(), Expires: now.Add(s.cfg.SessionAbsolute()).Unix(),
	}
	sess.upstreamFacts(res, now)
	s.noteDevice(&sess, r)
	if err := s.indexSession(r, tag, &sess); err != nil { // before the session: a live session is always indexed
		s.failLogin(w, r, ev, s.storeFailure(err))
		return
	}
	raw, err1 := json.Marshal(sess)
	codeID, cr, err2 := s.codeUnder(tag, &tx.App, tag, &sess, now)
	if err := errors.Join(err1, err2); err != nil {
		s.unindexSession(r.Context(), tag, &sess)
		s.failLogin(w, r, ev, loginFailure{App: &tx.App, Code: "server_error", Description: "could not encode the session"})
		return
	}
	ev.Details["session_id"] = tag
	err := s.succeedWith(r, ev,
		sessions.Item{Kind: sessions.KindSession, ID: tag + ".s", Value: raw, TTL: sess.ttl(now, s.cfg.SessionIdle())},
		sessions.Item{Kind: sessions.KindCode, ID: codeID, Value: cr, TTL: s.cfg.Lifetimes.Code},
	)
	if err != nil {
		delete(ev.Details, "session_id") // no session was created
		s.unindexSession(r.Context(), tag, &sess)
		s.failLogin(w, r, ev, s.storeFailure(err))
		return
	}
	http.SetCookie(w, s.brokerCookie(sessionCookie, tag+"."+sessionSecret, "/", int(s.cfg.SessionAbsolute().Seconds())))
	s.redirectToApp(w, r, &tx.App, url.Values{"code": {codeID}})
}

// reauthenticate records a new upstream login of the session's own user in the browser's live
// session tag (read as raw): its authentication facts, claims and apps are updated in one
// compare-and-swap and the app's code is issued under a fresh grant tag. It reports false,
// having answered nothing, when the session changed or ended meanwhile.
func (s *Server) reauthenticate(w http.ResponseWriter, r *http.Request, tx *transaction, client *config.Client, res *upstream.Result, claims map[string]any, tag string, raw []byte, old *sessionRecord, ev *logs.Event) bool {
	now := s.now()
	sess := *old
	sess.Claims, sess.Seen = claims, now.Unix()
	sess.upstreamFacts(res, now)
	sess.addClient(client.ClientID)
	s.noteDevice(&sess, r)
	ttl := sess.ttl(now, s.cfg.SessionIdle())
	updated, err := json.Marshal(sess)
	if err != nil || ttl <= 0 {
		return false
	}
	if sess.UpstreamSID != old.UpstreamSID {
		if err := s.indexSession(r, tag, &sess); err != nil {
			s.failLogin(w, r, ev, s.storeFailure(err))
			return true
		}
	}
	err = s.store.Swap(r.Context(), sessions.KindSession, tag+".s", raw,
		[]sessions.Item{{Kind: sessions.KindSession, ID: tag + ".s", Value: updated, TTL: ttl}}, nil)
	switch {
	case errors.Is(err, sessions.ErrConflict):
		return false
	case err != nil:
		s.failLogin(w, r, ev, s.storeFailure(err))
		return true
	}
	codeID, cr, err := s.newCode(&tx.App, tag, &sess, now)
	if err != nil {
		s.failLogin(w, r, ev, loginFailure{App: &tx.App, Code: "server_error", Description: "could not encode the authorization code"})
		return true
	}
	ev.Details["session_id"] = tag
	if err := s.succeedWith(r, ev, sessions.Item{Kind: sessions.KindCode, ID: codeID, Value: cr, TTL: s.cfg.Lifetimes.Code}); err != nil {
		delete(ev.Details, "session_id")
		s.failLogin(w, r, ev, s.storeFailure(err))
		return true
	}
	s.redirectToApp(w, r, &tx.App, url.Values{"code": {codeID}})
	return true
}

// txID is the store id of a login transaction: the upstream state, under whose hash tag it
// lives, and the hash of the browser's transaction cookie. Taking it needs both, so a request
// without the right cookie cannot consume the transaction.
func txID(state, cookieHash string) string { return state + "." + cookieHash }

// takeTransaction takes the login transaction of state started by the browser whose
// transaction cookie hashes to cookieHash (single use) and checks its expiry against the
// broker clock.
func (s *Server) takeTransaction(r *http.Request, state, cookieHash string) (*transaction, error) {
	if len(state) > 512 || !b64url(state) {
		return nil, sessions.ErrNotFound
	}
	raw, err := s.store.Take(r.Context(), sessions.KindTransaction, txID(state, cookieHash))
	if err != nil {
		return nil, err
	}
	var tx transaction
	if err := json.Unmarshal(raw, &tx); err != nil || tx.Start == nil {
		return nil, errors.New("malformed login transaction")
	}
	if s.now().UnixMilli() >= tx.Expires {
		return nil, sessions.ErrNotFound
	}
	return &tx, nil
}

func (s *Server) clearTxCookie(w http.ResponseWriter) {
	http.SetCookie(w, s.brokerCookie(txCookie, "", "/login/callback", -1))
}

// txCookieHash returns the hash of this browser's transaction cookie ("" when it has none).
func (s *Server) txCookieHash(r *http.Request) string {
	c, err := s.readCookie(r, txCookie)
	if err != nil || c.Value == "" || len(c.Value) > 256 {
		return ""
	}
	return hashString(c.Value)
}

// issProblem applies RFC 9207 §2.4 through Start.CheckIss; a repeated iss is refused.
func issProblem(q url.Values, st *upstream.Start) string {
	if len(q["iss"]) > 1 {
		return "the upstream response repeats the iss parameter"
	}
	if err := st.CheckIss(q.Get("iss")); err != nil {
		var ue *upstream.Error
		if errors.As(err, &ue) {
			return ue.Description
		}
		return err.Error()
	}
	return ""
}
