package broker

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/sessions/redistest"
)

// tokClients holds every clients scope, and read, create and update of connections.
var tokClients = strings.Repeat("k", 40)

func withClientsMgmt(c *config.Config) {
	withMgmt(c)
	c.Management.Tokens = append(c.Management.Tokens, config.ManagementToken{Name: "apps", Token: tokClients, Scopes: []string{
		config.ScopeReadClients, config.ScopeCreateClients, config.ScopeUpdateClients, config.ScopeDeleteClients, config.ScopeReadConnections, config.ScopeCreateConnections, config.ScopeUpdateConnections,
	}})
}

// tokenWith redeems code at base's /oauth/token as clientID with secret (client_secret_basic).
func tokenWith(t *testing.T, h *harness, base, clientID, secret, code, redirectURI string) (int, map[string]any) {
	t.Helper()
	form := h.codeForm(code)
	form.Set("redirect_uri", redirectURI)
	req, _ := http.NewRequest(http.MethodPost, base+"/oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body := map[string]any{}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

// fmtJSON is v as JSON.
func fmtJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// loginAs runs /authorize at base for clientID and returns the app's callback query.
func loginAs(t *testing.T, h *harness, base, clientID, redirectURI string) url.Values {
	t.Helper()
	u := strings.Replace(h.authorizeURL(func(q url.Values) {
		q.Set("client_id", clientID)
		q.Set("redirect_uri", redirectURI)
	}), h.srv.URL, base, 1)
	resp, _ := get(t, h.browser(), u)
	return appResult(t, resp, redirectURI)
}

func TestMgmtClients(t *testing.T) {
	forStores(t, func(t *testing.T, store func() sessions.Store) {
		h := newHarness(t, harnessOpts{up: optionalDPoPUp, store: store(), mutate: withClientsMgmt})
		base := h.srv.URL
		var responses []string // every body but the two that hand out a secret, checked at the end
		call := func(method, path string, body any) apiResp {
			r := api(t, base, method, path, tokClients, body)
			responses = append(responses, r.raw)
			return r
		}
		cb := h.app.URL + "/new-cb"

		t.Run("list: the YAML clients, by client_id, without secrets", func(t *testing.T) {
			r := call("GET", "/api/v2/clients", nil)
			if r.status != 200 || len(r.list()) != 2 {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			app := r.list()[0].(map[string]any)
			if app["client_id"] != appClient || app["token_endpoint_auth_method"] != config.AuthSecretBasic || r.list()[1].(map[string]any)["client_id"] != spaClient {
				t.Errorf("list = %s", r.raw)
			}
			if cbs := app["callbacks"].([]any); len(cbs) != 1 || cbs[0] != h.app.URL+"/cb" {
				t.Errorf("callbacks = %v", cbs)
			}
		})
		t.Run("paging: include_totals, checkpoint, unknown parameter refused", func(t *testing.T) {
			r := call("GET", "/api/v2/clients?page=1&per_page=1&include_totals=true", nil)
			if m := r.obj(); m["total"] != float64(2) || len(m["clients"].([]any)) != 1 || m["clients"].([]any)[0].(map[string]any)["client_id"] != spaClient {
				t.Errorf("page 1: %s", r.raw)
			}
			r = call("GET", "/api/v2/clients?take=1", nil)
			next, _ := r.obj()["next"].(string)
			if r = call("GET", "/api/v2/clients?take=1&from="+next, nil); r.obj()["clients"].([]any)[0].(map[string]any)["client_id"] != spaClient || r.obj()["next"] != nil {
				t.Errorf("checkpoint: %s", r.raw)
			}
			wantAPIError(t, call("GET", "/api/v2/clients?app_type=spa", nil), 400, "invalid_query_string", "Additional properties not allowed: app_type")
			wantAPIError(t, call("GET", "/api/v2/clients/"+appClient+"?page=1", nil), 400, "invalid_query_string", "Additional properties not allowed: page")
			wantAPIError(t, call("POST", "/api/v2/clients/"+appClient+"/rotate-secret?dry_run=1", nil), 400, "invalid_query_string", "accepts no query parameters")
		})

		var id, secret, pub string
		t.Run("POST: 201, generated client_id and secret shown once, sapi event without the secret", func(t *testing.T) {
			r := api(t, base, "POST", "/api/v2/clients", tokClients, map[string]any{
				"name": "New app", "callbacks": []string{cb}, "connections": []string{"corp"},
			})
			m := r.obj()
			if r.status != 201 {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			id, _ = m["client_id"].(string)
			secret, _ = m["client_secret"].(string)
			if len(id) != 32 || len(secret) != 64 || m["token_endpoint_auth_method"] != config.AuthSecretBasic {
				t.Fatalf("created %s", r.raw)
			}
			ev := h.lastEvent()
			if ev.Type != logs.TypeSuccessAPI || ev.Details["response"].(map[string]any)["statusCode"] != float64(201) {
				t.Errorf("event %+v", ev)
			}
			if c, _ := ev.Details["client"].(map[string]any); c["client_id"] != id {
				t.Errorf("event details.client = %v", ev.Details["client"])
			}
			if strings.Contains(fmtJSON(t, ev), secret) {
				t.Error("the sapi event carries the secret")
			}
			if g := call("GET", "/api/v2/clients/"+id, nil); g.status != 200 || g.obj()["name"] != "New app" || g.obj()["client_secret"] != nil {
				t.Errorf("GET = %s", g.raw)
			}
		})
		t.Run("the new client logs in and redeems its code with the generated secret", func(t *testing.T) {
			q := loginAs(t, h, base, id, cb)
			if q.Get("code") == "" {
				t.Fatalf("login: %v", q)
			}
			if st, body := tokenWith(t, h, base, id, secret, q.Get("code"), cb); st != 200 || body["id_token"] == nil {
				t.Fatalf("token: %d %v", st, body)
			}
			if st, body := tokenWith(t, h, base, id, "wrong", loginAs(t, h, base, id, cb).Get("code"), cb); st != 401 || body["error"] != "invalid_client" {
				t.Errorf("wrong secret: %d %v", st, body)
			}
		})
		t.Run("GET, modify, PATCH the whole object round-trips", func(t *testing.T) {
			obj := call("GET", "/api/v2/clients/"+id, nil).obj()
			obj["callbacks"] = []any{cb, cb + "2"}
			obj["allowed_origins"] = []any{"http://127.0.0.1:5173"}
			r := call("PATCH", "/api/v2/clients/"+id, obj)
			if r.status != 200 || len(r.obj()["callbacks"].([]any)) != 2 || r.obj()["client_secret"] != nil {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			// Its event says what changed: the two lists, before and after.
			changes, _ := h.lastEventOf(logs.TypeSuccessAPI).Details["changes"].([]any)
			var fields []string
			for _, c := range changes {
				ch, _ := c.(map[string]any)
				f, _ := ch["field"].(string)
				fields = append(fields, f)
			}
			if !slices.Equal(fields, []string{"allowed_origins", "redirect_uris"}) {
				t.Errorf("details.changes = %#v, want allowed_origins and redirect_uris", changes)
			}
			// The secret did not change: the client still authenticates with it.
			if st, _ := tokenWith(t, h, base, id, secret, loginAs(t, h, base, id, cb).Get("code"), cb); st != 200 {
				t.Errorf("token after PATCH: %d", st)
			}
			// The new origin is allowed for CORS at once.
			req, _ := http.NewRequest(http.MethodOptions, base+"/oauth/token", nil)
			req.Header.Set("Origin", "http://127.0.0.1:5173")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.Header.Get("Access-Control-Allow-Origin") != "http://127.0.0.1:5173" {
				t.Errorf("CORS for the patched origin: %v", resp.Header)
			}
		})
		t.Run("refusals: the same reasons as config validate, under the API's names", func(t *testing.T) {
			bad := config.Client{ClientID: "x", ClientSecret: "s", RedirectURIs: []string{"http://app.example.com/cb"}, Connections: []string{"nope"}}
			cfg := *h.cfg
			cfg.Clients = append(slices.Clone(h.cfg.Clients), bad)
			var cbReason, connReason string
			for _, e := range cfg.Validate() {
				switch e.Key {
				case "clients[2].redirect_uris[0]":
					cbReason = e.Reason
				case "clients[2].connections[0]":
					connReason = e.Reason
				}
			}
			if cbReason == "" || connReason == "" {
				t.Fatalf("config validate gave no reason for the bad client")
			}
			r := call("POST", "/api/v2/clients", map[string]any{"name": "bad", "callbacks": bad.RedirectURIs, "connections": bad.Connections})
			wantAPIError(t, r, 400, "invalid_body", "callbacks[0]: "+cbReason)
			wantAPIError(t, r, 400, "invalid_body", "connections[0]: "+connReason)
			for _, tc := range []struct {
				name, method, path string
				body               any
				msg                string
			}{
				{name: "a client_secret is never accepted", method: "POST", path: "/api/v2/clients", body: map[string]any{"name": "x", "callbacks": []string{cb}, "client_secret": "my-own-secret-value"}, msg: "client_secret is generated by the broker"},
				{name: "a client_id is never accepted on create", method: "POST", path: "/api/v2/clients", body: map[string]any{"name": "x", "client_id": "mine", "callbacks": []string{cb}}, msg: "client_id is generated"},
				{name: "name is required", method: "POST", path: "/api/v2/clients", body: map[string]any{"callbacks": []string{cb}}, msg: "Missing required property: name"},
				{name: "name is not empty", method: "PATCH", path: "/api/v2/clients/" + id, body: map[string]any{"name": " "}, msg: "name: must be 1 to 128 characters"},
				{name: "unknown member", method: "POST", path: "/api/v2/clients", body: map[string]any{"name": "x", "callbacks": []string{cb}, "grant_types": []string{"implicit"}}, msg: "Additional properties not allowed: grant_types"},
				{name: "unsupported method", method: "POST", path: "/api/v2/clients", body: map[string]any{"name": "x", "callbacks": []string{cb}, "token_endpoint_auth_method": "private_key_jwt"}, msg: `token_endpoint_auth_method: "private_key_jwt" is not supported`},
				{name: "client_id cannot change", method: "PATCH", path: "/api/v2/clients/" + id, body: map[string]any{"client_id": "other"}, msg: "client_id cannot be changed"},
				{name: "no callbacks", method: "PATCH", path: "/api/v2/clients/" + id, body: map[string]any{"callbacks": []string{}}, msg: "callbacks: at least one redirect URI is required"},
				{name: "two back-channel logout URLs", method: "PATCH", path: "/api/v2/clients/" + id, body: map[string]any{"oidc_logout": map[string]any{"backchannel_logout_urls": []string{cb, cb}}}, msg: "at most one URL"},
				{name: "an ungranted API", method: "PATCH", path: "/api/v2/clients/" + id, body: map[string]any{"apis": []map[string]any{{"audience": "https://nope.example"}}}, msg: `apis[0].audience: API "https://nope.example" is not defined in apis`},
			} {
				t.Run(tc.name, func(t *testing.T) {
					wantAPIError(t, call(tc.method, tc.path, tc.body), 400, "invalid_body", tc.msg)
					if ev := h.lastEvent(); ev.Type != logs.TypeFailedAPI || strings.Contains(fmtJSON(t, ev), "my-own-secret-value") {
						t.Errorf("event %s", fmtJSON(t, ev))
					}
				})
			}
			wantAPIError(t, call("GET", "/api/v2/clients/nope", nil), 404, "inexistent_client", "The client does not exist.")
			wantAPIError(t, call("POST", "/api/v2/clients/nope/rotate-secret", nil), 404, "inexistent_client", "")
			wantAPIError(t, api(t, base, "POST", "/api/v2/clients", tokRead, map[string]any{"name": "x"}), 403, "insufficient_scope", "create:clients")
			wantAPIError(t, api(t, base, "GET", "/api/v2/clients", tokRead, nil), 403, "insufficient_scope", "read:clients")
			wantAPIError(t, api(t, base, "POST", "/api/v2/clients/"+id+"/rotate-secret", tokRead, nil), 403, "insufficient_scope", "update:clients")
			wantAPIError(t, api(t, base, "DELETE", "/api/v2/clients/"+id, tokRead, nil), 403, "insufficient_scope", "delete:clients")
		})
		t.Run("rotate-secret: the new secret works at once, the old one no more", func(t *testing.T) {
			r := api(t, base, "POST", "/api/v2/clients/"+id+"/rotate-secret", tokClients, nil)
			fresh, _ := r.obj()["client_secret"].(string)
			if r.status != 200 || len(fresh) != 64 || fresh == secret {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			if st, _ := tokenWith(t, h, base, id, secret, loginAs(t, h, base, id, cb).Get("code"), cb); st != 401 {
				t.Errorf("old secret after rotation: %d", st)
			}
			if st, _ := tokenWith(t, h, base, id, fresh, loginAs(t, h, base, id, cb).Get("code"), cb); st != 200 {
				t.Errorf("new secret: %d", st)
			}
			secret = fresh
		})
		t.Run("public client: no secret, none to rotate; made confidential it gets one", func(t *testing.T) {
			r := call("POST", "/api/v2/clients", map[string]any{"name": "SPA", "callbacks": []string{cb}, "token_endpoint_auth_method": "none", "connections": []string{"corp"}})
			pub, _ = r.obj()["client_id"].(string)
			if r.status != 201 || r.obj()["client_secret"] != nil {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			wantAPIError(t, call("POST", "/api/v2/clients/"+pub+"/rotate-secret", nil), 400, "invalid_body", "has no secret to rotate")
			r = api(t, base, "PATCH", "/api/v2/clients/"+pub, tokClients, map[string]any{"token_endpoint_auth_method": "client_secret_post"})
			if s, _ := r.obj()["client_secret"].(string); r.status != 200 || len(s) != 64 {
				t.Fatalf("%d %s", r.status, r.raw)
			}
		})
		t.Run("the number of clients is bounded", func(t *testing.T) {
			h.broker.maxClients = 4 // app, spa and the two created above
			defer func() { h.broker.maxClients = defaultMaxClients }()
			wantAPIError(t, call("POST", "/api/v2/clients", map[string]any{"name": "one too many", "callbacks": []string{cb}}), 400, "too_many_clients", "at most 4 clients")
		})
		t.Run("a connection may enable an API-created client by enabled_clients", func(t *testing.T) {
			r := call("PATCH", "/api/v2/connections/"+config.DeriveConnectionID("other"), map[string]any{"enabled_clients": []string{pub}})
			if r.status != 200 {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			if r := call("GET", "/api/v2/connections/"+config.DeriveConnectionID("other"), nil); !strings.Contains(r.raw, pub) {
				t.Errorf("enabled_clients after PATCH: %s", r.raw)
			}
		})
		t.Run("DELETE: 204, logins and token requests refused; a YAML client stays deleted at restart", func(t *testing.T) {
			code := loginAs(t, h, base, id, cb).Get("code")
			if r := call("DELETE", "/api/v2/clients/"+id, nil); r.status != 204 {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			if st, body := tokenWith(t, h, base, id, secret, code, cb); st != 401 || body["error"] != "invalid_client" {
				t.Errorf("token of a deleted client: %d %v", st, body)
			}
			resp, body := get(t, h.browser(), strings.Replace(h.authorizeURL(func(q url.Values) { q.Set("client_id", id); q.Set("redirect_uri", cb) }), h.srv.URL, base, 1))
			if resp.StatusCode != 400 || !strings.Contains(body, "Unknown client_id") {
				t.Errorf("authorize of a deleted client: %d", resp.StatusCode)
			}
			if r := call("DELETE", "/api/v2/clients/"+pub, nil); r.status != 204 {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			other := call("GET", "/api/v2/connections/"+config.DeriveConnectionID("other"), nil).obj()
			if strings.Contains(fmtJSON(t, other["enabled_clients"]), pub) {
				t.Errorf("a deleted client stays in enabled_clients: %v", other["enabled_clients"])
			}
			if r := call("PATCH", "/api/v2/connections/"+config.DeriveConnectionID("other"), map[string]any{"display_name": "after the delete"}); r.status != 200 {
				t.Errorf("PATCH of the connection after its client was deleted: %d %s", r.status, r.raw)
			}
			if r := call("DELETE", "/api/v2/clients/"+spaClient, nil); r.status != 204 {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			b := h.restarted(h.store, nil)
			if err := b.Init(context.Background()); err != nil {
				t.Fatal(err)
			}
			if b.cachedClient(spaClient) != nil || b.cachedClient(appClient) == nil {
				t.Error("restart with the same YAML: the deleted YAML client came back, or another went missing")
			}
			if _, err := h.store.(sessions.Clients).ClientTombstone(context.Background(), id); !errors.Is(err, sessions.ErrNotFound) {
				t.Errorf("an API-created client left a tombstone: %v", err)
			}
		})
		for _, raw := range responses {
			if secret != "" && strings.Contains(raw, secret) {
				t.Errorf("a response carries the client secret: %s", raw)
			}
		}
	})
}

// TestClientSeeding: an API edit of a YAML client survives a restart with the same YAML; an
// edited YAML entry (a new secret) wins, and the store holds only the secret's hash.
func TestClientSeeding(t *testing.T) {
	st := sessions.NewMemory()
	h := newHarness(t, harnessOpts{up: optionalDPoPUp, store: st, mutate: withClientsMgmt})
	if r := api(t, h.srv.URL, "PATCH", "/api/v2/clients/"+appClient, tokClients, map[string]any{"name": "Edited"}); r.status != 200 {
		t.Fatal(r.raw)
	}
	restart := func(mut func(*config.Config)) *Server {
		b := h.restarted(st, mut)
		if err := b.Init(context.Background()); err != nil {
			t.Fatal(err)
		}
		return b
	}
	if b := restart(nil); b.cachedClient(appClient).Name != "Edited" {
		t.Errorf("unchanged YAML: name %q, want the API's edit", b.cachedClient(appClient).Name)
	}
	b := restart(func(c *config.Config) { c.Clients[0].ClientSecret = "rotated-in-yaml" })
	if b.cachedClient(appClient).Name == "Edited" {
		t.Error("an edited YAML entry did not win over the store")
	}
	raw, err := st.(sessions.Clients).GetClient(context.Background(), appClient)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "rotated-in-yaml") || !strings.Contains(string(raw), secretSHA256("rotated-in-yaml")) {
		t.Errorf("stored document %s: want the secret's hash only", raw)
	}
}

// TestClientCreatedOnOneReplicaLogsInOnAnother: two brokers on one Redis; a client created
// through A's management API logs in and redeems its code through B at once, and a secret
// rotated through A works at B at once.
func TestClientCreatedOnOneReplicaLogsInOnAnother(t *testing.T) {
	addr := redistest.Start(t)
	h := newHarness(t, harnessOpts{up: optionalDPoPUp, store: redisStore(t, addr), mutate: withClientsMgmt})
	srvB := httptest.NewUnstartedServer(nil)
	cfgB := *h.cfg
	cfgB.Issuer = "http://" + srvB.Listener.Addr().String() + "/"
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := New(&cfgB, Deps{Store: redisStore(t, addr), Events: &logs.Writer{Logger: logger, Store: sessions.NewMemory()}, Logger: logger, Keys: testKeys(t, "RS256")})
	if err != nil {
		t.Fatal(err)
	}
	srvB.Config.Handler = b.Handler()
	srvB.Start()
	t.Cleanup(srvB.Close)
	// B has loaded its snapshot (so only a version check can show it the new client).
	if r := api(t, srvB.URL, "GET", "/api/v2/clients", tokClients, nil); r.status != 200 || len(r.list()) != 2 {
		t.Fatalf("B: %d %s", r.status, r.raw)
	}
	cb := h.app.URL + "/replica-cb"
	r := api(t, h.srv.URL, "POST", "/api/v2/clients", tokClients, map[string]any{"name": "Made on A", "callbacks": []string{cb}, "connections": []string{"corp"}})
	if r.status != 201 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	id, secret := r.obj()["client_id"].(string), r.obj()["client_secret"].(string)
	q := loginAs(t, h, srvB.URL, id, cb)
	if q.Get("code") == "" {
		t.Fatalf("login through B: %v", q)
	}
	if st, body := tokenWith(t, h, srvB.URL, id, secret, q.Get("code"), cb); st != 200 || body["id_token"] == nil {
		t.Fatalf("token at B: %d %v", st, body)
	}
	r = api(t, h.srv.URL, "POST", "/api/v2/clients/"+id+"/rotate-secret", tokClients, nil)
	fresh, _ := r.obj()["client_secret"].(string)
	if st, body := tokenWith(t, h, srvB.URL, id, fresh, loginAs(t, h, srvB.URL, id, cb).Get("code"), cb); st != 200 {
		t.Fatalf("rotated secret at B: %d %v", st, body)
	}
	if st, _ := tokenWith(t, h, srvB.URL, id, secret, loginAs(t, h, srvB.URL, id, cb).Get("code"), cb); st != 401 {
		t.Errorf("old secret at B after a rotation through A: %d, want 401", st)
	}
}

// hostRewrite sends the requests for one host and path to another address, as a load balancer
// would send a browser's next request to another replica.
type hostRewrite struct {
	from, to, path string
}

func (rw hostRewrite) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host == rw.from && req.URL.Path == rw.path {
		req = req.Clone(req.Context())
		req.URL.Host = rw.to
	}
	return http.DefaultTransport.RoundTrip(req)
}

// TestCallbackOnAReplicaThatHasNotSeenTheClient: replicas B and C serve one public URL; C
// loaded its clients before a client was created through A. A login of that client starts at
// B and its callback lands on C within C's recheck interval: C looks at the store before it
// refuses, and the login completes.
func TestCallbackOnAReplicaThatHasNotSeenTheClient(t *testing.T) {
	addr := redistest.Start(t)
	h := newHarness(t, harnessOpts{up: optionalDPoPUp, store: redisStore(t, addr), mutate: withClientsMgmt})
	srvB, srvC := httptest.NewUnstartedServer(nil), httptest.NewUnstartedServer(nil)
	cfg := *h.cfg
	cfg.Issuer = "http://" + srvB.Listener.Addr().String() + "/"
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, srv := range []*httptest.Server{srvB, srvC} {
		b, err := New(&cfg, Deps{Store: redisStore(t, addr), Events: &logs.Writer{Logger: logger, Store: sessions.NewMemory()}, Logger: logger, Keys: testKeys(t, "RS256")})
		if err != nil {
			t.Fatal(err)
		}
		srv.Config.Handler = b.Handler()
		srv.Start()
		t.Cleanup(srv.Close)
	}
	if r := api(t, srvC.URL, "GET", "/api/v2/clients", tokClients, nil); r.status != 200 {
		t.Fatalf("C: %d %s", r.status, r.raw)
	}
	cb := h.app.URL + "/c-cb"
	r := api(t, h.srv.URL, "POST", "/api/v2/clients", tokClients, map[string]any{"name": "Made on A", "callbacks": []string{cb}, "connections": []string{"corp"}})
	if r.status != 201 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	id := r.obj()["client_id"].(string)
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Transport: hostRewrite{from: srvB.Listener.Addr().String(), to: srvC.Listener.Addr().String(), path: "/login/callback"}}
	u := strings.Replace(h.authorizeURL(func(q url.Values) { q.Set("client_id", id); q.Set("redirect_uri", cb) }), h.srv.URL, srvB.URL, 1)
	resp, body := get(t, browser, u)
	if q := appResult(t, resp, cb); q.Get("code") == "" {
		t.Fatalf("login with the callback on C: %v %s", q, body)
	}
}

// TestConnectionByIDListsClientsThatNameIt: GET /api/v2/connections/{id} lists in
// enabled_clients every client whose own connections list names the connection, also as the
// first call a fresh broker answers and for a client just created through another replica.
func TestConnectionByIDListsClientsThatNameIt(t *testing.T) {
	addr := redistest.Start(t)
	h := newHarness(t, harnessOpts{up: optionalDPoPUp, store: redisStore(t, addr), mutate: withClientsMgmt})
	corpID := config.DeriveConnectionID("corp")
	enabled := func(base string) []any {
		t.Helper()
		r := api(t, base, "GET", "/api/v2/connections/"+corpID, tokClients, nil)
		if r.status != 200 {
			t.Fatalf("%d %s", r.status, r.raw)
		}
		ec, _ := r.obj()["enabled_clients"].([]any)
		return ec
	}
	// A replica that has answered nothing yet (no login, no list, not initialised).
	b := h.restarted(redisStore(t, addr), nil)
	srvB := httptest.NewServer(b.Handler())
	t.Cleanup(srvB.Close)
	if ec := enabled(srvB.URL); len(ec) != 2 || ec[0] != appClient || ec[1] != spaClient {
		t.Errorf("first call of a fresh replica: enabled_clients = %v, want [%s %s]", ec, appClient, spaClient)
	}
	r := api(t, h.srv.URL, "POST", "/api/v2/clients", tokClients, map[string]any{
		"name": "New app", "callbacks": []string{"https://new.example.com/cb"}, "connections": []string{"corp"},
	})
	if r.status != 201 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	id, _ := r.obj()["client_id"].(string)
	if ec := enabled(srvB.URL); !slices.Contains(ec, any(id)) {
		t.Errorf("client created through another replica: enabled_clients = %v, want it to contain %s", ec, id)
	}
}
