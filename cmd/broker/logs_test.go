package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/broker"
	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/logs/logtest"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// waitFor polls the CLI output for want (a bounded wait, not a timing assertion). The bound is
// generous (a minute) because CI runs many race-instrumented packages at once on two cores,
// possibly beside another run; the CLI itself polls every 250 ms.
func waitFor(t *testing.T, buf *logtest.Buffer, want string) {
	t.Helper()
	const bound = time.Minute
	for deadline := time.Now().Add(bound); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if strings.Contains(buf.String(), want) {
			return
		}
	}
	t.Fatalf("output did not show %q within %v:\n%s", want, bound, buf.String())
}

const (
	logsToken    = "mgmt-token-0123456789abcdef0123456789"
	noScopeToken = "mgmt-token-without-read-logs-0123456789"
)

// startBrokerAPI runs a broker Server in-process on loopback with management tokens (one with
// read:logs, one without) and one connection to up; it returns the broker's URL, the server
// and the app's callback URL.
func startBrokerAPI(t *testing.T, up demoidp.Options) (string, *broker.Server, string) {
	t.Helper()
	return startTestBroker(t, up, broker.Deps{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, func(cfg *config.Config) {
		// The tests write many fixture failures straight to the writer: no limits on them.
		cfg.Logs.Unauthenticated.PerIP.Rate, cfg.Logs.Unauthenticated.Global.Rate = "0", "0"
		cfg.Management.Tokens = []config.ManagementToken{
			{Name: "cli", Token: logsToken, Scopes: []string{"read:logs"}},
			{Name: "conns", Token: noScopeToken, Scopes: []string{"read:connections"}},
		}
	})
}

// startTestBroker runs a broker Server (with deps) in-process on loopback: app "app" (secret
// app-secret) signs in through connection "corp" to a demo IdP started with up; mutate
// changes the configuration before the broker is built. It returns the broker's URL, the
// server and the app's callback URL.
func startTestBroker(t *testing.T, up demoidp.Options, deps broker.Deps, mutate func(*config.Config)) (string, *broker.Server, string) {
	t.Helper()
	idp, err := demoidp.Start(up)
	if err != nil {
		t.Fatalf("upstream: %v", err)
	}
	t.Cleanup(idp.Close)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "app") }))
	t.Cleanup(app.Close)
	srv := httptest.NewUnstartedServer(nil)
	cfg := config.Default()
	cfg.Issuer = "http://" + srv.Listener.Addr().String() + "/"
	cfg.GenerateMissingKeys = true
	cfg.DPoP.RetryDelay, cfg.DPoP.Jitter = 0, 0
	cfg.UpstreamAllowedNetworks = []string{"127.0.0.0/8"} // the test IdP listens on loopback
	cfg.Clients = []config.Client{{ClientID: "app", Name: "App", ClientSecret: "app-secret",
		RedirectURIs: []string{app.URL + "/cb"}, Connections: []string{"corp"}}}
	cfg.Connections = []config.Connection{{Name: "corp", Strategy: "oidc", Options: config.ConnectionOptions{
		Issuer: idp.URL, ClientID: up.ClientID, ClientSecret: up.ClientSecret, Scope: "openid profile email", Type: "back_channel",
	}}}
	if mutate != nil {
		mutate(cfg)
	}
	b, err := broker.New(cfg, deps)
	if err != nil {
		t.Fatalf("broker: %v", err)
	}
	srv.Config.Handler = b.Handler()
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL, b, app.URL + "/cb"
}

// failLogin runs one login that the upstream refuses (access_denied) and returns the app's
// error.
func failLogin(t *testing.T, brokerURL, redirectURI string) string {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	q := url.Values{"response_type": {"code"}, "client_id": {"app"}, "redirect_uri": {redirectURI},
		"scope": {"openid"}, "state": {"st"}, "code_challenge": {"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"},
		"code_challenge_method": {"S256"}}
	resp, err := c.Get(brokerURL + "/authorize?" + q.Encode())
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	_ = resp.Body.Close()
	return resp.Request.URL.Query().Get("error")
}

