package upstream

import (
	"context"
	"crypto"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
)

// assertionKeys returns the client-authentication keys of the tests (the package's test keys)
// and registers their public keys at f.
func assertionKeys(t testing.TB, f *fakeIdP) map[string]AssertionKey {
	t.Helper()
	signers(t) // generates testKeys
	out := map[string]AssertionKey{}
	f.assertionKeys = map[string]crypto.PublicKey{}
	for _, alg := range ClientAuthAlgs {
		k := testKeys[alg]
		tp, err := (&jose.JSONWebKey{Key: k.Public()}).Thumbprint(crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		kid := alg + "-" + base64.RawURLEncoding.EncodeToString(tp)
		out[alg] = AssertionKey{Key: k, KID: kid}
		f.assertionKeys[kid] = k.Public()
	}
	return out
}

func TestClientAuthenticationMethods(t *testing.T) {
	tests := []struct {
		name          string
		advertised    []string // token_endpoint_auth_methods_supported
		signingAlgs   []string // token_endpoint_auth_signing_alg_values_supported
		method, alg   string
		dpopNonce     bool
		wantCode      string // Begin refuses with this code, nothing sent to the token endpoint
		wantMethod    string
		wantBasic     bool
		wantPostedSec bool
		wantAssertAlg string
	}{
		{name: "discovery default picks client_secret_basic", advertised: []string{"client_secret_basic", "client_secret_post"}, wantMethod: "client_secret_basic", wantBasic: true},
		{name: "client_secret_post when configured although basic is listed", advertised: []string{"client_secret_basic", "client_secret_post"}, method: "client_secret_post", wantMethod: "client_secret_post", wantPostedSec: true},
		{name: "private_key_jwt RS256 by default", advertised: []string{"private_key_jwt"}, method: "private_key_jwt", wantMethod: "private_key_jwt", wantAssertAlg: "RS256"},
		{name: "private_key_jwt ES256 with DPoP nonce retry signs a fresh assertion per attempt", advertised: []string{"private_key_jwt"}, signingAlgs: []string{"ES256"}, method: "private_key_jwt", alg: "ES256", dpopNonce: true, wantMethod: "private_key_jwt", wantAssertAlg: "ES256"},
		{name: "private_key_jwt PS256", advertised: []string{"private_key_jwt", "client_secret_basic"}, method: "private_key_jwt", alg: "PS256", wantMethod: "private_key_jwt", wantAssertAlg: "PS256"},
		{name: "configured method not listed is refused", advertised: []string{"client_secret_basic"}, method: "client_secret_post", wantCode: CodeClientAuthUnsupported},
		{name: "private_key_jwt refused when the list is absent (basic only by default)", method: "private_key_jwt", wantCode: CodeClientAuthUnsupported},
		{name: "private_key_jwt alg not listed is refused", advertised: []string{"private_key_jwt"}, signingAlgs: []string{"ES256"}, method: "private_key_jwt", alg: "PS256", wantCode: CodeClientAuthUnsupported},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeIdP(t, func(f *fakeIdP) {
				f.authMethods, f.authSigningAlgs, f.requireNonce = tc.advertised, tc.signingAlgs, tc.dpopNonce
			})
			keys := assertionKeys(t, f)
			c := newConn(t, f, func(c *Config) {
				c.TokenEndpointAuthMethod, c.TokenEndpointAuthSigningAlg = tc.method, tc.alg
			}, func(o *Options) { o.ClientAuthKeys = keys })
			st, err := c.Begin(context.Background(), redirectURI)
			if tc.wantCode != "" {
				if CodeOf(err) != tc.wantCode {
					t.Fatalf("Begin error %v, want code %s", err, tc.wantCode)
				}
				if f.tokenHits.Load() != 0 {
					t.Fatal("the token endpoint was called although the method is refused")
				}
				return
			}
			if err != nil {
				t.Fatalf("Begin: %v", err)
			}
			res, err := c.Finish(context.Background(), st, redirectURI, f.authorize(t, st.AuthURL))
			if err != nil {
				t.Fatalf("Finish: %v", err)
			}
			if res.ClientAuthMethod != tc.wantMethod {
				t.Errorf("ClientAuthMethod %q, want %q", res.ClientAuthMethod, tc.wantMethod)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.lastBasicOK != tc.wantBasic {
				t.Errorf("Basic authentication used: %t, want %t", f.lastBasicOK, tc.wantBasic)
			}
			if got := f.lastForm.Get("client_secret") != ""; got != tc.wantPostedSec {
				t.Errorf("client_secret in the body: %t, want %t", got, tc.wantPostedSec)
			}
			if tc.wantAssertAlg == "" {
				if len(f.assertions) != 0 {
					t.Errorf("%d client assertions sent, want none", len(f.assertions))
				}
				return
			}
			wantN := 1
			if tc.dpopNonce {
				wantN = 2 // the use_dpop_nonce challenge and the retry
			}
			if len(f.assertions) != wantN {
				t.Fatalf("%d client assertions verified, want %d (each attempt with its own)", len(f.assertions), wantN)
			}
			for _, a := range f.assertions {
				if a.alg != tc.wantAssertAlg || !strings.HasPrefix(a.kid, tc.wantAssertAlg+"-") {
					t.Errorf("assertion alg %s kid %s, want alg %s", a.alg, a.kid, tc.wantAssertAlg)
				}
				if a.claims["aud"] != f.issuer+"/token" {
					t.Errorf("assertion aud %v, want the token endpoint", a.claims["aud"])
				}
				iat, _ := a.claims["iat"].(float64)
				exp, _ := a.claims["exp"].(float64)
				if exp <= iat || exp-iat > 60 {
					t.Errorf("assertion lifetime %v s, want at most 60", exp-iat)
				}
			}
			if tc.dpopNonce && len(f.proofs) != 2 {
				t.Errorf("%d DPoP proofs at the token endpoint, want 2", len(f.proofs))
			}
		})
	}
}

func TestPrivateKeyJWTNeedsAKeyForItsAlg(t *testing.T) {
	_, err := New(Config{Issuer: "https://idp.example", ClientID: "c", TokenEndpointAuthMethod: "private_key_jwt", TokenEndpointAuthSigningAlg: "ES256"}, Options{})
	if err == nil || !strings.Contains(err.Error(), "no client-authentication key configured for ES256") {
		t.Fatalf("New error %v, want a missing key", err)
	}
	for _, cfg := range []Config{
		{Issuer: "https://idp.example", ClientID: "c", TokenEndpointAuthMethod: "client_secret_jwt"},
		{Issuer: "https://idp.example", ClientID: "c", TokenEndpointAuthMethod: "private_key_jwt", TokenEndpointAuthSigningAlg: "HS256"},
		{Issuer: "https://idp.example", ClientID: "c", TokenEndpointAuthSigningAlg: "RS256"},
	} {
		if _, err := New(cfg, Options{}); err == nil {
			t.Errorf("New(%s/%s) accepted", cfg.TokenEndpointAuthMethod, cfg.TokenEndpointAuthSigningAlg)
		}
	}
}
