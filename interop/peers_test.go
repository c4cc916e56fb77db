package interop

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
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

// TestPeersSelfCheck's back-channel part: oidc-provider with --backchannel-logout-uri puts the
// session's sid in the client's ID token and, when that session ends at its end_session_endpoint
// (confirmation form, logout=yes), POSTs a logout token carrying the same sid to the URI (OpenID
// Connect Back-Channel Logout 1.0 §2.5), counted in /__stats.
func TestPeersSelfCheckUpstreamBackChannelLogout(t *testing.T) {
	t.Parallel()
	needNode(t)
	tokens := make(chan url.Values, 4)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil || r.Method != http.MethodPost {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		select {
		case tokens <- r.PostForm:
		default:
		}
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(receiver.Close)

	rpSock := listenSocket(t)
	_, upstreamURL := startUpstream(t, "--port", "0", "--mode", "dpop",
		"--client-id", "broker", "--client-secret", "selfcheck-secret",
		"--redirect-uri", rpSock.URL+"/callback", "--backchannel-logout-uri", receiver.URL+"/bcl")
	_, rpURL := startNodeOn(t, rpSock, "rp.mjs", "--issuer", upstreamURL,
		"--client-id", "broker", "--client-secret", "selfcheck-secret")

	c := browserClient(t)
	status, disco, raw := getJSON(t, c, upstreamURL+"/.well-known/openid-configuration")
	if status != http.StatusOK || disco["backchannel_logout_supported"] != true || disco["backchannel_logout_session_supported"] != true {
		t.Fatalf("discovery: %d, want backchannel_logout_supported and backchannel_logout_session_supported: %s", status, raw)
	}
	status, body, raw := getJSON(t, c, rpURL+"/login")
	claims, _ := body["claims"].(map[string]any)
	sid, _ := claims["sid"].(string)
	if status != http.StatusOK || sid == "" {
		t.Fatalf("login: %d, want an ID token with sid: %s", status, raw)
	}

	// The end_session_endpoint's confirmation form, then its logout=yes answer, as the browser posts it.
	resp, err := c.Get(fmt.Sprint(disco["end_session_endpoint"]))
	if err != nil {
		t.Fatalf("end_session: %v", err)
	}
	page, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	m := regexp.MustCompile(`<form id="op.logoutForm" method="post" action="([^"]+)"><input type="hidden" name="xsrf" value="([^"]+)"/>`).FindSubmatch(page)
	if resp.StatusCode != http.StatusOK || m == nil || !strings.Contains(string(page), `id="upstream-logout"`) || strings.Contains(string(page), "https://") {
		t.Fatalf("end_session page: %d, want the confirmation form with #upstream-logout and nothing loaded from outside:\n%s", resp.StatusCode, page)
	}
	resp, err = c.PostForm(string(m[1]), url.Values{"xsrf": {string(m[2])}, "logout": {"yes"}})
	if err != nil {
		t.Fatalf("end_session confirm: %v", err)
	}
	page, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), `id="upstream-signed-out"`) {
		t.Fatalf("end_session confirm: %d, want the signed-out page:\n%s", resp.StatusCode, page)
	}

	var form url.Values
	select {
	case form = <-tokens:
	case <-time.After(eventTimeout):
		t.Fatalf("no logout token POSTed to the back-channel logout URI within %v", eventTimeout)
	}
	parts := strings.Split(form.Get("logout_token"), ".")
	if len(parts) != 3 {
		t.Fatalf("logout_token is not a JWS (%d parts)", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	var lt map[string]any
	if err != nil || json.Unmarshal(payload, &lt) != nil {
		t.Fatalf("logout_token payload undecodable: %v", err)
	}
	events, _ := lt["events"].(map[string]any)
	if lt["sid"] != sid || lt["iss"] != upstreamURL || lt["aud"] != "broker" || events["http://schemas.openid.net/event/backchannel-logout"] == nil || lt["nonce"] != nil {
		t.Errorf("logout token claims = %v, want sid of the ID token, iss %s, aud broker, the back-channel logout event, no nonce", lt, upstreamURL)
	}
	if st := getStats(t, upstreamURL); st.BackchannelLogouts["succeeded"] != 1 {
		t.Errorf("upstream stats back-channel logouts = %v, want 1 succeeded", st.BackchannelLogouts)
	}
}
