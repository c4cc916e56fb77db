package broker

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/sessions/redistest"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

const consoleTestToken = "console-break-glass-token-0123456789abcdef"

// consoleHarness is a broker whose console admits the demo IdP's user alice by user id, with a
// management token for break-glass sign-in.
func consoleHarness(t *testing.T, mut func(*config.Config)) *harness {
	t.Helper()
	return newHarness(t, harnessOpts{dpopAlg: "-", mutate: func(c *config.Config) {
		c.Console.Admins = []config.ConsoleAdmin{{UserID: "oidc|corp|alice"}}
		c.Console.Connection = "corp"
		c.Management.Tokens = []config.ManagementToken{{Name: "ops", Token: consoleTestToken, Scopes: []string{config.ScopeReadConnections}}}
		if mut != nil {
			mut(c)
		}
	}})
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// consoleCSRF returns the CSRF token of a console page.
func consoleCSRF(t *testing.T, body string) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no CSRF field on the page:\n%s", body)
	}
	return m[1]
}

// consoleSignIn signs browser in through the broker and returns the console home page.
func (h *harness) consoleSignIn(browser *http.Client) (*http.Response, string) {
	h.t.Helper()
	return get(h.t, browser, h.srv.URL+"/console/login")
}

// consoleTokenSignInAs posts token to base's break-glass form as the sign-in page would:
// with the page's pre-session CSRF token (and its cookie), Sec-Fetch-Site site.
func consoleTokenSignInAs(t *testing.T, browser *http.Client, base, token, site string) (*http.Response, string) {
	t.Helper()
	_, page := get(t, browser, base+"/console/signin")
	return postForm(t, browser, base+"/console/login/token", url.Values{"token": {token}, "csrf": {consoleCSRF(t, page)}}, site)
}

// postForm posts form from browser (as the console's own page would: same origin).
func postForm(t *testing.T, browser *http.Client, u string, form url.Values, site string) (*http.Response, string) {
	t.Helper()
	return postFormFrom(t, browser, u, form, site, "")
}

// postFormFrom is postForm with an Origin header (none when origin is "").
func postFormFrom(t *testing.T, browser *http.Client, u string, form url.Values, site, origin string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if site != "" {
		req.Header.Set("Sec-Fetch-Site", site)
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := browser.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// consoleEvent returns the newest sapi/fapi event whose details.console.action is action.
func (h *harness) consoleEventOf(typ, action string) logs.Event {
	h.t.Helper()
	evs, err := h.events.Recent(context.Background(), "", 50)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, ev := range evs {
		if c, _ := ev.Details["console"].(map[string]any); ev.Type == typ && c["action"] == action {
			return ev
		}
	}
	h.t.Fatalf("no %s event with console action %s", typ, action)
	return logs.Event{}
}

func eventUser(ev logs.Event) any {
	req, _ := ev.Details["request"].(map[string]any)
	auth, _ := req["auth"].(map[string]any)
	return auth["user"]
}

func TestConsoleAdminSignsInThroughTheBroker(t *testing.T) {
	tests := []struct {
		name  string
		admin config.ConsoleAdmin
	}{
		{name: "by user id", admin: config.ConsoleAdmin{UserID: "oidc|corp|alice"}},
		{name: "by verified email, case-insensitively", admin: config.ConsoleAdmin{Email: "Alice@Example.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := consoleHarness(t, func(c *config.Config) { c.Console.Admins = []config.ConsoleAdmin{tt.admin} })
			resp, body := h.consoleSignIn(h.browser())
			if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/console/" || !strings.Contains(body, "oidc|corp|alice") {
				t.Fatalf("sign-in ended at %s with %d:\n%s", resp.Request.URL, resp.StatusCode, body)
			}
			if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
				t.Errorf("CSP = %q, want scripts from the console's assets only", csp)
			}
			ev := h.consoleEventOf(logs.TypeSuccessAPI, "sign_in")
			if eventUser(ev) != "oidc|corp|alice" {
				t.Errorf("sign-in event names %v, want the operator", eventUser(ev))
			}
			if s := h.lastEventOf(logs.TypeSuccessLogin); s.ClientID != config.ConsoleClientID {
				t.Errorf("the login's s event names client %q, want the console's built-in client", s.ClientID)
			}
		})
	}
}

