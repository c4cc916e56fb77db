package config

import (
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/config/configtest"
	"github.com/dpop-broker/dpop-broker/dpop"
)

func TestConnectionClientAuthenticationValidation(t *testing.T) {
	pkj := func(alg string) func(*Config) {
		return func(c *Config) {
			o := &c.Connections[0].Options
			o.TokenEndpointAuthMethod, o.TokenEndpointAuthSigningAlg, o.ClientSecret = AuthPrivateKeyJWT, alg, ""
		}
	}
	clientAuthPEM := testKeyPEM(t, "ES256")
	esKey := func(c *Config) {
		c.Keys.ClientAuth = []SigningKey{{Alg: "ES256", KeySource: KeySource{PrivateKeyEnv: "TEST_BROKER_CLIENT_AUTH_KEY"}}}
	}
	tests := []struct {
		name string
		mut  func(*Config)
		want FieldError
	}{
		{name: "unknown method", mut: func(c *Config) { c.Connections[0].Options.TokenEndpointAuthMethod = "client_secret_jwt" },
			want: FieldError{"connections[0].options.token_endpoint_auth_method", `"client_secret_jwt" is not supported (use client_secret_basic, client_secret_post or private_key_jwt)`}},
		{name: "assertion alg with a secret method", mut: func(c *Config) { c.Connections[0].Options.TokenEndpointAuthSigningAlg = "RS256" },
			want: FieldError{"connections[0].options.token_endpoint_auth_signing_alg", "applies to token_endpoint_auth_method private_key_jwt only"}},
		{name: "client_secret_post without a secret", mut: func(c *Config) {
			c.Connections[0].Options.TokenEndpointAuthMethod, c.Connections[0].Options.ClientSecret = AuthSecretPost, ""
		}, want: FieldError{"connections[0].options.client_secret", "is required (back-channel code exchange with token_endpoint_auth_method client_secret_post)"}},
		{name: "private_key_jwt with a symmetric alg", mut: func(c *Config) { pkj("HS256")(c); esKey(c) },
			want: FieldError{"connections[0].options.token_endpoint_auth_signing_alg", `"HS256" is not supported (use RS256, ES256 or PS256)`}},
		{name: "private_key_jwt with a client_secret", mut: func(c *Config) {
			pkj("ES256")(c)
			esKey(c)
			c.Connections[0].Options.ClientSecret = "left-over"
		}, want: FieldError{"connections[0].options.client_secret", "must not be set with token_endpoint_auth_method private_key_jwt: the broker authenticates with a signed assertion (RFC 7523 §2.2) and never sends the secret; remove it"}},
		{name: "private_key_jwt without a key for its alg", mut: pkj("ES256"),
			want: FieldError{"keys.client_auth", "a key with alg ES256 is required because connections[0] (corp-oidc) uses token_endpoint_auth_method private_key_jwt with ES256"}},
		{name: "private_key_jwt defaults to RS256", mut: func(c *Config) { pkj("")(c); esKey(c) },
			want: FieldError{"keys.client_auth", "a key with alg RS256 is required because connections[0] (corp-oidc) uses token_endpoint_auth_method private_key_jwt with RS256"}},
		{name: "two current keys for one alg", mut: func(c *Config) {
			esKey(c)
			c.Keys.ClientAuth = append(c.Keys.ClientAuth, c.Keys.ClientAuth[0])
		}, want: FieldError{"keys.client_auth[1].alg", "a key for ES256 is already configured (keys.client_auth[0]); one per alg, a replaced one goes to keys.previous_client_auth"}},
		{name: "unsupported key alg", mut: func(c *Config) {
			c.Keys.ClientAuth = []SigningKey{{Alg: "EdDSA", KeySource: KeySource{PrivateKeyEnv: "TEST_BROKER_DPOP_KEY"}}}
		}, want: FieldError{"keys.client_auth[0].alg", `"EdDSA" is not supported (use RS256, ES256 or PS256)`}},
		{name: "the token-signing key is refused", mut: func(c *Config) {
			c.Keys.ClientAuth = []SigningKey{{Alg: "RS256", KeySource: KeySource{PrivateKeyEnv: "TEST_BROKER_SIGNING_KEY"}}}
		}, want: FieldError{"keys.client_auth[0].private_key_env", "it is the token-signing key (keys.signing); use a key of its own"}},
		{name: "a replaced token-signing key is refused", mut: func(c *Config) {
			esKey(c)
			c.Keys.PreviousSigning = []SigningKey{
				{Alg: "RS256", KeySource: KeySource{PrivateKeyEnv: "TEST_BROKER_PREVIOUS_SIGNING_KEY"}},
				c.Keys.ClientAuth[0],
			}
		}, want: FieldError{"keys.client_auth[0].private_key_env", "it is a replaced token-signing key (keys.previous_signing[1]); use a key of its own"}},
		{name: "a previous client-authentication key that is a replaced token-signing key is refused", mut: func(c *Config) {
			c.Keys.PreviousSigning = []SigningKey{{Alg: "ES256", KeySource: KeySource{PrivateKeyEnv: "TEST_BROKER_CLIENT_AUTH_KEY"}}}
			c.Keys.PreviousClientAuth = c.Keys.PreviousSigning
		}, want: FieldError{"keys.previous_client_auth[0].private_key_env", "it is a replaced token-signing key (keys.previous_signing[0]); use a key of its own"}},
		{name: "the DPoP key is refused", mut: func(c *Config) {
			c.Keys.ClientAuth = []SigningKey{{Alg: "ES256", KeySource: KeySource{PrivateKeyEnv: "TEST_BROKER_DPOP_KEY"}}}
		}, want: FieldError{"keys.client_auth[0].private_key_env", "it is the DPoP key keys.dpop.es256; use a key of its own"}},
		{name: "an RSA DPoP key is refused for PS256", mut: func(c *Config) {
			c.Keys.DPoP.RSA = KeySource{PrivateKeyEnv: "TEST_BROKER_PREVIOUS_SIGNING_KEY"}
			c.Keys.PreviousClientAuth = []SigningKey{{Alg: "PS256", KeySource: c.Keys.DPoP.RSA}}
		}, want: FieldError{"keys.previous_client_auth[0].private_key_env", "it is the DPoP key keys.dpop.rsa; use a key of its own"}},
		{name: "a key that does not fit its alg", mut: func(c *Config) {
			c.Keys.ClientAuth = []SigningKey{{Alg: "PS256", KeySource: KeySource{PrivateKeyEnv: "TEST_BROKER_DPOP_KEY"}}}
		}, want: FieldError{"keys.client_auth[0].private_key_env", "the key does not fit alg PS256"}},
		{name: "the same key current and previous", mut: func(c *Config) {
			esKey(c)
			c.Keys.PreviousClientAuth = c.Keys.ClientAuth
		}, want: FieldError{"keys.previous_client_auth[0].private_key_env", "the same key is listed twice (one key per alg; RS256 and PS256 need keys of their own)"}},
	}
	previousSigningPEM := testRSAPEM(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("TEST_BROKER_CLIENT_AUTH_KEY", clientAuthPEM)
			t.Setenv("TEST_BROKER_PREVIOUS_SIGNING_KEY", previousSigningPEM)
			wantOnlyError(t, tc.mut, tc.want)
		})
	}
}

