package sessions

import (
	"errors"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

// TestMemoryFullStoreAdmitsWritesAsRecordsExpire: a store at its record limit whose records
// expire one per tick refuses a write until a record expires and then admits exactly as many
// new records as have expired, a batch whole or not at all; a record rewritten before it
// expires keeps its room.
func TestMemoryFullStoreAdmitsWritesAsRecordsExpire(t *testing.T) {
	const (
		limit = 64
		tick  = time.Millisecond
	)
	m, now := steadyStore(t, limit, limit, tick)
	ctx := t.Context()
	longTTL := time.Duration(10*limit) * tick
	n := 0
	put := func() error {
		n++
		return m.Put(ctx, KindJTI, "new-"+strconv.Itoa(n), []byte("v"), longTTL)
	}
	wantFull := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrFull) {
			t.Fatalf("%s: %v, want ErrFull", what, err)
		}
	}

	wantFull("a write before any record expired", put())
	for i := range limit / 2 {
		*now = now.Add(tick) // fill-i expires
		if err := put(); err != nil {
			t.Fatalf("write after record %d expired: %v", i, err)
		}
		wantFull("a second write after one record expired", put())
	}

	// fill-32 and fill-33 expire; a batch of three new records does not fit, two do.
	*now = now.Add(2 * tick)
	batch := func(ids ...string) []Item {
		items := make([]Item, len(ids))
		for i, id := range ids {
			items[i] = Item{Kind: KindCode, ID: "b." + id, Value: []byte(id), TTL: longTTL}
		}
		return items
	}
	wantFull("a batch of three records when two expired", m.PutAll(ctx, batch("1", "2", "3")...))
	if _, err := m.Get(ctx, KindCode, "b.1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused batch left a record: %v", err)
	}
	if err := m.PutAll(ctx, batch("1", "2")...); err != nil {
		t.Fatalf("a batch of two records when two expired: %v", err)
	}

	// fill-34 is rewritten to live longer just before its expiry: its old expiry frees no room.
	if err := m.Put(ctx, KindJTI, "fill-34", []byte("kept"), longTTL); err != nil {
		t.Fatalf("rewriting a record at the limit: %v", err)
	}
	*now = now.Add(tick)
	wantFull("a write when the record due to expire was rewritten", put())
	if v, err := m.Get(ctx, KindJTI, "fill-34"); err != nil || string(v) != "kept" {
		t.Fatalf("the rewritten record = %q, %v; want kept", v, err)
	}
	*now = now.Add(tick) // fill-35 expires
	if err := put(); err != nil {
		t.Fatalf("write after the next record expired: %v", err)
	}
	wantFull("a second write after one record expired", put())
}

// TestMemoryExpiryIndexStaysBounded: rewriting, taking and deleting records leave stale
// entries in the expiry index, which never grows past about twice the records held (or
// minSweep), so memory per record stays bounded whatever the mix of operations.
func TestMemoryExpiryIndexStaysBounded(t *testing.T) {
	tests := []struct {
		name string
		op   func(m *memory, i int) error
	}{
		{
			name: "one record rewritten again and again",
			op: func(m *memory, i int) error {
				return m.Put(t.Context(), KindSession, "s", []byte(strconv.Itoa(i)), time.Hour)
			},
		},
		{
			name: "records created and taken",
			op: func(m *memory, i int) error {
				id := "tx-" + strconv.Itoa(i)
				if err := m.Create(t.Context(), KindTransaction, id, []byte("v"), time.Hour); err != nil {
					return err
				}
				_, err := m.Take(t.Context(), KindTransaction, id)
				return err
			},
		},
		{
			name: "records put and deleted",
			op: func(m *memory, i int) error {
				id := "c-" + strconv.Itoa(i)
				if err := m.Put(t.Context(), KindCode, id, []byte("v"), time.Hour); err != nil {
					return err
				}
				return m.Delete(t.Context(), KindCode, id)
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const held = 3 * minSweep
			m, now := steadyStore(t, 4*minSweep, held, time.Second)
			*now = now.Add(time.Second) // the first record held expires
			for i := range 10 * minSweep {
				if err := tc.op(m, i); err != nil {
					t.Fatalf("operation %d: %v", i, err)
				}
				m.mu.Lock()
				idx, recs := len(m.exps), len(m.recs)
				m.mu.Unlock()
				// A write leaves at most max(minSweep, 2*recs)+1 entries; a take or delete
				// after it removes one record but no entry.
				if idx > max(minSweep, 2*recs)+2 {
					t.Fatalf("after operation %d the expiry index holds %d entries for %d records", i, idx, recs)
				}
			}
			m.mu.Lock()
			defer m.mu.Unlock()
			if want := held - 1; len(m.recs) < want || len(m.recs) > want+1 {
				t.Fatalf("%d records held, want the %d live ones (and one rewritten)", len(m.recs), want)
			}
		})
	}
}

// TestMemoryRecordLimitMatchesModelUnderRandomOperations: under random writes, rewrites,
// takes, deletes and clock steps, the store admits a write exactly when a model of its live
// records has room, and every write leaves no expired record behind.
func TestMemoryRecordLimitMatchesModelUnderRandomOperations(t *testing.T) {
	const limit = 50
	ctx := t.Context()
	rnd := rand.New(rand.NewPCG(1, 2))
	m, now := steadyStore(t, limit, 0, time.Millisecond)
	live := map[string]time.Time{} // the model: id → expiry of its live record
	purge := func() {
		for id, exp := range live {
			if !now.Before(exp) {
				delete(live, id)
			}
		}
	}
	for i := range 20_000 {
		id := "r" + strconv.Itoa(rnd.IntN(2*limit))
		switch op := rnd.IntN(10); {
		case op < 6:
			ttl := time.Duration(1+rnd.IntN(200)) * time.Millisecond
			purge()
			_, exists := live[id]
			err := m.Put(ctx, KindNonce, id, []byte("v"), ttl)
			switch {
			case !exists && len(live) >= limit:
				if !errors.Is(err, ErrFull) {
					t.Fatalf("op %d: Put with %d live records = %v, want ErrFull", i, len(live), err)
				}
			case err != nil:
				t.Fatalf("op %d: Put with %d live records: %v", i, len(live), err)
			default:
				live[id] = now.Add(ttl)
			}
			m.mu.Lock()
			held := len(m.recs)
			m.mu.Unlock()
			if held != len(live) {
				t.Fatalf("op %d: after a write the store holds %d records, want the %d live ones", i, held, len(live))
			}
		case op < 8:
			purge()
			_, exists := live[id]
			_, err := m.Take(ctx, KindNonce, id)
			if exists != (err == nil) {
				t.Fatalf("op %d: Take of a record live=%v: %v", i, exists, err)
			}
			delete(live, id)
		case op < 9:
			if err := m.Delete(ctx, KindNonce, id); err != nil {
				t.Fatalf("op %d: Delete: %v", i, err)
			}
			delete(live, id)
		default:
			*now = now.Add(time.Duration(rnd.IntN(10)) * time.Millisecond)
		}
	}
}
