package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/sessions/redistest"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// Management tokens of the test configuration.
var (
	tokAll   = strings.Repeat("a", 40)
	tokRead  = strings.Repeat("r", 40)
	tokLogs  = strings.Repeat("l", 40)
	tokWrong = strings.Repeat("w", 40)
)

// optionalDPoPUp offers ES256 and Ed25519 but accepts requests without a proof.
var optionalDPoPUp = demoidp.Options{DPoPAlgs: []string{"ES256", "Ed25519"}}

func withMgmt(c *config.Config) {
	c.Management.Tokens = []config.ManagementToken{
		{Name: "ops", Token: tokAll, Scopes: []string{config.ScopeReadConnections, config.ScopeCreateConnections, config.ScopeUpdateConnections, config.ScopeDeleteConnections, config.ScopeReadLogs}},
		{Name: "reader", Token: tokRead, Scopes: []string{config.ScopeReadConnections}},
		{Name: "auditor", Token: tokLogs, Scopes: []string{config.ScopeReadLogs}},
	}
}

func mgmtHarness(t *testing.T, store sessions.Store) *harness {
	t.Helper()
	return newHarness(t, harnessOpts{up: optionalDPoPUp, store: store, mutate: withMgmt})
}

// redisStore opens a client on a private redis-server.
func redisStore(t *testing.T, addr string) sessions.Store {
	t.Helper()
	st, err := sessions.NewRedis(sessions.RedisConfig{Addrs: []string{addr}, Prefix: "mgmt-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// forStores runs f with a memory store and with a real Redis.
func forStores(t *testing.T, f func(t *testing.T, store func() sessions.Store)) {
	t.Run("memory", func(t *testing.T) {
		st := sessions.NewMemory()
		f(t, func() sessions.Store { return st })
	})
	t.Run("redis", func(t *testing.T) {
		addr := redistest.Start(t)
		f(t, func() sessions.Store { return redisStore(t, addr) })
	})
}

type apiResp struct {
	status int
	header http.Header
	raw    string
	body   any
}

func (r apiResp) obj() map[string]any {
	m, _ := r.body.(map[string]any)
	return m
}

func (r apiResp) list() []any {
	l, _ := r.body.([]any)
	return l
}

// api calls the management API of base with token ("" = no Authorization header).
func api(t *testing.T, base, method, path, token string, body any) apiResp {
	t.Helper()
	var rd io.Reader
	if body != nil {
		if s, ok := body.(string); ok {
			rd = strings.NewReader(s)
		} else {
			b, err := json.Marshal(body)
			if err != nil {
				t.Fatal(err)
			}
			rd = bytes.NewReader(b)
		}
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := apiResp{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out.body); err != nil {
			t.Fatalf("%s %s: %d non-JSON body %q", method, path, resp.StatusCode, raw)
		}
	}
	return out
}

// wantAPIError checks the SaaS error body ({statusCode, error, message, errorCode}) exactly.
func wantAPIError(t *testing.T, r apiResp, status int, code, msgPart string) {
	t.Helper()
	m := r.obj()
	if r.status != status || m == nil {
		t.Fatalf("status %d body %s, want %d %s", r.status, r.raw, status, code)
	}
	if len(m) != 4 || m["statusCode"] != float64(status) || m["error"] != http.StatusText(status) || m["errorCode"] != code {
		t.Fatalf("error body %s, want statusCode %d, error %q, errorCode %q and message", r.raw, status, http.StatusText(status), code)
	}
	if msg, _ := m["message"].(string); !strings.Contains(msg, msgPart) {
		t.Fatalf("message %q does not contain %q", msg, msgPart)
	}
}

// events returns the newest n stored events, newest first.
func (h *harness) recentEvents(n int) []logs.Event {
	h.t.Helper()
	evs, err := h.events.Recent(context.Background(), "", n)
	if err != nil {
		h.t.Fatal(err)
	}
	return evs
}

func idOf(t *testing.T, h *harness, name string) string {
	t.Helper()
	r := api(t, h.srv.URL, "GET", "/api/v2/connections?name="+name, tokAll, nil)
	if r.status != 200 || len(r.list()) != 1 {
		t.Fatalf("connection %s: %d %s", name, r.status, r.raw)
	}
	return r.list()[0].(map[string]any)["id"].(string)
}

func TestMgmtAuth(t *testing.T) {
	h := mgmtHarness(t, nil)
	base := h.srv.URL
	for _, tc := range []struct {
		name, method, path, auth string
		status                   int
		code, msg                string
	}{
		{name: "no Authorization header is 401 missing_authorization", method: "GET", path: "/api/v2/connections", auth: "", status: 401, code: "missing_authorization", msg: "Missing authentication"},
		{name: "wrong token is 401 invalid_token", method: "GET", path: "/api/v2/connections", auth: "Bearer " + tokWrong, status: 401, code: "invalid_token", msg: "Invalid token"},
		{name: "Basic scheme is 401 invalid_token", method: "GET", path: "/api/v2/connections", auth: "Basic " + tokAll, status: 401, code: "invalid_token", msg: "Bearer"},
		{name: "empty bearer is 401", method: "GET", path: "/api/v2/logs", auth: "Bearer ", status: 401, code: "invalid_token", msg: ""},
		{name: "token prefix is 401 (whole token compared)", method: "GET", path: "/api/v2/connections", auth: "Bearer " + tokAll[:39], status: 401, code: "invalid_token", msg: ""},
		{name: "read token cannot PATCH: 403 insufficient_scope", method: "PATCH", path: "/api/v2/connections/con_x", auth: "Bearer " + tokRead, status: 403, code: "insufficient_scope", msg: "Insufficient scope, expected any of: update:connections"},
		{name: "read token cannot POST", method: "POST", path: "/api/v2/connections", auth: "Bearer " + tokRead, status: 403, code: "insufficient_scope", msg: "expected any of: create:connections"},
		{name: "read token cannot DELETE", method: "DELETE", path: "/api/v2/connections/con_x", auth: "Bearer " + tokRead, status: 403, code: "insufficient_scope", msg: "delete:connections"},
		{name: "logs token cannot read connections", method: "GET", path: "/api/v2/connections", auth: "Bearer " + tokLogs, status: 403, code: "insufficient_scope", msg: "read:connections"},
		{name: "connections token cannot read logs", method: "GET", path: "/api/v2/logs", auth: "Bearer " + tokRead, status: 403, code: "insufficient_scope", msg: "read:logs"},
		{name: "unknown API path is a JSON 404 after authentication", method: "GET", path: "/api/v2/users", auth: "Bearer " + tokAll, status: 404, code: "not_found", msg: "Not Found"},
		{name: "unknown API path without token is 401", method: "GET", path: "/api/v2/users", auth: "", status: 401, code: "missing_authorization", msg: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, base+tc.path, nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var body any
			_ = json.Unmarshal(raw, &body)
			wantAPIError(t, apiResp{status: resp.StatusCode, raw: string(raw), body: body}, tc.status, tc.code, tc.msg)
			if tc.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without WWW-Authenticate Bearer: %q", resp.Header.Get("WWW-Authenticate"))
			}
			ev := h.lastEvent()
			if ev.Type != logs.TypeFailedAPI {
				t.Fatalf("last event %s, want fapi", ev.Type)
			}
			e, _ := ev.Details["error"].(map[string]any)
			if e == nil || !strings.Contains(e["message"].(string), tc.msg) || e["errorCode"] != tc.code {
				t.Errorf("fapi details.error = %v, want message %q and errorCode %q", ev.Details["error"], tc.msg, tc.code)
			}
			if resp, _ := ev.Details["response"].(map[string]any); resp["statusCode"] != float64(tc.status) {
				t.Errorf("fapi details.response = %v", ev.Details["response"])
			}
		})
	}
	t.Run("no tokens configured: every call is 401", func(t *testing.T) {
		h := newHarness(t, harnessOpts{up: optionalDPoPUp})
		wantAPIError(t, api(t, h.srv.URL, "GET", "/api/v2/connections", tokAll, nil), 401, "invalid_token", "no tokens configured")
		wantAPIError(t, api(t, h.srv.URL, "GET", "/api/v2/logs", tokAll, nil), 401, "invalid_token", "")
	})
	t.Run("reads write no event", func(t *testing.T) {
		before := len(h.recentEvents(1000))
		if r := api(t, base, "GET", "/api/v2/connections", tokAll, nil); r.status != 200 {
			t.Fatal(r.raw)
		}
		if r := api(t, base, "GET", "/api/v2/logs", tokAll, nil); r.status != 200 {
			t.Fatal(r.raw)
		}
		if after := len(h.recentEvents(1000)); after != before {
			t.Errorf("reads wrote %d events", after-before)
		}
	})
}

func TestMgmtConnections(t *testing.T) {
	forStores(t, func(t *testing.T, store func() sessions.Store) {
		h := mgmtHarness(t, store())
		base := h.srv.URL
		var responses []string // every body, checked for the secret at the end
		call := func(method, path string, body any) apiResp {
			r := api(t, base, method, path, tokAll, body)
			responses = append(responses, r.raw)
			return r
		}
		corpID := config.DeriveConnectionID("corp")

		t.Run("list: seeded from YAML, sorted, without enabled_clients or client_secret", func(t *testing.T) {
			r := call("GET", "/api/v2/connections", nil)
			if r.status != 200 || len(r.list()) != 2 {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			first := r.list()[0].(map[string]any)
			if first["id"] != corpID || first["name"] != "corp" || first["strategy"] != "oidc" {
				t.Errorf("first = %v", first)
			}
			if _, ok := first["enabled_clients"]; ok {
				t.Errorf("list has enabled_clients: %v", first)
			}
			if opts := first["options"].(map[string]any); opts["dpop_signing_alg"] != "ES256" || opts["client_id"] != upClientID || opts["type"] != "back_channel" {
				t.Errorf("options = %v", opts)
			}
		})
		t.Run("list filters: name, strategy (repeatable)", func(t *testing.T) {
			if r := call("GET", "/api/v2/connections?name=other", nil); len(r.list()) != 1 || r.list()[0].(map[string]any)["name"] != "other" {
				t.Errorf("name filter: %s", r.raw)
			}
			if r := call("GET", "/api/v2/connections?strategy=okta", nil); r.status != 200 || len(r.list()) != 0 || r.raw != "[]\n" {
				t.Errorf("strategy=okta: %s", r.raw)
			}
			if r := call("GET", "/api/v2/connections?strategy=okta&strategy=oidc", nil); len(r.list()) != 2 {
				t.Errorf("strategy=okta&strategy=oidc: %s", r.raw)
			}
		})
		t.Run("legacy paging with include_totals", func(t *testing.T) {
			r := call("GET", "/api/v2/connections?page=1&per_page=1&include_totals=true", nil)
			m := r.obj()
			if m["total"] != float64(2) || m["start"] != float64(1) || m["limit"] != float64(1) {
				t.Fatalf("%s", r.raw)
			}
			if cs := m["connections"].([]any); len(cs) != 1 || cs[0].(map[string]any)["name"] != "other" {
				t.Errorf("page 1: %s", r.raw)
			}
			wantAPIError(t, call("GET", "/api/v2/connections?per_page=0", nil), 400, "invalid_query_string", "per_page")
			wantAPIError(t, call("GET", "/api/v2/connections?page=x", nil), 400, "invalid_query_string", "page")
		})
		t.Run("checkpoint from/take", func(t *testing.T) {
			r := call("GET", "/api/v2/connections?take=1", nil)
			m := r.obj()
			cs, _ := m["connections"].([]any)
			next, _ := m["next"].(string)
			if len(cs) != 1 || cs[0].(map[string]any)["name"] != "corp" || next == "" {
				t.Fatalf("%s", r.raw)
			}
			r = call("GET", "/api/v2/connections?take=1&from="+next, nil)
			m = r.obj()
			if cs := m["connections"].([]any); len(cs) != 1 || cs[0].(map[string]any)["name"] != "other" || m["next"] != nil {
				t.Fatalf("second page: %s", r.raw)
			}
			wantAPIError(t, call("GET", "/api/v2/connections?take=101", nil), 400, "invalid_query_string", "take")
		})
		t.Run("GET by id has enabled_clients (own list and YAML clients)", func(t *testing.T) {
			r := call("GET", "/api/v2/connections/"+corpID, nil)
			m := r.obj()
			if r.status != 200 || m["name"] != "corp" {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			if ec := m["enabled_clients"].([]any); len(ec) != 2 || ec[0] != appClient || ec[1] != spaClient {
				t.Errorf("enabled_clients = %v", ec)
			}
			if _, ok := m["options"].(map[string]any)["client_secret"]; ok {
				t.Error("client_secret returned")
			}
		})
		t.Run("unknown id is 404 inexistent_connection, malformed id 400", func(t *testing.T) {
			wantAPIError(t, call("GET", "/api/v2/connections/con_doesnotexist0000", nil), 404, "inexistent_connection", "The connection does not exist.")
			wantAPIError(t, call("PATCH", "/api/v2/connections/con_doesnotexist0000", map[string]any{"display_name": "x"}), 404, "inexistent_connection", "The connection does not exist.")
			wantAPIError(t, call("DELETE", "/api/v2/connections/con_doesnotexist0000", nil), 404, "inexistent_connection", "")
			wantAPIError(t, call("GET", "/api/v2/connections/not-an-id", nil), 400, "invalid_uri", "Path validation error")
		})

		var newID string
		t.Run("POST creates: 201, con_ + 16 chars, secret write-only, sapi event", func(t *testing.T) {
			r := call("POST", "/api/v2/connections", map[string]any{
				"name": "partner", "strategy": "oidc", "display_name": "Partner IdP", "enabled_clients": []string{spaClient},
				"options": map[string]any{"issuer": h.up.URL, "client_id": upClientID, "client_secret": upSecret,
					"dpop_signing_alg": "ES256", "upstream_params": map[string]any{"prompt": map[string]any{"value": "login"}}},
			})
			m := r.obj()
			if r.status != 201 {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			newID, _ = m["id"].(string)
			if !regexp.MustCompile(`^con_[A-Za-z0-9]{16}$`).MatchString(newID) || m["name"] != "partner" || m["display_name"] != "Partner IdP" {
				t.Errorf("created %s", r.raw)
			}
			opts := m["options"].(map[string]any)
			if opts["scope"] != "openid profile email" || opts["type"] != "back_channel" || fmt.Sprint(opts["upstream_params"]) != "map[prompt:map[value:login]]" {
				t.Errorf("defaults/params: %v", opts)
			}
			if ec := m["enabled_clients"].([]any); len(ec) != 1 || ec[0] != spaClient {
				t.Errorf("enabled_clients %v", ec)
			}
			ev := h.lastEvent()
			req, _ := ev.Details["request"].(map[string]any)
			resp, _ := ev.Details["response"].(map[string]any)
			if ev.Type != logs.TypeSuccessAPI || req["method"] != "POST" || req["path"] != "/api/v2/connections" || resp["statusCode"] != float64(201) {
				t.Fatalf("sapi event: %+v", ev)
			}
			body, _ := req["body"].(map[string]any)
			if body["name"] != "partner" || body["options"].(map[string]any)["client_id"] != upClientID {
				t.Errorf("request body in event: %v", body)
			}
			if ev.ConnectionID != newID || ev.Connection != "partner" {
				t.Errorf("event connection %q %q", ev.Connection, ev.ConnectionID)
			}
			if got := call("GET", "/api/v2/connections/"+newID, nil); got.obj()["name"] != "partner" {
				t.Errorf("GET after POST: %s", got.raw)
			}
		})
		t.Run("POST same name is 409 connection_conflict", func(t *testing.T) {
			r := call("POST", "/api/v2/connections", map[string]any{
				"name": "corp", "strategy": "oidc",
				"options": map[string]any{"issuer": h.up.URL, "client_id": upClientID, "client_secret": upSecret},
			})
			wantAPIError(t, r, 409, "connection_conflict", "A connection with the same name already exists")
			ev := h.lastEvent()
			if ev.Type != logs.TypeFailedAPI || ev.Details["response"].(map[string]any)["statusCode"] != float64(409) {
				t.Errorf("fapi event %+v", ev)
			}
		})
		t.Run("POST payload validation errors are 400 invalid_body", func(t *testing.T) {
			good := func() map[string]any {
				return map[string]any{"name": "n1", "strategy": "oidc", "options": map[string]any{"issuer": h.up.URL, "client_id": "c", "client_secret": "s"}}
			}
			for _, tc := range []struct {
				name string
				mut  func(m map[string]any)
				raw  string
				msg  string
			}{
				{name: "not JSON", raw: "{", msg: "JSON object"},
				{name: "missing name", mut: func(m map[string]any) { delete(m, "name") }, msg: "Missing required property: name"},
				{name: "unknown top-level property", mut: func(m map[string]any) { m["realmz"] = 1 }, msg: "Additional properties not allowed: realmz"},
				{name: "unknown option (scopes instead of scope)", mut: func(m map[string]any) { m["options"].(map[string]any)["scopes"] = "openid" }, msg: "Additional properties not allowed: scopes"},
				{name: "bad strategy", mut: func(m map[string]any) { m["strategy"] = "saml" }, msg: `strategy: "saml" is not supported`},
				{name: "bad name", mut: func(m map[string]any) { m["name"] = "has space" }, msg: "name:"},
				{name: "missing client_id", mut: func(m map[string]any) { delete(m["options"].(map[string]any), "client_id") }, msg: "options.client_id: is required"},
				{name: "scope without openid", mut: func(m map[string]any) { m["options"].(map[string]any)["scope"] = "email" }, msg: "must include openid"},
				{name: "unknown DPoP alg", mut: func(m map[string]any) { m["options"].(map[string]any)["dpop_signing_alg"] = "ES512" }, msg: `"ES512" is not supported`},
				{name: "reserved upstream param", mut: func(m map[string]any) {
					m["options"].(map[string]any)["upstream_params"] = map[string]any{"state": "x"}
				}, msg: "options.upstream_params.state"},
				{name: "wrong type for fetch_userinfo", mut: func(m map[string]any) { m["options"].(map[string]any)["fetch_userinfo"] = "yes" }, msg: "fetch_userinfo"},
				{name: "unknown enabled client", mut: func(m map[string]any) { m["enabled_clients"] = []string{"ghost"} }, msg: `enabled_clients[0]: client "ghost" is not defined`},
				{name: "okta domain with a path", mut: func(m map[string]any) {
					m["strategy"] = "okta"
					m["options"] = map[string]any{"domain": "example.okta.com/x", "client_id": "c", "client_secret": "s"}
				}, msg: "options.domain"},
				{name: "okta authorization_server_id malformed", mut: func(m map[string]any) {
					m["strategy"] = "okta"
					m["options"] = map[string]any{"domain": "example.okta.com", "authorization_server_id": "../x", "client_id": "c", "client_secret": "s"}
				}, msg: "options.authorization_server_id"},
				{name: "domain on an oidc connection", mut: func(m map[string]any) { m["options"].(map[string]any)["domain"] = "example.okta.com" }, msg: "strategy okta only"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					var body any = tc.raw
					if tc.raw == "" {
						m := good()
						tc.mut(m)
						body = m
					}
					wantAPIError(t, call("POST", "/api/v2/connections", body), 400, "invalid_body", tc.msg)
				})
			}
		})
		t.Run("okta connection: domain and authorization_server_id accepted", func(t *testing.T) {
			r := call("POST", "/api/v2/connections", map[string]any{"name": "okta-corp", "strategy": "okta",
				"options": map[string]any{"domain": "example.okta.com", "authorization_server_id": "default", "client_id": "c", "client_secret": "s"}})
			if r.status != 201 || r.obj()["options"].(map[string]any)["domain"] != "example.okta.com" {
				t.Fatalf("%d %s", r.status, r.raw)
			}
		})
		t.Run("PATCH cannot change name or strategy", func(t *testing.T) {
			wantAPIError(t, call("PATCH", "/api/v2/connections/"+newID, map[string]any{"name": "renamed"}), 400, "invalid_body", "name cannot be changed")
			wantAPIError(t, call("PATCH", "/api/v2/connections/"+newID, map[string]any{"strategy": "okta"}), 400, "invalid_body", "strategy cannot be changed")
			wantAPIError(t, call("PATCH", "/api/v2/connections/"+newID, map[string]any{"options": nil}), 400, "invalid_body", "options")
		})
		t.Run("PATCH options replaces the whole object; omitted client_secret is kept", func(t *testing.T) {
			r := call("PATCH", "/api/v2/connections/"+newID, map[string]any{"options": map[string]any{"issuer": h.up.URL, "client_id": "other-client"}})
			opts := r.obj()["options"].(map[string]any)
			if r.status != 200 || opts["client_id"] != "other-client" || opts["dpop_signing_alg"] != nil || opts["upstream_params"] != nil {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			raw, err := h.broker.reg.conns.GetConnection(context.Background(), newID)
			if err != nil || !strings.Contains(string(raw), `"client_secret":"`+upSecret+`"`) {
				t.Errorf("stored secret not kept: %v", err)
			}
			r = call("PATCH", "/api/v2/connections/"+newID, map[string]any{"display_name": "Renamed display"})
			if r.obj()["display_name"] != "Renamed display" || r.obj()["options"].(map[string]any)["client_id"] != "other-client" {
				t.Errorf("PATCH without options changed options: %s", r.raw)
			}
		})
		t.Run("DELETE is 202, then 404", func(t *testing.T) {
			r := call("DELETE", "/api/v2/connections/"+newID, nil)
			if r.status != 202 || r.obj()["message"] != "The connection is being deleted." {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			if ev := h.lastEvent(); ev.Type != logs.TypeSuccessAPI || ev.Details["response"].(map[string]any)["statusCode"] != float64(202) {
				t.Errorf("event %+v", ev)
			}
			wantAPIError(t, call("GET", "/api/v2/connections/"+newID, nil), 404, "inexistent_connection", "")
			wantAPIError(t, call("DELETE", "/api/v2/connections/"+newID, nil), 404, "inexistent_connection", "")
		})
		t.Run("client_secret is write-only: in no response and no event", func(t *testing.T) {
			for _, raw := range responses {
				if strings.Contains(raw, upSecret) || strings.Contains(raw, "client_secret\"") {
					t.Fatalf("secret in a response: %s", raw)
				}
			}
			for _, ev := range h.recentEvents(1000) {
				b, _ := json.Marshal(ev)
				if strings.Contains(string(b), upSecret) || strings.Contains(string(b), `"s"`) && strings.Contains(string(b), `"client_secret"`) {
					t.Fatalf("secret in an event: %s", b)
				}
			}
		})
	})
}

// TestMgmtDPoP covers the DPoP enable rules of the management API: a key for the alg and the
// upstream's discovery listing it (RFC 9449 §5.1), PATCH replacing the whole options object.
func TestMgmtDPoP(t *testing.T) {
	h := mgmtHarness(t, nil)
	base := h.srv.URL
	rsOnly, err := demoidp.Start(demoidp.Options{ClientID: upClientID, ClientSecret: upSecret, DPoPAlgs: []string{"RS256", "PS256"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rsOnly.Close)
	noDPoP, err := demoidp.Start(demoidp.Options{ClientID: upClientID, ClientSecret: upSecret})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(noDPoP.Close)
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()

	otherID := idOf(t, h, "other")
	opts := func(issuer, alg string, extra map[string]any) map[string]any {
		o := map[string]any{"issuer": issuer, "client_id": upClientID}
		if alg != "" {
			o["dpop_signing_alg"] = alg
		}
		for k, v := range extra {
			o[k] = v
		}
		return map[string]any{"options": o}
	}
	patch := func(body any) apiResp { return api(t, base, "PATCH", "/api/v2/connections/"+otherID, tokAll, body) }

	for _, tc := range []struct {
		name   string
		body   map[string]any
		status int
		code   string
		msg    string
	}{
		{name: "PATCH dpop_signing_alg ES256 against an upstream offering it enables DPoP", body: opts(h.up.URL, "ES256", nil), status: 200, code: "", msg: ""},
		{name: "PATCH Ed25519 (offered) is accepted", body: opts(h.up.URL, "Ed25519", nil), status: 200, code: "", msg: ""},
		{name: "PATCH alg the upstream does not offer: 400 listing what it offers", body: opts(rsOnly.URL, "ES256", nil), status: 400, code: "dpop_alg_mismatch", msg: "does not offer ES256; it offers dpop_signing_alg_values_supported [RS256, PS256]"},
		{name: "PATCH against an upstream without DPoP: 400 dpop_signing_alg_values_supported is absent", body: opts(noDPoP.URL, "ES256", nil), status: 400, code: "dpop_not_supported", msg: "does not support DPoP (dpop_signing_alg_values_supported is absent"},
		{name: "PATCH when discovery fails: 400 with the reason", body: opts(deadURL, "ES256", nil), status: 400, code: "discovery_failed", msg: "could not be used"},
		{name: "DPoP with type front_channel is refused", body: opts(h.up.URL, "ES256", map[string]any{"type": "front_channel"}), status: 400, code: "invalid_body", msg: "which DPoP requires"},
		{name: "DPoP with Token Vault active is refused", body: opts(h.up.URL, "ES256", map[string]any{"federated_connections_access_tokens": map[string]any{"active": true}}), status: 400, code: "token_vault_conflict", msg: "federated_connections_access_tokens.active: Token Vault is not compatible with DPoP"},
		{name: "DPoP with upstream_params.offline_access true is refused", body: opts(h.up.URL, "ES256", map[string]any{"upstream_params": map[string]any{"offline_access": true}}), status: 400, code: "token_vault_conflict", msg: "options.upstream_params.offline_access"},
		{name: "offline_access in the SaaS {value} form is refused too", body: opts(h.up.URL, "ES256", map[string]any{"upstream_params": map[string]any{"offline_access": map[string]any{"value": "true"}}}), status: 400, code: "token_vault_conflict", msg: "offline_access"},
		{name: "Token Vault without DPoP is accepted", body: opts(noDPoP.URL, "", map[string]any{"federated_connections_access_tokens": map[string]any{"active": true}}), status: 200, code: "", msg: ""},
		{name: "PATCH without dpop_signing_alg against an upstream without DPoP is accepted", body: opts(noDPoP.URL, "", nil), status: 200, code: "", msg: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := patch(tc.body)
			if tc.status != 200 {
				wantAPIError(t, r, tc.status, tc.code, tc.msg)
				ev := h.lastEvent()
				if e, _ := ev.Details["error"].(map[string]any); ev.Type != logs.TypeFailedAPI || !strings.Contains(e["message"].(string), tc.msg) {
					t.Errorf("fapi event %+v", ev)
				}
				return
			}
			if r.status != 200 {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			want := tc.body["options"].(map[string]any)["dpop_signing_alg"]
			if got := r.obj()["options"].(map[string]any)["dpop_signing_alg"]; got != want {
				t.Errorf("dpop_signing_alg = %v, want %v", got, want)
			}
		})
	}

	t.Run("PATCH without dpop_signing_alg disables DPoP: next login has no dpop_signing_alg", func(t *testing.T) {
		corpID := config.DeriveConnectionID("corp")
		h.login()
		if ev := h.lastEventOf(logs.TypeSuccessLogin); ev.Details["dpop_signing_alg"] != "ES256" {
			t.Fatalf("before: %v", ev.Details)
		}
		r := api(t, base, "PATCH", "/api/v2/connections/"+corpID, tokAll, opts(h.up.URL, "", map[string]any{"fetch_userinfo": true}))
		if r.status != 200 || r.obj()["options"].(map[string]any)["dpop_signing_alg"] != nil {
			t.Fatalf("%d %s", r.status, r.raw)
		}
		h.login()
		if ev := h.lastEventOf(logs.TypeSuccessLogin); ev.Details["dpop_signing_alg"] != nil || ev.Details["idp_token_type"] != "bearer" {
			t.Fatalf("after disabling: %v", ev.Details)
		}
		r = api(t, base, "PATCH", "/api/v2/connections/"+corpID, tokAll, opts(h.up.URL, "Ed25519", nil))
		if r.status != 200 {
			t.Fatalf("%d %s", r.status, r.raw)
		}
		h.login()
		if ev := h.lastEventOf(logs.TypeSuccessLogin); ev.Details["dpop_signing_alg"] != "Ed25519" || ev.Details["idp_token_type"] != "dpop" {
			t.Fatalf("after enabling Ed25519: %v", ev.Details)
		}
	})
}

// TestMgmtSecondReplicaSeesPatch: two brokers on one Redis; a PATCH through the first is used
// by the second's next login without a restart.
func TestMgmtSecondReplicaSeesPatch(t *testing.T) {
	addr := redistest.Start(t)
	h := mgmtHarness(t, redisStore(t, addr))
	srvB := httptest.NewUnstartedServer(nil)
	cfgB := *h.cfg
	cfgB.Issuer = "http://" + srvB.Listener.Addr().String() + "/"
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	eventsB := &logs.Writer{Logger: logger, Store: sessions.NewMemory()}
	b, err := New(&cfgB, Deps{Store: redisStore(t, addr), Events: eventsB, Logger: logger, Keys: testKeys(t, "RS256")})
	if err != nil {
		t.Fatal(err)
	}
	srvB.Config.Handler = b.Handler()
	srvB.Start()
	t.Cleanup(srvB.Close)
	loginB := func() map[string]any {
		t.Helper()
		u := strings.Replace(h.authorizeURL(nil), h.srv.URL, srvB.URL, 1)
		resp, _ := get(t, h.browser(), u)
		if q := appResult(t, resp, h.app.URL+"/cb"); q.Get("code") == "" {
			t.Fatalf("login through B failed: %v", q)
		}
		evs, err := eventsB.Recent(context.Background(), "", 1)
		if err != nil || len(evs) != 1 || evs[0].Type != logs.TypeSuccessLogin {
			t.Fatalf("B events %v %v", evs, err)
		}
		return evs[0].Details
	}
	if d := loginB(); d["dpop_signing_alg"] != "ES256" {
		t.Fatalf("before: %v", d)
	}
	corpID := config.DeriveConnectionID("corp")
	r := api(t, h.srv.URL, "PATCH", "/api/v2/connections/"+corpID, tokAll, map[string]any{
		"options": map[string]any{"issuer": h.up.URL, "client_id": upClientID, "fetch_userinfo": true},
	})
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	if d := loginB(); d["dpop_signing_alg"] != nil || d["dpop_returned_from_upstream"] != false {
		t.Fatalf("B did not pick up the PATCH: %v", d)
	}
	// B's management API reads the same store.
	if got := api(t, srvB.URL, "GET", "/api/v2/connections/"+corpID, tokRead, nil); got.obj()["options"].(map[string]any)["dpop_signing_alg"] != nil {
		t.Errorf("B's API: %s", got.raw)
	}
	// A connection created through A is usable through B (enabled_clients names the app).
	r = api(t, h.srv.URL, "POST", "/api/v2/connections", tokAll, map[string]any{
		"name": "fresh", "strategy": "oidc", "enabled_clients": []string{appClient},
		"options": map[string]any{"issuer": h.up.URL, "client_id": upClientID, "client_secret": upSecret, "dpop_signing_alg": "ES256"},
	})
	if r.status != 201 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	u := strings.Replace(h.authorizeURL(func(q url.Values) { q.Set("connection", "fresh") }), h.srv.URL, srvB.URL, 1)
	resp, _ := get(t, h.browser(), u)
	if q := appResult(t, resp, h.app.URL+"/cb"); q.Get("code") == "" {
		t.Fatalf("login through the new connection failed: %v", q)
	}
	evs, _ := eventsB.Recent(context.Background(), "", 1)
	if evs[0].Connection != "fresh" || evs[0].Details["dpop_signing_alg"] != "ES256" {
		t.Errorf("event %+v", evs[0])
	}
	// Deleted through A: B refuses it at the next login.
	api(t, h.srv.URL, "DELETE", "/api/v2/connections/"+r.obj()["id"].(string), tokAll, nil)
	resp, _ = get(t, h.browser(), u)
	if q := appResult(t, resp, h.app.URL+"/cb"); q.Get("error") != "invalid_request" {
		t.Errorf("deleted connection still usable: %v", q)
	}
}

// restarted returns a new broker on store st with h's configuration changed by mut (nil: none),
// as a replica restarted after a configuration change; it is not initialised.
func (h *harness) restarted(st sessions.Store, mut func(*config.Config)) *Server {
	h.t.Helper()
	cfg := *h.cfg
	cfg.Connections = slices.Clone(h.cfg.Connections)
	cfg.Clients = slices.Clone(h.cfg.Clients)
	if mut != nil {
		mut(&cfg)
	}
	b, err := New(&cfg, Deps{Store: st, Events: h.events, Keys: testKeys(h.t, "RS256")})
	if err != nil {
		h.t.Fatal(err)
	}
	return b
}

// TestSeeding covers the YAML → store seeding rule.
func TestSeeding(t *testing.T) {
	st := sessions.NewMemory()
	h := mgmtHarness(t, st)
	corpID := config.DeriveConnectionID("corp")
	// An API edit survives a restart with an unchanged YAML.
	r := api(t, h.srv.URL, "PATCH", "/api/v2/connections/"+corpID, tokAll, map[string]any{"display_name": "Edited"})
	if r.status != 200 {
		t.Fatal(r.raw)
	}
	restart := func(mut func(*config.Config)) *Server { return h.restarted(st, mut) }
	display := func(b *Server) string {
		snap, err := b.reg.current(context.Background(), true)
		if err != nil {
			t.Fatal(err)
		}
		return snap.byName["corp"].cfg.DisplayName + "|" + snap.byName["corp"].cfg.Options.ClientID
	}
	if b := restart(nil); display(b) != "Edited|"+upClientID {
		t.Errorf("unchanged YAML: %s", display(b))
	}
	// A changed YAML entry wins over the store.
	b := restart(func(c *config.Config) { c.Connections[0].Options.ClientID = "rotated" })
	if got := display(b); got != "|rotated" {
		t.Errorf("changed YAML: %s", got)
	}
	// A name taken in the store by an API-created connection is reported by Init.
	api(t, h.srv.URL, "POST", "/api/v2/connections", tokAll, map[string]any{"name": "later", "strategy": "oidc",
		"options": map[string]any{"issuer": h.up.URL, "client_id": "c", "client_secret": "s"}})
	b = restart(func(c *config.Config) {
		c.Connections = append(c.Connections, config.Connection{Name: "later", Strategy: "oidc", Options: config.ConnectionOptions{
			Issuer: h.up.URL, ClientID: "c", ClientSecret: "s", Scope: "openid", Type: "back_channel"}})
	})
	if err := b.Init(context.Background()); err == nil || !strings.Contains(err.Error(), `the store already has a connection named "later"`) {
		t.Errorf("Init: %v", err)
	}

	// An API delete of a seeded connection survives a restart with the same YAML entry...
	// (The last start applied the original entry again.)
	if r := api(t, h.srv.URL, "DELETE", "/api/v2/connections/"+corpID, tokAll, nil); r.status != 202 {
		t.Fatal(r.raw)
	}
	b = restart(nil)
	if err := b.Init(context.Background()); err != nil {
		t.Fatalf("Init after the API delete: %v", err)
	}
	if snap, _ := b.reg.current(context.Background(), true); snap.byName["corp"] != nil {
		t.Error("a connection deleted through the API came back at restart with an unchanged YAML entry")
	}
	// ...and an edited YAML entry brings it back (the file wins, as for edits).
	b = restart(func(c *config.Config) { c.Connections[0].Options.ClientID = "rotated-again" })
	if err := b.Init(context.Background()); err != nil {
		t.Fatalf("Init with an edited YAML entry: %v", err)
	}
	if got := display(b); got != "|rotated-again" {
		t.Errorf("edited YAML after an API delete: %q, want the connection back", got)
	}
	// A connection created through the API leaves no tombstone: only seeded ones do.
	later, _, err := st.(sessions.Connections).ConnectionByName(context.Background(), "later")
	if err != nil {
		t.Fatal(err)
	}
	if r := api(t, h.srv.URL, "DELETE", "/api/v2/connections/"+later, tokAll, nil); r.status != 202 {
		t.Fatal(r.raw)
	}
	if _, err := st.(sessions.Connections).ConnectionTombstone(context.Background(), later); !errors.Is(err, sessions.ErrNotFound) {
		t.Errorf("tombstone of an API-created connection: %v, want none", err)
	}
}
