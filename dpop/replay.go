package dpop

import (
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
	minLive time.Time            // no entry expires before this (valid after a sweep)
	now     func() time.Time
}

// NewMemoryReplayCache returns a bounded in-process ReplayCache for a single process.
// Expired entries are dropped when the cache is full; when it is full of live entries Claim
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
	if exp, ok := m.entries[key]; ok {
		if now.Before(exp) {
			return false, nil
		}
		delete(m.entries, key)
	}
	if len(m.entries) >= m.max {
		if now.Before(m.minLive) {
			return false, ErrReplayCacheFull // nothing can have expired since the last sweep
		}
		m.sweep(now)
		if len(m.entries) >= m.max {
			return false, ErrReplayCacheFull
		}
	}
	exp := now.Add(ttl)
	m.entries[key] = exp
	if m.minLive.IsZero() || exp.Before(m.minLive) {
		m.minLive = exp
	}
	return true, nil
}

// sweep drops expired entries and records the earliest remaining expiry.
func (m *memReplay) sweep(now time.Time) {
	var minLive time.Time
	for k, exp := range m.entries {
		if !now.Before(exp) {
			delete(m.entries, k)
			continue
		}
		if minLive.IsZero() || exp.Before(minLive) {
			minLive = exp
		}
	}
	m.minLive = minLive
}
