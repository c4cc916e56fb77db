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

// deleteStoredConnection deletes the stored connection name, as a write that bypassed the
// management API's checks would.
func deleteStoredConnection(t *testing.T, h *harness, name string) {
	t.Helper()
	ctx := context.Background()
	id := config.DeriveConnectionID(name)
	raw, err := h.broker.reg.conns.GetConnection(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var doc storedConnection
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if err := h.broker.reg.conns.DeleteConnection(ctx, id, []byte(doc.ConfigHash)); err != nil {
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

// TestConsoleSignInIsRefusedWhenTheConnectionMappedTheUserOtherwiseThanConfigured: a group
// rule trusts the connection's attribute_map; a mapping changed behind the API's back (another
// replica, a restored backup) that hands every user the group admits nobody, while the same
// mapping from the configuration file admits.
func TestConsoleSignInIsRefusedWhenTheConnectionMappedTheUserOtherwiseThanConfigured(t *testing.T) {
	const groups = "https://example.com/groups"
	grant := &config.AttributeMap{MappingMode: "bind_all", Attributes: config.ClaimTemplates{groups: "console-admins"}}
	tests := []struct {
		name       string
		configured *config.AttributeMap // the configuration file's attribute_map of corp
		stored     *config.AttributeMap // written to the store after start; nil = none
		wantEnd    string
		wantBody   string
	}{
		{name: "the configuration file's mapping grants the group", configured: grant, wantEnd: "/console/"},
		{name: "no mapping grants the group", wantEnd: "/console/callback", wantBody: "is not a console administrator"},
		{name: "a mapping changed in the store grants the group", stored: grant, wantEnd: "/console/callback", wantBody: "other identity options"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := pinHarness(t, func(c *config.Config) {
				c.Console.Admins = []config.ConsoleAdmin{{Group: "console-admins", Claim: groups, Connection: "corp"}}
				for i := range c.Connections {
					if c.Connections[i].Name == "corp" {
						c.Connections[i].Options.AttributeMap = tt.configured
					}
				}
			})
			if tt.stored != nil {
				storeConnection(t, h, "corp", func(cc *config.Connection) { cc.Options.AttributeMap = tt.stored })
			}
			resp, body := h.consoleSignIn(h.browser())
			if resp.Request.URL.Path != tt.wantEnd {
				t.Fatalf("the sign-in ended at %d %s, want %s:\n%s", resp.StatusCode, resp.Request.URL, tt.wantEnd, body)
			}
			if tt.wantBody == "" {
				return
			}
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, tt.wantBody) {
				t.Fatalf("the refusal: %d, want 403 saying %q\n%s", resp.StatusCode, tt.wantBody, body)
			}
			ev := h.consoleEventOf(logs.TypeFailedAPI, "refused")
			errObj, _ := ev.Details["error"].(map[string]any)
			if msg, _ := errObj["message"].(string); !strings.Contains(msg, tt.wantBody) {
				t.Fatalf("the refusal event says %q", msg)
			}
		})
	}
}

func TestConsolePinRefusesABrokerSessionFromAnotherUpstream(t *testing.T) {
	cfg := &config.Config{
		Console: config.Console{Admins: []config.ConsoleAdmin{{UserID: "oidc|corp|alice"}, {Email: "ops@example.com", Connection: "okta"}}},
		Connections: []config.Connection{
			{Name: "corp", Strategy: "oidc", Options: config.ConnectionOptions{ClientID: "broker", Issuer: "https://idp.example", DiscoveryURL: "https://idp.example/.well-known/openid-configuration"}},
			{Name: "okta", Strategy: "okta", Options: config.ConnectionOptions{ClientID: "broker-okta", Domain: "acme.okta.com"}},
			{Name: "other", Strategy: "oidc", Options: config.ConnectionOptions{Issuer: "https://other.example"}},
		},
	}
	s := &Server{cfg: cfg, console: &consoleCaches{}}
	var err error
	if s.consolePins, err = consolePinsOf(cfg); err != nil {
		t.Fatal(err)
	}
	oktaIssuer := s.consolePins["okta"].issuer
	corpID, oktaID := s.consolePins["corp"].digest, s.consolePins["okta"].digest
	if corpID == "" || oktaID == "" || corpID == oktaID {
		t.Fatalf("the identity pins: corp %q, okta %q", corpID, oktaID)
	}
	tests := []struct {
		name    string
		sess    sessionRecord
		problem string // "" = admitted
	}{
		{name: "the pinned issuer through the pinned discovery_url", sess: sessionRecord{Connection: "corp", UpstreamIssuer: "https://idp.example", UpstreamDiscovery: "https://idp.example/.well-known/openid-configuration", UpstreamIdentity: corpID}},
		{name: "an okta issuer derived from the domain", sess: sessionRecord{Connection: "okta", UpstreamIssuer: oktaIssuer, UpstreamIdentity: oktaID}},
		{name: "the pinned upstream with other identity options", sess: sessionRecord{Connection: "corp", UpstreamIssuer: "https://idp.example", UpstreamDiscovery: "https://idp.example/.well-known/openid-configuration", UpstreamIdentity: oktaID}, problem: "other identity options"},
		{name: "a session from before the identity pin", sess: sessionRecord{Connection: "corp", UpstreamIssuer: "https://idp.example", UpstreamDiscovery: "https://idp.example/.well-known/openid-configuration"}, problem: "does not record its connection's identity options"},
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

// TestConsolePinsAreMadeOnlyOfConnectionsThatNormalize: a pinned connection that its upstream
// client would refuse is an error of consolePinsOf (New fails), so every pin has a digest.
func TestConsolePinsAreMadeOnlyOfConnectionsThatNormalize(t *testing.T) {
	cfg := &config.Config{
		Console: config.Console{Admins: []config.ConsoleAdmin{{UserID: "oidc|corp|alice"}}},
		Connections: []config.Connection{
			{Name: "corp", Strategy: "oidc", Options: config.ConnectionOptions{Issuer: "https://idp.example"}}, // no client_id
		},
	}
	if pins, err := consolePinsOf(cfg); err == nil || !strings.Contains(err.Error(), "client_id") {
		t.Fatalf("consolePinsOf = %v, %v; want an error naming client_id", pins, err)
	}
	cfg.Connections[0].Options.ClientID = "broker"
	pins, err := consolePinsOf(cfg)
	if err != nil || len(pins) != 1 || pins["corp"].digest == "" {
		t.Fatalf("consolePinsOf = %+v, %v; want corp's pin with its digest", pins, err)
	}
}

// TestManagementAPIRefusesAnotherUpstreamForAConnectionAdmittingConsoleAdministrators: the
// issuer and discovery_url of a connection named by console.admins or console.connection, and
// the options that decide the user's email and groups (client_id, scope, fetch_userinfo,
// upstream_params, attribute_map), are the configuration file's: changing them, or deleting
// the connection and creating it again with others, is refused with 400 naming the option;
// other changes, and other connections, are not.
func TestManagementAPIRefusesAnotherUpstreamForAConnectionAdmittingConsoleAdministrators(t *testing.T) {
	h := pinHarness(t, nil)
	corp := config.DeriveConnectionID("corp")
	other := config.DeriveConnectionID("other")
	opts := func(issuer, discovery string) map[string]any {
		o := map[string]any{"issuer": issuer, "client_id": upClientID, "client_secret": upSecret, "scope": "openid profile email", "fetch_userinfo": true}
		if discovery != "" {
			o["discovery_url"] = discovery
		}
		return o
	}
	with := func(k string, v any) map[string]any {
		o := opts(h.up.URL, "")
		o[k] = v
		return o
	}
	// An attribute_map that fills the email from a claim the user controls, and its
	// email_verified from the upstream's verification of another address.
	takeover := map[string]any{"mapping_mode": "bind_all", "attributes": map[string]any{
		"email": "${context.tokenset.id_token.name}", "email_verified": "${context.tokenset.id_token.email_verified}"}}
	steps := []struct {
		name, method, path string
		body               any
		wantStatus         int
		wantOption         string // the option a refusal names
		before             func() // done before the request
	}{
		{name: "PATCH the pinned connection's issuer", method: "PATCH", path: "/api/v2/connections/" + corp,
			body: map[string]any{"options": opts("https://evil.example", "")}, wantStatus: http.StatusBadRequest},
		{name: "PATCH the pinned connection's discovery_url", method: "PATCH", path: "/api/v2/connections/" + corp,
			body: map[string]any{"options": opts(h.up.URL, "https://evil.example/.well-known/openid-configuration")}, wantStatus: http.StatusBadRequest},
		{name: "PATCH the pinned connection, same upstream", method: "PATCH", path: "/api/v2/connections/" + corp,
			body: map[string]any{"display_name": "Corp"}, wantStatus: http.StatusOK},
		{name: "PATCH the pinned connection, same options", method: "PATCH", path: "/api/v2/connections/" + corp,
			body: map[string]any{"options": opts(h.up.URL, "")}, wantStatus: http.StatusOK},
		{name: "PATCH the pinned connection's attribute_map", method: "PATCH", path: "/api/v2/connections/" + corp,
			body: map[string]any{"options": with("attribute_map", takeover)}, wantStatus: http.StatusBadRequest, wantOption: "options.attribute_map"},
		{name: "PATCH the pinned connection's scope", method: "PATCH", path: "/api/v2/connections/" + corp,
			body: map[string]any{"options": with("scope", "openid profile email groups")}, wantStatus: http.StatusBadRequest, wantOption: "options.scope"},
		{name: "PATCH the pinned connection's fetch_userinfo", method: "PATCH", path: "/api/v2/connections/" + corp,
			body: map[string]any{"options": with("fetch_userinfo", false)}, wantStatus: http.StatusBadRequest, wantOption: "options.fetch_userinfo"},
		{name: "PATCH the pinned connection's client_id", method: "PATCH", path: "/api/v2/connections/" + corp,
			body: map[string]any{"options": with("client_id", "attackers-app")}, wantStatus: http.StatusBadRequest, wantOption: "options.client_id"},
		{name: "PATCH the pinned connection's upstream_params", method: "PATCH", path: "/api/v2/connections/" + corp,
			body: map[string]any{"options": with("upstream_params", map[string]any{"acr_values": map[string]any{"value": "urn:example:low"}})}, wantStatus: http.StatusBadRequest, wantOption: "options.upstream_params"},
		{name: "PATCH another connection's attribute_map", method: "PATCH", path: "/api/v2/connections/" + other,
			body: map[string]any{"options": map[string]any{"issuer": h.up.URL, "client_id": upClientID, "client_secret": upSecret, "attribute_map": takeover}}, wantStatus: http.StatusOK},
		{name: "PATCH another connection's issuer", method: "PATCH", path: "/api/v2/connections/" + other,
			body: map[string]any{"options": opts("https://elsewhere.example", "")}, wantStatus: http.StatusOK},
		{name: "DELETE the pinned connection", method: "DELETE", path: "/api/v2/connections/" + corp, wantStatus: http.StatusConflict},
		{name: "POST it again with another issuer, once deleted in the store", method: "POST", path: "/api/v2/connections",
			body: map[string]any{"name": "corp", "strategy": "oidc", "options": opts("https://evil.example", "")}, wantStatus: http.StatusBadRequest,
			before: func() { deleteStoredConnection(t, h, "corp") }},
		{name: "POST it again with its issuer and another attribute_map", method: "POST", path: "/api/v2/connections",
			body: map[string]any{"name": "corp", "strategy": "oidc", "options": with("attribute_map", takeover)}, wantStatus: http.StatusBadRequest, wantOption: "options.attribute_map"},
		{name: "POST it again with its issuer", method: "POST", path: "/api/v2/connections",
			body: map[string]any{"name": "corp", "strategy": "oidc", "options": opts(h.up.URL, "")}, wantStatus: http.StatusCreated},
	}
	for _, st := range steps {
		if st.before != nil {
			st.before()
		}
		r := api(t, h.srv.URL, st.method, st.path, tokConnAdmin, st.body)
		if r.status != st.wantStatus {
			t.Fatalf("%s: %d %s, want %d", st.name, r.status, r.raw, st.wantStatus)
		}
		if st.wantStatus == http.StatusBadRequest && (!strings.Contains(string(r.raw), "admits console administrators (console.admins") || !strings.Contains(string(r.raw), st.wantOption)) {
			t.Fatalf("%s: the refusal does not say why (%s): %s", st.name, st.wantOption, r.raw)
		}
	}
}
