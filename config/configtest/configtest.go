// Package configtest holds a small, valid broker configuration for the tests of the packages
// that read one (config, broker): ValidYAML, and SetEnv for the environment it reads.
package configtest

import (
	"fmt"
	"sync"
	"testing"

	"github.com/dpop-broker/dpop-broker/dpop"
)

// ValidYAML passes Validate once SetEnv has set the environment it names: one confidential
// client (sample-app, its secret from ${TEST_SAMPLE_SECRET}) on one OIDC connection
// (corp-oidc) with DPoP ES256, and the keys in environment variables. Tests change it with
// strings.Replace or by appending keys.
const ValidYAML = `
issuer: "http://127.0.0.1:8080/"
listen: "127.0.0.1:8080"
keys:
  signing: { alg: RS256, private_key_env: TEST_BROKER_SIGNING_KEY }
  dpop:
    es256: { private_key_env: TEST_BROKER_DPOP_KEY }
clients:
  - client_id: sample-app
    name: Sample App
    client_secret: "${TEST_SAMPLE_SECRET}"
    redirect_uris: ["http://127.0.0.1:8082/callback"]
    connections: [corp-oidc]
connections:
  - name: corp-oidc
    strategy: oidc
    options:
      issuer: https://idp.example.com
      client_id: broker
      client_secret: s3cret
      dpop_signing_alg: ES256
`

// SetEnv sets, for the rest of t, the environment ValidYAML reads: an RS256 signing key
// (TEST_BROKER_SIGNING_KEY), an ES256 DPoP key (TEST_BROKER_DPOP_KEY) and the client secret
// "from-env" (TEST_SAMPLE_SECRET). The keys are generated once per test binary: RSA generation
// is slow, and the tests check what Parse and Validate make of the configuration, never the
// key material.
func SetEnv(t *testing.T) {
	t.Helper()
	pems, err := validYAMLKeys()
	if err != nil {
		t.Fatal(err)
	}
	for env, pem := range pems {
		t.Setenv(env, pem)
	}
	t.Setenv("TEST_SAMPLE_SECRET", "from-env")
}

// validYAMLKeys generates the PEM keys of ValidYAML, by environment variable.
var validYAMLKeys = sync.OnceValues(func() (map[string]string, error) {
	pems := map[string]string{}
	for env, alg := range map[string]string{"TEST_BROKER_SIGNING_KEY": "RS256", "TEST_BROKER_DPOP_KEY": "ES256"} {
		k, err := dpop.GenerateKey(alg)
		if err != nil {
			return nil, fmt.Errorf("generate the %s key: %w", alg, err)
		}
		pem, err := dpop.MarshalPrivateKeyPEM(k)
		if err != nil {
			return nil, fmt.Errorf("marshal the %s key: %w", alg, err)
		}
		pems[env] = string(pem)
	}
	return pems, nil
})
