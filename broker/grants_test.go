package broker

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/config/configtest"
	"github.com/dpop-broker/dpop-broker/dpop"
	"github.com/dpop-broker/dpop-broker/logs"
)

// APIs of the grant tests.
const (
	apiScoped    = "https://api.scoped.example"    // defines read:data, write:data, admin:all
	apiUngranted = "https://api.ungranted.example" // no client is granted it
)

// grantsHarness: the confidential app may obtain every scope of apiScoped, the public SPA
// only read:data; nobody is granted apiUngranted.
func grantsHarness(t *testing.T) *harness {
	return newHarness(t, harnessOpts{up: dpopUp, mutate: func(c *config.Config) {
		c.APIs = []config.API{
			{Audience: apiScoped, SenderConstraining: config.PolicyAllowed, Scopes: []config.APIScope{
				{Name: "read:data", Description: "Read data"}, {Name: "write:data"}, {Name: "admin:all", Description: "Everything"},
			}},
			{Audience: apiUngranted, Scopes: []config.APIScope{{Name: "read:data"}}},
		}
		c.Clients[0].APIs = []config.APIGrant{{Audience: apiScoped, Scopes: []string{"read:data", "write:data", "admin:all"}}}
		c.Clients[1].APIs = []config.APIGrant{{Audience: apiScoped, Scopes: []string{"read:data"}}}
	}})
}

// tokenAt posts a token request without a DPoP proof to base's /oauth/token.
func (h *harness) tokenAt(base, client string, form url.Values) httpResult {
	h.t.Helper()
	_, secret := clientInfo(client)
	f := url.Values{}
	for k, v := range form {
		f[k] = v
	}
	if secret == "" {
		f.Set("client_id", client)
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/oauth/token", strings.NewReader(f.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if secret != "" {
		req.SetBasicAuth(client, secret)
	}
	return h.do(req)
}

// wantEvent checks the newest event's type and details (want: key → value).
func wantEvent(t *testing.T, h *harness, typ string, want map[string]any) logs.Event {
	t.Helper()
	ev := h.lastEvent()
	if ev.Type != typ {
		t.Fatalf("event type %q, want %q (details %v)", ev.Type, typ, ev.Details)
	}
	for k, v := range want {
		if ev.Details[k] != v {
			t.Errorf("event details.%s = %v, want %v (details %v)", k, ev.Details[k], v, ev.Details)
		}
	}
	return ev
}

func TestGrantedScope(t *testing.T) {
	api := &config.API{Audience: apiScoped, Scopes: []config.APIScope{{Name: "read:data"}, {Name: "write:data"}, {Name: "admin:all"}}}
	readOnly := &config.APIGrant{Audience: apiScoped, Scopes: []string{"read:data"}}
	full := &config.APIGrant{Audience: apiScoped, Scopes: []string{"read:data", "write:data", "admin:all", "undefined:scope"}}
	for _, tc := range []struct {
		name        string
		requested   string
		api         *config.API
		grant       *config.APIGrant
		wantGranted string
		wantDropped []string
	}{
		{name: "OIDC scopes keep their meaning without an audience", requested: "openid profile email offline_access",
			wantGranted: "openid profile email offline_access"},
		{name: "API scope requested without an audience is dropped", requested: "openid admin:all",
			wantGranted: "openid", wantDropped: []string{"admin:all"}},
		{name: "requested scopes are intersected with the grant", requested: "openid read:data write:data admin:all", api: api, grant: readOnly,
			wantGranted: "openid read:data", wantDropped: []string{"write:data", "admin:all"}},
		{name: "full grant gives every requested API scope", requested: "openid read:data admin:all", api: api, grant: full,
			wantGranted: "openid read:data admin:all"},
		{name: "scopes not requested are not added", requested: "openid", api: api, grant: full,
			wantGranted: "openid"},
		{name: "granted but undefined by the API is dropped", requested: "openid undefined:scope", api: api, grant: full,
			wantGranted: "openid", wantDropped: []string{"undefined:scope"}},
		{name: "no grant allows no API scope", requested: "openid read:data", api: api,
			wantGranted: "openid", wantDropped: []string{"read:data"}},
		{name: "OIDC scopes kept with an API audience", requested: "openid profile offline_access read:data", api: api, grant: readOnly,
			wantGranted: "openid profile offline_access read:data"},
		{name: "repeated values count once, order kept", requested: "read:data  openid read:data bogus bogus", api: api, grant: readOnly,
			wantGranted: "read:data openid", wantDropped: []string{"bogus"}},
		{name: "empty request grants nothing", requested: "", api: api, grant: full, wantGranted: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			granted, dropped := grantedScope(tc.requested, tc.api, tc.grant)
			if granted != tc.wantGranted || !slices.Equal(dropped, tc.wantDropped) {
				t.Fatalf("grantedScope(%q) = %q dropped %q, want %q dropped %q", tc.requested, granted, dropped, tc.wantGranted, tc.wantDropped)
			}
		})
	}
}

