package sessions_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/sessions/redistest"
	"github.com/dpop-broker/dpop-broker/sessions/storetest"
)

// TestRedisWatchSubscribesAgainAfterItsConnectionIsKilled: messages are lost while a
// subscriber is disconnected, so after CLIENT KILL TYPE pubsub the watch subscribes again and
// reports that as a change (of unknown version), vouches again for later instants, and
// reports the writes that follow; closing the store ends it.
func TestRedisWatchSubscribesAgainAfterItsConnectionIsKilled(t *testing.T) {
	t.Parallel() // on redis-server(s) of its own: shares nothing with other tests
	addr := redistest.Start(t)
	s := newRedis(t, addr, 2*time.Second)
	raw := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = raw.Close() })
	w := storetest.StartWatch(t, s)
	w.Next(t, "the first change", storetest.Changed)
	w.Next(t, "the first Through", storetest.ThroughAfter(time.Now()))

	for round := range 3 {
		if n, err := raw.ClientKillByFilter(t.Context(), "TYPE", "pubsub").Result(); err != nil || n != 1 {
			t.Fatalf("round %d: CLIENT KILL TYPE pubsub = %d, %v; want the watch's one connection", round, n, err)
		}
		killed := time.Now()
		if e := w.Next(t, "the change reported by the new subscription", storetest.Changed); e.Version != 0 {
			t.Fatalf("round %d: first change after the kill = %+v, want one of unknown version (a new subscription)", round, e)
		}
		w.Next(t, "a Through after the kill", storetest.ThroughAfter(killed))
		c := s.(sessions.Connections)
		if err := c.CreateConnection(t.Context(), "con_k"+string(rune('a'+round)), "k"+string(rune('a'+round)), []byte("{}")); err != nil {
			t.Fatal(err)
		}
		v, err := c.ConnectionsVersion(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if e := w.Next(t, "the write after the new subscription", storetest.Changed); e.Version != v {
			t.Fatalf("round %d: write after the kill reported as %+v, want version %d", round, e, v)
		}
	}
	_ = s.Close()
	if err := w.Wait(t); !errors.Is(err, sessions.ErrUnavailable) {
		t.Errorf("watch of a closed store ended with %v, want ErrUnavailable", err)
	}
}

// TestRedisClusterWatchSubscribesOffTheRecordsMaster: on a cluster whose masters hold equal
// slot ranges, the watch's subscription sits on another master than the connection records
// ({conn}), so losing that master does not also cut the watch.
func TestRedisClusterWatchSubscribesOffTheRecordsMaster(t *testing.T) {
	t.Parallel() // on redis-server(s) of its own: shares nothing with other tests
	addrs := redistest.StartCluster(t)
	s, err := sessions.NewRedis(sessions.RedisConfig{Addrs: addrs, Prefix: "w"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	w := storetest.StartWatch(t, s)
	w.Next(t, "the first change", storetest.Changed)

	raw := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { _ = raw.Close() })
	recordsMaster, err := raw.MasterForKey(t.Context(), "w:conn:{conn}:ver")
	if err != nil {
		t.Fatal(err)
	}
	recordsAddr := recordsMaster.Options().Addr
	var subscribedAt []string
	err = raw.ForEachShard(t.Context(), func(ctx context.Context, node *redis.Client) error {
		list, err := node.ClientList(ctx).Result()
		if err != nil {
			return err
		}
		for _, line := range strings.Split(list, "\n") {
			if strings.Contains(line, " sub=1 ") {
				subscribedAt = append(subscribedAt, node.Options().Addr)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(subscribedAt) != 1 || subscribedAt[0] == recordsAddr {
		t.Fatalf("the watch subscribes on %v; the records' master is %s: want one subscription elsewhere", subscribedAt, recordsAddr)
	}
}

// TestRedisWriteSucceedsWhenTheUserMayNotPublish: a Redis user whose ACL has no channel (so the
// write scripts' PUBLISH is refused) still writes connections: the refused PUBLISH neither
// fails the write nor leaves it half done.
func TestRedisWriteSucceedsWhenTheUserMayNotPublish(t *testing.T) {
	t.Parallel() // on redis-server(s) of its own: shares nothing with other tests
	addr := redistest.Start(t)
	raw := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = raw.Close() })
	if err := raw.Do(t.Context(), "ACL", "SETUSER", "nochan", "on", ">pw", "~*", "+@all", "resetchannels").Err(); err != nil {
		t.Fatal(err)
	}
	s, err := sessions.NewRedis(sessions.RedisConfig{Addrs: []string{addr}, Username: "nochan", Password: "pw", Prefix: "acl"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := raw.Publish(t.Context(), "acl:conn:changed:{watch583}", "1").Err(); err != nil {
		t.Fatal(err) // the default user may
	}
	c := s.(sessions.Connections)
	if err := c.CreateConnection(t.Context(), "con_a", "a", []byte("{}")); err != nil {
		t.Fatalf("create by a user that may not publish: %v", err)
	}
	if err := c.UpdateConnection(t.Context(), "con_a", []byte(`{"x":1}`)); err != nil {
		t.Fatalf("update by a user that may not publish: %v", err)
	}
	if v, err := c.ConnectionsVersion(t.Context()); err != nil || v < 2 {
		t.Fatalf("version after two writes = %d, %v; want at least 2 (two steps of at least 1)", v, err)
	}
}
