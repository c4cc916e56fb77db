package storetest

import (
	"errors"
	"strconv"
	"testing"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// RunKindLimit checks a store that caps the live records of one kind below its overall
// capacity (the memory store's MemoryOptions.KindLimits): once kind holds limit records,
// every write that would add another record of that kind fails with an error that is
// sessions.ErrFull and sessions.ErrUnavailable and changes nothing (a batch or Swap is refused
// whole), while records of other kinds are still written; a record of the kind can still be
// replaced, read, taken and deleted, and each one taken, deleted or swapped away makes room
// for exactly one new one. newStore must return an empty, isolated store with room for limit
// records of kind and at least 8 more of other kinds; limit must be at least 2.
func RunKindLimit(t *testing.T, newStore func(t *testing.T) sessions.Store, kind sessions.Kind, limit int) {
	s := newStore(t)
	cx := ctx(t)
	var others []sessions.Kind // two kinds other than kind
	for _, k := range []sessions.Kind{sessions.KindTransaction, sessions.KindSession, sessions.KindCode} {
		if k != kind {
			others = append(others, k)
		}
	}
	other := others[0]
	id := func(i int) string { return "capped-" + strconv.Itoa(i) }
	for i := range limit {
		if err := s.Create(cx, kind, id(i), []byte("v"), longTTL); err != nil {
			t.Fatalf("record %d of %d within the cap: %v", i+1, limit, err)
		}
	}
	wantFull := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, sessions.ErrFull) || !errors.Is(err, sessions.ErrUnavailable) {
			t.Fatalf("%s of a %s record beyond its cap = %v, want ErrFull (which is ErrUnavailable)", op, kind, err)
		}
	}
	wantFull("Create", s.Create(cx, kind, "over", []byte("v"), longTTL))
	wantFull("Put", s.Put(cx, kind, "over", []byte("v"), longTTL))
	wantFull("PutAll", s.PutAll(cx,
		sessions.Item{Kind: other, ID: "mixed.a", Value: []byte("o"), TTL: longTTL},
		sessions.Item{Kind: kind, ID: "mixed.b", Value: []byte("k"), TTL: longTTL}))
	if err := s.Put(cx, other, "cmp.x", []byte("old"), longTTL); err != nil {
		t.Fatalf("a record of another kind beside a capped kind at its cap: %v", err)
	}
	wantFull("Swap", s.Swap(cx, other, "cmp.x", []byte("old"),
		[]sessions.Item{{Kind: kind, ID: "cmp.y", Value: []byte("k"), TTL: longTTL}}, nil))
	mustNotFound(t, s, kind, "over")
	mustNotFound(t, s, other, "mixed.a")
	mustNotFound(t, s, kind, "mixed.b")
	mustNotFound(t, s, kind, "cmp.y")
	mustGet(t, s, other, "cmp.x", []byte("old"))

	// Other kinds keep their room.
	if err := s.Create(cx, other, "login", []byte("tx"), longTTL); err != nil {
		t.Fatalf("Create of another kind: %v", err)
	}
	if err := s.PutAll(cx,
		sessions.Item{Kind: others[0], ID: "batch.a", Value: []byte("a"), TTL: longTTL},
		sessions.Item{Kind: others[1], ID: "batch.b", Value: []byte("b"), TTL: longTTL}); err != nil {
		t.Fatalf("PutAll of other kinds: %v", err)
	}

	// What the kind holds stays usable, and replacing a record adds none.
	if err := s.Put(cx, kind, id(0), []byte("v2"), longTTL); err != nil {
		t.Fatalf("Put replacing a %s record at the cap: %v", kind, err)
	}
	mustGet(t, s, kind, id(0), []byte("v2"))
	if err := s.Create(cx, kind, id(1), []byte("again"), longTTL); !errors.Is(err, sessions.ErrExists) {
		t.Fatalf("Create of a live record at the cap = %v, want ErrExists", err)
	}

	// Each record that goes makes room for exactly one.
	if v, err := s.Take(cx, kind, id(0)); err != nil || string(v) != "v2" {
		t.Fatalf("Take at the cap = %q, %v", v, err)
	}
	if err := s.Create(cx, kind, "after-take", []byte("v"), longTTL); err != nil {
		t.Fatalf("Create after a Take made room: %v", err)
	}
	wantFull("Create after the room was used", s.Create(cx, kind, "over", []byte("v"), longTTL))
	if err := s.Delete(cx, kind, id(1)); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(cx, kind, "after-delete", []byte("v"), longTTL); err != nil {
		t.Fatalf("Put after a Delete made room: %v", err)
	}
	wantFull("Put after the room was used", s.Put(cx, kind, "over", []byte("v"), longTTL))

	// A Swap that deletes a record of the kind may add one in its place.
	if err := s.Put(cx, kind, "cmp.old", []byte("k"), longTTL); err == nil {
		t.Fatal("Put beyond the cap succeeded")
	}
	if err := s.Delete(cx, kind, id(2)); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(cx, kind, "cmp.old", []byte("k"), longTTL); err != nil {
		t.Fatalf("Put after a Delete made room: %v", err)
	}
	if err := s.Swap(cx, other, "cmp.x", []byte("old"),
		[]sessions.Item{{Kind: kind, ID: "cmp.new", Value: []byte("k"), TTL: longTTL}},
		[]sessions.Ref{{Kind: kind, ID: "cmp.old"}}); err != nil {
		t.Fatalf("Swap replacing one %s record by another at the cap: %v", kind, err)
	}
	mustNotFound(t, s, kind, "cmp.old")
	mustGet(t, s, kind, "cmp.new", []byte("k"))
	wantFull("Create after the Swap", s.Create(cx, kind, "over", []byte("v"), longTTL))
}
