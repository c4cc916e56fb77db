package redistest

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// FailoverNodeTimeout is the cluster-node-timeout of StartClusterWithReplicas: a master that
// has not answered its peers for this long is failed, and its replica is promoted about a
// second later. Long enough that a loaded 2-core machine (a node busy for a while, the race
// detector in the test process) does not make a healthy master look dead, short enough
// that a failover takes seconds.
const FailoverNodeTimeout = 3 * time.Second

// Cluster is a Redis Cluster of masters and replicas started by StartClusterWithReplicas.
type Cluster struct {
	Addrs []string // every node's address, masters first as created

	t     testing.TB
	nodes map[string]*Server
}

// StartClusterWithReplicas starts a Redis Cluster of 3 masters and 3 replicas (one per
// master) on free 127.0.0.1 ports, with cluster-node-timeout FailoverNodeTimeout and no
// persistence, and waits until every node reports cluster_state:ok and every replica is in
// sync with its master. The nodes are killed at cleanup.
func StartClusterWithReplicas(t testing.TB) *Cluster {
	t.Helper()
	return startCluster(t, 1, FailoverNodeTimeout)
}

// replicasInSync reports whether want nodes are replicas whose link to their master is up.
func (c *Cluster) replicasInSync(ctx context.Context, want int) bool {
	n := 0
	for _, addr := range c.Addrs {
		info, err := c.cmd(ctx, addr, "info", "replication")
		if err != nil {
			return false
		}
		if strings.Contains(info, "role:slave") && linkUp(info) {
			n++
		}
	}
	return n == want
}

// linkUp reports whether INFO replication's output says the replica follows its master.
func linkUp(info string) bool { return strings.Contains(info, "master_link_status:up") }

// cmd runs one redis-cli command against addr (bounded) and returns its output.
func (c *Cluster) cmd(ctx context.Context, addr string, args ...string) (string, error) {
	host, port := splitMaster(c.t, addr)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "redis-cli", append([]string{"-h", host, "-p", port}, args...)...).Output()
	return string(out), err
}

// Kill kills the node at addr with SIGKILL (no shutdown, no goodbye to its peers) and waits
// for it to exit.
func (c *Cluster) Kill(addr string) {
	c.t.Helper()
	s := c.nodes[addr]
	if s == nil {
		c.t.Fatalf("redistest: no node %s in cluster %v", addr, c.Addrs)
	}
	s.Stop()
}

// MasterOf returns the address of the master that serves key's slot, as a live node other
// than skip ("" = none) sees it now.
func (c *Cluster) MasterOf(ctx context.Context, key, skip string) (string, error) {
	var lastErr error
	for _, addr := range c.Addrs {
		if addr == skip || !c.alive(addr) {
			continue
		}
		master, err := masterOf(ctx, addr, key)
		if err == nil {
			return master, nil
		}
		lastErr = err
	}
	return "", fmt.Errorf("redistest: no live node answered for the slot of %q: %v", key, lastErr)
}

// masterOf asks the node at addr which master serves key's slot.
func masterOf(ctx context.Context, addr, key string) (string, error) {
	rc := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 2 * time.Second})
	defer rc.Close()
	slot, err := rc.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		return "", err
	}
	shards, err := rc.ClusterShards(ctx).Result()
	if err != nil {
		return "", err
	}
	for _, sh := range shards {
		for _, r := range sh.Slots {
			if r.Start <= slot && slot <= r.End {
				if m := shardMaster(sh); m != "" {
					return m, nil
				}
			}
		}
	}
	return "", fmt.Errorf("slot %d of %q has no master in %s's map", slot, key, addr)
}

// shardMaster returns the address of the shard's master ("" when it has none).
func shardMaster(sh redis.ClusterShard) string {
	for _, n := range sh.Nodes {
		if n.Role == "master" {
			return net.JoinHostPort(n.IP, strconv.FormatInt(n.Port, 10))
		}
	}
	return ""
}

// Masters returns the addresses of the masters that serve slots, as the live node at addr
// sees them.
func (c *Cluster) Masters(ctx context.Context) ([]string, error) {
	for _, addr := range c.Addrs {
		if !c.alive(addr) {
			continue
		}
		rc := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 2 * time.Second})
		shards, err := rc.ClusterShards(ctx).Result()
		_ = rc.Close()
		if err != nil {
			continue
		}
		var out []string
		for _, sh := range shards {
			if m := shardMaster(sh); m != "" && len(sh.Slots) > 0 {
				out = append(out, m)
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("redistest: no live node in %v", c.Addrs)
}

// Replicas returns the addresses of the nodes that are replicas now.
func (c *Cluster) Replicas(ctx context.Context) []string {
	var out []string
	for _, addr := range c.Addrs {
		if !c.alive(addr) {
			continue
		}
		if info, err := c.cmd(ctx, addr, "info", "replication"); err == nil && strings.Contains(info, "role:slave") {
			out = append(out, addr)
		}
	}
	return out
}

// alive reports whether the node at addr runs (was not killed).
func (c *Cluster) alive(addr string) bool {
	s := c.nodes[addr]
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// WaitInSync waits (bounded by readyTimeout) until the replica at addr has loaded its master's
// data and follows it (master_link_status:up): a replica promoted before that is empty. Redis
// 7 waits repl-diskless-sync-delay (5 s) before the first transfer.
func WaitInSync(t testing.TB, addr string) {
	t.Helper()
	host, port := splitMaster(t, addr)
	deadline := time.Now().Add(readyTimeout)
	var last string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, "redis-cli", "-h", host, "-p", port, "info", "replication").Output()
		cancel()
		last = string(out)
		if err == nil && linkUp(last) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("redistest: replica %s not in sync with its master within %v:\n%s", addr, readyTimeout, last)
}