func TestLoadKeysRefusesAClientAuthKeyThatSignsAnythingElse(t *testing.T) {
	previousSigningPEM := testRSAPEM(t)
	tests := []struct {
		name string
		mut  func(*Config)
		want string
	}{
		{name: "the token-signing key", mut: func(c *Config) {
			c.Keys.ClientAuth = []SigningKey{{Alg: "RS256", KeySource: c.Keys.Signing.KeySource}}
		}, want: "keys.client_auth[0]: it is the token-signing key (keys.signing); use a key of its own"},
		{name: "a replaced token-signing key", mut: func(c *Config) {
			c.Keys.PreviousSigning = []SigningKey{{Alg: "RS256", KeySource: KeySource{PrivateKeyEnv: "TEST_BROKER_PREVIOUS_SIGNING_KEY"}}}
			c.Keys.PreviousClientAuth = []SigningKey{{Alg: "PS256", KeySource: c.Keys.PreviousSigning[0].KeySource}}
		}, want: "keys.previous_client_auth[0]: it is a replaced token-signing key (keys.previous_signing[0]); use a key of its own"},
		{name: "the DPoP key", mut: func(c *Config) {
			c.Keys.ClientAuth = []SigningKey{{Alg: "ES256", KeySource: c.Keys.DPoP.ES256}}
		}, want: "keys.client_auth[0]: it is the DPoP key keys.dpop.es256; use a key of its own"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			configtest.SetEnv(t)
			t.Setenv("TEST_BROKER_PREVIOUS_SIGNING_KEY", previousSigningPEM)
			cfg, err := Parse([]byte(configtest.ValidYAML))
			if err != nil {
				t.Fatal(err)
			}
			tc.mut(cfg)
			if k, err := LoadKeys(cfg, false); err == nil || err.Error() != tc.want {
				t.Fatalf("LoadKeys = %v, %v; want the error %q", k != nil, err, tc.want)
			}
		})
	}
}

