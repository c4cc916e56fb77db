package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/dpop-broker/dpop-broker/logs"
)

// sampleApp is the demo's relying party: a standard go-oidc + x/oauth2 client of the broker
// (authorization code with PKCE S256, state and nonce).
type sampleApp struct {
	baseURL, issuer, clientID, clientSecret string
	events                                  *logs.Writer // the broker's log (same process: it is a demo)

	mu       sync.Mutex
	provider *oidc.Provider
	pending  map[string]pendingLogin // by state
}

type pendingLogin struct {
	verifier, nonce string
	created         time.Time
}

const (
	appStateCookie = "sample_app_state"
	maxPending     = 10000
	pendingTTL     = 10 * time.Minute
)

var appPage = template.Must(template.New("app").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
body{font-family:system-ui,sans-serif;background:#f4f5f7;margin:0;display:flex;justify-content:center}
main{background:#fff;margin:3rem 1rem;padding:2rem 2.5rem;border-radius:8px;box-shadow:0 1px 4px rgba(0,0,0,.15);max-width:48rem;width:100%}
h1{font-size:1.4rem;margin-top:0}
pre{background:#f0f0f0;padding:1rem;border-radius:4px;overflow:auto;font-size:.85rem;white-space:pre-wrap;overflow-wrap:anywhere}
a.button{display:inline-block;font-size:1rem;padding:.6rem 1.6rem;border-radius:4px;background:#2d6cdf;color:#fff;text-decoration:none}
.error{color:#b00020}
</style>
</head>
<body>
<main>
{{if .User}}
<h1 id="user">Hello, {{.User}}</h1>
<p>You signed in through dpop-broker. The broker exchanged the upstream code with a DPoP proof.</p>
<h2>ID token claims</h2>
<pre id="claims">{{.Claims}}</pre>
<h2>Login event</h2>
<pre id="event">{{.Event}}</pre>
<p><a id="logout" href="/logout">Log out</a></p>
{{else if .Error}}
<h1>Sign-in failed</h1>
<p class="error" id="error"><code>{{.Error}}</code> {{.Description}}</p>
{{if .Event}}<h2>Login event</h2><pre id="event">{{.Event}}</pre>{{end}}
<p><a href="/">Back</a></p>
{{else}}
<h1>Sample App</h1>
<p>This app trusts dpop-broker as its OpenID provider. The broker sends you to a demo upstream
IdP that requires DPoP with server nonces.</p>
<p><a class="button" id="login" href="/login">Log in</a></p>
{{end}}
</main>
</body>
</html>
`))

type appView struct {
	Title, User, Claims, Event, Error, Description string
}

func (a *sampleApp) handler() http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) { a.render(w, http.StatusOK, appView{Title: "Sample App"}) })
	m.HandleFunc("GET /login", a.handleLogin)
	m.HandleFunc("GET /callback", a.handleCallback)
	m.HandleFunc("GET /logout", func(w http.ResponseWriter, r *http.Request) {
		// OpenID Connect RP-Initiated Logout at the broker's end_session_endpoint.
		q := url.Values{"client_id": {a.clientID}, "post_logout_redirect_uri": {a.baseURL + "/"}}
		http.Redirect(w, r, a.issuerBase()+"/oidc/logout?"+q.Encode(), http.StatusFound)
	})
	return m
}

func (a *sampleApp) issuerBase() string {
	if n := len(a.issuer); n > 0 && a.issuer[n-1] == '/' {
		return a.issuer[:n-1]
	}
	return a.issuer
}

func (a *sampleApp) render(w http.ResponseWriter, status int, v appView) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = appPage.Execute(w, v)
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

func (a *sampleApp) handleLogin(w http.ResponseWriter, r *http.Request) {
	oc, _, err := a.oauth(r.Context())
	if err != nil {
		a.render(w, http.StatusBadGateway, appView{Title: "Sign-in failed", Error: "discovery_failed", Description: err.Error()})
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
		a.pending[state] = pendingLogin{verifier: verifier, nonce: nonce, created: now}
	}
	a.mu.Unlock()
	if full {
		a.render(w, http.StatusServiceUnavailable, appView{Title: "Busy", Error: "busy", Description: "too many sign-ins in progress"})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: appStateCookie, Value: state, Path: "/", MaxAge: int(pendingTTL.Seconds()), HttpOnly: true, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, oc.AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)), http.StatusFound)
}

func (a *sampleApp) handleCallback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	fail := func(status int, code, desc string) {
		a.render(w, status, appView{Title: "Sign-in failed", Error: code, Description: desc, Event: a.latestEvent(r.Context(), "f", "")})
	}
	c, err := r.Cookie(appStateCookie)
	if err != nil || c.Value == "" || c.Value != q.Get("state") {
		fail(http.StatusBadRequest, "invalid_state", "state does not match this browser's login")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: appStateCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	a.mu.Lock()
	p, ok := a.pending[c.Value]
	delete(a.pending, c.Value)
	a.mu.Unlock()
	if !ok {
		fail(http.StatusBadRequest, "invalid_state", "unknown or expired login")
		return
	}
	if e := q.Get("error"); e != "" {
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
	if err := idt.Claims(&claims); err != nil {
		fail(http.StatusBadGateway, "id_token_invalid", err.Error())
		return
	}
	name, _ := claims["name"].(string)
	if name == "" {
		name = idt.Subject
	}
	pretty, _ := json.MarshalIndent(claims, "", "  ")
	a.render(w, http.StatusOK, appView{
		Title: "Logged in", User: name, Claims: string(pretty),
		Event: a.latestEvent(r.Context(), "s", idt.Subject),
	})
}

// latestEvent returns the newest event of type typ (for userID when set) as indented JSON.
func (a *sampleApp) latestEvent(ctx context.Context, typ, userID string) string {
	evs, err := a.events.Recent(ctx, "", 50)
	if err != nil {
		return ""
	}
	for _, ev := range evs {
		if ev.Type == typ && (userID == "" || ev.UserID == userID) {
			b, _ := json.MarshalIndent(ev, "", "  ")
			return string(b)
		}
	}
	return ""
}
