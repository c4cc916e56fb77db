package broker

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/upstream"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

func TestLogsShowManagementEventsOperatorRequestStatusAndErrorCode(t *testing.T) {
	tests := []struct {
		name      string
		ev        logs.Event
		wantUser  string // the list's User column
		wantError string // the list's Error column
		wantFacts []logFact
	}{
		{
			name: "a refused management API call",
			ev: logs.Event{Type: logs.TypeFailedAPI, Details: map[string]any{
				"error":    map[string]any{"errorCode": "dpop_key_missing", "message": "The connection has no DPoP key."},
				"request":  map[string]any{"method": "PATCH", "path": "/api/v2/connections/con_1", "auth": map[string]any{"user": "ops", "scopes": []any{"update:connections"}}},
				"response": map[string]any{"statusCode": float64(400)},
			}},
			wantUser: "ops (management API token)", wantError: "dpop_key_missing",
			wantFacts: []logFact{{"Operator", "ops (management API token)"}, {"Request", "PATCH /api/v2/connections/con_1"},
				{"Status", "400"}, {"Error code", "dpop_key_missing"}, {"Error message", "The connection has no DPoP key."}},
		},
		{
			name: "a console write through the API",
			ev: logs.Event{Type: logs.TypeSuccessAPI, UserID: "oidc|corp|alice", Details: map[string]any{
				"console":  map[string]any{"operator": "token:demo", "via": "token"},
				"request":  map[string]any{"method": "DELETE", "path": "/api/v2/users/oidc%7Ccorp%7Calice/sessions", "auth": map[string]any{"user": "console:token:demo"}},
				"response": map[string]any{"statusCode": float64(202)},
			}},
			wantUser:  "token:demo (via token)",
			wantFacts: []logFact{{"Operator", "token:demo (via token)"}, {"Request", "DELETE /api/v2/users/oidc%7Ccorp%7Calice/sessions"}, {"Status", "202"}},
		},
		{
			name: "a console sign-in",
			ev: logs.Event{Type: logs.TypeSuccessAPI, Details: map[string]any{
				"console":  map[string]any{"action": "sign_in"},
				"request":  map[string]any{"method": "GET", "path": "/console/callback", "auth": map[string]any{"user": "oidc|corp|alice", "via": "broker"}},
				"response": map[string]any{"statusCode": float64(303)},
			}},
			wantUser: "oidc|corp|alice (via broker)",
			wantFacts: []logFact{{"Operator", "oidc|corp|alice (via broker)"}, {"Console action", "sign_in"},
				{"Request", "GET /console/callback"}, {"Status", "303"}},
		},
		{
			name: "a console refusal recorded without how the operator signed in",
			ev: logs.Event{Type: logs.TypeFailedAPI, Details: map[string]any{
				"console":  map[string]any{"action": "refused"},
				"error":    map[string]any{"errorCode": "console_refused", "message": "missing or wrong CSRF token"},
				"request":  map[string]any{"method": "POST", "path": "/console/signout", "auth": map[string]any{"user": "token:demo"}},
				"response": map[string]any{"statusCode": float64(403)},
			}},
			wantUser: "token:demo (console)", wantError: "console_refused",
		},
		{
			name:     "a failed login keeps its user and error",
			ev:       logs.Event{Type: logs.TypeFailedLogin, UserID: "u1", Details: map[string]any{"error": "invalid_state"}},
			wantUser: "u1", wantError: "invalid_state",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newLogEventData("/console", &tt.ev)
			if d.Row.User != tt.wantUser || d.Row.Error != tt.wantError {
				t.Errorf("row user %q error %q, want %q and %q", d.Row.User, d.Row.Error, tt.wantUser, tt.wantError)
			}
			var facts []logFact
			for _, f := range d.Other {
				if f.Label != "Error description" && f.Label != "Grant type" {
					facts = append(facts, f)
				}
			}
			if tt.wantFacts != nil && !slices.Equal(facts, tt.wantFacts) {
				t.Errorf("facts = %+v, want %+v", facts, tt.wantFacts)
			}
			for _, f := range d.Other {
				if strings.Contains(f.Value, "{") {
					t.Errorf("fact %s shows raw JSON %q", f.Label, f.Value)
				}
			}
		})
	}
}

func TestConsoleLogsOlderPageLinksBackToTheNewest(t *testing.T) {
	h := consoleLogsHarness(t)
	browser := h.browser()
	if resp, body := h.consoleSignIn(browser); resp.StatusCode != http.StatusOK {
		t.Fatalf("sign-in: %d\n%s", resp.StatusCode, body)
	}
	for i := range consoleLogsPerPage + 1 {
		ev := &logs.Event{Type: logs.TypeFailedLogin, Description: "Failed Login", Connection: "corp", IP: fmt.Sprintf("10.0.%d.%d", i/200, i%200+1), Details: map[string]any{"error": "invalid_state", "n": i}}
		if err := h.events.Write(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	_, first := get(t, browser, h.srv.URL+"/console/logs?type=f")
	m := regexp.MustCompile(`<a href="([^"]+)">Older events</a>`).FindStringSubmatch(first)
	if m == nil || strings.Contains(first, "Newest events") {
		t.Fatalf("the first page: want an Older link and no Newest one:\n%s", first)
	}
	resp, second := get(t, browser, h.srv.URL+html.UnescapeString(m[1]))
	if resp.StatusCode != http.StatusOK || !strings.Contains(second, ">Newest events</a>") {
		t.Fatalf("the older page: %d, want a Newest link:\n%s", resp.StatusCode, second)
	}
}

// DPoP turned off on a connection whose upstream requires it: every login fails with
// upstream_requires_dpop (not a rejected proof: none was sent), and the event view explains it.
func TestALoginWithDPoPOffAgainstAnUpstreamRequiringItIsUpstreamRequiresDPoP(t *testing.T) {
	h := newHarness(t, harnessOpts{up: demoidp.Options{DPoPAlgs: []string{"ES256"}, RequireDPoP: true}, mutate: func(c *config.Config) {
		c.Connections[0].Options.DPoPSigningAlg = ""
	}})
	resp, _ := get(t, h.browser(), h.authorizeURL(nil))
	if resp.Request.URL.Query().Get("error") == "" {
		t.Fatalf("the login reached %s, want an error back at the app", resp.Request.URL)
	}
	ev := h.lastEventOf(logs.TypeFailedLogin)
	if ev.Details["error"] != upstream.CodeUpstreamRequiresDPoP {
		t.Fatalf("f event details %v: want error upstream_requires_dpop", ev.Details)
	}
	d := newLogEventData("/console", &ev)
	if d.Trouble == nil || !d.Trouble.Exact || !strings.Contains(string(d.Trouble.ToDo), "turn DPoP on") {
		t.Errorf("the event view's troubleshooting = %+v, want the upstream_requires_dpop entry", d.Trouble)
	}
}
