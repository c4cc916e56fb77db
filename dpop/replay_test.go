package dpop

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestMemoryReplayCache(t *testing.T) {
	ctx := context.Background()
	var clock atomic.Int64
	clock.Store(vtNow.UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }

	t.Run("first claim wins, later claims lose", func(t *testing.T) {
		m := newMemoryReplayCache(10, now)
		if ok, err := m.Claim(ctx, "a", time.Minute); !ok || err != nil {
			t.Fatalf("first claim %v %v", ok, err)
		}
		for i := 0; i < 3; i++ {
			if ok, err := m.Claim(ctx, "a", time.Minute); ok || err != nil {
				t.Fatalf("repeat claim %v %v", ok, err)
			}
		}
	})
	t.Run("key claimable again after ttl", func(t *testing.T) {
		m := newMemoryReplayCache(10, now)
		_, _ = m.Claim(ctx, "a", time.Minute)
		clock.Add(int64(time.Minute))
		if ok, err := m.Claim(ctx, "a", time.Minute); !ok || err != nil {
			t.Fatalf("claim after expiry %v %v", ok, err)
		}
	})
	t.Run("full of live entries fails closed", func(t *testing.T) {
		m := newMemoryReplayCache(3, now)
		for i := 0; i < 3; i++ {
			if ok, err := m.Claim(ctx, fmt.Sprint(i), time.Minute); !ok || err != nil {
				t.Fatal(ok, err)
			}
		}
		ok, err := m.Claim(ctx, "x", time.Minute)
		if ok || !errors.Is(err, ErrReplayCacheFull) {
			t.Fatalf("full cache: %v %v", ok, err)
		}
		// An already-claimed key is still reported as a replay, not as an error.
		if ok, err := m.Claim(ctx, "1", time.Minute); ok || err != nil {
			t.Fatalf("replay in full cache: %v %v", ok, err)
		}
		clock.Add(int64(time.Minute))
		if ok, err := m.Claim(ctx, "x", time.Minute); !ok || err != nil {
			t.Fatalf("after expiry: %v %v", ok, err)
		}
		if len(m.entries) != 1 {
			t.Fatalf("expired entries kept: %d", len(m.entries))
		}
	})
	t.Run("short ttl entry makes room", func(t *testing.T) {
		m := newMemoryReplayCache(2, now)
		_, _ = m.Claim(ctx, "long", time.Hour)
		_, _ = m.Claim(ctx, "short", time.Second)
		clock.Add(int64(2 * time.Second))
		if ok, err := m.Claim(ctx, "new", time.Hour); !ok || err != nil {
			t.Fatalf("claim: %v %v", ok, err)
		}
	})
	t.Run("a cache kept full admits one claim per expired entry, and its index stays bounded", func(t *testing.T) {
		const size = 100
		m := newMemoryReplayCache(size, now)
		for i := range size { // one entry expiring per millisecond
			clock.Add(int64(time.Millisecond))
			if ok, err := m.Claim(ctx, fmt.Sprint("fill", i), size*time.Millisecond); !ok || err != nil {
				t.Fatal(ok, err)
			}
		}
		for i := range 10 * size {
			if ok, err := m.Claim(ctx, fmt.Sprint("extra", i), size*time.Millisecond); ok || !errors.Is(err, ErrReplayCacheFull) {
				t.Fatalf("claim %d before anything expired: %v %v", i, ok, err)
			}
			clock.Add(int64(time.Millisecond)) // the oldest entry expires
			if ok, err := m.Claim(ctx, fmt.Sprint("next", i), size*time.Millisecond); !ok || err != nil {
				t.Fatalf("claim %d after one entry expired: %v %v", i, ok, err)
			}
			if len(m.entries) > size || len(m.exps) > size+1 {
				t.Fatalf("after %d claims: %d entries, %d index entries", i, len(m.entries), len(m.exps))
			}
		}
	})
	t.Run("bad ttl refused", func(t *testing.T) {
		if ok, err := NewMemoryReplayCache(0).Claim(ctx, "a", 0); ok || err == nil {
			t.Fatal("zero ttl accepted")
		}
	})
	t.Run("concurrent claims of one key: exactly one wins", func(t *testing.T) {
		m := NewMemoryReplayCache(100)
		var wins atomic.Int32
		var wg sync.WaitGroup
		for i := 0; i < 32; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if ok, _ := m.Claim(ctx, "k", time.Minute); ok {
					wins.Add(1)
				}
			}()
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("%d winners", wins.Load())
		}
	})
}

// BenchmarkMemoryReplayCacheFull: a cache at its size under a steady stream of expiries (one
// entry expires per claim), as under a flood of proofs: each claim takes an expired entry's room.
func BenchmarkMemoryReplayCacheFull(b *testing.B) {
	const size = 100_000
	var clock atomic.Int64
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	m := newMemoryReplayCache(size, now)
	ctx := context.Background()
	for i := range size {
		clock.Add(int64(time.Millisecond))
		_, _ = m.Claim(ctx, fmt.Sprint("fill", i), size*time.Millisecond)
	}
	b.ResetTimer()
	for i := range b.N {
		clock.Add(int64(time.Millisecond))
		if ok, err := m.Claim(ctx, fmt.Sprint("k", i), size*time.Millisecond); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}
