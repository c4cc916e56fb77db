package broker

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/upstream"
)

// sessionRecord is the browser's single sign-on session at the broker (id "TAG.s", TAG its
// sid): who signed in at which upstream and when, and which apps received codes through it.
// /userinfo reads its claims, refresh tokens and opaque access tokens live only as long as
// it does, and ending it notifies every app in Clients (back-channel logout).
type sessionRecord struct {
	UserID     string         `json:"user_id"`
	Connection string         `json:"connection"`
	ClientID   string         `json:"client_id"` // the app of the upstream login that created it
	Claims     map[string]any `json:"claims"`
	AuthTime   int64          `json:"auth_time"` // unix s: the user's authentication at the upstream
	CookieHash string         `json:"cookie_hash"`
	// UpstreamIDToken is the upstream's ID token of this login: the id_token_hint of a
	// federated logout. Never logged.
	UpstreamIDToken string `json:"upstream_id_token,omitempty"`
	// UpstreamSID is the upstream ID token's sid: an upstream back-channel logout naming it
	// ends this session.
	UpstreamSID string `json:"upstream_sid,omitempty"`
	// UpstreamAuthTime says AuthTime is the upstream ID token's auth_time; without it AuthTime
	// is the broker's login time, which cannot answer max_age (the user may have
	// authenticated at the upstream long before).
	UpstreamAuthTime bool `json:"upstream_auth_time,omitempty"`
	// AMR and ACR are the upstream ID token's amr and acr, passed on in the broker's ID tokens.
	AMR []string `json:"amr,omitempty"`
	ACR string   `json:"acr,omitempty"`
	// UpstreamIssuer is the verified upstream ID token's iss, and UpstreamDiscovery the
	// connection's discovery_url it was verified through: the console admits an operator only
	// when they are the issuer pinned from the configuration file (consolepin.go).
	UpstreamIssuer    string `json:"upstream_iss,omitempty"`
	UpstreamDiscovery string `json:"upstream_discovery,omitempty"`
	// UpstreamIdentity is the digest of the connection's identity options (client_id, scope,
	// fetch_userinfo, upstream_params, attribute_map: upstream.Identity) at the login: the
	// console admits an operator only when it is the configuration file's (consolepin.go).
	UpstreamIdentity string `json:"upstream_identity,omitempty"`
	// Clients are the apps that received a code through this session (ClientID first).
	Clients []string `json:"clients,omitempty"`
	// Created, Seen and Expires are unix seconds: the session's start, its last use (the idle
	// window slides from it) and its absolute end. Zero in records written before single
	// sign-on existed: such a session is never used for single sign-on.
	Created int64 `json:"created,omitempty"`
	Seen    int64 `json:"seen,omitempty"`
	Expires int64 `json:"expires,omitempty"`
	// InitialIP and InitialUserAgent are the browser of the login that created the session,
	// LastIP and LastUserAgent the browser that used it last at /authorize: the device of
	// the management API's session object. Set by Server.noteDevice; empty when unknown.
	InitialIP        string `json:"initial_ip,omitempty"`
	InitialUserAgent string `json:"initial_user_agent,omitempty"`
	LastIP           string `json:"last_ip,omitempty"`
	LastUserAgent    string `json:"last_user_agent,omitempty"`
}

// live reports whether the session can still be used at now: written with single sign-on
// (Expires set), before its absolute end and within its idle window from Seen.
func (sess *sessionRecord) live(now time.Time, idle time.Duration) bool {
	if sess.Expires == 0 {
		return false
	}
	n := now.Unix()
	return n < sess.Expires && n < sess.Seen+int64(idle/time.Second)
}

// sessionAlive reports whether a session read from the store still stands by the broker's
// clock: records written before single sign-on end by their TTL alone.
func (s *Server) sessionAlive(sess *sessionRecord) bool {
	return sess.Expires == 0 || sess.live(s.now(), s.cfg.SessionIdle())
}

