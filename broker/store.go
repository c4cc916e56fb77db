package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// The server's store as New sets it up: every operation's failure is counted in
// dpop_broker_store_errors_total by op (meteredStore), and the optional capabilities the
// server calls on the store itself are found once (storeCapabilities).

// storeCapabilities returns the optional capabilities of st that the server calls on st
// itself (nil when st lacks one or may not use it; the callers count their failures):
// storing a login's records and its event in one write (sessions.LogBatcher, loginwrite.go),
// when the event log lives in st; and reading a code with its session in one round trip
// (sessions.MultiGetter, codereuse.go).
func storeCapabilities(st sessions.Store, eventsInStore bool) (sessions.LogBatcher, sessions.MultiGetter) {
	var lb sessions.LogBatcher
	if b, ok := st.(sessions.LogBatcher); ok && eventsInStore {
		lb = b
	}
	mg, _ := st.(sessions.MultiGetter)
	return lb, mg
}

// sameStore reports whether a and b are the same store: equal interface values. Every store
// of this module is a pointer; values of a store type that == cannot compare (a struct
// holding a map, on which == panics) are never the same.
func sameStore(a, b sessions.Store) (same bool) {
	defer func() { _ = recover() }() // the runtime error of == on incomparable values: not the same
	return a != nil && a == b
}

// instrumentStore counts the failures of st's operations by op. The wrapper keeps the
// optional sessions.Connections and sessions.Clients interfaces when st implements both.
func (m *metrics) instrumentStore(st sessions.Store) sessions.Store {
	ms := &meteredStore{Store: st, m: m}
	c, ok := st.(sessions.Connections)
	cl, clOK := st.(sessions.Clients)
	if ok && clOK {
		return &meteredConnStore{meteredStore: ms, Connections: c, Clients: cl}
	}
	return ms
}

// storeError counts err under op unless it is a normal outcome (not found, exists, a lost
// Swap, or the caller gave up), and returns such a failure as a *storeOpError.
func (m *metrics) storeError(op string, err error) error {
	if err != nil && !errors.Is(err, sessions.ErrNotFound) && !errors.Is(err, sessions.ErrExists) &&
		!errors.Is(err, sessions.ErrConflict) && !errors.Is(err, context.Canceled) {
		m.storeErrors.WithLabelValues(op).Inc()
		var already *storeOpError
		if !errors.As(err, &already) {
			err = &storeOpError{op: op, err: err}
		}
	}
	return err
}

// storeOpError is a store operation that failed other than by its normal outcomes: the store
// is unreachable or full (sessions.ErrUnavailable, ErrFull), or it refused the request for
// another reason (a reply the backend does not classify, a record of the wrong type). Either
// way no handler can do better than 503 store_unavailable (storeDown reports all of them), and
// none answers 500 for the store. errors.Is and errors.As see the store's error through it.
type storeOpError struct {
	op  string
	err error
}

func (e *storeOpError) Error() string { return e.err.Error() }
func (e *storeOpError) Unwrap() error { return e.err }

type meteredStore struct {
	sessions.Store
	m *metrics
	// traced: the writes of traced requests are spans (traceStore); set by traceStoreWrites.
	traced bool
}

// traceStoreWrites makes st, as instrumentStore returned it, record the writes of traced
// requests as spans (tracing.go).
func traceStoreWrites(st sessions.Store) {
	switch ms := st.(type) {
	case *meteredStore:
		ms.traced = true
	case *meteredConnStore:
		ms.traced = true
	}
}

// start is the start of a write to trace: now when writes are traced, else zero.
func (s *meteredStore) start() time.Time {
	if !s.traced {
		return time.Time{}
	}
	return time.Now()
}

// write counts err under op and records the write as a span of ctx's request when traced.
func (s *meteredStore) write(ctx context.Context, op string, k sessions.Kind, start time.Time, err error) error {
	err = s.m.storeError(op, err)
	traceStore(ctx, op, k, start, err)
	return err
}

type meteredConnStore struct {
	*meteredStore
	sessions.Connections
	sessions.Clients
}

func (s *meteredStore) Create(ctx context.Context, k sessions.Kind, id string, v []byte, ttl time.Duration) error {
	t := s.start()
	return s.write(ctx, "create", k, t, s.Store.Create(ctx, k, id, v, ttl))
}

