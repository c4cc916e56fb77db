package broker

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// tokConnAdmin may create, update and delete connections: what an attacker holding such a
// token could do to a connection that admits console administrators.
var tokConnAdmin = strings.Repeat("c", 40)

// pinHarness is consoleHarness with a token holding every connection scope.
func pinHarness(t *testing.T, mut func(*config.Config)) *harness {
	t.Helper()
	return consoleHarness(t, func(c *config.Config) {
		c.Management.Tokens = append(c.Management.Tokens, config.ManagementToken{Name: "conn-admin", Token: tokConnAdmin,
			Scopes: []string{config.ScopeReadConnections, config.ScopeCreateConnections, config.ScopeUpdateConnections, config.ScopeDeleteConnections}})
		if mut != nil {
			mut(c)
		}
	})
}

// storeConnection rewrites the stored connection name with change applied, as a write that
// bypassed the management API's checks would (another replica, a restored backup).
func storeConnection(t *testing.T, h *harness, name string, change func(*config.Connection)) {
	t.Helper()
	ctx := context.Background()
	id := config.DeriveConnectionID(name)
	if _, err := h.broker.reg.current(ctx, true); err != nil { // seeds the configured connections
		t.Fatal(err)
	}
	raw, err := h.broker.reg.conns.GetConnection(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var doc storedConnection
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	change(&doc.Connection)
	raw, _ = json.Marshal(doc)
	if err := h.broker.reg.conns.UpdateConnection(ctx, id, raw); err != nil {
		t.Fatal(err)
	}
	if _, err := h.broker.reg.current(ctx, true); err != nil {
		t.Fatal(err)
	}
}

// TestConsoleSignInIsRefusedFromAnUpstreamOtherThanThePinnedOne: a connection that admits
// console administrators, pointed at another IdP where the attacker holds the same sub, no
// longer makes its user an administrator: the sign-in is refused and its event says why.
func TestConsoleSignInIsRefusedFromAnUpstreamOtherThanThePinnedOne(t *testing.T) {
	tests := []struct {
		name    string
		attack  bool
		wantEnd string
	}{
		{name: "the configured upstream", wantEnd: "/console/"},
		{name: "another IdP with the same sub", attack: true, wantEnd: "/console/callback"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := pinHarness(t, nil)
			if tt.attack {
				evil, err := demoidp.Start(demoidp.Options{ClientID: upClientID, ClientSecret: upSecret}) // signs in sub alice too
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(evil.Close)
				storeConnection(t, h, "corp", func(cc *config.Connection) { cc.Options.Issuer = evil.URL })
			}
			resp, body := h.consoleSignIn(h.browser())
			if resp.Request.URL.Path != tt.wantEnd {
				t.Fatalf("the sign-in ended at %d %s, want %s:\n%s", resp.StatusCode, resp.Request.URL, tt.wantEnd, body)
			}
			if !tt.attack {
				return
			}
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "upstream issuer") {
				t.Fatalf("the refusal: %d\n%s", resp.StatusCode, body)
			}
			ev := h.consoleEventOf(logs.TypeFailedAPI, "refused")
			errObj, _ := ev.Details["error"].(map[string]any)
			if msg, _ := errObj["message"].(string); !strings.Contains(msg, "is not the issuer") || !strings.Contains(msg, h.up.URL) {
				t.Fatalf("the refusal event says %q", msg)
			}
		})
	}
}

