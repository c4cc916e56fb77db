package broker

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/dpop"
)

const goodYAML = `
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

func setKeyEnv(t *testing.T) {
	t.Helper()
	for env, alg := range map[string]string{"TEST_BROKER_SIGNING_KEY": "RS256", "TEST_BROKER_DPOP_KEY": "ES256"} {
		k, err := dpop.GenerateKey(alg)
		if err != nil {
			t.Fatal(err)
		}
		pem, err := dpop.MarshalPrivateKeyPEM(k)
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv(env, string(pem))
	}
	t.Setenv("TEST_SAMPLE_SECRET", "from-env")
}

func TestLoadGoodConfig(t *testing.T) {
	setKeyEnv(t)
	cfg, err := Parse([]byte(goodYAML))
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
	setKeyEnv(t)
	for _, tc := range []struct {
		name    string
		replace [2]string
		want    FieldError
	}{
		{"unknown top-level key", [2]string{"listen:", "listn:"}, FieldError{"listn", "unknown key (did you mean listen?)"}},
		{"unknown nested key", [2]string{"      client_id: broker", "      client_idd: broker"}, FieldError{"connections[0].options.client_idd", "unknown key (did you mean client_id?)"}},
		{"unknown key like no known one", [2]string{"listen:", "frobnicate:"}, FieldError{"frobnicate", "unknown key"}},
		{"missing env var", [2]string{"${TEST_SAMPLE_SECRET}", "${TEST_UNSET_VAR_XYZ}"}, FieldError{"clients[0].client_secret", "environment variable TEST_UNSET_VAR_XYZ is not set"}},
		{"bad duration", [2]string{"listen:", "lifetimes: { code: 60 }\nlisten:"}, FieldError{"lifetimes.code", `"60" is not a duration (use Go syntax such as 30s, 10m or 1h)`}},
		{"bad int", [2]string{"listen:", "dpop: { max_retries: many }\nlisten:"}, FieldError{"dpop.max_retries", `"many" is not an integer`}},
		{"list expected", [2]string{`redirect_uris: ["http://127.0.0.1:8082/callback"]`, `redirect_uris: "http://x/cb"`}, FieldError{"clients[0].redirect_uris", "must be a list"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(strings.Replace(goodYAML, tc.replace[0], tc.replace[1], 1)))
			fe, ok := err.(FieldErrors)
			if !ok || !slices.Contains(fe, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("env default syntax", func(t *testing.T) {
		cfg, err := Parse([]byte(strings.Replace(goodYAML, "${TEST_SAMPLE_SECRET}", "${TEST_UNSET_VAR_XYZ:-fallback}", 1)))
		if err != nil || cfg.Clients[0].ClientSecret != "fallback" {
			t.Fatalf("%v %v", err, cfg)
		}
	})
}

func TestValidate(t *testing.T) {
	setKeyEnv(t)
	for _, tc := range []struct {
		name string
		mut  func(c *Config)
		want FieldError
	}{
		{"issuer with query", func(c *Config) { c.Issuer = "https://b.example/?x=1" }, FieldError{"issuer", `"https://b.example/?x=1" must not contain a query`}},
		{"issuer with fragment", func(c *Config) { c.Issuer = "https://b.example/#f" }, FieldError{"issuer", `"https://b.example/#f" must not contain a fragment`}},
		{"issuer not absolute", func(c *Config) { c.Issuer = "b.example" }, FieldError{"issuer", `"b.example" must be an absolute http or https URL`}},
		{"issuer missing", func(c *Config) { c.Issuer = "" }, FieldError{"issuer", "is required"}},
		{"listen", func(c *Config) { c.Listen = "8080" }, FieldError{"listen", `"8080" must be HOST:PORT (address 8080: missing port in address)`}},
		{"store type", func(c *Config) { c.Store.Type = "etcd" }, FieldError{"store.type", `"etcd" is not supported (use memory or redis)`}},
		{"redis without addrs", func(c *Config) { c.Store.Type = "redis" }, FieldError{"store.redis.addrs", "at least one address is required for store type redis"}},
		{"redis bad addr", func(c *Config) { c.Store.Type = "redis"; c.Store.Redis.Addrs = []string{"a:1", "nohost"} }, FieldError{"store.redis.addrs[1]", `"nohost" must be HOST:PORT`}},
		{"duplicate client id", func(c *Config) { c.Clients = append(c.Clients, c.Clients[0]) }, FieldError{"clients[1].client_id", `duplicate client_id "sample-app" (also clients[0])`}},
		{"redirect uri relative", func(c *Config) { c.Clients[0].RedirectURIs = []string{"/cb"} }, FieldError{"clients[0].redirect_uris[0]", `"/cb" must be an absolute URI`}},
		{"redirect uri fragment", func(c *Config) { c.Clients[0].RedirectURIs = []string{"https://a/cb#x"} }, FieldError{"clients[0].redirect_uris[0]", `"https://a/cb#x" must not contain a fragment`}},
		{"post-logout redirect uri relative", func(c *Config) { c.Clients[0].PostLogoutRedirectURIs = []string{"/bye"} }, FieldError{"clients[0].post_logout_redirect_uris[0]", `"/bye" must be an absolute URI`}},
		{"client connection undefined", func(c *Config) { c.Clients[0].Connections = []string{"nope"} }, FieldError{"clients[0].connections[0]", `connection "nope" is not defined in connections`}},
		{"confidential without secret", func(c *Config) {
			c.Clients[0].ClientSecret = ""
			c.Clients[0].TokenEndpointAuthMethod = "client_secret_post"
		}, FieldError{"clients[0].client_secret", "is required for token_endpoint_auth_method client_secret_post"}},
		{"bad auth method", func(c *Config) { c.Clients[0].TokenEndpointAuthMethod = "private_key_jwt" }, FieldError{"clients[0].token_endpoint_auth_method", `"private_key_jwt" is not supported (use client_secret_basic, client_secret_post or none)`}},
		{"duplicate connection name", func(c *Config) { c.Connections = append(c.Connections, c.Connections[0]) }, FieldError{"connections[1].name", `duplicate connection name "corp-oidc" (also connections[0])`}},
		{"strategy", func(c *Config) { c.Connections[0].Strategy = "saml" }, FieldError{"connections[0].strategy", `"saml" is not supported (use oidc or okta)`}},
		{"no issuer nor discovery", func(c *Config) { c.Connections[0].Options.Issuer = "" }, FieldError{"connections[0].options.issuer", "issuer or discovery_url is required"}},
		{"connection issuer over plain http off loopback", func(c *Config) { c.Connections[0].Options.Issuer = "http://idp.example" },
			FieldError{"connections[0].options.issuer", `"http://idp.example" must use https (http only for loopback hosts)`}},
		{"connection discovery_url over plain http off loopback", func(c *Config) {
			c.Connections[0].Options.DiscoveryURL = "http://idp.example/.well-known/openid-configuration"
		}, FieldError{"connections[0].options.discovery_url", `"http://idp.example/.well-known/openid-configuration" must use https (http only for loopback hosts)`}},
		{"okta needs domain", func(c *Config) { c.Connections[0].Strategy = "okta"; c.Connections[0].Options.Issuer = "" }, FieldError{"connections[0].options.domain", "domain, issuer or discovery_url is required"}},
		{"front channel", func(c *Config) { c.Connections[0].Options.Type = "front_channel" }, FieldError{"connections[0].options.type", `"front_channel" is not supported (only back_channel, which DPoP requires: dpop_signing_alg is set)`}},
		{"front channel without DPoP", func(c *Config) {
			c.Connections[0].Options.Type = "front_channel"
			c.Connections[0].Options.DPoPSigningAlg = ""
		}, FieldError{"connections[0].options.type", `"front_channel" is not supported (only back_channel)`}},
		{"B1 token vault with DPoP", func(c *Config) { c.Connections[0].Options.TokenVault = &Activity{Active: true} },
			FieldError{"connections[0].options.federated_connections_access_tokens.active", "Token Vault is not compatible with DPoP: set active to false or remove dpop_signing_alg"}},
		{"B1 offline_access upstream param with DPoP", func(c *Config) { c.Connections[0].Options.UpstreamParams = ParamMap{"offline_access": "true"} },
			FieldError{"connections[0].options.upstream_params.offline_access", `"true" enables Token Vault (offline access at the upstream), which is not compatible with DPoP: remove it or remove dpop_signing_alg`}},
		{"enabled_clients names an unknown client", func(c *Config) { c.Connections[0].EnabledClients = []string{"nope"} },
			FieldError{"connections[0].enabled_clients[0]", `client "nope" is not defined in clients`}},
		{"management token too short", func(c *Config) {
			c.Management.Tokens = []ManagementToken{{Token: "short", Scopes: []string{"read:logs"}}}
		}, FieldError{"management.tokens[0].token", "must be at least 32 characters (got 5); generate one with: openssl rand -base64 32"}},
		{"management unknown scope", func(c *Config) {
			c.Management.Tokens = []ManagementToken{{Token: strings.Repeat("x", 32), Scopes: []string{"write:everything"}}}
		}, FieldError{"management.tokens[0].scopes[0]", `"write:everything" is not a known scope (use read:connections, create:connections, update:connections, delete:connections or read:logs)`}},
		{"logs max_age", func(c *Config) { c.Logs.MaxAge = 0 }, FieldError{"logs.max_age", "must be a positive duration such as 720h"}},
		{"logs admin max_events", func(c *Config) { c.Logs.Admin.MaxEvents = 0 }, FieldError{"logs.admin.max_events", "must be between 1 and 10000000"}},
		{"logs admin max_age", func(c *Config) { c.Logs.Admin.MaxAge = -time.Hour }, FieldError{"logs.admin.max_age", "must be a positive duration such as 8760h"}},
		{"dpop alg", func(c *Config) { c.Connections[0].Options.DPoPSigningAlg = "ES512" }, FieldError{"connections[0].options.dpop_signing_alg", `"ES512" is not supported (use ES256, Ed25519, RS256 or PS256)`}},
		{"dpop key missing for alg", func(c *Config) { c.Connections[0].Options.DPoPSigningAlg = "Ed25519" }, FieldError{"keys.dpop.ed25519", "a private key is required because connections[0] (corp-oidc) uses dpop_signing_alg Ed25519"}},
		{"dpop key wrong type", func(c *Config) { c.Keys.DPoP.ES256.PrivateKeyEnv = "TEST_BROKER_SIGNING_KEY" }, FieldError{"keys.dpop.es256.private_key_env", "the key does not fit alg ES256"}},
		{"signing key env unset", func(c *Config) { c.Keys.Signing.PrivateKeyEnv = "TEST_NOT_SET_KEY" }, FieldError{"keys.signing.private_key_env", "environment variable TEST_NOT_SET_KEY is not set"}},
		{"signing alg", func(c *Config) { c.Keys.Signing.Alg = "HS256" }, FieldError{"keys.signing.alg", `"HS256" is not supported (use RS256 or ES256)`}},
		{"previous signing key is the current one", func(c *Config) {
			c.Keys.PreviousSigning = []SigningKeyConfig{{Alg: "RS256", KeySource: KeySource{PrivateKeyEnv: "TEST_BROKER_SIGNING_KEY"}}}
		}, FieldError{"keys.previous_signing[0]", "the same key as keys.signing"}},
		{"previous signing alg", func(c *Config) { c.Keys.PreviousSigning = []SigningKeyConfig{{Alg: "HS256"}} },
			FieldError{"keys.previous_signing[0].alg", `"HS256" is not supported (use RS256 or ES256)`}},
		{"previous signing key of another type", func(c *Config) {
			c.Keys.PreviousSigning = []SigningKeyConfig{{Alg: "RS256", KeySource: KeySource{PrivateKeyEnv: "TEST_BROKER_DPOP_KEY"}}}
		}, FieldError{"keys.previous_signing[0].private_key_env", "the key does not fit alg RS256"}},
		{"lifetime", func(c *Config) { c.Lifetimes.Code = 0 }, FieldError{"lifetimes.code", "must be a positive duration"}},
		{"negative jitter", func(c *Config) { c.DPoP.Jitter = -time.Second }, FieldError{"dpop.jitter", "must not be negative"}},
		{"max retries", func(c *Config) { c.DPoP.MaxRetries = 6 }, FieldError{"dpop.max_retries", "6 is out of range (0 to 5)"}},
		{"scope without openid", func(c *Config) { c.Connections[0].Options.Scope = "profile" }, FieldError{"connections[0].options.scope", `"profile" must include openid`}},
		{"reserved upstream param", func(c *Config) { c.Connections[0].Options.UpstreamParams = map[string]string{"state": "x"} }, FieldError{"connections[0].options.upstream_params.state", "is set by the broker and cannot be overridden"}},
		{"bad connection id", func(c *Config) { c.Connections[0].ID = "abc" }, FieldError{"connections[0].id", `"abc" must be con_ followed by letters and digits`}},
		{"refresh lifetime", func(c *Config) { c.Lifetimes.RefreshToken = 0 }, FieldError{"lifetimes.refresh_token", "must be a positive duration"}},
		{"api audience missing", func(c *Config) { c.APIs = []APIConfig{{Name: "x"}} }, FieldError{"apis[0].audience", "is required"}},
		{"api audience with space", func(c *Config) { c.APIs = []APIConfig{{Audience: "a b"}} }, FieldError{"apis[0].audience", "must be 1 to 600 visible ASCII characters"}},
		{"api audience duplicate", func(c *Config) { c.APIs = []APIConfig{{Audience: "https://api"}, {Audience: "https://api"}} }, FieldError{"apis[1].audience", `duplicate audience "https://api" (also apis[0])`}},
		{"api audience is userinfo", func(c *Config) { c.APIs = []APIConfig{{Audience: "http://127.0.0.1:8080/userinfo"}} }, FieldError{"apis[0].audience", `"http://127.0.0.1:8080/userinfo" is the broker's userinfo audience and cannot be configured as an API`}},
		{"api policy", func(c *Config) { c.APIs = []APIConfig{{Audience: "https://api", SenderConstraining: "mtls"}} }, FieldError{"apis[0].sender_constraining", `"mtls" is not supported (use none, allowed or required)`}},
		{"api required_for", func(c *Config) {
			c.APIs = []APIConfig{{Audience: "https://api", SenderConstraining: PolicyRequired, RequiredFor: "confidential_clients"}}
		}, FieldError{"apis[0].required_for", `"confidential_clients" is not supported (use all_clients or public_clients)`}},
		{"api required_for without required", func(c *Config) {
			c.APIs = []APIConfig{{Audience: "https://api", SenderConstraining: PolicyAllowed, RequiredFor: RequiredForPublic}}
		}, FieldError{"apis[0].required_for", `public_clients only applies with sender_constraining: required (it is "allowed")`}},
		{"DS-16 nonce secret required", func(c *Config) { c.DPoPServer.RequireNonce = true }, FieldError{"dpop_server.nonce_secret", "is required when require_nonce is true (at least 32 bytes, the same on every replica)"}},
		{"DS-16 nonce secret short", func(c *Config) { c.DPoPServer.NonceSecret = "short" }, FieldError{"dpop_server.nonce_secret", "must be at least 32 bytes (got 5)"}},
		{"nonce period", func(c *Config) { c.DPoPServer.NoncePeriod = 0 }, FieldError{"dpop_server.nonce_period", "must be a positive duration"}},
		{"DS-14 max age", func(c *Config) { c.DPoPServer.MaxAge = 2 * time.Hour }, FieldError{"dpop_server.max_age", "2h0m0s is out of range (more than 0s, at most 1h)"}},
		{"DS-14 max future", func(c *Config) { c.DPoPServer.MaxFuture = -time.Second }, FieldError{"dpop_server.max_future", "-1s is out of range (0s to 5m)"}},
		{"DS-5 alg none", func(c *Config) { c.DPoPServer.Algs = []string{"ES256", "none"} }, FieldError{"dpop_server.algs[1]", `"none" is not supported (use ES256, ES384, ES512, EdDSA, Ed25519, RS256 or PS256)`}},
		{"DS-5 symmetric alg", func(c *Config) { c.DPoPServer.Algs = []string{"HS256"} }, FieldError{"dpop_server.algs[0]", `"HS256" is not supported (use ES256, ES384, ES512, EdDSA, Ed25519, RS256 or PS256)`}},
		{"DS-5 duplicate alg", func(c *Config) { c.DPoPServer.Algs = []string{"ES256", "ES256"} }, FieldError{"dpop_server.algs[1]", `duplicate algorithm "ES256"`}},
		{"DS-5 no algs", func(c *Config) { c.DPoPServer.Algs = nil }, FieldError{"dpop_server.algs", "at least one algorithm is required"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(goodYAML))
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
	setKeyEnv(t)
	t.Setenv("TEST_NONCE_SECRET", strings.Repeat("n", 32))
	yml := goodYAML + `
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
	if !c.RequireSenderConstraining || !c.DPoPBoundAccessTokens || !c.requiresPoP() || c.AllowedOrigins[0] != "https://spa.example.com" {
		t.Errorf("client = %+v", c)
	}
	if len(cfg.APIs) != 2 || cfg.APIs[0].SenderConstraining != PolicyRequired || cfg.APIs[1].SenderConstraining != PolicyNone {
		t.Errorf("apis = %+v (the policy defaults to none)", cfg.APIs)
	}
	def := Default().DPoPServer
	if def.MaxAge != 300*time.Second || def.MaxFuture != 30*time.Second || !slices.Equal(def.Algs, []string{"ES256", "EdDSA", "Ed25519", "RS256", "PS256"}) || def.RequireNonce {
		t.Errorf("defaults = %+v (DS-14)", def)
	}
	_, err = Parse([]byte(goodYAML + "dpop_server: { require_nonce: maybe }\n"))
	if fe, ok := err.(FieldErrors); !ok || !slices.Contains(fe, FieldError{"dpop_server.require_nonce", `"maybe" is not a boolean (use true or false)`}) {
		t.Errorf("bad bool: %v", err)
	}
}

func TestKeyFileErrors(t *testing.T) {
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