func writeEvent(t *testing.T, w *logs.Writer, ev logs.Event) {
	t.Helper()
	if err := w.Write(context.Background(), &ev); err != nil {
		t.Fatalf("write event: %v", err)
	}
}

func failEvent(conn, code string) logs.Event {
	return logs.Event{Type: logs.TypeFailedLogin, Connection: conn, ClientID: "app", Strategy: "oidc",
		Details: map[string]any{"error": code, "error_description": "nonce retries exhausted", "dpop_signing_alg": "ES256"}}
}

// TestLogsCommandAtThePublicListenerNamesAdminListen: with admin_listen, the broker's public
// listener answers net/http's 404 for /api/v2; the CLI says the management API is on
// admin_listen (it recognises the broker by its discovery document), and works there.
func TestLogsCommandAtThePublicListenerNamesAdminListen(t *testing.T) {
	pub := httptest.NewUnstartedServer(nil)
	cfg := config.Default()
	cfg.Issuer = "http://" + pub.Listener.Addr().String() + "/"
	cfg.AdminListen = "127.0.0.1:0"
	cfg.GenerateMissingKeys = true
	cfg.Management.Tokens = []config.ManagementToken{{Name: "cli", Token: logsToken, Scopes: []string{"read:logs"}}}
	cfg.Clients = []config.Client{{ClientID: "app", ClientSecret: "app-secret", RedirectURIs: []string{"http://127.0.0.1:9/cb"}, Connections: []string{"corp"}}}
	cfg.Connections = []config.Connection{{Name: "corp", Strategy: "oidc", Options: config.ConnectionOptions{
		Issuer: "https://idp.example.com", ClientID: "broker", ClientSecret: "s", Scope: "openid", Type: "back_channel"}}}
	b, err := broker.New(cfg, broker.Deps{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("broker: %v", err)
	}
	pub.Config.Handler = b.Handler()
	pub.Start()
	t.Cleanup(pub.Close)
	admin := httptest.NewServer(b.AdminHandler())
	t.Cleanup(admin.Close)
	writeEvent(t, b.Events(), failEvent("corp", "use_dpop_nonce"))

	tests := []struct {
		name, url  string
		code       int
		wantErr    string
		wantNotErr string
		wantStdout string
	}{
		{name: "public listener: points at admin_listen", url: pub.URL, code: 1,
			wantErr: "404 Not Found from the broker's public listener, which does not serve the management API " +
				"(if this broker sets admin_listen, the management API is served there; point --url/BROKER_URL at it)",
			wantNotErr: "not dpop-broker's management API"},
		{name: "admin listener: the events", url: admin.URL, code: 0, wantStdout: "use_dpop_nonce"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, "logs", "--url", tc.url, "--token", logsToken)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out, errOut)
			}
			if !strings.Contains(errOut, tc.wantErr) {
				t.Errorf("stderr = %q, want %q", errOut, tc.wantErr)
			}
			if tc.wantNotErr != "" && strings.Contains(errOut, tc.wantNotErr) {
				t.Errorf("stderr = %q, has %q", errOut, tc.wantNotErr)
			}
			if !strings.Contains(out, tc.wantStdout) {
				t.Errorf("stdout lacks %q:\n%s", tc.wantStdout, out)
			}
		})
	}
}