// readSession reads the record of the session sid into v (a *sessionRecord, or a view of some
// of its fields) and returns its stored bytes. A malformed sid, a missing record and one that
// does not decode are all sessions.ErrNotFound; other errors are the store's.
func (s *Server) readSession(ctx context.Context, sid string, v any) ([]byte, error) {
	if !validTag(sid) {
		return nil, sessions.ErrNotFound
	}
	raw, err := s.store.Get(ctx, sessions.KindSession, sid+".s")
	if err != nil {
		return nil, err
	}
	if json.Unmarshal(raw, v) != nil {
		return nil, sessions.ErrNotFound
	}
	return raw, nil
}

// grantSessionProblem answers a grant whose session read (readSession) returned err and found
// the session of user with the lifetimes of life: 503 when the store cannot be read,
// invalid_grant with ended when the session is gone, not want's, or past its lifetimes by the
// broker's clock; nil when the grant may go on.
func (s *Server) grantSessionProblem(err error, user, want string, life *sessionRecord, ended string) *oauthError {
	switch {
	case storeDown(err):
		return errStoreDown
	case err != nil || user != want || !s.sessionAlive(life):
		return invalidGrant(ended)
	}
	return nil
}

// liveSession reads the session sid of the user userID for a grant (grantSessionProblem says
// when it cannot be used) and returns the record and its stored bytes.
func (s *Server) liveSession(ctx context.Context, sid, userID, ended string) (*sessionRecord, []byte, *oauthError) {
	var sess sessionRecord
	raw, err := s.readSession(ctx, sid, &sess)
	if oerr := s.grantSessionProblem(err, sess.UserID, userID, &sess, ended); oerr != nil {
		return nil, nil, oerr
	}
	return &sess, raw, nil
}

// sessionGrantView is what redeeming a code needs of its session record: whose it is, whether
// it is live and the user's claims. Decoding only these skips the allocations of the rest (the
// upstream ID token, the apps, the device strings) on every code exchange.
type sessionGrantView struct {
	UserID  string         `json:"user_id"`
	Claims  map[string]any `json:"claims"`
	Seen    int64          `json:"seen,omitempty"`
	Expires int64          `json:"expires,omitempty"`
}

// liveSessionClaims is liveSession for a code exchange, which needs only the user's claims
// of the session: the same checks and answers, the record decoded into sessionGrantView. The
// record is ahead's when it was read ahead for sid (readCode), else it is read now.
func (s *Server) liveSessionClaims(ctx context.Context, sid, userID, ended string, ahead sessionAhead) (map[string]any, *oauthError) {
	var v sessionGrantView
	var err error
	switch {
	case !ahead.done || ahead.sid != sid:
		_, err = s.readSession(ctx, sid, &v)
	case ahead.raw == nil || json.Unmarshal(ahead.raw, &v) != nil:
		err = sessions.ErrNotFound // as readSession answers
	}
	if oerr := s.grantSessionProblem(err, v.UserID, userID, &sessionRecord{Seen: v.Seen, Expires: v.Expires}, ended); oerr != nil {
		return nil, oerr
	}
	return v.Claims, nil
}

// slideSession records a use of the session sid (its record raw, decoded sess) other than a
// login: its idle window restarts now. To keep a busy session from costing a write per
// request, it is rewritten only once a twentieth of the idle timeout has passed since its last
// use; a concurrent change wins (the compare fails and nothing is written).
func (s *Server) slideSession(ctx context.Context, sid string, raw []byte, sess *sessionRecord) {
	now, idle := s.now(), s.cfg.SessionIdle()
	if sess.Expires == 0 || now.Unix()-sess.Seen < int64(idle/20/time.Second) {
		return
	}
	next := *sess
	next.Seen = now.Unix()
	ttl := next.ttl(now, idle)
	updated, err := json.Marshal(next)
	if err != nil || ttl <= 0 {
		return
	}
	err = s.store.Swap(ctx, sessions.KindSession, sid+".s", raw,
		[]sessions.Item{{Kind: sessions.KindSession, ID: sid + ".s", Value: updated, TTL: ttl}}, nil)
	if err != nil && !errors.Is(err, sessions.ErrConflict) {
		s.log.Warn("session idle window not extended", "err", err)
	}
}

