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

	t.Run("DS-15 first claim wins, later claims lose", func(t *testing.T) {
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
	t.Run("DS-15 key claimable again after ttl", func(t *testing.T) {
		m := newMemoryReplayCache(10, now)
		_, _ = m.Claim(ctx, "a", time.Minute)
		clock.Add(int64(time.Minute))
		if ok, err := m.Claim(ctx, "a", time.Minute); !ok || err != nil {
			t.Fatalf("claim after expiry %v %v", ok, err)
		}
	})
	t.Run("DS-15 full of live entries fails closed", func(t *testing.T) {
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
	t.Run("DS-15 short ttl entry makes room", func(t *testing.T) {
		m := newMemoryReplayCache(2, now)
		_, _ = m.Claim(ctx, "long", time.Hour)
		_, _ = m.Claim(ctx, "short", time.Second)
		clock.Add(int64(2 * time.Second))
		if ok, err := m.Claim(ctx, "new", time.Hour); !ok || err != nil {
			t.Fatalf("claim: %v %v", ok, err)
		}
	})
	t.Run("DS-15 bad ttl refused", func(t *testing.T) {
		if ok, err := NewMemoryReplayCache(0).Claim(ctx, "a", 0); ok || err == nil {
			t.Fatal("zero ttl accepted")
		}
	})
	t.Run("DS-15 concurrent claims of one key: exactly one wins", func(t *testing.T) {
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
