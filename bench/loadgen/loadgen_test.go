package main

import (
	"fmt"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/bench/fastidp"
	"github.com/dpop-broker/dpop-broker/broker"
	brokerconfig "github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// startBroker runs an in-process broker (memory store, generated keys) whose one connection is
// a fastidp upstream demanding DPoP ES256 with nonces.
func startBroker(t *testing.T, idp string) (brokerURL, redirect string) {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	base := "http://" + srv.Listener.Addr().String()
	redirect = "http://127.0.0.1:9/callback" // never fetched
	yaml := fmt.Sprintf(`issuer: "%s/"
listen: "%s"
upstream_allowed_networks: ["127.0.0.1"]
keys:
  signing: { alg: ES256, private_key_env: "" }
  dpop:
    es256: { private_key_env: "" }
dpop: { retry_delay: 0s, jitter: 0s }
rate_limits: { enabled: false } # all load from one address, as in run.sh
clients:
  - client_id: bench-app
    name: Bench App
    client_secret: bench-secret
    redirect_uris: ["%s"]
    connections: [bench-idp]
connections:
  - name: bench-idp
    strategy: oidc
    options: { issuer: "%s", client_id: broker, client_secret: broker-secret, dpop_signing_alg: ES256 }
`, base, srv.Listener.Addr().String(), redirect, idp)
	path := filepath.Join(t.TempDir(), "broker.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := brokerconfig.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.GenerateMissingKeys = true
	b, err := broker.New(cfg, broker.Deps{Store: sessions.NewMemory()})
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = b.Handler()
	srv.Start()
	t.Cleanup(srv.Close)
	return base, redirect
}

func TestLoadAgainstBroker(t *testing.T) {
	for _, mode := range []string{fastidp.NonceFirst, fastidp.NonceEvery} {
		t.Run("nonce "+mode, func(t *testing.T) {
			idp, err := fastidp.Start("127.0.0.1:0", fastidp.Options{NonceMode: mode})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = idp.Close() })
			brokerURL, redirect := startBroker(t, idp.URL)
			res, err := runLoad(t.Context(), config{
				broker: brokerURL, clientID: "bench-app", clientSecret: "bench-secret", redirectURI: redirect,
				// duration and timeout are bounds only (the test wants all 40 logins, however slow the machine).
				scope: "openid profile email", n: 40, c: 4, warmup: 4, duration: 10 * time.Minute, timeout: 2 * time.Minute,
				pid: os.Getpid(), label: "test",
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Errors != 0 || res.OK != 40 {
				t.Fatalf("ok %d errors %d: %v", res.OK, res.Errors, res.ErrorSamples)
			}
			if res.P50 <= 0 || res.P99 < res.P50 || res.RSSMB <= 0 {
				t.Fatalf("implausible result %+v", res)
			}
			challenges := idp.Stats.NonceChallenges.Load()
			// first: only requests without a current nonce are challenged (≤ one per worker
			// racing at the start); every: the first token request of each of the 44 logins.
			if mode == fastidp.NonceFirst && (challenges < 1 || challenges > 4) || mode == fastidp.NonceEvery && challenges != 44 {
				t.Errorf("nonce challenges = %d for mode %s", challenges, mode)
			}
			out := filepath.Join(t.TempDir(), "r.jsonl")
			if err := res.appendJSON(out); err != nil {
				t.Fatal(err)
			}
			var sb strings.Builder
			if err := printSummary(&sb, out); err != nil || !strings.Contains(sb.String(), "test") {
				t.Fatalf("summary: %v\n%s", err, sb.String())
			}
		})
	}
}

func TestLoginFailsOnWrongSecret(t *testing.T) {
	idp, err := fastidp.Start("127.0.0.1:0", fastidp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = idp.Close() })
	brokerURL, redirect := startBroker(t, idp.URL)
	l, err := newLoader(config{broker: brokerURL, clientID: "bench-app", clientSecret: "wrong", redirectURI: redirect,
		scope: "openid", c: 1, timeout: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.login(t.Context()); err == nil || !strings.Contains(err.Error(), "token: status 401") {
		t.Fatalf("login with a wrong client secret: %v", err)
	}
}

func TestPercentile(t *testing.T) {
	ds := make([]time.Duration, 100)
	for i := range ds {
		ds[i] = time.Duration(100-i) * time.Millisecond
	}
	for _, tc := range []struct {
		p    float64
		want float64
	}{{p: 50, want: 50}, {p: 95, want: 95}, {p: 99, want: 99}, {p: 100, want: 100}} {
		if got := pct(ds, tc.p); got != tc.want {
			t.Errorf("p%v = %v, want %v", tc.p, got, tc.want)
		}
	}
	if pct(nil, 50) != 0 {
		t.Error("empty percentile")
	}
}

func TestSingleSignOnLoadSkipsTheUpstream(t *testing.T) {
	idp, err := fastidp.Start("127.0.0.1:0", fastidp.Options{UniqueSubjects: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = idp.Close() })
	brokerURL, redirect := startBroker(t, idp.URL)
	const workers = 4
	res, err := runLoad(t.Context(), config{
		broker: brokerURL, clientID: "bench-app", clientSecret: "bench-secret", redirectURI: redirect, mode: modeSSO,
		// duration and timeout are bounds only (the test wants all 40 logins, however slow the machine).
		scope: "openid profile email", n: 40, c: workers, warmup: 4, duration: 10 * time.Minute, timeout: 2 * time.Minute,
		pid: os.Getpid(), label: "test",
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 || res.OK != 40 || res.Mode != modeSSO {
		t.Fatalf("mode %q ok %d errors %d: %v", res.Mode, res.OK, res.Errors, res.ErrorSamples)
	}
	// Only the one sign-in of each worker's browser reached the upstream.
	if got := idp.Stats.Authorize.Load(); got != workers {
		t.Errorf("upstream authorizations = %d, want %d (one sign-in per browser)", got, workers)
	}
	if got := idp.Stats.Tokens.Load(); got != workers {
		t.Errorf("upstream tokens = %d, want %d", got, workers)
	}
}

func TestSingleSignOnLoginRefusals(t *testing.T) {
	idp, err := fastidp.Start("127.0.0.1:0", fastidp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = idp.Close() })
	brokerURL, redirect := startBroker(t, idp.URL)
	l, err := newLoader(config{broker: brokerURL, clientID: "bench-app", clientSecret: "bench-secret", redirectURI: redirect,
		scope: "openid", c: 1, timeout: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	signedIn, err := l.signIn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		browser func() *ssoBrowser
		wantErr string
	}{
		{name: "the signed-in browser gets a code straight away", browser: func() *ssoBrowser { return signedIn }},
		{name: "a browser without a session is sent to the upstream", wantErr: "no single sign-on",
			browser: func() *ssoBrowser {
				jar, _ := cookiejar.New(nil)
				return &ssoBrowser{client: l.browserClient(jar, false), sid: signedIn.sid}
			}},
		{name: "an ID token of another session is refused", wantErr: "sid is not the signed-in session's",
			browser: func() *ssoBrowser { return &ssoBrowser{client: signedIn.client, sid: "another-session"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := l.ssoLogin(t.Context(), tc.browser())
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("single sign-on login: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("single sign-on login: %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestSummaryComparesSingleSignOnWithFullLogins(t *testing.T) {
	run := func(mode string, c int, cpu float64) result {
		return result{Label: "ES256", Mode: mode, C: c, OK: 100, CPUMsPerLogin: cpu}
	}
	for _, tc := range []struct {
		name      string
		runs      []result
		want      []string // lines the summary must contain
		wantNoRow bool     // no ratio section at all
	}{
		{name: "medians of the runs are compared (the mean of these would fail)",
			runs: []result{run(modeFull, 8, 0.9), run(modeSSO, 8, 0.2), run(modeFull, 8, 0.6), run(modeSSO, 8, 0.24), run(modeFull, 8, 0.75), run(modeSSO, 8, 0.9)},
			want: []string{"ES256    c=8    sso 0.240 ÷ full 0.750 = 0.320  pass"}},
		{name: "each level on its own, a third exactly passing",
			runs: []result{run(modeFull, 8, 0.6), run(modeSSO, 8, 0.2), run(modeFull, 32, 0.6), run(modeSSO, 32, 0.21)},
			want: []string{"c=8    sso 0.200 ÷ full 0.600 = 0.333  pass", "c=32   sso 0.210 ÷ full 0.600 = 0.350  FAIL"}},
		{name: "lines without a mode are full logins",
			runs: []result{run("", 8, 0.9), run(modeSSO, 8, 0.1)},
			want: []string{"ES256    full    8", "sso 0.100 ÷ full 0.900 = 0.111  pass"}},
		{name: "a level measured in one mode has no ratio",
			runs: []result{run(modeFull, 8, 0.9), run(modeSSO, 32, 0.1)}, wantNoRow: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "r.jsonl")
			for _, r := range tc.runs {
				if err := r.appendJSON(path); err != nil {
					t.Fatal(err)
				}
			}
			var sb strings.Builder
			if err := printSummary(&sb, path); err != nil {
				t.Fatal(err)
			}
			out := sb.String()
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("summary lacks %q:\n%s", w, out)
				}
			}
			if hasRatios := strings.Contains(out, "Single sign-on login ÷ full login"); hasRatios == tc.wantNoRow {
				t.Errorf("ratio section present = %v:\n%s", hasRatios, out)
			}
		})
	}
}
