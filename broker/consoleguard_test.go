package broker

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

func TestConsoleEmailAndGroupRulesAdmitOnlyUsersOfTheirConnection(t *testing.T) {
	admins := []config.ConsoleAdmin{
		{Email: "sam@kexample.com", Connection: "corp"},
		{Group: "broker-admins", Claim: "https://example.com/groups"}, // console.connection: corp
		{UserID: "oidc|partner|carol"},
	}
	s := &Server{cfg: &config.Config{Console: config.Console{Connection: "corp", Admins: admins}}}
	verified := func(email string) map[string]any { return map[string]any{"email": email, "email_verified": true} }
	tests := []struct {
		name   string
		conn   string
		claims map[string]any
		admit  bool
	}{
		{name: "verified email on the rule's connection", conn: "corp", claims: verified("sam@kexample.com"), admit: true},
		{name: "ASCII case differences match", conn: "corp", claims: verified("Sam@KExample.COM"), admit: true},
		{name: "the same verified email from another connection", conn: "partner", claims: verified("sam@kexample.com")},
		{name: "long s does not fold to s", conn: "corp", claims: verified("\u017fam@kexample.com")},
		{name: "Kelvin sign does not fold to k", conn: "corp", claims: verified("sam@\u212aexample.com")},
		{name: "group on console.connection", conn: "corp", claims: map[string]any{"https://example.com/groups": []any{"broker-admins"}}, admit: true},
		{name: "the same group from another connection", conn: "partner", claims: map[string]any{"https://example.com/groups": []any{"broker-admins"}}},
		{name: "a user id rule names its own connection", conn: "partner", claims: map[string]any{"sub": "oidc|partner|carol"}, admit: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := s.consoleAdmin(tt.conn, tt.claims); got != tt.admit {
				t.Errorf("consoleAdmin(%q, %v) = %v, want %v", tt.conn, tt.claims, got, tt.admit)
			}
		})
	}
	unscoped := &Server{cfg: &config.Config{Console: config.Console{Admins: []config.ConsoleAdmin{{Email: "sam@kexample.com"}}}}}
	if unscoped.consoleAdmin("corp", verified("sam@kexample.com")) {
		t.Error("an email rule without any connection admits a user")
	}
}

func TestConsoleSessionEndsWhenTheOperatorsBrokerSessionsAreEnded(t *testing.T) {
	h := consoleHarness(t, func(c *config.Config) {
		c.Management.Tokens = append(c.Management.Tokens, config.ManagementToken{Name: "sessions-admin", Token: tokSessions,
			Scopes: []string{config.ScopeReadSessions, config.ScopeDeleteSessions}})
	})
	browser := h.browser()
	if resp, body := h.consoleSignIn(browser); resp.Request.URL.Path != "/console/" {
		t.Fatalf("sign-in ended at %s:\n%s", resp.Request.URL, body)
	}
	if resp, _ := get(t, browser, h.srv.URL+"/console/connections"); resp.Request.URL.Path != "/console/connections" {
		t.Fatalf("before: the console answered %s", resp.Request.URL)
	}
	if r := api(t, h.srv.URL, "DELETE", userSessionsPath("oidc|corp|alice"), tokSessions, nil); r.status != http.StatusAccepted {
		t.Fatalf("DELETE the user's sessions: %d %s", r.status, r.raw)
	}
	if resp, _ := get(t, browser, h.srv.URL+"/console/connections"); resp.Request.URL.Path != "/console/signin" {
		t.Errorf("after the user's sessions were ended the console answered %s, want the sign-in page", resp.Request.URL)
	}
}

