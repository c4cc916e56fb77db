package broker

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/sessions/redistest"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

var dpopUp = demoidp.Options{DPoPAlgs: []string{"ES256"}, RequireDPoP: true, RequireNonce: true}

// wantFail checks the newest event is an f with details.error == code.
func wantFail(t *testing.T, h *harness, code string) logs.Event {
	t.Helper()
	return wantFailOf(t, h, logs.TypeFailedLogin, code)
}

// wantFailOf checks the newest event is of type typ (f, fsa) with details.error == code.
func wantFailOf(t *testing.T, h *harness, typ, code string) logs.Event {
	t.Helper()
	ev := h.lastEvent()
	if ev.Type != typ || ev.Details["error"] != code {
		t.Fatalf("event = type %q details %v; want %s with details.error %q", ev.Type, ev.Details, typ, code)
	}
	return ev
}

func TestAuthorizeErrorPages(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp})
	for _, tc := range []struct {
		name string
		mut  func(url.Values)
		code string
	}{
		{name: "unknown client", mut: func(q url.Values) { q.Set("client_id", "nope") }, code: codeInvalidClient},
		{name: "redirect_uri not registered", mut: func(q url.Values) { q.Set("redirect_uri", h.app.URL+"/other") }, code: codeInvalidRedirectURI},
		{name: "redirect_uri prefix-only match", mut: func(q url.Values) { q.Set("redirect_uri", h.app.URL+"/cb/x") }, code: codeInvalidRedirectURI},
		{name: "redirect_uri missing", mut: func(q url.Values) { q.Del("redirect_uri") }, code: codeInvalidRedirectURI},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(t, h.browser(), h.authorizeURL(tc.mut))
			if resp.StatusCode != http.StatusBadRequest || resp.Request.URL.Host != h.srv.Listener.Addr().String() ||
				!strings.Contains(body, tc.code) {
				t.Fatalf("got %d at %s, want 400 error page with %s (never a redirect)", resp.StatusCode, resp.Request.URL, tc.code)
			}
			wantFail(t, h, tc.code)
		})
	}
}

func TestAuthorizeErrorRedirects(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp})
	for _, tc := range []struct {
		name, client string
		mut          func(url.Values)
		oauthErr     string
		stateUnsent  bool // the request's state is not one value, so none is echoed
		silent       bool // prompt=none refused: fsa
	}{
		{name: "response_type token", client: appClient, mut: func(q url.Values) { q.Set("response_type", "token") }, oauthErr: "unsupported_response_type"},
		{name: "plain method refused", client: appClient, mut: func(q url.Values) { q.Set("code_challenge_method", "plain") }, oauthErr: "invalid_request"},
		{name: "absent method means plain", client: appClient, mut: func(q url.Values) { q.Del("code_challenge_method") }, oauthErr: "invalid_request"},
		{name: "public client without PKCE", client: spaClient, mut: func(q url.Values) { q.Del("code_challenge"); q.Del("code_challenge_method") }, oauthErr: "invalid_request"},
		{name: "scope without openid", client: appClient, mut: func(q url.Values) { q.Set("scope", "profile") }, oauthErr: "invalid_scope"},
		{name: "connection not enabled", client: appClient, mut: func(q url.Values) { q.Set("connection", "other") }, oauthErr: "invalid_request"},
		{name: "repeated state", client: appClient, mut: func(q url.Values) { q.Add("state", "x") }, oauthErr: "invalid_request", stateUnsent: true},
		{name: "OIDC Core 3.1.2.6 prompt=none: login_required (no broker SSO session)", client: appClient, mut: func(q url.Values) { q.Set("prompt", "none") }, oauthErr: "login_required", silent: true},
		{name: "OIDC Core 3.1.2.1 prompt=none with another value: invalid_request", client: appClient, mut: func(q url.Values) { q.Set("prompt", "none login") }, oauthErr: "invalid_request"},
		{name: "response_mode fragment refused", client: appClient, mut: func(q url.Values) { q.Set("response_mode", "fragment") }, oauthErr: "invalid_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := h.authorizeURL(func(q url.Values) {
				if tc.client == spaClient {
					q.Set("client_id", spaClient)
					q.Set("redirect_uri", h.app.URL+"/spa")
					q.Set("connection", "corp")
				}
				tc.mut(q)
			})
			resp, _ := get(t, h.browser(), u)
			q := resp.Request.URL.Query()
			if !strings.HasPrefix(resp.Request.URL.Path, "/cb") && !strings.HasPrefix(resp.Request.URL.Path, "/spa") {
				t.Fatalf("ended at %s, want the app", resp.Request.URL)
			}
			if q.Get("error") != tc.oauthErr || q.Get("iss") != h.cfg.Issuer || q.Get("error_description") == "" {
				t.Fatalf("app got %v, want error=%s with iss (RFC 9207 §2)", q, tc.oauthErr)
			}
			if !tc.stateUnsent && q.Get("state") != "app-state-123" {
				t.Fatalf("state not echoed: %v", q)
			}
			typ := logs.TypeFailedLogin
			if tc.silent {
				typ = logs.TypeFailedSilentAuth
			}
			wantFailOf(t, h, typ, tc.oauthErr)
		})
	}
	if n := h.up.Stats.AuthorizeRequests.Load(); n != 0 {
		t.Errorf("upstream saw %d authorize requests for rejected requests", n)
	}
}

