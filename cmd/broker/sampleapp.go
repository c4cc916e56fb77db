package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"

	"github.com/dpop-broker/dpop-broker/logs"
)

// sampleApp is one of the demo's relying parties: a standard go-oidc + x/oauth2 client of the
// broker (authorization code with PKCE S256, state and nonce) with a session of its own, a
// silent check (prompt=none, OIDC Core §3.1.2.6) and a back-channel logout endpoint (OpenID
// Connect Back-Channel Logout 1.0). The demo mounts two of them on one server, so that signing
// in to the second shows single sign-on.
type sampleApp struct {
	name, intro string  // page heading and the home page's first paragraph
	path        string  // where it is mounted on the sample-app server: "" or "/second"
	cookie      string  // its cookies' name prefix: the two apps share one origin
	other       appLink // the other demo app, linked from every page
	baseURL     string  // origin + path

	issuer, clientID, clientSecret string
	events                         *logs.Writer // the broker's log (same process: it is a demo)

	mu       sync.Mutex
	provider *oidc.Provider
	pending  map[string]pendingLogin // by state
	sessions map[string]*appSession  // by session cookie value
}

// appLink is a link to the other demo app.
type appLink struct{ Name, Href string }

type pendingLogin struct {
	verifier, nonce string
	silent          bool // "Check silently": prompt=none
	created         time.Time
}

// appSession is the app's own session of one browser after a sign-in.
type appSession struct {
	User, SID string
	How       string // how the broker answered the sign-in (signInStory)
	Claims    string // the ID token's claims, indented JSON
	Event     string // the broker's login event, indented JSON
	AuthTime  time.Time
	SignedIn  time.Time
	// EndedByBroker is when a back-channel logout ended the session (zero while it lives):
	// the browser's next page says so once, then the session is gone.
	EndedByBroker time.Time
}

const (
	maxPending  = 10000
	pendingTTL  = 10 * time.Minute
	maxSessions = 10000
	sessionTTL  = 8 * time.Hour // the broker session's default absolute lifetime
	// maxLogoutRequest bounds a back-channel logout request's body.
	maxLogoutRequest = 16 << 10
	// logoutEvent is the events member of a logout token (Back-Channel Logout 1.0 §2.4).
	logoutEvent = "http://schemas.openid.net/event/backchannel-logout"
)

// appCSP: nothing but the page's own inline style; no scripts, frames or forms.
const appCSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

