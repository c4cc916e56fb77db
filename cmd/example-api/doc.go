// Command example-api is a tiny resource server protected by dpop.ResourceServer: GET
// /api/private answers {message, sub, jkt} for a valid (DPoP-bound when --required) token.
//
// It shows an API behind the broker's access tokens: main.go reads the flags (--issuer,
// --audience, --jwks-url, --required, --algs), builds the dpop.Verifier and
// dpop.ResourceServer and serves /api/private and /healthz; support.go holds the replay
// cache over a shared Redis (--redis, so that replicas refuse each other's replayed proofs),
// the CORS handling for browser apps (--cors-origin) and JSON answers. With
// --nonce-secret-env, proofs must carry a server nonce (RFC 9449 §8). It prints
// "READY http://HOST:PORT" once listening.
//
//	example-api --issuer https://broker.example.com/ --audience https://api.example.com --required
package main
