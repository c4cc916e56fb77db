// Package demoidp is a small OpenID provider with DPoP: the upstream IdP that `broker demo`
// runs next to the broker, so it is part of the product and ships in the broker binary. The
// broker's, the upstream package's, the command's and the interop tests run it too, as the
// upstream they log in against.
//
// It serves, below its issuer's path:
//   - /.well-known/openid-configuration and /jwks (OpenID Connect Discovery 1.0 §3, §4),
//   - /authorize, with an optional sign-in page (Options.Interactive) that posts to
//     /authorize/approve; it requires PKCE S256 (RFC 7636) unless told not to and can send the
//     RFC 9207 iss parameter,
//   - /token (authorization_code, client_secret_basic or client_secret_post), which can demand
//     DPoP proofs (RFC 9449 §4.3) with server nonces (RFC 9449 §8) and binds access tokens to
//     the proof key,
//   - /userinfo, which accepts DPoP-bound tokens with a proof carrying ath (RFC 9449 §7),
//   - /logout, RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0 §2).
//
// Its ID tokens carry a sid (one per login, or Options.SessionID), and Provider.BackchannelLogout
// posts a logout token to a relying party (OpenID Connect Back-Channel Logout 1.0 §2.5), with
// LogoutTokenOptions that break one rule at a time for negative tests.
//
// Start serves a Provider on a free loopback port; NewHandler returns the handler for an issuer
// the caller serves (the demo binds its own listener). Options shape the provider, including
// faults that make it misbehave for negative tests (wrong aud, nonce or issuer in the ID token,
// a Bearer answer to a DPoP request, endless nonce challenges); Stats count what it saw.
//
// What a provider publishes for relying parties is built by Metadata (the discovery document)
// and SigningKey (the ID-token key and its JWK Set); the repository's other in-process
// providers (the load benchmark's fastidp, the upstream package's test IdP) build theirs with
// them too. RSAKey hands out one RSA key per process, so that the providers a test binary
// starts do not each pay for generating one; Options.FreshKey asks for a key of its own.
package demoidp