// TestAuthorizeWebMessage: silent authentication (prompt=none, response_mode=web_message, as
// auth0-spa-js sends from its iframe) gets its login_required answer posted to the registered
// redirect_uri's origin, in a page only that origin may frame, instead of a redirect the
// iframe never reports (the SDK would wait for its timeout).
func TestAuthorizeWebMessage(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp})
	appOrigin := h.app.URL // http://127.0.0.1:PORT
	for _, tc := range []struct {
		name, prompt, wantErr, wantType string
	}{
		{name: "OIDC Core 3.1.2.6 prompt=none: login_required posted", prompt: "none", wantErr: "login_required", wantType: logs.TypeFailedSilentAuth},
		{name: "web_message without prompt=none: invalid_request posted", prompt: "login", wantErr: "invalid_request", wantType: logs.TypeFailedLogin},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := h.authorizeURL(func(q url.Values) {
				q.Set("prompt", tc.prompt)
				q.Set("response_mode", "web_message")
			})
			resp, body := get(t, h.browser(), u)
			if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/authorize" {
				t.Fatalf("got %d at %s, want 200 at /authorize (no redirect)", resp.StatusCode, resp.Request.URL)
			}
			csp := resp.Header.Get("Content-Security-Policy")
			if !strings.Contains(csp, "frame-ancestors "+appOrigin) || !strings.Contains(csp, "script-src 'nonce-") || strings.Contains(csp, "unsafe-inline") {
				t.Errorf("CSP %q: want frame-ancestors %s and a script nonce", csp, appOrigin)
			}
			if xfo := resp.Header.Get("X-Frame-Options"); xfo != "" {
				t.Errorf("X-Frame-Options %q would stop the app's iframe", xfo)
			}
			for _, want := range []string{`"authorization_response"`, `"error":"` + tc.wantErr + `"`, `"state":"app-state-123"`,
				`"iss":"` + h.cfg.Issuer + `"`, `}}, "` + appOrigin + `");`} {
				if !strings.Contains(body, want) {
					t.Errorf("page lacks %s:\n%s", want, body)
				}
			}
			wantFailOf(t, h, tc.wantType, tc.wantErr)
		})
	}
	// A native app's private-use scheme has no web origin to post to: the query redirect.
	t.Run("web_message with a private-use scheme redirect_uri: query redirect", func(t *testing.T) {
		const native = "com.example.app:/cb"
		h.updateClient(appClient, func(c *config.Client) { c.RedirectURIs = append(c.RedirectURIs, native) })
		defer h.updateClient(appClient, func(c *config.Client) { c.RedirectURIs = c.RedirectURIs[:1] })
		c := h.browser()
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		resp, _ := get(t, c, h.authorizeURL(func(q url.Values) {
			q.Set("redirect_uri", native)
			q.Set("prompt", "none")
			q.Set("response_mode", "web_message")
		}))
		loc, err := url.Parse(resp.Header.Get("Location"))
		if resp.StatusCode != http.StatusFound || err != nil || !strings.HasPrefix(loc.String(), native+"?") || loc.Query().Get("error") != "login_required" {
			t.Fatalf("got %d Location %q, want 302 to %s?error=login_required", resp.StatusCode, resp.Header.Get("Location"), native)
		}
	})
	if n := h.up.Stats.AuthorizeRequests.Load(); n != 0 {
		t.Errorf("upstream saw %d authorize requests", n)
	}
}