func TestValidateScopesAndGrants(t *testing.T) {
	configtest.SetEnv(t)
	const aud = "https://api.example.com"
	withAPI := func(mut func(c *config.Config)) func(c *config.Config) {
		return func(c *config.Config) {
			c.APIs = []config.API{{Audience: aud, Scopes: []config.APIScope{{Name: "read:data"}, {Name: "write:data"}}}}
			c.Clients[0].APIs = []config.APIGrant{{Audience: aud, Scopes: []string{"read:data"}}}
			mut(c)
		}
	}
	for _, tc := range []struct {
		name string
		mut  func(c *config.Config)
		want config.FieldError
	}{
		{name: "scope name missing", mut: withAPI(func(c *config.Config) { c.APIs[0].Scopes[1].Name = "" }),
			want: config.FieldError{Key: "apis[0].scopes[1].name", Reason: "is required"}},
		{name: "scope name with whitespace", mut: withAPI(func(c *config.Config) { c.APIs[0].Scopes[1].Name = "write data" }),
			want: config.FieldError{Key: "apis[0].scopes[1].name", Reason: `"write data" must be 1 to 256 visible ASCII characters without spaces, '"' or '\' (RFC 6749 §3.3)`}},
		{name: "scope name with a quote", mut: withAPI(func(c *config.Config) { c.APIs[0].Scopes[1].Name = `x"y` }),
			want: config.FieldError{Key: "apis[0].scopes[1].name", Reason: `"x\"y" must be 1 to 256 visible ASCII characters without spaces, '"' or '\' (RFC 6749 §3.3)`}},
		{name: "scope name duplicate", mut: withAPI(func(c *config.Config) { c.APIs[0].Scopes[1].Name = "read:data" }),
			want: config.FieldError{Key: "apis[0].scopes[1].name", Reason: `duplicate scope "read:data" (also apis[0].scopes[0])`}},
		{name: "API cannot define an OIDC scope", mut: withAPI(func(c *config.Config) { c.APIs[0].Scopes[1].Name = "offline_access" }),
			want: config.FieldError{Key: "apis[0].scopes[1].name", Reason: `"offline_access" is an OpenID Connect scope: it keeps its meaning for every token and cannot be defined by an API`}},
		{name: "scope description too long", mut: withAPI(func(c *config.Config) { c.APIs[0].Scopes[0].Description = strings.Repeat("d", 501) }),
			want: config.FieldError{Key: "apis[0].scopes[0].description", Reason: "must be at most 500 characters"}},
		{name: "grant without audience", mut: withAPI(func(c *config.Config) { c.Clients[0].APIs[0].Audience = "" }),
			want: config.FieldError{Key: "clients[0].apis[0].audience", Reason: "is required"}},
		{name: "grant for an unknown API", mut: withAPI(func(c *config.Config) { c.Clients[0].APIs[0].Audience = "https://other.example" }),
			want: config.FieldError{Key: "clients[0].apis[0].audience", Reason: `API "https://other.example" is not defined in apis`}},
		{name: "two grants for one API", mut: withAPI(func(c *config.Config) { c.Clients[0].APIs = append(c.Clients[0].APIs, config.APIGrant{Audience: aud}) }),
			want: config.FieldError{Key: "clients[0].apis[1].audience", Reason: `duplicate grant for API "https://api.example.com" (also clients[0].apis[0])`}},
		{name: "granted scope the API does not define", mut: withAPI(func(c *config.Config) { c.Clients[0].APIs[0].Scopes = []string{"read:data", "admin:all"} }),
			want: config.FieldError{Key: "clients[0].apis[0].scopes[1]", Reason: `scope "admin:all" is not defined by API "https://api.example.com" (apis[0].scopes)`}},
		{name: "granted OIDC scope", mut: withAPI(func(c *config.Config) { c.Clients[0].APIs[0].Scopes = []string{"openid"} }),
			want: config.FieldError{Key: "clients[0].apis[0].scopes[0]", Reason: `"openid" is an OpenID Connect scope, which every client may request: grant only scopes the API defines`}},
		{name: "client_id equal to an API audience", mut: withAPI(func(c *config.Config) { c.Clients[0].ClientID = aud }),
			want: config.FieldError{Key: "clients[0].client_id", Reason: `"https://api.example.com" is the audience of apis[0]: a client_id must differ from every API audience (the client's ID tokens would carry that audience)`}},
		{name: "client_id equal to the userinfo audience", mut: func(c *config.Config) { c.Clients[0].ClientID = "http://127.0.0.1:8080/userinfo" },
			want: config.FieldError{Key: "clients[0].client_id", Reason: `"http://127.0.0.1:8080/userinfo" is the broker's userinfo audience: a client_id must differ from every API audience (the client's ID tokens would carry that audience)`}},
		{name: "enabled_clients entry equal to an API audience", mut: withAPI(func(c *config.Config) { c.Connections[0].EnabledClients = []string{"sample-app", aud} }),
			want: config.FieldError{Key: "connections[0].enabled_clients[1]", Reason: `"https://api.example.com" is the audience of apis[0], not a client id`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(configtest.ValidYAML))
			if err != nil {
				t.Fatal(err)
			}
			tc.mut(cfg)
			if errs := cfg.Validate(); !slices.Contains(errs, tc.want) {
				t.Fatalf("got %v\nwant %v", config.FieldErrors(errs), tc.want)
			}
		})
	}
}

