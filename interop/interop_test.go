package interop

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// scenario is one brokered login: rp.mjs (openid-client) → broker → upstream.mjs (oidc-provider).
type scenario struct {
	mode          string // upstream.mjs --mode
	alg           string // connection dpop_signing_alg; "" = omitted (DPoP off)
	fetchUserinfo bool   // connection fetch_userinfo
	rpDPoP        bool   // rp.mjs --dpop (DPoP toward the broker)
	rpDPoPAlg     string // rp.mjs --dpop-alg (its key: a WebCrypto pair like openid-client's randomDPoPKeyPair); "" = ES256
	rpClient      string // rp.mjs --client-id: "interop-app" (default) or "pop-app" (require_sender_constraining)
	rpScope       string // rp.mjs --scope; "" = its default (openid profile email)
	// okta: the connection is strategy okta with options.domain (the upstream's origin) and
	// authorization_server_id "default" instead of an issuer (upstream.mjs --mode okta).
	okta bool
	// connOptions are YAML lines appended to the connection's options (6-space indent);
	// rpArgs are more rp.mjs arguments.
	connOptions string
	rpArgs      []string
	// upAuth is the one client authentication method the upstream offers and registered the
	// broker with (upstream.mjs --client-auth; private_key_jwt: the broker's client-auth JWKS
	// URL as --jwks-uri); "" = oidc-provider's defaults, the broker on client_secret_basic.
	upAuth string
	// auth and authAlg are the connection's token_endpoint_auth_method and
	// token_endpoint_auth_signing_alg ("" = omitted); a private_key_jwt connection gets a
	// keys.client_auth key of its own for authAlg (default RS256).
	auth, authAlg string
	// requirePAR: the upstream requires pushed authorization requests (upstream.mjs
	// --require-par); usePAR: the connection's use_par.
	requirePAR, usePAR bool
	// mgmtToken, when set, is a management token with read:connections and
	// update:connections (a test secret, never committed).
	mgmtToken string
}

type world struct {
	upstreamURL string // oidc-provider issuer
	rpURL       string
	broker      *brokerProc
}

