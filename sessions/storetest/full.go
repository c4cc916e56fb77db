package storetest

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// Capacity tells RunFull how to bring a store to its capacity and back.
type Capacity struct {
	// Fill brings s to its capacity: afterwards every write that would add a record fails.
	Fill func(t *testing.T, s sessions.Store)
	// Free gives s room for new records again.
	Free func(t *testing.T, s sessions.Store)
}

// RunFull checks a store at capacity (the memory store's record limit, Redis at maxmemory
// under maxmemory-policy noeviction): every write that would add a record fails with an error
// that is sessions.ErrFull and sessions.ErrUnavailable, and changes nothing (a batch is
// refused whole, so is a Swap that adds a record, the event of PutAllAndLog is not appended
// nor the counters of PutAllAndLogTallied counted, an
// IndexAdd that creates an index fails); records already stored can still be read, taken
// once and deleted (an IndexRemove that empties an index deletes it), so logins in flight
// finish and sessions can be ended; once there is room again, writes succeed. newStore must
// return an empty, isolated store.
func RunFull(t *testing.T, newStore func(t *testing.T) sessions.Store, c Capacity) {
	s := newStore(t)
	cx := ctx(t)
	if err := s.Put(cx, sessions.KindSession, "kept.s", []byte("session"), longTTL); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(cx, sessions.KindTransaction, "inflight", []byte("tx"), longTTL); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(cx, sessions.KindSession, "gone.s", []byte("session"), longTTL); err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 1)
	now := time.Now()
	fullIndex, newIndex := sessions.IndexID("full", "kept"), sessions.IndexID("full", "new")
	if _, err := sessions.IndexAdd(cx, s, fullIndex, "ended", now.Add(longTTL), now, 10); err != nil {
		t.Fatal(err)
	}
	c.Fill(t, s)

	wantFull := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, sessions.ErrFull) || !errors.Is(err, sessions.ErrUnavailable) {
			t.Errorf("%s on a full store = %v, want ErrFull (which is ErrUnavailable)", op, err)
		}
	}
	batch := []sessions.Item{
		{Kind: sessions.KindSession, ID: "new.s", Value: []byte("s"), TTL: longTTL},
		{Kind: sessions.KindCode, ID: "new.c", Value: []byte("c"), TTL: longTTL},
	}
	wantFull("Create", s.Create(cx, sessions.KindTransaction, "new-tx", []byte("v"), longTTL))
	wantFull("Put", s.Put(cx, sessions.KindJTI, "new-jti", []byte("v"), longTTL))
	wantFull("PutAll", s.PutAll(cx, batch...))
	if lb, ok := s.(sessions.LogBatcher); ok {
		wantFull("PutAllAndLog", lb.PutAllAndLog(cx, logID(2), []byte(`{"n":2}`), 10, batch...))
	}
	tally := sessions.Tally{At: now, Counts: map[string]int64{"s": 1}}
	if tl, ok := s.(sessions.Tallier); ok {
		wantFull("PutAllAndLogTallied", tl.PutAllAndLogTallied(cx, logID(3), []byte(`{"n":3}`), 10, tally, batch...))
		wantBucket(t, tl, sessions.TallyMinute, now, map[string]int64{}) // the counters went with the batch
	}
	swapAtCapacity(t, s, wantFull)
	_, err := sessions.IndexAdd(cx, s, newIndex, "m", now.Add(longTTL), now, 10)
	wantFull("IndexAdd to a new index", err)
	mustNotFound(t, s, sessions.KindIndex, newIndex)
	// Removing from an index only deletes on a full store: ending sessions still works.
	if err := sessions.IndexRemove(cx, s, fullIndex, now, "ended"); err != nil {
		t.Fatalf("IndexRemove of the last member on a full store: %v", err)
	}
	mustNotFound(t, s, sessions.KindIndex, fullIndex)
	for _, it := range batch {
		mustNotFound(t, s, it.Kind, it.ID)
	}
	mustNotFound(t, s, sessions.KindTransaction, "new-tx")
	mustNotFound(t, s, sessions.KindJTI, "new-jti")
	mustNotFound(t, s, sessions.KindTransaction, "new-vtx")
	wantLogs(t, s, "", 10, 1)

	// What is stored stays usable: a login in flight can take its transaction once.
	mustGet(t, s, sessions.KindSession, "kept.s", []byte("session"))
	if v, err := s.Take(cx, sessions.KindTransaction, "inflight"); err != nil || string(v) != "tx" {
		t.Fatalf("Take on a full store = %q, %v", v, err)
	}
	if _, err := s.Take(cx, sessions.KindTransaction, "inflight"); !errors.Is(err, sessions.ErrNotFound) {
		t.Fatalf("second Take on a full store = %v, want ErrNotFound", err)
	}
	if err := s.Delete(cx, sessions.KindSession, "gone.s"); err != nil {
		t.Fatalf("Delete on a full store: %v", err)
	}
	mustNotFound(t, s, sessions.KindSession, "gone.s")
	if err := s.Ping(cx); err != nil {
		t.Fatalf("Ping on a full store: %v", err)
	}

	c.Free(t, s)
	if err := s.Create(cx, sessions.KindTransaction, "new-tx", []byte("v"), longTTL); err != nil {
		t.Fatalf("Create once there is room: %v", err)
	}
	if err := s.PutAll(cx, batch...); err != nil {
		t.Fatalf("PutAll once there is room: %v", err)
	}
	mustGet(t, s, sessions.KindCode, "new.c", []byte("c"))
	mustGet(t, s, sessions.KindSession, "kept.s", []byte("session"))
}

// FillMemory fills a store whose only limit is a record count with records of kind
// sessions.KindNonce ("fill-N", ten minutes), until a write fails with sessions.ErrFull; it
// returns their ids (for a Free that deletes them).
func FillMemory(t *testing.T, s sessions.Store, max int) []string {
	t.Helper()
	var ids []string
	for i := range max + 1 {
		id := "fill-" + strconv.Itoa(i)
		err := s.Create(ctx(t), sessions.KindNonce, id, []byte("x"), 10*time.Minute)
		if errors.Is(err, sessions.ErrFull) {
			return ids
		}
		if err != nil {
			t.Fatalf("fill: %v", err)
		}
		ids = append(ids, id)
	}
	t.Fatalf("the store took %d records without reporting ErrFull", max+1)
	return nil
}
