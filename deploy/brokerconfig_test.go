package deploy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
)

// brokerConfig is a broker configuration file of a deployment example, checked as
// `broker config validate` checks it.
type brokerConfig struct {
	cfg *config.Config
	// vars are the environment variables it reads: ${VAR} references and private_key_env.
	vars []string
	// env are the test values its variables were given for the check.
	env map[string]string
}

var (
	envRefPattern    = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}`)
	keyEnvPattern    = regexp.MustCompile(`private_key_env:\s*"?([A-Za-z_][A-Za-z0-9_]*)`)
	secretEnvPattern = regexp.MustCompile(`(?i)(SECRET|PASSWORD|TOKEN|PRIVATE_KEY)`)
)

// configVars lists the environment variables a configuration file reads, sorted.
func configVars(text string) []string {
	var vars []string
	for _, p := range []*regexp.Regexp{envRefPattern, keyEnvPattern} {
		for _, m := range p.FindAllStringSubmatch(text, -1) {
			vars = append(vars, m[1])
		}
	}
	slices.Sort(vars)
	return slices.Compact(vars)
}

// testKeys are PEM private keys made once per test binary (an RSA key takes a while).
var testKeys = sync.OnceValues(func() (rsaPEM, ecPEM string) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	enc := func(k any) string {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			panic(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	}
	return enc(rk), enc(ek)
})

// testValue is a well-formed value for the environment variable name: a PEM key of the
// kind its name says (the signing key is RS256, the DPoP key ES256, as both examples
// configure them), else 52 random characters (management tokens and the nonce secret need
// at least 32).
func testValue(name string) string {
	rsaPEM, ecPEM := testKeys()
	switch {
	case strings.Contains(name, "SIGNING_PRIVATE_KEY"):
		return rsaPEM
	case strings.Contains(name, "PRIVATE_KEY"):
		return ecPEM
	}
	return rand.Text() + rand.Text()
}

// checkBrokerConfig checks the configuration text as `broker config validate` does: with
// none of its variables set it has no problem but those variables (serve needs them), with
// each set to a well-formed value it has none at all and its keys load, and then every
// secret in it is one of those values (none is written in the file).
func checkBrokerConfig(t *testing.T, source, text string) *brokerConfig {
	t.Helper()
	path := t.TempDir() + "/config.yaml"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	bc := &brokerConfig{vars: configVars(text), env: map[string]string{}}
	for _, v := range bc.vars {
		t.Setenv(v, "") // restored when the test ends
		_ = os.Unsetenv(v)
	}
	_, problems, err := config.LoadAndValidate(path)
	if err != nil {
		t.Fatalf("%s: %v", source, err)
	}
	errs, unset := config.SplitUnsetEnv(problems)
	for _, p := range errs {
		t.Errorf("%s: broker config validate: %v", source, p)
	}
	var reported []string
	for _, p := range unset {
		names, _ := strings.CutPrefix(p.Reason, "environment variable ")
		names, _ = strings.CutSuffix(names, " is not set")
		reported = append(reported, strings.Split(names, ", ")...)
	}
	slices.Sort(reported)
	if reported = slices.Compact(reported); !slices.Equal(reported, bc.vars) {
		t.Errorf("%s: variables not set here %v, want every variable the file reads %v", source, reported, bc.vars)
	}

	for _, v := range bc.vars {
		bc.env[v] = testValue(v)
		t.Setenv(v, bc.env[v])
	}
	cfg, problems, err := config.LoadAndValidate(path)
	if err != nil {
		t.Fatalf("%s: %v", source, err)
	}
	for _, p := range problems {
		t.Errorf("%s: broker config validate --require-env: %v", source, p)
	}
	if _, err := config.LoadKeys(cfg, false); err != nil {
		t.Errorf("%s: keys: %v", source, err)
	}
	bc.cfg = cfg
	for _, p := range literalSecrets(cfg, bc.env) {
		t.Errorf("%s: %s", source, p)
	}
	return bc
}

// literalSecrets names every secret of cfg that is not one of the environment's values
// (written in the file), and every key read from a file instead of the environment.
func literalSecrets(cfg *config.Config, env map[string]string) []string {
	fromEnv := map[string]bool{}
	for _, v := range env {
		fromEnv[v] = true
	}
	var problems []string
	secret := func(key, value string) {
		if value != "" && !fromEnv[value] {
			problems = append(problems, key+" is written in the file: take it from the environment (${VAR})")
		}
	}
	secret("store.redis.password", cfg.Store.Redis.Password)
	secret("store.redis.sentinel_password", cfg.Store.Redis.SentinelPassword)
	secret("dpop_server.nonce_secret", cfg.DPoPServer.NonceSecret)
	for _, tk := range cfg.Management.Tokens {
		secret("management.tokens["+tk.Name+"].token", tk.Token)
	}
	for _, c := range cfg.Clients {
		secret("clients["+c.ClientID+"].client_secret", c.ClientSecret)
	}
	for _, c := range cfg.Connections {
		secret("connections["+c.Name+"].options.client_secret", c.Options.ClientSecret)
	}
	keys := map[string]config.KeySource{
		"keys.signing": cfg.Keys.Signing.KeySource, "keys.dpop.es256": cfg.Keys.DPoP.ES256,
		"keys.dpop.ed25519": cfg.Keys.DPoP.Ed25519, "keys.dpop.rsa": cfg.Keys.DPoP.RSA,
	}
	for i, k := range cfg.Keys.PreviousSigning {
		keys[fmt.Sprintf("keys.previous_signing[%d]", i)] = k.KeySource
	}
	for i, k := range cfg.Keys.ClientAuth {
		keys[fmt.Sprintf("keys.client_auth[%d]", i)] = k.KeySource
	}
	for i, k := range cfg.Keys.PreviousClientAuth {
		keys[fmt.Sprintf("keys.previous_client_auth[%d]", i)] = k.KeySource
	}
	for name, k := range keys {
		if k.PrivateKeyFile != "" {
			problems = append(problems, name+" is read from a file: take it from the environment (private_key_env)")
		}
	}
	slices.Sort(problems)
	return problems
}

// A secret written in a configuration file, or a key read from a file, is named; the same
// secrets from the environment are not.
func TestLiteralSecretsAreNamed(t *testing.T) {
	const text = `
issuer: "http://127.0.0.1:8080/"
store: { type: redis, redis: { addrs: ["redis:6379"], password: "%s" } }
keys: { signing: { alg: RS256, private_key_file: "%s" } }
clients:
  - client_id: app
    client_secret: "%s"
    redirect_uris: ["http://127.0.0.1:8082/callback"]
`
	for _, tc := range []struct {
		name           string
		password, file string
		secret         string
		env            map[string]string
		want           []string
	}{
		{name: "from the environment", password: "p-from-env", secret: "s-from-env",
			env: map[string]string{"A": "p-from-env", "B": "s-from-env"}},
		{name: "written down", password: "written", secret: "written", file: "/etc/key.pem",
			want: []string{"clients[app].client_secret is written in the file: take it from the environment (${VAR})",
				"keys.signing is read from a file: take it from the environment (private_key_env)",
				"store.redis.password is written in the file: take it from the environment (${VAR})"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(fmt.Sprintf(text, tc.password, tc.file, tc.secret)))
			if err != nil {
				t.Fatal(err)
			}
			if got := literalSecrets(cfg, tc.env); !slices.Equal(got, tc.want) {
				t.Errorf("got %q\nwant %q", got, tc.want)
			}
		})
	}
}
