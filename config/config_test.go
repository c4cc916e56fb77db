package config

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config/configtest"
)

func TestLoadGoodConfig(t *testing.T) {
	configtest.SetEnv(t)
	cfg, err := Parse([]byte(configtest.ValidYAML))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if errs := cfg.Validate(); len(errs) != 0 {
		t.Fatalf("Validate: %v", FieldErrors(errs))
	}
	if cfg.Clients[0].ClientSecret != "from-env" || cfg.Lifetimes.Transaction != 10*time.Minute ||
		cfg.DPoP.MaxRetries != 1 || cfg.Connections[0].Options.Type != "back_channel" ||
		cfg.Connections[0].Options.Scope != "openid profile email" || cfg.BaseURL() != "http://127.0.0.1:8080" {
		t.Fatalf("defaults/expansion: %+v", cfg)
	}
	id := cfg.Connections[0].ConnectionID()
	if !strings.HasPrefix(id, "con_") || len(id) != 20 || id != DeriveConnectionID("corp-oidc") || id == DeriveConnectionID("other") {
		t.Fatalf("connection id %q", id)
	}
	if _, err := LoadKeys(cfg, false); err != nil {
		t.Fatalf("LoadKeys: %v", err)
	}
}

func TestExampleConfigParses(t *testing.T) {
	for _, v := range []string{"REDIS_PASSWORD", "SAMPLE_APP_SECRET", "CORP_OIDC_SECRET"} {
		t.Setenv(v, "x")
	}
	t.Setenv("BROKER_MGMT_TOKEN", strings.Repeat("m", 32))
	cfg, err := Load(filepath.Join("..", "config.example.yaml"))
	if err != nil {
		t.Fatalf("config.example.yaml: %v", err)
	}
	cfg.GenerateMissingKeys = true
	if errs := cfg.Validate(); len(errs) != 0 {
		t.Fatalf("config.example.yaml: %v", FieldErrors(errs))
	}
}

