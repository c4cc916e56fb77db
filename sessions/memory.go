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

// minSweep is the least size of the expiry index that is rebuilt when stale entries make up
// half of it (see memory.index).
const minSweep = 1024

// DefaultMaxRecords is the memory store's record limit when MemoryOptions.MaxRecords is 0
// (the broker's store.memory.max_records default).
const DefaultMaxRecords = 100_000

// MemoryOptions configure the in-process backend (NewMemoryWithOptions).
type MemoryOptions struct {
	// MaxRecords caps the live TTL records (login transactions, sessions, codes, refresh
	// tokens, proof jtis, nonces, session indexes) the store holds. A write that would add a record beyond it
	// fails with ErrFull and changes nothing (a batch is refused whole); replacing, taking
	// or deleting a record is always possible, and expired records never count. 0 means
	// DefaultMaxRecords. The event log (bounded by its own maxLen) and connection records do
	// not count.
	MaxRecords int
	// KindLimits caps the live records of some kinds within MaxRecords (kinds not listed are
	// bounded by MaxRecords alone). A write that would add a record of such a kind beyond its
	// cap fails with ErrFull and changes nothing, while other kinds keep their room: the
	// broker gives the DPoP proof replay cache (KindJTI), which anyone holding one valid
	// token can grow, its own budget, so it cannot take the room of logins. A cap of 0 or
	// less, or above MaxRecords, is MaxRecords.
	KindLimits map[Kind]int
}

type memRecord struct {
	value []byte
	exp   time.Time
}

type memLog struct {
	id   string
	data []byte
}

// expArity is the number of children of an entry of the expiry index (a 4-ary heap is
// shallower than a binary one, so a removal touches fewer cache lines).
const expArity = 4

// memExp is one entry of the memory store's expiry index: the record under key expired, or
// will expire, at exp, unless it has been rewritten or removed since (a stale entry).
type memExp struct {
	exp time.Time
	key string
}

// memory is the in-process Store. Expired records are invisible at once (lazy expiry), and
// every write removes the records that have expired (a write to a full store does so before
// it checks for room), taking them in expiry order from the expiry index, a min-heap. That
// costs O(log n) per expired record, never a scan of the map, and needs no goroutine. The
// limit is thus one on live records, and a full store admits a write as soon as a record
// has expired, at about the cost of a write to a store that is not full.
//
// Only set adds to the index; rewriting, taking or deleting a record leaves its old entry
// in place, checked against the record when it comes up (stale). The index is rebuilt from
// the map when stale entries make up half of it, so it holds at most about twice the
// records, and the map holds only the live records and those expired since the last write.
type memory struct {
	mu      sync.Mutex
	now     func() time.Time
	recs    map[string]memRecord
	exps    []memExp // expiry index: a min-heap on exp with an entry for every record in recs
	maxRecs int
	// kindMax caps the records of the kinds it lists (MemoryOptions.KindLimits); kindN counts
	// the records of those kinds in recs (live, or expired and not yet removed), kept up to
	// date by set and drop.
	kindMax map[Kind]int
	kindN   map[Kind]int
	logs    [len(logClasses)][]memLog // by LogClass, each sorted by id, oldest first
	closed  bool

	conns   memDocs // connection records (no TTL)
	clients memDocs // client records (no TTL; name = id)
	connVer int64   // ConnectionsVersion: counts the writes of both

	watchers memWatchers // WatchConnections (watch.go)

	tallies memTallies // per-minute and per-hour counters (tally.go; not records: never ErrFull)

	cursors map[string]*memCursor // log cursors by name (logcursor.go; no TTL, never ErrFull)
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
	m := &memory{now: time.Now, recs: make(map[string]memRecord), maxRecs: o.MaxRecords}
	for k, n := range o.KindLimits {
		if n > 0 && n < o.MaxRecords {
			if m.kindMax == nil {
				m.kindMax, m.kindN = map[Kind]int{}, map[Kind]int{}
			}
			m.kindMax[k] = n
		}
	}
	return m
}

func memKey(kind Kind, id string) string { return string(kind) + "\x00" + id }

// kindOf returns the kind part of a memKey.
func kindOf(k string) Kind {
	kind, _, _ := strings.Cut(k, "\x00")
	return Kind(kind)
}

// drop removes the record under k, if any, keeping the per-kind counts. mu must be held.
func (m *memory) drop(k string) {
	if _, ok := m.recs[k]; !ok {
		return
	}
	delete(m.recs, k)
	if m.kindMax != nil {
		if kind := kindOf(k); m.kindMax[kind] > 0 {
			m.kindN[kind]--
		}
	}
}