var appPage = template.Must(template.New("app").Funcs(template.FuncMap{
	"when": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
}).Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.App}}</title>
<style>
body{font-family:system-ui,sans-serif;background:#f4f5f7;margin:0;display:flex;justify-content:center}
main{background:#fff;margin:3rem 1rem;padding:2rem 2.5rem;border-radius:8px;box-shadow:0 1px 4px rgba(0,0,0,.15);max-width:48rem;width:100%;border-top:6px solid #2d6cdf}
main.second{border-top-color:#0b7a53}
.app{color:#555;margin:0 0 .5rem;font-size:.9rem}
h1{font-size:1.4rem;margin-top:0}
pre{background:#f0f0f0;padding:1rem;border-radius:4px;overflow:auto;font-size:.85rem;white-space:pre-wrap;overflow-wrap:anywhere}
dt{font-weight:600;margin-top:.4rem}
dd{margin-left:1rem;overflow-wrap:anywhere}
nav a{margin-right:1.2rem}
a.button{display:inline-block;font-size:1rem;padding:.6rem 1.6rem;border-radius:4px;background:#2d6cdf;color:#fff;text-decoration:none}
main.second a.button{background:#0b7a53}
a:focus-visible{outline:3px solid #f5a623;outline-offset:2px}
.notice{background:#fff6d6;border-left:4px solid #f5a623;padding:.6rem .8rem}
.error{color:#b00020}
</style>
</head>
<body>
<main{{with .Class}} class="{{.}}"{{end}}>
<p class="app">{{.App}} · client <code>{{.ClientID}}</code></p>
{{- with .SignedOut}}
<p class="notice" id="signed-out">The broker signed you out of this app by back-channel logout at {{when .EndedByBroker}}: your broker session <code>{{.SID}}</code> ended.</p>
{{- end}}
{{- if .Silent}}
<p class="notice" id="silent-result">Silent check: <code>{{.Silent}}</code>. The broker has no session in this browser, so prompt=none came back without signing you in (and without showing a page).</p>
{{- end}}
{{- with .Session}}
<h1 id="user">Hello, {{.User}}</h1>
<p id="how">{{.How}}</p>
<dl>
<dt>Broker session (<code>sid</code>)</dt><dd><code id="sid">{{.SID}}</code></dd>
<dt>Signed in at the identity provider (<code>auth_time</code>)</dt><dd id="auth-time">{{when .AuthTime}}</dd>
<dt>Signed in to this app</dt><dd id="signed-in">{{when .SignedIn}}</dd>
</dl>
<nav><a class="button" id="silent" href="{{$.Base}}/silent">Check silently</a> <a id="logout" href="{{$.Base}}/logout">Log out</a> <a id="other" href="{{$.Other.Href}}">Open {{$.Other.Name}}</a></nav>
<h2>ID token claims</h2>
<pre id="claims">{{.Claims}}</pre>
<h2>Login event</h2>
<pre id="event">{{.Event}}</pre>
{{- else}}{{if .Error}}
<h1>Sign-in failed</h1>
<p class="error" id="error"><code>{{.Error}}</code> {{.Description}}</p>
{{if .Event}}<h2>Login event</h2><pre id="event">{{.Event}}</pre>{{end}}
<p><a href="{{.Base}}/">Back</a></p>
{{- else}}
<h1>{{.App}}</h1>
<p>{{.Intro}}</p>
<nav><a class="button" id="login" href="{{.Base}}/login">Log in</a> <a id="silent" href="{{.Base}}/silent">Check silently</a> <a id="other" href="{{.Other.Href}}">Open {{.Other.Name}}</a></nav>
{{- end}}{{end}}
</main>
</body>
</html>
`))

// appView is what one page shows.
type appView struct {
	App, ClientID, Class, Base, Intro string
	Other                             appLink
	Session                           *appSession // signed in
	SignedOut                         *appSession // ended by the broker's back-channel logout
	Silent                            string      // the error of a silent check (login_required)
	Error, Description, Event         string
}

// routes registers the app's pages below its path on m.
func (a *sampleApp) routes(m *http.ServeMux) {
	m.HandleFunc("GET "+a.path+"/{$}", func(w http.ResponseWriter, r *http.Request) { a.show(w, r, appView{}) })
	if a.path != "" {
		m.Handle("GET "+a.path, http.RedirectHandler(a.path+"/", http.StatusMovedPermanently))
	}
	m.HandleFunc("GET "+a.path+"/login", func(w http.ResponseWriter, r *http.Request) { a.startLogin(w, r, false) })
	m.HandleFunc("GET "+a.path+"/silent", func(w http.ResponseWriter, r *http.Request) { a.startLogin(w, r, true) })
	m.HandleFunc("GET "+a.path+"/callback", a.handleCallback)
	m.HandleFunc("GET "+a.path+"/logout", a.handleLogout)
	m.HandleFunc("POST "+a.path+"/backchannel-logout", a.handleBackchannelLogout)
}

func (a *sampleApp) issuerBase() string { return strings.TrimSuffix(a.issuer, "/") }

func (a *sampleApp) stateCookie() string   { return a.cookie + "_state" }
func (a *sampleApp) sessionCookie() string { return a.cookie + "_session" }

func (a *sampleApp) setCookie(w http.ResponseWriter, name, value string, maxAge time.Duration) {
	age := int(maxAge.Seconds())
	if value == "" {
		age = -1
	}
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: a.path + "/", MaxAge: age, HttpOnly: true, SameSite: http.SameSiteLaxMode})
}

func (a *sampleApp) render(w http.ResponseWriter, status int, v appView) {
	v.App, v.ClientID, v.Base, v.Intro, v.Other = a.name, a.clientID, a.path, a.intro, a.other
	if a.path != "" {
		v.Class = strings.TrimPrefix(a.path, "/")
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", appCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	_ = appPage.Execute(w, v)
}

// show renders the app's page for this browser: its session, or the home page, which says
// once that the broker ended the session by back-channel logout.
func (a *sampleApp) show(w http.ResponseWriter, r *http.Request, v appView) {
	if c, err := r.Cookie(a.sessionCookie()); err == nil {
		a.mu.Lock()
		var sess appSession
		s, ok := a.sessions[c.Value]
		if ok {
			sess = *s
		}
		ok = ok && time.Since(sess.SignedIn) <= sessionTTL
		if !ok || !sess.EndedByBroker.IsZero() {
			delete(a.sessions, c.Value) // expired, or its one notice is shown now
		}
		a.mu.Unlock()
		switch {
		case !ok:
			a.setCookie(w, a.sessionCookie(), "", 0)
		case !sess.EndedByBroker.IsZero():
			a.setCookie(w, a.sessionCookie(), "", 0)
			v.SignedOut = &sess
		default:
			v.Session = &sess
		}
	}
	a.render(w, http.StatusOK, v)
}

// oauth returns the OAuth2 config and the provider, discovering the broker on first use.
func (a *sampleApp) oauth(ctx context.Context) (*oauth2.Config, *oidc.Provider, error) {
	a.mu.Lock()
	p := a.provider
	a.mu.Unlock()
	if p == nil {
		var err error
		if p, err = oidc.NewProvider(ctx, a.issuer); err != nil {
			return nil, nil, fmt.Errorf("discover the broker: %w", err)
		}
		a.mu.Lock()
		a.provider = p
		a.mu.Unlock()
	}
	return &oauth2.Config{
		ClientID: a.clientID, ClientSecret: a.clientSecret, Endpoint: p.Endpoint(),
		RedirectURL: a.baseURL + "/callback", Scopes: []string{oidc.ScopeOpenID, "profile", "email"},
	}, p, nil
}

// startLogin sends the browser to the broker's /authorize; silent asks for prompt=none
// (OIDC Core §3.1.2.1), answered in the query like any other login.
func (a *sampleApp) startLogin(w http.ResponseWriter, r *http.Request, silent bool) {
	oc, _, err := a.oauth(r.Context())
	if err != nil {
		a.render(w, http.StatusBadGateway, appView{Error: "discovery_failed", Description: err.Error()})
		return
	}
	state, nonce, verifier := rand.Text(), rand.Text(), oauth2.GenerateVerifier()
	now := time.Now()
	a.mu.Lock()
	for k, p := range a.pending {
		if now.Sub(p.created) > pendingTTL {
			delete(a.pending, k)
		}
	}
	full := len(a.pending) >= maxPending
	if !full {
		a.pending[state] = pendingLogin{verifier: verifier, nonce: nonce, silent: silent, created: now}
	}
	a.mu.Unlock()
	if full {
		a.render(w, http.StatusServiceUnavailable, appView{Error: "busy", Description: "too many sign-ins in progress"})
		return
	}
	opts := []oauth2.AuthCodeOption{oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)}
	if silent {
		opts = append(opts, oauth2.SetAuthURLParam("prompt", "none"))
	}
	a.setCookie(w, a.stateCookie(), state, pendingTTL)
	http.Redirect(w, r, oc.AuthCodeURL(state, opts...), http.StatusFound)
}

func (a *sampleApp) handleCallback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	fail := func(status int, code, desc string) {
		ev := a.loginEvent(r.Context(), "", logs.TypeFailedLogin, logs.TypeFailedSilentAuth)
		a.render(w, status, appView{Error: code, Description: desc, Event: eventJSON(ev)})
	}
	c, err := r.Cookie(a.stateCookie())
	if err != nil || c.Value == "" || c.Value != q.Get("state") {
		fail(http.StatusBadRequest, "invalid_state", "state does not match this browser's login")
		return
	}
	a.setCookie(w, a.stateCookie(), "", 0)
	a.mu.Lock()
	p, ok := a.pending[c.Value]
	delete(a.pending, c.Value)
	a.mu.Unlock()
	if !ok {
		fail(http.StatusBadRequest, "invalid_state", "unknown or expired login")
		return
	}
	if e := q.Get("error"); e != "" {
		if p.silent && e == "login_required" { // the silent check's "no" (OIDC Core §3.1.2.6)
			a.show(w, r, appView{Silent: e})
			return
		}
		fail(http.StatusBadRequest, e, q.Get("error_description"))
		return
	}
	oc, prov, err := a.oauth(r.Context())
	if err != nil {
		fail(http.StatusBadGateway, "discovery_failed", err.Error())
		return
	}
	tok, err := oc.Exchange(r.Context(), q.Get("code"), oauth2.VerifierOption(p.verifier))
	if err != nil {
		fail(http.StatusBadGateway, "token_exchange_failed", err.Error())
		return
	}
	rawID, _ := tok.Extra("id_token").(string)
	idt, err := prov.VerifierContext(r.Context(), &oidc.Config{ClientID: a.clientID}).Verify(r.Context(), rawID)
	if err != nil {
		fail(http.StatusBadGateway, "id_token_invalid", err.Error())
		return
	}
	if idt.Nonce != p.nonce {
		fail(http.StatusBadGateway, "id_token_invalid", "nonce mismatch")
		return
	}
	var claims map[string]any
	var std struct {
		Name     string `json:"name"`
		SID      string `json:"sid"`
		AuthTime int64  `json:"auth_time"`
	}
	if err := errors.Join(idt.Claims(&claims), idt.Claims(&std)); err != nil {
		fail(http.StatusBadGateway, "id_token_invalid", err.Error())
		return
	}
	if std.Name == "" {
		std.Name = idt.Subject
	}
	pretty, _ := json.MarshalIndent(claims, "", "  ")
	ev := a.loginEvent(r.Context(), std.SID, logs.TypeSuccessLogin, logs.TypeSuccessSilentAuth)
	sess := &appSession{
		User: std.Name, SID: std.SID, How: signInStory(ev), Claims: string(pretty), Event: eventJSON(ev),
		AuthTime: time.Unix(std.AuthTime, 0), SignedIn: time.Now(),
	}
	old := ""
	if c, err := r.Cookie(a.sessionCookie()); err == nil {
		old = c.Value
	}
	id, ok := a.startSession(old, sess)
	if !ok {
		fail(http.StatusServiceUnavailable, "busy", "too many signed-in browsers")
		return
	}
	a.setCookie(w, a.sessionCookie(), id, sessionTTL)
	http.Redirect(w, r, a.path+"/", http.StatusSeeOther)
}

// startSession stores sess under a new cookie value in place of the browser's previous
// session old; false when the app holds maxSessions live sessions.
func (a *sampleApp) startSession(old string, sess *appSession) (string, bool) {
	id := rand.Text()
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.sessions, old)
	for k, s := range a.sessions {
		if sess.SignedIn.Sub(s.SignedIn) > sessionTTL {
			delete(a.sessions, k)
		}
	}
	if len(a.sessions) >= maxSessions {
		return "", false
	}
	a.sessions[id] = sess
	return id, true
}

// handleLogout ends the app's session and sends the browser to the broker's
// end_session_endpoint (OpenID Connect RP-Initiated Logout 1.0), which asks the user to confirm
// (the app sends no id_token_hint) and notifies the other apps by back-channel logout.
func (a *sampleApp) handleLogout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(a.sessionCookie()); err == nil {
		a.mu.Lock()
		delete(a.sessions, c.Value)
		a.mu.Unlock()
		a.setCookie(w, a.sessionCookie(), "", 0)
	}
	q := url.Values{"client_id": {a.clientID}, "post_logout_redirect_uri": {a.baseURL + "/"}}
	http.Redirect(w, r, a.issuerBase()+"/oidc/logout?"+q.Encode(), http.StatusFound)
}

// handleBackchannelLogout is the app's backchannel_logout_uri: a valid logout token from the
// broker ends the app's sessions of the broker session it names (Back-Channel Logout 1.0
// §2.5–§2.8).
func (a *sampleApp) handleBackchannelLogout(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	answer := func(status int, code, desc string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxLogoutRequest)
	if err := r.ParseForm(); err != nil {
		answer(http.StatusBadRequest, "invalid_request", "the body is not a form of at most 16 KiB")
		return
	}
	_, prov, err := a.oauth(r.Context())
	if err != nil { // the broker retries 5xx
		answer(http.StatusServiceUnavailable, "temporarily_unavailable", "cannot discover the broker")
		return
	}
	sid, err := a.verifyLogoutToken(r.Context(), prov, r.PostForm.Get("logout_token"))
	if err != nil {
		answer(http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	now := time.Now()
	a.mu.Lock()
	for _, s := range a.sessions {
		if s.SID == sid && s.EndedByBroker.IsZero() {
			s.EndedByBroker, s.Claims, s.Event = now, "", ""
		}
	}
	a.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// logoutTokenAlgs are the algorithms the broker may sign its ID tokens, and so its logout
// tokens, with.
var logoutTokenAlgs = []jose.SignatureAlgorithm{jose.RS256, jose.PS256, jose.ES256, jose.EdDSA}

// verifyLogoutToken validates a logout token (Back-Channel Logout 1.0 §2.6) and returns its
// sid: typ logout+jwt (§2.4, §4.1: an ID token is no logout token), the signature against the
// broker's JWK Set, iss, aud and exp as for ID tokens (go-oidc's verifier, which checks the
// signature with go-jose), the back-channel logout event, no nonce, and a sid (the broker
// always sends one, and the app keeps its sessions by it).
func (a *sampleApp) verifyLogoutToken(ctx context.Context, prov *oidc.Provider, raw string) (string, error) {
	if raw == "" {
		return "", errors.New("logout_token is missing")
	}
	jws, err := jose.ParseSignedCompact(raw, logoutTokenAlgs)
	if err != nil || len(jws.Signatures) != 1 {
		return "", errors.New("logout_token is not a signed JWT")
	}
	if typ, _ := jws.Signatures[0].Protected.ExtraHeaders[jose.HeaderType].(string); !strings.EqualFold(typ, "logout+jwt") {
		return "", errors.New("logout_token: typ is not logout+jwt")
	}
	tok, err := prov.VerifierContext(ctx, &oidc.Config{ClientID: a.clientID}).Verify(ctx, raw)
	if err != nil {
		return "", fmt.Errorf("logout_token: %w", err)
	}
	var c struct {
		SID    string                     `json:"sid"`
		Nonce  *json.RawMessage           `json:"nonce"`
		Events map[string]json.RawMessage `json:"events"`
	}
	if err := tok.Claims(&c); err != nil {
		return "", fmt.Errorf("logout_token: %w", err)
	}
	var member map[string]any
	if ev, ok := c.Events[logoutEvent]; !ok || json.Unmarshal(ev, &member) != nil || member == nil {
		return "", errors.New("logout_token: events lacks the back-channel logout event")
	}
	if c.Nonce != nil {
		return "", errors.New("logout_token: carries a nonce")
	}
	if c.SID == "" {
		return "", errors.New("logout_token: no sid")
	}
	return c.SID, nil
}

// loginEvent returns the newest of the broker's events for this app of one of types, for the
// broker session sid when it is set; nil when the recent log holds none.
func (a *sampleApp) loginEvent(ctx context.Context, sid string, types ...string) *logs.Event {
	evs, err := a.events.Recent(ctx, "", 50)
	if err != nil {
		return nil
	}
	for i, ev := range evs {
		if ev.ClientID != a.clientID || !slices.Contains(types, ev.Type) {
			continue
		}
		if id, _ := ev.Details["session_id"].(string); sid == "" || id == sid {
			return &evs[i]
		}
	}
	return nil
}

func eventJSON(ev *logs.Event) string {
	if ev == nil {
		return ""
	}
	b, _ := json.MarshalIndent(ev, "", "  ")
	return string(b)
}

// signInStory says how the broker answered a sign-in, from its login event: the ID token
// alone cannot tell whether the browser went to the identity provider.
func signInStory(ev *logs.Event) string {
	switch {
	case ev == nil:
		return "You signed in through dpop-broker (its login event is no longer in the broker's recent log)."
	case ev.Type == logs.TypeSuccessSilentAuth:
		return "Signed in (silent authentication): prompt=none, answered from your broker session without showing a page."
	case ev.Details["sso"] == true:
		return "Single sign-on: the broker answered from your broker session, with no trip to the identity provider."
	}
	s := "The broker sent you to the demo identity provider"
	if alg, _ := ev.Details["dpop_signing_alg"].(string); alg != "" && ev.Details["dpop_returned_from_upstream"] == true {
		s += " and exchanged its code with a DPoP proof (" + alg + ")"
	}
	return s + "."
}