func TestDPoPCapabilityGate(t *testing.T) {
	for _, tc := range []struct {
		name string
		up   demoidp.Options
		code string
	}{
		{name: "upstream without DPoP", up: demoidp.Options{}, code: "dpop_not_supported"},
		{name: "upstream offers only RS256", up: demoidp.Options{DPoPAlgs: []string{"RS256"}}, code: "dpop_alg_mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{up: tc.up})
			resp, _ := get(t, h.browser(), h.authorizeURL(nil))
			q := appResult(t, resp, h.app.URL+"/cb")
			if q.Get("error") != "server_error" || !strings.Contains(q.Get("error_description"), tc.code) {
				t.Fatalf("app got %v", q)
			}
			ev := wantFail(t, h, tc.code)
			if ev.Details["dpop_signing_alg"] != "ES256" || ev.Details["error_description"] == nil {
				t.Errorf("details = %v", ev.Details)
			}
			if h.up.Stats.AuthorizeRequests.Load() != 0 || h.up.Stats.TokenRequests.Load() != 0 {
				t.Errorf("upstream was contacted beyond discovery: %d authorize, %d token",
					h.up.Stats.AuthorizeRequests.Load(), h.up.Stats.TokenRequests.Load())
			}
		})
	}
}

func TestCallbackErrors(t *testing.T) {
	for _, tc := range []struct{ name, query, wantBody string }{
		{name: "missing state", query: "code=x", wantBody: "invalid_state"},
		{name: "invalid state", query: "code=x&state=forged", wantBody: "login transaction unknown, expired or already used"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{up: dpopUp})
			resp, body := get(t, h.browser(), h.srv.URL+"/login/callback?"+tc.query)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, tc.wantBody) {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			if !strings.Contains(body, "Go back to the application you were signing in to and sign in again.") {
				t.Errorf("the error page gives no next step:\n%s", body)
			}
			wantFail(t, h, codeInvalidState)
		})
	}
	t.Run("replayed callback", func(t *testing.T) {
		h := newHarness(t, harnessOpts{up: dpopUp})
		b := h.browser()
		cb := h.toCallback(b, h.authorizeURL(nil))
		resp, _ := get(t, b, cb)
		if q := appResult(t, resp, h.app.URL+"/cb"); q.Get("code") == "" {
			t.Fatalf("first callback: %v", q)
		}
		resp, body := get(t, b, cb)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "already used") {
			t.Fatalf("replay: %d %s", resp.StatusCode, body)
		}
		wantFail(t, h, codeInvalidState)
		if n := h.up.Stats.TokenRequests.Load(); n != 2 { // one nonce challenge + one success
			t.Errorf("upstream token requests = %d, want 2 (replay must not reach the upstream)", n)
		}
	})
	t.Run("transaction expired", func(t *testing.T) {
		h := newHarness(t, harnessOpts{up: dpopUp})
		b := h.browser()
		cb := h.toCallback(b, h.authorizeURL(nil))
		h.clock.Advance(h.cfg.Lifetimes.Transaction + time.Second)
		resp, body := get(t, b, cb)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "expired") {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		wantFail(t, h, codeInvalidState)
	})
	t.Run("callback in another browser (cookie missing): an error page, the transaction is not taken", func(t *testing.T) {
		h := newHarness(t, harnessOpts{up: dpopUp})
		cb := h.toCallback(h.browser(), h.authorizeURL(nil))
		resp, body := get(t, h.browser(), cb)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "started in another browser") {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		wantFail(t, h, codeInvalidState)
		if h.up.Stats.TokenRequests.Load() != 0 {
			t.Error("the upstream code was exchanged for a browser without the transaction cookie")
		}
	})
	t.Run("wrong iss", func(t *testing.T) {
		h := newHarness(t, harnessOpts{up: demoidp.Options{DPoPAlgs: []string{"ES256"}, IssParameter: true}})
		b := h.browser()
		cb, _ := url.Parse(h.toCallback(b, h.authorizeURL(nil)))
		q := cb.Query()
		q.Set("iss", "http://evil.example/")
		cb.RawQuery = q.Encode()
		resp, _ := get(t, b, cb.String())
		aq := appResult(t, resp, h.app.URL+"/cb")
		if aq.Get("error") != "invalid_request" || aq.Get("code") != "" {
			t.Fatalf("app got %v", aq)
		}
		if d := aq.Get("error_description"); strings.Contains(d, "evil.example") || strings.Contains(d, h.up.URL) {
			t.Errorf("the app is shown an issuer: %q", d)
		}
		ev := wantFail(t, h, codeInvalidIss)
		if d, _ := ev.Details["error_description"].(string); !strings.Contains(d, "evil.example") {
			t.Errorf("the event does not name the iss received: %q", d)
		}
		if h.up.Stats.TokenRequests.Load() != 0 {
			t.Error("code exchanged despite wrong iss")
		}
	})
	t.Run("missing iss from an upstream that advertises it", func(t *testing.T) {
		h := newHarness(t, harnessOpts{up: demoidp.Options{DPoPAlgs: []string{"ES256"}, IssParameter: true}})
		b := h.browser()
		cb, _ := url.Parse(h.toCallback(b, h.authorizeURL(nil)))
		q := cb.Query()
		q.Del("iss")
		cb.RawQuery = q.Encode()
		resp, _ := get(t, b, cb.String())
		appResult(t, resp, h.app.URL+"/cb")
		wantFail(t, h, codeInvalidIss)
	})
	t.Run("upstream error=access_denied", func(t *testing.T) {
		h := newHarness(t, harnessOpts{up: demoidp.Options{DPoPAlgs: []string{"ES256"}, AuthorizeError: "access_denied"}})
		resp, _ := get(t, h.browser(), h.authorizeURL(nil))
		q := appResult(t, resp, h.app.URL+"/cb")
		if q.Get("error") != "access_denied" || q.Get("state") != "app-state-123" || q.Get("iss") != h.cfg.Issuer {
			t.Fatalf("app got %v", q)
		}
		ev := wantFail(t, h, "access_denied")
		if ev.Details["error_description"] != "the upstream refused the request" || ev.Details["dpop_signing_alg"] != "ES256" {
			t.Errorf("details = %v", ev.Details)
		}
	})
}

