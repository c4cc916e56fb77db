package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServeWithAdminListenSplitsThePaths: with admin_listen, `broker serve` opens a second
// listener (port 0: it reports the address it bound) carrying /console, /metrics and /api/v2,
// which listen then answers 404 for; the login endpoints stay on listen only, and both
// listeners answer /healthz and /readyz (a load balancer probes listen).
func TestServeWithAdminListenSplitsThePaths(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "signing.pem")
	cfgFile := filepath.Join(dir, "broker.yaml")
	if err := os.WriteFile(keyFile, testKeyPEM(t, "RS256"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgFile, []byte(fmt.Sprintf(`
issuer: "http://127.0.0.1:8080/"
listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:0"
store: { type: memory }
keys: { signing: { private_key_file: %q } }
clients:
  - { client_id: a, client_secret: s, redirect_uris: ["http://127.0.0.1:8082/callback"], connections: [c] }
connections:
  - { name: c, strategy: oidc, options: { issuer: "https://idp.example.com", client_id: b, client_secret: s } }
`, keyFile)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "serve", "--config", cfgFile)
	cmd.Env = append(os.Environ(), childMainEnv+"=1")
	out, exited := startChild(t, cmd)

	// The addresses the child bound, from its log (a generous bounded wait).
	addrs := map[string]string{}
	for deadline := time.Now().Add(2 * time.Minute); len(addrs) < 2; {
		for _, line := range strings.Split(out.String(), "\n") {
			var l struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &l) == nil && (l.Msg == "listening" || l.Msg == "admin listening") {
				addrs[l.Msg] = l.Addr
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("broker serve exited: %v\n%s", err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("broker serve did not report both listeners within 2 minutes:\n%s", out.String())
		}
	}
	public, admin := "http://"+addrs["listening"], "http://"+addrs["admin listening"]
	hc := &http.Client{Timeout: time.Minute, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	tests := []struct {
		name, base, path string
		want             int
	}{
		{name: "console on admin_listen", base: admin, path: "/console/signin", want: http.StatusOK},
		{name: "metrics on admin_listen", base: admin, path: "/metrics", want: http.StatusOK},
		{name: "management API on admin_listen", base: admin, path: "/api/v2/connections", want: http.StatusUnauthorized},
		{name: "health on admin_listen", base: admin, path: "/healthz", want: http.StatusOK},
		{name: "readiness on admin_listen", base: admin, path: "/readyz", want: http.StatusOK},
		{name: "health on listen", base: public, path: "/healthz", want: http.StatusOK},
		{name: "readiness on listen", base: public, path: "/readyz", want: http.StatusOK},
		{name: "no login endpoints on admin_listen", base: admin, path: "/.well-known/openid-configuration", want: http.StatusNotFound},
		{name: "no console on listen", base: public, path: "/console/signin", want: http.StatusNotFound},
		{name: "no metrics on listen", base: public, path: "/metrics", want: http.StatusNotFound},
		{name: "no management API on listen", base: public, path: "/api/v2/connections", want: http.StatusNotFound},
		{name: "discovery on listen", base: public, path: "/.well-known/openid-configuration", want: http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := hc.Get(tt.base + tt.path)
			if err != nil {
				t.Fatalf("GET %s%s: %v", tt.base, tt.path, err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("GET %s%s = %d, want %d", tt.base, tt.path, resp.StatusCode, tt.want)
			}
		})
	}
	stopChild(t, cmd, out, exited)
}