// setup starts the three peers for sc. The broker's socket is opened first because the
// upstream must know the broker's callback and the broker's config must know the upstream and
// the app.
func setup(t *testing.T, sc scenario) *world {
	t.Helper()
	needPeers(t)
	brokerSock := listenSocket(t)
	brokerURL, brokerPort := brokerSock.URL, brokerSock.Port
	upstreamSecret, appSecret := randomHex(t, 16), randomHex(t, 16)

	upArgs := []string{"--port", "0", "--mode", sc.mode,
		"--client-id", "broker", "--client-secret", upstreamSecret,
		"--redirect-uri", brokerURL + "/login/callback"}
	if sc.upAuth != "" {
		upArgs = append(upArgs, "--client-auth", sc.upAuth, "--jwks-uri", brokerURL+"/client-auth/jwks.json")
	}
	if sc.requirePAR {
		upArgs = append(upArgs, "--require-par")
	}
	_, upstreamURL := startUpstream(t, upArgs...)
	rpClient := sc.rpClient
	if rpClient == "" {
		rpClient = "interop-app"
	}
	rpArgs := []string{"--port", "0", "--issuer", brokerURL + "/", "--client-id", rpClient, "--client-secret", appSecret}
	if sc.rpDPoP {
		rpArgs = append(rpArgs, "--dpop")
	}
	if sc.rpDPoPAlg != "" {
		rpArgs = append(rpArgs, "--dpop-alg", sc.rpDPoPAlg)
	}
	if sc.rpScope != "" {
		rpArgs = append(rpArgs, "--scope", sc.rpScope)
	}
	rpArgs = append(rpArgs, sc.rpArgs...)
	_, rpURL := startNode(t, "rp.mjs", rpArgs...)

	env := map[string]string{
		"INTEROP_SIGNING_KEY":     generateKey(t, "RS256"),
		"INTEROP_DPOP_ES256_KEY":  generateKey(t, "ES256"),
		"INTEROP_APP_SECRET":      appSecret,
		"INTEROP_UPSTREAM_SECRET": upstreamSecret,
	}
	dpopKeys := `    es256: { private_key_env: "INTEROP_DPOP_ES256_KEY" }`
	if sc.alg == "RS256" || sc.alg == "PS256" {
		rsaFile := filepath.Join(t.TempDir(), "dpop-rsa.pem")
		if err := os.WriteFile(rsaFile, []byte(generateKey(t, "RS256")), 0o600); err != nil {
			t.Fatalf("write rsa key: %v", err)
		}
		dpopKeys += fmt.Sprintf("\n    rsa: { private_key_file: %q }", rsaFile)
	}
	strategy, issuerLines := "oidc", fmt.Sprintf("      issuer: %q", upstreamURL)
	if sc.okta {
		domain, ok := strings.CutSuffix(upstreamURL, "/oauth2/default")
		if !ok {
			t.Fatalf("okta upstream issuer %q does not end in /oauth2/default", upstreamURL)
		}
		strategy = "okta"
		issuerLines = fmt.Sprintf("      domain: %q\n      authorization_server_id: default", domain)
	}
	algLine := ""
	if sc.alg != "" {
		algLine = "      dpop_signing_alg: " + sc.alg
	}
	clientAuthKeys := ""
	if sc.auth != "" {
		algLine += "\n      token_endpoint_auth_method: " + sc.auth
	}
	if sc.authAlg != "" {
		algLine += "\n      token_endpoint_auth_signing_alg: " + sc.authAlg
	}
	if sc.usePAR {
		algLine += "\n      use_par: true"
	}
	mgmtYAML := ""
	if sc.mgmtToken != "" {
		env["INTEROP_MGMT_TOKEN"] = sc.mgmtToken
		mgmtYAML = "management:\n  tokens:\n    - { name: interop, token: \"${INTEROP_MGMT_TOKEN}\", scopes: [read:connections, update:connections] }\n"
	}
	// private_key_jwt takes no secret (config validate refuses one).
	secretLine := "      client_secret: \"${INTEROP_UPSTREAM_SECRET}\"\n"
	if sc.auth == "private_key_jwt" {
		secretLine = ""
		keyAlg := cmp.Or(sc.authAlg, "RS256")
		// A key of its own (not the run's cached ones, which sign tokens and DPoP proofs).
		code, pem, stderr := runBroker(t, "keys", "generate", "--alg", keyAlg)
		if code != 0 || !isPKCS8PEM(pem) {
			t.Fatalf("broker keys generate --alg %s: exit %d\nstderr: %s", keyAlg, code, stderr)
		}
		env["INTEROP_CLIENT_AUTH_KEY"] = pem
		clientAuthKeys = fmt.Sprintf("  client_auth:\n    - { alg: %s, private_key_env: \"INTEROP_CLIENT_AUTH_KEY\" }\n", keyAlg)
	}
	cfg := fmt.Sprintf(`# interop config (generated by interop_test.go)
issuer: "%[1]s/"
listen: "127.0.0.1:%[2]d"
store:
  type: memory
keys:
  signing:
    alg: RS256
    private_key_env: "INTEROP_SIGNING_KEY"
  dpop:
%[3]s
%[10]sdpop:
  clock_skew: 30s
  clock_tolerance: 30s
  retry_delay: 10ms
  jitter: 10ms
  max_retries: 1
clients:
  - client_id: "interop-app"
    name: "openid-client RP"
    client_secret: "${INTEROP_APP_SECRET}"
    token_endpoint_auth_method: client_secret_basic
    redirect_uris: ["%[4]s/callback"]
    post_logout_redirect_uris: ["%[4]s/"]
    connections: ["oidc-provider"]
  - client_id: "pop-app"
    name: "openid-client RP that must use DPoP"
    client_secret: "${INTEROP_APP_SECRET}"
    token_endpoint_auth_method: client_secret_basic
    redirect_uris: ["%[4]s/callback"]
    require_sender_constraining: true
    connections: ["oidc-provider"]
connections:
  - name: "oidc-provider"
    strategy: %[8]s
    options:
%[5]s
      client_id: "broker"
%[12]s      scope: "openid profile email"
      type: back_channel
%[6]s
      fetch_userinfo: %[7]t
%[9]s%[11]s`, brokerURL, brokerPort, dpopKeys, rpURL, issuerLines, algLine, sc.fetchUserinfo, strategy, sc.connOptions, clientAuthKeys, mgmtYAML, secretLine)
	b := startBroker(t, brokerSock, cfg, env)
	return &world{upstreamURL: upstreamURL, rpURL: rpURL, broker: b}
}