func TestLoadErrorsNameTheKey(t *testing.T) {
	configtest.SetEnv(t)
	for _, tc := range []struct {
		name    string
		replace [2]string
		want    FieldError
	}{
		{name: "unknown top-level key", replace: [2]string{"listen:", "listn:"}, want: FieldError{Key: "listn", Reason: "unknown key (did you mean listen?)"}},
		{name: "unknown nested key", replace: [2]string{"      client_id: broker", "      client_idd: broker"}, want: FieldError{Key: "connections[0].options.client_idd", Reason: "unknown key (did you mean client_id?)"}},
		{name: "two swapped letters are one edit", replace: [2]string{"listen:", "lsitne:"}, want: FieldError{Key: "lsitne", Reason: "unknown key (did you mean listen?)"}},
		{name: "unknown key like no known one", replace: [2]string{"listen:", "frobnicate:"}, want: FieldError{Key: "frobnicate", Reason: "unknown key"}},
		{name: "missing env var", replace: [2]string{"${TEST_SAMPLE_SECRET}", "${TEST_UNSET_VAR_XYZ}"}, want: FieldError{Key: "clients[0].client_secret", Reason: "environment variable TEST_UNSET_VAR_XYZ is not set"}},
		{name: "bad duration", replace: [2]string{"listen:", "lifetimes: { code: 60 }\nlisten:"}, want: FieldError{Key: "lifetimes.code", Reason: `"60" is not a duration (use Go syntax such as 30s, 10m or 1h)`}},
		{name: "bad int", replace: [2]string{"listen:", "dpop: { max_retries: many }\nlisten:"}, want: FieldError{Key: "dpop.max_retries", Reason: `"many" is not an integer`}},
		{name: "a YAML int where a boolean goes", replace: [2]string{"listen:", "dpop_server: { require_nonce: 1 }\nlisten:"}, want: FieldError{Key: "dpop_server.require_nonce", Reason: `"1" is not a boolean (use true or false)`}},
		{name: "a quoted number where an integer goes", replace: [2]string{"listen:", "dpop: { max_retries: \"0x\" }\nlisten:"}, want: FieldError{Key: "dpop.max_retries", Reason: `"0x" is not an integer`}},
		{name: "a YAML int where a connection boolean goes", replace: [2]string{"      client_id: broker", "      client_id: broker\n      use_par: 1"}, want: FieldError{Key: "connections[0].options.use_par", Reason: `"1" is not a boolean (use true or false)`}},
		{name: "list expected", replace: [2]string{`redirect_uris: ["http://127.0.0.1:8082/callback"]`, `redirect_uris: "http://x/cb"`}, want: FieldError{Key: "clients[0].redirect_uris", Reason: "must be a list"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(strings.Replace(configtest.ValidYAML, tc.replace[0], tc.replace[1], 1)))
			fe, ok := err.(FieldErrors)
			if !ok || !slices.Contains(fe, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("env default syntax", func(t *testing.T) {
		cfg, err := Parse([]byte(strings.Replace(configtest.ValidYAML, "${TEST_SAMPLE_SECRET}", "${TEST_UNSET_VAR_XYZ:-fallback}", 1)))
		if err != nil || cfg.Clients[0].ClientSecret != "fallback" {
			t.Fatalf("%v %v", err, cfg)
		}
	})
}

func TestValidateReportsEachProblemUnderItsKey(t *testing.T) {
	configtest.SetEnv(t)
	for _, tc := range []struct {
		name string
		mut  func(c *Config)
		want FieldError
	}{
		{name: "issuer with query", mut: func(c *Config) { c.Issuer = "https://b.example/?x=1" }, want: FieldError{Key: "issuer", Reason: `"https://b.example/?REDACTED" must not contain a query`}},
		{name: "issuer with fragment", mut: func(c *Config) { c.Issuer = "https://b.example/#f" }, want: FieldError{Key: "issuer", Reason: `"https://b.example/#REDACTED" must not contain a fragment`}},
		{name: "issuer not absolute", mut: func(c *Config) { c.Issuer = "b.example" }, want: FieldError{Key: "issuer", Reason: `"b.example" must be an absolute http or https URL`}},
		{name: "issuer missing", mut: func(c *Config) { c.Issuer = "" }, want: FieldError{Key: "issuer", Reason: "is required"}},
		{name: "listen", mut: func(c *Config) { c.Listen = "8080" }, want: FieldError{Key: "listen", Reason: `"8080" must be HOST:PORT (address 8080: missing port in address)`}},
		{name: "store type", mut: func(c *Config) { c.Store.Type = "etcd" }, want: FieldError{Key: "store.type", Reason: `"etcd" is not supported (use memory or redis)`}},
		{name: "redis without addrs", mut: func(c *Config) { c.Store.Type = "redis" }, want: FieldError{Key: "store.redis.addrs", Reason: "at least one address is required for store type redis"}},
		{name: "redis bad addr", mut: func(c *Config) { c.Store.Type = "redis"; c.Store.Redis.Addrs = []string{"a:1", "nohost"} }, want: FieldError{Key: "store.redis.addrs[1]", Reason: `"nohost" must be HOST:PORT`}},
		{name: "duplicate client id", mut: func(c *Config) { c.Clients = append(c.Clients, c.Clients[0]) }, want: FieldError{Key: "clients[1].client_id", Reason: `duplicate client_id "sample-app" (also clients[0])`}},
		{name: "redirect uri relative", mut: func(c *Config) { c.Clients[0].RedirectURIs = []string{"/cb"} }, want: FieldError{Key: "clients[0].redirect_uris[0]", Reason: `"/cb" must be an absolute URI`}},
		{name: "redirect uri fragment", mut: func(c *Config) { c.Clients[0].RedirectURIs = []string{"https://a/cb#x"} }, want: FieldError{Key: "clients[0].redirect_uris[0]", Reason: `"https://a/cb#REDACTED" must not contain a fragment`}},
		{name: "post-logout redirect uri relative", mut: func(c *Config) { c.Clients[0].PostLogoutRedirectURIs = []string{"/bye"} }, want: FieldError{Key: "clients[0].post_logout_redirect_uris[0]", Reason: `"/bye" must be an absolute URI`}},
		{name: "client connection undefined", mut: func(c *Config) { c.Clients[0].Connections = []string{"nope"} }, want: FieldError{Key: "clients[0].connections[0]", Reason: `connection "nope" is not defined in connections`}},
		{name: "confidential without secret", mut: func(c *Config) {
			c.Clients[0].ClientSecret = ""
			c.Clients[0].TokenEndpointAuthMethod = "client_secret_post"
		}, want: FieldError{Key: "clients[0].client_secret", Reason: "is required for token_endpoint_auth_method client_secret_post"}},
		{name: "bad auth method", mut: func(c *Config) { c.Clients[0].TokenEndpointAuthMethod = "private_key_jwt" }, want: FieldError{Key: "clients[0].token_endpoint_auth_method", Reason: `"private_key_jwt" is not supported (use client_secret_basic, client_secret_post or none)`}},
		{name: "duplicate connection name", mut: func(c *Config) { c.Connections = append(c.Connections, c.Connections[0]) }, want: FieldError{Key: "connections[1].name", Reason: `duplicate connection name "corp-oidc" (also connections[0])`}},
		{name: "strategy", mut: func(c *Config) { c.Connections[0].Strategy = "saml" }, want: FieldError{Key: "connections[0].strategy", Reason: `"saml" is not supported (use oidc or okta)`}},
		{name: "no issuer nor discovery", mut: func(c *Config) { c.Connections[0].Options.Issuer = "" }, want: FieldError{Key: "connections[0].options.issuer", Reason: "issuer or discovery_url is required"}},
		{name: "connection issuer over plain http off loopback", mut: func(c *Config) { c.Connections[0].Options.Issuer = "http://idp.example" },
			want: FieldError{Key: "connections[0].options.issuer", Reason: `"http://idp.example" must use https (http only for loopback hosts)`}},
		{name: "connection discovery_url over plain http off loopback", mut: func(c *Config) {
			c.Connections[0].Options.DiscoveryURL = "http://idp.example/.well-known/openid-configuration"
		}, want: FieldError{Key: "connections[0].options.discovery_url", Reason: `"http://idp.example/.well-known/openid-configuration" must use https (http only for loopback hosts)`}},
		{name: "okta needs domain", mut: func(c *Config) { c.Connections[0].Strategy = "okta"; c.Connections[0].Options.Issuer = "" }, want: FieldError{Key: "connections[0].options.domain", Reason: "domain, issuer or discovery_url is required"}},
		{name: "front channel", mut: func(c *Config) { c.Connections[0].Options.Type = "front_channel" }, want: FieldError{Key: "connections[0].options.type", Reason: `"front_channel" is not supported (only back_channel, which DPoP requires: dpop_signing_alg is set)`}},
		{name: "front channel without DPoP", mut: func(c *Config) {
			c.Connections[0].Options.Type = "front_channel"
			c.Connections[0].Options.DPoPSigningAlg = ""
		}, want: FieldError{Key: "connections[0].options.type", Reason: `"front_channel" is not supported (only back_channel)`}},
		{name: "token vault with DPoP", mut: func(c *Config) { c.Connections[0].Options.TokenVault = &Activity{Active: true} },
			want: FieldError{Key: "connections[0].options.federated_connections_access_tokens.active", Reason: "Token Vault is not compatible with DPoP: set active to false or remove dpop_signing_alg"}},
		{name: "offline_access upstream param with DPoP", mut: func(c *Config) { c.Connections[0].Options.UpstreamParams = ParamMap{"offline_access": {Value: "true"}} },
			want: FieldError{Key: "connections[0].options.upstream_params.offline_access", Reason: `"true" enables Token Vault (offline access at the upstream), which is not compatible with DPoP: remove it or remove dpop_signing_alg`}},
		{name: "enabled_clients names an unknown client", mut: func(c *Config) { c.Connections[0].EnabledClients = []string{"nope"} },
			want: FieldError{Key: "connections[0].enabled_clients[0]", Reason: `client "nope" is not defined in clients`}},
		{name: "realm empty", mut: func(c *Config) { c.Connections[0].Realms = []string{"corp.example", ""} },
			want: FieldError{Key: "connections[0].realms[1]", Reason: "must be 1 to 255 characters"}},
		{name: "realm listed twice", mut: func(c *Config) { c.Connections[0].Realms = []string{"corp.example", "corp.example"} },
			want: FieldError{Key: "connections[0].realms[1]", Reason: `"corp.example" is listed twice`}},
		{name: "metadata value over 255 characters", mut: func(c *Config) { c.Connections[0].Metadata = map[string]string{"team": strings.Repeat("é", 256)} },
			want: FieldError{Key: "connections[0].metadata.team", Reason: "must be at most 255 characters"}},
		{name: "metadata with 11 members", mut: func(c *Config) {
			c.Connections[0].Metadata = map[string]string{}
			for i := range 11 {
				c.Connections[0].Metadata[strconv.Itoa(i)] = "v"
			}
		}, want: FieldError{Key: "connections[0].metadata", Reason: "must have at most 10 members"}},
		{name: "metadata member name empty", mut: func(c *Config) { c.Connections[0].Metadata = map[string]string{"": "v"} },
			want: FieldError{Key: "connections[0].metadata", Reason: "member names must be 1 to 255 characters"}},
		{name: "management token too short", mut: func(c *Config) {
			c.Management.Tokens = []ManagementToken{{Token: "short", Scopes: []string{"read:logs"}}}
		}, want: FieldError{Key: "management.tokens[0].token", Reason: "must be at least 32 characters (got 5); generate one with: openssl rand -base64 32"}},
		{name: "management unknown scope", mut: func(c *Config) {
			c.Management.Tokens = []ManagementToken{{Token: strings.Repeat("x", 32), Scopes: []string{"write:everything"}}}
		}, want: FieldError{Key: "management.tokens[0].scopes[0]", Reason: `"write:everything" is not a known scope (use read:connections, create:connections, update:connections, delete:connections, read:clients, create:clients, update:clients, delete:clients, read:logs, read:sessions or delete:sessions)`}},
		{name: "logs max_age", mut: func(c *Config) { c.Logs.MaxAge = 0 }, want: FieldError{Key: "logs.max_age", Reason: "must be a positive duration such as 720h"}},
		{name: "logs admin max_events", mut: func(c *Config) { c.Logs.Admin.MaxEvents = 0 }, want: FieldError{Key: "logs.admin.max_events", Reason: "must be between 1 and 10000000"}},
		{name: "logs admin max_age", mut: func(c *Config) { c.Logs.Admin.MaxAge = -time.Hour }, want: FieldError{Key: "logs.admin.max_age", Reason: "must be a positive duration such as 8760h"}},
		{name: "dpop alg", mut: func(c *Config) { c.Connections[0].Options.DPoPSigningAlg = "ES512" }, want: FieldError{Key: "connections[0].options.dpop_signing_alg", Reason: `"ES512" is not supported (use ES256, Ed25519, RS256 or PS256)`}},
		{name: "dpop key missing for alg", mut: func(c *Config) { c.Connections[0].Options.DPoPSigningAlg = "Ed25519" }, want: FieldError{Key: "keys.dpop.ed25519", Reason: "a private key is required because connections[0] (corp-oidc) uses dpop_signing_alg Ed25519"}},
		{name: "dpop key wrong type", mut: func(c *Config) { c.Keys.DPoP.ES256.PrivateKeyEnv = "TEST_BROKER_SIGNING_KEY" }, want: FieldError{Key: "keys.dpop.es256.private_key_env", Reason: "the key does not fit alg ES256"}},
		{name: "signing key env unset", mut: func(c *Config) { c.Keys.Signing.PrivateKeyEnv = "TEST_NOT_SET_KEY" }, want: FieldError{Key: "keys.signing.private_key_env", Reason: "environment variable TEST_NOT_SET_KEY is not set"}},
		{name: "signing alg", mut: func(c *Config) { c.Keys.Signing.Alg = "HS256" }, want: FieldError{Key: "keys.signing.alg", Reason: `"HS256" is not supported (use RS256 or ES256)`}},
		{name: "previous signing key is the current one", mut: func(c *Config) {
			c.Keys.PreviousSigning = []SigningKey{{Alg: "RS256", KeySource: KeySource{PrivateKeyEnv: "TEST_BROKER_SIGNING_KEY"}}}
		}, want: FieldError{Key: "keys.previous_signing[0]", Reason: "the same key as keys.signing"}},
		{name: "previous signing alg", mut: func(c *Config) { c.Keys.PreviousSigning = []SigningKey{{Alg: "HS256"}} },
			want: FieldError{Key: "keys.previous_signing[0].alg", Reason: `"HS256" is not supported (use RS256 or ES256)`}},
		{name: "previous signing key of another type", mut: func(c *Config) {
			c.Keys.PreviousSigning = []SigningKey{{Alg: "RS256", KeySource: KeySource{PrivateKeyEnv: "TEST_BROKER_DPOP_KEY"}}}
		}, want: FieldError{Key: "keys.previous_signing[0].private_key_env", Reason: "the key does not fit alg RS256"}},
		{name: "lifetime", mut: func(c *Config) { c.Lifetimes.Code = 0 }, want: FieldError{Key: "lifetimes.code", Reason: "must be a positive duration"}},
		{name: "negative jitter", mut: func(c *Config) { c.DPoP.Jitter = -time.Second }, want: FieldError{Key: "dpop.jitter", Reason: "must not be negative"}},
		{name: "max retries", mut: func(c *Config) { c.DPoP.MaxRetries = 6 }, want: FieldError{Key: "dpop.max_retries", Reason: "6 is out of range (0 to 5)"}},
		{name: "scope without openid", mut: func(c *Config) { c.Connections[0].Options.Scope = "profile" }, want: FieldError{Key: "connections[0].options.scope", Reason: `"profile" must include openid`}},
		{name: "reserved upstream param", mut: func(c *Config) { c.Connections[0].Options.UpstreamParams = ParamMap{"state": {Value: "x"}} }, want: FieldError{Key: "connections[0].options.upstream_params.state", Reason: "is set by the broker and cannot be overridden"}},
		{name: "bad connection id", mut: func(c *Config) { c.Connections[0].ID = "abc" }, want: FieldError{Key: "connections[0].id", Reason: `"abc" must be con_ followed by letters and digits`}},
		{name: "refresh lifetime", mut: func(c *Config) { c.Lifetimes.RefreshToken = 0 }, want: FieldError{Key: "lifetimes.refresh_token", Reason: "must be a positive duration"}},
		{name: "session idle timeout", mut: func(c *Config) { c.Sessions.IdleTimeout = 0 }, want: FieldError{Key: "sessions.idle_timeout", Reason: "must be a positive duration"}},
		{name: "session absolute timeout negative", mut: func(c *Config) { c.Sessions.AbsoluteTimeout = -time.Hour }, want: FieldError{Key: "sessions.absolute_timeout", Reason: "must not be negative"}},
		{name: "session idle longer than absolute", mut: func(c *Config) { c.Sessions.IdleTimeout, c.Sessions.AbsoluteTimeout = 9*time.Hour, 8*time.Hour },
			want: FieldError{Key: "sessions.idle_timeout", Reason: "9h0m0s is longer than sessions.absolute_timeout (8h0m0s)"}},
		{name: "session idle longer than lifetimes.session when absolute is unset", mut: func(c *Config) { c.Sessions.IdleTimeout = 9 * time.Hour },
			want: FieldError{Key: "sessions.idle_timeout", Reason: "9h0m0s is longer than the absolute session lifetime (8h0m0s, from lifetimes.session: sessions.absolute_timeout is unset)"}},
		{name: "api audience missing", mut: func(c *Config) { c.APIs = []API{{Name: "x"}} }, want: FieldError{Key: "apis[0].audience", Reason: "is required"}},
		{name: "api audience with space", mut: func(c *Config) { c.APIs = []API{{Audience: "a b"}} }, want: FieldError{Key: "apis[0].audience", Reason: "must be 1 to 600 visible ASCII characters"}},
		{name: "api audience duplicate", mut: func(c *Config) { c.APIs = []API{{Audience: "https://api"}, {Audience: "https://api"}} }, want: FieldError{Key: "apis[1].audience", Reason: `duplicate audience "https://api" (also apis[0])`}},
		{name: "api audience is userinfo", mut: func(c *Config) { c.APIs = []API{{Audience: "http://127.0.0.1:8080/userinfo"}} }, want: FieldError{Key: "apis[0].audience", Reason: `"http://127.0.0.1:8080/userinfo" is the broker's userinfo audience and cannot be configured as an API`}},
		{name: "api policy", mut: func(c *Config) { c.APIs = []API{{Audience: "https://api", SenderConstraining: "mtls"}} }, want: FieldError{Key: "apis[0].sender_constraining", Reason: `"mtls" is not supported (use none, allowed or required)`}},
		{name: "api required_for", mut: func(c *Config) {
			c.APIs = []API{{Audience: "https://api", SenderConstraining: PolicyRequired, RequiredFor: "confidential_clients"}}
		}, want: FieldError{Key: "apis[0].required_for", Reason: `"confidential_clients" is not supported (use all_clients or public_clients)`}},
		{name: "api required_for without required", mut: func(c *Config) {
			c.APIs = []API{{Audience: "https://api", SenderConstraining: PolicyAllowed, RequiredFor: RequiredForPublic}}
		}, want: FieldError{Key: "apis[0].required_for", Reason: `public_clients only applies with sender_constraining: required (it is "allowed")`}},
		{name: "nonce secret required when nonces are demanded", mut: func(c *Config) { c.DPoPServer.RequireNonce = true }, want: FieldError{Key: "dpop_server.nonce_secret", Reason: "is required when require_nonce is true (at least 32 bytes, the same on every replica)"}},
		{name: "nonce secret too short", mut: func(c *Config) { c.DPoPServer.NonceSecret = "short" }, want: FieldError{Key: "dpop_server.nonce_secret", Reason: "must be at least 32 bytes (got 5)"}},
		{name: "nonce period", mut: func(c *Config) { c.DPoPServer.NoncePeriod = 0 }, want: FieldError{Key: "dpop_server.nonce_period", Reason: "must be a positive duration"}},
		{name: "proof max age above 1h", mut: func(c *Config) { c.DPoPServer.MaxAge = 2 * time.Hour }, want: FieldError{Key: "dpop_server.max_age", Reason: "2h0m0s is out of range (more than 0s, at most 1h)"}},
		{name: "negative proof max future", mut: func(c *Config) { c.DPoPServer.MaxFuture = -time.Second }, want: FieldError{Key: "dpop_server.max_future", Reason: "-1s is out of range (0s to 5m)"}},
		{name: "proof alg none refused", mut: func(c *Config) { c.DPoPServer.Algs = []string{"ES256", "none"} }, want: FieldError{Key: "dpop_server.algs[1]", Reason: `"none" is not supported (use ES256, ES384, ES512, EdDSA, Ed25519, RS256 or PS256)`}},
		{name: "symmetric proof alg refused", mut: func(c *Config) { c.DPoPServer.Algs = []string{"HS256"} }, want: FieldError{Key: "dpop_server.algs[0]", Reason: `"HS256" is not supported (use ES256, ES384, ES512, EdDSA, Ed25519, RS256 or PS256)`}},
		{name: "duplicate proof alg", mut: func(c *Config) { c.DPoPServer.Algs = []string{"ES256", "ES256"} }, want: FieldError{Key: "dpop_server.algs[1]", Reason: `duplicate algorithm "ES256"`}},
		{name: "no proof algs", mut: func(c *Config) { c.DPoPServer.Algs = nil }, want: FieldError{Key: "dpop_server.algs", Reason: "at least one algorithm is required"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(configtest.ValidYAML))
			if err != nil {
				t.Fatal(err)
			}
			tc.mut(cfg)
			errs := cfg.Validate()
			if !slices.Contains(errs, tc.want) {
				t.Fatalf("got %v\nwant %v", FieldErrors(errs), tc.want)
			}
		})
	}
}

func TestDPoPServerConfig(t *testing.T) {
	configtest.SetEnv(t)
	t.Setenv("TEST_NONCE_SECRET", strings.Repeat("n", 32))
	yml := configtest.ValidYAML + `
apis:
  - { audience: "https://api.example.com", name: API, sender_constraining: required }
  - { audience: "urn:other" }
dpop_server:
  require_nonce: true
  nonce_secret: "${TEST_NONCE_SECRET}"
  nonce_period: 1m
  max_age: 120s
  max_future: 10s
  algs: [ES256, EdDSA]
lifetimes: { refresh_token: 2h }
`
	yml = strings.Replace(yml, "    connections: [corp-oidc]", "    connections: [corp-oidc]\n    require_sender_constraining: true\n    dpop_bound_access_tokens: true\n    allowed_origins: [\"https://spa.example.com\"]", 1)
	cfg, err := Parse([]byte(yml))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if errs := cfg.Validate(); len(errs) != 0 {
		t.Fatalf("Validate: %v", FieldErrors(errs))
	}
	d, c := cfg.DPoPServer, cfg.Clients[0]
	if !d.RequireNonce || d.NonceSecret != strings.Repeat("n", 32) || d.NoncePeriod != time.Minute || d.MaxAge != 2*time.Minute ||
		d.MaxFuture != 10*time.Second || !slices.Equal(d.Algs, []string{"ES256", "EdDSA"}) || cfg.Lifetimes.RefreshToken != 2*time.Hour {
		t.Errorf("dpop_server = %+v", d)
	}
	if !c.RequireSenderConstraining || !c.DPoPBoundAccessTokens || !c.RequiresPoP() || c.AllowedOrigins[0] != "https://spa.example.com" {
		t.Errorf("client = %+v", c)
	}
	if len(cfg.APIs) != 2 || cfg.APIs[0].SenderConstraining != PolicyRequired || cfg.APIs[1].SenderConstraining != PolicyNone {
		t.Errorf("apis = %+v (the policy defaults to none)", cfg.APIs)
	}
	def := Default().DPoPServer
	if def.MaxAge != 300*time.Second || def.MaxFuture != 30*time.Second || !slices.Equal(def.Algs, []string{"ES256", "EdDSA", "Ed25519", "RS256", "PS256"}) || def.RequireNonce {
		t.Errorf("defaults = %+v (the proof iat window of RFC 9449 §11.1: 300 s back, 30 s ahead)", def)
	}
	_, err = Parse([]byte(configtest.ValidYAML + "dpop_server: { require_nonce: maybe }\n"))
	if fe, ok := err.(FieldErrors); !ok || !slices.Contains(fe, FieldError{Key: "dpop_server.require_nonce", Reason: `"maybe" is not a boolean (use true or false)`}) {
		t.Errorf("bad bool: %v", err)
	}
}

func TestUnreadableKeyFileIsReportedUnderItsKey(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "k.pem")
	if err := os.WriteFile(p, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Default()
	cfg.Keys.Signing.PrivateKeyFile = p
	v := &validator{}
	cfg.validateKeys(v)
	if len(v.errs) != 1 || v.errs[0].Key != "keys.signing.private_key_file" || !strings.HasPrefix(v.errs[0].Reason, "not a PEM private key") {
		t.Fatalf("%v", v.errs)
	}
}

func TestOktaDomainValidation(t *testing.T) {
	for _, tc := range []struct{ name, domain, want string }{
		{name: "http off loopback refused", domain: "http://dev-1.okta.com", want: "only for loopback"},
		{name: "path refused", domain: "dev-1.okta.com/oauth2/default", want: "must be a host name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Default()
			cfg.Connections = []Connection{{Name: "okta", Strategy: "okta", Options: ConnectionOptions{
				Domain: tc.domain, ClientID: "c", ClientSecret: "s", Scope: "openid", Type: "back_channel",
			}}}
			var found bool
			for _, fe := range cfg.validate(false) {
				if fe.Key == "connections[0].options.domain" && strings.Contains(fe.Reason, tc.want) {
					found = true
				}
			}
			if !found {
				t.Errorf("no connections[0].options.domain error containing %q: %v", tc.want, cfg.validate(false))
			}
		})
	}
}

// TestValidateClientGivesTheReasonsOfTheYAML: a management API body is refused for the same
// reasons, worded the same, as the YAML entry, under keys without the clients[i]. prefix; a
// connection known only to the caller (the store) is accepted, and an API body may name none.
func TestValidateClientGivesTheReasonsOfTheYAML(t *testing.T) {
	tests := []struct {
		name string
		cl   Client
	}{
		{name: "http redirect off loopback", cl: Client{ClientID: "a", ClientSecret: "s", RedirectURIs: []string{"http://app.example.com/cb"}, Connections: []string{"corp"}}},
		{name: "unknown connection and a bad origin", cl: Client{ClientID: "a", RedirectURIs: []string{"https://app.example.com/cb"}, AllowedOrigins: []string{"https://app.example.com/path"}, Connections: []string{"nope"}}},
		{name: "secret for a public client", cl: Client{ClientID: "a", ClientSecret: "s", TokenEndpointAuthMethod: AuthNone, RedirectURIs: []string{"https://app.example.com/cb"}, Connections: []string{"corp"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Default()
			cfg.Connections = []Connection{{Name: "corp"}}
			cfg.Clients = []Client{tc.cl}
			var yaml []string
			for _, e := range cfg.Validate() {
				if k, ok := strings.CutPrefix(e.Key, "clients[0]."); ok {
					yaml = append(yaml, FieldError{Key: k, Reason: e.Reason}.Error())
				}
			}
			var api []string
			for _, e := range cfg.ValidateClient(&tc.cl, func(name string) bool { return name == "corp" }) {
				api = append(api, e.Error())
			}
			if len(yaml) == 0 || strings.Join(yaml, "\n") != strings.Join(api, "\n") {
				t.Errorf("YAML reasons:\n%s\nAPI reasons:\n%s", strings.Join(yaml, "\n"), strings.Join(api, "\n"))
			}
		})
	}
	cl := Client{ClientID: "a", RedirectURIs: []string{"https://app.example.com/cb"}}
	if errs := Default().ValidateClient(&cl, func(string) bool { return false }); len(errs) != 0 {
		t.Errorf("an API body without connections: %v", errs)
	}
}
