package broker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/upstream"
)

// Connections live in the store (sessions.Connections) so that every replica sees a
// management change; the YAML seeds them. Seeding rule: a YAML connection is created when its
// id is not stored, unless the management API deleted it while the YAML entry was the same
// (its tombstone is that entry's config_hash); when it is stored, the YAML is applied again
// only if the YAML entry changed since it was last applied (config_hash). So an API edit or
// delete survives restarts with an unchanged file, and an edited file (new issuer, rotated
// secret) wins over the store. A reload of the file (reload.go, registry.reconfigure) applies
// the same rule, so it leaves the store as a restart with that file would.
//
// The registry is every request path's view of the connections and of the clients
// (clientregistry.go, same store version). It keeps one immutable snapshot and, per snapshot,
// when it was last known current. A lookup uses the snapshot while that is less than
// registryRecheck ago and no change was reported since; otherwise it reads the store's
// version counter (one GET, shared by every lookup waiting for it: a flood of lookups costs
// one read; a failed one answers the lookups of the next missRecheck too) and rebuilds when
// it moved.
//
// What keeps the snapshot known current without a read per request is the store's watch
// (sessions.ConnectionsWatcher; Redis: every write script PUBLISHes, each replica
// subscribes). Every reported change makes the next lookup read the version, so a change made
// on any replica reaches the next request here a moment after the message (milliseconds); and
// the watch vouches for the snapshot up to its last answered PING (every 250 ms), so the
// snapshot stays known current while nothing changes. On a Redis Cluster the PONG comes from
// the node the subscription sits on: it does not prove that the cluster bus passed on every
// message of the master holding {conn} (a broken bus link drops messages in flight), so there
// a lost message is seen by the background read (registryVerify). A better proof would need a
// round trip through the {conn} master per PING, which would tie logins to that master again. When the subscription is down, or does
// not answer, that stops and lookups fall back to reading the version at most every
// registryRecheck: a change reaches every replica within registryRecheck at worst. A
// (re)subscription counts as a change (messages are lost while disconnected). The memory
// store reports every write before it returns: one process always uses its own writes.
//
// When a needed read fails, a lookup still uses the snapshot if it was known current less
// than registryRecheck ago, and fails otherwise (callers answer 503): a deleted or disabled
// connection or client never works longer than registryRecheck after a write that this
// replica could not see. So logins go on while the store's connection records cannot be
// read (the Redis Cluster master holding {conn} failing over) as long as the watch, which
// subscribes on another node, vouches for the snapshot. Lookups that must be current
// (management writes, which make the writing replica use its own write at once:
// refreshAfterWrite) read the version every time. Even while the watch vouches, the version
// is read in the background every registryVerify: writes that published nothing (an older
// release writing during a rolling upgrade, records restored by hand) or whose message the
// Cluster bus lost are seen within that. Every write adds a random step to the version
// (sessions.ConnectionsVersion), so the version of a write that a failover lost is not
// reached again by the next write: a snapshot at it is never confirmed by a read of
// different records. Freshness is measured on the monotonic clock (monoNow).
//
// A lookup that missed (a client or connection the snapshot lacks, a wrong secret) needs a
// check too, but anyone can cause one, so those checks are coalesced (afterMiss). Unchanged
// connections keep their upstream.Connection (DPoP nonce cache), and all share one discovery
// cache.

// registryRecheck bounds how stale a snapshot a lookup uses may be when the watch does not
// vouch for it, and how long a snapshot serves when the version cannot be read.
const registryRecheck = time.Second

// registryVerify is how often the version is read in the background while the watch
// vouches for the snapshot: one GET per replica per period. It bounds how long a write whose
// message the Redis Cluster bus lost (or that published none) goes unseen.
const registryVerify = 10 * time.Second

// missRecheck is the least time between the starts of two version checks made for lookups
// that missed (afterMiss), per replica: unauthenticated requests with unknown client ids or
// wrong secrets cost at most one store read per missRecheck, however many they are.
const missRecheck = 200 * time.Millisecond