func TestUpstreamExchangeFailures(t *testing.T) {
	base := demoidp.Options{DPoPAlgs: []string{"ES256"}, RequireDPoP: true, RequireNonce: true}
	with := func(f func(*demoidp.Options)) demoidp.Options { o := base; f(&o); return o }
	for _, tc := range []struct {
		name string
		up   demoidp.Options
		code string
	}{
		{name: "wrong aud", up: with(func(o *demoidp.Options) { o.IDTokenAud = "someone-else" }), code: "id_token_invalid"},
		{name: "wrong nonce", up: with(func(o *demoidp.Options) { o.IDTokenNonce = "other-nonce" }), code: "id_token_invalid"},
		{name: "wrong iss", up: with(func(o *demoidp.Options) { o.IDTokenIssuer = "http://127.0.0.1:1" }), code: "id_token_invalid"},
		{name: "expired", up: with(func(o *demoidp.Options) { o.IDTokenTTL = -10 * time.Minute }), code: "id_token_invalid"},
		{name: "nonce retry limit reached", up: with(func(o *demoidp.Options) { o.AlwaysNonce = true }), code: "use_dpop_nonce"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{up: tc.up})
			resp, _ := get(t, h.browser(), h.authorizeURL(nil))
			q := appResult(t, resp, h.app.URL+"/cb")
			if q.Get("error") != "server_error" || q.Get("code") != "" || !strings.Contains(q.Get("error_description"), tc.code) {
				t.Fatalf("app got %v", q)
			}
			ev := wantFail(t, h, tc.code)
			if ev.Details["dpop_signing_alg"] != "ES256" {
				t.Errorf("DPoP facts missing on f: %v", ev.Details)
			}
		})
	}
}

// failingStore wraps a Store and fails PutAll with ErrUnavailable when armed.
type failingStore struct {
	sessions.Store
	failPutAll atomic.Bool
	putAlls    atomic.Int64
}

