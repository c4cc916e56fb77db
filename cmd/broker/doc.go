// Command broker runs dpop-broker: the OIDC federation broker (serve), a zero-setup demo, and
// operator tools (config validate, discovery check, keys generate, logs, healthcheck).
//
// Usage:
//
//	broker serve --config FILE [--listen HOST:PORT]
//	broker demo [--listen-host H] [--broker-port P] [--idp-port P] [--app-port P]
//	broker config validate [--require-env] FILE
//	broker discovery check ISSUER [--alg ES256] [--discovery-url URL] [--allow-network CIDR]...
//	broker keys generate [--alg ES256|Ed25519|RS256|PS256]
//	broker healthcheck [--url URL | --listen HOST:PORT | --config FILE] [--ready] [--timeout 5s]
//	broker logs [--type f] [--connection NAME] [--client ID] [--q QUERY] [--follow] ...
//
// Each command has its file:
//   - serve.go loads and validates the configuration, opens the store, builds the
//     broker.Server and serves it; listen.go picks its address (--listen, $BROKER_LISTEN, the
//     configuration), activation.go takes a listening socket handed over by the supervisor
//     (systemd socket activation), logger.go builds the throttled JSON logger.
//   - demo.go runs the broker, the demo upstream IdP (upstream/demoidp) and two of sampleapp.go's
//     relying parties (single sign-on, silent authentication, back-channel logout) in one
//     process, with a memory store and generated keys.
//   - config.go, discovery.go and keys.go are the operator tools: check a configuration
//     file, show what an upstream supports for DPoP, print a new private key.
//   - healthcheck.go probes a running broker's /healthz or /readyz (for container health
//     checks); logs.go shows or follows login events through the management API.
//
// main.go dispatches the commands and holds the HTTP server settings they share.
package main
