package dpop

import (
	"container/heap"
	"context"
	"errors"
	"sync"
	"time"
)

// ErrReplayCacheFull is returned by the memory replay cache when every slot holds a live
// entry; the proof is refused (fail closed).
var ErrReplayCacheFull = errors.New("dpop: replay cache full")

// DefaultReplayEntries is the size of a memory replay cache made with maxEntries ≤ 0.
const DefaultReplayEntries = 100_000

type memReplay struct {
	mu      sync.Mutex
	max     int
	entries map[string]time.Time // key → expiry
	exps    expiryHeap           // every entry's (expiry, key), soonest first
	now     func() time.Time
}

// NewMemoryReplayCache returns a bounded in-process ReplayCache for a single process.
// Expired entries are dropped as they expire (through an expiry index, never a scan of every
// entry, so a cache kept full by a flood stays fast); when it is full of live entries Claim
// fails with ErrReplayCacheFull.
func NewMemoryReplayCache(maxEntries int) ReplayCache {
	return newMemoryReplayCache(maxEntries, time.Now)
}

func newMemoryReplayCache(maxEntries int, now func() time.Time) *memReplay {
	if maxEntries <= 0 {
		maxEntries = DefaultReplayEntries
	}
	return &memReplay{max: maxEntries, entries: make(map[string]time.Time), now: now}
}

func (m *memReplay) Claim(_ context.Context, key string, ttl time.Duration) (bool, error) {
	if ttl <= 0 {
		return false, errors.New("dpop: replay ttl must be positive")
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expire(now)
	if exp, ok := m.entries[key]; ok && now.Before(exp) {
		return false, nil
	}
	if len(m.entries) >= m.max {
		return false, ErrReplayCacheFull
	}
	exp := now.Add(ttl)
	m.entries[key] = exp
	heap.Push(&m.exps, expiryEntry{exp: exp, key: key})
	return true, nil
}

// expire drops the entries whose expiry has passed, soonest first. An index entry whose key
// now holds another expiry (claimed again after it expired) is dropped without touching it.
func (m *memReplay) expire(now time.Time) {
	for len(m.exps) > 0 && !now.Before(m.exps[0].exp) {
		e := heap.Pop(&m.exps).(expiryEntry)
		if exp, ok := m.entries[e.key]; ok && exp.Equal(e.exp) {
			delete(m.entries, e.key)
		}
	}
}

// expiryEntry is one entry of the expiry index.
type expiryEntry struct {
	exp time.Time
	key string
}

// expiryHeap is a min-heap of expiryEntry by exp (container/heap).
type expiryHeap []expiryEntry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].exp.Before(h[j].exp) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiryEntry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
