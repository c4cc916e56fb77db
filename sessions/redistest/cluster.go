package redistest

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// clusterNodes is the number of masters StartCluster creates (no replicas).
const clusterNodes = 3

// clusterTimeout bounds joining the cluster and waiting for cluster_state:ok: a bound for
// loaded machines, not an expectation.
const clusterTimeout = 3 * time.Minute

// StartCluster starts a 3-master Redis Cluster on free 127.0.0.1 ports (no replicas, no
// persistence), joins it with redis-cli --cluster create and waits until every node reports
// cluster_state:ok. It returns the node addresses; the nodes are killed at cleanup. It fails
// the test if redis-server or redis-cli is missing or the cluster does not form within
// clusterTimeout.
func StartCluster(t testing.TB) (addrs []string) {
	t.Helper()
	return startCluster(t, 0, 5*time.Second).Addrs
}

// startCluster starts clusterNodes masters with replicas replicas each (cluster-node-timeout
// nodeTimeout), joins them and waits until every node reports cluster_state:ok and every
// replica is in sync with its master.
func startCluster(t testing.TB, replicas int, nodeTimeout time.Duration) *Cluster {
	t.Helper()
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found in PATH: install Debian package redis-server (and redis-tools)", bin)
		}
	}
	c := &Cluster{t: t, nodes: map[string]*Server{}}
	var ports []int
	for range (1 + replicas) * clusterNodes {
		// Each node in a directory of its own (nodes.conf, fresh for each start on a new
		// port). A replica always fails over, however long ago it last heard from its master
		// (cluster-replica-validity-factor 0): tests kill masters on purpose.
		s := run(t, &Server{cluster: true, args: []string{"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", strconv.FormatInt(nodeTimeout.Milliseconds(), 10),
			"--cluster-replica-validity-factor", "0"}})
		c.Addrs = append(c.Addrs, s.Addr)
		c.nodes[s.Addr] = s
		ports = append(ports, s.port)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	for {
		if clusterOK(ctx, ports) && c.replicasInSync(ctx, replicas*clusterNodes) {
			return c
		}
		select {
		case <-ctx.Done():
			t.Fatalf("redistest: cluster %v did not reach cluster_state:ok with %d replicas in sync within %v", c.Addrs, replicas*clusterNodes, clusterTimeout)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// clusterOK reports whether every node answers CLUSTER INFO with cluster_state:ok and all
// 16384 slots assigned.
func clusterOK(ctx context.Context, ports []int) bool {
	for _, p := range ports {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		out, err := exec.CommandContext(c, "redis-cli", "-h", "127.0.0.1", "-p", strconv.Itoa(p), "cluster", "info").Output()
		cancel()
		if err != nil || !bytes.Contains(out, []byte("cluster_state:ok")) ||
			!strings.Contains(string(out), "cluster_slots_ok:16384") {
			return false
		}
	}
	return true
}

// clusterPort returns a free loopback port P whose cluster bus port P+10000 is free too
// (bounded number of attempts). Both may still be taken before redis-server binds them: run
// then starts the node again on another port.
func clusterPort() (int, error) {
	var lastErr error = errNoPorts
	for range 200 {
		p, err := freePort()
		if err != nil {
			lastErr = err
			continue
		}
		if p+10000 > 65535 {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+10000)))
		if err != nil {
			lastErr = err
			continue
		}
		_ = l.Close()
		return p, nil
	}
	return 0, lastErr
}

var errNoPorts = errors.New("no free port pair (P, P+10000) found")