func TestConsoleRefusesNonAdmins(t *testing.T) {
	tests := []struct {
		name   string
		admins []config.ConsoleAdmin
	}{
		{name: "another user id", admins: []config.ConsoleAdmin{{UserID: "oidc|corp|bob"}}},
		{name: "email rule of another address", admins: []config.ConsoleAdmin{{Email: "bob@example.com"}}},
		{name: "group the user is not in", admins: []config.ConsoleAdmin{{Group: "broker-admins", Claim: groupsClaim}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := consoleHarness(t, func(c *config.Config) { c.Console.Admins = tt.admins })
			browser := h.browser()
			resp, body := h.consoleSignIn(browser)
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "not a console administrator") {
				t.Fatalf("non-admin got %d at %s:\n%s", resp.StatusCode, resp.Request.URL, body)
			}
			ev := h.consoleEventOf(logs.TypeFailedAPI, "refused")
			if eventUser(ev) != "oidc|corp|alice" {
				t.Errorf("refusal event names %v, want the user who tried", eventUser(ev))
			}
			resp, _ = get(t, browser, h.srv.URL+"/console/connections")
			if resp.Request.URL.Path != "/console/signin" {
				t.Errorf("after the refusal the console answered %s, want the sign-in page", resp.Request.URL)
			}
		})
	}
}

func TestConsoleAdminByGroupClaim(t *testing.T) {
	tests := []struct {
		name   string
		claims map[string]any
		admit  bool
	}{
		{name: "value in an array claim", claims: map[string]any{"groups": []any{"staff", "broker-admins"}}, admit: true},
		{name: "value as a string claim", claims: map[string]any{"groups": "broker-admins"}, admit: true},
		{name: "other groups", claims: map[string]any{"groups": []any{"staff"}}},
		{name: "unverified email does not count", claims: map[string]any{"email": "ops@example.com", "email_verified": false}},
		{name: "claim of another type", claims: map[string]any{"groups": map[string]any{"broker-admins": true}}},
	}
	s := &Server{cfg: &config.Config{Console: config.Console{Connection: "corp", Admins: []config.ConsoleAdmin{{Group: "broker-admins", Claim: "groups"}, {Email: "ops@example.com"}}}}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := s.consoleAdmin("corp", tt.claims); got != tt.admit {
				t.Errorf("consoleAdmin(%v) = %v, want %v", tt.claims, got, tt.admit)
			}
		})
	}
}

func TestConsoleBreakGlassToken(t *testing.T) {
	tests := []struct {
		name       string
		token      string
		wantStatus int
		wantPath   string
	}{
		{name: "the management token opens the console", token: consoleTestToken, wantStatus: http.StatusOK, wantPath: "/console/"},
		{name: "a wrong token is refused", token: consoleTestToken + "x", wantStatus: http.StatusUnauthorized, wantPath: "/console/login/token"},
		{name: "no token is refused", token: "", wantStatus: http.StatusUnauthorized, wantPath: "/console/login/token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := consoleHarness(t, nil)
			resp, body := consoleTokenSignInAs(t, h.browser(), h.srv.URL, tt.token, "same-origin")
			if resp.StatusCode != tt.wantStatus || resp.Request.URL.Path != tt.wantPath {
				t.Fatalf("got %d at %s, want %d at %s:\n%s", resp.StatusCode, resp.Request.URL.Path, tt.wantStatus, tt.wantPath, body)
			}
			if strings.Contains(body, consoleTestToken) {
				t.Error("the page shows the management token")
			}
			typ := logs.TypeSuccessAPI
			action := "sign_in"
			if tt.wantStatus != http.StatusOK {
				typ, action = logs.TypeFailedAPI, "refused"
			}
			ev := h.consoleEventOf(typ, action)
			if tt.wantStatus == http.StatusOK && eventUser(ev) != "token:ops" {
				t.Errorf("event names %v, want token:ops", eventUser(ev))
			}
		})
	}
}