// consoleReplica is a second broker on h's store and keys with h's configuration changed by
// mut (a later deployment, or another replica with a newer configuration).
func consoleReplica(t *testing.T, h *harness, mut func(c *config.Config)) string {
	t.Helper()
	cfg := *h.cfg
	mut(&cfg)
	b, err := New(&cfg, Deps{Store: h.store, Events: h.events, Now: h.clock.Now, Keys: h.broker.keys})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	srv := httptest.NewServer(b.Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestConsoleSessionFollowsTheCurrentConfiguration(t *testing.T) {
	tests := []struct {
		name     string
		broker   bool // sign in through the broker, else with the break-glass token
		mut      func(c *config.Config)
		wantPath string
		wantCode int
	}{
		{name: "an operator removed from console.admins is signed out", broker: true,
			mut: func(c *config.Config) { c.Console.Admins = []config.ConsoleAdmin{{UserID: "oidc|corp|bob"}} }, wantPath: "/console/signin", wantCode: http.StatusOK},
		{name: "an operator still in console.admins stays", broker: true,
			mut: func(*config.Config) {}, wantPath: "/console/connections", wantCode: http.StatusOK},
		{name: "a removed management token ends its sessions",
			mut: func(c *config.Config) { c.Management.Tokens = nil }, wantPath: "/console/signin", wantCode: http.StatusOK},
		{name: "a token with the same name but another secret ends its sessions",
			mut: func(c *config.Config) {
				c.Management.Tokens = []config.ManagementToken{{Name: "ops", Token: consoleTestToken + "-rotated", Scopes: []string{config.ScopeReadConnections}}}
			}, wantPath: "/console/signin", wantCode: http.StatusOK},
		{name: "a token's removed scope is removed from its sessions",
			mut: func(c *config.Config) {
				c.Management.Tokens = []config.ManagementToken{{Name: "ops", Token: consoleTestToken, Scopes: []string{config.ScopeReadLogs}}}
			}, wantPath: "/console/connections", wantCode: http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := consoleHarness(t, nil)
			browser := h.browser()
			if tt.broker {
				h.consoleSignIn(browser)
			} else {
				consoleTokenSignIn(t, browser, h.srv.URL)
			}
			base := consoleReplica(t, h, tt.mut)
			resp, body := get(t, browser, base+"/console/connections")
			if resp.Request.URL.Path != tt.wantPath || resp.StatusCode != tt.wantCode {
				t.Errorf("the console answered %d at %s, want %d at %s:\n%s", resp.StatusCode, resp.Request.URL.Path, tt.wantCode, tt.wantPath, body)
			}
		})
	}
}

func TestConsoleTokenSignInNeedsThePreSessionCSRFTokenFromTheSameOrigin(t *testing.T) {
	tests := []struct {
		name       string
		csrf       string // "page" = the sign-in page's token
		site       string
		origin     string // "self" = the console's origin
		wantStatus int
		want       string
	}{
		{name: "the sign-in page's token from the same origin", csrf: "page", site: "same-origin", origin: "self", wantStatus: http.StatusOK},
		{name: "no CSRF token", site: "same-origin", wantStatus: http.StatusForbidden, want: "CSRF"},
		{name: "a CSRF token that is not the cookie's", csrf: "forged-0123456789abcdef0123456789ab", site: "same-origin", wantStatus: http.StatusForbidden, want: "CSRF"},
		{name: "a cross-site form", csrf: "page", site: "cross-site", wantStatus: http.StatusForbidden, want: "cross-site"},
		{name: "another Origin", csrf: "page", origin: "https://attacker.example", wantStatus: http.StatusForbidden, want: "cross-origin"},
		{name: "an opaque Origin from the console's own no-referrer page", csrf: "page", site: "same-origin", origin: "null", wantStatus: http.StatusOK},
		{name: "an opaque Origin from another site", csrf: "page", site: "cross-site", origin: "null", wantStatus: http.StatusForbidden, want: "cross-site"},
		{name: "an opaque Origin without the token", site: "same-origin", origin: "null", wantStatus: http.StatusForbidden, want: "CSRF"},
		{name: "a tossed cookie the form repeats", csrf: "tossed", site: "same-origin", wantStatus: http.StatusForbidden, want: "CSRF"},
		{name: "a tossed cookie shaped like the broker's", csrf: "tossed-shaped", site: "same-origin", wantStatus: http.StatusForbidden, want: "CSRF"},
		// The MAC does not stop a genuine pair the attacker fetched himself: the browser's
		// Sec-Fetch-Site or Origin refuses his form.
		{name: "a genuine pair tossed, from another site", csrf: "tossed-genuine", site: "cross-site", origin: "null", wantStatus: http.StatusForbidden, want: "cross-site"},
		{name: "a genuine pair tossed, from another origin", csrf: "tossed-genuine", origin: "https://attacker.example", wantStatus: http.StatusForbidden, want: "cross-origin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := consoleHarness(t, nil)
			browser := h.browser()
			_, page := get(t, browser, h.srv.URL+"/console/signin")
			form := url.Values{"token": {consoleTestToken}}
			switch tt.csrf {
			case "page":
				form.Set("csrf", consoleCSRF(t, page))
			case "tossed-genuine":
				// The attacker's own visit to the sign-in page, its cookie tossed into the
				// victim's browser and repeated by his form.
				_, attackers := get(t, h.browser(), h.srv.URL+"/console/signin")
				v := consoleCSRF(t, attackers)
				u, _ := url.Parse(h.srv.URL + "/console/")
				browser.Jar.SetCookies(u, []*http.Cookie{{Name: consolePreCookie, Value: v, Path: "/console"}})
				form.Set("csrf", v)
			case "tossed", "tossed-shaped":
				// A sibling host set the cookie to a value it knows, and its form repeats it.
				v := "tossed-0123456789abcdef0123456789abcdef"
				if tt.csrf == "tossed-shaped" {
					v = "0123456789abcdef01234567." + strings.Repeat("A", 43)
				}
				u, _ := url.Parse(h.srv.URL + "/console/")
				browser.Jar.SetCookies(u, []*http.Cookie{{Name: consolePreCookie, Value: v, Path: "/console"}})
				form.Set("csrf", v)
			case "":
			default:
				form.Set("csrf", tt.csrf)
			}
			req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/console/login/token", strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if tt.site != "" {
				req.Header.Set("Sec-Fetch-Site", tt.site)
			}
			switch tt.origin {
			case "self":
				req.Header.Set("Origin", h.srv.URL)
			case "":
			default:
				req.Header.Set("Origin", tt.origin)
			}
			resp, err := browser.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			b := string(raw)
			if resp.StatusCode != tt.wantStatus || !strings.Contains(strings.ToLower(b), strings.ToLower(tt.want)) {
				t.Fatalf("got %d, want %d with %q:\n%s", resp.StatusCode, tt.wantStatus, tt.want, b)
			}
		})
	}
}

