package interop

import (
	"net/http"
	"testing"

	"github.com/dpop-broker/dpop-broker/dpop"
)

// TestPublicClientCannotEscalateScope: through the real `broker serve` (oidc-provider
// upstream), a public client (anyone can act as it) that is granted read:data of the API asks
// for admin:all as well. The token response and the access token carry only the granted
// scopes (RFC 6749 §3.3), and Auth0's express-oauth2-jwt-bearer, trusting the broker, lets
// the token through /api/whoami but refuses it at a route guarded by requiredScopes('admin:all').
func TestPublicClientCannotEscalateScope(t *testing.T) {
	t.Parallel()
	w := setupAS(t, 1, asOptions{})
	s := newSigner(t, dpop.AlgES256)
	code := authorizeScope(t, w.brokers[0].URL, apiAudience, s.Thumbprint(), "openid admin:all read:data")
	tokenURL := w.base() + "/oauth/token"
	res := exchange(t, w.brokers[0].URL, code, proof(t, s, http.MethodPost, tokenURL, "", ""))
	if res.status == http.StatusBadRequest && res.body["error"] == "use_dpop_nonce" {
		res = exchange(t, w.brokers[0].URL, code, proof(t, s, http.MethodPost, tokenURL, res.header.Get("DPoP-Nonce"), ""))
	}
	at, _ := res.body["access_token"].(string)
	const granted = "openid read:data"
	if res.status != http.StatusOK || at == "" || res.body["scope"] != granted {
		t.Fatalf("token response %s, want 200 with scope %q", res, granted)
	}
	if got := jwtClaims(t, at)["scope"]; got != granted {
		t.Fatalf("access token scope %v, want %q", got, granted)
	}

	_, apiURL := startNode(t, "api-jwtbearer.mjs", "--port", "0", "--issuer-base-url", w.issuer,
		"--audience", apiAudience, "--dpop-required", "true")
	whoami, admin := apiURL+"/api/whoami", apiURL+"/api/admin"
	status, body, _ := callAPI(t, whoami, "DPoP", at, proof(t, s, http.MethodGet, whoami, "", at))
	if status != http.StatusOK || body["scope"] != granted {
		t.Fatalf("/api/whoami: %d %v, want 200 with scope %q", status, body, granted)
	}
	status, body, _ = callAPI(t, admin, "DPoP", at, proof(t, s, http.MethodGet, admin, "", at))
	if status != http.StatusForbidden || body["error"] != "insufficient_scope" {
		t.Fatalf("/api/admin (requiredScopes admin:all): %d %v, want 403 insufficient_scope", status, body)
	}
}