func TestConsoleWritesNeedTheSessionsCSRFTokenFromTheSameOrigin(t *testing.T) {
	tests := []struct {
		name       string
		csrf       func(real string) string
		site       string
		origin     string
		wantStatus int
	}{
		{name: "the session's token from the console itself", csrf: func(r string) string { return r }, site: "same-origin", wantStatus: http.StatusOK},
		{name: "no token", csrf: func(string) string { return "" }, site: "same-origin", wantStatus: http.StatusForbidden},
		{name: "a wrong token", csrf: func(r string) string { return r + "x" }, site: "same-origin", wantStatus: http.StatusForbidden},
		{name: "the right token from another site", csrf: func(r string) string { return r }, site: "cross-site", wantStatus: http.StatusForbidden},
		{name: "the right token from another Origin", csrf: func(r string) string { return r }, origin: "https://attacker.example", wantStatus: http.StatusForbidden},
		{name: "the right token with an opaque Origin", csrf: func(r string) string { return r }, site: "same-origin", origin: "null", wantStatus: http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := consoleHarness(t, nil)
			browser := h.browser()
			_, home := h.consoleSignIn(browser)
			resp, body := postFormFrom(t, browser, h.srv.URL+"/console/signout", url.Values{"csrf": {tt.csrf(consoleCSRF(t, home))}}, tt.site, tt.origin)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("sign-out answered %d, want %d:\n%s", resp.StatusCode, tt.wantStatus, body)
			}
			resp, _ = get(t, browser, h.srv.URL+"/console/")
			signedOut := resp.Request.URL.Path == "/console/signin"
			if signedOut != (tt.wantStatus == http.StatusOK) {
				t.Errorf("after the sign-out attempt the console is at %s", resp.Request.URL.Path)
			}
		})
	}
}

func TestConsoleSessionsAreShortLived(t *testing.T) {
	h := consoleHarness(t, func(c *config.Config) { c.Console.SessionLifetime = 10 * time.Minute })
	browser := h.browser()
	if resp, _ := h.consoleSignIn(browser); resp.Request.URL.Path != "/console/" {
		t.Fatalf("sign-in ended at %s", resp.Request.URL)
	}
	h.clock.Advance(11 * time.Minute)
	if resp, _ := get(t, browser, h.srv.URL+"/console/"); resp.Request.URL.Path != "/console/signin" {
		t.Errorf("an expired console session still opens %s", resp.Request.URL.Path)
	}
}

// consoleToCallback starts a console sign-in through the broker in browser and follows it
// until the upstream sends the browser back to /console/callback; it returns that URL (not
// fetched), the sign-in cookie set in browser.
func consoleToCallback(t *testing.T, h *harness, browser *http.Client) string {
	t.Helper()
	stop := *browser
	var callback string
	stop.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
		if req.URL.Path == "/console/callback" {
			callback = req.URL.String()
			return http.ErrUseLastResponse
		}
		return nil
	}
	resp, _ := get(t, &stop, h.srv.URL+"/console/login")
	if callback == "" {
		t.Fatalf("the sign-in never reached the console's callback (%d at %s)", resp.StatusCode, resp.Request.URL)
	}
	return callback
}

func TestConsoleCallbackRefusesForeignOrReplayedSignIns(t *testing.T) {
	h := consoleHarness(t, nil)
	browser := h.browser()
	callback := consoleToCallback(t, h, browser)
	tests := []struct {
		name   string
		client *http.Client
		url    string
	}{
		{name: "another browser (no sign-in cookie)", client: h.browser(), url: callback},
		{name: "a changed state", client: browser, url: strings.Replace(callback, "state=", "state=x", 1)},
		{name: "the same callback again", client: browser, url: callback},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := get(t, tt.client, tt.url)
			if resp.StatusCode != http.StatusBadRequest || resp.Request.URL.Path != "/console/callback" {
				t.Fatalf("got %d at %s:\n%s", resp.StatusCode, resp.Request.URL, body)
			}
		})
	}
}