func TestConsoleSignInAsksForMaxAgeAndChecksAuthTime(t *testing.T) {
	h := consoleHarness(t, func(c *config.Config) { c.Console.MaxAge = 5 * time.Minute })
	nofollow := h.browser()
	nofollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, _ := get(t, nofollow, h.srv.URL+"/console/login")
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("max_age") != "300" {
		t.Fatalf("the console's authorize request is %s, want max_age=300", resp.Header.Get("Location"))
	}
	now := h.clock.Now()
	for _, tt := range []struct {
		name    string
		claims  map[string]any
		problem string
	}{
		{name: "fresh", claims: map[string]any{"auth_time": float64(now.Add(-time.Minute).Unix())}},
		{name: "older than max_age", claims: map[string]any{"auth_time": float64(now.Add(-10 * time.Minute).Unix())}, problem: "console.max_age"},
		{name: "no auth_time", claims: map[string]any{}, problem: "no auth_time"},
	} {
		if got := h.broker.consoleAuthTimeProblem(tt.claims); !strings.Contains(got, tt.problem) || (tt.problem == "") != (got == "") {
			t.Errorf("%s: consoleAuthTimeProblem = %q, want %q", tt.name, got, tt.problem)
		}
	}
}

func TestConsoleSignInAuthenticatesAgainWhenTheUpstreamSessionIsOlderThanMaxAge(t *testing.T) {
	for _, tt := range []struct {
		name         string
		ignoreMaxAge bool
		wantPath     string
	}{
		{name: "the upstream authenticates again: the console opens", wantPath: "/console/"},
		{name: "an upstream ignoring max_age: its old authentication is refused", ignoreMaxAge: true, wantPath: "/console/callback"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{dpopAlg: "-", up: demoidp.Options{SessionAge: 2 * time.Hour, IgnoreMaxAge: tt.ignoreMaxAge},
				mutate: func(c *config.Config) {
					c.Console.Admins = []config.ConsoleAdmin{{UserID: "oidc|corp|alice"}}
					c.Console.Connection = "corp"
				}})
			resp, body := h.consoleSignIn(h.browser())
			if resp.Request.URL.Path != tt.wantPath {
				t.Fatalf("sign-in ended at %d %s, want %s:\n%s", resp.StatusCode, resp.Request.URL, tt.wantPath, body)
			}
		})
	}
}

