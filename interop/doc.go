// Package interop logs in through the real broker binary against real third-party peers from npm:
// oidc-provider as the upstream IdP, openid-client as the downstream app, Chromium for the demo.
//
// It has no code outside its tests. TestMain (helpers_test.go) builds cmd/broker and
// cmd/example-api once; every test starts the peers it needs (the node scripts *.mjs, pinned
// by package-lock.json) on loopback ports, and skips when they are not installed
// (npm ci --prefix interop), unless INTEROP_REQUIRED=1 makes that a failure. The tests, by
// file:
//   - interop_test.go: logins with the upstream's DPoP modes (nonces, no nonces, RS256 only,
//     no DPoP, a Bearer answer, Okta), openid-client downstream, and the demo in Chromium;
//     peers_test.go checks the peers themselves.
//   - dpop_test.go, ed25519_test.go, exampleapi_test.go, spa_test.go: the broker as a DPoP
//     authorization server: bound tokens, proof replay at one and across replicas, the bound
//     access token at express-oauth2-jwt-bearer and cmd/example-api, auth0-spa-js in Chromium.
//   - replicas_test.go, mgmt_test.go, faults_test.go, upstreamnonce_test.go: several `broker
//     serve` replicas on one Redis, management changes seen by every replica, SIGTERM and
//     restarts mid-login, an upstream that stops using nonces.
//   - mgmtsdk_test.go: the identity SaaS's Node management SDK (mgmt-sdk.mjs) through the
//     management API's connection, client and log endpoints, then a login with the
//     connection it read, modified and wrote back whole.
//   - scopes_test.go: a public client cannot escalate its scopes.
//   - sso_test.go: single sign-on in one Chromium (sso-browser.mjs): auth0-spa-js apps on two
//     origins and express-openid-connect share the broker session without the upstream; a
//     logout at one app, or at the upstream (its back-channel logout to the broker), ends it
//     for all, the express app by the broker's back-channel logout.
//
// README.md lists the peers, their versions and what each scenario proves.
package interop
