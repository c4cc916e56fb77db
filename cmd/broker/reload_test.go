package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/logs/logtest"
)

// Management tokens and client secrets of the reload test's files: none may appear in the
// broker's output.
const (
	reloadKeeperToken = "keeper-token-0123456789abcdefghijklmnop"
	reloadLeaverToken = "leaver-token-0123456789abcdefghijklmnop"
	reloadAppSecret   = "app-secret-0123456789abcdefghij"
	reloadNewSecret   = "new-secret-0123456789abcdefghij"
	reloadStreamToken = "stream-token-0123456789abcdefghij"
	reloadRotatedTok  = "rotated-stream-token-0123456789abcdef"
)

// reloadConfig is the reload test's configuration file; each field changes it.
type reloadConfig struct {
	listen      string
	leaver      bool   // the second management token is configured
	newApp      bool   // the client new-app is configured
	otherApp    bool   // the client other-app is configured
	tokenPerIP  string // rate_limits.token.per_ip
	dpopAlg     string // the connection's dpop_signing_alg
	badRedirect bool   // an invalid redirect URI: the file does not validate
	// streamURL and streamToken are the log stream siem's endpoint and bearer token (none
	// when streamURL is "").
	streamURL, streamToken string
	consoleAdmin           bool // console.admins names a user of the connection c
}

func (c reloadConfig) write(t *testing.T, dir string) string {
	t.Helper()
	key := func(name, alg string) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, testKeyPEM(t, alg), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	var b strings.Builder
	fmt.Fprintf(&b, `issuer: "http://127.0.0.1:8080/"
listen: %q
store: { type: memory }
keys:
  signing: { private_key_file: %q }
  dpop: { es256: { private_key_file: %q }, ed25519: { private_key_file: %q } }
management:
  tokens:
    - { name: keeper, token: %q, scopes: [read:clients, read:connections] }
`, c.listen, key("signing.pem", "RS256"), key("es256.pem", "ES256"), key("ed25519.pem", "Ed25519"), reloadKeeperToken)
	if c.leaver {
		fmt.Fprintf(&b, "    - { name: leaver, token: %q, scopes: [read:clients] }\n", reloadLeaverToken)
	}
	fmt.Fprintf(&b, `rate_limits:
  token: { per_ip: %s }
clients:
  - { client_id: app, client_secret: %q, redirect_uris: ["http://127.0.0.1:8082/callback"], connections: [c] }
`, c.tokenPerIP, reloadAppSecret)
	if c.newApp {
		fmt.Fprintf(&b, "  - { client_id: new-app, client_secret: %q, redirect_uris: [\"http://127.0.0.1:8083/callback\"], connections: [c] }\n", reloadNewSecret)
	}
	if c.otherApp {
		b.WriteString("  - { client_id: other-app, redirect_uris: [\"http://127.0.0.1:8084/callback\"], connections: [c] }\n")
	}
	if c.badRedirect {
		b.WriteString("  - { client_id: bad-app, redirect_uris: [\"ftp://127.0.0.1/callback\"], connections: [c] }\n")
	}
	fmt.Fprintf(&b, `connections:
  - { name: c, strategy: oidc, options: { issuer: "https://idp.example.com", client_id: b, client_secret: s, dpop_signing_alg: %s } }
`, c.dpopAlg)
	if c.streamURL != "" {
		fmt.Fprintf(&b, `log_streams:
  - { name: siem, url: %q, auth: { type: bearer, token: %q }, allowed_networks: [127.0.0.0/8] }
`, c.streamURL, c.streamToken)
	}
	if c.consoleAdmin {
		b.WriteString("console:\n  admins: [ { user_id: \"oidc|c|alice\" } ]\n")
	}
	f := filepath.Join(dir, "broker.yaml")
	// Written whole, then renamed over the file: a reload never reads half a file.
	tmp := f + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, f); err != nil {
		t.Fatal(err)
	}
	return f
}

