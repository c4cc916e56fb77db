package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/buildinfo"
	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs/logtest"
)

// writeServeConfig writes a configuration serve accepts (memory store, a signing key file)
// whose listen is listen, and returns its path.
func writeServeConfig(t *testing.T, listen string) string {
	t.Helper()
	dir := t.TempDir()
	pem := testKeyPEM(t, "RS256")
	kf := filepath.Join(dir, "signing.pem")
	if err := os.WriteFile(kf, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(`
issuer: "http://127.0.0.1:8080/"
listen: "`+listen+`"
keys: { signing: { private_key_file: "`+kf+`" } }
clients:
  - { client_id: a, client_secret: s, redirect_uris: ["http://127.0.0.1:8082/callback"], connections: [c] }
connections:
  - { name: c, strategy: oidc, options: { issuer: "https://idp.example.com", client_id: b, client_secret: s } }
`), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startServe runs `broker serve` in-process until the test ends and returns the address it
// listens on and where that address came from (its "listening" log line, which must also name
// the version and commit).
func startServe(t *testing.T, args ...string) (addr, listenFrom string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut logtest.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, append([]string{"serve"}, args...), &out, &errOut) }()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("serve exited %d\n%s%s", code, out.String(), errOut.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second) // generous: a loaded machine, not a timing assertion
	for time.Now().Before(deadline) {
		for line := range strings.Lines(out.String()) {
			var rec struct {
				Msg        string `json:"msg"`
				Addr       string `json:"addr"`
				ListenFrom string `json:"listen_from"`
				Version    string `json:"version"`
				Commit     string `json:"commit"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" {
				if b := buildinfo.Read(); rec.Version != b.Version || rec.Commit != b.Commit {
					t.Errorf("the listening line names version %q commit %q, want %q %q (broker version)", rec.Version, rec.Commit, b.Version, b.Commit)
				}
				return rec.Addr, rec.ListenFrom
			}
		}
		select {
		case code := <-done:
			done <- code
			t.Fatalf("serve exited %d before listening\n%s%s", code, out.String(), errOut.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("serve did not log \"listening\" within 60s\n%s%s", out.String(), errOut.String())
	return "", ""
}

func TestServeListensOnBrokerListenInsteadOfTheConfiguredAddress(t *testing.T) {
	cfg := writeServeConfig(t, "127.0.0.1:1") // never bound: overridden in both cases
	for _, tc := range []struct {
		name     string
		env      string
		args     []string
		wantFrom string
	}{
		{name: "BROKER_LISTEN", env: "127.0.0.1:0", wantFrom: "BROKER_LISTEN"},
		{name: "--listen beats BROKER_LISTEN", env: "127.0.0.1:1", args: []string{"--listen", "127.0.0.1:0"}, wantFrom: "--listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("BROKER_LISTEN", tc.env)
			addr, from := startServe(t, append([]string{"--config", cfg}, tc.args...)...)
			if from != tc.wantFrom || !strings.HasPrefix(addr, "127.0.0.1:") || addr == "127.0.0.1:1" {
				t.Fatalf("listening on %s (from %s), want a free loopback port from %s", addr, from, tc.wantFrom)
			}
			resp, err := http.Get("http://" + addr + "/healthz")
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("/healthz: %s", resp.Status)
			}
		})
	}
	t.Run("a bad override is refused", func(t *testing.T) {
		t.Setenv("BROKER_LISTEN", "8080")
		code, _, errOut := runCmd(t, "serve", "--config", cfg)
		if code != 2 || !strings.Contains(errOut, `--listen/BROKER_LISTEN: "8080" must be HOST:PORT`) {
			t.Fatalf("exit %d: %s", code, errOut)
		}
	})
}

func TestListenStaysLoopbackOutsideContainersAndHealthcheckFindsIt(t *testing.T) {
	if got := config.Default().Listen; got != "127.0.0.1:8080" {
		t.Fatalf("code default listen = %q, want loopback 127.0.0.1:8080 (the image sets BROKER_LISTEN)", got)
	}
	if got, err := serveListen("127.0.0.1:8080", ""); err != nil || got != "127.0.0.1:8080" {
		t.Fatalf("no override: %q %v", got, err)
	}
	if got, err := serveListen("127.0.0.1:8080", "0.0.0.0:8080"); err != nil || got != "0.0.0.0:8080" {
		t.Fatalf("override: %q %v", got, err)
	}
	cfg := writeServeConfig(t, "0.0.0.0:9443")
	for _, tc := range []struct {
		name                   string
		url, listen, config    string
		ready                  bool
		want, wantErrSubstring string
	}{
		{name: "nothing given: the default listen address", want: "http://127.0.0.1:8080/healthz"},
		{name: "readiness", ready: true, want: "http://127.0.0.1:8080/readyz"},
		{name: "every IPv4 interface is probed on loopback", listen: "0.0.0.0:8080", want: "http://127.0.0.1:8080/healthz"},
		{name: "empty host is probed on loopback", listen: ":8080", want: "http://127.0.0.1:8080/healthz"},
		{name: "every IPv6 interface is probed on ::1", listen: "[::]:8080", want: "http://[::1]:8080/healthz"},
		{name: "a specific address is probed there", listen: "10.1.2.3:8080", want: "http://10.1.2.3:8080/healthz"},
		{name: "the configuration's listen", config: cfg, want: "http://127.0.0.1:9443/healthz"},
		{name: "the listen address beats the configuration", listen: "127.0.0.1:7000", config: cfg, want: "http://127.0.0.1:7000/healthz"},
		{name: "--url beats everything", url: "http://broker.internal:8080/", listen: "127.0.0.1:7000", config: cfg, want: "http://broker.internal:8080/healthz"},
		{name: "port 0 cannot be probed", listen: "127.0.0.1:0", wantErrSubstring: "port 0"},
		{name: "not a URL", url: "127.0.0.1:8080", wantErrSubstring: "must be the broker's base URL"},
		{name: "unreadable configuration", config: filepath.Join(t.TempDir(), "missing.yaml"), wantErrSubstring: "read config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := healthcheckTarget(tc.url, tc.listen, tc.config, tc.ready)
			switch {
			case tc.wantErrSubstring != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErrSubstring)):
				t.Fatalf("got %q, %v; want an error with %q", got, err, tc.wantErrSubstring)
			case tc.wantErrSubstring == "" && (err != nil || got != tc.want):
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestHealthcheckReportsARunningBrokerHealthy(t *testing.T) {
	t.Setenv("BROKER_LISTEN", "127.0.0.1:0")
	addr, _ := startServe(t, "--config", writeServeConfig(t, "127.0.0.1:1"))
	_, port, _ := net.SplitHostPort(addr)
	t.Setenv("BROKER_LISTEN", "")
	for _, tc := range []struct {
		name string
		env  string // BROKER_LISTEN for the probe, as the image sets it
		args []string
		want string
	}{
		{name: "--url", args: []string{"--url", "http://" + addr}, want: "healthy: GET http://" + addr + "/healthz: 200 OK\n"},
		{name: "--ready", args: []string{"--ready", "--url", "http://" + addr + "/"}, want: "healthy: GET http://" + addr + "/readyz: 200 OK\n"},
		{name: "BROKER_LISTEN on every interface, as in the image", env: "0.0.0.0:" + port, want: "healthy: GET http://127.0.0.1:" + port + "/healthz: 200 OK\n"},
		{name: "the configuration's listen", args: []string{"--config", writeServeConfig(t, "0.0.0.0:"+port)}, want: "healthy: GET http://127.0.0.1:" + port + "/healthz: 200 OK\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("BROKER_LISTEN", tc.env)
			code, out, errOut := runCmd(t, append([]string{"healthcheck"}, tc.args...)...)
			if code != 0 || out != tc.want || errOut != "" {
				t.Fatalf("exit %d\nstdout %q\nstderr %q\nwant %q", code, out, errOut, tc.want)
			}
		})
	}
}

func TestHealthcheckReportsUnhealthyBrokersWithOneLine(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	_ = ln.Close()
	notReady := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			http.Error(w, "store unavailable", http.StatusServiceUnavailable)
		case "/healthz":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		}
	}))
	t.Cleanup(notReady.Close)
	hanging := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	t.Cleanup(hanging.Close)
	for _, tc := range []struct {
		name string
		args []string
		want *regexp.Regexp
	}{
		{name: "closed port", args: []string{"--url", "http://" + closed},
			want: regexp.MustCompile(`^unhealthy: GET http://` + regexp.QuoteMeta(closed) + `/healthz: dial tcp .+\n$`)},
		{name: "not ready", args: []string{"--ready", "--url", notReady.URL},
			want: regexp.MustCompile(`^unhealthy: GET ` + regexp.QuoteMeta(notReady.URL) + `/readyz: 503 Service Unavailable\n$`)},
		{name: "a redirect is not healthy", args: []string{"--url", notReady.URL},
			want: regexp.MustCompile(`^unhealthy: GET ` + regexp.QuoteMeta(notReady.URL) + `/healthz: 302 Found\n$`)},
		{name: "no answer within --timeout", args: []string{"--timeout", "100ms", "--url", hanging.URL},
			want: regexp.MustCompile(`^unhealthy: GET ` + regexp.QuoteMeta(hanging.URL) + `/healthz: context deadline exceeded\n$`)},
		{name: "bad flag: exit 1, as container engines reserve 2", args: []string{"--nope"},
			want: regexp.MustCompile(`flag provided but not defined: -nope`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, append([]string{"healthcheck"}, tc.args...)...)
			if code != 1 || out != "" || !tc.want.MatchString(errOut) {
				t.Fatalf("exit %d\nstdout %q\nstderr %q\nwant %s", code, out, errOut, tc.want)
			}
		})
	}
}

func TestContainerImageListensOnAllInterfacesAndProbesItself(t *testing.T) {
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	env := regexp.MustCompile(`(?m)^ENV BROKER_LISTEN=(\S+)$`).FindStringSubmatch(df)
	expose := regexp.MustCompile(`(?m)^EXPOSE (\d+)$`).FindStringSubmatch(df)
	if env == nil || expose == nil || env[1] != "0.0.0.0:"+expose[1] {
		t.Fatalf("the image must listen on every interface at the EXPOSEd port (ENV BROKER_LISTEN=0.0.0.0:PORT, EXPOSE PORT):\n%s", df)
	}
	if !regexp.MustCompile(`(?m)^HEALTHCHECK .*CMD \["/broker", "healthcheck"\]$`).MatchString(df) {
		t.Fatalf("the image needs an exec-form HEALTHCHECK running /broker healthcheck (no shell on distroless):\n%s", df)
	}
	if got, err := healthcheckTarget("", env[1], "", false); err != nil || got != "http://127.0.0.1:"+expose[1]+"/healthz" {
		t.Fatalf("the image's healthcheck probes %q (%v)", got, err)
	}
}