func (s *meteredStore) Put(ctx context.Context, k sessions.Kind, id string, v []byte, ttl time.Duration) error {
	t := s.start()
	return s.write(ctx, "put", k, t, s.Store.Put(ctx, k, id, v, ttl))
}

func (s *meteredStore) PutAll(ctx context.Context, items ...sessions.Item) error {
	t := s.start()
	return s.write(ctx, "put_all", itemsKind(items), t, s.Store.PutAll(ctx, items...))
}

func (s *meteredStore) Swap(ctx context.Context, k sessions.Kind, id string, old []byte, put []sessions.Item, del []sessions.Ref) error {
	t := s.start()
	return s.write(ctx, "swap", k, t, s.Store.Swap(ctx, k, id, old, put, del))
}

func (s *meteredStore) Get(ctx context.Context, k sessions.Kind, id string) ([]byte, error) {
	v, err := s.Store.Get(ctx, k, id)
	return v, s.m.storeError("get", err)
}

func (s *meteredStore) Take(ctx context.Context, k sessions.Kind, id string) ([]byte, error) {
	t := s.start()
	v, err := s.Store.Take(ctx, k, id)
	return v, s.write(ctx, "take", k, t, err)
}

func (s *meteredStore) Delete(ctx context.Context, k sessions.Kind, id string) error {
	t := s.start()
	return s.write(ctx, "delete", k, t, s.Store.Delete(ctx, k, id))
}

func (s *meteredStore) AppendLog(ctx context.Context, class sessions.LogClass, id string, event []byte, maxLen int) error {
	t := s.start()
	return s.write(ctx, "append_log", "", t, s.Store.AppendLog(ctx, class, id, event, maxLen))
}

func (s *meteredStore) Ping(ctx context.Context) error {
	return s.m.storeError("ping", s.Store.Ping(ctx))
}

func (s *meteredStore) Logs(ctx context.Context, before string, limit int) ([][]byte, error) {
	v, err := s.Store.Logs(ctx, before, limit)
	return v, s.m.storeError("read_logs", err)
}

func (s *meteredStore) LogsAfter(ctx context.Context, after string, limit int) ([]sessions.LogEntry, error) {
	v, err := s.Store.LogsAfter(ctx, after, limit)
	return v, s.m.storeError("read_logs", err)
}

func (s *meteredStore) LogsBefore(ctx context.Context, before string, limit int) ([]sessions.LogEntry, error) {
	v, err := s.Store.LogsBefore(ctx, before, limit)
	return v, s.m.storeError("read_logs", err)
}

func (s *meteredStore) Log(ctx context.Context, id string) (sessions.LogEntry, error) {
	v, err := s.Store.Log(ctx, id)
	return v, s.m.storeError("read_logs", err)
}

func (s *meteredStore) TrimLogs(ctx context.Context, class sessions.LogClass, before string) error {
	return s.m.storeError("trim_logs", s.Store.TrimLogs(ctx, class, before))
}

func (s *meteredConnStore) CreateConnection(ctx context.Context, id, name string, doc []byte) error {
	return s.m.storeError("create_connection", s.Connections.CreateConnection(ctx, id, name, doc))
}

func (s *meteredConnStore) SeedConnection(ctx context.Context, id, name string, doc []byte) (bool, error) {
	created, err := s.Connections.SeedConnection(ctx, id, name, doc)
	return created, s.m.storeError("seed_connection", err)
}

func (s *meteredConnStore) GetConnection(ctx context.Context, id string) ([]byte, error) {
	v, err := s.Connections.GetConnection(ctx, id)
	return v, s.m.storeError("get_connection", err)
}

func (s *meteredConnStore) ConnectionByName(ctx context.Context, name string) (string, []byte, error) {
	id, v, err := s.Connections.ConnectionByName(ctx, name)
	return id, v, s.m.storeError("get_connection", err)
}

func (s *meteredConnStore) ListConnections(ctx context.Context) ([][]byte, error) {
	v, err := s.Connections.ListConnections(ctx)
	return v, s.m.storeError("list_connections", err)
}

func (s *meteredConnStore) UpdateConnection(ctx context.Context, id string, doc []byte) error {
	return s.m.storeError("update_connection", s.Connections.UpdateConnection(ctx, id, doc))
}