func TestAdminListenCarriesTheConsoleMetricsAndManagementAPIOnlyAndBothServeHealth(t *testing.T) {
	h := consoleHarness(t, func(c *config.Config) {
		c.AdminListen = "127.0.0.1:0"
		c.Console.URL = "http://127.0.0.1:9/console"
	})
	admin := httptest.NewServer(h.broker.AdminHandler())
	t.Cleanup(admin.Close)
	tests := []struct {
		name      string
		path      string
		public    bool // served on listen
		adminSide bool // served on admin_listen
	}{
		{name: "console", path: "/console/signin", adminSide: true},
		{name: "console asset", path: "/console/assets/console.css", adminSide: true},
		{name: "metrics", path: "/metrics", adminSide: true},
		{name: "management API", path: "/api/v2/connections", adminSide: true},
		{name: "discovery", path: "/.well-known/openid-configuration", public: true},
		{name: "authorize", path: "/authorize", public: true},
		{name: "health", path: "/healthz", public: true, adminSide: true},
		{name: "readiness", path: "/readyz", public: true, adminSide: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, side := range []struct {
				base   string
				served bool
			}{{h.srv.URL, tt.public}, {admin.URL, tt.adminSide}} {
				resp, _ := get(t, noRedirect(h.client()), side.base+tt.path)
				if got := resp.StatusCode != http.StatusNotFound; got != side.served {
					t.Errorf("%s%s answered %d, want served=%v", side.base, tt.path, resp.StatusCode, side.served)
				}
			}
		})
	}
	if h.broker.Handler() == nil {
		t.Fatal("no public handler")
	}
}

func TestAdminPathsAreWholePathSegments(t *testing.T) {
	tests := []struct {
		name, prefix, path string
		admin              bool
	}{
		{name: "console root", path: "/console", admin: true},
		{name: "below the console", path: "/console/connections", admin: true},
		{name: "a longer first segment", path: "/consolex"},
		{name: "metrics", path: "/metrics", admin: true},
		{name: "metrics lookalike", path: "/metrics2"},
		{name: "management API", path: "/api/v2/logs", admin: true},
		{name: "another API version", path: "/api/v3/logs"},
		{name: "below the public URL's path", prefix: "/broker", path: "/broker/console/", admin: true},
		{name: "outside the public URL's path", prefix: "/broker", path: "/console/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := isAdminPath(tt.prefix, tt.path); got != tt.admin {
				t.Errorf("isAdminPath(%q, %q) = %v, want %v", tt.prefix, tt.path, got, tt.admin)
			}
		})
	}
}

func TestWithoutAdminListenEverythingStaysOnListen(t *testing.T) {
	h := consoleHarness(t, nil)
	if h.broker.AdminHandler() != nil {
		t.Error("AdminHandler without admin_listen is not nil")
	}
	for _, p := range []string{"/console/signin", "/metrics", "/authorize"} {
		if resp, _ := get(t, noRedirect(h.client()), h.srv.URL+p); resp.StatusCode == http.StatusNotFound {
			t.Errorf("%s is not served on listen", p)
		}
	}
}

func TestConsoleSessionRecordHoldsNoCookieValue(t *testing.T) {
	h := consoleHarness(t, nil)
	browser := h.browser()
	h.consoleSignIn(browser)
	u, _ := url.Parse(h.srv.URL + "/console/")
	var secret string
	for _, c := range browser.Jar.Cookies(u) {
		if c.Name == consoleCookie {
			secret = c.Value
		}
	}
	if secret == "" {
		t.Fatal("no console cookie")
	}
	if _, err := h.store.Get(context.Background(), sessions.KindConsole, secret); err == nil {
		t.Error("the console session is stored under the cookie's value")
	}
	if _, err := h.store.Get(context.Background(), sessions.KindConsole, consoleRecordID("s.", secret)); err != nil {
		t.Errorf("the console session is not stored under the cookie's hash: %v", err)
	}
}

func TestConsoleAdminByUpstreamGroupClaimEndToEnd(t *testing.T) {
	h := newHarness(t, harnessOpts{dpopAlg: "-", up: demoidp.Options{Claims: map[string]any{"groups": []any{"staff", "broker-admins"}}},
		mutate: func(c *config.Config) {
			c.Console.Admins = []config.ConsoleAdmin{{Group: "broker-admins", Claim: groupsClaim}}
			c.Console.Connection = "corp"
			c.Connections[0].Options.AttributeMap = &config.AttributeMap{MappingMode: "use_map", Attributes: config.ClaimTemplates{
				groupsClaim: "${context.tokenset.id_token.groups}",
			}}
		}})
	resp, body := h.consoleSignIn(h.browser())
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/console/" {
		t.Fatalf("a member of the admin group got %d at %s:\n%s", resp.StatusCode, resp.Request.URL, body)
	}
}

