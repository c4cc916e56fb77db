package sessions

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// minSweep is the least number of writes between two full sweeps of expired records.
const minSweep = 1024

// DefaultMaxRecords is the memory store's record limit when MemoryOptions.MaxRecords is 0
// (the broker's store.memory.max_records default).
const DefaultMaxRecords = 100_000

// MemoryOptions configure the in-process backend (NewMemoryWithOptions).
type MemoryOptions struct {
	// MaxRecords caps the live TTL records (login transactions, sessions, codes, refresh
	// tokens, proof jtis, nonces) the store holds. A write that would add a record beyond it
	// fails with ErrFull and changes nothing (a batch is refused whole); replacing, taking
	// or deleting a record is always possible, and expired records never count. 0 means
	// DefaultMaxRecords. The event log (bounded by its own maxLen) and connection records do
	// not count.
	MaxRecords int
}

type memRecord struct {
	value []byte
	exp   time.Time
}

type memLog struct {
	id   string
	data []byte
}

// memory is the in-process Store. Expired records are invisible at once (lazy expiry) and
// removed by a full sweep every max(minSweep, len) writes, so the map holds at most about
// twice the live records and no goroutine is needed. A write that would take the map past
// maxRecs sweeps first when a record may have expired (minExp has passed), so the limit is
// one on live records, and a full store costs no sweep until a record actually expires.
type memory struct {
	mu      sync.Mutex
	now     func() time.Time
	recs    map[string]memRecord
	writes  int
	maxRecs int
	minExp  time.Time                 // no record in recs expires before this (a lower bound)
	logs    [len(logClasses)][]memLog // by LogClass, each sorted by id, oldest first
	closed  bool

	conns     map[string]memConn // connection records by id (no TTL)
	connNames map[string]string  // connection name → id
	connGone  map[string][]byte  // tombstones of deleted connections by id
	connVer   int64              // ConnectionsVersion
}

// NewMemory returns the in-process backend with the default options (at most
// DefaultMaxRecords live records): the zero-setup default for a single broker.
func NewMemory() Store {
	return NewMemoryWithOptions(MemoryOptions{})
}

// NewMemoryWithOptions returns the in-process backend configured by o.
func NewMemoryWithOptions(o MemoryOptions) Store {
	if o.MaxRecords <= 0 {
		o.MaxRecords = DefaultMaxRecords
	}
	return &memory{now: time.Now, recs: make(map[string]memRecord), maxRecs: o.MaxRecords}
}

func memKey(kind Kind, id string) string { return string(kind) + "\x00" + id }

var errClosed = fmt.Errorf("%w: memory store closed", ErrUnavailable)

// live returns the live record under k, dropping it if expired. mu must be held.
func (m *memory) live(k string, now time.Time) (memRecord, bool) {
	r, ok := m.recs[k]
	if !ok {
		return r, false
	}
	if !now.Before(r.exp) {
		delete(m.recs, k)
		return r, false
	}
	return r, true
}

// wrote counts a write and sweeps expired records when due. mu must be held.
func (m *memory) wrote(now time.Time) {
	m.writes++
	if m.writes < max(minSweep, len(m.recs)) {
		return
	}
	m.sweep(now)
}

// sweep removes every expired record and recomputes minExp. mu must be held.
func (m *memory) sweep(now time.Time) {
	m.writes = 0
	m.minExp = time.Time{}
	for k, r := range m.recs {
		switch {
		case !now.Before(r.exp):
			delete(m.recs, k)
		case m.minExp.IsZero() || r.exp.Before(m.minExp):
			m.minExp = r.exp
		}
	}
}

// room reports ErrFull when adding n records would exceed maxRecs live records, sweeping
// expired ones first when one may have expired. mu must be held.
func (m *memory) room(n int, now time.Time) error {
	if len(m.recs)+n <= m.maxRecs {
		return nil
	}
	if !now.Before(m.minExp) {
		m.sweep(now)
	}
	if len(m.recs)+n <= m.maxRecs {
		return nil
	}
	return fmt.Errorf("%w (%d live records, the limit)", ErrFull, len(m.recs))
}

// added counts the records items would add: distinct keys without a live record. mu must
// be held.
func (m *memory) added(items []Item, now time.Time) int {
	n := 0
	seen := make(map[string]bool, len(items))
	for _, it := range items {
		k := memKey(it.Kind, it.ID)
		if seen[k] {
			continue
		}
		seen[k] = true
		if _, ok := m.live(k, now); !ok {
			n++
		}
	}
	return n
}

// inOpen runs f with m.mu held, or returns errClosed once the store is closed.
func inOpen[T any](m *memory, f func() (T, error)) (T, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		var zero T
		return zero, errClosed
	}
	return f()
}

// run is inOpen for an operation that returns only an error.
func (m *memory) run(f func() error) error {
	_, err := inOpen(m, func() (struct{}, error) { return struct{}{}, f() })
	return err
}