// TestScopesAndGrantsFromYAML: apis[].scopes and clients[].apis are read from the file, a
// well-formed configuration validates, and a misspelt key in a grant is named.
func TestScopesAndGrantsFromYAML(t *testing.T) {
	configtest.SetEnv(t)
	grants := configtest.ValidYAML + `apis:
  - audience: "https://api.example.com"
    scopes:
      - { name: "read:data", description: "Read your data" }
      - { name: "write:data" }
`
	grants = strings.Replace(grants, "    connections: [corp-oidc]\n",
		"    connections: [corp-oidc]\n    apis:\n      - { audience: \"https://api.example.com\", scopes: [\"read:data\"] }\n", 1)
	cfg, err := config.Parse([]byte(grants))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if errs := cfg.Validate(); len(errs) != 0 {
		t.Fatalf("Validate: %v", config.FieldErrors(errs))
	}
	if len(cfg.APIs) != 1 || len(cfg.APIs[0].Scopes) != 2 || cfg.APIs[0].Scopes[0].Description != "Read your data" ||
		len(cfg.Clients[0].APIs) != 1 || !slices.Equal(cfg.Clients[0].APIs[0].Scopes, []string{"read:data"}) {
		t.Fatalf("apis %+v grants %+v", cfg.APIs, cfg.Clients[0].APIs)
	}
	_, err = config.Parse([]byte(strings.Replace(grants, `scopes: ["read:data"]`, `scope: "read:data"`, 1)))
	if fe, ok := err.(config.FieldErrors); !ok || !slices.Contains(fe, config.FieldError{Key: "clients[0].apis[0].scope", Reason: "unknown key (did you mean scopes?)"}) {
		t.Fatalf("misspelt grant key: %v", err)
	}
}

