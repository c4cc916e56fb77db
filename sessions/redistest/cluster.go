package redistest

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// clusterNodes is the number of masters StartCluster creates (no replicas).
const clusterNodes = 3

// StartCluster starts a 3-master Redis Cluster on free 127.0.0.1 ports (no replicas, no
// persistence), joins it with redis-cli --cluster create and waits until every node reports
// cluster_state:ok. It returns the node addresses; the nodes are killed at cleanup. It fails
// the test if redis-server or redis-cli is missing or the cluster does not form within 30s.
func StartCluster(t testing.TB) (addrs []string) {
	t.Helper()
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found in PATH: install Debian package redis-server (and redis-tools)", bin)
		}
	}
	dir := t.TempDir()
	ports, err := clusterPorts(clusterNodes)
	if err != nil {
		t.Fatalf("redistest: cluster ports: %v", err)
	}
	for _, p := range ports {
		s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), t: t, port: p, dir: dir}
		t.Cleanup(s.Stop)
		s.args = []string{"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, "nodes-"+strconv.Itoa(p)+".conf"),
			"--cluster-node-timeout", "5000",
			"--dbfilename", "dump-" + strconv.Itoa(p) + ".rdb"}
		s.start()
		addrs = append(addrs, s.Addr)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	for attempt := 0; attempt < 600; attempt++ { // ≤ 30s at 50ms
		if clusterOK(ctx, ports) {
			return addrs
		}
		select {
		case <-ctx.Done():
			t.Fatalf("redistest: cluster %v did not reach cluster_state:ok within 30s", addrs)
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("redistest: cluster %v did not reach cluster_state:ok", addrs)
	return nil
}

// clusterOK reports whether every node answers CLUSTER INFO with cluster_state:ok and all
// 16384 slots assigned.
func clusterOK(ctx context.Context, ports []int) bool {
	for _, p := range ports {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		out, err := exec.CommandContext(c, "redis-cli", "-h", "127.0.0.1", "-p", strconv.Itoa(p), "cluster", "info").Output()
		cancel()
		if err != nil || !bytes.Contains(out, []byte("cluster_state:ok")) ||
			!strings.Contains(string(out), "cluster_slots_ok:16384") {
			return false
		}
	}
	return true
}

// clusterPorts returns n distinct free loopback ports P whose cluster bus port P+10000 is free
// too (bounded number of attempts).
func clusterPorts(n int) ([]int, error) {
	var ports []int
	seen := map[int]bool{}
	var lastErr error
	for attempt := 0; attempt < 200 && len(ports) < n; attempt++ {
		p, err := freePort()
		if err != nil {
			lastErr = err
			continue
		}
		if seen[p] || p+10000 > 65535 || seen[p+10000] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+10000)))
		if err != nil {
			lastErr = err
			continue
		}
		_ = l.Close()
		seen[p], seen[p+10000] = true, true
		ports = append(ports, p)
	}
	if len(ports) < n {
		if lastErr == nil {
			lastErr = errNoPorts
		}
		return nil, lastErr
	}
	return ports, nil
}

var errNoPorts = errors.New("no free port pair (P, P+10000) found")
