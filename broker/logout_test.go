package broker

import (
	"html"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
)

// logoutLogin logs alice in through the confidential app in a fresh browser and returns the
// browser (with the broker's session cookie), the ID token and the access token.
func (h *harness) logoutLogin(t testing.TB) (*http.Client, string, string) {
	t.Helper()
	b := h.browser()
	resp, _ := get(t, b, h.authorizeURL(nil))
	code := appResult(t, resp, h.app.URL+"/cb").Get("code")
	status, body, _ := h.token(h.codeForm(code), true)
	idt, _ := body["id_token"].(string)
	at, _ := body["access_token"].(string)
	if status != http.StatusOK || idt == "" || at == "" {
		t.Fatalf("token: %d %v", status, body)
	}
	return b, idt, at
}

// sessionAlive reports whether the session behind at still exists (/userinfo answers 200).
func (h *harness) sessionAlive(t *testing.T, at string) bool {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+at)
	return h.do(req).status == http.StatusOK
}

// formFields reads the hidden fields of the page's form.
func formFields(t *testing.T, body string) url.Values {
	t.Helper()
	f := url.Values{}
	for _, m := range regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`).FindAllStringSubmatch(body, -1) {
		f.Set(m[1], html.UnescapeString(m[2]))
	}
	return f
}

// noRedirects is c without following redirects (the response itself is checked).
func noRedirects(c *http.Client) *http.Client {
	n := *c
	n.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &n
}

// TestOIDCLogout covers OpenID Connect RP-Initiated Logout 1.0 at /oidc/logout (the
// discovery end_session_endpoint) and the identity SaaS's /v2/logout rules.
func TestOIDCLogout(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp, mutate: func(c *config.Config) {
		app := strings.TrimSuffix(c.Clients[0].RedirectURIs[0], "/cb")
		c.Clients[0].PostLogoutRedirectURIs = []string{app + "/bye", app + "/bye2"}
	}})
	bye := h.app.URL + "/bye"
	if doc := h.broker.discoveryDocument(); doc["end_session_endpoint"] != h.srv.URL+"/oidc/logout" {
		t.Errorf("end_session_endpoint = %v", doc["end_session_endpoint"])
	}
	type outcome struct {
		status   int
		location string // redirect target ("" = a page)
		event    string // slo or flo
		ended    bool   // the session behind the access token is gone
	}
	for _, tc := range []struct {
		name   string
		params func(idt, sid string) url.Values
		cookie bool // send the browser's session cookie
		post   bool
		want   outcome
	}{
		{name: "RP-Initiated §2 id_token_hint, registered post_logout_redirect_uri and state: redirect with state", params: func(idt, _ string) url.Values {
			return url.Values{"id_token_hint": {idt}, "post_logout_redirect_uri": {bye}, "state": {"s-1"}}
		}, cookie: true, post: false, want: outcome{status: 302, location: bye + "?state=s-1", event: "slo", ended: true}},
		{name: "RP-Initiated §2 client_id without id_token_hint: the user is asked first (nothing ends yet)", params: func(_, _ string) url.Values {
			return url.Values{"client_id": {appClient}, "post_logout_redirect_uri": {bye}}
		}, cookie: true, post: false, want: outcome{status: 200, location: "", event: "seacft", ended: false}},
		{name: "RP-Initiated §2 no parameters: the user is asked first", params: func(_, _ string) url.Values { return url.Values{} },
			cookie: true, post: false, want: outcome{status: 200, location: "", event: "seacft", ended: false}},
		{name: "RP-Initiated §2 a forged confirmation is asked again", params: func(_, _ string) url.Values {
			return url.Values{"client_id": {appClient}, "post_logout_redirect_uri": {bye}, "confirm": {"forged"}}
		}, cookie: true, post: true, want: outcome{status: 200, location: "", event: "seacft", ended: false}},
		{name: "no session in this browser and no parameters: signed-out page, nothing to ask", params: func(_, _ string) url.Values { return url.Values{} },
			cookie: false, post: false, want: outcome{status: 200, location: "", event: "seacft", ended: false}},
		{name: "POST with id_token_hint alone and no cookie: the hint's session (sid) ends", params: func(idt, _ string) url.Values {
			return url.Values{"id_token_hint": {idt}}
		}, cookie: false, post: true, want: outcome{status: 200, location: "", event: "slo", ended: true}},
		{name: "logout_hint equal to the hint's sid", params: func(idt, sid string) url.Values {
			return url.Values{"id_token_hint": {idt}, "logout_hint": {sid}, "post_logout_redirect_uri": {bye}}
		}, cookie: true, post: false, want: outcome{status: 302, location: bye, event: "slo", ended: true}},
		{name: "post_logout_redirect_uri not registered (same origin): refused, session kept", params: func(idt, _ string) url.Values {
			return url.Values{"id_token_hint": {idt}, "post_logout_redirect_uri": {h.app.URL + "/elsewhere"}}
		}, cookie: true, post: false, want: outcome{status: 400, location: "", event: "flo", ended: false}},
		{name: "post_logout_redirect_uri without id_token_hint or client_id: refused", params: func(_, _ string) url.Values {
			return url.Values{"post_logout_redirect_uri": {bye}}
		}, cookie: true, post: false, want: outcome{status: 400, location: "", event: "flo", ended: false}},
		{name: "client_id is not the hint's audience: refused", params: func(idt, _ string) url.Values {
			return url.Values{"id_token_hint": {idt}, "client_id": {spaClient}}
		}, cookie: true, post: false, want: outcome{status: 400, location: "", event: "flo", ended: false}},
		{name: "tampered id_token_hint: refused", params: func(idt, _ string) url.Values {
			return url.Values{"id_token_hint": {idt[:len(idt)-4] + "AAAA"}}
		}, cookie: true, post: false, want: outcome{status: 400, location: "", event: "flo", ended: false}},
		{name: "logout_hint of another session: refused", params: func(idt, _ string) url.Values {
			return url.Values{"id_token_hint": {idt}, "logout_hint": {"someone-else"}}
		}, cookie: true, post: false, want: outcome{status: 400, location: "", event: "flo", ended: false}},
		{name: "repeated state: refused", params: func(_, _ string) url.Values { return url.Values{"state": {"a", "b"}} },
			cookie: true, post: false, want: outcome{status: 400, location: "", event: "flo", ended: false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, idt, at := h.logoutLogin(t)
			sid, _ := claimsOf(t, idt)["sid"].(string)
			if !tc.cookie {
				b.Jar, _ = cookiejar.New(nil)
			}
			p := tc.params(idt, sid)
			var resp *http.Response
			var err error
			if tc.post {
				resp, err = noRedirects(b).PostForm(h.srv.URL+"/oidc/logout", p)
			} else {
				resp, err = noRedirects(b).Get(h.srv.URL + "/oidc/logout?" + p.Encode())
			}
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			got := outcome{status: resp.StatusCode, location: resp.Header.Get("Location"), event: h.lastEvent().Type, ended: !h.sessionAlive(t, at)}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			if got.event == "flo" && h.lastEvent().Details["error"] != "invalid_request" {
				t.Errorf("flo details = %v", h.lastEvent().Details)
			}
		})
	}

	// §2: the user confirms: the form's POST (with the token derived from the session cookie)
	// ends the session and goes on to the registered post_logout_redirect_uri with the state.
	t.Run("RP-Initiated §2 the confirmation form signs out", func(t *testing.T) {
		b, _, at := h.logoutLogin(t)
		resp, body := get(t, noRedirects(b), h.srv.URL+"/oidc/logout?"+url.Values{
			"client_id": {appClient}, "post_logout_redirect_uri": {bye}, "state": {"s-2"}}.Encode())
		form := formFields(t, body)
		if resp.StatusCode != http.StatusOK || form.Get("confirm") == "" || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
			t.Fatalf("confirmation page: %d %v %q", resp.StatusCode, form, resp.Header.Get("Content-Security-Policy"))
		}
		resp, err := noRedirects(b).PostForm(h.srv.URL+"/oidc/logout", form)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != bye+"?state=s-2" || h.lastEvent().Type != "slo" || h.sessionAlive(t, at) {
			t.Errorf("after confirming: %d %q %s", resp.StatusCode, resp.Header.Get("Location"), h.lastEvent().Type)
		}
	})

	// §2: an expired ID token is still a valid hint.
	t.Run("expired id_token_hint accepted", func(t *testing.T) {
		b, idt, _ := h.logoutLogin(t)
		h.clock.Advance(h.cfg.Lifetimes.IDToken + time.Hour)
		resp, err := noRedirects(b).Get(h.srv.URL + "/oidc/logout?" + url.Values{"id_token_hint": {idt}, "post_logout_redirect_uri": {bye}}.Encode())
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != bye || h.lastEvent().Type != "slo" {
			t.Errorf("got %d %q %s", resp.StatusCode, resp.Header.Get("Location"), h.lastEvent().Type)
		}
	})

	// /v2/logout with Allowed Logout URLs (the identity SaaS's rules): returnTo must be one of them; client_id alone
	// goes to the first.
	for _, tc := range []struct {
		name, query, location string
	}{
		{name: "v2 returnTo in the allowed list", query: "client_id=" + appClient + "&returnTo=" + url.QueryEscape(h.app.URL+"/bye2"), location: h.app.URL + "/bye2"},
		{name: "v2 returnTo on the app's origin but not listed: no redirect", query: "client_id=" + appClient + "&returnTo=" + url.QueryEscape(h.app.URL+"/x"), location: ""},
		{name: "v2 client_id without returnTo: the first allowed URL", query: "client_id=" + appClient, location: bye},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := noRedirects(h.browser()).Get(h.srv.URL + "/v2/logout?" + tc.query)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.Header.Get("Location") != tc.location {
				t.Errorf("Location %q, want %q", resp.Header.Get("Location"), tc.location)
			}
		})
	}
}

// TestFederatedLogout: with federated the broker ends its session, sends the
// browser to the upstream's end_session_endpoint with the upstream ID token as id_token_hint,
// and on its way back (/logout/federated) on to the app's registered URL. An upstream without
// end_session_endpoint gets federated_logout_failed and the broker's own logout stands.
func TestFederatedLogout(t *testing.T) {
	for _, tc := range []struct {
		name         string
		noEndSession bool
		path         func(h *harness, bye string) string
		wantFinal    string // the app URL the browser ends at, relative to the app
		confirm      bool   // the broker asks the user first (no id_token_hint on /oidc/logout)
	}{
		{name: "v2 federated with returnTo: confirmed by the user, then through the upstream", noEndSession: false, path: func(h *harness, bye string) string {
			return "/v2/logout?federated&client_id=" + appClient + "&returnTo=" + url.QueryEscape(bye)
		}, wantFinal: "/bye", confirm: true},
		{name: "oidc federated with id_token_hint and state", noEndSession: false, path: nil, wantFinal: "/bye?state=s-9", confirm: false},
		{name: "oidc federated without a hint: confirmed by the user, then through the upstream", noEndSession: false, path: func(h *harness, bye string) string {
			return "/oidc/logout?federated&client_id=" + appClient + "&post_logout_redirect_uri=" + url.QueryEscape(bye)
		}, wantFinal: "/bye", confirm: true},
		{name: "upstream without end_session_endpoint: federated_logout_failed, local logout stands", noEndSession: true, path: func(h *harness, bye string) string {
			return "/v2/logout?federated&client_id=" + appClient + "&returnTo=" + url.QueryEscape(bye)
		}, wantFinal: "/bye", confirm: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := dpopUp
			up.NoEndSession = tc.noEndSession
			h := newHarness(t, harnessOpts{up: up, mutate: func(c *config.Config) {
				c.Clients[0].PostLogoutRedirectURIs = []string{strings.TrimSuffix(c.Clients[0].RedirectURIs[0], "/cb") + "/bye"}
			}})
			bye := h.app.URL + "/bye"
			b, idt, at := h.logoutLogin(t)
			path := h.srv.URL + "/oidc/logout?" + url.Values{"id_token_hint": {idt}, "post_logout_redirect_uri": {bye}, "state": {"s-9"}, "federated": {""}}.Encode()
			if tc.path != nil {
				path = h.srv.URL + tc.path(h, bye)
			}
			resp, body := get(t, b, path)
			form := formFields(t, body)
			if asked := form.Get("confirm") != ""; asked != tc.confirm {
				t.Fatalf("confirmation asked: %v, want %v", asked, tc.confirm)
			}
			if tc.confirm { // the user confirms (§2) on the endpoint that asked
				endpoint, _, _ := strings.Cut(path, "?")
				r, err := b.PostForm(endpoint, form)
				if err != nil {
					t.Fatal(err)
				}
				_ = r.Body.Close()
				resp = r
			}
			if got := resp.Request.URL.String(); got != h.app.URL+tc.wantFinal {
				t.Fatalf("browser ended at %s, want %s", got, h.app.URL+tc.wantFinal)
			}
			if h.sessionAlive(t, at) {
				t.Error("the broker session is still alive")
			}
			ends := h.up.Stats.EndSessions.Load()
			if tc.noEndSession {
				if ends != 0 || h.lastEvent().Type != "federated_logout_failed" || h.lastEvent().Details["error"] != "federated_logout_unsupported" {
					t.Errorf("end sessions %d, last event %+v", ends, h.lastEvent())
				}
				return
			}
			if ends != 1 {
				t.Errorf("upstream end_session calls = %d, want 1 (with its own ID token as hint)", ends)
			}
			if h.lastEventOf("slo").UserID == "" {
				t.Error("no slo event")
			}
		})
	}
	t.Run("a hint sent from another browser ends the session but never goes upstream", func(t *testing.T) {
		h := newHarness(t, harnessOpts{up: dpopUp, mutate: func(c *config.Config) {
			c.Clients[0].PostLogoutRedirectURIs = []string{strings.TrimSuffix(c.Clients[0].RedirectURIs[0], "/cb") + "/bye"}
		}})
		bye := h.app.URL + "/bye"
		_, idt, at := h.logoutLogin(t)
		other := h.browser() // holds the victim's ID token, not its broker cookie
		path := h.srv.URL + "/oidc/logout?" + url.Values{"id_token_hint": {idt}, "post_logout_redirect_uri": {bye}, "federated": {""}}.Encode()
		resp, _ := get(t, noRedirects(other), path)
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != bye {
			t.Fatalf("got %d Location %q, want a redirect straight to %s", resp.StatusCode, resp.Header.Get("Location"), bye)
		}
		if h.sessionAlive(t, at) {
			t.Error("the hint's session is still alive")
		}
		if ends := h.up.Stats.EndSessions.Load(); ends != 0 {
			t.Errorf("upstream end_session calls = %d, want 0: the upstream ID token must not reach another browser", ends)
		}
		if ev := h.lastEventOf("federated_logout_failed"); ev.Details["error"] != codeFederatedNotThisBrowser {
			t.Errorf("event %+v, want federated_logout_failed with %s", ev, codeFederatedNotThisBrowser)
		}
	})
	t.Run("unknown state at /logout/federated: signed-out page", func(t *testing.T) {
		h := newHarness(t, harnessOpts{up: dpopUp})
		resp, body := get(t, h.browser(), h.srv.URL+"/logout/federated?state=nope")
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "signed out") {
			t.Errorf("got %d %s", resp.StatusCode, body)
		}
	})
}