func TestLogsCommand(t *testing.T) {
	brokerURL, b, _ := startBrokerAPI(t, demoidp.Options{ClientID: "broker", ClientSecret: "s"})
	w := b.Events()
	writeEvent(t, w, logs.Event{Type: logs.TypeSuccessLogin, Connection: "corp", ClientID: "app", UserName: "alice@example.com",
		Details: map[string]any{"dpop_signing_alg": "ES256", "dpop_returned_from_upstream": true, "dpop_nonce_retries": 1,
			"upstream_userinfo_fetch": map[string]any{"status": "SUCCESS", "dpop_bound": true}}})
	writeEvent(t, w, logs.Event{Type: logs.TypeSuccessSilentAuth, Connection: "corp", ClientID: "spa", UserName: "alice@example.com",
		Details: map[string]any{"sso": true, "session_id": "S"}})
	writeEvent(t, w, failEvent("corp", "use_dpop_nonce"))
	writeEvent(t, w, failEvent("okta", "dpop_alg_mismatch"))
	writeEvent(t, w, logs.Event{Type: logs.TypeBackchannelLogoutSucceeded, ClientID: "a-client-id-of-32-characters-xyz"})
	writeEvent(t, w, logs.Event{Type: logs.TypeSuccessAPI, Details: map[string]any{
		"request": map[string]any{"method": "PATCH", "auth": map[string]any{"user": "ops"}}}})
	other := httptest.NewServer(http.NotFoundHandler()) // some other web server
	t.Cleanup(other.Close)
	// Nothing listens on port 1 of a test machine (a closed test server's port could be
	// taken by another test meanwhile).
	const nothingListens = "http://127.0.0.1:1"

	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		want     []string
		wantNot  []string
		wantErr  string
		jsonRows int
	}{
		{name: "table of events, oldest first", args: nil, code: 0,
			want: []string{"DATE", "ERROR / DPoP", "alice@example.com", "dpop ES256, upstream token DPoP, nonce retries 1, userinfo SUCCESS (DPoP)", "use_dpop_nonce: nonce retries exhausted", "dpop_alg_mismatch", "ssa", "single sign-on (no upstream call)"}},
		{name: "type and client id are never cut (they are what --type and --client take)", args: []string{"--limit", "100"}, code: 0,
			want: []string{"oidc_backchannel_logout_succeeded", "a-client-id-of-32-characters-xyz"}},
		{name: "a management API call shows its operator as the user", args: []string{"--type", "sapi"}, code: 0,
			want: []string{"ops (management API token)"}},
		{name: "--type f --connection corp", args: []string{"--type", "f", "--connection", "corp"}, code: 0,
			want: []string{"use_dpop_nonce"}, wantNot: []string{"alice", "dpop_alg_mismatch"}},
		{name: "--error", args: []string{"--error", "dpop_alg_mismatch"}, code: 0,
			want: []string{"okta"}, wantNot: []string{"use_dpop_nonce"}},
		{name: "--json one object per line", args: []string{"--json", "--type", "f"}, code: 0, jsonRows: 2},
		{name: "--limit", args: []string{"--json", "--limit", "1", "--type", "f"}, code: 0, jsonRows: 1, want: []string{"dpop_alg_mismatch"}},
		{name: "raw --q", args: []string{"--q", "details.dpop_returned_from_upstream:true"}, code: 0, want: []string{"alice"}, wantNot: []string{"use_dpop_nonce"}},
		{name: "no token: 401", args: []string{"--token", ""}, code: 1, wantErr: "broker logs: 401 missing_authorization: Missing authentication"},
		{name: "unknown token: 401 says which setting to fix", args: []string{"--token", "not-a-token"}, code: 1,
			wantErr: "broker logs: 401 invalid_token: Invalid token (set BROKER_MGMT_TOKEN or --token to a management token with read:logs)"},
		{name: "token without read:logs: 403", args: []string{"--token", noScopeToken}, code: 1, wantErr: "broker logs: 403 insufficient_scope: Insufficient scope, expected any of: read:logs"},
		{name: "no match: said on stderr, nothing on stdout", args: []string{"--error", "no_such_error"}, code: 0,
			wantErr: "broker logs: no events match", wantNot: []string{"DATE"}},
		{name: "another server at the URL: named, its page not dumped", args: []string{"--url", other.URL}, code: 1,
			wantErr: "404 Not Found from a server that is not dpop-broker's management API (is BROKER_URL or --url the broker's base URL?)"},
		{name: "nothing listening: says what to check", args: []string{"--url", nothingListens}, code: 1,
			wantErr: "(is the broker running there? set BROKER_URL or --url)"},
		{name: "bad query refused locally", args: []string{"--q", "(type:s OR type:f)"}, code: 2, wantErr: "broker logs: query"},
		{name: "bad url", args: []string{"--url", "ftp://x"}, code: 2, wantErr: "must be an http(s) URL"},
		{name: "an unknown event type is a usage mistake", args: []string{"--type", "zz"}, code: 2, wantErr: `--type "zz" is not an event type the broker writes`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"logs", "--url", brokerURL, "--token", logsToken}, tc.args...)
			code, out, errOut := runCmd(t, args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out, errOut)
			}
			for _, s := range tc.want {
				if !strings.Contains(out, s) {
					t.Errorf("stdout lacks %q:\n%s", s, out)
				}
			}
			for _, s := range tc.wantNot {
				if strings.Contains(out, s) {
					t.Errorf("stdout has %q:\n%s", s, out)
				}
			}
			if tc.wantErr != "" && !strings.Contains(errOut, tc.wantErr) {
				t.Errorf("stderr = %q, want %q", errOut, tc.wantErr)
			}
			if strings.Contains(out+errOut, logsToken) || strings.Contains(out+errOut, noScopeToken) {
				t.Error("the management token was printed")
			}
			if tc.jsonRows > 0 {
				lines := strings.Split(strings.TrimSpace(out), "\n")
				if len(lines) != tc.jsonRows {
					t.Fatalf("%d JSON lines, want %d:\n%s", len(lines), tc.jsonRows, out)
				}
				for _, l := range lines {
					var ev logs.Event
					if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.LogID == "" {
						t.Errorf("line is not an event: %q (%v)", l, err)
					}
				}
			}
		})
	}
}