// login runs the whole flow with a cookie-jar HTTP client starting at the app's /login and
// returns the app's final answer.
func (w *world) login(t *testing.T) (int, map[string]any, string) {
	t.Helper()
	return getJSON(t, browserClient(t), w.rpURL+"/login")
}

// loginOK runs a login that must succeed (wantSuccess) and returns its event, which must be
// the broker's first and of type s.
func (w *world) loginOK(t *testing.T) loginEvent {
	t.Helper()
	status, body, raw := w.login(t)
	wantSuccess(t, status, body, raw)
	ev := w.broker.waitEvent(t, 1)
	wantType(t, ev, "s")
	return ev
}

// wantSuccess checks the app received the user's claims through openid-client.
func wantSuccess(t *testing.T, status int, body map[string]any, raw string) {
	t.Helper()
	if status != http.StatusOK || body == nil {
		t.Fatalf("app answered %d, want 200 with the user's claims: %s", status, raw)
	}
	claims, _ := body["claims"].(map[string]any)
	userinfo, _ := body["userinfo"].(map[string]any)
	if claims["sub"] == nil || claims["sub"] == "" {
		t.Errorf("ID token (verified by openid-client) has no sub: %s", raw)
	}
	if got := claims["email"]; got != "alice@example.com" {
		t.Errorf("ID token email = %v, want alice@example.com (mapped from the upstream): %s", got, raw)
	}
	if got := userinfo["sub"]; got != claims["sub"] {
		t.Errorf("userinfo sub = %v, want the ID token's sub %v", got, claims["sub"])
	}
	if got := userinfo["email"]; got != "alice@example.com" {
		t.Errorf("userinfo email = %v, want alice@example.com: %s", got, raw)
	}
}

// wantAppError checks the app got an OAuth error back (not the user's claims).
func wantAppError(t *testing.T, status int, body map[string]any, raw string) {
	t.Helper()
	if status == http.StatusOK || body == nil || body["error"] == nil || body["claims"] != nil {
		t.Fatalf("app answered %d, want an OAuth error and no claims: %s", status, raw)
	}
	t.Logf("app got the OAuth error %v: %v", body["error"], body["error_description"])
}

// wantUserinfoFetch checks details.upstream_userinfo_fetch: status SUCCESS (the SaaS log-schema
// value) and dpop_bound (absent means false).
func wantUserinfoFetch(t *testing.T, ev loginEvent, bound bool) {
	t.Helper()
	fetch, ok := ev.Details["upstream_userinfo_fetch"].(map[string]any)
	gotBound, _ := fetch["dpop_bound"].(bool)
	if !ok || fetch["status"] != "SUCCESS" || gotBound != bound {
		t.Errorf("details.upstream_userinfo_fetch = %v, want {status: SUCCESS, dpop_bound: %v} (event %s)", fetch, bound, eventJSON(ev))
	}
}

// wantDetail compares a details field (JSON numbers are float64).
func wantDetail(t *testing.T, ev loginEvent, key string, want any) {
	t.Helper()
	got, ok := ev.Details[key]
	if !ok {
		t.Errorf("event details.%s missing, want %v (event %s)", key, want, eventJSON(ev))
		return
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("event details.%s = %v, want %v (event %s)", key, got, want, eventJSON(ev))
	}
}

func eventJSON(ev loginEvent) string {
	b, _ := json.Marshal(ev.Raw)
	return string(b)
}

func wantType(t *testing.T, ev loginEvent, want string) {
	t.Helper()
	if ev.Type != want {
		t.Fatalf("event type = %q, want %q (event %s)", ev.Type, want, eventJSON(ev))
	}
}

