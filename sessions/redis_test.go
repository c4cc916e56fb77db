package sessions_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/sessions/redistest"
	"github.com/dpop-broker/dpop-broker/sessions/storetest"
)

func TestRedisConformance(t *testing.T) {
	t.Parallel() // on redis-server(s) of its own: shares nothing with other tests
	runRedisConformance(t, []string{redistest.Start(t)}, nil)
}

// TestRedisTLS: the whole conformance suite over TLS with a client certificate
// (tls-auth-clients yes); without TLS, or without the client certificate, the store is
// unavailable, never silently in clear text.
func TestRedisTLS(t *testing.T) {
	t.Parallel() // on redis-server(s) of its own: shares nothing with other tests
	srv, files := redistest.StartTLS(t)
	runRedisConformance(t, []string{srv.Addr}, files.ClientConfig(t))
	noCert := files.ClientConfig(t)
	noCert.Certificates = nil
	for name, tc := range map[string]*tls.Config{"plain TCP": nil, "TLS without the client certificate": noCert} {
		s, err := sessions.NewRedis(sessions.RedisConfig{Addrs: []string{srv.Addr}, Timeout: 500 * time.Millisecond, TLS: tc})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Ping(context.Background()); !errors.Is(err, sessions.ErrUnavailable) {
			t.Errorf("%s: Ping = %v, want ErrUnavailable", name, err)
		}
		_ = s.Close()
	}
}