// TestLogsFollowPaging: --follow prints the recent matches, then new matching events only, in
// order, without duplicates; checkpoint pages are filtered client-side.
func TestLogsFollowPaging(t *testing.T) {
	brokerURL, b, _ := startBrokerAPI(t, demoidp.Options{ClientID: "broker", ClientSecret: "s"})
	w := b.Events()
	writeEvent(t, w, failEvent("corp", "old_failure"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut logtest.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"logs", "--url", brokerURL, "--token", logsToken, "--type", "f", "--follow", "--json", "--limit", "5"}, &out, &errOut)
	}()
	waitFor(t, &out, "old_failure")
	writeEvent(t, w, logs.Event{Type: logs.TypeSuccessLogin, Connection: "corp", Details: map[string]any{"marker": "success_skipped"}})
	for i := range 120 { // more than one checkpoint page
		writeEvent(t, w, failEvent("corp", "new_failure_"+strconv.Itoa(i)))
	}
	waitFor(t, &out, `"new_failure_119"`)
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 121 || strings.Contains(out.String(), "success_skipped") {
		t.Fatalf("%d lines (want 121: 1 old + 120 new, no s events):\n%s", len(lines), out.String())
	}
	for i, l := range lines[1:] {
		if !strings.Contains(l, `"new_failure_`+strconv.Itoa(i)+`"`) {
			t.Fatalf("line %d out of order or duplicated: %s", i+1, l)
		}
	}
}