// logLine is one JSON log line of the child, with the members the test reads.
type logLine struct {
	Level, Msg, Addr, Setting string
	Errors                    []string
	ClientsAdded              []string `json:"clients_added"`
	ConnectionsChanged        []string `json:"connections_changed"`
	TokensRemoved             []string `json:"management_tokens_removed"`
	RateLimitsChanged         []string `json:"rate_limits_changed"`
	LogStreamsChanged         []string `json:"log_streams_changed"`
	Changed                   []string
	NotApplied                []string `json:"not_applied"`
}

// logLines returns the child's JSON log lines with message msg.
func logLines(out *logtest.Buffer, msg string) []logLine {
	var ls []logLine
	for _, raw := range strings.Split(out.String(), "\n") {
		var l logLine
		if json.Unmarshal([]byte(raw), &l) == nil && l.Msg == msg {
			ls = append(ls, l)
		}
	}
	return ls
}

// waitLog waits (bounded generously, never asserting on speed: waitChild) until the child has
// logged n lines with message msg, and returns them.
func waitLog(t *testing.T, out *logtest.Buffer, exited <-chan error, msg string, n int) []logLine {
	t.Helper()
	var ls []logLine
	waitChild(t, fmt.Sprintf("%d lines %q", n, msg), out, exited, func() bool {
		ls = logLines(out, msg)
		return len(ls) >= n
	})
	return ls
}

// streamEndpoint is a log stream's loopback endpoint: it answers 200 and keeps the
// Authorization header of each request.
type streamEndpoint struct {
	srv  *httptest.Server
	mu   sync.Mutex
	auth []string
}

func newStreamEndpoint(t *testing.T) *streamEndpoint {
	e := &streamEndpoint{}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		e.mu.Lock()
		e.auth = append(e.auth, r.Header.Get("Authorization"))
		e.mu.Unlock()
	}))
	t.Cleanup(e.srv.Close)
	return e
}

// requests returns the Authorization headers of the requests so far.
func (e *streamEndpoint) requests() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.auth)
}

