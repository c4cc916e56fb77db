package broker

import (
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/config/configtest"
	"github.com/dpop-broker/dpop-broker/upstream"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

const (
	groupsClaim = "https://example.com/groups"
	claimsAPI   = "https://api.example.com"
)

// groupsHarness is a broker whose corp connection maps the upstream's groups (a reserved name)
// to a namespaced claim, and whose API's access tokens carry that claim and email.
func groupsHarness(t *testing.T, mode string) *harness {
	return newHarness(t, harnessOpts{
		up: demoidp.Options{DPoPAlgs: []string{"ES256"}, Claims: map[string]any{
			"name": "Alice Example", "email": "alice@example.com", "groups": []any{"eng", "admins"}, "department": "R&D",
		}},
		mutate: func(c *config.Config) {
			c.Connections[0].Options.AttributeMap = &config.AttributeMap{MappingMode: mode, Attributes: config.ClaimTemplates{
				groupsClaim:                   "${context.tokenset.id_token.groups}",
				"https://example.com/display": "${context.tokenset.id_token.name} (${context.userinfo.email})",
			}}
			c.APIs = []config.API{{Audience: claimsAPI, Claims: []string{groupsClaim, "email"}}}
			c.Clients[0].APIs = []config.APIGrant{{Audience: claimsAPI}}
		},
	})
}

func TestMappedClaimsReachIDTokenUserinfoAndTheAPIsAccessToken(t *testing.T) {
	tests := []struct {
		name      string
		mode      string
		scope     string
		wantID    map[string]any // claims of the ID token besides the protocol ones
		wantAPIAT map[string]any // profile claims of the API access token
	}{
		{name: "use_map: only the attributes", mode: "use_map", scope: "openid profile email",
			wantID:    map[string]any{groupsClaim: []any{"eng", "admins"}, "https://example.com/display": "Alice Example (alice@example.com)"},
			wantAPIAT: map[string]any{groupsClaim: []any{"eng", "admins"}}},
		{name: "basic_profile: standard claims by scope, mapped ones always", mode: "basic_profile", scope: "openid email",
			wantID:    map[string]any{"email": "alice@example.com", groupsClaim: []any{"eng", "admins"}, "https://example.com/display": "Alice Example (alice@example.com)"},
			wantAPIAT: map[string]any{groupsClaim: []any{"eng", "admins"}, "email": "alice@example.com"}},
		{name: "bind_all: every claim that is not reserved", mode: "bind_all", scope: "openid profile",
			wantID:    map[string]any{"name": "Alice Example", "department": "R&D", groupsClaim: []any{"eng", "admins"}, "https://example.com/display": "Alice Example (alice@example.com)"},
			wantAPIAT: map[string]any{groupsClaim: []any{"eng", "admins"}}},
	}
	protocol := map[string]bool{"iss": true, "sub": true, "aud": true, "azp": true, "iat": true, "exp": true, "auth_time": true,
		"sid": true, "at_hash": true, "nonce": true, "amr": true, "acr": true, "client_id": true, "jti": true, "scope": true, "cnf": true}
	profileOf := func(m map[string]any) map[string]any {
		out := map[string]any{}
		for k, v := range m {
			if !protocol[k] {
				out[k] = v
			}
		}
		return out
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := groupsHarness(t, tt.mode)
			resp, _ := get(t, h.browser(), h.authorizeURL(func(q url.Values) {
				q.Set("scope", tt.scope)
				q.Set("audience", claimsAPI)
			}))
			code := appResult(t, resp, h.app.URL+"/cb").Get("code")
			status, body, _ := h.token(h.codeForm(code), true)
			if status != http.StatusOK {
				t.Fatalf("token: %d %v", status, body)
			}
			idt, _ := body["id_token"].(string)
			if got := profileOf(claimsOf(t, idt)); !reflect.DeepEqual(got, tt.wantID) {
				t.Errorf("ID token profile claims\n got %v\nwant %v", got, tt.wantID)
			}
			at, _ := body["access_token"].(string)
			atClaims := claimsOf(t, at)
			if got := profileOf(atClaims); !reflect.DeepEqual(got, tt.wantAPIAT) {
				t.Errorf("API access token profile claims\n got %v\nwant %v", got, tt.wantAPIAT)
			}
			if atClaims["sub"] != "oidc|corp|alice" || atClaims["iss"] != h.cfg.Issuer {
				t.Errorf("access token's own claims changed: %v", atClaims)
			}
			ui := h.userinfo("Bearer "+at, "")
			if got := profileOf(ui.body); ui.status != http.StatusOK || !reflect.DeepEqual(got, tt.wantID) {
				t.Errorf("userinfo %d: %v, want %v", ui.status, got, tt.wantID)
			}
		})
	}
}

