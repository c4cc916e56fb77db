package interop

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
)

// wantPushed checks that the login's authorization request went through the upstream's PAR
// endpoint with a DPoP proof on every push (RFC 9449 §10.1), the first push answered
// use_dpop_nonce when nonceFirst, and that the browser brought only the request_uri.
func wantPushed(t *testing.T, w *world, ev loginEvent, nonceFirst bool) {
	t.Helper()
	wantDetail(t, ev, "upstream_par", true)
	st := getStats(t, w.upstreamURL)
	wantPushes := 1
	if nonceFirst {
		wantPushes = 2
	}
	if st.PARRequests != wantPushes || st.PARDPoPProofs != wantPushes || (st.PARNonceChallenges == 1) != nonceFirst {
		t.Errorf("upstream PAR endpoint saw %+v, want %d pushes, each with a DPoP proof, nonce challenge on the first: %t", st, wantPushes, nonceFirst)
	}
	if st.RequestURIAuthorizations != 1 {
		t.Errorf("upstream saw %d authorization requests with a request_uri, want 1 (%+v)", st.RequestURIAuthorizations, st)
	}
	if got := strings.Join(st.TokenTypes, ","); got != "DPoP" {
		t.Errorf("upstream issued token types %q, want DPoP (the code bound to the PAR proof's key)", got)
	}
}

// TestUpstreamRequiresPARWithDPoPNonces: oidc-provider requires pushed authorization requests
// (require_pushed_authorization_requests) and DPoP nonces; the connection does not set
// use_par: the broker pushes because discovery says so, answers the PAR endpoint's
// use_dpop_nonce, and the code it gets is bound to its DPoP key.
func TestUpstreamRequiresPARWithDPoPNonces(t *testing.T) {
	t.Parallel()
	w := setup(t, scenario{mode: "nonce", alg: "ES256", requirePAR: true})
	ev := w.loginOK(t)
	wantDetail(t, ev, "dpop_returned_from_upstream", true)
	wantPushed(t, w, ev, true)
}

// TestOktaConnectionWithPARAndPrivateKeyJWT: the Okta-like upstream (/v1/par, DPoP nonces)
// registered the broker with private_key_jwt; the connection sets use_par: the push and the
// token request each carry an ES256 client assertion and a DPoP proof.
func TestOktaConnectionWithPARAndPrivateKeyJWT(t *testing.T) {
	t.Parallel()
	w := setup(t, scenario{mode: "okta", okta: true, alg: "ES256", fetchUserinfo: true, usePAR: true,
		upAuth: "private_key_jwt", auth: "private_key_jwt", authAlg: "ES256"})
	ev := w.loginOK(t)
	wantDetail(t, ev, "token_endpoint_auth_method", "private_key_jwt")
	wantUserinfoFetch(t, ev, true)
	wantPushed(t, w, ev, true)
}

// TestPushedRequestCarriesUpstreamParams: with PAR the connection's upstream_params (a
// login_hint alias and a fixed acr_values) travel in the pushed request, not in the browser's
// URL, and still reach oidc-provider's authorization request.
func TestPushedRequestCarriesUpstreamParams(t *testing.T) {
	t.Parallel()
	w := setup(t, scenario{mode: "dpop", alg: "ES256", usePAR: true, rpArgs: []string{"--login-hint", "alice@example.com"}, connOptions: `      upstream_params:
        login_hint: { alias: login_hint }
        acr_values: { value: "urn:example:loa:2" }
`})
	ev := w.loginOK(t)
	wantPushed(t, w, ev, false)
	got := getStats(t, w.upstreamURL).AuthorizationParams
	if got["login_hint"] != "alice@example.com" || got["acr_values"] != "urn:example:loa:2" {
		t.Errorf("oidc-provider's pushed authorization request had %v, want the login_hint alias and acr_values", got)
	}
}

// TestMgmtChecksClientAuthAndPARAgainstOIDCProvider: oidc-provider offers only
// private_key_jwt (registered with the broker's JWKS URL). Through the management API a
// connection change to client_secret_post is refused with 400 client_auth_not_supported naming
// what the upstream lists; turning use_par on is accepted (the upstream has a PAR endpoint), and
// the next login pushes its authorization request with a client assertion and a DPoP proof.
func TestMgmtChecksClientAuthAndPARAgainstOIDCProvider(t *testing.T) {
	t.Parallel()
	token := randomHex(t, 24)
	w := setup(t, scenario{mode: "dpop", alg: "ES256", upAuth: "private_key_jwt", auth: "private_key_jwt", authAlg: "ES256", mgmtToken: token})
	path := "/api/v2/connections/" + config.DeriveConnectionID("oidc-provider")
	patch := func(extra map[string]any) (int, map[string]any, string) {
		options := map[string]any{"issuer": w.upstreamURL, "client_id": "broker", "dpop_signing_alg": "ES256",
			"token_endpoint_auth_signing_alg": "ES256"}
		for k, v := range extra {
			options[k] = v
		}
		return mgmtCall(t, w.broker.URL, token, http.MethodPatch, path, map[string]any{"options": options})
	}
	status, body, raw := patch(map[string]any{"token_endpoint_auth_method": "client_secret_post", "token_endpoint_auth_signing_alg": nil, "client_secret": "s3cret"})
	if status != http.StatusBadRequest || body["errorCode"] != "client_auth_not_supported" || !strings.Contains(raw, "[private_key_jwt]") {
		t.Fatalf("PATCH to client_secret_post: %d %s, want 400 client_auth_not_supported naming [private_key_jwt]", status, raw)
	}
	status, _, raw = patch(map[string]any{"token_endpoint_auth_method": "private_key_jwt", "use_par": true})
	if status != http.StatusOK {
		t.Fatalf("PATCH use_par: %d %s, want 200", status, raw)
	}
	status, body, raw = w.login(t)
	wantSuccess(t, status, body, raw)
	ev := waitEventType(t, w.broker.proc, "s") // after the fapi and sapi of the PATCHes
	wantDetail(t, ev, "token_endpoint_auth_method", "private_key_jwt")
	wantPushed(t, w, ev, false)
}

// mgmtCall sends a management API request with token and returns the status, the JSON object
// answered (nil when none) and the raw body.
func mgmtCall(t *testing.T, base, token, method, path string, body any) (int, map[string]any, string) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(method, base+path, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	rawBody, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var obj map[string]any
	_ = json.Unmarshal(rawBody, &obj)
	return resp.StatusCode, obj, string(rawBody)
}
