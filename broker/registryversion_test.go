package broker

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// TestClientDeletedAfterAFailoverLostAWriteIsGoneOnEveryReplica: a failover to a stale
// replica loses the last management write (the {conn} records go back to the version before
// it; the watch, on another node in a Cluster, reports nothing), then an operator deletes a
// client. The version that delete reaches is not the lost write's (a random step per write,
// sessions.ConnectionsVersion), so B, whose snapshot is at the lost write's version, loads
// the records again instead of confirming its snapshot: the deleted client is gone there.
func TestClientDeletedAfterAFailoverLostAWriteIsGoneOnEveryReplica(t *testing.T) {
	p := newReplicaPair(t)
	p.loginAtB(t)
	raw := redis.NewClient(&redis.Options{Addr: p.redis})
	t.Cleanup(func() { _ = raw.Close() })
	ctx := t.Context()
	keys, err := raw.Keys(ctx, "mgmt-test:*{conn}*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("the {conn} keys: %v, %v", keys, err)
	}
	dumps := map[string]string{}
	for _, k := range keys {
		d, err := raw.Dump(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		dumps[k] = d
	}
	before := watchEvents(t, p.b, "change")
	lost := p.turnDPoPOffAtA(t) // the write the failover loses
	p.waitObserved(t, "change", before, lost)
	// The failover: the {conn} keys as they were before that write, with no message.
	now, err := raw.Keys(ctx, "mgmt-test:*{conn}*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range now {
		if _, ok := dumps[k]; !ok {
			if err := raw.Del(ctx, k).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for k, d := range dumps {
		if err := raw.RestoreReplace(ctx, k, 0, d).Err(); err != nil {
			t.Fatal(err)
		}
	}
	before = watchEvents(t, p.b, "change")
	if r := api(t, p.h.srv.URL, "DELETE", "/api/v2/clients/"+appClient, tokClients, nil); r.status != 204 {
		t.Fatalf("DELETE %s at A: %d %s", appClient, r.status, r.raw)
	}
	after, err := p.h.broker.reg.conns.ConnectionsVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("version of the lost write %d, of the delete made after the failover %d", lost, after)
	if after == lost {
		t.Fatalf("the delete made after the failover reached the lost write's version %d", lost)
	}
	waitFor(t, "B's watch reporting the delete", func() bool { return watchEvents(t, p.b, "change") > before })
	for _, force := range []bool{false, true} {
		snap, err := p.b.reg.current(ctx, force)
		if err != nil {
			t.Fatalf("B's lookup (forced %v): %v", force, err)
		}
		if snap.clients[appClient] != nil {
			t.Fatalf("B's lookup (forced %v) at version %d still has the deleted client %q", force, snap.version, appClient)
		}
	}
}

// TestWatchVouchesOnTheMonotonicClockAndNeverPastNow: the watch's Through counts on the
// monotonic clock and never later than the moment it is taken in, so a Through ahead of the
// clock (a PONG answered just before the wall clock stepped back an hour) vouches for the
// snapshot no longer than one taken now: once B's watch dies, a client deleted through A is
// gone from B's lookups within registryRecheck (polled, bounded by convergeWait), not an hour.
func TestWatchVouchesOnTheMonotonicClockAndNeverPastNow(t *testing.T) {
	p := newReplicaPair(t)
	p.loginAtB(t)
	waitFor(t, "B subscribed", func() bool { return watchEvents(t, p.b, "subscribed") >= 1 })
	p.b.reg.watched(sessions.ConnectionsEvent{Through: time.Now().Add(time.Hour)})
	if l := p.b.reg.lease.Load(); l == nil || l.at > monoNow() {
		t.Fatalf("a Through an hour ahead left the lease at %+v, later than now (%d)", l, monoNow())
	}
	p.b.reg.stopWatch() // B hears of no write from now on
	if r := api(t, p.h.srv.URL, "DELETE", "/api/v2/clients/"+appClient, tokClients, nil); r.status != 204 {
		t.Fatalf("DELETE %s at A: %d %s", appClient, r.status, r.raw)
	}
	waitFor(t, "B's lookups without the deleted client", func() bool {
		snap, err := p.b.reg.current(t.Context(), false)
		return err == nil && snap.clients[appClient] == nil
	})
}

// TestWatchThroughBecomesALeaseNoLaterThanNowUnlessForever: the memory store's watch reports every write
// before it returns (sessions.Forever), so its lease stays open however much later it is
// read, unlike a Through from a PONG.
func TestWatchThroughBecomesALeaseNoLaterThanNowUnlessForever(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	g := h.broker.reg
	tests := []struct {
		name    string
		through time.Time
		want    func(at int64) bool
	}{
		{name: "Forever stays open", through: sessions.Forever, want: func(at int64) bool { return at == forever }},
		{name: "a Through a minute ahead is taken as now", through: time.Now().Add(time.Minute), want: func(at int64) bool { return at <= monoNow() }},
		{name: "a Through a second ago stays a second ago", through: time.Now().Add(-time.Second), want: func(at int64) bool { return at <= monoNow()-int64(time.Second) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g.lease.Store(nil)
			g.watched(sessions.ConnectionsEvent{Through: tc.through})
			l := g.lease.Load()
			if l == nil || !tc.want(l.at) {
				t.Fatalf("lease after Through %v = %+v (now %d)", tc.through, l, monoNow())
			}
		})
	}
}