// putLocked stores every item, counting each write, or none when the records they add do
// not fit (ErrFull). mu must be held.
func (m *memory) putLocked(items []Item) error {
	now := m.now()
	if err := m.room(m.added(items, now), now); err != nil {
		return err
	}
	for _, it := range items {
		m.set(it.Kind, it.ID, it.Value, it.TTL, now)
		m.wrote(now)
	}
	return nil
}

func (m *memory) set(kind Kind, id string, value []byte, ttl time.Duration, now time.Time) {
	exp := now.Add(ttl)
	m.recs[memKey(kind, id)] = memRecord{value: bytes.Clone(value), exp: exp}
	if m.minExp.IsZero() || exp.Before(m.minExp) {
		m.minExp = exp
	}
}

func (m *memory) Create(_ context.Context, kind Kind, id string, value []byte, ttl time.Duration) error {
	if err := checkRecord(kind, id, ttl); err != nil {
		return fmt.Errorf("sessions: create %s: %w", kind, err)
	}
	return m.run(func() error {
		now := m.now()
		if _, ok := m.live(memKey(kind, id), now); ok {
			return fmt.Errorf("sessions: create %s: %w", kind, ErrExists)
		}
		if err := m.room(1, now); err != nil {
			return fmt.Errorf("sessions: create %s: %w", kind, err)
		}
		m.set(kind, id, value, ttl, now)
		m.wrote(now)
		return nil
	})
}

func (m *memory) CreateVersioned(ctx context.Context, kind Kind, id string, value []byte, ttl time.Duration) (int64, error) {
	if err := m.Create(ctx, kind, id, value, ttl); err != nil {
		return 0, err
	}
	return m.ConnectionsVersion(ctx)
}

func (m *memory) Put(_ context.Context, kind Kind, id string, value []byte, ttl time.Duration) error {
	if err := checkRecord(kind, id, ttl); err != nil {
		return fmt.Errorf("sessions: put %s: %w", kind, err)
	}
	return m.run(func() error {
		if err := m.putLocked([]Item{{Kind: kind, ID: id, Value: value, TTL: ttl}}); err != nil {
			return fmt.Errorf("sessions: put %s: %w", kind, err)
		}
		return nil
	})
}

func (m *memory) PutAll(_ context.Context, items ...Item) error {
	if err := checkBatch(items); err != nil {
		return fmt.Errorf("sessions: put all: %w", err)
	}
	return m.run(func() error {
		if err := m.putLocked(items); err != nil {
			return fmt.Errorf("sessions: put all: %w", err)
		}
		return nil
	})
}

func (m *memory) PutAllAndLog(_ context.Context, logID string, event []byte, maxLen int, items ...Item) error {
	if err := checkBatch(items); err != nil {
		return fmt.Errorf("sessions: put all and log: %w", err)
	}
	if err := checkLogID(logID); err != nil {
		return fmt.Errorf("sessions: put all and log: %w", err)
	}
	if maxLen < 1 {
		return fmt.Errorf("sessions: put all and log: maxLen %d must be at least 1", maxLen)
	}
	return m.run(func() error {
		if err := m.putLocked(items); err != nil {
			return fmt.Errorf("sessions: put all and log: %w", err)
		}
		m.appendLog(LogAudit, logID, event, maxLen)
		return nil
	})
}

func (m *memory) Get(_ context.Context, kind Kind, id string) ([]byte, error) {
	if err := checkID(id); err != nil {
		return nil, fmt.Errorf("sessions: get %s: %w", kind, err)
	}
	return inOpen(m, func() ([]byte, error) {
		r, ok := m.live(memKey(kind, id), m.now())
		if !ok {
			return nil, fmt.Errorf("sessions: get %s: %w", kind, ErrNotFound)
		}
		return bytes.Clone(r.value), nil
	})
}

func (m *memory) Take(_ context.Context, kind Kind, id string) ([]byte, error) {
	if err := checkID(id); err != nil {
		return nil, fmt.Errorf("sessions: take %s: %w", kind, err)
	}
	return inOpen(m, func() ([]byte, error) {
		k := memKey(kind, id)
		r, ok := m.live(k, m.now())
		if !ok {
			return nil, fmt.Errorf("sessions: take %s: %w", kind, ErrNotFound)
		}
		delete(m.recs, k)
		return r.value, nil
	})
}

func (m *memory) Delete(_ context.Context, kind Kind, id string) error {
	if err := checkID(id); err != nil {
		return fmt.Errorf("sessions: delete %s: %w", kind, err)
	}
	return m.run(func() error {
		delete(m.recs, memKey(kind, id))
		return nil
	})
}

