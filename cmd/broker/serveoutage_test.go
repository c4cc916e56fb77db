package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/logs/logtest"
	"github.com/dpop-broker/dpop-broker/sessions/redistest"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// serveLine is one JSON line of `broker serve`'s application log, with the fields the tests
// read.
type serveLine struct {
	Level, Msg, Addr, Class string
	FailedCommands          *int     `json:"failed_commands"`
	OutageSeconds           *float64 `json:"outage_seconds"`
	raw                     string
}

// serveLines decodes the JSON lines of out (other lines are skipped).
func serveLines(out string) []serveLine {
	var ls []serveLine
	for s := range strings.SplitSeq(out, "\n") {
		var l serveLine
		if json.Unmarshal([]byte(s), &l) == nil && l.Msg != "" {
			l.raw = s
			ls = append(ls, l)
		}
	}
	return ls
}

// waitChild polls cond every 50 ms until it holds; the bound is generous (busy machines), never
// an expectation.
func waitChild(t *testing.T, what string, out *logtest.Buffer, exited <-chan error, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); !cond(); {
		select {
		case err := <-exited:
			t.Fatalf("broker serve exited while waiting for %s: %v\n%s", what, err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen within 2 minutes:\n%s", what, out.String())
		}
	}
}

// TestServeLogsARedisOutageInTwoLinesAndEventsInTheirFile runs `broker serve` on a Redis of
// its own with log.events naming a file. A login event goes to that file and not to the
// application log. Then Redis stops: every request needing it (logins, the management API,
// /readyz) answers 503 as before, and the failed logins' events still reach the file, but the
// application log (at info) has exactly one "store unavailable" line and no warning or error
// per request; once Redis is back, exactly one "store recovered" line counts the failed
// commands (at least one per failed request).
func TestServeLogsARedisOutageInTwoLinesAndEventsInTheirFile(t *testing.T) {
	srv := redistest.StartServer(t)
	idp, err := demoidp.Start(demoidp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(idp.Close)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "signing.pem")
	cfgFile := filepath.Join(dir, "broker.yaml")
	eventsFile := filepath.Join(dir, "events.jsonl")
	if err := os.WriteFile(keyFile, testKeyPEM(t, "RS256"), 0o600); err != nil {
		t.Fatal(err)
	}
	token := strings.Repeat("t", 40)
	if err := os.WriteFile(cfgFile, []byte(fmt.Sprintf(`
issuer: "http://127.0.0.1:8080/"
listen: "127.0.0.1:0"
store: { type: redis, redis: { addrs: [%q] } }
keys: { signing: { private_key_file: %q } }
log: { level: info, format: json, events: %q }
upstream_allowed_networks: ["127.0.0.1"]
management:
  tokens: [ { name: ops, token: %q, scopes: [read:logs] } ]
clients:
  - { client_id: a, client_secret: s, redirect_uris: ["http://127.0.0.1:8082/callback"], connections: [c] }
connections:
  - { name: c, strategy: oidc, options: { issuer: %q, client_id: broker, client_secret: broker-secret } }
`, srv.Addr, keyFile, eventsFile, token, idp.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "serve", "--config", cfgFile)
	cmd.Env = append(os.Environ(), childMainEnv+"=1")
	out, exited := startChild(t, cmd)
	var base string
	waitChild(t, "the listening line", out, exited, func() bool {
		for _, l := range serveLines(out.String()) {
			if l.Msg == "listening" {
				base = "http://" + l.Addr
				return true
			}
		}
		return false
	})
	hc := &http.Client{Timeout: time.Minute, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string, auth bool) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if auth {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	// A failed login (unknown client): its event line is in the events file only.
	get("/authorize?"+url.Values{"client_id": {"nobody"}, "response_type": {"code"}}.Encode(), false)
	waitChild(t, "the login event in the events file", out, exited, func() bool {
		b, _ := os.ReadFile(eventsFile)
		return strings.Contains(string(b), `"msg":"login_event"`)
	})
	if strings.Contains(out.String(), "login_event\"") {
		t.Errorf("the application log carries a login event:\n%s", out.String())
	}

	srv.Stop()
	stoppedAt := len(out.String())
	const requests = 10
	login := "/authorize?" + url.Values{"client_id": {"a"}, "response_type": {"code"}, "scope": {"openid"},
		"redirect_uri": {"http://127.0.0.1:8082/callback"}, "state": {"st"}, "nonce": {"n"},
		"code_challenge": {"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"}, "code_challenge_method": {"S256"}}.Encode()
	for i := range requests {
		// The app gets its error (a redirect, temporarily_unavailable), or a 503 page.
		if code := get(login, false); code != http.StatusFound && code != http.StatusServiceUnavailable {
			t.Fatalf("GET /authorize %d with Redis stopped = %d, want 302 or 503", i, code)
		}
		if code := get("/api/v2/logs", true); code != http.StatusServiceUnavailable {
			t.Fatalf("GET /api/v2/logs %d with Redis stopped = %d, want 503", i, code)
		}
		if code := get("/readyz", false); code != http.StatusServiceUnavailable {
			t.Fatalf("GET /readyz with Redis stopped = %d, want 503", code)
		}
	}
	waitChild(t, "the store unavailable line", out, exited, func() bool { return strings.Contains(out.String(), `"msg":"store unavailable"`) })
	// The failed logins' events reach the file though the store cannot keep them.
	waitChild(t, "the failed logins' events in the events file", out, exited, func() bool {
		b, _ := os.ReadFile(eventsFile)
		return strings.Count(string(b), `"error":"store_unavailable"`) == requests
	})

	srv.Restart()
	waitChild(t, "the store recovered line", out, exited, func() bool {
		get("/readyz", false) // traffic; the recovery is declared 2 s after Redis answers
		return strings.Contains(out.String(), `"msg":"store recovered"`)
	})
	if code := get("/api/v2/logs", true); code != http.StatusOK {
		t.Errorf("GET /api/v2/logs after the recovery = %d, want 200", code)
	}

	var down, up []serveLine
	for _, l := range serveLines(out.String()[stoppedAt:]) {
		switch {
		case l.Msg == "store unavailable":
			down = append(down, l)
		case l.Msg == "store recovered":
			up = append(up, l)
		case l.Level == "WARN" || l.Level == "ERROR":
			t.Errorf("per-request line during the outage above DEBUG: %s", l.raw)
		}
	}
	// Killed, Redis leaves the pooled connections dead (connection_lost) and refuses new ones.
	if len(down) != 1 || down[0].Level != "ERROR" || (down[0].Class != "connection_refused" && down[0].Class != "connection_lost") ||
		(down[0].Addr != "" && down[0].Addr != srv.Addr) {
		t.Errorf("store unavailable lines = %v, want one ERROR line, class connection_refused or connection_lost, addr %s if any", down, srv.Addr)
	}
	if len(up) != 1 || up[0].FailedCommands == nil || *up[0].FailedCommands < requests || up[0].OutageSeconds == nil {
		t.Errorf("store recovered lines = %v, want one with failed_commands >= %d and outage_seconds", up, requests)
	}
	stopChild(t, cmd, out, exited)
}
