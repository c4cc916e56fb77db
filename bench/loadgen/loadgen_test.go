package main

import (
	"fmt"
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