// TestUpstreamNonceRequired: oidc-provider requires server nonces (RFC 9449 §8) and sends
// iss (RFC 9207): exactly one use_dpop_nonce retry, s, dpop_returned_from_upstream true.
func TestUpstreamNonceRequired(t *testing.T) {
	t.Parallel()
	w := setup(t, scenario{mode: "nonce", alg: "ES256"})
	ev := w.loginOK(t)
	wantDetail(t, ev, "dpop_signing_alg", "ES256")
	wantDetail(t, ev, "dpop_returned_from_upstream", true)
	wantDetail(t, ev, "idp_token_type", "dpop")
	wantDetail(t, ev, "dpop_nonce_used", true)
	wantDetail(t, ev, "dpop_nonce_retries", 1)
	st := getStats(t, w.upstreamURL)
	if st.NonceChallenges != 1 || st.TokenRequests != 2 || st.NonceProofs != 1 {
		t.Errorf("upstream saw %+v, want exactly one use_dpop_nonce challenge, 2 token requests, 1 proof with nonce", st)
	}
	if got := strings.Join(st.TokenTypes, ","); got != "DPoP" {
		t.Errorf("upstream issued token types %q, want DPoP", got)
	}
}

// TestUpstreamNonceUserinfo: with fetch_userinfo the broker calls oidc-provider's userinfo with a
// DPoP proof (ath) and answers its 401 use_dpop_nonce challenge if one comes (RFC 9449 §9).
func TestUpstreamNonceUserinfo(t *testing.T) {
	t.Parallel()
	w := setup(t, scenario{mode: "nonce", alg: "ES256", fetchUserinfo: true})
	ev := w.loginOK(t)
	wantDetail(t, ev, "dpop_returned_from_upstream", true)
	wantUserinfoFetch(t, ev, true)
	if st := getStats(t, w.upstreamURL); st.UserinfoRequests < 1 {
		t.Errorf("upstream saw no userinfo request: %+v", st)
	}
}

// TestOktaConnection: a strategy okta connection (options.domain + authorization_server_id
// default) against oidc-provider set up like Okta (issuer /oauth2/default, /v1/... endpoints,
// DPoP nonce demanded on the first token request): the broker derives the issuer, answers the
// nonce challenge once (RFC 9449 §8), gets token_type DPoP (§5) and calls /v1/userinfo with a proof
// carrying ath.
func TestOktaConnection(t *testing.T) {
	t.Parallel()
	w := setup(t, scenario{mode: "okta", okta: true, alg: "ES256", fetchUserinfo: true})
	ev := w.loginOK(t)
	wantDetail(t, ev, "dpop_signing_alg", "ES256")
	wantDetail(t, ev, "dpop_returned_from_upstream", true)
	wantDetail(t, ev, "idp_token_type", "dpop")
	wantDetail(t, ev, "dpop_nonce_used", true)
	wantUserinfoFetch(t, ev, true)
	if got := ev.Raw["strategy"]; got != "okta" {
		t.Errorf("event strategy = %v, want okta (event %s)", got, eventJSON(ev))
	}
	if got, _ := ev.Raw["user_id"].(string); !strings.HasPrefix(got, "okta|") {
		t.Errorf("event user_id = %q, want okta|… (event %s)", got, eventJSON(ev))
	}
	st := getStats(t, w.upstreamURL)
	if st.NonceChallenges != 1 || st.TokenRequests != 2 || st.NonceProofs != 1 || st.UserinfoRequests < 1 {
		t.Errorf("upstream saw %+v, want one use_dpop_nonce challenge on the first of 2 token requests and a userinfo call", st)
	}
	if got := strings.Join(st.TokenTypes, ","); got != "DPoP" {
		t.Errorf("upstream issued token types %q, want DPoP", got)
	}
}

// TestUpstreamDPoPNoNonce: DPoP without server nonces: s, no retry.
func TestUpstreamDPoPNoNonce(t *testing.T) {
	t.Parallel()
	w := setup(t, scenario{mode: "dpop", alg: "ES256"})
	ev := w.loginOK(t)
	wantDetail(t, ev, "dpop_returned_from_upstream", true)
	wantDetail(t, ev, "idp_token_type", "dpop")
	wantDetail(t, ev, "dpop_nonce_used", false)
	if r, ok := ev.Details["dpop_nonce_retries"]; ok && fmt.Sprint(r) != "0" {
		t.Errorf("details.dpop_nonce_retries = %v, want 0 (event %s)", r, eventJSON(ev))
	}
	if st := getStats(t, w.upstreamURL); st.NonceChallenges != 0 || st.TokenRequests != 1 || st.DPoPProofs != 1 {
		t.Errorf("upstream saw %+v, want one token request with a proof and no nonce challenge", st)
	}
}

