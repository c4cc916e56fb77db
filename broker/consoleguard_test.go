package broker

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
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