// TestAudienceNotGrantedIsDeniedAtAuthorize: a client asking for an API it has no grant for
// gets access_denied at its redirect_uri (with state and iss) and an f event naming the
// audience; the user is never sent to the upstream.
func TestAudienceNotGrantedIsDeniedAtAuthorize(t *testing.T) {
	h := grantsHarness(t)
	for _, tc := range []struct {
		name, client, redirect string
	}{
		{name: "confidential client", client: appClient, redirect: "/cb"},
		{name: "public client", client: spaClient, redirect: "/spa"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, _ := get(t, h.browser(), h.authorizeURL(func(q url.Values) {
				q.Set("client_id", tc.client)
				q.Set("redirect_uri", h.app.URL+tc.redirect)
				q.Set("connection", "corp")
				q.Set("audience", apiUngranted)
			}))
			q := appResult(t, resp, h.app.URL+tc.redirect)
			if q.Get("error") != "access_denied" || q.Get("state") != "app-state-123" || q.Get("iss") != h.cfg.Issuer ||
				!strings.Contains(q.Get("error_description"), apiUngranted) || q.Get("code") != "" {
				t.Fatalf("app got %v, want error=access_denied naming the API, with state and iss", q)
			}
			ev := wantFail(t, h, "access_denied")
			if ev.ClientID != tc.client || ev.Details["audience"] != apiUngranted {
				t.Errorf("f event client %q details %v", ev.ClientID, ev.Details)
			}
		})
	}
	if n := h.up.Stats.AuthorizeRequests.Load(); n != 0 {
		t.Errorf("the upstream saw %d authorize requests for refused logins", n)
	}
}

// TestGrantRemovedIsDeniedAtToken: the grant is checked again against the current
// configuration when the code is redeemed and at every refresh. Once the client's stored
// grants (the management API, or an edited YAML entry) no longer grant the API, the broker
// answers 403 access_denied (feacft, fertft); the refused refresh does not burn the token.
func TestGrantRemovedIsDeniedAtToken(t *testing.T) {
	h := grantsHarness(t)
	granted := h.cfg.Clients[0].APIs
	setGrants := func(g []config.APIGrant) { h.updateClient(appClient, func(c *config.Client) { c.APIs = g }) }
	withAPI := func(scope string) func(url.Values) {
		return func(q url.Values) { q.Set("audience", apiScoped); q.Set("scope", scope) }
	}
	desc := "client app is not authorized to access API " + apiScoped

	t.Run("code redeemed after the grant was removed", func(t *testing.T) {
		code := h.codeFor(appClient, withAPI("openid read:data"))
		setGrants(nil)
		defer setGrants(granted)
		r := h.tokenAt(h.srv.URL, appClient, h.codeGrant(appClient, code))
		wantOAuth(t, r, http.StatusForbidden, "access_denied", desc)
		if r.str("access_token") != "" {
			t.Fatalf("tokens issued: %v", r.body)
		}
		wantEvent(t, h, logs.TypeFailedExchange, map[string]any{"error": "access_denied", "audience": apiScoped})
	})
	t.Run("refresh after the grant was removed", func(t *testing.T) {
		code := h.codeFor(appClient, withAPI("openid offline_access read:data"))
		r := h.tok(tokReq{client: appClient, form: h.codeGrant(appClient, code)})
		if r.status != 200 || r.str("refresh_token") == "" || r.str("scope") != "openid offline_access read:data" {
			t.Fatalf("code redemption: %d %v", r.status, r.body)
		}
		rt := r.str("refresh_token")
		setGrants(nil)
		wantOAuth(t, h.tokenAt(h.srv.URL, appClient, refreshGrant(rt)), http.StatusForbidden, "access_denied", desc)
		wantEvent(t, h, logs.TypeFailedRefresh, map[string]any{"error": "access_denied", "audience": apiScoped})
		// Granted again: the same token still works.
		setGrants(granted)
		if r2 := h.tok(tokReq{client: appClient, form: refreshGrant(rt)}); r2.status != 200 || r2.str("scope") != "openid offline_access read:data" {
			t.Fatalf("refresh with the grant: %d %v", r2.status, r2.body)
		}
	})
	t.Run("refresh after the grant was narrowed", func(t *testing.T) {
		code := h.codeFor(appClient, withAPI("openid offline_access read:data write:data"))
		r := h.tok(tokReq{client: appClient, form: h.codeGrant(appClient, code)})
		if r.status != 200 || r.str("scope") != "openid offline_access read:data write:data" {
			t.Fatalf("code redemption: %d %v", r.status, r.body)
		}
		setGrants([]config.APIGrant{{Audience: apiScoped, Scopes: []string{"read:data"}}})
		defer setGrants(granted)
		r2 := h.tokenAt(h.srv.URL, appClient, refreshGrant(r.str("refresh_token")))
		if r2.status != 200 || r2.str("scope") != "openid offline_access read:data" || claimsOf(t, r2.str("access_token"))["scope"] != "openid offline_access read:data" {
			t.Fatalf("refresh under the narrowed grant: %d %v", r2.status, r2.body)
		}
		wantEvent(t, h, logs.TypeSuccessRefresh, map[string]any{
			"scope": "openid offline_access read:data", "scope_narrowed": true, "scope_dropped": "write:data",
		})
	})
}