// upstreamAuthorizeQuery starts a login at authorizeURL and returns the query of the
// upstream authorization request the broker sent the browser to (not followed).
func (h *harness) upstreamAuthorizeQuery(authorizeURL string) url.Values {
	h.t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(authorizeURL)
	if err != nil {
		h.t.Fatalf("GET %s: %v", authorizeURL, err)
	}
	_ = resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil || !strings.HasPrefix(loc.String(), h.up.URL) {
		h.t.Fatalf("want a redirect to the upstream, got %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	return loc.Query()
}

func TestUpstreamParamsReachTheUpstreamAuthorizationRequest(t *testing.T) {
	h := newHarness(t, harnessOpts{up: demoidp.Options{DPoPAlgs: []string{"ES256"}}, mutate: func(c *config.Config) {
		c.Connections[0].Options.UpstreamParams = config.ParamMap{
			"login_hint":  {Alias: "login_hint"},
			"domain_hint": {Alias: "ui_locales"},
			"acr_values":  {Value: "urn:okta:loa:2fa:any"},
			"prompt":      {Value: "consent"},
		}
	}})
	tests := []struct {
		name string
		app  url.Values
		want map[string]string // "" = absent
	}{
		{name: "aliases carry the app's parameters, values are fixed",
			app:  url.Values{"login_hint": {"bob@example.com"}, "ui_locales": {"de"}},
			want: map[string]string{"login_hint": "bob@example.com", "domain_hint": "de", "acr_values": "urn:okta:loa:2fa:any", "prompt": "consent"}},
		{name: "without the app's parameters an alias is not sent",
			want: map[string]string{"login_hint": "", "domain_hint": "", "acr_values": "urn:okta:loa:2fa:any"}},
		{name: "the app's prompt=login wins over the configured prompt",
			app:  url.Values{"prompt": {"login"}},
			want: map[string]string{"prompt": "login"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := h.upstreamAuthorizeQuery(h.authorizeURL(func(q url.Values) {
				for k, v := range tt.app {
					q[k] = v
				}
			}))
			for k, v := range tt.want {
				if got := q.Get(k); got != v || len(q[k]) > 1 {
					t.Errorf("upstream %s = %q (%d values), want %q", k, got, len(q[k]), v)
				}
			}
			if q.Get("client_id") != upClientID || q.Get("redirect_uri") != h.srv.URL+"/login/callback" || q.Get("code_challenge_method") != "S256" {
				t.Errorf("the broker's own parameters changed: %v", q)
			}
		})
	}
}

func TestManagementAPIRefusesWhatConfigValidateRefusesWithTheSameReason(t *testing.T) {
	h := mgmtHarness(t, nil)
	configtest.SetEnv(t)
	tests := []struct {
		name    string
		options map[string]any
		yaml    string // the same connection options in the YAML
		key     string // the option's key below options.
	}{
		{name: "unknown template variable",
			options: map[string]any{"attribute_map": map[string]any{"mapping_mode": "use_map", "attributes": map[string]any{"nickname": "${context.user.nickname}"}}},
			yaml:    "      attribute_map: { mapping_mode: use_map, attributes: { nickname: \"${context.user.nickname}\" } }\n",
			key:     "attribute_map.attributes.nickname"},
		{name: "reserved claim name",
			options: map[string]any{"attribute_map": map[string]any{"mapping_mode": "bind_all", "attributes": map[string]any{"roles": "${context.userinfo.roles}"}}},
			yaml:    "      attribute_map: { mapping_mode: bind_all, attributes: { roles: \"${context.userinfo.roles}\" } }\n",
			key:     "attribute_map.attributes.roles"},
		{name: "upstream parameter outside the safe list",
			options: map[string]any{"upstream_params": map[string]any{"redirect_uri": map[string]any{"value": "https://evil.example/cb"}}},
			yaml:    "      upstream_params: { redirect_uri: { value: \"https://evil.example/cb\" } }\n",
			key:     "upstream_params.redirect_uri"},
		{name: "alias of a parameter the broker keeps",
			options: map[string]any{"upstream_params": map[string]any{"login_hint": map[string]any{"alias": "code_challenge"}}},
			yaml:    "      upstream_params: { login_hint: { alias: code_challenge } }\n",
			key:     "upstream_params.login_hint"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(strings.Replace(configtest.ValidYAML, "      dpop_signing_alg: ES256\n", tt.yaml, 1)))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			var reason string
			for _, e := range cfg.Validate() {
				if e.Key == "connections[0].options."+tt.key {
					reason = e.Reason
				}
			}
			if reason == "" {
				t.Fatalf("config validate did not refuse connections[0].options.%s: %v", tt.key, config.FieldErrors(cfg.Validate()))
			}
			opts := map[string]any{"issuer": h.up.URL, "client_id": upClientID, "client_secret": upSecret}
			for k, v := range tt.options {
				opts[k] = v
			}
			r := api(t, h.srv.URL, "POST", "/api/v2/connections", tokAll, map[string]any{"name": fmt.Sprintf("refused-%d", i), "strategy": "oidc", "options": opts})
			wantAPIError(t, r, http.StatusBadRequest, "invalid_body", "options."+tt.key+": "+reason)
		})
	}
}