// TestRedisSentinel: the conformance suite through a Sentinel (MasterName), which itself
// requires a password; with a wrong Sentinel password the store is unavailable.
func TestRedisSentinel(t *testing.T) {
	t.Parallel() // on redis-server(s) of its own: shares nothing with other tests
	master := redistest.Start(t)
	sentinel := redistest.StartSentinel(t, master, "broker-master", "sentinel-secret")
	var n atomic.Int64
	open := func(t *testing.T, password string) sessions.Store {
		s, err := sessions.NewRedis(sessions.RedisConfig{Addrs: []string{sentinel}, MasterName: "broker-master",
			SentinelPassword: password, Prefix: fmt.Sprintf("sent%d", n.Add(1)), Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	storetest.Run(t, func(t *testing.T) sessions.Store { return open(t, "sentinel-secret") })
	if err := open(t, "wrong").Ping(context.Background()); !errors.Is(err, sessions.ErrUnavailable) {
		t.Errorf("Ping with a wrong Sentinel password = %v, want ErrUnavailable", err)
	}
}

// runRedisConformance runs the store conformance suite on the Redis at addrs (one node or a
// cluster; over TLS when tc is set), each subtest under its own key prefix so records and logs
// stay apart.
func runRedisConformance(t *testing.T, addrs []string, tc *tls.Config) {
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T) sessions.Store {
		s, err := sessions.NewRedis(sessions.RedisConfig{Addrs: addrs, Prefix: fmt.Sprintf("conf%d", n.Add(1)), TLS: tc})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

func newRedis(t *testing.T, addr string, timeout time.Duration) sessions.Store {
	t.Helper()
	s, err := sessions.NewRedis(sessions.RedisConfig{Addrs: []string{addr}, Prefix: "t", Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// allOps calls every Store method, and the index operations built on them, and returns its
// error by name.
func allOps(ctx context.Context, s sessions.Store) map[string]error {
	errs := map[string]error{
		"Create":    s.Create(ctx, sessions.KindJTI, "j", []byte("v"), time.Minute),
		"Put":       s.Put(ctx, sessions.KindSession, "s", []byte("v"), time.Minute),
		"PutAll":    s.PutAll(ctx, sessions.Item{Kind: sessions.KindCode, ID: "c.1", Value: []byte("v"), TTL: time.Minute}),
		"Delete":    s.Delete(ctx, sessions.KindSession, "s"),
		"AppendLog": s.AppendLog(ctx, sessions.LogUnauthenticated, fmt.Sprintf("%056d", 1), []byte("{}"), 10),
		"Ping":      s.Ping(ctx),
	}
	if errs["Swap"] = s.Put(ctx, sessions.KindRefresh, "w.f", []byte("v"), time.Minute); errs["Swap"] == nil {
		errs["Swap"] = s.Swap(ctx, sessions.KindRefresh, "w.f", []byte("v"),
			[]sessions.Item{{Kind: sessions.KindRefresh, ID: "w.f", Value: []byte("w"), TTL: time.Minute}},
			[]sessions.Ref{{Kind: sessions.KindCode, ID: "w.c"}})
	}
	idx, now := sessions.IndexID("user", "u"), time.Now()
	_, errs["IndexAdd"] = sessions.IndexAdd(ctx, s, idx, "m", now.Add(time.Minute), now, 10)
	_, errs["IndexMembers"] = sessions.IndexMembers(ctx, s, idx, now)
	errs["IndexRemove"] = sessions.IndexRemove(ctx, s, idx, now, "m")
	_, errs["Get"] = s.Get(ctx, sessions.KindSession, "s")
	_, errs["Take"] = s.Take(ctx, sessions.KindCode, "c.1")
	_, errs["Logs"] = s.Logs(ctx, "", 10)
	_, errs["LogsAfter"] = s.LogsAfter(ctx, "", 10)
	_, errs["LogsBefore"] = s.LogsBefore(ctx, "", 10)
	_, errs["Log"] = s.Log(ctx, fmt.Sprintf("%056d", 1))
	errs["TrimLogs"] = s.TrimLogs(ctx, sessions.LogUnauthenticated, fmt.Sprintf("%056d", 1))
	c := s.(sessions.Connections)
	errs["CreateConnection"] = c.CreateConnection(ctx, "con_1", "a", []byte("{}"))
	_, errs["SeedConnection"] = c.SeedConnection(ctx, "con_1", "a", []byte("{}"))
	_, errs["GetConnection"] = c.GetConnection(ctx, "con_1")
	_, _, errs["ConnectionByName"] = c.ConnectionByName(ctx, "a")
	_, errs["ListConnections"] = c.ListConnections(ctx)
	errs["UpdateConnection"] = c.UpdateConnection(ctx, "con_1", []byte("{}"))
	errs["DeleteConnection"] = c.DeleteConnection(ctx, "con_1", nil)
	_, errs["ConnectionTombstone"] = c.ConnectionTombstone(ctx, "con_1")
	_, errs["ConnectionsVersion"] = c.ConnectionsVersion(ctx)
	tl := s.(sessions.Tallier)
	errs["AppendLogTallied"] = tl.AppendLogTallied(ctx, sessions.LogAudit, fmt.Sprintf("%056d", 2), []byte("{}"), 10,
		sessions.Tally{At: now, Counts: map[string]int64{"s": 1, "c:a:s": 1}})
	_, errs["Tallies"] = tl.Tallies(ctx, sessions.TallyMinute, now.Add(-time.Hour), now)
	return errs
}

func TestRedisUnavailable(t *testing.T) {
	srv := redistest.StartServer(t)
	s := newRedis(t, srv.Addr, 200*time.Millisecond)
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping while up: %v", err)
	}
	srv.Stop()
	for op, err := range allOps(t.Context(), s) {
		if !errors.Is(err, sessions.ErrUnavailable) {
			t.Errorf("%s with Redis stopped = %v, want ErrUnavailable", op, err)
		}
	}

	// Nothing listening at all, and a caller deadline that has passed.
	s2 := newRedis(t, srv.Addr, 0)
	ctx, cancel := context.WithTimeout(t.Context(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	if _, err := s2.Get(ctx, sessions.KindSession, "s"); !errors.Is(err, sessions.ErrUnavailable) {
		t.Errorf("Get with expired context = %v, want ErrUnavailable", err)
	}

	// The store recovers when Redis comes back (empty: no persistence).
	srv.Restart()
	var err error
	// Pooled connections to the old process may fail once; the bound is for loaded machines.
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if err = s.Put(t.Context(), sessions.KindSession, "s", []byte("v"), time.Minute); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("Put after restart: %v", err)
	}
	if _, err := s.Get(t.Context(), sessions.KindSession, "s"); err != nil {
		t.Fatalf("Get after restart: %v", err)
	}
}

func TestRedisBadRequestIsNotUnavailable(t *testing.T) {
	addr := redistest.Start(t)
	s := newRedis(t, addr, 0)
	// Make the audit key of log shard 0 the wrong type: a server-side refusal, not an
	// outage. Of 60 appends, those whose id falls in shard 0 are refused.
	raw := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = raw.Close() })
	if err := raw.Set(t.Context(), "t:log:{log.0.2}", "x", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	refused := 0
	for n := 1; n <= 60; n++ {
		err := s.AppendLog(t.Context(), sessions.LogAudit, fmt.Sprintf("%056d", n), []byte("{}"), 10)
		if errors.Is(err, sessions.ErrUnavailable) {
			t.Fatalf("AppendLog on a WRONGTYPE key = %v, want a non-ErrUnavailable error", err)
		}
		if err != nil {
			refused++
		}
	}
	if refused == 0 {
		t.Fatal("no AppendLog of 60 went to the WRONGTYPE key of shard 0")
	}
}

func TestNewRedisConfig(t *testing.T) {
	for _, cfg := range []sessions.RedisConfig{
		{},
		{Addrs: []string{""}},
		{Addrs: []string{"127.0.0.1:1"}, Prefix: "a{b}"},
	} {
		if _, err := sessions.NewRedis(cfg); err == nil {
			t.Errorf("NewRedis(%+v) succeeded", cfg)
		}
	}
}

// Connection records are durable (no expiry) and live in one Cluster slot, so the create
// script's multi-key check-and-set is legal on Redis Cluster.
func TestRedisConnectionKeys(t *testing.T) {
	addr := redistest.Start(t)
	s := newRedis(t, addr, 0)
	c := s.(sessions.Connections)
	if err := c.CreateConnection(t.Context(), "con_1", "acme", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	raw := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = raw.Close() })
	keys, err := raw.Keys(t.Context(), "t:conn:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 4 {
		t.Fatalf("connection keys = %q, want 4 (doc, id, name, ver)", keys)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, "t:conn:{conn}:") {
			t.Errorf("key %q lacks the {conn} hash tag", k)
		}
		ttl, err := raw.TTL(t.Context(), k).Result()
		if err != nil || ttl != -1 {
			t.Errorf("TTL(%q) = %v, %v; want no expiry", k, ttl, err)
		}
	}
}

// A second store on the same Redis (another replica, or the broker after a restart) sees the
// event log and the connections written by the first.
func TestRedisSharedAcrossClients(t *testing.T) {
	addr := redistest.Start(t)
	a, b := newRedis(t, addr, 0), newRedis(t, addr, 0)
	id := fmt.Sprintf("%056d", 7)
	if err := a.AppendLog(t.Context(), sessions.LogAudit, id, []byte(`{"n":7}`), 10); err != nil {
		t.Fatal(err)
	}
	if err := a.(sessions.Connections).CreateConnection(t.Context(), "con_1", "acme", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Log(t.Context(), id); err != nil || string(got.Event) != `{"n":7}` {
		t.Fatalf("second client Log = %q, %v", got, err)
	}
	bc := b.(sessions.Connections)
	v1, err := bc.ConnectionsVersion(t.Context())
	if err != nil || v1 < 1 {
		t.Fatalf("second client version = %d, %v", v1, err)
	}
	if err := a.(sessions.Connections).UpdateConnection(t.Context(), "con_1", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	if v2, err := bc.ConnectionsVersion(t.Context()); err != nil || v2 <= v1 {
		t.Fatalf("second client version after update = %d, %v; want above %d", v2, err, v1)
	}
	if got, err := bc.GetConnection(t.Context(), "con_1"); err != nil || string(got) != "v2" {
		t.Fatalf("second client GetConnection = %q, %v", got, err)
	}
}

// TestRedisSentinelFailover: the master dies, the Sentinel promotes its replica, and the
// store (through the Sentinel) keeps working without a restart: records written before the
// failover (replicated) are read back, and new writes succeed. The waits are bounds for loaded
// machines (2 minutes for the failover), not expectations.
func TestRedisSentinelFailover(t *testing.T) {
	t.Parallel() // on redis-server(s) of its own: shares nothing with other tests
	ctx := context.Background()
	master := redistest.StartServer(t)
	replica := redistest.StartReplica(t, master.Addr)
	direct := func(addr string) *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: addr})
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	waitFor := func(what string, limit time.Duration, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(limit); !ok(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %v", what, limit)
			}
		}
	}
	waitFor("replica in sync", time.Minute, func() bool {
		info, _ := direct(replica.Addr).Info(ctx, "replication").Result()
		return strings.Contains(info, "master_link_status:up")
	})
	sentinel := redistest.StartSentinel(t, master.Addr, "fo", "")
	waitFor("Sentinel sees the replica", time.Minute, func() bool {
		rs, _ := direct(sentinel).Do(ctx, "SENTINEL", "REPLICAS", "fo").Slice()
		return len(rs) == 1
	})
	st, err := sessions.NewRedis(sessions.RedisConfig{Addrs: []string{sentinel}, MasterName: "fo", Prefix: "fo", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if err := st.Put(ctx, sessions.KindSession, "before.s", []byte("v1"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if n, err := direct(master.Addr).Wait(ctx, 1, time.Minute).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT for the replica: %d %v", n, err)
	}

	master.Stop()
	start := time.Now()
	waitFor("writes through the Sentinel after the failover", 2*time.Minute, func() bool {
		return st.Put(ctx, sessions.KindSession, "after.s", []byte("v2"), time.Minute) == nil
	})
	t.Logf("store writable again %v after the master stopped", time.Since(start).Round(10*time.Millisecond))
	if v, err := st.Get(ctx, sessions.KindSession, "before.s"); err != nil || string(v) != "v1" {
		t.Errorf("record from before the failover: %q %v", v, err)
	}
	if role, _ := direct(replica.Addr).Info(ctx, "replication").Result(); !strings.Contains(role, "role:master") {
		t.Errorf("the replica was not promoted:\n%s", role)
	}
}

// The event log is sharded: each class of each shard is a sorted set under the shard's
// hash tag ({log.I.K}), so the appends spread over LogShards slots; the set of the log
// before classes and shards existed ({log}) is read but not appended to, so entries written
// by an older broker are read back as audit entries.
func TestRedisLogKeysSpreadOverShardTags(t *testing.T) {
	addr := redistest.Start(t)
	s := newRedis(t, addr, 0)
	raw := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = raw.Close() })
	old := fmt.Sprintf("%056d", 1)
	if err := raw.ZAdd(t.Context(), "t:log:{log}", redis.Z{Member: old + "\x00" + `{"n":1}`}).Err(); err != nil {
		t.Fatal(err)
	}
	classes := []sessions.LogClass{sessions.LogAudit, sessions.LogUnauthenticated, sessions.LogAdmin}
	for n := 2; n < 200; n++ {
		if err := s.AppendLog(t.Context(), classes[n%3], fmt.Sprintf("%056d", n), fmt.Appendf(nil, `{"n":%d}`, n), 1000); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := raw.Keys(t.Context(), "t:log*").Result()
	if err != nil {
		t.Fatal(err)
	}
	tags := map[string]int{}
	for _, k := range keys {
		rest, ok := strings.CutPrefix(k, "t:log:{")
		tag, suffix, ok2 := strings.Cut(rest, "}")
		if !ok || !ok2 || (tag != "log" && !strings.HasPrefix(tag, "log.")) || !slices.Contains([]string{"", ":unauthenticated", ":admin"}, suffix) {
			t.Fatalf("log key %q, want t:log:{TAG}[:unauthenticated|:admin]", k)
		}
		if tag == "log" && k != "t:log:{log}" {
			t.Fatalf("log key %q: an append went to a legacy set", k)
		}
		tags[tag]++
	}
	if len(keys) != 3*sessions.LogShards+1 || len(tags) != sessions.LogShards+1 {
		t.Fatalf("log keys = %q, want the three classes of %d shards and the legacy t:log:{log}", keys, sessions.LogShards)
	}
	e, err := s.Log(t.Context(), old)
	if err != nil || e.Class != sessions.LogAudit || string(e.Event) != `{"n":1}` {
		t.Fatalf("entry written under the old key = %+v, %v; want an audit entry", e, err)
	}
}

// TestRedisAtMaxmemoryFailsClosed: the capacity conformance on Redis at maxmemory with
// maxmemory-policy noeviction, where Redis refuses every write with OOM (reads, GETDEL and
// DEL still work): the store reports ErrFull and nothing is half-written.
func TestRedisAtMaxmemoryFailsClosed(t *testing.T) {
	addr := redistest.Start(t)
	admin := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = admin.Close() })
	config := func(t *testing.T, kv ...string) {
		t.Helper()
		for i := 0; i+1 < len(kv); i += 2 {
			if err := admin.ConfigSet(t.Context(), kv[i], kv[i+1]).Err(); err != nil {
				t.Fatalf("CONFIG SET %s %s: %v", kv[i], kv[i+1], err)
			}
		}
	}
	storetest.RunFull(t, func(t *testing.T) sessions.Store { return newRedis(t, addr, time.Second) }, storetest.Capacity{
		// Any limit below the memory in use makes Redis refuse writes at once.
		Fill: func(t *testing.T, _ sessions.Store) { config(t, "maxmemory-policy", "noeviction", "maxmemory", "1") },
		Free: func(t *testing.T, _ sessions.Store) { config(t, "maxmemory", "0") },
	})
}
