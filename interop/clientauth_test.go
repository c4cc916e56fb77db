package interop

import (
	"testing"
)

// TestUpstreamClientSecretPostOnly: oidc-provider offers only client_secret_post (and
// registered the broker with it); the connection says client_secret_post: the code exchange
// authenticates in the body and the s event names the method.
func TestUpstreamClientSecretPostOnly(t *testing.T) {
	t.Parallel()
	w := setup(t, scenario{mode: "dpop", alg: "ES256", upAuth: "client_secret_post", auth: "client_secret_post"})
	ev := w.loginOK(t)
	wantDetail(t, ev, "token_endpoint_auth_method", "client_secret_post")
	wantDetail(t, ev, "idp_token_type", "dpop")
}

// TestUpstreamPrivateKeyJWTWithDPoPNonces: oidc-provider offers only private_key_jwt, fetches
// the broker's client-authentication keys from its JWKS URL, and demands DPoP nonces: the
// token request carries an ES256 client assertion and a DPoP proof; the use_dpop_nonce retry
// carries a new assertion (oidc-provider refuses a replayed jti), and the token comes back bound.
func TestUpstreamPrivateKeyJWTWithDPoPNonces(t *testing.T) {
	t.Parallel()
	w := setup(t, scenario{mode: "nonce", alg: "ES256", fetchUserinfo: true, upAuth: "private_key_jwt", auth: "private_key_jwt", authAlg: "ES256"})
	ev := w.loginOK(t)
	wantDetail(t, ev, "token_endpoint_auth_method", "private_key_jwt")
	wantDetail(t, ev, "dpop_returned_from_upstream", true)
	wantDetail(t, ev, "dpop_nonce_used", true)
	wantUserinfoFetch(t, ev, true)
	st := getStats(t, w.upstreamURL)
	if st.NonceChallenges != 1 || st.TokenRequests != 2 {
		t.Errorf("upstream saw %+v, want one use_dpop_nonce challenge and 2 token requests", st)
	}
}

// TestUpstreamPrivateKeyJWTDefaultsToRS256: private_key_jwt without a signing alg signs RS256.
func TestUpstreamPrivateKeyJWTDefaultsToRS256(t *testing.T) {
	t.Parallel()
	w := setup(t, scenario{mode: "dpop", alg: "ES256", upAuth: "private_key_jwt", auth: "private_key_jwt"})
	ev := w.loginOK(t)
	wantDetail(t, ev, "token_endpoint_auth_method", "private_key_jwt")
	wantDetail(t, ev, "idp_token_type", "dpop")
}

// TestUpstreamWithoutTheClientAuthMethodRefusesTheLogin: oidc-provider offers only
// private_key_jwt, the connection says client_secret_post: the login fails before the user is
// sent upstream, with f client_auth_not_supported naming the method.
func TestUpstreamWithoutTheClientAuthMethodRefusesTheLogin(t *testing.T) {
	t.Parallel()
	w := setup(t, scenario{mode: "dpop", alg: "ES256", upAuth: "private_key_jwt", auth: "client_secret_post"})
	status, body, raw := w.login(t)
	wantAppError(t, status, body, raw)
	ev := w.broker.waitEvent(t, 1)
	wantType(t, ev, "f")
	wantDetail(t, ev, "error", "client_auth_not_supported")
	wantDetail(t, ev, "token_endpoint_auth_method", "client_secret_post")
	if st := getStats(t, w.upstreamURL); st.TokenRequests != 0 || st.AuthorizationRequests != 0 {
		t.Errorf("upstream saw %+v, want no authorization and no token request", st)
	}
}