// TestLogsFollowFailedLogin: `broker logs --type f --follow` against a running broker
// shows a failed login after it happens.
func TestLogsFollowFailedLogin(t *testing.T) {
	brokerURL, _, redirectURI := startBrokerAPI(t, demoidp.Options{ClientID: "broker", ClientSecret: "s", AuthorizeError: "access_denied"})
	// The CLI reaches the broker through a proxy that counts its log requests: the tail starts
	// after the newest event at its first request, so the login fails only once the CLI's
	// second request (its first poll) shows that starting point was taken.
	target, _ := url.Parse(brokerURL)
	var logReqs atomic.Int32
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxy.ServeHTTP(w, r)
		if strings.HasPrefix(r.URL.Path, "/api/v2/logs") {
			logReqs.Add(1)
		}
	}))
	t.Cleanup(front.Close)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut logtest.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"logs", "--url", front.URL, "--token", logsToken, "--type", "f", "--follow", "--limit", "0"}, &out, &errOut)
	}()
	for deadline := time.Now().Add(time.Minute); logReqs.Load() < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the CLI did not start following within a minute: %s", errOut.String())
		}
	}
	if e := failLogin(t, brokerURL, redirectURI); e != "access_denied" {
		t.Fatalf("the app got error %q, want access_denied", e)
	}
	waitFor(t, &out, "access_denied")
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var row string
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.Contains(l, "access_denied") {
			row = l
		}
	}
	if f := strings.Fields(row); len(f) < 5 || f[1] != "f" || f[2] != "corp" || f[3] != "app" {
		t.Errorf("row %q, want DATE f corp app … access_denied", row)
	}
	if strings.Contains(out.String(), logsToken) || strings.Contains(errOut.String(), logsToken) {
		t.Error("the management token was printed")
	}
}

// The usage text (--help, a flag mistake) never shows the management token taken from the
// environment, and the token is still used.
func TestLogsUsageNeverPrintsTheTokenFromTheEnvironment(t *testing.T) {
	const secret = "env-token-that-must-not-be-printed"
	t.Setenv("BROKER_MGMT_TOKEN", secret)
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
	}{
		{name: "help", args: []string{"--help"}, wantCode: -1}, // -1: any exit code
		{name: "an unknown flag", args: []string{"--bogus"}, wantCode: 2},
	} {
		var out, errOut bytes.Buffer
		code := cmdLogs(t.Context(), tc.args, &out, &errOut)
		if (tc.wantCode >= 0 && code != tc.wantCode) || strings.Contains(out.String()+errOut.String(), secret) {
			t.Errorf("%s: exit %d (want %d), output shows the token: %v", tc.name, code, tc.wantCode, strings.Contains(out.String()+errOut.String(), secret))
		}
	}
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Get("Authorization")
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, "[]")
	}))
	defer srv.Close()
	var out, errOut bytes.Buffer
	if code := cmdLogs(t.Context(), []string{"--url", srv.URL}, &out, &errOut); code != 0 || got != "Bearer "+secret {
		t.Errorf("a query with the token from the environment: exit %d, Authorization %q; stderr %s", code, got, errOut.String())
	}
}

// TestLogsCommandSaysWhichBrokerItReads: without --url, stderr names the broker and where its
// address came from (BROKER_URL or the default); stdout stays the events.
func TestLogsCommandSaysWhichBrokerItReads(t *testing.T) {
	brokerURL, b, _ := startBrokerAPI(t, demoidp.Options{ClientID: "broker", ClientSecret: "s"})
	writeEvent(t, b.Events(), failEvent("corp", "use_dpop_nonce"))
	tests := []struct {
		name      string
		args      []string
		env       string
		wantErr   string
		wantNoURL bool
	}{
		{name: "from BROKER_URL", env: brokerURL, wantErr: "broker logs: reading " + brokerURL + " (from BROKER_URL)"},
		{name: "--url given: nothing to say", args: []string{"--url", brokerURL}, wantNoURL: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("BROKER_URL", tc.env)
			code, out, errOut := runCmd(t, append([]string{"logs", "--token", logsToken}, tc.args...)...)
			if code != 0 || !strings.Contains(out, "use_dpop_nonce") {
				t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
			}
			if tc.wantErr != "" && !strings.Contains(errOut, tc.wantErr) {
				t.Errorf("stderr = %q, want %q", errOut, tc.wantErr)
			}
			if tc.wantNoURL && strings.Contains(errOut, "reading") {
				t.Errorf("stderr = %q, want no note of the broker read", errOut)
			}
			if strings.Contains(out, "reading") {
				t.Errorf("the note went to stdout: %q", out)
			}
		})
	}
}
