// Package upstream is the broker's client side toward one upstream IdP: the authorization
// request, the back-channel code exchange with DPoP, ID-token checks, userinfo and logout.
//
// Its parts, all in upstream.go:
//   - Config is one connection as configured (issuer or Okta domain, see OktaIssuer; client
//     credentials, scopes, DPoP signing alg, ID-token algs, extra upstream parameters), and
//     Options the collaborators all connections share (HTTP client, discovery.Client,
//     dpop.Signers, nonce cache and retry timing, clock skew). New checks both and returns a
//     Connection without contacting the upstream.
//   - Connection.Begin reads the upstream's discovery document, refuses a connection whose
//     upstream cannot do the configured DPoP, and builds the authorization URL with state,
//     nonce and PKCE S256 (RFC 7636); BeginOption (WithMaxAge, WithPromptLogin) adds the
//     app's requirements. The Start it returns is what the login transaction keeps;
//     Start.CheckIss applies RFC 9207 to the authorization response.
//   - Connection.Finish exchanges the code through golang.org/x/oauth2 over a dpop.Transport
//     (proofs, use_dpop_nonce retries), verifies the ID token with go-oidc (OIDC Core
//     §3.1.3.7) and fetches userinfo when configured; the Result says who logged in and what
//     the DPoP exchange did.
//   - Connection.LogoutURL builds the RP-initiated logout redirect to the upstream's
//     end_session_endpoint.
//   - Connection.VerifyLogoutToken (backchannel.go) checks a logout token the upstream sends
//     by back-channel logout (OpenID Connect Back-Channel Logout 1.0 §2.6) and returns the
//     upstream session (sid) and/or user (sub) it ends. Its JWK Set is a copy of its own,
//     fetched again for an unknown kid at most once a minute, since anyone can send one.
//   - Every failure is an *Error with a stable Code (CodeOf) for login events.
//
// The package upstream/demoidp is the demo's upstream IdP and the one the tests log in against.
//
//	conn, err := upstream.New(cfg, opts)
//	st, err := conn.Begin(ctx, callbackURL) // keep st in the login transaction
//	// redirect the browser to st.AuthURL; at the callback:
//	if err := st.CheckIss(r.FormValue("iss")); err != nil { ... }
//	res, err := conn.Finish(ctx, st, callbackURL, r.FormValue("code"))
package upstream
