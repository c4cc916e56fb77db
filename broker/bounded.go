package broker

import (
	"errors"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// Bounded state: whatever unauthenticated requests make the broker store is bounded. The
// memory store holds at most store.memory.max_records live records and refuses more with
// sessions.ErrFull (Redis: its maxmemory, README); a full store is answered 503 with
// details.error store_full and nothing half-written. Each client IP holds at most
// rate_limits.live_transactions_per_ip login transactions at once on a replica.

// codeStoreFull is details.error when the store refused a write for lack of room.
const codeStoreFull = "store_full"

// storeFull reports whether err means the store is at capacity (it is also storeDown).
func storeFull(err error) bool { return errors.Is(err, sessions.ErrFull) }

// byLiveTransactions is details.rate_limit.by (and the metric's key label) of a refusal for
// too many live login transactions.
const byLiveTransactions = "live_transactions"

// liveTxTable counts, per client-IP key, the login transactions that key holds on this
// replica: a slot is taken when /authorize starts a login, before anything is sent upstream
// (a pushed authorization request), and given back when the login does not start, when
// /login/callback takes its transaction on this replica, or when it expires (its own expiry,
// on the broker's clock). A login finished on another replica keeps its slot here until it
// expires. Keys are bounded like limiterTable's: the least recently used is forgotten, so
// spoofed keys cannot grow memory (forgetting a key only frees its slots early).
type liveTxTable struct {
	limit   int // reserve's; the guard's table is reserved with the guard's bound (reserveUpTo)
	maxKeys int

	mu   sync.Mutex
	keys *logs.LRU[*liveTxEntry]
}

type liveTxEntry struct {
	exps []int64 // expiries (unix ms) of the key's live transactions, ascending
}

func newLiveTxTable(limit, maxKeys int) *liveTxTable {
	return &liveTxTable{limit: limit, maxKeys: maxKeys, keys: logs.NewLRU(maxKeys, func() *liveTxEntry { return &liveTxEntry{} })}
}

// live drops the expired slots of e at now and returns e (the table's mu is held).
func (e *liveTxEntry) live(now time.Time) *liveTxEntry {
	ms := now.UnixMilli()
	n := 0
	for n < len(e.exps) && e.exps[n] <= ms {
		n++
	}
	e.exps = slices.Delete(e.exps, 0, n)
	return e
}

// reserve takes a slot for a transaction of key that expires at exp (unix ms). It returns nil
// when taken, or the refusal when key already holds limit live transactions: Retry-After is
// when the first of them expires.
func (t *liveTxTable) reserve(key string, now time.Time, exp int64) *refusal {
	return t.reserveUpTo(key, now, exp, t.limit)
}

// reserveUpTo is reserve with limit instead of the table's own.
func (t *liveTxTable) reserveUpTo(key string, now time.Time, exp int64, limit int) *refusal {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.keys.GetOrCreate(key).live(now)
	if len(e.exps) < limit {
		i, _ := slices.BinarySearch(e.exps, exp)
		e.exps = slices.Insert(e.exps, i, exp)
		return nil
	}
	return &refusal{
		endpoint: "authorize", by: byLiveTransactions, limit: strconv.Itoa(limit),
		retryAfter: max(time.UnixMilli(e.exps[0]).Sub(now), 0),
	}
}

// release gives back the slot of key's transaction that expires at exp; an unknown key or
// expiry (forgotten, or started on another replica) changes nothing.
func (t *liveTxTable) release(key string, exp int64, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.keys.Get(key)
	if !ok {
		return
	}
	e.live(now)
	if i, found := slices.BinarySearch(e.exps, exp); found {
		e.exps = slices.Delete(e.exps, i, i+1)
	}
}

// held reports how many live slots key holds at now (tests).
func (t *liveTxTable) held(key string, now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.keys.Get(key)
	if !ok {
		return 0
	}
	return len(e.live(now).exps)
}

// len reports how many keys the table remembers (tests).
func (t *liveTxTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.keys.Len()
}

// holdTx takes the live-transaction slot of tx (its LimitKey and Expires) before the login is
// started upstream; nil when allowed (or unbounded).
func (s *Server) holdTx(tx *transaction) *refusal {
	if s.guard.liveTx == nil {
		return nil
	}
	ref := s.guard.liveTx.reserveUpTo(tx.LimitKey, s.now(), tx.Expires, s.guard.liveTxLimit)
	s.guard.count(ref)
	return ref
}

// freeTx gives the slot of tx back: the callback took it, or it was not stored after all.
func (s *Server) freeTx(tx *transaction) {
	if s.guard.liveTx != nil && tx.LimitKey != "" {
		s.guard.liveTx.release(tx.LimitKey, tx.Expires, s.now())
	}
}