// ttl is how long the session's record lives from now: until its absolute end or the end
// of its idle window from now, whichever is first (0 or less: it has ended).
func (sess *sessionRecord) ttl(now time.Time, idle time.Duration) time.Duration {
	return min(time.Unix(sess.Expires, 0).Sub(now), idle)
}

// hasClient reports whether the app received a code through the session.
func (sess *sessionRecord) hasClient(id string) bool {
	return sess.ClientID == id || slices.Contains(sess.Clients, id)
}

// maxSessionClients bounds the apps recorded in one session (they are configured clients, so
// the bound is only reached by a configuration with that many clients).
const maxSessionClients = 256

// addClient records that the app received a code through the session.
func (sess *sessionRecord) addClient(id string) {
	if !slices.Contains(sess.Clients, id) && len(sess.Clients) < maxSessionClients {
		sess.Clients = append(sess.Clients, id)
	}
}

// upstreamFacts copies what the upstream login says about the authentication into the
// session: its time, the upstream ID token (for federated logout) and its sid, amr and acr.
func (sess *sessionRecord) upstreamFacts(res *upstream.Result, now time.Time) {
	sess.AuthTime, sess.UpstreamAuthTime = now.Unix(), !res.AuthTime.IsZero()
	if !res.AuthTime.IsZero() && res.AuthTime.Before(now) {
		sess.AuthTime = res.AuthTime.Unix() // an upstream SSO session may be older than this login
	}
	sess.UpstreamIDToken = res.IDToken
	sess.UpstreamIssuer, sess.UpstreamDiscovery = clip(res.Issuer, 2048), clip(res.DiscoveryURL, 2048)
	sess.UpstreamIdentity = clip(res.IdentityDigest, 64)
	sess.UpstreamSID, _ = res.Claims["sid"].(string)
	if len(sess.UpstreamSID) > 256 {
		sess.UpstreamSID = ""
	}
	sess.ACR, _ = res.Claims["acr"].(string)
	sess.ACR = clip(sess.ACR, 256)
	sess.AMR = nil
	if amr, ok := res.Claims["amr"].([]any); ok {
		for _, v := range amr {
			if m, ok := v.(string); ok && len(sess.AMR) < 16 {
				sess.AMR = append(sess.AMR, clip(m, 64))
			}
		}
	}
}

// ssoDecision is what /authorize does with the browser's session.
type ssoDecision struct {
	tag  string         // the session's sid
	sess *sessionRecord // nil: no usable session
	raw  []byte         // the record as read (the compare of the update)
	conn *connection    // the session's connection, enabled for the client
	// reason says why the session cannot be used ("" when it can); oauthError is the
	// silent-authentication answer then (login_required).
	reason, oauthError string
}

