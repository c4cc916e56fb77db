// Package broker is the broker's HTTP face: the OpenID provider that apps sign in with, which
// sends each login on to an upstream IdP (over DPoP) and federates the result back to the app.
//
// Configuration comes from package config (github.com/dpop-broker/dpop-broker/config): New
// takes a checked config.Config, and Deps the collaborators (store, event writer, logger,
// keys, clock, upstream HTTP client, resolver), each with a default. Server.Init seeds the
// configured connections into the store and starts the log streams; Server.Handler is the whole HTTP API; Server.Store,
// Server.Events and Server.Metrics expose what the demo and tests look at; Server.Close, once
// the HTTP server has stopped, lets pending back-channel logout deliveries finish and stops
// the log streams.
//
// The handlers, by endpoint group:
//   - OpenID provider endpoints (wellknown.go, authorize.go, grants.go): the discovery
//     document (also as RFC 8414 metadata) and JWK Set under /.well-known, and GET /authorize,
//     which checks the app's request (client, redirect_uri, PKCE, scopes and audiences granted
//     by policy) and redirects to the chosen connection's upstream (or shows a chooser).
//   - Login and callback (callback.go, callbackpath.go, registry.go, upstreamhttp.go,
//     egress.go, errors.go, loginwrite.go, cookies.go): GET /login/callback (and
//     /login/callback/{connection}) finishes the upstream login through package upstream,
//     stores the session and the code and redirects to the app. Connections live in the store
//     (the registry, seeded from the configuration, edited by the management API, kept in
//     memory on each replica and told of changes by the store's watch); upstream
//     calls go through an HTTP client that refuses internal addresses and redirects; a failed
//     browser login takes one typed path (loginFailure, failLogin).
//   - Logout (logout.go, backchannel.go): GET/POST /v2/logout, OpenID Connect RP-Initiated
//     Logout at /oidc/logout, and /logout/federated, where the upstream returns after a
//     federated logout; an ended session is announced to its apps by OpenID Connect
//     Back-Channel Logout (logout tokens POSTed from a bounded queue and a worker per app).
//   - Token, refresh, revocation and userinfo (token.go, codereuse.go, refresh.go,
//     refreshtoken.go, revoke.go, userinfo.go, opaque.go, dpopserver.go, noncechallenge.go):
//     POST /oauth/token redeems codes (single use, replay revokes) and rotates refresh-token
//     families, issuing ID tokens and JWT or opaque access tokens, DPoP-bound when the client
//     sends proofs (dpop.Verifier with the replay cache in the store and server nonces);
//     POST /oauth/revoke is RFC 7009; GET/POST /userinfo accepts Bearer or DPoP tokens.
//   - Management API under /api/v2 (mgmt.go, mgmt_connections.go, mgmt_logs.go,
//     mgmt_sessions.go): static bearer tokens with scopes; connections (list, create, read,
//     update, delete), the event log (search, checkpoint paging, one event) and single
//     sign-on sessions (read, a user's list, delete one or all of a user's); sapi and fapi
//     events.
//   - Event log (events.go, eventlog.go): the events the handlers record (s, f, seacft,
//     slo, sapi, …), written through a logs.Writer whose retention classes and limits
//     NewEventWriter sets from the configuration.
//   - Log streams (logstreams.go): log_streams run by package logstream from Init to Close,
//     reading through the server's writer, each with an HTTP client under the address policy.
//   - Rate limits and bounded state (ratelimit.go, limits.go, userinfolimit.go,
//     refreshlimit.go, mgmtlimit.go, bounded.go): token buckets per client IP (behind
//     trusted proxies), client, session, refresh-token family and management token, with 429
//     and Retry-After; size limits on untrusted input; at most so many live login
//     transactions per IP; a full store answers 503 and writes nothing.
//   - Metrics (metrics.go, store.go): Prometheus counters and histograms of logins, upstream
//     exchanges, token requests, events, store failures and HTTP requests, on a registry of
//     the Server's own, served at GET /metrics.
//   - Health (server.go): GET /healthz (the process answers) and GET /readyz (the store can
//     serve a login: sessions.Readier's Ready, else a ping; reused for a second), and a page
//     at the base URL. A failed store operation is a 503 in every handler, never a 500
//     (storeOpError, storeDown).
//   - The operators' console under /console (console.go, consolesession.go,
//     consoleconnections.go, consoleusers.go, consolelogs.go; pages and assets embedded from
//     console/): sign-in through the broker as its built-in client or with a management
//     token, cookie sessions with CSRF tokens, and pages whose writes run the management
//     API's handlers in-process. The Logs page searches the event log with the API's q,
//     chips and a time range, tails it live (one bounded read a second) and shows an event
//     with its DPoP facts and the troubleshooting entry of logs.TroubleshootingFor
//     (failed logins, token-endpoint and management refusals). With admin_listen,
//     Server.AdminHandler serves /console, /metrics and /api/v2 and Server.Handler no
//     longer does.
//
// UpstreamHTTPClient builds the upstream client for operator tools; AddressRefusedError is
// its refusal of an internal address.
//
// cmd/broker serves it like this:
//
//	srv, err := broker.New(cfg, broker.Deps{Store: store, Events: events, Logger: logger})
//	if err != nil {
//		// handle error
//	}
//	if err := srv.Init(ctx); err != nil { // seed the configured connections
//		// handle error
//	}
//	httpServer := &http.Server{Addr: cfg.Listen, Handler: srv.Handler()}
//	// … serve; on SIGHUP, srv.Reload(ctx, loadTheFileAgain) (reload.go: what changes live);
//	// after httpServer.Shutdown, before the store closes:
//	srv.Close()
package broker
