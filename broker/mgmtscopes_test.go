package broker

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
)

// tokPatchOnly holds update:connections (and read:connections) only, as config.example.yaml's
// ops token does.
var tokPatchOnly = strings.Repeat("p", 40)

// TestConnectionWritesNeedTheirOwnScope: creating a connection needs create:connections and
// deleting one delete:connections (as the clients' routes need their own scopes);
// update:connections is PATCH only.
func TestConnectionWritesNeedTheirOwnScope(t *testing.T) {
	h := pinHarness(t, func(c *config.Config) {
		c.Management.Tokens = append(c.Management.Tokens, config.ManagementToken{Name: "patcher", Token: tokPatchOnly,
			Scopes: []string{config.ScopeReadConnections, config.ScopeUpdateConnections}})
	})
	base := h.srv.URL + "/api/v2/connections"
	otherID := config.DeriveConnectionID("other")
	tests := []struct {
		name, method, path string
		body               any
		wantScope          string
	}{
		{name: "update:connections cannot create a connection", method: http.MethodPost, path: "", wantScope: "create:connections",
			body: map[string]any{"name": "new", "strategy": "oidc", "options": map[string]any{"issuer": "http://127.0.0.1:1", "client_id": "x", "client_secret": "y"}}},
		{name: "update:connections cannot delete a connection", method: http.MethodDelete, path: "/" + otherID, wantScope: "delete:connections"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantAPIError(t, api(t, base, tt.method, tt.path, tokPatchOnly, tt.body), http.StatusForbidden, "insufficient_scope", "expected any of: "+tt.wantScope)
		})
	}
	if r := api(t, base, http.MethodGet, "/"+otherID, tokPatchOnly, nil); r.status != http.StatusOK {
		t.Fatalf("the connection after the refused delete: %d %s", r.status, r.raw)
	}
}

// TestConnectionsThatAdmitConsoleAdministratorsCannotBeDeleted: deleting a connection that
// console.admins or console.connection names is refused with 409 naming console.admins (it
// would lock the administrators out), and the connection stays; another one can be deleted.
func TestConnectionsThatAdmitConsoleAdministratorsCannotBeDeleted(t *testing.T) {
	h := pinHarness(t, nil)
	base := h.srv.URL + "/api/v2/connections"
	tests := []struct {
		name       string
		connection string
		wantStatus int
	}{
		{name: "the console's connection is refused", connection: "corp", wantStatus: http.StatusConflict},
		{name: "another connection is deleted", connection: "other", wantStatus: http.StatusAccepted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := config.DeriveConnectionID(tt.connection)
			r := api(t, base, http.MethodDelete, "/"+id, tokConnAdmin, nil)
			if tt.wantStatus == http.StatusConflict {
				wantAPIError(t, r, http.StatusConflict, "connection_conflict", "console.admins")
				if g := api(t, base, http.MethodGet, "/"+id, tokConnAdmin, nil); g.status != http.StatusOK {
					t.Fatalf("the pinned connection after the refused delete: %d %s", g.status, g.raw)
				}
				return
			}
			if r.status != tt.wantStatus {
				t.Fatalf("delete: %d %s", r.status, r.raw)
			}
		})
	}
}

// TestManagementEventsKeepABoundedCopyOfTheBody: a management call's event keeps the request
// body as it came when it is small; a large one (up to the 64 KiB a body may have, escaped
// several times over in JSON) is kept shrunk to 4 KiB, marked body_truncated with body_bytes
// its size, and the whole event stays within the event writer's bound.
func TestManagementEventsKeepABoundedCopyOfTheBody(t *testing.T) {
	h := mgmtHarness(t, nil)
	tests := []struct {
		name      string
		display   string
		truncated bool
	}{
		{name: "a small body is kept whole", display: "<b>x</b>"},
		{name: "a body of 60 KiB once escaped is kept shrunk", display: strings.Repeat("<", 10<<10), truncated: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := map[string]any{"name": "n", "display_name": tt.display, "strategy": "oidc", "options": map[string]any{"issuer": "http://127.0.0.1:1", "client_id": "a"}}
			if r := api(t, h.srv.URL, http.MethodPost, "/api/v2/connections", tokAll, body); r.status != http.StatusBadRequest {
				t.Fatalf("POST: %d %s", r.status, r.raw)
			}
			raw, err := h.events.Store.Logs(t.Context(), "", 1)
			if err != nil || len(raw) != 1 {
				t.Fatalf("event: %v", err)
			}
			if len(raw[0]) > logs.DefaultMaxEventBytes {
				t.Fatalf("stored event of %d bytes", len(raw[0]))
			}
			var ev logs.Event
			if err := json.Unmarshal(raw[0], &ev); err != nil {
				t.Fatal(err)
			}
			req, _ := ev.Details["request"].(map[string]any)
			b, _ := json.Marshal(req["body"])
			if ev.Type != logs.TypeFailedAPI || req["body"] == nil || len(b) > 4<<10 || (req["body_truncated"] == true) != tt.truncated {
				t.Fatalf("event request %.300s (body %d bytes)", fmt.Sprint(req), len(b))
			}
			if tt.truncated && req["body_bytes"].(float64) < 60<<10 {
				t.Fatalf("body_bytes %v", req["body_bytes"])
			}
		})
	}
}