// ssoFor decides whether the request can be answered from the browser's session: a live
// session (cookie secret checked, within its idle and absolute lifetimes) whose connection is
// enabled for the client and usable, matching connection= when given (or, without it, the
// connection a login_hint's email domain routes to, homerealm.go), with no prompt=login or
// select_account and no max_age its auth_time exceeds (OIDC Core §3.1.2.1).
func (s *Server) ssoFor(r *http.Request, q url.Values, client *config.Client) (ssoDecision, error) {
	tag, raw, sess, err := s.cookieSession(r)
	if err != nil {
		return ssoDecision{}, err
	}
	now := s.now()
	no := func(reason, oauthError string) (ssoDecision, error) {
		return ssoDecision{reason: reason, oauthError: oauthError}, nil
	}
	if sess == nil {
		return no("no session", "login_required")
	}
	if !sess.live(now, s.cfg.SessionIdle()) {
		return no("session expired", "login_required")
	}
	prompts := strings.Fields(q.Get("prompt"))
	if slices.Contains(prompts, "login") || slices.Contains(prompts, "select_account") {
		return no("prompt requires a new login", "login_required")
	}
	if ma := q.Get("max_age"); ma != "" {
		if !sess.UpstreamAuthTime { // only the upstream can say how long ago the user authenticated
			return no("max_age needs the upstream's auth_time, which its login did not send", "login_required")
		}
		if n, err := strconv.Atoi(ma); err == nil && now.Unix()-sess.AuthTime > int64(n) {
			return no("max_age exceeded", "login_required")
		}
	}
	if name := q.Get("connection"); name != "" && name != sess.Connection {
		return no("another connection requested", "login_required")
	}
	snap, err := s.reg.current(r.Context(), false)
	if err != nil {
		return ssoDecision{}, err
	}
	c := snap.byName[sess.Connection]
	if c == nil || c.err != nil || !slices.Contains(snap.enabledFor(client), sess.Connection) {
		return no("the session's connection is not enabled for this application", "login_required")
	}
	if n := hintedConnection(snap, client, q); n != "" && n != sess.Connection && q.Get("connection") == "" {
		// Home-realm discovery (homerealm.go) sends this address to another connection.
		return no("login_hint routes to another connection", "login_required")
	}
	return ssoDecision{tag: tag, sess: sess, raw: raw, conn: c}, nil
}

// answeredBySession answers an accepted authorization request from the browser's session
// when it can (single sign-on, silent authentication with prompt=none) and reports whether it
// answered. prompt=none without a usable session gets login_required (OIDC Core §3.1.2.6) and
// an fsa event; the upstream is never called for it. A session past its login limit is
// refused (sessionLoginRefused).
func (s *Server) answeredBySession(w http.ResponseWriter, r *http.Request, q url.Values, client *config.Client, app *appRequest, ev *logs.Event) bool {
	silent := slices.Contains(strings.Fields(q.Get("prompt")), "none")
	d, err := s.ssoFor(r, q, client)
	if err != nil {
		f := s.storeFailure(err)
		if silent { // the app's iframe gets an answer it can read
			app.silent = true
			f.App, f.OAuthError = app, "temporarily_unavailable"
		}
		s.failLogin(w, r, ev, f)
		return true
	}
	if silent {
		app.silent = true
		ev.Type = logs.TypeSuccessSilentAuth
	}
	if d.sess != nil && s.sessionLoginRefused(w, r, d, app, ev) {
		return true
	}
	if d.sess != nil && s.answerFromSession(w, r, d, client, app, ev) {
		return true
	}
	if !silent {
		return false
	}
	if d.sess != nil { // it ended or changed while the code was being issued
		d.reason, d.oauthError = "session ended", "login_required"
	}
	ev.Type = ""
	s.failLogin(w, r, ev, loginFailure{App: app, Code: d.oauthError,
		Description: "prompt=none: the user must sign in (" + d.reason + ")"})
	return true
}

// cookieSession reads the session the browser's session cookie names, its secret checked:
// tag "" and sess nil when there is none; err only when the store cannot be read.
func (s *Server) cookieSession(r *http.Request) (tag string, raw []byte, sess *sessionRecord, err error) {
	c, cerr := s.readCookie(r, sessionCookie)
	if cerr != nil || len(c.Value) > 256 {
		return "", nil, nil, nil
	}
	t, secret, ok := strings.Cut(c.Value, ".")
	if !ok || secret == "" || !validTag(t) {
		return "", nil, nil, nil
	}
	var rec sessionRecord
	raw, err = s.readSession(r.Context(), t, &rec)
	switch {
	case errors.Is(err, sessions.ErrNotFound):
		return "", nil, nil, nil
	case err != nil:
		return "", nil, nil, err
	}
	if subtle.ConstantTimeCompare([]byte(hashString(secret)), []byte(rec.CookieHash)) != 1 {
		return "", nil, nil, nil
	}
	return t, raw, &rec, nil
}

// validTag reports whether t can be a session tag (a store hash tag).
func validTag(t string) bool {
	return t != "" && len(t) <= 128 && !strings.ContainsAny(t, "{}.")
}

