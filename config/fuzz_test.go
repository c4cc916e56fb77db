package config

import (
	"bytes"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/dpop-broker/dpop-broker/config/configtest"
)

// FuzzConfigParse: Parse never panics on any input, and a configuration that parses and
// validates survives a round trip through YAML (checkConfigBytes).
func FuzzConfigParse(f *testing.F) {
	literal := strings.Replace(configtest.ValidYAML, "${TEST_SAMPLE_SECRET}", "literal-secret", 1)
	f.Add([]byte(configtest.ValidYAML))
	f.Add([]byte(literal))
	f.Add([]byte(literal + "store: {type: redis, redis: {addrs: [\"127.0.0.1:6379\"]}}\napis: [{audience: \"https://api\"}]\n"))
	f.Add([]byte(configtest.ValidYAML + "rate_limits: {enabled: true, authorize: {per_ip: {rate: 5/s, burst: 9}}}\ntrusted_proxies: [10.0.0.0/8]\n"))
	f.Add([]byte("issuer: ${NOPE}\n"))
	f.Add([]byte("issuer: ${HOME:-x}\nlisten: ':${PORT:-8080}'\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("clients: &c [{client_id: x}]\nconnections: *c\n"))
	f.Add([]byte("lifetimes: {code: 1y}\ndpop: {max_retries: x}\n"))
	f.Add([]byte("---\n---\n"))
	f.Add([]byte(""))
	f.Add([]byte("connections: [{name: a, options: {upstream_params: {x: [1]}}}]"))
	f.Fuzz(func(t *testing.T, data []byte) { checkConfigBytes(t, data) })
}

func TestConfigRoundTrip(t *testing.T) {
	literal := strings.Replace(configtest.ValidYAML, "${TEST_SAMPLE_SECRET}", "literal-secret", 1)
	if !checkConfigBytes(t, []byte(literal+"rate_limits: {enabled: true}\ntrusted_proxies: [\"::1\"]\n")) {
		t.Fatal("a valid configuration did not reach the round-trip check")
	}
}

// checkConfigBytes is FuzzConfigParse's property: Parse never panics; a configuration that
// parses and validates re-encodes to YAML that parses back to the same configuration. It
// reports whether the round trip was checked.
func checkConfigBytes(t *testing.T, data []byte) bool {
	if len(data) > 16<<10 {
		return false // operator input; keeps alias-heavy documents cheap
	}
	cfg, err := Parse(data)
	if err != nil {
		if cfg != nil {
			if _, ok := err.(FieldErrors); !ok {
				t.Fatalf("config returned with a non-field error: %v", err)
			}
			_ = cfg.Validate()
		}
		return false
	}
	cfg.GenerateMissingKeys = true // no key files or env are read
	if len(cfg.Validate()) > 0 {
		return false
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatalf("marshal a valid config: %v", err)
	}
	if bytes.Contains(out, []byte("${")) {
		return false // expansion is not idempotent by design (no escape syntax)
	}
	again, err := Parse(out)
	if err != nil {
		t.Fatalf("re-parse of a valid config: %v\n%s", err, out)
	}
	again.GenerateMissingKeys = true
	if errs := again.Validate(); len(errs) > 0 {
		t.Fatalf("re-parsed config is invalid: %v\n%s", FieldErrors(errs), out)
	}
	out2, err := yaml.Marshal(again)
	if err != nil || !bytes.Equal(out, out2) {
		t.Fatalf("round trip changed the config:\n%s\n---\n%s", out, out2)
	}
	return true
}
