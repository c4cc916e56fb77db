package sessions

import (
	"errors"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

// TestMemoryKindLimitFreesRoomAsRecordsExpire: proof jtis capped at their own budget fill it
// and are refused, while login state still fits; as jtis expire (on the store's clock) new
// ones are admitted again, one for each that expired.
func TestMemoryKindLimitFreesRoomAsRecordsExpire(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	m := NewMemoryWithOptions(MemoryOptions{MaxRecords: 20, KindLimits: map[Kind]int{KindJTI: 4}}).(*memory)
	m.now = func() time.Time { return now }
	ctx := t.Context()
	for i := range 4 {
		if err := m.Create(ctx, KindJTI, "j"+strconv.Itoa(i), []byte("1"), time.Duration(i+1)*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Create(ctx, KindJTI, "over", []byte("1"), time.Minute); !errors.Is(err, ErrFull) {
		t.Fatalf("a fifth jti = %v, want ErrFull", err)
	}
	for i := range 16 { // the rest of the store is the logins' room
		if err := m.Create(ctx, KindTransaction, "tx"+strconv.Itoa(i), []byte("t"), time.Hour); err != nil {
			t.Fatalf("transaction %d beside a full jti budget: %v", i, err)
		}
	}
	if err := m.Create(ctx, KindTransaction, "tx-over", []byte("t"), time.Hour); !errors.Is(err, ErrFull) {
		t.Fatalf("a record beyond max_records = %v, want ErrFull", err)
	}
	if err := m.Delete(ctx, KindTransaction, "tx0"); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Second) // j0 and j1 expire
	for i := range 2 {
		if err := m.Create(ctx, KindJTI, "new"+strconv.Itoa(i), []byte("1"), time.Minute); err != nil {
			t.Fatalf("jti %d after two expired: %v", i, err)
		}
	}
	if err := m.Create(ctx, KindJTI, "new-over", []byte("1"), time.Minute); !errors.Is(err, ErrFull) {
		t.Fatalf("a third jti after two expired = %v, want ErrFull", err)
	}
}

// TestMemoryKindCountsFollowEveryOperation: under a random mix of creates, puts, batches,
// takes, deletes, swaps, expiries and index rebuilds, the per-kind count always equals the
// records of that kind in the map, and never exceeds the cap.
func TestMemoryKindCountsFollowEveryOperation(t *testing.T) {
	const limit = 50
	now := time.Unix(1_700_000_000, 0)
	m := NewMemoryWithOptions(MemoryOptions{MaxRecords: 400, KindLimits: map[Kind]int{KindJTI: limit}}).(*memory)
	m.now = func() time.Time { return now }
	ctx := t.Context()
	rng := rand.New(rand.NewPCG(1, 2))
	kinds := []Kind{KindJTI, KindJTI, KindCode, KindSession}
	atCap := 0
	for i := range 20_000 {
		kind := kinds[rng.IntN(len(kinds))]
		id := "t" + strconv.Itoa(rng.IntN(8)) + "." + strconv.Itoa(rng.IntN(120))
		ttl := time.Duration(1+rng.IntN(200)) * time.Millisecond
		var err error
		switch rng.IntN(7) {
		case 0:
			err = m.Create(ctx, kind, id, []byte("v"), ttl)
		case 1:
			err = m.Put(ctx, kind, id, []byte("v"), ttl)
		case 2:
			tag, _ := splitTag(id)
			err = m.PutAll(ctx, Item{Kind: kind, ID: id, Value: []byte("a"), TTL: ttl},
				Item{Kind: KindJTI, ID: tag + ".b" + strconv.Itoa(rng.IntN(5)), Value: []byte("b"), TTL: ttl})
		case 3:
			_, err = m.Take(ctx, kind, id)
		case 4:
			err = m.Delete(ctx, kind, id)
		case 5:
			tag, _ := splitTag(id)
			err = m.Swap(ctx, kind, id, []byte("v"),
				[]Item{{Kind: KindJTI, ID: tag + ".s" + strconv.Itoa(rng.IntN(5)), Value: []byte("v"), TTL: ttl}},
				[]Ref{{Kind: KindJTI, ID: tag + ".b" + strconv.Itoa(rng.IntN(5))}})
		case 6:
			now = now.Add(time.Duration(rng.IntN(5)) * time.Millisecond)
		}
		if err != nil && !errors.Is(err, ErrFull) && !errors.Is(err, ErrExists) && !errors.Is(err, ErrNotFound) &&
			!errors.Is(err, ErrConflict) {
			t.Fatalf("operation %d: %v", i, err)
		}
		m.mu.Lock()
		n := 0
		for k := range m.recs {
			if kindOf(k) == KindJTI {
				n++
			}
		}
		got := m.kindN[KindJTI]
		m.mu.Unlock()
		if got != n {
			t.Fatalf("after operation %d the jti count is %d, the map holds %d", i, got, n)
		}
		if n == limit {
			atCap++
		}
		if n > limit {
			t.Fatalf("after operation %d the map holds %d jtis, above the cap %d", i, n, limit)
		}
	}
	if atCap == 0 {
		t.Fatal("the mix never reached the cap")
	}
}

// TestMemoryKindLimitOptions: caps of 0 or at least MaxRecords add nothing to MaxRecords.
func TestMemoryKindLimitOptions(t *testing.T) {
	for _, tc := range []struct {
		name    string
		limits  map[Kind]int
		wantCap bool
	}{
		{name: "a cap below max records is kept", limits: map[Kind]int{KindJTI: 50}, wantCap: true},
		{name: "a cap of zero is none", limits: map[Kind]int{KindJTI: 0}},
		{name: "a negative cap is none", limits: map[Kind]int{KindJTI: -1}},
		{name: "a cap of max records is none", limits: map[Kind]int{KindJTI: 100}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMemoryWithOptions(MemoryOptions{MaxRecords: 100, KindLimits: tc.limits}).(*memory)
			if got := m.kindMax[KindJTI] > 0; got != tc.wantCap {
				t.Fatalf("jti capped = %v, want %v", got, tc.wantCap)
			}
		})
	}
}