// answerFromSession issues the app's code from the browser's session d (no upstream round
// trip): it records the app and the browser's device in the session and slides its idle
// window (one compare-and-swap of the record, skipped when the app is already recorded, the
// device is the one recorded and the window slid less than a twentieth of the idle timeout
// ago, as for refreshes), stores the code under a fresh grant tag, records s (details.sso) or
// ssa for silent authentication, and sends the code to the app. It reports false when the
// session changed or ended meanwhile, having answered nothing: the caller goes on as without
// a session.
func (s *Server) answerFromSession(w http.ResponseWriter, r *http.Request, d ssoDecision, client *config.Client, app *appRequest, ev *logs.Event) bool {
	now, idle := s.now(), s.cfg.SessionIdle()
	sess := *d.sess
	s.noteDevice(&sess, r)
	// An app already recorded is notified of the session's end however that end and this
	// code interleave, so only a new app, another device or a window to slide needs the write.
	if !sess.hasClient(client.ClientID) || sess.LastIP != d.sess.LastIP || sess.LastUserAgent != d.sess.LastUserAgent ||
		now.Unix()-sess.Seen >= int64(idle/20/time.Second) {
		sess.Seen = now.Unix()
		sess.addClient(client.ClientID)
		ttl := sess.ttl(now, idle)
		if ttl <= 0 {
			return false
		}
		updated, err := json.Marshal(sess)
		if err != nil {
			return false
		}
		sid := d.tag + ".s"
		err = s.store.Swap(r.Context(), sessions.KindSession, sid, d.raw,
			[]sessions.Item{{Kind: sessions.KindSession, ID: sid, Value: updated, TTL: ttl}}, nil)
		switch {
		case errors.Is(err, sessions.ErrConflict):
			return false // ended or changed meanwhile: decided again without it
		case err != nil:
			s.failLogin(w, r, ev, s.storeFailure(err))
			return true
		}
	}
	withConnection(ev, d.conn)
	delete(ev.Details, "dpop_signing_alg") // no upstream call: nothing was signed
	withUser(ev, sess.UserID, sess.Claims)
	ev.Details["sso"] = true
	ev.Details["session_id"] = d.tag
	ev.Details["auth_time"] = time.Unix(sess.AuthTime, 0).UTC().Format(time.RFC3339)
	codeID, cr, err := s.newCode(app, d.tag, &sess, now)
	if err != nil {
		s.failLogin(w, r, ev, loginFailure{App: app, Code: "server_error", Description: "could not encode the authorization code"})
		return true
	}
	if err := s.succeedWith(r, ev, sessions.Item{Kind: sessions.KindCode, ID: codeID, Value: cr, TTL: s.cfg.Lifetimes.Code}); err != nil {
		s.failLogin(w, r, ev, s.storeFailure(err))
		return true
	}
	s.redirectToApp(w, r, app, url.Values{"code": {codeID}})
	return true
}

// newCode returns a code for app from the session sid (its record sess) and its record. A
// code is "GRANT.SECRET": GRANT is a fresh hash tag, under which its redemption marker and
// the refresh-token family minted from it live (codereuse.go), so every app that receives a
// code through one session gets its own family.
func (s *Server) newCode(app *appRequest, sid string, sess *sessionRecord, now time.Time) (string, []byte, error) {
	return s.codeUnder(randomString(16), app, sid, sess, now)
}

// codeUnder is newCode with the grant tag given (the session's own for the code of the
// login that creates it, stored in one write with the session). The user's claims stay in the
// session: /oauth/token takes them from there.
func (s *Server) codeUnder(grant string, app *appRequest, sid string, sess *sessionRecord, now time.Time) (string, []byte, error) {
	cr, err := json.Marshal(codeRecord{
		App: *app, SID: sid, UserID: sess.UserID, AuthTime: sess.AuthTime,
		AMR: sess.AMR, ACR: sess.ACR, Expires: now.Add(s.cfg.Lifetimes.Code).UnixMilli(),
	})
	secret := randomString(32)
	if grant != sid {
		secret = sid + codeSessionSep + secret // codeSessionHint
	}
	return grant + "." + secret, cr, err
}