// missCheck is one coalesced version check: the misses that arrive before it starts share
// its answer.
type missCheck struct {
	done chan struct{}
	snap *connSnapshot
	err  error
}

// versionCheck is one version read that lookups share (registry.shared).
type versionCheck struct {
	gen  int64 // the change count when it was started
	done chan struct{}
	end  int64 // when it ended, monoNow (set before done is closed)
	snap *connSnapshot
	err  error
}

// knownCurrent says when a snapshot was last known current: at (monoNow), when the watch had
// reported gen changes.
type knownCurrent struct {
	gen int64
	at  int64
}

// monoBase is the origin of monoNow.
var monoBase = time.Now()

// monoNow returns the nanoseconds since monoBase on the monotonic clock: every freshness
// decision of the registry is measured with it, so a step of the wall clock (NTP, an operator
// setting the date) neither lengthens nor shortens how long a snapshot is trusted.
func monoNow() int64 { return int64(time.Since(monoBase)) }

// monoAt returns t as monoNow would have, through t's monotonic reading (a time.Time from
// time.Now, or derived from one by Add, has one).
func monoAt(t time.Time) int64 { return int64(t.Sub(monoBase)) }

// forever is the lease at of a watch that reports every write before it returns
// (sessions.Forever): it vouches until the next change.
const forever = int64(1<<63 - 1)

// storedConnection is the document stored per connection.
type storedConnection struct {
	config.Connection
	// ConfigHash is the hash of the YAML entry this document was last seeded from ("" for
	// connections created through the API).
	ConfigHash string `json:"config_hash,omitempty"`
}

// connSnapshot is the set of connections at one store version.
type connSnapshot struct {
	version int64
	byName  map[string]*connection
	byID    map[string]*connection
	list    []*connection // by name
	// The clients (clientregistry.go) at the same version: by client_id, sorted by id, and
	// their CORS origins.
	clients    map[string]*regClient
	clientList []*regClient
	origins    map[string]bool
	// known is when the snapshot was last confirmed by a version read (that started after the
	// watch had reported known.gen changes); raised by later reads of the same version.
	known atomic.Pointer[knownCurrent]
}

type registry struct {
	s       *Server
	conns   sessions.Connections
	clients sessions.Clients
	// opts are the upstream options connections are built with (options); Reload replaces
	// them, and a connection built with others is built again (withConfigOptions).
	opts atomic.Pointer[upstream.Options]
	// consoleCfg is the configuration whose console settings make the console's built-in
	// client of each snapshot (consoleClient): the current view's, which Reload replaces.
	consoleCfg atomic.Pointer[config.Config]

	mu         sync.Mutex // serializes rebuilds and seeding; guards seed and clientSeed
	seed       []config.Connection
	clientSeed []config.Client
	seeded     bool
	snap       atomic.Pointer[connSnapshot]
	// dirty makes the next check rebuild every connection even at the same store version: a
	// reload changed the options and could not rebuild then.
	dirty atomic.Bool

	// The watch (sessions.ConnectionsWatcher): changes counts its Changed events; lease is
	// its latest Through, with the count at that moment (it vouches for a snapshot known
	// current at that count).
	changes   atomic.Int64
	lease     atomic.Pointer[knownCurrent]
	watchOnce sync.Once
	watchStop context.CancelFunc // nil until the watch started
	watchDone chan struct{}

	checkMu  sync.Mutex
	checking *versionCheck // the last shared version read (registry.shared), nil before the first
	verifyAt atomic.Int64  // monoNow of the last background verification started

	missMu        sync.Mutex
	nextMiss      *missCheck // the check the next miss joins; nil once it started
	lastMissCheck time.Time  // when the last one started (wall clock)
}

func newRegistry(s *Server, opts upstream.Options, seed []config.Connection, clientSeed []config.Client) (*registry, error) {
	c, ok := s.store.(sessions.Connections)
	cl, clOK := s.store.(sessions.Clients)
	if !ok || !clOK {
		// A store without connection and client records (a test double): this replica keeps
		// them in memory, seeded from the configuration.
		s.log.Warn("session store has no connection records; connections and clients are kept in memory on this replica")
		mem := sessions.NewMemory()
		c, cl = mem.(sessions.Connections), mem.(sessions.Clients)
	}
	g := &registry{s: s, conns: c, clients: cl, seed: seed, clientSeed: clientSeed}
	g.opts.Store(&opts)
	g.consoleCfg.Store(s.cfg)
	return g, nil
}

