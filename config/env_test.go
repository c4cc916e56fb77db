package config

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/config/configtest"
)

// unsetEnv removes variables for the rest of the test (t.Setenv restores them afterwards).
func unsetEnv(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		t.Setenv(n, "")
		if err := os.Unsetenv(n); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUnsetEnvProblemsAreSetApartWithTheChecksOfTheirValues(t *testing.T) {
	configtest.SetEnv(t)
	unsetEnv(t, "TEST_UNSET_SECRET", "TEST_UNSET_MGMT", "TEST_UNSET_KEY")
	yml := strings.Replace(configtest.ValidYAML, "${TEST_SAMPLE_SECRET}", "${TEST_UNSET_SECRET}", 1) + `
management:
  tokens: [{ name: ops, token: "${TEST_UNSET_MGMT}", scopes: [read:logs] }]
`
	yml = strings.Replace(yml, "private_key_env: TEST_BROKER_DPOP_KEY", "private_key_env: TEST_UNSET_KEY", 1)
	yml = strings.Replace(yml, "client_id: sample-app", "client_id: sample-app\n    token_endpoint_auth_method: client_secret_basic", 1)
	yml = strings.Replace(yml, "strategy: oidc", "strategy: saml", 1) // a real mistake stays one
	cfg, err := Parse([]byte(yml))
	fe, ok := err.(FieldErrors)
	if !ok {
		t.Fatalf("Parse: %v", err)
	}
	problems := append(slices.Clone([]FieldError(fe)), cfg.Validate()...)

	errs, unset := SplitUnsetEnv(problems)
	wantUnset := []FieldError{
		{Key: "clients[0].client_secret", Reason: "environment variable TEST_UNSET_SECRET is not set"},
		{Key: "management.tokens[0].token", Reason: "environment variable TEST_UNSET_MGMT is not set"},
		{Key: "keys.dpop.es256.private_key_env", Reason: "environment variable TEST_UNSET_KEY is not set"},
	}
	wantErrs := []FieldError{{Key: "connections[0].strategy", Reason: `"saml" is not supported (use oidc or okta)`}}
	if !slices.Equal(errs, wantErrs) || len(unset) != len(wantUnset) {
		t.Fatalf("errs %v\nunset %v\nfrom %v", errs, unset, FieldErrors(problems))
	}
	for _, w := range wantUnset {
		if !slices.Contains(unset, w) {
			t.Fatalf("unset %v lacks %v", unset, w)
		}
	}
	// What was set aside is what an empty value would have caused.
	for _, dropped := range []FieldError{
		{Key: "clients[0].client_secret", Reason: "is required for token_endpoint_auth_method client_secret_basic"},
		{Key: "management.tokens[0].token", Reason: "must be at least 32 characters (got 0); generate one with: openssl rand -base64 32"},
	} {
		if !slices.Contains(problems, dropped) {
			t.Errorf("validation no longer reports %v, so this test checks nothing for it", dropped)
		}
	}
}
