// Package deploy holds no code: its tests check the deployment examples in this folder.
// Its own Go module keeps the validators' dependencies (compose-go, the Kubernetes API
// types) out of the broker's go.mod; `make test` runs it (the Makefile's deploy target).
//
//   - docker-compose.yaml (the try-out: broker, Redis, demo IdP) is loaded by compose-go, the
//     library Docker Compose itself uses, which validates it against the Compose
//     Specification's JSON schema;
//   - kubernetes/*.yaml are validated against the Kubernetes API's OpenAPI schemas
//     (validate-kubernetes.mjs, the kubernetes-models package pinned in package-lock.json)
//     and decoded strictly into the k8s.io/api types (an unknown or misspelt field fails);
//   - both follow the deployment policy (composePolicy, kubernetesPolicy): the broker configuration they
//     mount passes `broker config validate` (package config), every secret comes from the
//     environment (a Kubernetes Secret, the shell for compose), the store is Redis,
//     probes use /readyz and /healthz, admin_listen is not published, and containers run as
//     non-root users on read-only root file systems (two broker replicas on Kubernetes).
package deploy
