// Package config is the broker's configuration: the YAML file that config.example.yaml
// documents, read into a Config, checked, and turned into the two things the broker needs
// before it can serve: its keys and its session store.
//
//   - Config and its sections (Client, Connection, API, Store, Keys, RateLimits, Logs,
//     Management, ...) carry the file's keys one for one; Default holds every default.
//   - Load and Parse read a file: ${VAR} and ${VAR:-default} are expanded in every value,
//     unknown keys (with the key they most likely misspell) and malformed values are
//     FieldErrors naming the exact key.
//   - Validate checks the whole configuration (URL rules, clients, APIs and grants,
//     connections, DPoP, limits, logs, management tokens, keys) and returns every problem as
//     a FieldError; Warnings lists what is accepted but unsafe outside development.
//     SplitUnsetEnv sets apart the problems of values whose environment variables are not
//     set where the check runs (`broker config validate`).
//   - LoadKeys loads the private keys the configuration names into a KeyRing (the signing
//     key, the keys it replaced, and the DPoP signers toward upstreams).
//   - OpenStore opens the session store the configuration selects (memory or Redis).
//
// The package never serves HTTP: the broker package builds its server from a Config, and
// `broker config validate` needs nothing else.
package config
