package broker

import (
	"cmp"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/sessions"
)

func TestManagementBodiesRefuseMembersNotSpelledExactlyAndDuplicates(t *testing.T) {
	const secret = "UpstreamSecret-0123456789abcdef"
	h := newHarness(t, harnessOpts{up: optionalDPoPUp, store: sessions.NewMemory(), mutate: withClientsMgmt})
	conn := func(extra string) string {
		return `{"name":"leaky","strategy":"oidc","options":{"issuer":"https://idp.invalid","client_id":"c"` + extra + `}}`
	}
	tests := []struct {
		name    string
		method  string // default POST
		path    string
		body    string
		wantMsg string
	}{
		{name: "a connection secret under a Unicode case fold of client_secret", path: "/api/v2/connections",
			body:    conn(`,"client_ſecret":"` + secret + `","dpop_signing_alg":"XX"`),
			wantMsg: "Additional properties not allowed: client_ſecret in options (member names are case-sensitive: client_secret)"},
		{name: "a connection secret in capitals", path: "/api/v2/connections",
			body:    conn(`,"CLIENT_SECRET":"` + secret + `"`),
			wantMsg: "Additional properties not allowed: CLIENT_SECRET in options (member names are case-sensitive: client_secret)"},
		{name: "a client secret in capitals", path: "/api/v2/clients",
			body:    `{"name":"leaky","callbacks":["https://app.example/cb"],"CLIENT_SECRET":"` + secret + `"}`,
			wantMsg: "Additional properties not allowed: CLIENT_SECRET (member names are case-sensitive: client_secret)"},
		{name: "a top-level member in another case", path: "/api/v2/connections",
			body:    `{"name":"first","NAME":"second","strategy":"oidc","options":{"issuer":"https://idp.invalid","client_id":"c"}}`,
			wantMsg: "Additional properties not allowed: NAME (member names are case-sensitive: name)"},
		{name: "a duplicate top-level member", path: "/api/v2/connections",
			body:    `{"name":"first","name":"second","strategy":"oidc","options":{"issuer":"https://idp.invalid","client_id":"c"}}`,
			wantMsg: "duplicate member name"},
		{name: "a duplicate secret", path: "/api/v2/connections",
			body:    conn(`,"client_secret":"a","client_secret":"` + secret + `"`),
			wantMsg: "duplicate member client_secret in options"},
		{name: "a duplicate member deep in options", path: "/api/v2/connections",
			body:    conn(`,"upstream_params":{"prompt":{"value":"login","value":"none"}}`),
			wantMsg: "duplicate member value in options.upstream_params.prompt"},
		{name: "an upstream_params entry member in another case", path: "/api/v2/connections",
			body:    conn(`,"upstream_params":{"prompt":{"Value":"login"}}`),
			wantMsg: "Additional properties not allowed: Value in options.upstream_params.prompt (member names are case-sensitive: value)"},
		{name: "a duplicate in a client's list of objects", path: "/api/v2/clients",
			body:    `{"name":"x","callbacks":["https://app.example/cb"],"apis":[{"audience":"a","audience":"b"}]}`,
			wantMsg: "duplicate member audience in apis[0]"},
		{name: "a body nested too deep", path: "/api/v2/connections",
			body:    conn(`,"attribute_map":{"attributes":` + strings.Repeat(`{"a":`, 20) + `1` + strings.Repeat(`}`, 20) + `}`),
			wantMsg: "nested more than 16 levels"},
		{name: "a member in another case in an array body", method: "PATCH", path: "/api/v2/connections/" + idOf(t, h, "corp") + "/clients",
			body:    `[{"client_id":"x","Status":true}]`,
			wantMsg: "Additional properties not allowed: Status in the body[0] (member names are case-sensitive: status)"},
		{name: "a member name with control characters is quoted", path: "/api/v2/clients",
			body:    `{"name":"x","na\u0000me":"y"}`,
			wantMsg: `Additional properties not allowed: "na\x00me"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := api(t, h.srv.URL, cmp.Or(tt.method, "POST"), tt.path, tokClients, tt.body)
			wantAPIError(t, r, http.StatusBadRequest, "invalid_body", tt.wantMsg)
			ev := h.lastEvent()
			logged, _ := json.Marshal(ev)
			if strings.Contains(string(logged), secret) {
				t.Errorf("the event holds the secret: %s", logged)
			}
		})
	}
}

func TestLoggedManagementBodyRedactsSecretMembersHoweverCased(t *testing.T) {
	tests := []struct {
		name string
		body map[string]any
		want map[string]any
	}{
		{name: "exact", body: map[string]any{"client_secret": "s", "name": "n"}, want: map[string]any{"client_secret_present": true, "name": "n"}},
		{name: "capitals", body: map[string]any{"CLIENT_SECRET": "s"}, want: map[string]any{"client_secret_present": true}},
		{name: "long s (U+017F)", body: map[string]any{"options": map[string]any{"client_ſecret": "s", "client_id": "c"}},
			want: map[string]any{"options": map[string]any{"client_secret_present": true, "client_id": "c"}}},
		{name: "Kelvin sign in another secret-like name", body: map[string]any{"signing_\u212Aey_password": "s"}, want: map[string]any{"client_secret_present": true}},
		{name: "auth method names are kept", body: map[string]any{"token_endpoint_auth_method": "private_key_jwt"}, want: map[string]any{"token_endpoint_auth_method": "private_key_jwt"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := redactBody(tt.body); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("redactBody = %v, want %v", got, tt.want)
			}
		})
	}
}
