package sessions_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
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

// TestRedisClusterSpreadsLogWrites: the log appends of logins (with their tallies, as a
// login on Cluster writes them) spread over the three masters, each master taking a share
// of the sorted-set and tally writes, a login's event and counters on one master, and every
// event is read back. It logs the commands
// each master ran (INFO commandstats) and its log and tally keys.
func TestRedisClusterSpreadsLogWrites(t *testing.T) {
	t.Parallel() // on redis-server(s) of its own: shares nothing with other tests
	addrs := redistest.StartCluster(t)
	raw := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { _ = raw.Close() })
	ctx := t.Context()
	s, err := sessions.NewRedis(sessions.RedisConfig{Addrs: addrs, Prefix: "spread"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	tl := s.(sessions.Tallier)
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if err := raw.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		return c.ConfigResetStat(ctx).Err()
	}); err != nil {
		t.Fatal(err)
	}
	const logins = 600
	now := time.Now()
	r := rand.New(rand.NewPCG(3, 4))
	for i := range logins {
		id := fmt.Sprintf("%020d%012d%024d", now.UnixNano()+int64(i), i, r.Int64N(1e18))
		if err := tl.AppendLogTallied(ctx, sessions.LogAudit, id, []byte(`{"type":"s"}`), 10000,
			sessions.Tally{At: now, Counts: map[string]int64{"s": 1, "c:app:s": 1}}); err != nil {
			t.Fatalf("AppendLogTallied %d: %v", i, err)
		}
	}
	type master struct {
		addr               string
		zadd, eval         int
		logKeys, tallyKeys int
		logEntries         int64
	}
	var mu sync.Mutex
	var ms []master
	if err := raw.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		info, err := c.Info(ctx, "commandstats").Result()
		if err != nil {
			return err
		}
		m := master{addr: c.Options().Addr, zadd: cmdCalls(info, "zadd"), eval: cmdCalls(info, "eval") + cmdCalls(info, "evalsha")}
		logKeys, err := c.Keys(ctx, "spread:log:*").Result()
		if err != nil {
			return err
		}
		for _, k := range logKeys {
			n, err := c.ZCard(ctx, k).Result()
			if err != nil {
				return err
			}
			m.logEntries += n
		}
		tallyKeys, err := c.Keys(ctx, "spread:tally:*").Result()
		if err != nil {
			return err
		}
		m.logKeys, m.tallyKeys = len(logKeys), len(tallyKeys)
		mu.Lock()
		ms = append(ms, m)
		mu.Unlock()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(ms, func(a, b master) int { return strings.Compare(a.addr, b.addr) })
	var entries int64
	for _, m := range ms {
		t.Logf("master %s: %d ZADD, %d EVAL/EVALSHA (tallies) for %d logins; %d log sets holding %d entries, %d tally hashes",
			m.addr, m.zadd, m.eval, logins, m.logKeys, m.logEntries, m.tallyKeys)
		entries += m.logEntries
		if m.zadd != m.eval {
			t.Errorf("master %s took %d ZADD and %d EVAL: a login's event and counters went to different masters", m.addr, m.zadd, m.eval)
		}
		if m.zadd < logins/6 || m.eval < logins/6 {
			t.Errorf("master %s took %d ZADD and %d EVAL of %d logins, want at least a sixth each", m.addr, m.zadd, m.eval, logins)
		}
	}
	if len(ms) != 3 || entries != logins {
		t.Fatalf("%d masters holding %d entries, want 3 holding %d", len(ms), entries, logins)
	}
	es, err := s.LogsAfter(ctx, "", 1000)
	if err != nil || len(es) != logins {
		t.Fatalf("LogsAfter = %d entries, %v; want %d", len(es), err, logins)
	}
	minute := now.Truncate(time.Minute) // one bucket, whatever the second
	tb, err := tl.Tallies(ctx, sessions.TallyMinute, minute, minute.Add(time.Second))
	if err != nil || len(tb) != 1 || tb[0].Counts["s"] != logins {
		t.Fatalf("Tallies = %+v, %v; want s %d", tb, err, logins)
	}
}

// cmdCalls is the calls= count of cmdstat_NAME in an INFO commandstats reply.
func cmdCalls(info, name string) int {
	for _, line := range strings.Split(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+name+":calls=")
		if !ok {
			continue
		}
		n, _ := strconv.Atoi(strings.SplitN(rest, ",", 2)[0])
		return n
	}
	return 0
}