// options returns the upstream options connections are built with now.
func (g *registry) options() *upstream.Options { return g.opts.Load() }

// configHash identifies a YAML connection entry.
func configHash(cc *config.Connection) string {
	b, _ := json.Marshal(cc) // plain struct: never fails
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:16])
}

// seedAll applies the YAML connections to the store (see the seeding rule above). It returns
// the problems that need an operator (name clashes); a store failure aborts it.
func (g *registry) seedAll(ctx context.Context) (problems []error, err error) {
	for i := range g.seed {
		cc := g.seed[i]
		cc.ID = cc.ConnectionID()
		doc := storedConnection{Connection: cc, ConfigHash: configHash(&g.seed[i])}
		raw, err := json.Marshal(doc)
		if err != nil {
			return nil, fmt.Errorf("connections[%d]: encode: %w", i, err)
		}
		switch tomb, err := g.conns.ConnectionTombstone(ctx, cc.ID); {
		case err == nil && string(tomb) == doc.ConfigHash:
			g.s.log.Info("connection deleted through the management API is not seeded again; edit or remove its YAML entry",
				"connection", cc.Name, "id", cc.ID)
			continue
		case err != nil && !errors.Is(err, sessions.ErrNotFound):
			return problems, fmt.Errorf("connections[%d] (%s): read tombstone: %w", i, cc.Name, err)
		}
		created, err := g.conns.SeedConnection(ctx, cc.ID, cc.Name, raw)
		switch {
		case errors.Is(err, sessions.ErrExists):
			id, _, _ := g.conns.ConnectionByName(ctx, cc.Name)
			problems = append(problems, fmt.Errorf("connections[%d] (%s): the store already has a connection named %q with id %s "+
				"(created through the management API); the YAML entry (id %s) is not applied: delete that connection or set connections[%d].id: %s",
				i, cc.Name, cc.Name, id, cc.ID, i, id))
			continue
		case err != nil:
			return problems, fmt.Errorf("connections[%d] (%s): seed: %w", i, cc.Name, err)
		case created:
			continue
		}
		old, err := g.conns.GetConnection(ctx, cc.ID)
		if err != nil {
			return problems, fmt.Errorf("connections[%d] (%s): read: %w", i, cc.Name, err)
		}
		var prev storedConnection
		if json.Unmarshal(old, &prev) == nil && prev.ConfigHash == doc.ConfigHash {
			continue // unchanged YAML: the stored document (maybe edited through the API) stays
		}
		if prev.Name != "" && prev.Name != cc.Name {
			problems = append(problems, fmt.Errorf("connections[%d]: id %s is stored with name %q; connection names cannot change", i, cc.ID, prev.Name))
			continue
		}
		if err := g.conns.UpdateConnection(ctx, cc.ID, raw); err != nil {
			return problems, fmt.Errorf("connections[%d] (%s): update from configuration: %w", i, cc.Name, err)
		}
		g.s.log.Info("connection updated from configuration", "connection", cc.Name, "id", cc.ID)
	}
	return problems, g.seedClients(ctx)
}

// Init seeds the configured connections and clients into the store and loads them. It returns an error
// naming every connection it could not apply (a name already taken in the store by another
// id) or the store failure. Without Init the first request does the same and logs problems.
func (s *Server) Init(ctx context.Context) error {
	s.reg.watchOnce.Do(s.reg.startWatch) // subscribing now: it usually vouches by the first request
	s.startLogStreams()
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	problems, err := s.reg.seedAll(ctx)
	if err != nil {
		return err
	}
	s.reg.seeded = true
	if _, err := s.reg.rebuild(ctx, false, s.reg.changes.Load(), monoNow()); err != nil {
		return err
	}
	return errors.Join(problems...)
}