// TestUpstreamWithoutDPoP: oidc-provider with DPoP disabled (no dpop_signing_alg_values_supported)
// and a connection asking ES256: f dpop_not_supported, the user is never sent upstream and no code
// exchange is attempted.
func TestUpstreamWithoutDPoP(t *testing.T) {
	t.Parallel()
	w := setup(t, scenario{mode: "nodpop", alg: "ES256"})
	wantRefusedBeforeUpstream(t, w, "dpop_not_supported")
}

// wantRefusedBeforeUpstream logs in through w and expects the DPoP gate to refuse it: an OAuth
// error back to the app, an f event with details.error = code, no request reaching the
// upstream's authorize or token endpoint, and `broker discovery check --alg ES256` exiting 1
// with the same code.
func wantRefusedBeforeUpstream(t *testing.T, w *world, code string) {
	t.Helper()
	status, body, raw := w.login(t)
	wantAppError(t, status, body, raw)
	ev := w.broker.waitEvent(t, 1)
	wantType(t, ev, "f")
	wantDetail(t, ev, "error", code)
	if st := getStats(t, w.upstreamURL); st.TokenRequests != 0 || st.AuthorizationRequests != 0 {
		t.Errorf("upstream saw %+v, want no authorization and no token request", st)
	}
	exit, stdout, stderr := runBroker(t, "discovery", "check", w.upstreamURL, "--alg", "ES256", "--allow-network", "127.0.0.0/8")
	if exit != 1 || !strings.Contains(stdout+stderr, code) {
		t.Errorf("discovery check --alg ES256: exit %d, want 1 naming %s\nstdout: %s\nstderr: %s", exit, code, stdout, stderr)
	}
}

