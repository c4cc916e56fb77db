package interop

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// TestPeersSelfCheck proves the oidc-provider modes behave as the broker scenarios assume, with
// openid-client (DPoP key) talking to oidc-provider directly, no broker involved: a failure here
// is a peer or npm problem, not a broker bug.
func TestPeersSelfCheck(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		mode      string
		wantAlgs  []string // dpop_signing_alg_values_supported; nil = absent
		wantLogin bool     // the login reaches the token endpoint and succeeds with a DPoP token
		wantStats func(upstreamStats) string
		rpAlg     string // rp.mjs --dpop-alg; default ES256
	}{
		{name: "nonce mode: one use_dpop_nonce challenge then a DPoP token", mode: "nonce", wantAlgs: []string{"ES256", "Ed25519", "EdDSA"}, wantLogin: true,
			wantStats: func(s upstreamStats) string {
				if s.NonceChallenges != 1 || s.TokenRequests != 2 || !slices.Equal(s.TokenTypes, []string{"DPoP"}) {
					return "want 1 nonce challenge, 2 token requests, token type DPoP"
				}
				return ""
			}, rpAlg: ""},
		{name: "dpop mode: DPoP token without nonce", mode: "dpop", wantAlgs: []string{"ES256", "Ed25519", "EdDSA"}, wantLogin: true,
			wantStats: func(s upstreamStats) string {
				if s.NonceChallenges != 0 || s.TokenRequests != 1 || !slices.Equal(s.TokenTypes, []string{"DPoP"}) {
					return "want 0 nonce challenges, 1 token request, token type DPoP"
				}
				return ""
			}, rpAlg: ""},
		{name: "bearer mode: advertises ES256, proof sent, answers Bearer", mode: "bearer", wantAlgs: []string{"ES256"}, wantLogin: false,
			wantStats: func(s upstreamStats) string {
				if s.TokenRequests != 1 || s.DPoPProofs != 1 || !slices.Equal(s.TokenTypes, []string{"Bearer"}) {
					return "want 1 token request carrying a proof, token type Bearer"
				}
				return ""
			}, rpAlg: ""},
		{name: "nodpop mode: no dpop_signing_alg_values_supported", mode: "nodpop", wantAlgs: nil, wantLogin: false, wantStats: nil, rpAlg: ""},
		{name: "okta mode: mounted at /oauth2/default, /v1 endpoints, nonce on the first token request", mode: "okta", wantAlgs: []string{"ES256", "Ed25519", "EdDSA"}, wantLogin: true,
			wantStats: func(s upstreamStats) string {
				if s.NonceChallenges != 1 || s.TokenRequests != 2 || s.UserinfoRequests < 1 || !slices.Equal(s.TokenTypes, []string{"DPoP"}) {
					return "want 1 nonce challenge, 2 token requests, a userinfo call, token type DPoP"
				}
				return ""
			}, rpAlg: ""},
		{name: "rsaonly mode: RS256 only, accepts an RS256 proof", mode: "rsaonly", wantAlgs: []string{"RS256"}, wantLogin: true,
			wantStats: func(s upstreamStats) string {
				if s.TokenRequests != 1 || s.DPoPProofs != 1 || !slices.Equal(s.TokenTypes, []string{"DPoP"}) {
					return "want 1 token request with an RS256 proof, token type DPoP"
				}
				return ""
			}, rpAlg: "RS256"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			needNode(t)
			rpSock := listenSocket(t)
			_, upstreamURL := startUpstream(t, "--port", "0", "--mode", tc.mode,
				"--client-id", "broker", "--client-secret", "selfcheck-secret",
				"--redirect-uri", rpSock.URL+"/callback")

			c := browserClient(t)
			status, disco, raw := getJSON(t, c, upstreamURL+"/.well-known/openid-configuration")
			if status != http.StatusOK {
				t.Fatalf("discovery: %d %s", status, raw)
			}
			algs, present := disco["dpop_signing_alg_values_supported"].([]any)
			var got []string
			for _, a := range algs {
				got = append(got, fmt.Sprint(a))
			}
			if present != (tc.wantAlgs != nil) || !slices.Equal(got, tc.wantAlgs) {
				t.Fatalf("dpop_signing_alg_values_supported = %v (present %v), want %v", got, present, tc.wantAlgs)
			}
			if tc.mode == "okta" {
				for k, want := range map[string]string{"issuer": "", "authorization_endpoint": "/v1/authorize",
					"token_endpoint": "/v1/token", "userinfo_endpoint": "/v1/userinfo", "jwks_uri": "/v1/keys"} {
					if got := fmt.Sprint(disco[k]); got != upstreamURL+want || !strings.HasSuffix(upstreamURL, "/oauth2/default") {
						t.Errorf("okta discovery %s = %s, want %s%s under /oauth2/default", k, got, upstreamURL, want)
					}
				}
			}
			if disco["authorization_response_iss_parameter_supported"] != true {
				t.Errorf("authorization_response_iss_parameter_supported = %v, want true", disco["authorization_response_iss_parameter_supported"])
			}
			if tc.wantStats == nil {
				return
			}

			rpAlg := tc.rpAlg
			if rpAlg == "" {
				rpAlg = "ES256"
			}
			_, rpURL := startNodeOn(t, rpSock, "rp.mjs", "--issuer", upstreamURL,
				"--client-id", "broker", "--client-secret", "selfcheck-secret", "--dpop", "--dpop-alg", rpAlg)
			status, body, raw := getJSON(t, c, rpURL+"/login")
			switch {
			case tc.wantLogin && status != http.StatusOK:
				t.Fatalf("login: %d %s", status, raw)
			case !tc.wantLogin && (body == nil || body["token_type"] != "bearer"):
				// openid-client then fails at userinfo (DPoP scheme on a Bearer token): expected.
				t.Fatalf("login: want token_type bearer from the token endpoint, got %d %s", status, raw)
			}
			if tc.wantLogin {
				claims, _ := body["claims"].(map[string]any)
				if claims["name"] != "Alice Example" || claims["email"] != "alice@example.com" {
					t.Errorf("ID token claims = %v, want name and email of alice (conformIdTokenClaims false)", claims)
				}
			}
			st := getStats(t, upstreamURL)
			if msg := tc.wantStats(st); msg != "" {
				t.Errorf("upstream stats %+v: %s", st, msg)
			}
			if st.AuthorizationRequests == 0 || !strings.HasPrefix(upstreamURL, "http://127.0.0.1:") {
				t.Errorf("unexpected upstream %s stats %+v", upstreamURL, st)
			}
		})
	}
}