func (f *failingStore) PutAll(ctx context.Context, items ...sessions.Item) error {
	f.putAlls.Add(1)
	if f.failPutAll.Load() {
		return errors.Join(sessions.ErrUnavailable, errors.New("injected"))
	}
	return f.Store.PutAll(ctx, items...)
}

func TestStoreUnavailable(t *testing.T) {
	t.Run("session write fails: 503, nothing written", func(t *testing.T) {
		fs := &failingStore{Store: sessions.NewMemory()}
		fs.failPutAll.Store(true)
		h := newHarness(t, harnessOpts{up: dpopUp, store: fs})
		resp, body := get(t, h.browser(), h.authorizeURL(nil))
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Request.URL.Path != "/login/callback" || !strings.Contains(body, codeStoreUnavailable) {
			t.Fatalf("%d at %s: %s", resp.StatusCode, resp.Request.URL, body)
		}
		wantFail(t, h, codeStoreUnavailable)
		if fs.putAlls.Load() != 1 {
			t.Errorf("PutAll calls = %d", fs.putAlls.Load())
		}
	})
	t.Run("redis stopped mid-login", func(t *testing.T) {
		rs := redistest.StartServer(t)
		st, err := sessions.NewRedis(sessions.RedisConfig{Addrs: []string{rs.Addr}, Timeout: redisFaultTimeout})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		h := newHarness(t, harnessOpts{up: dpopUp, store: st})
		b := h.browser()
		cb := h.toCallback(b, h.authorizeURL(nil))
		rs.Stop()
		resp, body := get(t, b, cb)
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, codeStoreUnavailable) {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		wantFail(t, h, codeStoreUnavailable)
		if h.up.Stats.TokenRequests.Load() != 0 {
			t.Error("code exchanged although the transaction could not be taken")
		}
		r, _ := get(t, http.DefaultClient, h.srv.URL+"/readyz")
		if r.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("readyz = %d with Redis down", r.StatusCode)
		}
		rs.Restart()
		h.clock.Advance(readinessReuse) // /readyz reuses an answer for that long
		if r, _ := get(t, http.DefaultClient, h.srv.URL+"/readyz"); r.StatusCode != http.StatusOK {
			t.Errorf("readyz = %d after restart", r.StatusCode)
		}
	})
	t.Run("authorize with redis down: 503 page", func(t *testing.T) {
		rs := redistest.StartServer(t)
		st, err := sessions.NewRedis(sessions.RedisConfig{Addrs: []string{rs.Addr}, Timeout: redisFaultTimeout})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		h := newHarness(t, harnessOpts{up: dpopUp, store: st})
		rs.Stop()
		resp, _ := get(t, h.browser(), h.authorizeURL(nil))
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("status %d", resp.StatusCode)
		}
		wantFail(t, h, codeStoreUnavailable)
		if h.up.Stats.AuthorizeRequests.Load() != 0 {
			t.Error("browser sent upstream without a stored transaction")
		}
	})
}

func TestRedisEndToEnd(t *testing.T) {
	st, err := sessions.NewRedis(sessions.RedisConfig{Addrs: []string{redistest.Start(t)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	h := newHarness(t, harnessOpts{up: dpopUp, store: st})
	q := h.login()
	status, body, _ := h.token(h.codeForm(q.Get("code")), true)
	if status != http.StatusOK || body["id_token"] == nil {
		t.Fatalf("token: %d %v", status, body)
	}
	if ev := h.lastEventOf("s"); ev.Details["dpop_returned_from_upstream"] != true {
		t.Fatalf("event = %+v", ev)
	}
}

func TestErrorPageLinksBackToAKnownWebApp(t *testing.T) {
	client := &config.Client{ClientID: "app", Name: "Test App", RedirectURIs: []string{"https://app.example/cb?x=1", "com.example.app:/cb"}}
	tests := []struct {
		name, redirectURI string
		want              *pageLink
	}{
		{name: "a registered web redirect URI: its origin", redirectURI: "https://app.example/cb?x=1", want: &pageLink{URL: "https://app.example/", Text: "Back to Test App"}},
		{name: "a native app's scheme: no link", redirectURI: "com.example.app:/cb"},
		{name: "a URI no longer registered: no link", redirectURI: "https://evil.example/cb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := appHomeLink(client, tt.redirectURI); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("appHomeLink = %+v, want %+v", got, tt.want)
			}
		})
	}
}