func (m *memory) AppendLog(_ context.Context, class LogClass, id string, event []byte, maxLen int) error {
	if err := checkLogClass(class); err != nil {
		return fmt.Errorf("sessions: append log: %w", err)
	}
	if err := checkLogID(id); err != nil {
		return fmt.Errorf("sessions: append log: %w", err)
	}
	if maxLen < 1 {
		return fmt.Errorf("sessions: append log: maxLen %d must be at least 1", maxLen)
	}
	return m.run(func() error {
		m.appendLog(class, id, event, maxLen)
		return nil
	})
}

// appendLog inserts one event in id order into class and keeps the maxLen greatest ids of
// that class. m.mu is held.
func (m *memory) appendLog(class LogClass, id string, event []byte, maxLen int) {
	l := &m.logs[class]
	i := logIndex(*l, id)
	*l = slices.Insert(*l, i, memLog{id: id, data: bytes.Clone(event)})
	if n := len(*l) - maxLen; n > 0 {
		clear((*l)[:n]) // release the dropped events
		*l = (*l)[n:]
	}
}

func (m *memory) Logs(ctx context.Context, before string, limit int) ([][]byte, error) {
	es, err := inOpen(m, func() ([]LogEntry, error) { return m.before(before, limit), nil })
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(es))
	for i, e := range es {
		out[i] = e.Event
	}
	return out, nil
}

// logIndex returns the index of the first entry of l whose id is not below id.
func logIndex(l []memLog, id string) int {
	i, _ := slices.BinarySearchFunc(l, id, func(e memLog, id string) int { return strings.Compare(e.id, id) })
	return i
}

// entry copies the i-th entry of class. mu must be held.
func (m *memory) entry(class LogClass, i int) LogEntry {
	e := m.logs[class][i]
	return LogEntry{ID: e.id, Event: bytes.Clone(e.data), Class: class}
}

// after returns up to limit entries of every class above after, oldest first. mu must be held.
func (m *memory) after(after string, limit int) []LogEntry {
	var merged []LogEntry
	for _, c := range logClasses {
		l := m.logs[c]
		start := 0
		if after != "" {
			start = logIndex(l, after)
			if start < len(l) && l[start].id == after {
				start++
			}
		}
		es := make([]LogEntry, 0, max(0, min(limit, len(l)-start)))
		for i := start; i < len(l) && len(es) < limit; i++ {
			es = append(es, m.entry(c, i))
		}
		merged = mergeLogs(merged, es, false, limit)
	}
	return merged
}

// before returns up to limit entries of every class below before ("" = from the newest),
// newest first. before may be any string. mu must be held.
func (m *memory) before(before string, limit int) []LogEntry {
	var merged []LogEntry
	for _, c := range logClasses {
		l := m.logs[c]
		end := len(l)
		if before != "" {
			end = logIndex(l, before)
		}
		es := make([]LogEntry, 0, max(0, min(limit, end)))
		for i := end - 1; i >= 0 && len(es) < limit; i-- {
			es = append(es, m.entry(c, i))
		}
		merged = mergeLogs(merged, es, true, limit)
	}
	return merged
}

func (m *memory) LogsAfter(_ context.Context, after string, limit int) ([]LogEntry, error) {
	if err := checkLogBound(after); err != nil {
		return nil, fmt.Errorf("sessions: logs after: %w", err)
	}
	return inOpen(m, func() ([]LogEntry, error) { return m.after(after, limit), nil })
}

func (m *memory) LogsBefore(_ context.Context, before string, limit int) ([]LogEntry, error) {
	if err := checkLogBound(before); err != nil {
		return nil, fmt.Errorf("sessions: logs before: %w", err)
	}
	return inOpen(m, func() ([]LogEntry, error) { return m.before(before, limit), nil })
}

func (m *memory) Log(_ context.Context, id string) (LogEntry, error) {
	if err := checkLogID(id); err != nil {
		return LogEntry{}, fmt.Errorf("sessions: log: %w", err)
	}
	return inOpen(m, func() (LogEntry, error) {
		for _, c := range logClasses {
			if i := logIndex(m.logs[c], id); i < len(m.logs[c]) && m.logs[c][i].id == id {
				return m.entry(c, i), nil
			}
		}
		return LogEntry{}, fmt.Errorf("sessions: log: %w", ErrNotFound)
	})
}

func (m *memory) TrimLogs(_ context.Context, class LogClass, before string) error {
	if err := checkLogClass(class); err != nil {
		return fmt.Errorf("sessions: trim logs: %w", err)
	}
	if err := checkLogID(before); err != nil {
		return fmt.Errorf("sessions: trim logs: %w", err)
	}
	return m.run(func() error {
		l := &m.logs[class]
		if n := logIndex(*l, before); n > 0 {
			clear((*l)[:n])
			*l = (*l)[n:]
		}
		return nil
	})
}

func (m *memory) Ping(context.Context) error {
	return m.run(func() error { return nil })
}

func (m *memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.recs = nil
	m.logs = [len(logClasses)][]memLog{}
	m.conns, m.connNames, m.connGone = nil, nil, nil
	return nil
}