// codeSessionSep separates the session tag from the random part in the secret of a code
// stored under a grant tag of its own ('~': in no session tag or base64url string).
const codeSessionSep = "~"

// codeSessionHint returns the session tag a code names, so that the session can be read in
// the same round trip as the code (readCode): the part of its secret before '~' for a code
// issued by single sign-on, else its tag (the code of the login that created a session is
// stored under the session's tag). It is only a guess: the code record's sid decides.
func codeSessionHint(code string) string {
	tag, secret, _ := strings.Cut(code, ".")
	if sid, _, ok := strings.Cut(secret, codeSessionSep); ok {
		return sid
	}
	return tag
}

// endSessionTag ends the session tag wherever the ending comes from (a logout, an
// administrator, the upstream, a replayed code, a new login of another user in its browser):
// its record is taken, so that of concurrent enders exactly one carries on, and every app that
// received a code through it is notified (back-channel logout). Its refresh tokens and opaque
// access tokens stop working with the record. It returns the ended record, nil when none was
// live.
func (s *Server) endSessionTag(ctx context.Context, tag string) (*sessionRecord, error) {
	if !validTag(tag) {
		return nil, nil
	}
	raw, err := s.store.Take(ctx, sessions.KindSession, tag+".s")
	switch {
	case errors.Is(err, sessions.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("end session: %w", err)
	}
	var sess sessionRecord
	if err := json.Unmarshal(raw, &sess); err != nil {
		return nil, fmt.Errorf("end session: malformed record: %w", err)
	}
	s.unindexSession(ctx, tag, &sess)
	s.notifyLogout(tag, &sess)
	return &sess, nil
}

// endReplacedSession ends the browser's session tag of another user (or connection) at a
// new upstream login in the same browser, recording slo with details.reason.
func (s *Server) endReplacedSession(r *http.Request, tag string, old *sessionRecord) {
	if _, err := s.endSessionLogged(r.Context(), r, tag, "replaced by another login in the same browser", nil); err != nil {
		s.log.Warn("replaced session not ended", "err", err)
	}
}

// Session indexes: a user's sessions and the sessions created from one upstream session are
// found through bounded index records (sessions.IndexAdd), never by scanning the keyspace.
// An index entry is written before its session and removed after it ends, so a live session
// is always indexed; an entry whose session is gone (idle expiry, a failed write) is skipped
// by readers, which check every session they read against what they looked for.

// maxUserSessions bounds the live sessions of one user (browsers signed in at once). A login
// beyond it ends the user's session that would expire first.
const maxUserSessions = 100

// maxUpstreamSIDSessions bounds the broker sessions one upstream session can have created (one
// per browser that carried it; normally one).
const maxUpstreamSIDSessions = 20

func userIndexID(userID string) string { return sessions.IndexID("user", userID) }

func upstreamSIDIndexID(connection, sid string) string {
	return sessions.IndexID("upstream-sid", connection, sid)
}

// indexSession records the session tag in its user's index and, when the upstream sent a
// sid, in that upstream session's index. Sessions pushed out of a full index are ended: a live
// session out of its index could not be found by the management API or survive an upstream
// logout. When the second index cannot be written, the first entry is removed again (the
// session will not be written, and a full store must not keep its index record).
func (s *Server) indexSession(r *http.Request, tag string, sess *sessionRecord) error {
	ctx, now, exp := r.Context(), s.now(), time.Unix(sess.Expires, 0)
	evicted, err := sessions.IndexAdd(ctx, s.store, userIndexID(sess.UserID), tag, exp, now, maxUserSessions)
	if err != nil {
		return fmt.Errorf("index the session of its user: %w", err)
	}
	reason := "the user has more than 100 sessions: the oldest ended"
	if sess.UpstreamSID != "" {
		ev, aerr := sessions.IndexAdd(ctx, s.store, upstreamSIDIndexID(sess.Connection, sess.UpstreamSID), tag, exp, now, maxUpstreamSIDSessions)
		if aerr != nil {
			err = fmt.Errorf("index the session of its upstream session: %w", aerr)
			if rerr := sessions.IndexRemove(ctx, s.store, userIndexID(sess.UserID), now, tag); rerr != nil {
				s.log.Warn("index entry of a login that failed left behind", "err", rerr)
			}
		}
		if len(ev) > 0 {
			evicted, reason = append(evicted, ev...), "more than 20 sessions from one upstream session: the oldest ended"
		}
	}
	for _, old := range evicted { // out of an index either way: ended, so none lives unindexed
		if _, err := s.endSessionLogged(ctx, r, old, reason, nil); err != nil {
			s.log.Warn("session pushed out of its index not ended", "err", err)
		}
	}
	return err
}

// unindexSession removes the ended session tag from its indexes (best effort: a stale entry
// is skipped by readers and expires with the index).
func (s *Server) unindexSession(ctx context.Context, tag string, sess *sessionRecord) {
	now := s.now()
	err := sessions.IndexRemove(ctx, s.store, userIndexID(sess.UserID), now, tag)
	if sess.UpstreamSID != "" {
		err = errors.Join(err, sessions.IndexRemove(ctx, s.store, upstreamSIDIndexID(sess.Connection, sess.UpstreamSID), now, tag))
	}
	if err != nil {
		s.log.Warn("ended session left in its index", "err", err)
	}
}

// indexedSession is one live session found through an index.
type indexedSession struct {
	tag  string
	sess *sessionRecord
}

// indexedSessions reads the live sessions an index lists, keeping those keep accepts (the
// check that they are what the index was looked up for).
func (s *Server) indexedSessions(ctx context.Context, indexID string, keep func(*sessionRecord) bool) ([]indexedSession, error) {
	members, err := sessions.IndexMembers(ctx, s.store, indexID, s.now())
	if err != nil {
		return nil, err
	}
	var out []indexedSession
	for _, m := range members {
		var sess sessionRecord
		_, err := s.readSession(ctx, m.ID, &sess)
		switch {
		case errors.Is(err, sessions.ErrNotFound):
			continue
		case err != nil:
			return nil, err
		}
		if !s.sessionAlive(&sess) || !keep(&sess) {
			continue
		}
		out = append(out, indexedSession{tag: m.ID, sess: &sess})
	}
	return out, nil
}

// userSessions returns the user's live sessions.
func (s *Server) userSessions(ctx context.Context, userID string) ([]indexedSession, error) {
	return s.indexedSessions(ctx, userIndexID(userID), func(sess *sessionRecord) bool { return sess.UserID == userID })
}

// upstreamSessions returns the live sessions created at connection from the upstream session
// sid (when sid is set) of the upstream user sub (when sub is set): what an upstream
// back-channel logout token names (Back-Channel Logout 1.0 §2.4: sid, sub or both). A session
// whose upstream login is later than issued (the token's iat, plus skew) is not one the
// token can mean: a user who signed in again after the IdP ended their session stays signed in.
func (s *Server) upstreamSessions(ctx context.Context, conn *connection, sid, sub string, issued time.Time) ([]indexedSession, error) {
	userID := ""
	if sub != "" {
		userID = conn.cfg.Strategy + "|" + conn.cfg.Name + "|" + sub
	}
	latest := int64(math.MaxInt64)
	if !issued.IsZero() {
		latest = issued.Add(s.cfg.DPoP.ClockSkew).Unix()
	}
	keep := func(sess *sessionRecord) bool {
		return sess.Connection == conn.cfg.Name && (sid == "" || sess.UpstreamSID == sid) &&
			(userID == "" || sess.UserID == userID) && sess.AuthTime <= latest
	}
	if userID != "" { // the user's index holds every session the sid index holds, and more
		return s.indexedSessions(ctx, userIndexID(userID), keep)
	}
	return s.indexedSessions(ctx, upstreamSIDIndexID(conn.cfg.Name, sid), keep)
}