func TestOversizedUserProfileFailsTheLoginWithClaimsTooLarge(t *testing.T) {
	h := newHarness(t, harnessOpts{
		up: demoidp.Options{DPoPAlgs: []string{"ES256"}, Claims: map[string]any{
			"email": "alice@example.com", "blob": strings.Repeat("x", upstream.MaxProfileBytes),
		}},
		mutate: func(c *config.Config) {
			c.Connections[0].Options.AttributeMap = &config.AttributeMap{MappingMode: upstream.MappingBindAll}
		},
	})
	q := h.login()
	if q.Get("error") != "server_error" || q.Get("code") != "" || !strings.Contains(q.Get("error_description"), upstream.CodeClaimsTooLarge) {
		t.Fatalf("app callback %v, want server_error naming %s", q, upstream.CodeClaimsTooLarge)
	}
	ev := h.lastEvent()
	if ev.Type != "f" || detail(ev, "error") != upstream.CodeClaimsTooLarge || !strings.Contains(fmt.Sprint(detail(ev, "error_description")), "narrow options.attribute_map") {
		t.Errorf("event %s %v, want f with error %s and the remedy", ev.Type, ev.Details, upstream.CodeClaimsTooLarge)
	}
	if n := len(h.recentEvents(100)); n != 1 {
		t.Errorf("%d events, want the one f (no session, no code)", n)
	}
}

func TestUpstreamClaimsNamedLikeMappedOrAPIClaimsNeverReachTheTokens(t *testing.T) {
	const team = "https://example.com/team"
	h := newHarness(t, harnessOpts{
		up: demoidp.Options{DPoPAlgs: []string{"ES256"}, Claims: map[string]any{
			"name": "Mallory", "email": "m@example.com", "department": "R&D",
			groupsClaim: []any{"admins"}, team: "root",
			"_claim_names": map[string]any{"groups": "src"}, "_claim_sources": map[string]any{"src": map[string]any{"endpoint": "https://evil.example/"}},
		}},
		mutate: func(c *config.Config) {
			c.Connections[0].Options.AttributeMap = &config.AttributeMap{MappingMode: upstream.MappingBindAll, Attributes: config.ClaimTemplates{
				groupsClaim: "${context.userinfo.groups}", // the upstream sends no groups
			}}
			c.APIs = []config.API{{Audience: claimsAPI, Claims: []string{groupsClaim, team, "email"}}}
			c.Clients[0].APIs = []config.APIGrant{{Audience: claimsAPI}}
		},
	})
	resp, _ := get(t, h.browser(), h.authorizeURL(func(q url.Values) {
		q.Set("scope", "openid profile email")
		q.Set("audience", claimsAPI)
	}))
	q := appResult(t, resp, h.app.URL+"/cb")
	if q.Get("code") == "" {
		t.Fatalf("login failed: %v (event %v)", q, h.lastEvent())
	}
	code := q.Get("code")
	status, body, _ := h.token(h.codeForm(code), true)
	if status != http.StatusOK {
		t.Fatalf("token: %d %v", status, body)
	}
	at, _ := body["access_token"].(string)
	idt, _ := body["id_token"].(string)
	ui := h.userinfo("Bearer "+at, "")
	for where, claims := range map[string]map[string]any{"ID token": claimsOf(t, idt), "access token": claimsOf(t, at), "userinfo": ui.body} {
		for _, c := range []string{groupsClaim, team, "_claim_names", "_claim_sources"} {
			if v, ok := claims[c]; ok {
				t.Errorf("%s carries %s = %v from the upstream", where, c, v)
			}
		}
	}
	if claimsOf(t, idt)["department"] != "R&D" || claimsOf(t, at)["email"] != "m@example.com" {
		t.Errorf("bind_all lost claims it copies: ID token %v, access token %v", claimsOf(t, idt), claimsOf(t, at))
	}
}