// TestPublicClientCannotEscalateScope: a public client (anyone can act as it) asks for
// admin:all on an API it is granted read:data of. The whole login runs over HTTP through the
// upstream; the access token, the token response and the refresh carry only the granted
// scopes, the event records what was dropped, and an API behind dpop.ResourceServer (which
// verifies the broker's at+jwt token with its JWKS) sees no admin:all.
func TestPublicClientCannotEscalateScope(t *testing.T) {
	h := grantsHarness(t)
	code := h.codeFor(spaClient, func(q url.Values) {
		q.Set("audience", apiScoped)
		q.Set("scope", "openid admin:all read:data write:data offline_access")
	})
	r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code)})
	const granted = "openid read:data offline_access"
	if r.status != 200 || r.str("scope") != granted {
		t.Fatalf("token response %d %v, want scope %q", r.status, r.body, granted)
	}
	at := r.str("access_token")
	if c := claimsOf(t, at); c["scope"] != granted {
		t.Fatalf("access token scope %v, want %q", c["scope"], granted)
	}
	wantEvent(t, h, logs.TypeSuccessExchange, map[string]any{
		"scope": granted, "scope_narrowed": true, "scope_dropped": "admin:all write:data", "audience": apiScoped,
	})

	// The API's view of the token.
	var seen map[string]any
	rs := &dpop.ResourceServer{
		Issuer: h.cfg.Issuer, Audience: apiScoped,
		KeySet:   oidc.NewRemoteKeySet(context.Background(), h.srv.URL+"/.well-known/jwks.json"),
		Verifier: &dpop.Verifier{Replay: dpop.NewMemoryReplayCache(100)},
	}
	apiSrv := httptest.NewUnstartedServer(nil)
	rs.PublicURL = "http://" + apiSrv.Listener.Addr().String()
	apiSrv.Config.Handler = rs.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = dpop.TokenClaims(r.Context())
		_ = json.NewEncoder(w).Encode(seen)
	}))
	apiSrv.Start()
	t.Cleanup(apiSrv.Close)
	callAPI := func(tok string) int {
		req, _ := http.NewRequest(http.MethodGet, apiSrv.URL+"/data", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		return h.do(req).status
	}
	if s := callAPI(at); s != 200 || seen["scope"] != granted || strings.Contains(seen["scope"].(string), "admin:all") {
		t.Fatalf("API: status %d claims %v", s, seen)
	}
	if s := callAPI(r.str("id_token")); s != http.StatusUnauthorized {
		t.Fatalf("the ID token passed the API as an access token: %d", s)
	}

	// A refresh cannot widen the scope again.
	f := refreshGrant(r.str("refresh_token"))
	f.Set("scope", "openid admin:all")
	wantOAuth(t, h.tok(tokReq{client: spaClient, form: f}), 400, "invalid_scope", "scope admin:all was not granted to this refresh token")
	f.Set("scope", "openid read:data")
	if r2 := h.tok(tokReq{client: spaClient, form: f}); r2.status != 200 || r2.str("scope") != "openid read:data" ||
		claimsOf(t, r2.str("access_token"))["scope"] != "openid read:data" {
		t.Fatalf("narrower refresh: %d %v", r2.status, r2.body)
	}
	wantEvent(t, h, logs.TypeSuccessRefresh, map[string]any{"scope": "openid read:data", "scope_narrowed": false})

	// Without an audience only the OpenID Connect scopes are granted.
	code = h.codeFor(spaClient, func(q url.Values) { q.Set("scope", "openid admin:all") })
	r = h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code)})
	if r.status != 200 || r.str("scope") != "openid" || claimsOf(t, r.str("access_token"))["scope"] != "openid" {
		t.Fatalf("userinfo-only token: %d %v", r.status, r.body)
	}
}