func TestClientAuthKeysArePublishedCurrentThenPrevious(t *testing.T) {
	configtest.SetEnv(t)
	cfg, err := Parse([]byte(strings.Replace(configtest.ValidYAML, "      client_secret: s3cret\n", "", 1) + `
      token_endpoint_auth_method: private_key_jwt
      token_endpoint_auth_signing_alg: ES256
      use_par: true
`))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Keys.PreviousClientAuth = []SigningKey{{Alg: "RS256", KeySource: KeySource{PrivateKeyEnv: "TEST_BROKER_PREVIOUS_CLIENT_AUTH"}}}
	cfg.Keys.ClientAuth = []SigningKey{{Alg: "ES256", KeySource: KeySource{PrivateKeyEnv: "TEST_BROKER_CLIENT_AUTH_KEY"}}}
	t.Setenv("TEST_BROKER_PREVIOUS_CLIENT_AUTH", testRSAPEM(t))
	t.Setenv("TEST_BROKER_CLIENT_AUTH_KEY", testKeyPEM(t, "ES256"))
	if errs := cfg.Validate(); len(errs) > 0 {
		t.Fatalf("Validate: %v", FieldErrors(errs))
	}
	if o := cfg.Connections[0].Options; !o.UsePAR || o.ClientAuthAlg() != "ES256" {
		t.Fatalf("options %+v: use_par and private_key_jwt ES256 not read", o)
	}
	k, err := LoadKeys(cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	set := k.ClientAuthJWKS()
	if len(set.Keys) != 2 || set.Keys[0].Algorithm != "ES256" || set.Keys[1].Algorithm != "RS256" {
		t.Fatalf("client-auth JWKS %+v, want the ES256 key then the previous RS256 one", set.Keys)
	}
	for _, key := range set.Keys {
		if !key.IsPublic() || key.Use != "sig" || key.KeyID == "" {
			t.Errorf("published key %+v: want a public signature key with a kid", key)
		}
	}
	if len(k.ClientAuth) != 1 || k.ClientAuth[0].KID != set.Keys[0].KeyID {
		t.Errorf("current client-auth keys %+v, want the ES256 one only", k.ClientAuth)
	}
}

// testRSAPEM returns a new RSA private key as PEM.
func testRSAPEM(t *testing.T) string {
	t.Helper()
	return testKeyPEM(t, "RS256")
}

// testKeyPEM returns a new private key for alg as PEM.
func testKeyPEM(t *testing.T, alg string) string {
	t.Helper()
	k, err := dpop.GenerateKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := dpop.MarshalPrivateKeyPEM(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem)
}
