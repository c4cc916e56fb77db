package broker

import (
	"slices"
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// enabledIDs returns the client ids of a GET /api/v2/connections/{id}/clients page and its next.
func enabledIDs(t *testing.T, r apiResp) ([]string, string) {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	var ids []string
	l, _ := r.obj()["clients"].([]any)
	for _, e := range l {
		m := e.(map[string]any)
		if len(m) != 1 {
			t.Errorf("entry %v, want only client_id", m)
		}
		ids = append(ids, m["client_id"].(string))
	}
	next, _ := r.obj()["next"].(string)
	return ids, next
}

func TestMgmtConnectionEnabledClients(t *testing.T) {
	forStores(t, func(t *testing.T, store func() sessions.Store) {
		h := mgmtHarness(t, store())
		base := h.srv.URL
		otherPath := "/api/v2/connections/" + config.DeriveConnectionID("other") + "/clients"
		corpPath := "/api/v2/connections/" + config.DeriveConnectionID("corp") + "/clients"

		t.Run("GET lists the apps that name the connection", func(t *testing.T) {
			ids, next := enabledIDs(t, api(t, base, "GET", otherPath, tokRead, nil))
			if !slices.Equal(ids, []string{spaClient}) || next != "" {
				t.Errorf("clients %v next %q, want [%s] and no next", ids, next, spaClient)
			}
		})
		t.Run("PATCH enables an app: 204, GET and the connection's enabled_clients show it, sapi", func(t *testing.T) {
			r := api(t, base, "PATCH", otherPath, tokAll, []map[string]any{{"client_id": appClient, "status": true}})
			if r.status != 204 || r.raw != "" {
				t.Fatalf("%d %q", r.status, r.raw)
			}
			if ev := h.lastEvent(); ev.Type != logs.TypeSuccessAPI || ev.ConnectionID != config.DeriveConnectionID("other") {
				t.Errorf("last event %s connection_id %s, want sapi on other", ev.Type, ev.ConnectionID)
			}
			ids, _ := enabledIDs(t, api(t, base, "GET", otherPath, tokRead, nil))
			if !slices.Equal(ids, []string{appClient, spaClient}) {
				t.Errorf("clients %v", ids)
			}
			if ec := api(t, base, "GET", "/api/v2/connections/"+config.DeriveConnectionID("other"), tokRead, nil).obj()["enabled_clients"]; len(ec.([]any)) != 2 {
				t.Errorf("enabled_clients %v", ec)
			}
		})
		t.Run("checkpoint paging with take and from", func(t *testing.T) {
			ids, next := enabledIDs(t, api(t, base, "GET", otherPath+"?take=1", tokRead, nil))
			if !slices.Equal(ids, []string{appClient}) || next == "" {
				t.Fatalf("first page %v next %q", ids, next)
			}
			ids, next = enabledIDs(t, api(t, base, "GET", otherPath+"?take=1&from="+next, tokRead, nil))
			if !slices.Equal(ids, []string{spaClient}) || next != "" {
				t.Errorf("second page %v next %q", ids, next)
			}
			wantAPIError(t, api(t, base, "GET", otherPath+"?from=***", tokRead, nil), 400, "invalid_query_string", "from is not a cursor")
		})
		t.Run("PATCH disables an app the connection enabled", func(t *testing.T) {
			if r := api(t, base, "PATCH", otherPath, tokAll, []map[string]any{{"client_id": appClient, "status": false}}); r.status != 204 {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			if ids, _ := enabledIDs(t, api(t, base, "GET", otherPath, tokRead, nil)); !slices.Equal(ids, []string{spaClient}) {
				t.Errorf("clients %v", ids)
			}
			if ec := storedDoc(t, h, config.DeriveConnectionID("other")).EnabledClients; len(ec) != 0 {
				t.Errorf("stored enabled_clients %v", ec)
			}
		})
		for _, tc := range []struct {
			name   string
			body   any
			status int
			code   string
			msg    string
		}{
			{name: "an app naming the connection itself cannot be disabled here", body: []map[string]any{{"client_id": appClient, "status": false}},
				status: 400, code: "invalid_body", msg: `[0]: client "app" names this connection in its own connections list`},
			{name: "an unknown app", body: []map[string]any{{"client_id": "nope", "status": true}},
				status: 400, code: "invalid_body", msg: `client "nope" is not defined in clients`},
			{name: "an app twice", body: []map[string]any{{"client_id": spaClient, "status": true}, {"client_id": spaClient, "status": false}},
				status: 400, code: "invalid_body", msg: `[1]: client "spa" is listed twice`},
			{name: "status missing", body: []map[string]any{{"client_id": spaClient}}, status: 400, code: "invalid_body", msg: "[0]: client_id and status are required"},
			{name: "an unknown member", body: []map[string]any{{"client_id": spaClient, "status": true, "x": 1}}, status: 400, code: "invalid_body", msg: "Additional properties not allowed: x"},
			{name: "an object body", body: map[string]any{"client_id": spaClient, "status": true}, status: 400, code: "invalid_body", msg: "the body must be a JSON array"},
			{name: "an empty list", body: []any{}, status: 400, code: "invalid_body", msg: "the body must list 1 to 50 clients"},
			{name: "51 entries", body: slices.Repeat([]map[string]any{{"client_id": spaClient, "status": true}}, 51), status: 400, code: "invalid_body", msg: "1 to 50"},
		} {
			t.Run("PATCH refuses "+tc.name, func(t *testing.T) {
				before := storedDoc(t, h, config.DeriveConnectionID("corp"))
				wantAPIError(t, api(t, base, "PATCH", corpPath, tokAll, tc.body), tc.status, tc.code, tc.msg)
				if after := storedDoc(t, h, config.DeriveConnectionID("corp")); !slices.Equal(after.EnabledClients, before.EnabledClients) {
					t.Errorf("enabled_clients changed: %v → %v", before.EnabledClients, after.EnabledClients)
				}
			})
		}
		t.Run("the SDK's connection and client endpoints the broker does not serve are 404 not_found", func(t *testing.T) {
			id := config.DeriveConnectionID("corp")
			for _, c := range []struct{ method, path string }{
				{method: "GET", path: "/api/v2/connections/" + id + "/status"},
				{method: "GET", path: "/api/v2/connections/" + id + "/keys"},
				{method: "POST", path: "/api/v2/connections/" + id + "/keys/rotate"},
				{method: "GET", path: "/api/v2/connections/" + id + "/scim-configuration"},
				{method: "DELETE", path: "/api/v2/connections/" + id + "/users?email=a%40b.example"},
				{method: "GET", path: "/api/v2/clients/" + appClient + "/connections"},
				{method: "GET", path: "/api/v2/clients/" + appClient + "/credentials"},
				{method: "POST", path: "/api/v2/clients/cimd/preview"},
			} {
				wantAPIError(t, api(t, base, c.method, c.path, tokAll, nil), 404, "not_found", "Not Found")
			}
		})
		t.Run("a read token cannot PATCH; unknown connection is 404", func(t *testing.T) {
			wantAPIError(t, api(t, base, "PATCH", corpPath, tokRead, []map[string]any{{"client_id": spaClient, "status": true}}), 403, "insufficient_scope", "update:connections")
			wantAPIError(t, api(t, base, "GET", "/api/v2/connections/con_doesnotexist0000/clients", tokRead, nil), 404, "inexistent_connection", "")
		})
	})
}