// TestConfidentialClientGetsGrantedScopes: a client granted every scope of an API receives
// the ones it asks for, no more, and the token response says so even when nothing changed.
func TestConfidentialClientGetsGrantedScopes(t *testing.T) {
	h := grantsHarness(t)
	code := h.codeFor(appClient, func(q url.Values) {
		q.Set("audience", apiScoped)
		q.Set("scope", "openid profile read:data admin:all")
	})
	r := h.tok(tokReq{client: appClient, form: h.codeGrant(appClient, code)})
	if r.status != 200 || r.str("scope") != "openid profile read:data admin:all" ||
		claimsOf(t, r.str("access_token"))["scope"] != "openid profile read:data admin:all" {
		t.Fatalf("%d %v", r.status, r.body)
	}
	ev := wantEvent(t, h, logs.TypeSuccessExchange, map[string]any{"scope": "openid profile read:data admin:all", "scope_narrowed": false})
	if _, ok := ev.Details["scope_dropped"]; ok {
		t.Errorf("scope_dropped without anything dropped: %v", ev.Details)
	}
}

// TestUserinfoRefusesTokenNotTypedAtJWT: /userinfo accepts only the broker's access tokens;
// a JWT signed by the broker's key with every access-token claim but typ JWT (what its ID
// tokens carry) is refused.
func TestUserinfoRefusesTokenNotTypedAtJWT(t *testing.T) {
	h := grantsHarness(t)
	code := h.codeFor(appClient, func(q url.Values) { q.Set("audience", apiScoped) })
	at := h.tok(tokReq{client: appClient, form: h.codeGrant(appClient, code)}).str("access_token")
	if u := h.userinfo("Bearer "+at, ""); u.status != 200 {
		t.Fatalf("the at+jwt access token: %d %v", u.status, u.body)
	}
	claims := claimsOf(t, at)
	forged, err := signJWT(h.broker.idSigner, claims) // same key, same claims, typ JWT
	if err != nil {
		t.Fatal(err)
	}
	u := h.userinfo("Bearer "+forged, "")
	if u.status != http.StatusUnauthorized || u.str("error") != "invalid_token" || u.str("error_description") != "not an access token (typ must be at+jwt)" {
		t.Fatalf("JWT typed JWT at /userinfo: %d %v", u.status, u.body)
	}
}

// TestManagementRefusesAudienceInEnabledClients: enabled_clients names clients; an API
// audience (or the userinfo audience) there is refused with 400 invalid_body naming it, on
// POST and on PATCH.
func TestManagementRefusesAudienceInEnabledClients(t *testing.T) {
	h := newHarness(t, harnessOpts{up: optionalDPoPUp, mutate: func(c *config.Config) {
		withMgmt(c)
		c.APIs = []config.API{{Audience: apiScoped}}
	}})
	userinfo := h.broker.userinfoAudience()
	for _, tc := range []struct {
		name, method, path string
		body               map[string]any
		want               string
	}{
		{name: "POST with an API audience", method: http.MethodPost, path: "/api/v2/connections",
			body: map[string]any{"name": "partner", "strategy": "oidc", "enabled_clients": []string{appClient, apiScoped},
				"options": map[string]any{"issuer": h.up.URL, "client_id": "c", "client_secret": "s"}},
			want: `enabled_clients[1]: "` + apiScoped + `" is the audience of apis[0], not a client id`},
		{name: "PATCH with the userinfo audience", method: http.MethodPatch, path: "/api/v2/connections/" + config.DeriveConnectionID("corp"),
			body: map[string]any{"enabled_clients": []string{userinfo}},
			want: `enabled_clients[0]: "` + userinfo + `" is the broker's userinfo audience, not a client id`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := api(t, h.srv.URL, tc.method, tc.path, tokAll, tc.body)
			wantAPIError(t, r, http.StatusBadRequest, "invalid_body", tc.want)
			if strings.Contains(r.raw, "is not defined in clients") {
				t.Errorf("the audience is reported twice: %s", r.raw)
			}
			if ev := h.lastEvent(); ev.Type != logs.TypeFailedAPI {
				t.Errorf("event %+v, want fapi", ev)
			}
		})
	}
}
