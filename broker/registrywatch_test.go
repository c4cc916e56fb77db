package broker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/sessions/redistest"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// convergeWait bounds the polls for a replica to observe a change (a bound for loaded
// machines only: a watch reports a change within milliseconds when idle).
const convergeWait = 30 * time.Second

// replicaPair is replica A (the harness) and replica B (its own Server, its own client of the
// same Redis, the same event log), B served on its own issuer URL.
type replicaPair struct {
	h     *harness
	b     *Server
	bURL  string
	redis string // the Redis address
}

func newReplicaPair(t *testing.T) *replicaPair {
	t.Helper()
	addr := redistest.Start(t)
	h := newHarness(t, harnessOpts{up: demoidp.Options{DPoPAlgs: []string{"ES256"}}, store: redisStore(t, addr), mutate: withClientsMgmt})
	srvB := httptest.NewUnstartedServer(nil)
	cfgB := *h.cfg
	cfgB.Issuer = "http://" + srvB.Listener.Addr().String() + "/"
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := New(&cfgB, Deps{Store: redisStore(t, addr), Events: h.events, Logger: logger, Keys: testKeys(t, "RS256")})
	if err != nil {
		t.Fatal(err)
	}
	srvB.Config.Handler = b.Handler()
	srvB.Start()
	t.Cleanup(srvB.Close)
	t.Cleanup(b.Close)
	return &replicaPair{h: h, b: b, bURL: srvB.URL, redis: addr}
}

// loginAtB runs a login of the confidential app through B and returns its s event.
func (p *replicaPair) loginAtB(t *testing.T) logs.Event {
	t.Helper()
	if q := loginAs(t, p.h, p.bURL, appClient, p.h.app.URL+"/cb"); q.Get("code") == "" {
		t.Fatalf("login through B: %v", q)
	}
	return p.h.lastEventOf(logs.TypeSuccessLogin)
}

