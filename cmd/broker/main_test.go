package main

import (
	"bytes"
	"context"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/dpop"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// testKeyPEM returns a PKCS#8 PEM private key for alg, generated once per test binary and alg
// (RSA generation is slow): the tests write it where a configuration names a key, and check
// what the commands do with the configuration, not with the key material.
func testKeyPEM(t *testing.T, alg string) []byte {
	t.Helper()
	testKeyMu.Lock()
	defer testKeyMu.Unlock()
	if pem, ok := testKeyPEMs[alg]; ok {
		return pem
	}
	key, err := dpop.GenerateKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := dpop.MarshalPrivateKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	testKeyPEMs[alg] = pem
	return pem
}

var (
	testKeyMu   sync.Mutex
	testKeyPEMs = map[string][]byte{} // by alg
)

func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestConfigValidateCommand(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	_ = os.WriteFile(bad, []byte(`
issuer: "http://127.0.0.1:8080/"
clients:
  - client_id: a
    client_secret: s
    redirect_uris: ["http://127.0.0.1:8082/callback"]
    connections: [c]
connections:
  - name: c
    strategy: oidc
    options: { issuer: "https://idp.example.com", client_id: b, client_secret: s, dpop_signing_alg: ES512 }
`), 0o600)
	code, out, _ := runCmd(t, "config", "validate", bad)
	if code != 1 || !strings.Contains(out, `connections[0].options.dpop_signing_alg: "ES512" is not supported (use ES256, Ed25519, RS256 or PS256)`) ||
		!strings.Contains(out, "keys.signing: a private key is required") {
		t.Fatalf("exit %d:\n%s", code, out)
	}

	pem := testKeyPEM(t, "RS256")
	kf := filepath.Join(dir, "signing.pem")
	_ = os.WriteFile(kf, pem, 0o600)
	good := filepath.Join(dir, "good.yaml")
	_ = os.WriteFile(good, []byte(`
issuer: "http://127.0.0.1:8080/"
keys: { signing: { private_key_file: "`+kf+`" } }
clients:
  - { client_id: a, client_secret: s, redirect_uris: ["http://127.0.0.1:8082/callback"], connections: [c] }
connections:
  - { name: c, strategy: oidc, options: { issuer: "https://idp.example.com", client_id: b, client_secret: s } }
`), 0o600)
	if code, out, _ := runCmd(t, "config", "validate", good); code != 0 || !strings.HasPrefix(out, "issuer:      http://127.0.0.1:8080/\n") || !strings.HasSuffix(out, "\nconfig OK\n") {
		t.Fatalf("exit %d: %s", code, out)
	}
}

func TestKeysGenerateCommand(t *testing.T) {
	for _, alg := range []string{"ES256", "Ed25519", "RS256", "PS256"} {
		code, out, errOut := runCmd(t, "keys", "generate", "--alg", alg)
		if code != 0 || !isPKCS8PEM(out) || !strings.Contains(errOut, "thumbprint: ") {
			t.Fatalf("%s: exit %d %q %q", alg, code, out, errOut)
		}
		k, err := dpop.ParsePrivateKeyPEM([]byte(out))
		if err != nil || !dpop.KeyAlgFits(k, alg) {
			t.Fatalf("%s: generated key unusable: %v", alg, err)
		}
	}
	if code, _, _ := runCmd(t, "keys", "generate", "--alg", "HS256"); code != 2 {
		t.Fatalf("HS256 accepted")
	}
}

func TestDiscoveryCheckCommand(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts demoidp.Options
		args []string
		code int
		want string
	}{
		{name: "alg offered", opts: demoidp.Options{DPoPAlgs: []string{"ES256", "RS256"}}, args: nil, code: 0, want: "DPoP ES256: OK"},
		{name: "no DPoP", opts: demoidp.Options{}, args: nil, code: 1, want: "dpop_not_supported: "},
		{name: "alg not offered", opts: demoidp.Options{DPoPAlgs: []string{"RS256"}}, args: []string{"--alg", "ES256"}, code: 1, want: "dpop_alg_mismatch: "},
		{name: "Ed25519 via EdDSA", opts: demoidp.Options{DPoPAlgs: []string{"EdDSA"}}, args: []string{"--alg", "Ed25519"}, code: 0, want: "proofs labelled EdDSA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := demoidp.Start(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			code, out, _ := runCmd(t, append([]string{"discovery", "check", p.URL, "--allow-network", "127.0.0.1"}, tc.args...)...)
			if code != tc.code || !strings.Contains(out, tc.want) || !strings.Contains(out, "token_endpoint: "+p.URL+"/token") {
				t.Fatalf("exit %d:\n%s", code, out)
			}
		})
	}
	if code, _, errOut := runCmd(t, "discovery", "check", "http://127.0.0.1:1", "--allow-network", "127.0.0.1"); code != 3 || !strings.Contains(errOut, "discovery_failed") {
		t.Fatalf("unreachable: exit %d %s", code, errOut)
	}
}