// TestUpstreamRSAOnly: oidc-provider offers only RS256 for DPoP.
func TestUpstreamRSAOnly(t *testing.T) {
	t.Parallel()
	t.Run("connection asks ES256: f dpop_alg_mismatch", func(t *testing.T) {
		t.Parallel()
		w := setup(t, scenario{mode: "rsaonly", alg: "ES256"})
		wantRefusedBeforeUpstream(t, w, "dpop_alg_mismatch")
		code, stdout, stderr := runBroker(t, "discovery", "check", w.upstreamURL, "--alg", "RS256", "--allow-network", "127.0.0.0/8")
		if code != 0 || !strings.Contains(stdout, "RS256") {
			t.Errorf("discovery check --alg RS256: exit %d, want 0 listing RS256\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
	})
	t.Run("connection asks RS256 with an RSA DPoP key: s", func(t *testing.T) {
		t.Parallel()
		w := setup(t, scenario{mode: "rsaonly", alg: "RS256"})
		ev := w.loginOK(t)
		wantDetail(t, ev, "dpop_signing_alg", "RS256")
		wantDetail(t, ev, "dpop_returned_from_upstream", true)
		if st := getStats(t, w.upstreamURL); st.TokenRequests != 1 || st.DPoPProofs != 1 {
			t.Errorf("upstream saw %+v, want one token request with an RS256 proof", st)
		}
	})
}

// TestUpstreamAnswersBearer: discovery advertises DPoP but oidc-provider ignores the proof and
// answers token_type Bearer: s with dpop_returned_from_upstream false; userinfo goes as Bearer.
func TestUpstreamAnswersBearer(t *testing.T) {
	t.Parallel()
	w := setup(t, scenario{mode: "bearer", alg: "ES256", fetchUserinfo: true})
	ev := w.loginOK(t)
	wantDetail(t, ev, "dpop_signing_alg", "ES256")
	wantDetail(t, ev, "dpop_returned_from_upstream", false)
	wantDetail(t, ev, "idp_token_type", "bearer")
	wantUserinfoFetch(t, ev, false)
	st := getStats(t, w.upstreamURL)
	if st.TokenRequests != 1 || st.DPoPProofs != 1 || strings.Join(st.TokenTypes, ",") != "Bearer" {
		t.Errorf("upstream saw %+v, want one token request carrying a proof answered Bearer", st)
	}
}

// TestDownstreamOpenIDClient: openid-client (discovery, PKCE, state, nonce, iss, ID-token and
// userinfo checks) logs in through the broker unchanged, also when it holds a DPoP key.
func TestDownstreamOpenIDClient(t *testing.T) {
	t.Parallel()
	t.Run("bearer client", func(t *testing.T) {
		t.Parallel()
		w := setup(t, scenario{mode: "dpop", alg: "ES256"})
		status, body, raw := w.login(t)
		wantSuccess(t, status, body, raw)
		if got := body["id_token_alg"]; got != "RS256" {
			t.Errorf("broker ID token alg = %v, want RS256 (default)", got)
		}
		claims, _ := body["claims"].(map[string]any)
		if got := claims["iss"]; got != w.broker.URL+"/" {
			t.Errorf("ID token iss = %v, want the configured issuer %s/", got, w.broker.URL)
		}
		if got := claims["aud"]; fmt.Sprint(got) != "interop-app" && fmt.Sprint(got) != "[interop-app]" {
			t.Errorf("ID token aud = %v, want interop-app", got)
		}
		if got := claims["name"]; got != "Alice Example" {
			t.Errorf("ID token name = %v, want Alice Example", got)
		}
		if got := body["token_type"]; got != "bearer" {
			t.Errorf("token_type without a proof (userinfo only) = %v, want bearer (the first row of the README's issuance table)", got)
		}
		wantType(t, w.broker.waitEvent(t, 1), "s")
	})
	t.Run("RP-initiated logout through openid-client's buildEndSessionUrl", func(t *testing.T) {
		t.Parallel()
		w := setup(t, scenario{mode: "dpop", alg: "ES256"})
		b := browserClient(t)
		status, body, raw := getJSON(t, b, w.rpURL+"/login")
		wantSuccess(t, status, body, raw)
		// /logout → the broker's end_session_endpoint (id_token_hint, post_logout_redirect_uri,
		// state) → back on the app's home with the state.
		status, body, raw = getJSON(t, b, w.rpURL+"/logout")
		if status != http.StatusOK || body["home"] != true || body["state_ok"] != true {
			t.Fatalf("after logout the app answered %d %s, want its home page with the logout state", status, raw)
		}
		waitEventType(t, w.broker.proc, "slo")
	})
	t.Run("RFC 7009 revocation through openid-client's tokenRevocation", func(t *testing.T) {
		t.Parallel()
		w := setup(t, scenario{mode: "dpop", alg: "ES256", rpScope: "openid profile email offline_access"})
		b := browserClient(t)
		status, body, raw := getJSON(t, b, w.rpURL+"/login")
		wantSuccess(t, status, body, raw)
		if status, _, raw := getJSON(t, b, w.rpURL+"/refresh"); status != http.StatusOK {
			t.Fatalf("refresh before the revocation: %d %s", status, raw)
		}
		if status, _, raw := getJSON(t, b, w.rpURL+"/revoke"); status != http.StatusOK {
			t.Fatalf("revoke: %d %s", status, raw)
		}
		waitEventType(t, w.broker.proc, "srrt")
		status, body, raw = getJSON(t, b, w.rpURL+"/refresh")
		if status != http.StatusBadRequest || body["error"] != "invalid_grant" {
			t.Errorf("refresh after the revocation: %d %s, want invalid_grant", status, raw)
		}
	})
	t.Run("DPoP-capable client: token_type DPoP, cnf.jkt, userinfo with DPoP", func(t *testing.T) {
		t.Parallel()
		w := setup(t, scenario{mode: "dpop", alg: "ES256", rpDPoP: true})
		status, body, raw := w.login(t) // wantSuccess: userinfo answered to DPoP <at> + proof (ath)
		wantSuccess(t, status, body, raw)
		// openid-client lower-cases token_type; the broker answered "DPoP" (RFC 9449 §5).
		if got := body["token_type"]; got != "dpop" {
			t.Errorf("broker token_type for a DPoP client = %v, want DPoP", got)
		}
		// The userinfo-only access token is opaque (a JWE the RP cannot read): its binding shows
		// in /userinfo accepting it only as DPoP <at> with the RP key's proof (wantSuccess) and
		// in the seacft event's jkt below; a JWT access token carries cnf.jkt itself.
		if jkt, _ := body["dpop_jkt"].(string); jkt == "" || body["at_opaque"] != true && body["at_cnf_jkt"] != jkt {
			t.Errorf("access token cnf.jkt = %v, want the RP key's RFC 7638 thumbprint %v", body["at_cnf_jkt"], body["dpop_jkt"])
		}
		ev := waitEventType(t, w.broker.proc, "seacft")
		dp, _ := ev.Details["dpop"].(map[string]any)
		if dp["bound"] != true || dp["jkt"] != body["dpop_jkt"] {
			t.Errorf("seacft details.dpop = %v, want bound true with the RP key's thumbprint (event %s)", dp, eventJSON(ev))
		}
	})
	t.Run("client requiring sender constraining without DPoP: invalid_request", func(t *testing.T) {
		t.Parallel()
		w := setup(t, scenario{mode: "dpop", alg: "ES256", rpClient: "pop-app"})
		status, body, raw := w.login(t)
		wantAppError(t, status, body, raw)
		if body["error"] != "invalid_request" || body["stage"] != "authorization_code_grant" {
			t.Errorf("token request without a proof from a client with require_sender_constraining: %s, want invalid_request at the code grant", raw)
		}
		ev := waitEventType(t, w.broker.proc, "feacft")
		wantDetail(t, ev, "error", "invalid_request")
	})
}

// TestBrowserDemo: headless Chromium clicks through `broker demo` in one browser: the sample
// app's login (sample app → broker → built-in upstream → back) shows the user and the login
// event; the second app then signs in by single sign-on (no upstream page); its silent check
// (prompt=none) signs in; logging out of the sample app ends the broker session, and the
// second app, told by back-channel logout, shows that it was signed out and its silent check
// answers login_required (docs/sessions.md).
func TestBrowserDemo(t *testing.T) {
	t.Parallel()
	needPeers(t)
	needChromium(t)

	// The banner's URLs: the broker's and the upstream's lines come before the Open line.
	type demoURLs struct{ app, broker, idp string }
	urls := make(chan demoURLs, 1)
	var printed demoURLs
	var once sync.Once
	brokerLine := regexp.MustCompile(`^  broker        (http://\S+)/  `)
	idpLine := regexp.MustCompile(`^  upstream IdP  (http://\S+)$`)
	demo := start(t, "broker demo", exec.Command(brokerBin, "demo", "--listen-host", "127.0.0.1",
		"--broker-port", "0", "--idp-port", "0", "--app-port", "0"), func(line string) {
		if m := brokerLine.FindStringSubmatch(line); m != nil {
			printed.broker = m[1]
		}
		if m := idpLine.FindStringSubmatch(line); m != nil {
			printed.idp = m[1]
		}
		if m := openLine.FindStringSubmatch(line); m != nil {
			once.Do(func() { printed.app = m[1]; urls <- printed })
		}
	})
	var u demoURLs
	select {
	case u = <-urls:
	case <-demo.exited:
		t.Fatalf("broker demo exited before printing its URL: %v\n%s", demo.err, demo.out)
	case <-time.After(readyTimeout):
		t.Fatalf("broker demo printed no `Open http://... in your browser` line within %v\n%s", readyTimeout, demo.out)
	}
	if u.broker == "" || u.idp == "" {
		t.Fatalf("broker demo printed no broker or upstream IdP URL before its Open line\n%s", demo.out)
	}
	appURL := u.app

	shotDir := filepath.Join(interopDir, ".cache")
	if err := os.MkdirAll(shotDir, 0o755); err != nil {
		shotDir = t.TempDir()
	}
	shot := filepath.Join(shotDir, "browser-demo.png")
	ctxCmd := exec.Command("node", "browser.mjs", "--url", appURL, "--screenshot", shot, "--chromium", chromiumPath,
		"--timeout-ms", fmt.Sprint(browserBudget.Milliseconds()))
	ctxCmd.Dir = interopDir
	br := start(t, "browser.mjs", ctxCmd, nil)
	select {
	case <-br.exited:
	case <-time.After(browserBudget + time.Minute): // browser.mjs stops itself after its budget
		t.Fatalf("browser.mjs still running %v after it started\n%s", browserBudget+time.Minute, br.out)
	}
	if br.err != nil {
		t.Fatalf("browser.mjs failed: %v\n%s", br.err, br.out)
	}
	type appPage struct {
		User, How, SID string
		Origins        []string
	}
	var result struct {
		User         string   `json:"user"`
		EventText    string   `json:"eventText"`
		How          string   `json:"how"`
		SID          string   `json:"sid"`
		URL          string   `json:"url"`
		Second       appPage  `json:"second"`
		SilentHow    string   `json:"silentHow"`
		LoggedOutURL string   `json:"loggedOutURL"`
		SignedOut    string   `json:"signedOut"`
		SilentResult string   `json:"silentResult"`
		Screenshots  []string `json:"screenshots"`
	}
	lines := br.out.Lines()
	for _, l := range lines {
		if strings.HasPrefix(l, "{") && json.Unmarshal([]byte(l), &result) == nil {
			break
		}
	}
	if result.User == "" {
		t.Fatalf("browser.mjs printed no result with a user\n%s", br.out)
	}
	t.Logf("browser: user %q on %s (screenshots %s)", result.User, result.URL, strings.Join(result.Screenshots, ", "))
	if !strings.Contains(result.User, "Alice") && !strings.Contains(result.User, "alice") {
		t.Errorf("page #user = %q, want the logged-in user (Alice)", result.User)
	}
	if !strings.Contains(result.EventText, "dpop_signing_alg") {
		t.Errorf("page event lacks dpop_signing_alg:\n%s", result.EventText)
	}
	if !regexp.MustCompile(`"?dpop_returned_from_upstream"?\s*:\s*true`).MatchString(result.EventText) {
		t.Errorf("page event lacks dpop_returned_from_upstream: true:\n%s", result.EventText)
	}
	if !strings.Contains(result.How, "demo identity provider and exchanged its code with a DPoP proof") {
		t.Errorf("sample app's #how = %q, want the upstream login with DPoP", result.How)
	}
	ev := demo.waitEvent(t, 1)
	wantType(t, ev, "s")
	wantDetail(t, ev, "dpop_returned_from_upstream", true)

	// Single sign-on: the second app's login went through the broker only, in the same session.
	if !strings.HasPrefix(result.Second.How, "Single sign-on") || result.Second.SID != result.SID || result.SID == "" {
		t.Errorf("second app: %+v, want single sign-on in the sample app's session %q", result.Second, result.SID)
	}
	if slices.Contains(result.Second.Origins, u.idp) || !slices.Contains(result.Second.Origins, u.broker) {
		t.Errorf("the second app's login navigated to %v: want the broker (%s), never the upstream (%s)", result.Second.Origins, u.broker, u.idp)
	}
	if !strings.Contains(result.SilentHow, "silent authentication") {
		t.Errorf("second app after its silent check: #how = %q", result.SilentHow)
	}
	// Log out: the sample app sends the browser to the broker's /oidc/logout with its
	// registered post_logout_redirect_uri, which ends the session (slo) and comes back; the
	// second app learns of it by back-channel logout.
	if result.LoggedOutURL != appURL {
		t.Errorf("after logout the browser is at %q, want the sample app's %q", result.LoggedOutURL, appURL)
	}
	if !strings.Contains(result.SignedOut, "back-channel logout") || !strings.Contains(result.SignedOut, result.SID) {
		t.Errorf("second app after logout: #signed-out = %q", result.SignedOut)
	}
	if !strings.Contains(result.SilentResult, "login_required") {
		t.Errorf("second app's silent check after logout: %q", result.SilentResult)
	}
	deadline := time.Now().Add(eventTimeout)
	for {
		evs := demo.Events()
		sso := slices.ContainsFunc(evs, func(e loginEvent) bool {
			return e.Type == "s" && e.Raw["client_id"] == "second-app" && e.Details["sso"] == true
		})
		slo := slices.ContainsFunc(evs, func(e loginEvent) bool { return e.Type == "slo" })
		bcl := slices.ContainsFunc(evs, func(e loginEvent) bool {
			return e.Type == "oidc_backchannel_logout_succeeded" && e.Raw["client_id"] == "second-app"
		})
		if sso && slo && bcl {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("want an s event with details.sso for second-app, an slo and a delivered back-channel logout to second-app; events: %+v", evs)
		}
		time.Sleep(pollInterval)
	}
}
