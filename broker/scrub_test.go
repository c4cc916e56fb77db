package broker

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs/logtest"
)

// A configured secret sent in a request never reaches an event, stored or on stdout, when the
// broker cuts the value at its length limit right inside the secret (query, path, User-Agent),
// nor when it is percent-encoded in a non-canonical way ("%4F" for "O").
func TestSecretsCutAtALengthLimitOrOddlyEncodedNeverReachAnEvent(t *testing.T) {
	// Letters no event field carries by chance (a log_id holds random digits).
	const token = "OPS-TOKEN-QXZJvbnmWQZXplkmJNHBzqxwVYUKgfdsRTEW"
	h, stdout := harnessWithOpsToken(t, token)
	tests := []struct {
		name      string
		path      string
		userAgent string
		form      url.Values // POSTed when set
	}{
		{name: "secret cut by the query limit", path: "/api/v2/connections?foo=" + strings.Repeat("a", 488) + token},
		{name: "secret cut by the path limit", path: "/api/v2/" + strings.Repeat("a", 240) + token},
		{name: "secret cut by the User-Agent limit", path: "/api/v2/connections", userAgent: strings.Repeat("a", 240) + token},
		{name: "secret with a non-canonical percent-encoding", path: "/api/v2/connections?foo=%4F" + token[1:]},
		{name: "secret with lower-case hex and an encoded dash", path: "/api/v2/connections?foo=%4fPS%2dTOKEN" + token[len("OPS-TOKEN"):]},
		{name: "non-canonically encoded secret cut by the query limit", path: "/api/v2/connections?foo=" + strings.Repeat("a", 490) + "%4F" + token[1:]},
		{name: "secret cut by the client_id limit of a token request", path: "/oauth/token",
			form: url.Values{"grant_type": {"refresh_token"}, "client_id": {strings.Repeat("a", 110) + token}, "client_secret": {"x"}}},
		// The revocation endpoint cuts before the writer sees the value: the writer still
		// removes the secret's beginning before the cut mark.
		{name: "secret cut by the client_id limit of a revocation", path: "/oauth/revoke",
			form: url.Values{"token": {"t"}, "client_id": {strings.Repeat("a", 110) + token}, "client_secret": {"x"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method, body := http.MethodGet, ""
			if tc.form != nil {
				method, body = http.MethodPost, tc.form.Encode()
			}
			req, err := http.NewRequest(method, h.srv.URL+tc.path, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.form != nil {
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
			if tc.userAgent != "" {
				req.Header.Set("User-Agent", tc.userAgent)
			}
			if r := h.do(req); r.status != http.StatusUnauthorized {
				t.Fatalf("%s %s: %d %v, want 401", method, tc.path, r.status, r.body)
			}
		})
	}
	es, err := h.events.Store.LogsAfter(context.Background(), "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != len(tests) {
		t.Fatalf("%d events stored, want %d", len(es), len(tests))
	}
	var stored strings.Builder
	for _, e := range es {
		stored.Write(e.Event)
		stored.WriteByte('\n')
	}
	for where, out := range map[string]string{"store": stored.String(), "stdout": stdout.String()} {
		// Any 4 bytes of the token past its first letter (which "%4F" replaces).
		for i := 1; i+4 <= len(token); i++ {
			if strings.Contains(out, token[i:i+4]) {
				t.Fatalf("%s carries %q, a piece of the management token:\n%s", where, token[i:i+4], out)
			}
		}
		if n := strings.Count(out, "[redacted]"); n < len(tests) {
			t.Fatalf("%s holds %d redactions, want at least %d:\n%s", where, n, len(tests), out)
		}
	}
}

// harnessWithOpsToken is a harness whose management token "ops" (read:connections) is token,
// with its events captured.
func harnessWithOpsToken(t *testing.T, token string) (*harness, *logtest.Buffer) {
	t.Helper()
	h := newHarness(t, harnessOpts{up: optionalDPoPUp, mutate: func(c *config.Config) {
		c.Management.Tokens = []config.ManagementToken{{Name: "ops", Token: token, Scopes: []string{config.ScopeReadConnections}}}
	}})
	return h, h.captureEvents()
}