func (s *meteredConnStore) DeleteConnection(ctx context.Context, id string, tombstone []byte) error {
	return s.m.storeError("delete_connection", s.Connections.DeleteConnection(ctx, id, tombstone))
}

func (s *meteredConnStore) ConnectionTombstone(ctx context.Context, id string) ([]byte, error) {
	v, err := s.Connections.ConnectionTombstone(ctx, id)
	return v, s.m.storeError("connection_tombstone", err)
}

func (s *meteredConnStore) ConnectionsVersion(ctx context.Context) (int64, error) {
	v, err := s.Connections.ConnectionsVersion(ctx)
	return v, s.m.storeError("connections_version", err)
}

// WatchConnections is the store's watch (sessions.ConnectionsWatcher), or an error wrapping
// errors.ErrUnsupported when it has none.
func (s *meteredConnStore) WatchConnections(ctx context.Context, report func(sessions.ConnectionsEvent)) error {
	w, ok := s.Connections.(sessions.ConnectionsWatcher)
	if !ok {
		return fmt.Errorf("watch connections: %w", errors.ErrUnsupported)
	}
	return w.WatchConnections(ctx, report)
}

func (s *meteredConnStore) CreateClient(ctx context.Context, id string, doc []byte) error {
	return s.m.storeError("create_client", s.Clients.CreateClient(ctx, id, doc))
}

func (s *meteredConnStore) SeedClient(ctx context.Context, id string, doc []byte) (bool, error) {
	created, err := s.Clients.SeedClient(ctx, id, doc)
	return created, s.m.storeError("seed_client", err)
}

func (s *meteredConnStore) GetClient(ctx context.Context, id string) ([]byte, error) {
	v, err := s.Clients.GetClient(ctx, id)
	return v, s.m.storeError("get_client", err)
}

func (s *meteredConnStore) ListClients(ctx context.Context) ([][]byte, error) {
	v, err := s.Clients.ListClients(ctx)
	return v, s.m.storeError("list_clients", err)
}

func (s *meteredConnStore) UpdateClient(ctx context.Context, id string, doc []byte) error {
	return s.m.storeError("update_client", s.Clients.UpdateClient(ctx, id, doc))
}

func (s *meteredConnStore) DeleteClient(ctx context.Context, id string, tombstone []byte) error {
	return s.m.storeError("delete_client", s.Clients.DeleteClient(ctx, id, tombstone))
}

func (s *meteredConnStore) ClientTombstone(ctx context.Context, id string) ([]byte, error) {
	v, err := s.Clients.ClientTombstone(ctx, id)
	return v, s.m.storeError("client_tombstone", err)
}

// The sessions.Tallier methods: forwarded when st has them, else errors.ErrUnsupported
// (logs.Writer then appends the event alone).

func (s *meteredStore) AppendLogTallied(ctx context.Context, class sessions.LogClass, id string, event []byte, maxLen int, t sessions.Tally) error {
	tl, ok := s.Store.(sessions.Tallier)
	if !ok {
		return fmt.Errorf("append log tallied: %w", errors.ErrUnsupported)
	}
	return s.m.storeError("append_log", tl.AppendLogTallied(ctx, class, id, event, maxLen, t))
}

func (s *meteredStore) PutAllAndLogTallied(ctx context.Context, logID string, event []byte, maxLen int, t sessions.Tally, items ...sessions.Item) error {
	tl, ok := s.Store.(sessions.Tallier)
	if !ok {
		return fmt.Errorf("put all and log tallied: %w", errors.ErrUnsupported)
	}
	err := tl.PutAllAndLogTallied(ctx, logID, event, maxLen, t, items...)
	if errors.Is(err, errors.ErrUnsupported) {
		return err
	}
	return s.m.storeError("put_all", err)
}

func (s *meteredStore) Tallies(ctx context.Context, step sessions.TallyStep, from, to time.Time) ([]sessions.TallyBucket, error) {
	tl, ok := s.Store.(sessions.Tallier)
	if !ok {
		return nil, fmt.Errorf("tallies: %w", errors.ErrUnsupported)
	}
	bs, err := tl.Tallies(ctx, step, from, to)
	return bs, s.m.storeError("tallies", err)
}

// itemsKind is the kind of a batch's first item, for its span ("" for none).
func itemsKind(items []sessions.Item) sessions.Kind {
	if len(items) == 0 {
		return ""
	}
	return items[0].Kind
}