// turnDPoPOffAtA removes corp's dpop_signing_alg through A's management API and returns the
// store's connections version after the write.
func (p *replicaPair) turnDPoPOffAtA(t *testing.T) int64 {
	t.Helper()
	id := config.DeriveConnectionID("corp")
	r := api(t, p.h.srv.URL, "GET", "/api/v2/connections/"+id, tokClients, nil)
	if r.status != 200 {
		t.Fatalf("GET corp at A: %d %s", r.status, r.raw)
	}
	opts := r.obj()["options"].(map[string]any)
	delete(opts, "dpop_signing_alg")
	if r := api(t, p.h.srv.URL, "PATCH", "/api/v2/connections/"+id, tokClients, map[string]any{"options": opts}); r.status != 200 {
		t.Fatalf("PATCH corp at A: %d %s", r.status, r.raw)
	}
	v, err := p.h.broker.reg.conns.ConnectionsVersion(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// waitObserved polls (bounded) until B's watch has reported more events of kind event
// ("change", "subscribed") than before and B's lookups use version v or later.
func (p *replicaPair) waitObserved(t *testing.T, event string, before float64, v int64) {
	t.Helper()
	deadline := time.Now().Add(convergeWait)
	for {
		got := watchEvents(t, p.b, event)
		snap, err := p.b.reg.current(t.Context(), false)
		if got > before && err == nil && snap.version >= v {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("B did not observe the change within %s: %s events %v (before %v), lookup version %v (want %d), err %v",
				convergeWait, event, got, before, snapVersion(snap), v, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func snapVersion(s *connSnapshot) int64 {
	if s == nil {
		return -1
	}
	return s.version
}

func wantDPoP(t *testing.T, ev logs.Event, on bool, when string) {
	t.Helper()
	_, used := ev.Details["dpop_signing_alg"]
	if used != on {
		t.Errorf("%s: the login used DPoP = %v, want %v (%v)", when, used, on, ev.Details)
	}
}

// TestConnectionChangedOnOneReplicaIsUsedByTheNextLoginOnAnother: replicas A and B on one
// Redis, each with its own client. A management write through A (DPoP turned off for corp)
// reaches B through the store's watch (Pub/Sub), without B reading the version per login:
// once B has observed the change, its next login uses it.
func TestConnectionChangedOnOneReplicaIsUsedByTheNextLoginOnAnother(t *testing.T) {
	p := newReplicaPair(t)
	wantDPoP(t, p.loginAtB(t), true, "before the change")
	before := watchEvents(t, p.b, "change")
	v := p.turnDPoPOffAtA(t)
	p.waitObserved(t, "change", before, v)
	wantDPoP(t, p.loginAtB(t), false, "after B observed the change")
}

// TestReplicaWhoseWatchWasCutSubscribesAgainAndConverges: B's subscription is killed (CLIENT
// KILL TYPE pubsub), so the message of a write made meanwhile may be lost; B subscribes
// again, which counts as a change, and its next login uses the write.
func TestReplicaWhoseWatchWasCutSubscribesAgainAndConverges(t *testing.T) {
	p := newReplicaPair(t)
	wantDPoP(t, p.loginAtB(t), true, "before the change")
	raw := redis.NewClient(&redis.Options{Addr: p.redis})
	t.Cleanup(func() { _ = raw.Close() })
	waitFor(t, "B's watch to subscribe", func() bool { return watchEvents(t, p.b, "subscribed") >= 1 })
	before := watchEvents(t, p.b, "subscribed")
	if n, err := raw.ClientKillByFilter(t.Context(), "TYPE", "pubsub").Result(); err != nil || n < 1 {
		t.Fatalf("CLIENT KILL TYPE pubsub = %d, %v; want the watches' connections", n, err)
	}
	v := p.turnDPoPOffAtA(t)
	p.waitObserved(t, "subscribed", before, v)
	wantDPoP(t, p.loginAtB(t), false, "after B subscribed again")
}

// versionReadStore is a store whose connections version reads are counted, with the watch of the
// store underneath when watch is set (a store without one otherwise).
type versionReadStore struct {
	sessions.Store
	sessions.Connections
	sessions.Clients
	reads atomic.Int64
	fail  atomic.Bool // every version read fails (ErrUnavailable)
}

func (s *versionReadStore) ConnectionsVersion(ctx context.Context) (int64, error) {
	s.reads.Add(1)
	if s.fail.Load() {
		return 0, sessions.ErrUnavailable
	}
	return s.Connections.ConnectionsVersion(ctx)
}

type watchingVersionReadStore struct{ *versionReadStore }

func (s watchingVersionReadStore) WatchConnections(ctx context.Context, report func(sessions.ConnectionsEvent)) error {
	return s.Connections.(sessions.ConnectionsWatcher).WatchConnections(ctx, report)
}

func newVersionReadStore(st sessions.Store) *versionReadStore {
	return &versionReadStore{Store: st, Connections: st.(sessions.Connections), Clients: st.(sessions.Clients)}
}

// flood runs lookups from 32 goroutines until each has made n, and returns how long it took.
func flood(t *testing.T, g *registry, n int) time.Duration {
	t.Helper()
	start := time.Now()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 32 {
		wg.Go(func() {
			for range n {
				if _, err := g.current(context.Background(), false); err != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d lookups failed", f)
	}
	return time.Since(start)
}

// TestFloodOfLookupsReadsTheVersionAtMostOncePerBound: without a watch, lookups read the
// version once per registryRecheck, shared by every lookup waiting for it; with a watch that
// vouches for the snapshot (Redis Pub/Sub, the memory store's in-process reports), they read it
// only after a reported change (and once per registryVerify in the background).
func TestFloodOfLookupsReadsTheVersionAtMostOncePerBound(t *testing.T) {
	tests := []struct {
		name  string
		store func(t *testing.T) sessions.Store
		watch bool
	}{
		{name: "memory store without a watch", store: func(*testing.T) sessions.Store { return sessions.NewMemory() }},
		{name: "memory store with its watch", store: func(*testing.T) sessions.Store { return sessions.NewMemory() }, watch: true},
		{name: "Redis with its watch", store: func(t *testing.T) sessions.Store { return redisStore(t, redistest.Start(t)) }, watch: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs := newVersionReadStore(tc.store(t))
			var st sessions.Store = cs
			if tc.watch {
				st = watchingVersionReadStore{cs}
			}
			h := newHarness(t, harnessOpts{up: dpopUp, store: st})
			g := h.broker.reg
			if _, err := g.current(t.Context(), true); err != nil {
				t.Fatal(err)
			}
			if tc.watch { // the watch's first event (a change) has been taken in
				waitFor(t, "the watch's first event", func() bool {
					return watchEvents(t, h.broker, "subscribed") >= 1
				})
				if _, err := g.current(t.Context(), false); err != nil {
					t.Fatal(err)
				}
			}
			before := cs.reads.Load()
			elapsed := flood(t, g, 2000)
			reads := cs.reads.Load() - before
			limit := 1 + int64(elapsed/registryRecheck)
			if tc.watch && tc.name != "Redis with its watch" {
				limit = int64(elapsed / registryVerify) // the memory store's watch vouches for ever
			}
			t.Logf("%d lookups in %v read the version %d times", 32*2000, elapsed, reads)
			if reads > limit {
				t.Fatalf("%d lookups in %v read the version %d times, want at most %d", 32*2000, elapsed, reads, limit)
			}
			if !tc.watch {
				return
			}
			// A write the watch reports: the next lookups share one read and use it.
			doc := []byte(`{"client_id":"watched","name":"Watched"}`)
			if err := cs.CreateClient(t.Context(), "watched", doc); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the lookups to use the client written", func() bool {
				snap, err := g.current(t.Context(), false)
				return err == nil && snap.clients["watched"] != nil
			})
		})
	}
}

// TestSnapshotServesWhileTheVersionCannotBeReadOnlyWithinTheBound: a lookup whose version
// read fails uses the snapshot only while it was known current less than registryRecheck ago.
// With a watch that vouches for it, no read is needed and logins go on; without one, the
// lookups fail (503) once the bound has passed, so a deleted connection cannot keep working,
// and the failing reads are shared (at most one per missRecheck).
func TestSnapshotServesWhileTheVersionCannotBeReadOnlyWithinTheBound(t *testing.T) {
	tests := []struct {
		name     string
		watch    bool
		wantFail bool
	}{
		{name: "watch vouches: lookups go on", watch: true},
		{name: "no watch: lookups fail once the bound has passed", wantFail: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs := newVersionReadStore(sessions.NewMemory())
			var st sessions.Store = cs
			if tc.watch {
				st = watchingVersionReadStore{cs}
			}
			h := newHarness(t, harnessOpts{up: dpopUp, store: st})
			g := h.broker.reg
			if _, err := g.current(t.Context(), true); err != nil {
				t.Fatal(err)
			}
			if tc.watch {
				waitFor(t, "the watch's first event", func() bool {
					return watchEvents(t, h.broker, "subscribed") >= 1
				})
				if _, err := g.current(t.Context(), false); err != nil {
					t.Fatal(err)
				}
			}
			cs.fail.Store(true)
			if !tc.wantFail {
				for range 100 {
					if _, err := g.current(t.Context(), false); err != nil {
						t.Fatalf("lookup with the version unreadable and the watch vouching: %v", err)
					}
				}
				if q := h.login(); q.Get("code") == "" {
					t.Fatalf("login with the version unreadable and the watch vouching: %v", q)
				}
				return
			}
			waitFor(t, "a lookup to fail", func() bool {
				_, err := g.current(t.Context(), false)
				return errors.Is(err, sessions.ErrUnavailable)
			})
			// A store that fails fast is read at most once per missRecheck, however many lookups.
			before, start := cs.reads.Load(), time.Now()
			var wg sync.WaitGroup
			for range 32 {
				wg.Go(func() {
					for range 200 {
						if _, err := g.current(context.Background(), false); err == nil {
							t.Error("a lookup succeeded with the version unreadable past the bound")
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed, reads := time.Since(start), cs.reads.Load()-before
			if limit := 1 + int64(elapsed/missRecheck); reads > limit {
				t.Errorf("%d failing lookups in %v read the version %d times, want at most %d", 32*200, elapsed, reads, limit)
			}
		})
	}
}

// waitFor polls cond (bounded by convergeWait).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(convergeWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, convergeWait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// watchEvents returns dpop_broker_connections_watch_events_total{event} of b.
func watchEvents(t *testing.T, b *Server, event string) float64 {
	t.Helper()
	mfs, err := b.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "dpop_broker_connections_watch_events_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "event" && l.GetValue() == event {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