// current returns the connections: forced, it reads the store version now; otherwise only
// when the snapshot is not known current (see above). A failed read returns the error
// (callers answer 503): a snapshot the watch reported changed is never served again.
func (g *registry) current(ctx context.Context, force bool) (*connSnapshot, error) {
	g.watchOnce.Do(g.startWatch)
	snap := g.snap.Load()
	if force {
		return g.check(ctx)
	}
	if snap == nil {
		return g.shared(ctx)
	}
	now := monoNow()
	at, unchanged := g.knownAt(snap)
	if unchanged && now-at < int64(registryRecheck) {
		if now-snap.known.Load().at >= int64(registryVerify) {
			g.verifySoon(now)
		}
		return snap, nil
	}
	// Not known current: the bound passed, or the watch reported a change (which a failed
	// read must not hide, so there is no fallback to snap here).
	return g.shared(ctx)
}

// knownAt returns when snap was last known current (monoNow): confirmed by a version read
// or vouched for by the watch since; unchanged is false when the watch reported a change
// since it was confirmed.
func (g *registry) knownAt(snap *connSnapshot) (at int64, unchanged bool) {
	k := snap.known.Load()
	at = k.at
	if l := g.lease.Load(); l != nil && l.gen == k.gen && l.at > at {
		at = l.at
	}
	return at, k.gen == g.changes.Load()
}

// shared returns the result of a version check that started after the last change the watch
// reported: the one in flight, a failed one that ended less than missRecheck ago (so a store
// that fails fast is not read once per lookup), or a new one. The check outlives the request
// that started it.
func (g *registry) shared(ctx context.Context) (*connSnapshot, error) {
	gen := g.changes.Load()
	g.checkMu.Lock()
	vc := g.checking
	if vc != nil && vc.gen == gen {
		select {
		case <-vc.done:
			if vc.err == nil || monoNow()-vc.end >= int64(missRecheck) {
				vc = nil // over: start another
			}
		default: // in flight: join it
		}
	} else {
		vc = nil
	}
	if vc == nil {
		vc = &versionCheck{gen: gen, done: make(chan struct{})}
		g.checking = vc
		go func(ctx context.Context) {
			vc.snap, vc.err = g.check(ctx)
			vc.end = monoNow()
			close(vc.done)
		}(context.WithoutCancel(ctx))
	}
	g.checkMu.Unlock()
	select {
	case <-vc.done:
		return vc.snap, vc.err
	case <-ctx.Done():
		return nil, fmt.Errorf("connections version: %w", ctx.Err())
	}
}

// verifySoon starts a background version check, at most one per registryVerify.
func (g *registry) verifySoon(now int64) {
	last := g.verifyAt.Load()
	if now-last < int64(registryVerify) || !g.verifyAt.CompareAndSwap(last, now) {
		return
	}
	go func() {
		if _, err := g.shared(context.Background()); err != nil {
			g.s.log.Warn("connections: background version check failed", "err", err)
		}
	}()
}

