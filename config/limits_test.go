package config

import (
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/config/configtest"
)

// TestUserinfoManagementAndRefreshLimitsOnByDefault: the limits of /userinfo, the management
// API and refresh-token families have their documented defaults in a configuration that does
// not mention them, and the proof replay cache half of the memory store.
func TestUserinfoManagementAndRefreshLimitsOnByDefault(t *testing.T) {
	configtest.SetEnv(t)
	cfg, err := Parse([]byte(configtest.ValidYAML))
	if err != nil {
		t.Fatal(err)
	}
	rl := cfg.RateLimits
	if !rl.Enabled || rl.Userinfo.PerIP != (RateLimit{Rate: "20/s", Burst: 40}) || rl.Userinfo.PerSession != (RateLimit{Rate: "5/s", Burst: 20}) ||
		rl.Management.PerIP != (RateLimit{Rate: "10/s", Burst: 20}) || rl.Management.PerToken != (RateLimit{Rate: "20/s", Burst: 100}) ||
		rl.Token.PerRefreshFamily != (RateLimit{Rate: "1/s", Burst: 10}) || cfg.Store.Memory.MaxReplayRecords != 0 ||
		cfg.Store.Memory.replayRecords() != cfg.Store.Memory.MaxRecords/2 {
		t.Fatalf("defaults %+v, store.memory %+v", rl, cfg.Store.Memory)
	}
}

func TestUserinfoManagementAndRefreshLimitsValidation(t *testing.T) {
	const notARate = `"fast" is not a rate (use N/s, N/m or N/h, e.g. 20/s; 0 = unlimited)`
	const needsBurst = "must be between 1 and 1000000 when a rate is set"
	for _, tc := range []struct {
		name string
		mut  func(c *Config)
		want FieldError
	}{
		{name: "userinfo per-IP rate must parse", mut: func(c *Config) { c.RateLimits.Userinfo.PerIP.Rate = "fast" },
			want: FieldError{Key: "rate_limits.userinfo.per_ip.rate", Reason: notARate}},
		{name: "userinfo per-session rate needs a burst", mut: func(c *Config) { c.RateLimits.Userinfo.PerSession.Burst = 0 },
			want: FieldError{Key: "rate_limits.userinfo.per_session.burst", Reason: needsBurst}},
		{name: "management per-IP rate must parse", mut: func(c *Config) { c.RateLimits.Management.PerIP.Rate = "fast" },
			want: FieldError{Key: "rate_limits.management.per_ip.rate", Reason: notARate}},
		{name: "management per-token burst bounded", mut: func(c *Config) { c.RateLimits.Management.PerToken.Burst = 1_000_001 },
			want: FieldError{Key: "rate_limits.management.per_token.burst", Reason: needsBurst}},
		{name: "refresh family rate must parse", mut: func(c *Config) { c.RateLimits.Token.PerRefreshFamily.Rate = "fast" },
			want: FieldError{Key: "rate_limits.token.per_refresh_family.rate", Reason: notARate}},
		{name: "management token names are unique (the per-token limit is keyed by name)", mut: func(c *Config) {
			c.Management.Tokens = []ManagementToken{
				{Name: "ops", Token: strings.Repeat("a", 40), Scopes: []string{ScopeReadLogs}},
				{Name: "ci", Token: strings.Repeat("b", 40), Scopes: []string{ScopeReadLogs}},
				{Name: "ops", Token: strings.Repeat("c", 40), Scopes: []string{ScopeReadLogs}},
			}
		}, want: FieldError{Key: "management.tokens[2].name", Reason: "duplicate name (also management.tokens[0])"}},
		{name: "replay records not negative", mut: func(c *Config) { c.Store.Memory.MaxReplayRecords = -1 },
			want: FieldError{Key: "store.memory.max_replay_records", Reason: "must be between 0 (half of max_records) and max_records (100000)"}},
		{name: "replay records at most max_records", mut: func(c *Config) { c.Store.Memory.MaxRecords, c.Store.Memory.MaxReplayRecords = 2000, 2001 },
			want: FieldError{Key: "store.memory.max_replay_records", Reason: "must be between 0 (half of max_records) and max_records (2000)"}},
	} {
		t.Run(tc.name, func(t *testing.T) { wantOnlyError(t, tc.mut, tc.want) })
	}
	t.Run("YAML shape", func(t *testing.T) {
		configtest.SetEnv(t)
		cfg, err := Parse([]byte(configtest.ValidYAML + `
store:
  memory: { max_records: 2000, max_replay_records: 500 }
rate_limits:
  token:
    per_ip: { rate: "50/s", burst: 100 }
    per_refresh_family: { rate: "10/m", burst: 5 }
  userinfo:
    per_session: { rate: "0" }
  management:
    per_token: { rate: "5/s", burst: 50 }
`))
		if err != nil {
			t.Fatal(err)
		}
		rl := cfg.RateLimits
		if cfg.Store.Memory.MaxReplayRecords != 500 || rl.Token.PerIP != (RateLimit{Rate: "50/s", Burst: 100}) ||
			rl.Token.PerClient != (RateLimit{Rate: "200/s", Burst: 400}) || rl.Token.PerRefreshFamily != (RateLimit{Rate: "10/m", Burst: 5}) ||
			rl.Userinfo.PerSession.Rate != "0" || rl.Userinfo.PerIP != (RateLimit{Rate: "20/s", Burst: 40}) ||
			rl.Management.PerToken != (RateLimit{Rate: "5/s", Burst: 50}) || rl.Management.PerIP != (RateLimit{Rate: "10/s", Burst: 20}) {
			t.Fatalf("decoded %+v %+v", rl, cfg.Store.Memory)
		}
		if errs := cfg.Validate(); len(errs) != 0 {
			t.Fatal(FieldErrors(errs))
		}
		for _, bad := range []struct{ yaml, key string }{
			{yaml: "rate_limits:\n  authorize:\n    per_refresh_family: { rate: 1/s }\n", key: "rate_limits.authorize.per_refresh_family"},
			{yaml: "rate_limits:\n  userinfo:\n    per_client: { rate: 1/s }\n", key: "rate_limits.userinfo.per_client"},
			{yaml: "rate_limits:\n  management:\n    per_session: { rate: 1/s }\n", key: "rate_limits.management.per_session"},
		} {
			if _, err := Parse([]byte(bad.yaml)); err == nil || !strings.Contains(err.Error(), bad.key+": unknown key") {
				t.Errorf("%s: %v, want unknown key", bad.key, err)
			}
		}
	})
}