var errClosed = fmt.Errorf("%w: memory store closed", ErrUnavailable)

// live returns the live record under k, dropping it if expired. mu must be held.
func (m *memory) live(k string, now time.Time) (memRecord, bool) {
	r, ok := m.recs[k]
	if !ok {
		return r, false
	}
	if !now.Before(r.exp) {
		m.drop(k)
		return r, false
	}
	return r, true
}

// wrote finishes a write: it removes the records that have expired. mu must be held.
func (m *memory) wrote(now time.Time) {
	m.expire(now)
}

// expire removes every record that has expired by now, in expiry order, using the index;
// it costs O(log n) per entry removed from the index. mu must be held.
func (m *memory) expire(now time.Time) {
	for len(m.exps) > 0 && !now.Before(m.exps[0].exp) {
		k := m.popExp()
		// The entry may be stale: a record rewritten since has its own, later entry.
		if r, ok := m.recs[k]; ok && !now.Before(r.exp) {
			m.drop(k)
		}
	}
}

// index adds the entry of the record just set under k to the expiry index, then rebuilds
// the index when stale entries (of records rewritten, taken or deleted since) make up half
// of it: each rebuild costs O(n) and follows at least n/2 writes, takes or deletes since
// the last one, so it adds O(1) per operation. mu must be held.
func (m *memory) index(k string, exp, now time.Time) {
	m.exps = append(m.exps, memExp{exp: exp, key: k})
	m.up(len(m.exps) - 1)
	if len(m.exps) > max(minSweep, 2*len(m.recs)) {
		m.sweep(now)
	}
}

// sweep removes every expired record and rebuilds the expiry index from the map, dropping
// its stale entries. mu must be held.
func (m *memory) sweep(now time.Time) {
	exps := make([]memExp, 0, len(m.recs)+1)
	for k, r := range m.recs {
		if !now.Before(r.exp) {
			m.drop(k)
			continue
		}
		exps = append(exps, memExp{exp: r.exp, key: k})
	}
	m.exps = exps
	for i := (len(exps) - 2) / expArity; i >= 0; i-- {
		m.down(i)
	}
}

// popExp removes the index's earliest entry and returns its key. mu must be held.
func (m *memory) popExp() string {
	last := len(m.exps) - 1
	k := m.exps[0].key
	m.exps[0] = m.exps[last]
	m.exps[last] = memExp{} // release the key
	m.exps = m.exps[:last]
	m.down(0)
	return k
}

