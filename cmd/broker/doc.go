// Command broker runs dpop-broker: the OIDC federation broker (serve), a zero-setup demo, and
// operator tools (config validate, discovery check, keys generate, logs, healthcheck, version).
//
// Usage:
//
//	broker serve --config FILE [--listen HOST:PORT]
//	broker demo [--listen-host H] [--broker-port P] [--idp-port P] [--app-port P]
//	broker config validate [--require-env] [--online [--timeout 15s]] FILE
//	broker discovery check ISSUER [--alg ES256] [--discovery-url URL] [--allow-network CIDR]... [--timeout 15s]
//	broker keys generate [--alg ES256|Ed25519|RS256|PS256]
//	broker healthcheck [--url URL | --listen HOST:PORT | --config FILE] [--ready] [--timeout 5s]
//	broker logs [--type f] [--connection NAME] [--client ID] [--q QUERY] [--follow] ...
//	broker version (or broker --version)
//
// Every command's --help prints its flags and examples. Exit statuses: 0 success, 1 a problem
// found (or a failure), 2 a usage mistake, 3 an upstream that could not be reached
// (healthcheck exits 1 for usage mistakes: container engines reserve 2).
//
// Each command has its file:
//   - commands.go documents every command (help, examples, the command list), dispatches
//     them, suggests the nearest command for a mistyped one, and defines the exit statuses;
//     main.go holds the HTTP server settings the commands share.
//   - serve.go loads and validates the configuration, opens the store, builds the
//     broker.Server and serves it; listen.go picks its address (--listen, $BROKER_LISTEN, the
//     configuration), activation.go takes a listening socket handed over by the supervisor
//     (systemd socket activation), logger.go builds the throttled JSON logger, reload.go
//     reloads the configuration file on SIGHUP (broker.Server.Reload; demo ignores it).
//   - demo.go runs the broker, the demo upstream IdP (upstream/demoidp) and two of sampleapp.go's
//     relying parties (single sign-on, silent authentication, back-channel logout) in one
//     process, with a memory store and generated keys.
//   - config.go, discovery.go and keys.go are the operator tools: check a configuration
//     file (and, with --online, every connection's upstream), show what an upstream supports
//     for DPoP, print a new private key; version.go prints the build (package buildinfo).
//   - healthcheck.go probes a running broker's /healthz or /readyz (for container health
//     checks); logs.go shows or follows login events through the management API.
package main
