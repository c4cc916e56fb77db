package sessions_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/sessions/redistest"
)

// TestRedisClusterConformance runs the whole store conformance suite on a real 3-master Redis
// Cluster: every multi-key operation (PutAll's MULTI, the log's ZADD+ZREMRANGEBYRANK, the
// connection scripts) must stay within one hash slot, or Redis answers CROSSSLOT.
func TestRedisClusterConformance(t *testing.T) {
	t.Parallel() // on redis-server(s) of its own: shares nothing with other tests
	runRedisConformance(t, redistest.StartCluster(t), nil)
}

// TestRedisClusterAllOps calls every Store and Connections method once on the cluster and
// fails on any error other than ErrNotFound (a CROSSSLOT reply names the method).
func TestRedisClusterAllOps(t *testing.T) {
	t.Parallel() // on redis-server(s) of its own: shares nothing with other tests
	addrs := redistest.StartCluster(t)
	s, err := sessions.NewRedis(sessions.RedisConfig{Addrs: addrs, Prefix: "ops"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	for op, err := range allOps(t.Context(), s) {
		if err != nil && !errors.Is(err, sessions.ErrNotFound) {
			t.Errorf("%s on Redis Cluster: %v", op, err)
		}
	}
}

// TestRedisClusterSpreadsKeys checks the harness really is a 3-master cluster and that records
// with different hash tags land in different slots while one tag's batch is atomic in one slot.
func TestRedisClusterSpreadsKeys(t *testing.T) {
	t.Parallel() // on redis-server(s) of its own: shares nothing with other tests
	addrs := redistest.StartCluster(t)
	raw := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { _ = raw.Close() })
	masters := 0
	nodes, err := raw.ClusterNodes(t.Context()).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(nodes), "\n") {
		if strings.Contains(line, "master") {
			masters++
		}
	}
	if masters != 3 {
		t.Fatalf("cluster has %d masters, want 3:\n%s", masters, nodes)
	}

	s, err := sessions.NewRedis(sessions.RedisConfig{Addrs: addrs, Prefix: "spread"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	slots := map[int64]bool{}
	for i := range 32 {
		tag := fmt.Sprintf("tx%d", i)
		// One transaction's records share the tag: one atomic MULTI in one slot.
		if err := s.PutAll(t.Context(),
			sessions.Item{Kind: sessions.KindCode, ID: tag + ".code", Value: []byte("c"), TTL: time.Minute},
			sessions.Item{Kind: sessions.KindSession, ID: tag + ".sess", Value: []byte("s"), TTL: time.Minute},
		); err != nil {
			t.Fatalf("PutAll %s: %v", tag, err)
		}
		slot, err := raw.ClusterKeySlot(t.Context(), sessions.Key("spread", sessions.KindCode, tag+".code")).Result()
		if err != nil {
			t.Fatal(err)
		}
		slots[slot] = true
		if _, err := s.Take(t.Context(), sessions.KindCode, tag+".code"); err != nil {
			t.Fatalf("Take %s: %v", tag, err)
		}
	}
	if len(slots) < 2 {
		t.Fatalf("32 tags used %d slot(s); keys are not spread", len(slots))
	}
}