// TestConsoleAnswersOnlyAtItsOwnHost: with console.url the console answers at its host only;
// on admin_listen without console.url at a loopback host only, so a DNS-rebinding name (whose
// Origin would match its own Host) cannot reach it, not even with a valid token; the refusal
// page tells the operator to set console.url.
func TestConsoleAnswersOnlyAtItsOwnHost(t *testing.T) {
	tests := []struct {
		name       string
		consoleURL string // "" = none
		host       string // "PORT" is the admin listener's port
		wantStatus int
		want       string
	}{
		{name: "no console.url: 127.0.0.1", host: "127.0.0.1:PORT", wantStatus: http.StatusOK},
		{name: "no console.url: localhost", host: "localhost:PORT", wantStatus: http.StatusOK},
		{name: "no console.url: [::1]", host: "[::1]:PORT", wantStatus: http.StatusOK},
		{name: "no console.url: another loopback address", host: "127.0.0.2:PORT", wantStatus: http.StatusOK},
		{name: "no console.url: localhost without a port", host: "localhost", wantStatus: http.StatusOK},
		{name: "no console.url: a rebinding name", host: "evil.example:PORT", wantStatus: http.StatusMisdirectedRequest, want: "set console.url"},
		{name: "no console.url: a name under localhost", host: "localhost.evil.example:PORT", wantStatus: http.StatusMisdirectedRequest, want: "set console.url"},
		{name: "console.url's host", consoleURL: "http://localhost:PORT/console", host: "LOCALHOST:PORT", wantStatus: http.StatusOK},
		{name: "console.url: another loopback host", consoleURL: "http://localhost:PORT/console", host: "127.0.0.1:PORT", wantStatus: http.StatusMisdirectedRequest, want: "console.url"},
		{name: "console.url: a rebinding name", consoleURL: "http://localhost:PORT/console", host: "evil.example:PORT", wantStatus: http.StatusMisdirectedRequest, want: "console.url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			_, port, _ := net.SplitHostPort(ln.Addr().String())
			h := consoleHarness(t, func(c *config.Config) {
				c.AdminListen = "127.0.0.1:0"
				c.Console.URL = strings.ReplaceAll(tt.consoleURL, "PORT", port)
				if c.Console.URL == "" {
					c.Console.Admins, c.Console.Connection = nil, "" // admins need console.url behind admin_listen
				}
			})
			admin := &httptest.Server{Listener: ln, Config: &http.Server{Handler: h.broker.AdminHandler()}}
			admin.Start()
			t.Cleanup(admin.Close)
			host := strings.ReplaceAll(tt.host, "PORT", port)
			browser := h.browser()
			do := func(method, path string, form url.Values) (*http.Response, string) {
				var body io.Reader
				if form != nil {
					body = strings.NewReader(form.Encode())
				}
				req, _ := http.NewRequest(method, admin.URL+path, body)
				req.Host = host
				if form != nil {
					req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
					req.Header.Set("Origin", "http://"+host)
				}
				resp, err := browser.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp, string(b)
			}
			resp, page := do(http.MethodGet, "/console/signin", nil)
			if resp.StatusCode != tt.wantStatus || !strings.Contains(page, tt.want) {
				t.Fatalf("GET /console/signin for Host %s: %d, want %d with %q:\n%s", host, resp.StatusCode, tt.wantStatus, tt.want, page)
			}
			if want := strings.ReplaceAll(tt.consoleURL, "PORT", port); tt.wantStatus != http.StatusOK && want != "" {
				// The page's links go to console.url, never back to the refused host.
				for _, link := range []string{`href="` + want + `/signin"`, `href="` + want + `/"`} {
					if !strings.Contains(page, link) {
						t.Errorf("the refusal page lacks the link %s", link)
					}
				}
				if regexp.MustCompile(`<a [^>]*href="/console`).MatchString(page) {
					t.Errorf("the refusal page links back to the refused host:\n%s", page)
				}
			}
			if tt.wantStatus != http.StatusOK {
				// The rebinding page cannot sign in with a valid token either (the sign-in
				// page's CSRF value taken from a direct visit).
				_, direct := get(t, browser, admin.URL+"/console/signin")
				csrf := ""
				if m := csrfField.FindStringSubmatch(direct); m != nil {
					csrf = m[1]
				}
				if resp, body := do(http.MethodPost, "/console/login/token", url.Values{"token": {consoleTestToken}, "csrf": {csrf}}); resp.StatusCode != http.StatusMisdirectedRequest {
					t.Fatalf("token sign-in for Host %s: %d at %s\n%s", host, resp.StatusCode, resp.Request.URL, body)
				}
			}
		})
	}
}