// up restores the heap order of the index from entry i towards the root.
func (m *memory) up(i int) {
	h := m.exps
	for i > 0 {
		p := (i - 1) / expArity
		if !h[i].exp.Before(h[p].exp) {
			return
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

// down restores the heap order of the index from entry i towards the leaves.
func (m *memory) down(i int) {
	h := m.exps
	for {
		first := expArity*i + 1
		if first >= len(h) {
			return
		}
		c := first
		for j := first + 1; j < min(first+expArity, len(h)); j++ {
			if h[j].exp.Before(h[c].exp) {
				c = j
			}
		}
		if !h[c].exp.Before(h[i].exp) {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
}

// room reports ErrFull when adding n records would exceed maxRecs live records, or adding
// byKind[kind] records of a capped kind would exceed its cap, removing the expired records
// first. mu must be held.
func (m *memory) room(n int, byKind map[Kind]int, now time.Time) error {
	if m.fits(n, byKind) {
		return nil
	}
	m.expire(now)
	if len(m.recs)+n > m.maxRecs {
		return fmt.Errorf("%w (%d live records, the limit)", ErrFull, len(m.recs))
	}
	for kind, add := range byKind {
		if add > 0 && m.kindN[kind]+add > m.kindMax[kind] {
			return fmt.Errorf("%w (%d live %s records, the limit of that kind)", ErrFull, m.kindN[kind], kind)
		}
	}
	return nil
}

// fits reports whether n more records, byKind of capped kinds, fit without expiring any.
// mu must be held.
func (m *memory) fits(n int, byKind map[Kind]int) bool {
	if len(m.recs)+n > m.maxRecs {
		return false
	}
	for kind, add := range byKind {
		if add > 0 && m.kindN[kind]+add > m.kindMax[kind] {
			return false
		}
	}
	return true
}

// added counts the records items would add: distinct keys without a live record, in all and
// of each capped kind (nil when no kind is capped). mu must be held.
func (m *memory) added(items []Item, now time.Time) (int, map[Kind]int) {
	n := 0
	var byKind map[Kind]int
	seen := make(map[string]bool, len(items))
	for _, it := range items {
		k := memKey(it.Kind, it.ID)
		if seen[k] {
			continue
		}
		seen[k] = true
		if _, ok := m.live(k, now); !ok {
			n++
			byKind = m.countKind(byKind, it.Kind, 1)
		}
	}
	return n, byKind
}

// countKind adds d to counts[kind] when kind is capped, allocating counts when needed.
func (m *memory) countKind(counts map[Kind]int, kind Kind, d int) map[Kind]int {
	if m.kindMax[kind] == 0 {
		return counts
	}
	if counts == nil {
		counts = map[Kind]int{}
	}
	counts[kind] += d
	return counts
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
	n, byKind := m.added(items, now)
	if err := m.room(n, byKind, now); err != nil {
		return err
	}
	for _, it := range items {
		m.set(it.Kind, it.ID, it.Value, it.TTL, now)
		m.wrote(now)
	}
	return nil
}

func (m *memory) set(kind Kind, id string, value []byte, ttl time.Duration, now time.Time) {
	k, exp := memKey(kind, id), now.Add(ttl)
	if _, ok := m.recs[k]; !ok && m.kindMax[kind] > 0 {
		m.kindN[kind]++
	}
	m.recs[k] = memRecord{value: bytes.Clone(value), exp: exp}
	m.index(k, exp, now)
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
		if err := m.room(1, m.countKind(nil, kind, 1), now); err != nil {
			return fmt.Errorf("sessions: create %s: %w", kind, err)
		}
		m.set(kind, id, value, ttl, now)
		m.wrote(now)
		return nil
	})
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

func (m *memory) PutAllAndLog(ctx context.Context, logID string, event []byte, maxLen int, items ...Item) error {
	return m.PutAllAndLogTallied(ctx, logID, event, maxLen, Tally{}, items...)
}

// checkPutAllAndLog validates a PutAllAndLog: the batch as for PutAll, the event's id and
// maxLen as for AppendLog.
func checkPutAllAndLog(logID string, maxLen int, items []Item) error {
	if err := checkBatch(items); err != nil {
		return fmt.Errorf("sessions: put all and log: %w", err)
	}
	if err := checkLogID(logID); err != nil {
		return fmt.Errorf("sessions: put all and log: %w", err)
	}
	if maxLen < 1 {
		return fmt.Errorf("sessions: put all and log: maxLen %d must be at least 1", maxLen)
	}
	return nil
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

func (m *memory) GetMany(_ context.Context, refs ...Ref) ([][]byte, error) {
	for _, r := range refs {
		if err := checkID(r.ID); err != nil {
			return nil, fmt.Errorf("sessions: get many %s: %w", r.Kind, err)
		}
	}
	return inOpen(m, func() ([][]byte, error) {
		now, out := m.now(), make([][]byte, len(refs))
		for i, r := range refs {
			if rec, ok := m.live(memKey(r.Kind, r.ID), now); ok {
				out[i] = bytes.Clone(rec.value)
			}
		}
		return out, nil
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
		m.drop(k)
		return r.value, nil
	})
}

func (m *memory) Delete(_ context.Context, kind Kind, id string) error {
	if err := checkID(id); err != nil {
		return fmt.Errorf("sessions: delete %s: %w", kind, err)
	}
	return m.run(func() error {
		m.drop(memKey(kind, id))
		return nil
	})
}

func (m *memory) AppendLog(ctx context.Context, class LogClass, id string, event []byte, maxLen int) error {
	return m.AppendLogTallied(ctx, class, id, event, maxLen, Tally{})
}

// checkAppend validates an AppendLog: a known class, a log id, maxLen at least 1.
func checkAppend(class LogClass, id string, maxLen int) error {
	if err := checkLogClass(class); err != nil {
		return fmt.Errorf("sessions: append log: %w", err)
	}
	if err := checkLogID(id); err != nil {
		return fmt.Errorf("sessions: append log: %w", err)
	}
	if maxLen < 1 {
		return fmt.Errorf("sessions: append log: maxLen %d must be at least 1", maxLen)
	}
	return nil
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
	m.recs, m.exps = nil, nil
	clear(m.kindN)
	m.logs = [len(logClasses)][]memLog{}
	m.conns, m.clients = memDocs{}, memDocs{}
	m.tallies = memTallies{}
	m.cursors = nil
	m.watchers.close()
	return nil
}