// check reads the store version and returns the snapshot at it, rebuilding (and seeding
// first, when the store lost its records) if it moved.
func (g *registry) check(ctx context.Context) (*connSnapshot, error) {
	gen, start := g.changes.Load(), monoNow() // before the read: what it confirms
	snap := g.snap.Load()
	lost := false
	if snap != nil {
		v, err := g.conns.ConnectionsVersion(ctx)
		if err != nil {
			return nil, fmt.Errorf("connections version: %w", err)
		}
		if v == snap.version && !g.dirty.Load() {
			snap.confirm(gen, start)
			return snap, nil
		}
		// The counter only grows: a smaller one means the store lost its connection and client records
		// (Redis restarted without persistence, failover to a stale replica). Seed the
		// configured connections again and reload everything.
		lost = v < snap.version
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.seeded || lost {
		if lost {
			g.s.log.Warn("the store lost its connection records; seeding the configured connections and clients again")
		}
		problems, err := g.seedAll(ctx)
		if err != nil {
			return nil, err
		}
		for _, p := range problems {
			g.s.log.Error("connection from configuration not applied", "err", p)
		}
		g.seeded = true
	}
	return g.rebuild(ctx, lost || g.dirty.Load(), gen, start)
}

// confirm records that a version read that started at at (monoNow), after the watch had
// reported gen changes, found sn's version.
func (sn *connSnapshot) confirm(gen, at int64) {
	for {
		old := sn.known.Load()
		next := &knownCurrent{gen: max(gen, old.gen), at: max(at, old.at)}
		if *next == *old || sn.known.CompareAndSwap(old, next) {
			return
		}
	}
}

// afterMiss returns the connections for a lookup that missed in its snapshot, as current
// with force would, from a version check that starts after the call (so it sees every write
// finished before the request came, on any replica). The checks are coalesced: every miss
// that arrives before the next one starts waits for it, and one starts at most every
// missRecheck. So a client created or given a new secret on another replica works here at
// once, its first request waiting up to missRecheck; a flood of unknown client ids costs at
// most one store read per missRecheck.
func (g *registry) afterMiss(ctx context.Context) (*connSnapshot, error) {
	g.missMu.Lock()
	mc := g.nextMiss
	if mc == nil {
		mc = &missCheck{done: make(chan struct{})}
		g.nextMiss = mc
		// The check outlives the request that started it: the others wait for it too.
		go g.runMissCheck(context.WithoutCancel(ctx), mc)
	}
	g.missMu.Unlock()
	select {
	case <-mc.done:
		return mc.snap, mc.err
	case <-ctx.Done():
		return nil, fmt.Errorf("connections version: %w", ctx.Err())
	}
}

// runMissCheck starts mc missRecheck after the last miss check started, and answers it.
func (g *registry) runMissCheck(ctx context.Context, mc *missCheck) {
	defer close(mc.done)
	g.missMu.Lock()
	wait := time.Until(g.lastMissCheck.Add(missRecheck))
	g.missMu.Unlock()
	if wait > 0 {
		t := time.NewTimer(wait)
		<-t.C
	}
	g.missMu.Lock()
	g.nextMiss = nil // misses from now on may come after writes this check does not see
	g.lastMissCheck = time.Now()
	g.missMu.Unlock()
	mc.snap, mc.err = g.current(ctx, true)
}

// rebuild loads the store's connections when its version moved (force: even when it equals
// the snapshot's); gen and start are what the caller's check confirms (see check). g.mu is
// held.
func (g *registry) rebuild(ctx context.Context, force bool, gen, start int64) (*connSnapshot, error) {
	v, err := g.conns.ConnectionsVersion(ctx)
	if err != nil {
		return nil, fmt.Errorf("connections version: %w", err)
	}
	prev := g.snap.Load()
	if !force && prev != nil && prev.version == v {
		prev.confirm(gen, start)
		return prev, nil
	}
	docs, err := g.conns.ListConnections(ctx)
	if err != nil {
		return nil, fmt.Errorf("list connections: %w", err)
	}
	next := &connSnapshot{version: v, byName: map[string]*connection{}, byID: map[string]*connection{}}
	next.known.Store(&knownCurrent{gen: gen, at: start})
	for _, raw := range docs {
		c := g.build(raw, prev)
		if c == nil {
			continue
		}
		next.byName[c.cfg.Name] = c
		next.byID[c.id] = c
		next.list = append(next.list, c)
	}
	sort.Slice(next.list, func(i, j int) bool { return next.list[i].cfg.Name < next.list[j].cfg.Name })
	if err := g.loadClients(ctx, next, prev); err != nil {
		return nil, err
	}
	if g.s.events.Secrets != nil {
		g.s.events.Secrets.Set(secretsConnections, connectionSecrets(next)...) // no event may carry them
	}
	g.snap.Store(next)
	g.dirty.Store(false)
	return next, nil
}

// reconfigure is the registry's part of a reload (reload.go): the configuration file's
// connections and clients become the seed, applied to the store by the seeding rule above
// (exactly what a restart with the file would do), opts the options every connection is
// built with, and consoleCfg's console settings make the console's built-in client. A YAML connection whose name the store holds under another id, or whose id it
// holds under another name, is returned as a problem before anything is written or changed.
// When the store cannot be read or written, the seed and options are taken all the same and
// the next lookup seeds and loads them (as at a start with the store down); pending is that
// store error. Entries removed from the file stay in the store, as after a restart.
func (g *registry) reconfigure(ctx context.Context, seed []config.Connection, clientSeed []config.Client, opts *upstream.Options, consoleCfg *config.Config) (problems []error, pending error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	problems, err := g.clashes(ctx, seed)
	if len(problems) > 0 {
		return problems, nil
	}
	optsChanged := opts != g.options()
	g.seed, g.clientSeed = seed, clientSeed
	g.opts.Store(opts)
	if optsChanged {
		g.dirty.Store(true)
	}
	if old := g.consoleCfg.Swap(consoleCfg); !reflect.DeepEqual(old.Console, consoleCfg.Console) || old.ConsoleURL() != consoleCfg.ConsoleURL() {
		g.dirty.Store(true) // the console's built-in client changes: the next snapshot has the new one
	}
	defer func() {
		if pending != nil {
			g.changes.Add(1) // no snapshot is known current: the next lookup checks, seeds and loads
		}
	}()
	if err != nil {
		g.seeded = false
		return nil, err
	}
	more, err := g.seedAll(ctx)
	for _, p := range more { // a clash written by another replica since the check above
		g.s.log.Error("connection from configuration not applied", "err", p)
	}
	if err != nil {
		g.seeded = false
		return nil, err
	}
	g.seeded = true
	if _, err := g.rebuild(ctx, g.dirty.Load(), g.changes.Load(), monoNow()); err != nil {
		g.dirty.Store(true)
		return nil, err
	}
	return nil, nil
}

// clashes returns the seeding problems (registry.seedAll) of the entries of seed that are new
// or changed since the registry's seed, reading the store only. g.mu is held.
func (g *registry) clashes(ctx context.Context, seed []config.Connection) (problems []error, err error) {
	applied := make(map[string]string, len(g.seed))
	for i := range g.seed {
		applied[g.seed[i].ConnectionID()] = configHash(&g.seed[i])
	}
	for i := range seed {
		cc := &seed[i]
		id := cc.ConnectionID()
		if h, ok := applied[id]; ok && h == configHash(cc) {
			continue // as seeded before
		}
		switch other, _, err := g.conns.ConnectionByName(ctx, cc.Name); {
		case err == nil && other != id:
			problems = append(problems, fmt.Errorf("connections[%d] (%s): the store already has a connection named %q with id %s "+
				"(created through the management API); delete that connection or set connections[%d].id: %s", i, cc.Name, cc.Name, other, i, other))
			continue
		case err != nil && !errors.Is(err, sessions.ErrNotFound):
			return nil, fmt.Errorf("connections[%d] (%s): read: %w", i, cc.Name, err)
		}
		raw, err := g.conns.GetConnection(ctx, id)
		switch {
		case errors.Is(err, sessions.ErrNotFound):
			continue
		case err != nil:
			return nil, fmt.Errorf("connections[%d] (%s): read: %w", i, cc.Name, err)
		}
		var prev storedConnection
		if json.Unmarshal(raw, &prev) == nil && prev.Name != "" && prev.Name != cc.Name {
			problems = append(problems, fmt.Errorf("connections[%d]: id %s is stored with name %q; connection names cannot change", i, id, prev.Name))
		}
	}
	return problems, nil
}

// build returns the connection for a stored document, reusing prev's when unchanged. A
// document that does not decode is skipped; one that the upstream driver refuses is kept with
// its error so that logins through it fail with a clear event.
func (g *registry) build(raw []byte, prev *connSnapshot) *connection {
	var doc storedConnection
	if err := json.Unmarshal(raw, &doc); err != nil || doc.ID == "" || doc.Name == "" {
		g.s.log.Error("stored connection does not decode; skipped", "bytes", len(raw))
		return nil
	}
	opts := g.options()
	if prev != nil {
		if old := prev.byID[doc.ID]; old != nil && bytes.Equal(old.raw, raw) && old.opts == opts {
			return old
		}
	}
	cc := doc.Connection
	c := &connection{cfg: &cc, id: cc.ID, raw: bytes.Clone(raw), opts: opts}
	up, err := upstream.New(upstreamConfig(&cc), *opts)
	if err != nil {
		c.err = err
		g.s.log.Error("connection cannot be used", "connection", cc.Name, "err", err)
		return c
	}
	c.up = up
	return c
}

// enabledFor returns the names of the connections client may use, in order: the client's own
// connections list, then connections whose enabled_clients name the client (by name).
// Connections that no longer exist are left out.
func (sn *connSnapshot) enabledFor(client *config.Client) []string {
	var out []string
	for _, n := range client.Connections {
		if sn.byName[n] != nil && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	for _, c := range sn.list {
		if slices.Contains(c.cfg.EnabledClients, client.ClientID) && !slices.Contains(out, c.cfg.Name) {
			out = append(out, c.cfg.Name)
		}
	}
	return out
}

// enabledConns is enabledFor as connections.
func (sn *connSnapshot) enabledConns(client *config.Client) []*connection {
	names := sn.enabledFor(client)
	out := make([]*connection, len(names))
	for i, n := range names {
		out[i] = sn.byName[n] // enabledFor lists stored connections only
	}
	return out
}

// effectiveClients returns the client ids that may use c: its enabled_clients and every
// client (of the last snapshot loaded) whose connections list names it, sorted.
func (s *Server) effectiveClients(cc *config.Connection) []string {
	out := slices.Clone(cc.EnabledClients)
	if snap := s.reg.snap.Load(); snap != nil {
		for _, cl := range snap.clientList {
			if slices.Contains(cl.cfg.Connections, cc.Name) {
				out = append(out, cl.cfg.ClientID)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// startWatch starts the store's watch of the connection and client records, when it has one
// (sessions.ConnectionsWatcher); Server.Close stops it.
func (g *registry) startWatch() {
	w, ok := g.conns.(sessions.ConnectionsWatcher)
	if !ok {
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	g.watchStop, g.watchDone = stop, make(chan struct{})
	go func() {
		defer close(g.watchDone)
		err := w.WatchConnections(ctx, g.watched)
		if ctx.Err() == nil && !errors.Is(err, errors.ErrUnsupported) {
			g.s.log.Warn("connections: the store's watch ended; changes made through other replicas reach this one within registryRecheck",
				"recheck", registryRecheck, "err", err)
		}
	}()
}

// watched takes one event of the watch: a change makes the next lookup read the version;
// a Through vouches for the snapshots known current at the present change count. A Through
// counts on the monotonic clock and never later than now (a watch cannot vouch for writes
// that have not happened yet), except sessions.Forever: that watch reports every write
// before it returns.
func (g *registry) watched(e sessions.ConnectionsEvent) {
	if e.Changed {
		g.changes.Add(1)
		event := "change"
		if e.Version == 0 {
			event = "subscribed"
		}
		g.s.metrics.connWatch.WithLabelValues(event).Inc()
	}
	if e.Through.IsZero() {
		return
	}
	t := forever
	if !e.Through.Equal(sessions.Forever) {
		t = min(monoAt(e.Through), monoNow())
	}
	for {
		gen, old := g.changes.Load(), g.lease.Load()
		if old != nil && old.gen == gen && old.at >= t {
			return
		}
		if g.lease.CompareAndSwap(old, &knownCurrent{gen: gen, at: t}) {
			return
		}
	}
}

// stopWatch ends the watch and waits for it (bounded: a watch ends within one receive
// timeout of its context).
func (g *registry) stopWatch() {
	g.watchOnce.Do(func() {}) // none starts after this
	if g.watchStop == nil {
		return
	}
	g.watchStop()
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-g.watchDone:
	case <-t.C:
		g.s.log.Warn("connections: the store's watch did not stop within 10 s")
	}
}
