// Package redistest starts private, throw-away redis-server processes on free loopback ports
// for tests; it never touches a shared Redis.
//
// Its parts:
//   - Start and StartServer (redistest.go) start a single node with no persistence, stopped
//     at the test's cleanup; a Server can Stop and Restart (empty, on the same address) to
//     play a Redis outage. StartReplica and StartSentinel add a replica and a Sentinel that
//     fails over after one second.
//   - StartCluster (cluster.go) starts and joins a three-master Redis Cluster.
//     StartClusterWithReplicas (failover.go) starts one of three masters and three replicas
//     that fails over within seconds (FailoverNodeTimeout), with helpers to find the master
//     of a key's slot (MasterOf), the masters and replicas, and to SIGKILL a node (Kill);
//     WaitInSync waits until a replica holds its master's data.
//   - StartTLS (tls.go) starts a node that accepts only TLS with client certificates;
//     TLSFiles holds the generated CA and client files, and ClientConfig the client's
//     tls.Config.
//
// redis-server cannot inherit a listening socket, so a port is chosen first and redis-server
// binds it: another process may take the port in between (parallel test runs on one machine).
// When redis-server reports its port (or, in a cluster, its bus port) taken, the start is
// retried on a new port, a bounded number of times. Readiness is a generous poll; every failure
// shows redis-server's output.
//
//	addr := redistest.Start(t)
//	store, err := sessions.NewRedis(sessions.RedisConfig{Addrs: []string{addr}})
package redistest
