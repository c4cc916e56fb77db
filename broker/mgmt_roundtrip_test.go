package broker

import (
	"context"
	"encoding/json"
	"maps"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// storedDoc reads the stored document of connection id.
func storedDoc(t *testing.T, h *harness, id string) storedConnection {
	t.Helper()
	raw, err := h.broker.reg.conns.GetConnection(context.Background(), id)
	if err != nil {
		t.Fatalf("stored connection %s: %v", id, err)
	}
	var doc storedConnection
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

func TestMgmtConnectionGetModifyPatchRoundTrip(t *testing.T) {
	forStores(t, func(t *testing.T, store func() sessions.Store) {
		h := mgmtHarness(t, store())
		base := h.srv.URL
		corpID := config.DeriveConnectionID("corp")
		path := "/api/v2/connections/" + corpID

		t.Run("GET answers the SaaS's members with their defaults", func(t *testing.T) {
			m := api(t, base, "GET", path, tokAll, nil).obj()
			if r, _ := m["realms"].([]any); len(r) != 1 || r[0] != "corp" || m["is_domain_connection"] != false {
				t.Errorf("realms %v is_domain_connection %v, want [corp] false", m["realms"], m["is_domain_connection"])
			}
			if _, ok := m["metadata"]; ok {
				t.Errorf("metadata %v before any was set, want absent", m["metadata"])
			}
		})

		t.Run("the whole object read with GET, modified, is accepted by PATCH", func(t *testing.T) {
			got := api(t, base, "GET", path, tokAll, nil).obj()
			got["display_name"] = "Corp SSO"
			got["is_domain_connection"] = true
			got["realms"] = []string{"corp", "corp.example"}
			got["metadata"] = map[string]any{"team": "identity", "ticket": "IAM-42"}
			opts := got["options"].(map[string]any)
			opts["scope"] = "openid profile email groups"
			opts["attribute_map"] = map[string]any{"mapping_mode": "basic_profile",
				"attributes": map[string]any{"https://example.com/groups": "${context.tokenset.id_token.groups}"}}
			opts["upstream_params"] = map[string]any{"login_hint": map[string]any{"alias": "login_hint"}, "ui_locales": map[string]any{"value": "en"}}
			r := api(t, base, "PATCH", path, tokAll, got)
			if r.status != 200 {
				t.Fatalf("PATCH of the GET answer: %d %s", r.status, r.raw)
			}
			again := api(t, base, "GET", path, tokAll, nil).obj()
			for _, k := range []string{"id", "name", "strategy", "display_name", "is_domain_connection", "realms", "metadata", "options", "enabled_clients"} {
				a, _ := json.Marshal(again[k])
				b, _ := json.Marshal(got[k])
				if string(a) != string(b) {
					t.Errorf("%s after the round trip = %s, want %s", k, a, b)
				}
			}
			if strings.Contains(r.raw, upSecret) {
				t.Error("PATCH answer carries the client secret")
			}
		})

		t.Run("the stored secret and enabled_clients survive it; a login still works", func(t *testing.T) {
			doc := storedDoc(t, h, corpID)
			if doc.Options.ClientSecret != upSecret {
				t.Error("the stored client_secret changed")
			}
			// GET's enabled_clients include the YAML clients naming the connection: sent back
			// unchanged they are not copied into the connection's own list.
			if len(doc.EnabledClients) != 0 {
				t.Errorf("stored enabled_clients %v, want none of its own", doc.EnabledClients)
			}
			if q := h.login(); q.Get("code") == "" {
				t.Fatalf("login after the round trip: %v", q)
			}
		})

		t.Run("a second identical PATCH changes nothing", func(t *testing.T) {
			before := storedDoc(t, h, corpID)
			got := api(t, base, "GET", path, tokAll, nil).obj()
			if r := api(t, base, "PATCH", path, tokAll, got); r.status != 200 {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			after := storedDoc(t, h, corpID)
			a, _ := json.Marshal(before)
			b, _ := json.Marshal(after)
			if string(a) != string(b) {
				t.Errorf("stored document changed:\n%s\n%s", a, b)
			}
		})

		t.Run("metadata: a null member is removed, null clears it; empty realms are the default", func(t *testing.T) {
			r := api(t, base, "PATCH", path, tokAll, map[string]any{"metadata": map[string]any{"team": "iam", "ticket": nil}, "realms": []string{}})
			if m, _ := r.obj()["metadata"].(map[string]any); r.status != 200 || len(m) != 1 || m["team"] != "iam" {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			if rl, _ := r.obj()["realms"].([]any); len(rl) != 1 || rl[0] != "corp" {
				t.Errorf("realms %v, want [corp]", rl)
			}
			r = api(t, base, "PATCH", path, tokAll, map[string]any{"metadata": nil})
			if _, ok := r.obj()["metadata"]; r.status != 200 || ok {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			if doc := storedDoc(t, h, corpID); doc.Metadata != nil || doc.Realms != nil || !doc.IsDomainConnection {
				t.Errorf("stored metadata %v realms %v is_domain_connection %v", doc.Metadata, doc.Realms, doc.IsDomainConnection)
			}
		})

		for _, tc := range []struct {
			name   string
			change map[string]any
			msg    string
		}{
			{name: "another id", change: map[string]any{"id": "con_0000000000000000"}, msg: "id cannot be changed"},
			{name: "another name", change: map[string]any{"name": "corp2"}, msg: "name cannot be changed"},
			{name: "another strategy", change: map[string]any{"strategy": "okta"}, msg: "strategy cannot be changed"},
			{name: "metadata with a number", change: map[string]any{"metadata": map[string]any{"n": 1}}, msg: "metadata: the values must be strings"},
			{name: "metadata not an object", change: map[string]any{"metadata": []string{"a"}}, msg: "Expected type object on property metadata"},
			{name: "11 metadata members", change: map[string]any{"metadata": maps.Collect(func(yield func(string, any) bool) {
				for _, k := range strings.Split("a b c d e f g h i j k", " ") {
					yield(k, "v")
				}
			})}, msg: "metadata: must have at most 10 members"},
			{name: "a metadata value over 255 characters", change: map[string]any{"metadata": map[string]any{"team": strings.Repeat("x", 256)}}, msg: "metadata.team: must be at most 255 characters"},
			{name: "a realm twice", change: map[string]any{"realms": []string{"a", "a"}}, msg: `realms[1]: "a" is listed twice`},
			{name: "is_domain_connection not a boolean", change: map[string]any{"is_domain_connection": "yes"}, msg: "Expected type boolean"},
		} {
			t.Run("GET modified with "+tc.name+" is refused", func(t *testing.T) {
				before := storedDoc(t, h, corpID)
				got := api(t, base, "GET", path, tokAll, nil).obj()
				maps.Copy(got, tc.change)
				wantAPIError(t, api(t, base, "PATCH", path, tokAll, got), 400, "invalid_body", tc.msg)
				a, _ := json.Marshal(before)
				b, _ := json.Marshal(storedDoc(t, h, corpID))
				if string(a) != string(b) {
					t.Errorf("a refused PATCH changed the stored document:\n%s\n%s", a, b)
				}
			})
		}

		t.Run("POST takes the members; an id is refused", func(t *testing.T) {
			body := map[string]any{
				"name": "partner", "strategy": "oidc", "realms": []string{"partner.example"}, "is_domain_connection": true,
				"metadata": map[string]any{"owner": "b2b"},
				"options":  map[string]any{"issuer": h.up.URL, "client_id": upClientID, "client_secret": upSecret},
			}
			r := api(t, base, "POST", "/api/v2/connections", tokAll, body)
			m := r.obj()
			if rl, _ := m["realms"].([]any); r.status != 201 || len(rl) != 1 || rl[0] != "partner.example" || m["is_domain_connection"] != true ||
				m["metadata"].(map[string]any)["owner"] != "b2b" {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			body["name"], body["id"] = "partner2", "con_0000000000000000"
			wantAPIError(t, api(t, base, "POST", "/api/v2/connections", tokAll, body), 400, "invalid_body", "Additional properties not allowed: id")
		})

		t.Run("an okta connection round-trips too", func(t *testing.T) {
			r := api(t, base, "POST", "/api/v2/connections", tokAll, map[string]any{
				"name": "okta-rt", "strategy": "okta",
				"options": map[string]any{"domain": strings.TrimPrefix(h.up.URL, "http://"), "client_id": upClientID, "client_secret": upSecret},
			})
			if r.status != 201 {
				t.Fatalf("POST okta: %d %s", r.status, r.raw)
			}
			p := "/api/v2/connections/" + r.obj()["id"].(string)
			got := api(t, base, "GET", p, tokAll, nil).obj()
			got["display_name"] = "Okta"
			if r := api(t, base, "PATCH", p, tokAll, got); r.status != 200 || r.obj()["display_name"] != "Okta" {
				t.Fatalf("PATCH of the okta GET answer: %d %s", r.status, r.raw)
			}
		})
	})
}