// TestServeReloadsItsConfigurationOnSIGHUP runs `broker serve` as a child process and changes
// its file under it: SIGHUP applies a new client, a lower token-endpoint rate limit, a
// removed management token, a connection's new dpop_signing_alg, console.admins and a log
// stream moved to another endpoint with another token, and names the changed
// listen as needing a restart (the broker keeps serving where it listens); an invalid file is
// refused with its errors logged and the running configuration keeps working; a later reload
// that leaves the rate limit alone keeps its buckets. Secrets never reach the log.
func TestServeReloadsItsConfigurationOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	oldStream, newStream := newStreamEndpoint(t), newStreamEndpoint(t)
	cfg := reloadConfig{listen: "127.0.0.1:0", leaver: true, tokenPerIP: `{ rate: "100/s", burst: 1000 }`, dpopAlg: "ES256",
		streamURL: oldStream.srv.URL, streamToken: reloadStreamToken}
	file := cfg.write(t, dir)
	cmd := exec.Command(os.Args[0], "serve", "--config", file)
	cmd.Env = append(os.Environ(), childMainEnv+"=1")
	cmd.Env = slices.DeleteFunc(cmd.Env, func(e string) bool { return strings.HasPrefix(e, listenEnv+"=") })
	out, exited := startChild(t, cmd)
	base := "http://" + waitLog(t, out, exited, "listening", 1)[0].Addr
	hc := &http.Client{Timeout: time.Minute}
	get := func(token, path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tokenStatus := func() int {
		t.Helper()
		resp, err := hc.Post(base+"/oauth/token", "application/x-www-form-urlencoded", strings.NewReader("grant_type=client_credentials"))
		if err != nil {
			t.Fatalf("POST /oauth/token: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	hangup := func() {
		t.Helper()
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	connAlg := regexp.MustCompile(`"dpop_signing_alg":"([^"]*)"`)

	// Before: the first configuration.
	if code, _ := get(reloadKeeperToken, "/api/v2/clients/new-app"); code != http.StatusNotFound {
		t.Fatalf("new-app before the reload: %d, want 404", code)
	}
	if code, _ := get(reloadLeaverToken, "/api/v2/clients"); code != http.StatusOK {
		t.Fatalf("the leaver token before the reload: %d, want 200", code)
	}
	if _, body := get(reloadKeeperToken, "/api/v2/connections"); connAlg.FindStringSubmatch(body) == nil || connAlg.FindStringSubmatch(body)[1] != "ES256" {
		t.Fatalf("connection before the reload: %s", body)
	}
	for i := range 3 {
		if code := tokenStatus(); code == http.StatusTooManyRequests {
			t.Fatalf("token request %d before the reload: 429", i)
		}
	}

	// A valid change.
	cfg = reloadConfig{listen: "127.0.0.1:1", newApp: true, tokenPerIP: `{ rate: "1/h", burst: 1 }`, dpopAlg: "Ed25519",
		streamURL: newStream.srv.URL, streamToken: reloadRotatedTok, consoleAdmin: true}
	cfg.write(t, dir)
	hangup()
	done := waitLog(t, out, exited, "configuration reloaded", 1)[0]
	sentOld := len(oldStream.requests()) // the old stream stopped before the reload was logged
	t.Run("the new client is served", func(t *testing.T) {
		if code, body := get(reloadKeeperToken, "/api/v2/clients/new-app"); code != http.StatusOK {
			t.Errorf("new-app after the reload: %d %s", code, body)
		}
	})
	t.Run("the removed management token is refused and the kept one works", func(t *testing.T) {
		if code, _ := get(reloadLeaverToken, "/api/v2/clients"); code != http.StatusUnauthorized {
			t.Errorf("the removed token: %d, want 401", code)
		}
		if code, _ := get(reloadKeeperToken, "/api/v2/clients"); code != http.StatusOK {
			t.Errorf("the kept token: %d, want 200", code)
		}
	})
	t.Run("the connection's new dpop_signing_alg is stored", func(t *testing.T) {
		if _, body := get(reloadKeeperToken, "/api/v2/connections"); connAlg.FindStringSubmatch(body) == nil || connAlg.FindStringSubmatch(body)[1] != "Ed25519" {
			t.Errorf("connection after the reload: %s", body)
		}
	})
	t.Run("the lower rate limit applies", func(t *testing.T) {
		first, second := tokenStatus(), tokenStatus() // burst 1: the second is refused for an hour
		if first == http.StatusTooManyRequests || second != http.StatusTooManyRequests {
			t.Errorf("token requests after the reload: %d then %d, want a 429 second", first, second)
		}
	})
	t.Run("the reload line names what changed", func(t *testing.T) {
		if !slices.Equal(done.ClientsAdded, []string{"new-app"}) || !slices.Equal(done.TokensRemoved, []string{"leaver"}) ||
			!slices.Equal(done.ConnectionsChanged, []string{"c"}) || !slices.Contains(done.RateLimitsChanged, "rate_limits.token.per_ip") ||
			!slices.Equal(done.NotApplied, []string{"listen"}) || !slices.Equal(done.LogStreamsChanged, []string{"siem"}) ||
			!slices.Contains(done.Changed, "console") || !slices.Contains(done.Changed, "log_streams") {
			t.Errorf("reload line: %+v", done)
		}
	})
	t.Run("the log stream sends to its new endpoint with its new token, and no more to the old one", func(t *testing.T) {
		for deadline := time.Now().Add(2 * time.Minute); len(newStream.requests()) == 0; {
			tokenStatus() // a failed token request is an event
			if time.Now().After(deadline) {
				t.Fatalf("the new endpoint got no request within 2 minutes:\n%s", out.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		for _, a := range newStream.requests() {
			if a != "Bearer "+reloadRotatedTok {
				t.Errorf("the new endpoint got a request without the rotated token")
			}
		}
		old := oldStream.requests()
		if len(old) != sentOld {
			t.Errorf("the old endpoint got %d requests after the reload", len(old)-sentOld)
		}
		for _, a := range old {
			if a != "Bearer "+reloadStreamToken {
				t.Errorf("the old endpoint got a request without the first token")
			}
		}
	})
	t.Run("the changed listen is named as needing a restart", func(t *testing.T) {
		var names []string
		for _, l := range logLines(out, "configuration setting changed but needs a restart; the running value is kept") {
			names = append(names, l.Setting)
		}
		if !slices.Equal(names, []string{"listen"}) {
			t.Errorf("settings named as needing a restart: %v", names)
		}
		if code, _ := get(reloadKeeperToken, "/healthz"); code != http.StatusOK { // still where it listened
			t.Errorf("/healthz on the running listen: %d", code)
		}
	})

	// An invalid file: refused, the errors logged, the running configuration kept.
	bad := cfg
	bad.badRedirect = true
	bad.write(t, dir)
	hangup()
	failed := waitLog(t, out, exited, "configuration reload failed; the running configuration is kept", 1)[0]
	t.Run("an invalid file is refused with its errors", func(t *testing.T) {
		if failed.Level != "ERROR" || !slices.ContainsFunc(failed.Errors, func(e string) bool { return strings.HasPrefix(e, "clients[2].redirect_uris[0]: ") }) {
			t.Errorf("failed reload line: %+v", failed)
		}
		if code, _ := get(reloadKeeperToken, "/api/v2/clients/new-app"); code != http.StatusOK {
			t.Errorf("new-app after the refused reload: %d", code)
		}
		if code, _ := get(reloadKeeperToken, "/api/v2/clients/bad-app"); code != http.StatusNotFound {
			t.Errorf("bad-app after the refused reload: %d, want 404", code)
		}
	})

	// A reload that leaves the rate limit alone keeps its buckets: the spent one stays spent.
	next := cfg
	next.otherApp = true
	next.write(t, dir)
	hangup()
	waitLog(t, out, exited, "configuration reloaded", 2)
	t.Run("an unchanged rate limit keeps its buckets", func(t *testing.T) {
		if code, _ := get(reloadKeeperToken, "/api/v2/clients/other-app"); code != http.StatusOK {
			t.Errorf("other-app after the second reload: %d", code)
		}
		if code := tokenStatus(); code != http.StatusTooManyRequests {
			t.Errorf("token request after a reload that kept the limit: %d, want 429 (the bucket was spent)", code)
		}
	})
	t.Run("reloads are counted by result", func(t *testing.T) {
		_, metrics := get("", "/metrics")
		for _, want := range []string{`dpop_broker_config_reloads_total{result="success"} 2`, `dpop_broker_config_reloads_total{result="failure"} 1`} {
			if !strings.Contains(metrics, want+"\n") {
				t.Errorf("metrics lack %s", want)
			}
		}
	})
	stopChild(t, cmd, out, exited)
	for _, secret := range []string{reloadKeeperToken, reloadLeaverToken, reloadAppSecret, reloadNewSecret, reloadStreamToken, reloadRotatedTok} {
		if strings.Contains(out.String(), secret) {
			t.Errorf("the output carries a secret of the configuration file")
		}
	}
}

// TestDemoIgnoresSIGHUP: the demo's configuration is built in, so SIGHUP is logged as ignored
// and the demo keeps serving (without a handler the signal would end the process).
func TestDemoIgnoresSIGHUP(t *testing.T) {
	cmd := exec.Command(os.Args[0], "demo", "--broker-port", "0", "--idp-port", "0", "--app-port", "0")
	cmd.Env = append(os.Environ(), childMainEnv+"=1")
	out, exited := startChild(t, cmd)
	brokerLine := regexp.MustCompile(`(?m)^  broker        (http://\S+)  `)
	var issuer string
	for deadline := time.Now().Add(2 * time.Minute); issuer == ""; {
		if m := brokerLine.FindStringSubmatch(out.String()); m != nil {
			issuer = m[1]
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("demo exited: %v\n%s", err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("demo printed no broker URL within 2 minutes:\n%s", out.String())
		}
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	ignored := waitLog(t, out, exited, "SIGHUP ignored: the demo's configuration is built in; there is no file to reload (broker serve reloads on SIGHUP)", 1)
	if ignored[0].Level != "WARN" {
		t.Errorf("SIGHUP line: %+v", ignored[0])
	}
	resp, err := (&http.Client{Timeout: time.Minute}).Get(issuer + "healthz")
	if err != nil {
		t.Fatalf("demo after SIGHUP: %v\n%s", err, out.String())
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz after SIGHUP: %d", resp.StatusCode)
	}
	stopChild(t, cmd, out, exited)
}