// TestAuthorizeSessionLimitConfig: rate_limits.authorize.per_session (logins answered from a
// broker session) is 1/s, burst 20 by default, is validated like every rate limit, sits beside
// authorize's per_ip and per_client in YAML, and exists only at /authorize and /userinfo.
func TestAuthorizeSessionLimitConfig(t *testing.T) {
	const notARate = `"fast" is not a rate (use N/s, N/m or N/h, e.g. 20/s; 0 = unlimited)`
	const needsBurst = "must be between 1 and 1000000 when a rate is set"
	t.Run("default", func(t *testing.T) {
		configtest.SetEnv(t)
		cfg, err := Parse([]byte(configtest.ValidYAML))
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.RateLimits.Authorize.PerSession; got != (RateLimit{Rate: "1/s", Burst: 20}) {
			t.Fatalf("default %+v, want 1/s burst 20", got)
		}
	})
	for _, tc := range []struct {
		name string
		mut  func(c *Config)
		want FieldError
	}{
		{name: "rate must parse", mut: func(c *Config) { c.RateLimits.Authorize.PerSession.Rate = "fast" },
			want: FieldError{Key: "rate_limits.authorize.per_session.rate", Reason: notARate}},
		{name: "a rate needs a burst", mut: func(c *Config) { c.RateLimits.Authorize.PerSession.Burst = 0 },
			want: FieldError{Key: "rate_limits.authorize.per_session.burst", Reason: needsBurst}},
		{name: "burst bounded", mut: func(c *Config) { c.RateLimits.Authorize.PerSession.Burst = 1_000_001 },
			want: FieldError{Key: "rate_limits.authorize.per_session.burst", Reason: needsBurst}},
	} {
		t.Run(tc.name, func(t *testing.T) { wantOnlyError(t, tc.mut, tc.want) })
	}
	t.Run("YAML shape", func(t *testing.T) {
		configtest.SetEnv(t)
		cfg, err := Parse([]byte(configtest.ValidYAML + `
rate_limits:
  authorize:
    per_ip: { rate: "5/s", burst: 10 }
    per_session: { rate: "30/m", burst: 5 }
`))
		if err != nil {
			t.Fatal(err)
		}
		a := cfg.RateLimits.Authorize
		if a.PerSession != (RateLimit{Rate: "30/m", Burst: 5}) || a.PerIP != (RateLimit{Rate: "5/s", Burst: 10}) || a.PerClient.Rate != "0" {
			t.Fatalf("decoded %+v", a)
		}
		if errs := cfg.Validate(); len(errs) != 0 {
			t.Fatal(FieldErrors(errs))
		}
		for _, bad := range []struct{ yaml, key string }{
			{yaml: "rate_limits:\n  token:\n    per_session: { rate: 1/s }\n", key: "rate_limits.token.per_session"},
			{yaml: "rate_limits:\n  callback:\n    per_session: { rate: 1/s }\n", key: "rate_limits.callback.per_session"},
		} {
			if _, err := Parse([]byte(bad.yaml)); err == nil || !strings.Contains(err.Error(), bad.key+": unknown key") {
				t.Errorf("%s: %v, want unknown key", bad.key, err)
			}
		}
	})
}

// wantOnlyError checks that the valid configuration changed by mut fails validation with
// exactly want.
func wantOnlyError(t *testing.T, mut func(*Config), want FieldError) {
	t.Helper()
	configtest.SetEnv(t)
	cfg, err := Parse([]byte(configtest.ValidYAML))
	if err != nil {
		t.Fatal(err)
	}
	mut(cfg)
	if errs := cfg.Validate(); len(errs) != 1 || errs[0] != want {
		t.Fatalf("got %v, want exactly %v", FieldErrors(errs), want)
	}
}
