// Package fastidp is a minimal, fast OpenID provider for the load benchmark: it keeps only
// what a brokered login needs, in bounded memory, so that the benchmark measures the broker.
//
// Its parts, all in fastidp.go:
//   - Start serves a Provider on an address (Close stops it); NewHandler returns the handler
//     for an issuer the caller serves.
//   - The provider answers discovery and /jwks (built with demoidp.Metadata and
//     demoidp.SigningKey, like the demo IdP's), a non-interactive /authorize that redirects
//     at once with a code, and a /token endpoint that checks PKCE, demands DPoP proofs
//     (dpop.Verifier) with server nonces and signs cheap ID tokens.
//   - Options set the client, the ID-token alg, the subject (one for every login, or one per
//     login with UniqueSubjects), the bound on live codes and
//     replay entries, and the nonce mode: NonceFirst (a nonce round trip per client and
//     rotation) or NonceEvery (one per login). Stats count authorizations and token answers.
//
// loadgen -serve-idp runs it as a process of its own:
//
//	p, err := fastidp.Start("127.0.0.1:0", fastidp.Options{NonceMode: fastidp.NonceEvery})
//	// point the broker's connection at p.URL
package fastidp
