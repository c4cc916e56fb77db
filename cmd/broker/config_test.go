package main

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const exampleConfig = "../../config.example.yaml"

// unsetExampleEnv unsets every environment variable config.example.yaml mentions (${VAR}
// references and private_key_env names, commented-out ones too) for the rest of the test.
func unsetExampleEnv(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)|private_key_env:\s*"?([A-Za-z_][A-Za-z0-9_]*)`)
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		name := m[1] + m[2]
		t.Setenv(name, "")
		if err := os.Unsetenv(name); err != nil {
			t.Fatal(err)
		}
	}
}

var notSetLine = regexp.MustCompile(`^not set here: (\S+): environment variable (\S+) is not set$`)

func TestShippedExampleConfigValidatesWithoutEnvironment(t *testing.T) {
	unsetExampleEnv(t)
	code, out, errOut := runCmd(t, "config", "validate", exampleConfig)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if code != 0 || !strings.HasPrefix(lines[len(lines)-1], "config OK") {
		t.Fatalf("config.example.yaml as shipped: exit %d\n%s%s", code, out, errOut)
	}
	problems, _, _ := strings.Cut(out, "\n\nissuer: ") // the summary follows the problems
	for _, l := range strings.Split(problems, "\n") {
		if !notSetLine.MatchString(l) {
			t.Errorf("unexpected line (only unset variables may be listed): %s", l)
		}
	}
	// On the host serve runs on, the same variables are errors.
	code, out, _ = runCmd(t, "config", "validate", "--require-env", exampleConfig)
	if code != 1 || strings.Contains(out, "config OK") || !strings.Contains(out, "keys.signing.private_key_env: environment variable BROKER_SIGNING_PRIVATE_KEY is not set") {
		t.Fatalf("--require-env: exit %d\n%s", code, out)
	}
}

func TestRequireEnvReportsEachUnsetVariableOnce(t *testing.T) {
	unsetExampleEnv(t)
	_, plain, _ := runCmd(t, "config", "validate", exampleConfig)
	code, out, _ := runCmd(t, "config", "validate", "--require-env", exampleConfig)
	if code != 1 {
		t.Fatalf("--require-env with nothing set: exit %d\n%s", code, out)
	}
	var want []string // the "not set here" lines of the plain check, as errors
	for l := range strings.Lines(plain) {
		if m := notSetLine.FindStringSubmatch(strings.TrimSuffix(l, "\n")); m != nil {
			want = append(want, strings.TrimPrefix(strings.TrimSuffix(l, "\n"), "not set here: "))
		}
	}
	got := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(want) == 0 || strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("--require-env lines:\n%s\nwant exactly one line per unset variable:\n%s", out, strings.Join(want, "\n"))
	}
}

func TestShippedExampleConfigValidatesWithItsSecretsSet(t *testing.T) {
	unsetExampleEnv(t)
	_, out, _ := runCmd(t, "config", "validate", exampleConfig)
	keyAlg := map[string]string{
		"keys.signing.private_key_env": "RS256", "keys.dpop.es256.private_key_env": "ES256",
		"keys.dpop.ed25519.private_key_env": "Ed25519", "keys.dpop.rsa.private_key_env": "RS256",
	}
	set := 0
	for l := range strings.Lines(out) {
		m := notSetLine.FindStringSubmatch(strings.TrimSuffix(l, "\n"))
		if m == nil {
			continue
		}
		value := rand.Text() + rand.Text() // secrets and management tokens (≥ 32 characters)
		if alg, ok := keyAlg[m[1]]; ok {
			value = string(testKeyPEM(t, alg))
		}
		t.Setenv(m[2], value)
		set++
	}
	if set == 0 {
		t.Fatalf("the example names no secret from the environment any more; this test checks nothing:\n%s", out)
	}
	code, out, _ := runCmd(t, "config", "validate", "--require-env", exampleConfig)
	if code != 0 || !strings.HasPrefix(out, "issuer: ") || !strings.HasSuffix(out, "\nconfig OK\n") {
		t.Fatalf("config.example.yaml with its %d variables set: exit %d\n%s", set, code, out)
	}
}

func TestConfigValidatePrintsInsecureHTTPWarnings(t *testing.T) {
	dir := t.TempDir()
	pem := testKeyPEM(t, "RS256")
	kf := filepath.Join(dir, "signing.pem")
	if err := os.WriteFile(kf, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "lan.yaml")
	if err := os.WriteFile(cfg, []byte(`
issuer: "http://192.168.1.10:8080/"
allow_insecure_http: true
keys: { signing: { private_key_file: "`+kf+`" } }
clients:
  - { client_id: a, client_secret: s, redirect_uris: ["http://192.168.1.10:8082/callback"], connections: [c] }
connections:
  - { name: c, strategy: oidc, options: { issuer: "https://idp.example.com", client_id: b, client_secret: s } }
`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, _ := runCmd(t, "config", "validate", cfg)
	for _, want := range []string{
		"warning: allow_insecure_http: is true: plain http is accepted on non-loopback hosts (2 URLs use it)",
		"warning: issuer: plain http on a non-loopback host, accepted only because allow_insecure_http is true\n",
		"warning: clients[0].redirect_uris[0]: plain http on a non-loopback host, accepted only because allow_insecure_http is true\n",
		"config OK\n",
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("exit %d, output lacks %q:\n%s", code, want, out)
		}
	}
	// Without the switch the same file is refused.
	b, _ := os.ReadFile(cfg)
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(b), "allow_insecure_http: true", "", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, _ := runCmd(t, "config", "validate", cfg); code != 1 || !strings.Contains(out, `issuer: "http://192.168.1.10:8080/" must use https`) {
		t.Fatalf("without allow_insecure_http: exit %d\n%s", code, out)
	}
}