// TestDiscoveryCheckAppliesTheUpstreamAddressPolicy: without --allow-network the check refuses
// a loopback upstream as `serve` would, and tells the operator why in full.
func TestDiscoveryCheckAppliesTheUpstreamAddressPolicy(t *testing.T) {
	p, err := demoidp.Start(demoidp.Options{DPoPAlgs: []string{"ES256"}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	code, _, errOut := runCmd(t, "discovery", "check", p.URL)
	if code != 3 || !strings.Contains(errOut, "discovery_failed") || !strings.Contains(errOut, "127.0.0.1 refused: loopback address, not in upstream_allowed_networks") {
		t.Fatalf("exit %d %s", code, errOut)
	}
	if code, _, errOut := runCmd(t, "discovery", "check", p.URL, "--allow-network", "10.0.0.0/33"); code != 2 || !strings.Contains(errOut, "--allow-network") {
		t.Fatalf("bad --allow-network: exit %d %s", code, errOut)
	}
}

// TestDemoLogin clicks through the demo like a person: app → broker → interactive upstream
// (Sign in) → broker → app, which must show the user and the s event with DPoP facts.
func TestDemoLogin(t *testing.T) {
	d := runDemo(t)
	demoLogin(t, d.appURL, d.idpURL)
}

// demoLogin logs in through the demo's sample app in a new browser (its cookie jar) and checks
// the logged-in page; it returns the browser and the page.
func demoLogin(t *testing.T, appURL, idpURL string) (*http.Client, string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	body := fetch(t, c, http.MethodGet, appURL+"/", nil)
	if !strings.Contains(body, `<a class="button" id="login" href="/login">Log in</a>`) {
		t.Fatalf("home page: %s", body)
	}
	body = fetch(t, c, http.MethodGet, appURL+"/login", nil)
	m := regexp.MustCompile(`name="request" value="([^"]+)"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("upstream sign-in page: %s", body)
	}
	body = fetch(t, c, http.MethodPost, idpURL+"/authorize/approve", url.Values{"request": {m[1]}})
	for _, want := range []string{"<title>Sample App</title>", `<h1 id="user">Hello, Alice Example</h1>`,
		`<p id="how">The broker sent you to the demo identity provider and exchanged its code with a DPoP proof (ES256).</p>`,
		`<code id="sid">`, `<pre id="claims">`, `&#34;dpop_signing_alg&#34;: &#34;ES256&#34;`, `&#34;dpop_returned_from_upstream&#34;: true`} {
		if !strings.Contains(body, want) {
			t.Fatalf("logged-in page lacks %s:\n%s", want, body)
		}
	}
	return c, body
}

func fetch(t *testing.T, c *http.Client, method, u string, form url.Values) string {
	t.Helper()
	var resp *http.Response
	var err error
	if method == http.MethodPost {
		resp, err = c.PostForm(u, form)
	} else {
		resp, err = c.Get(u)
	}
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %d at %s\n%s", method, u, resp.StatusCode, resp.Request.URL, b)
	}
	return string(b)
}

func TestDemoDPoPServer(t *testing.T) {
	d := runDemo(t)
	// RFC 9449 §8: the demo demands server nonces, so every token response carries one.
	resp, err := http.PostForm(d.issuer+"oauth/token", url.Values{"grant_type": {"authorization_code"}})
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.Header.Get("DPoP-Nonce") == "" || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("token endpoint: %d, DPoP-Nonce %q", resp.StatusCode, resp.Header.Get("DPoP-Nonce"))
	}
	// dpop_signing_alg_values_supported (RFC 9449 §5.1) and the demo API audience at /authorize.
	body := fetch(t, http.DefaultClient, http.MethodGet, d.issuer+".well-known/openid-configuration", nil)
	if !strings.Contains(body, `"dpop_signing_alg_values_supported":["ES256","EdDSA","Ed25519","RS256","PS256"]`) {
		t.Fatalf("discovery: %s", body)
	}
}

// isPKCS8PEM reports whether s is exactly one PEM block of type PRIVATE KEY (PKCS#8).
func isPKCS8PEM(s string) bool {
	block, rest := pem.Decode([]byte(s))
	return block != nil && block.Type == "PRIVATE KEY" && len(strings.TrimSpace(string(rest))) == 0
}

// runDemo starts the demo on free loopback ports and serves it until the test ends; shutdown
// errors fail the test.
func runDemo(t *testing.T) *demo {
	t.Helper()
	d, err := startDemo("127.0.0.1", demoPorts{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveAll(ctx, d.servers...) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serveAll: %v", err)
		}
		d.broker.Close() // as cmdDemo: back-channel logout deliveries finish
	})
	return d
}