func TestConsoleCookiesFollowTheSchemeBrowsersUse(t *testing.T) {
	tests := []struct {
		name        string
		issuer      string
		adminListen string
		consoleURL  string
		tls         bool
		wantName    string
		wantSecure  bool
	}{
		{name: "https public URL, console on listen", issuer: "https://broker.example/", wantName: hostPrefix + consoleCookie, wantSecure: true},
		{name: "http loopback public URL", issuer: "http://127.0.0.1:8080/", wantName: consoleCookie},
		{name: "https console.url on admin_listen", issuer: "http://127.0.0.1:8080/", adminListen: "127.0.0.1:9090", consoleURL: "https://admin.example/console", wantName: hostPrefix + consoleCookie, wantSecure: true},
		{name: "admin_listen without console.url, plain http", issuer: "https://broker.example/", adminListen: "127.0.0.1:9090", wantName: consoleCookie},
		{name: "admin_listen without console.url, over TLS", issuer: "https://broker.example/", adminListen: "127.0.0.1:9090", tls: true, wantName: hostPrefix + consoleCookie, wantSecure: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Server{cfg: &config.Config{Issuer: tt.issuer, AdminListen: tt.adminListen, Console: config.Console{URL: tt.consoleURL}}, base: strings.TrimSuffix(tt.issuer, "/")}
			r := httptest.NewRequest(http.MethodGet, "/console/", nil)
			if tt.tls {
				r = httptest.NewRequest(http.MethodGet, "https://admin.example/console/", nil)
			}
			c := s.consoleCookieFor(r, consoleCookie, "v", 60)
			if c.Name != tt.wantName || c.Secure != tt.wantSecure || !c.HttpOnly {
				t.Errorf("cookie %s Secure=%v HttpOnly=%v, want %s Secure=%v HttpOnly", c.Name, c.Secure, c.HttpOnly, tt.wantName, tt.wantSecure)
			}
		})
	}
}

func TestConsoleSessionOnRedisServesEveryReplica(t *testing.T) {
	st, err := sessions.NewRedis(sessions.RedisConfig{Addrs: []string{redistest.Start(t)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	h := newHarness(t, harnessOpts{dpopAlg: "-", store: st, mutate: func(c *config.Config) {
		c.Console.Admins = []config.ConsoleAdmin{{UserID: "oidc|corp|alice"}}
		c.Console.Connection = "corp"
	}})
	browser := h.browser()
	if resp, body := h.consoleSignIn(browser); resp.Request.URL.Path != "/console/" {
		t.Fatalf("sign-in on Redis ended at %s:\n%s", resp.Request.URL, body)
	}
	b2, err := New(h.cfg, Deps{Store: st, Events: h.events, Now: h.clock.Now, Keys: h.broker.keys})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b2.Close)
	srv2 := httptest.NewServer(b2.Handler())
	t.Cleanup(srv2.Close)
	// The cookie is host-only on 127.0.0.1, which both replicas share (ports do not count).
	resp, body := get(t, browser, srv2.URL+"/console/connections")
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/console/connections" || !strings.Contains(body, "oidc|corp|alice") {
		t.Fatalf("replica 2 answered %d at %s:\n%s", resp.StatusCode, resp.Request.URL, body)
	}
}

// TestConsolePagesNameTheirIcon: every console page links an embedded icon, served under the
// console's policy, so browsers do not ask for /favicon.ico (a 404 in every page's log).
func TestConsolePagesNameTheirIcon(t *testing.T) {
	h := consoleHarness(t, nil)
	browser := h.browser()
	_, signin := get(t, browser, h.srv.URL+"/console/signin")
	home := consoleTokenSignIn(t, browser, h.srv.URL)
	for name, page := range map[string]string{"sign-in page": signin, "home": home} {
		if !strings.Contains(page, `<link rel="icon" href="/console/assets/favicon.svg" type="image/svg+xml">`) {
			t.Errorf("the %s links no icon", name)
		}
	}
	resp, body := get(t, browser, h.srv.URL+"/console/assets/favicon.svg")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "image/svg+xml" || !strings.HasPrefix(body, "<svg") ||
		!strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Errorf("the icon: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Security-Policy"))
	}
}