func TestConsolePinRefusesABrokerSessionFromAnotherUpstream(t *testing.T) {
	s := &Server{cfg: &config.Config{
		Console: config.Console{Admins: []config.ConsoleAdmin{{UserID: "oidc|corp|alice"}, {Email: "ops@example.com", Connection: "okta"}}},
		Connections: []config.Connection{
			{Name: "corp", Strategy: "oidc", Options: config.ConnectionOptions{Issuer: "https://idp.example", DiscoveryURL: "https://idp.example/.well-known/openid-configuration"}},
			{Name: "okta", Strategy: "okta", Options: config.ConnectionOptions{Domain: "acme.okta.com"}},
			{Name: "other", Strategy: "oidc", Options: config.ConnectionOptions{Issuer: "https://other.example"}},
		},
	}}
	oktaIssuer := s.consolePins()["okta"].issuer
	tests := []struct {
		name    string
		sess    sessionRecord
		problem string // "" = admitted
	}{
		{name: "the pinned issuer through the pinned discovery_url", sess: sessionRecord{Connection: "corp", UpstreamIssuer: "https://idp.example", UpstreamDiscovery: "https://idp.example/.well-known/openid-configuration"}},
		{name: "an okta issuer derived from the domain", sess: sessionRecord{Connection: "okta", UpstreamIssuer: oktaIssuer}},
		{name: "another issuer", sess: sessionRecord{Connection: "corp", UpstreamIssuer: "https://evil.example", UpstreamDiscovery: "https://idp.example/.well-known/openid-configuration"}, problem: "is not the issuer"},
		{name: "the pinned issuer through another discovery_url", sess: sessionRecord{Connection: "corp", UpstreamIssuer: "https://idp.example", UpstreamDiscovery: "https://evil.example/.well-known/openid-configuration"}, problem: "discovery_url"},
		{name: "a session from before the pin", sess: sessionRecord{Connection: "corp"}, problem: "does not record its upstream issuer"},
		{name: "a connection no admin rule names", sess: sessionRecord{Connection: "other", UpstreamIssuer: "https://other.example"}, problem: "not one console.admins names"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := s.consolePinProblem(&tt.sess)
			if (tt.problem == "") != (got == "") || !strings.Contains(got, tt.problem) {
				t.Fatalf("consolePinProblem = %q, want %q", got, tt.problem)
			}
		})
	}
	if oktaIssuer != "https://acme.okta.com" && !strings.HasPrefix(oktaIssuer, "https://acme.okta.com") {
		t.Fatalf("the okta connection's pin is %q", oktaIssuer)
	}
}

// TestManagementAPIRefusesAnotherUpstreamForAConnectionAdmittingConsoleAdministrators: the
// issuer and discovery_url of a connection named by console.admins or console.connection are
// the configuration file's: changing them, or deleting the connection and creating it again
// with others, is refused with 400; other changes, and other connections, are not.
func TestManagementAPIRefusesAnotherUpstreamForAConnectionAdmittingConsoleAdministrators(t *testing.T) {
	h := pinHarness(t, nil)
	corp := config.DeriveConnectionID("corp")
	other := config.DeriveConnectionID("other")
	opts := func(issuer, discovery string) map[string]any {
		o := map[string]any{"issuer": issuer, "client_id": upClientID, "client_secret": upSecret, "scope": "openid profile email"}
		if discovery != "" {
			o["discovery_url"] = discovery
		}
		return o
	}
	steps := []struct {
		name, method, path string
		body               any
		wantStatus         int
	}{
		{name: "PATCH the pinned connection's issuer", method: "PATCH", path: "/api/v2/connections/" + corp,
			body: map[string]any{"options": opts("https://evil.example", "")}, wantStatus: http.StatusBadRequest},
		{name: "PATCH the pinned connection's discovery_url", method: "PATCH", path: "/api/v2/connections/" + corp,
			body: map[string]any{"options": opts(h.up.URL, "https://evil.example/.well-known/openid-configuration")}, wantStatus: http.StatusBadRequest},
		{name: "PATCH the pinned connection, same upstream", method: "PATCH", path: "/api/v2/connections/" + corp,
			body: map[string]any{"display_name": "Corp"}, wantStatus: http.StatusOK},
		{name: "PATCH another connection's issuer", method: "PATCH", path: "/api/v2/connections/" + other,
			body: map[string]any{"options": opts("https://elsewhere.example", "")}, wantStatus: http.StatusOK},
		{name: "DELETE the pinned connection", method: "DELETE", path: "/api/v2/connections/" + corp, wantStatus: http.StatusAccepted},
		{name: "POST it again with another issuer", method: "POST", path: "/api/v2/connections",
			body: map[string]any{"name": "corp", "strategy": "oidc", "options": opts("https://evil.example", "")}, wantStatus: http.StatusBadRequest},
		{name: "POST it again with its issuer", method: "POST", path: "/api/v2/connections",
			body: map[string]any{"name": "corp", "strategy": "oidc", "options": opts(h.up.URL, "")}, wantStatus: http.StatusCreated},
	}
	for _, st := range steps {
		r := api(t, h.srv.URL, st.method, st.path, tokConnAdmin, st.body)
		if r.status != st.wantStatus {
			t.Fatalf("%s: %d %s, want %d", st.name, r.status, r.raw, st.wantStatus)
		}
		if st.wantStatus == http.StatusBadRequest && !strings.Contains(string(r.raw), "admits console administrators") {
			t.Fatalf("%s: the refusal does not say why: %s", st.name, r.raw)
		}
	}
}
