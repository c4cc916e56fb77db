// Package discovery fetches, validates and caches the OpenID Connect discovery documents of
// upstream IdPs, and decides, with typed errors, whether an upstream can do the DPoP asked of it.
//
// Its parts, all in discovery.go:
//   - Client fetches a document with Get (OpenID Connect Discovery 1.0 §4: the issuer must
//     match exactly, the required members must be present), caches it for TTL, shares one
//     fetch among concurrent callers, and fetches again on Refresh. Parse checks a document
//     already in hand.
//   - Document is the part of a document the broker uses, with go-oidc's Provider for ID
//     tokens and userinfo. CheckDPoP says which proof alg label to send (RFC 9449 §5.1) or
//     fails with a *CapabilityError (ErrDPoPNotSupported, ErrDPoPAlgMismatch; Code gives the
//     stable error code of login events); SupportsS256 and AuthStyle choose PKCE and the
//     token-endpoint client authentication.
//   - CheckURL is the rule for every upstream URL (absolute, https except on a LoopbackHost,
//     no user info or fragment); RefuseRedirect, the CheckRedirect of every upstream HTTP
//     client, fails a redirect with a *RedirectRefusedError.
//
// Fetching an upstream's document (from its issuer's well-known path when the discovery URL
// is "") and asking it for DPoP with ES256:
//
//	var c discovery.Client
//	doc, err := c.Get(ctx, "https://idp.example.com", "")
//	if err != nil {
//		// unreachable, not JSON, wrong issuer, a member missing
//	}
//	wireAlg, err := doc.CheckDPoP("ES256")
//	if errors.Is(err, discovery.ErrDPoPNotSupported) {
//		// the upstream publishes no dpop_signing_alg_values_supported
//	}
package discovery
