// Package dpop implements OAuth 2.0 Demonstrating Proof of Possession (DPoP, RFC 9449) on
// both sides of a request: the client that signs proofs and the server that checks them.
//
// The client half (the broker uses it toward its upstream IdPs):
//   - Signer (signer.go) signs proofs with an ES256, Ed25519/EdDSA, RS256 or PS256 key.
//     GenerateKey, ParsePrivateKeyPEM, MarshalPrivateKeyPEM and KeyAlgFits make, load and
//     check keys; Thumbprint is the RFC 7638 JWK thumbprint (jkt); HTU and ATH build the htu
//     and ath claims.
//   - Transport (transport.go) is an http.RoundTripper that adds a fresh proof to every
//     request and answers use_dpop_nonce challenges with a bounded retry (RFC 9449 §8, §9),
//     failing with *NonceRetryError when they do not stop. It remembers server nonces in a
//     NonceCache (noncecache.go: NewNonceCache, NewNonceCacheWith) under NonceKey;
//     WithTrace records what it did in a Trace.
//
// The server half (the broker's /oauth/token and /userinfo, and resource servers):
//   - Verifier (verify.go) checks the proof of a request against a Check (RFC 9449 §4.3) and
//     returns a Result, or a *ProofError whose Check names the rule that failed. It claims
//     each proof, under its ReplayKey, in a ReplayCache (replay.go: NewMemoryReplayCache for
//     one process; the broker backs it with its store so that replicas share it) and, given a
//     NonceSource (nonce.go), demands server nonces that any replica sharing the secret can
//     check without shared state; Challenge sends one.
//   - ResourceServer (middleware.go) is HTTP middleware that protects an API with Bearer or
//     DPoP-bound JWT access tokens (RFC 6750, RFC 9068, RFC 9449 §7). TokenClaims,
//     ProofResult and TokenJKT read what it let through; CORSAllowHeaders and
//     CORSExposeHeaders are the headers a browser client needs.
//   - NormalizeHTU (htu.go) is the form in which htu and endpoint URLs are compared;
//     IsAccessTokenType (attyp.go) tells an RFC 9068 access token from an ID token.
//
// A client signs its requests with a Transport:
//
//	key, err := dpop.ParsePrivateKeyPEM(pemBytes)
//	if err != nil {
//		// handle error
//	}
//	signer, err := dpop.NewSigner(key, dpop.AlgES256)
//	if err != nil {
//		// handle error
//	}
//	client := &http.Client{Transport: &dpop.Transport{Signer: signer}}
//
// A resource server wraps its handlers:
//
//	rs := &dpop.ResourceServer{
//		Issuer:    issuer,
//		Audience:  audience,
//		KeySet:    oidc.NewRemoteKeySet(ctx, jwksURL),
//		Verifier:  &dpop.Verifier{Replay: dpop.NewMemoryReplayCache(0)},
//		Required:  true, // DPoP-bound tokens only
//		PublicURL: "https://api.example.com",
//	}
//	http.Handle("/api/", rs.Wrap(apiHandler))
package dpop
