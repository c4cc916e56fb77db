package sessions

import (
	"strconv"
	"testing"
	"time"
)

// steadyStore returns a memory store with the given record limit holding held records that
// expire one per tick of its injected clock (the oldest one tick from now), and the time its
// clock reads (the store reads *now on every call).
func steadyStore(tb testing.TB, limit, held int, tick time.Duration) (*memory, *time.Time) {
	tb.Helper()
	now := time.Unix(1_700_000_000, 0)
	m := NewMemoryWithOptions(MemoryOptions{MaxRecords: limit}).(*memory)
	m.now = func() time.Time { return now }
	ctx := tb.Context()
	for i := range held {
		ttl := time.Duration(i+1) * tick
		if err := m.Put(ctx, KindJTI, "fill-"+strconv.Itoa(i), []byte("v"), ttl); err != nil {
			tb.Fatalf("filling record %d: %v", i, err)
		}
	}
	tb.Cleanup(func() { _ = m.Close() })
	return m, &now
}

// BenchmarkMemoryFullStoreWrite measures a write to a memory store at its default record
// limit under a steady flood: each write comes one tick after the last, when exactly one
// record has expired, and adds a record that expires after all the others, so every write
// needs the room of the record that just expired.
func BenchmarkMemoryFullStoreWrite(b *testing.B) {
	const tick = time.Millisecond
	m, now := steadyStore(b, DefaultMaxRecords, DefaultMaxRecords, tick)
	ctx := b.Context()
	ttl := time.Duration(DefaultMaxRecords) * tick
	i := 0
	for b.Loop() {
		*now = now.Add(tick)
		if err := m.Put(ctx, KindJTI, "new-"+strconv.Itoa(i), []byte("v"), ttl); err != nil {
			b.Fatalf("write %d: %v", i, err)
		}
		i++
	}
}

// BenchmarkMemoryWrite measures a write to a memory store far below its record limit with
// the same expiry pattern (one record expires per write), the common case.
func BenchmarkMemoryWrite(b *testing.B) {
	const tick = time.Millisecond
	m, now := steadyStore(b, DefaultMaxRecords, DefaultMaxRecords/2, tick)
	ctx := b.Context()
	ttl := time.Duration(DefaultMaxRecords/2) * tick
	i := 0
	for b.Loop() {
		*now = now.Add(tick)
		if err := m.Put(ctx, KindJTI, "new-"+strconv.Itoa(i), []byte("v"), ttl); err != nil {
			b.Fatalf("write %d: %v", i, err)
		}
		i++
	}
}
