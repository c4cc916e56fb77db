package config

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config/configtest"
)

// validStream is a log stream that validates: bearer over https.
func validStream() LogStream {
	s := LogStream{Name: "siem", URL: "https://siem.example.com/ingest",
		Auth: LogStreamAuth{Type: LogStreamBearer, Token: strings.Repeat("t", 32)}}
	s.applyDefaults()
	return s
}

var testStreamSecret = "whsec_" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))

func TestLogStreamsFromYAMLWithDefaultsAndSecretsFromEnv(t *testing.T) {
	configtest.SetEnv(t)
	t.Setenv("SIEM_TOKEN", strings.Repeat("x", 24))
	t.Setenv("HOOK_SECRET", testStreamSecret)
	cfg, err := Parse([]byte(configtest.ValidYAML + `
log_streams:
  - name: siem
    url: https://siem.example.com/ingest
    auth: {type: bearer, token: "${SIEM_TOKEN}"}
  - name: hook
    url: http://127.0.0.1:9000/events
    auth: {type: hmac, secret: "${HOOK_SECRET}"}
    types: [f, fapi]
    batch_size: 10
    start: oldest
    timeout: 3s
    max_backoff: 5m
    late_window: 2m
    allowed_networks: [10.0.0.0/8, 127.0.0.1/32]
`))
	if err != nil {
		t.Fatal(err)
	}
	if errs := cfg.Validate(); len(errs) > 0 {
		t.Fatalf("Validate: %v", FieldErrors(errs))
	}
	s0, s1 := cfg.LogStreams[0], cfg.LogStreams[1]
	if s0.BatchSize != 50 || s0.Start != "latest" || s0.Timeout != 10*time.Second || s0.MaxBackoff != time.Minute || s0.LateWindow != time.Minute || s0.Auth.Token != strings.Repeat("x", 24) {
		t.Errorf("defaults of the first stream: %+v", s0)
	}
	if s1.BatchSize != 10 || s1.Start != "oldest" || s1.Timeout != 3*time.Second || s1.MaxBackoff != 5*time.Minute || s1.LateWindow != 2*time.Minute ||
		string(s1.Auth.HMACKey()) != strings.Repeat("k", 32) || len(s1.Types) != 2 {
		t.Errorf("second stream: %+v", s1)
	}
}

func TestLogStreamWithUnsetEnvIsListedApart(t *testing.T) {
	configtest.SetEnv(t)
	cfg, err := Parse([]byte(configtest.ValidYAML + `
log_streams:
  - name: siem
    url: https://siem.example.com/ingest
    auth: {type: bearer, token: "${LOGSTREAM_TEST_UNSET_TOKEN}"}
`))
	fe, _ := err.(FieldErrors)
	errs, unset := SplitUnsetEnv(append(fe, cfg.Validate()...))
	if len(errs) != 0 || len(unset) != 1 || unset[0].Key != "log_streams[0].auth.token" {
		t.Fatalf("errors %v, unset %v: want only the unset token", FieldErrors(errs), FieldErrors(unset))
	}
}

func TestLogStreamsValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		mut  func(s *LogStream)
		want FieldError
	}{
		{name: "name required", mut: func(s *LogStream) { s.Name = "" },
			want: FieldError{Key: "log_streams[0].name", Reason: "is required"}},
		{name: "name is letters, digits, - and _", mut: func(s *LogStream) { s.Name = "siem.prod" },
			want: FieldError{Key: "log_streams[0].name", Reason: `"siem.prod" must be 1 to 64 letters, digits, '-' and '_', starting with a letter or digit`}},
		{name: "url required", mut: func(s *LogStream) { s.URL = "" },
			want: FieldError{Key: "log_streams[0].url", Reason: "is required"}},
		{name: "url https off loopback", mut: func(s *LogStream) { s.URL = "http://siem.example.com/" },
			want: FieldError{Key: "log_streams[0].url", Reason: `"http://siem.example.com/" must use https (plain http only on a loopback host such as http://127.0.0.1:PORT/; allow_insecure_http accepts it elsewhere, for development only)`}},
		{name: "url without user information", mut: func(s *LogStream) { s.URL = "https://user:pw@siem.example.com/" },
			want: FieldError{Key: "log_streams[0].url", Reason: `"https://REDACTED@siem.example.com/" must not contain user information`}},
		{name: "auth type required", mut: func(s *LogStream) { s.Auth = LogStreamAuth{} },
			want: FieldError{Key: "log_streams[0].auth.type", Reason: "is required: bearer (auth.token) or hmac (auth.secret): a stream's requests always authenticate"}},
		{name: "auth type known", mut: func(s *LogStream) { s.Auth.Type = "basic" },
			want: FieldError{Key: "log_streams[0].auth.type", Reason: `"basic" must be bearer or hmac`}},
		{name: "bearer token long enough", mut: func(s *LogStream) { s.Auth.Token = "short" },
			want: FieldError{Key: "log_streams[0].auth.token", Reason: "must be at least 16 characters (got 5); keep it in the environment: token: ${VAR}"}},
		{name: "bearer token without spaces", mut: func(s *LogStream) { s.Auth.Token = strings.Repeat("t", 16) + " x" },
			want: FieldError{Key: "log_streams[0].auth.token", Reason: "must be visible ASCII characters without spaces"}},
		{name: "bearer takes no secret", mut: func(s *LogStream) { s.Auth.Secret = testStreamSecret },
			want: FieldError{Key: "log_streams[0].auth.secret", Reason: "is for type hmac only"}},
		{name: "hmac secret required", mut: func(s *LogStream) { s.Auth = LogStreamAuth{Type: LogStreamHMAC} },
			want: FieldError{Key: "log_streams[0].auth.secret", Reason: "is required; generate one with: echo whsec_$(openssl rand -base64 32), and keep it in the environment: secret: ${VAR}"}},
		{name: "hmac secret in the whsec_ form", mut: func(s *LogStream) { s.Auth = LogStreamAuth{Type: LogStreamHMAC, Secret: strings.Repeat("k", 40)} },
			want: FieldError{Key: "log_streams[0].auth.secret", Reason: `must be "whsec_" followed by standard base64 (echo whsec_$(openssl rand -base64 32))`}},
		{name: "hmac secret of 24 bytes at least", mut: func(s *LogStream) {
			s.Auth = LogStreamAuth{Type: LogStreamHMAC, Secret: "whsec_" + base64.StdEncoding.EncodeToString([]byte("short"))}
		}, want: FieldError{Key: "log_streams[0].auth.secret", Reason: "must encode 24 to 64 bytes (got 5)"}},
		{name: "hmac takes no token", mut: func(s *LogStream) { s.Auth.Type, s.Auth.Secret = LogStreamHMAC, testStreamSecret },
			want: FieldError{Key: "log_streams[0].auth.token", Reason: "is for type bearer only"}},
		{name: "types are event types", mut: func(s *LogStream) { s.Types = []string{"s", "login"} },
			want: FieldError{Key: "log_streams[0].types[1]", Reason: `"login" is not an event type the broker writes (such as s, f, seacft, slo, sapi, fapi)`}},
		{name: "types listed once", mut: func(s *LogStream) { s.Types = []string{"s", "f", "s"} },
			want: FieldError{Key: "log_streams[0].types[2]", Reason: `"s" is listed twice`}},
		{name: "batch size at most 100", mut: func(s *LogStream) { s.BatchSize = 101 },
			want: FieldError{Key: "log_streams[0].batch_size", Reason: "must be between 1 and 100"}},
		{name: "start latest or oldest", mut: func(s *LogStream) { s.Start = "now" },
			want: FieldError{Key: "log_streams[0].start", Reason: `"now" must be latest (events after the stream's first start) or oldest (every retained event)`}},
		{name: "timeout at most a minute", mut: func(s *LogStream) { s.Timeout = 2 * time.Minute },
			want: FieldError{Key: "log_streams[0].timeout", Reason: "must be a positive duration of at most 1m0s"}},
		{name: "max backoff at least a second", mut: func(s *LogStream) { s.MaxBackoff = time.Millisecond },
			want: FieldError{Key: "log_streams[0].max_backoff", Reason: "must be between 1s and 1h0m0s"}},
		{name: "late window at least 5 seconds", mut: func(s *LogStream) { s.LateWindow = time.Second },
			want: FieldError{Key: "log_streams[0].late_window", Reason: "must be between 5s and 1h0m0s (above the replicas' clock skew plus the store's write timeout)"}},
		{name: "late window at most an hour", mut: func(s *LogStream) { s.LateWindow = 2 * time.Hour },
			want: FieldError{Key: "log_streams[0].late_window", Reason: "must be between 5s and 1h0m0s (above the replicas' clock skew plus the store's write timeout)"}},
		{name: "a loopback url needs allowed_networks", mut: func(s *LogStream) { s.URL = "http://127.0.0.1:9000/hook" },
			want: FieldError{Key: "log_streams[0].url", Reason: "is on 127.0.0.1, an internal address the broker's address policy refuses: list it under log_streams[0].allowed_networks (such as 127.0.0.1/32)"}},
		{name: "a private url needs allowed_networks", mut: func(s *LogStream) { s.URL = "https://10.1.2.3/hook"; s.AllowedNetworks = []string{"192.168.0.0/16"} },
			want: FieldError{Key: "log_streams[0].url", Reason: "is on 10.1.2.3, an internal address the broker's address policy refuses: list it under log_streams[0].allowed_networks (such as 10.1.2.3/32)"}},
		{name: "allowed networks parse", mut: func(s *LogStream) { s.AllowedNetworks = []string{"10.0.0.0/33"} },
			want: FieldError{Key: "log_streams[0].allowed_networks[0]", Reason: `"10.0.0.0/33" is not an IP address or CIDR (e.g. 10.0.0.0/8 or 192.0.2.10)`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantOnlyError(t, func(c *Config) {
				s := validStream()
				tc.mut(&s)
				c.LogStreams = []LogStream{s}
			}, tc.want)
		})
	}
	t.Run("names are unique", func(t *testing.T) {
		wantOnlyError(t, func(c *Config) { c.LogStreams = []LogStream{validStream(), validStream()} },
			FieldError{Key: "log_streams[1].name", Reason: "duplicate name (also log_streams[0]): the name keys the stream's position in the store"})
	})
	t.Run("plain http elsewhere is a warning with allow_insecure_http", func(t *testing.T) {
		configtest.SetEnv(t)
		cfg, err := Parse([]byte(configtest.ValidYAML))
		if err != nil {
			t.Fatal(err)
		}
		s := validStream()
		s.URL = "http://siem.internal/ingest"
		cfg.LogStreams, cfg.AllowInsecureHTTP = []LogStream{s}, true
		if errs := cfg.Validate(); len(errs) > 0 {
			t.Fatalf("Validate: %v", FieldErrors(errs))
		}
		found := false
		for _, w := range cfg.Warnings() {
			found = found || w.Key == "log_streams[0].url"
		}
		if !found {
			t.Errorf("warnings %v do not name log_streams[0].url", cfg.Warnings())
		}
	})
}
