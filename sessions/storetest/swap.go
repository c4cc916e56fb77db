package storetest

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// swapFixture stores a family record "fam.f", a live record "fam.live" and a record of another
// tag, and returns the family value.
func swapFixture(t *testing.T, s sessions.Store) []byte {
	t.Helper()
	old := []byte("gen-1")
	if err := s.PutAll(ctx(t),
		sessions.Item{Kind: sessions.KindRefresh, ID: "fam.f", Value: old, TTL: longTTL},
		sessions.Item{Kind: sessions.KindRefresh, ID: "fam.live", Value: []byte("live-1"), TTL: longTTL},
	); err != nil {
		t.Fatal(err)
	}
	return old
}

func testSwapReplaces(t *testing.T, s sessions.Store) {
	old := swapFixture(t, s)
	err := s.Swap(ctx(t), sessions.KindRefresh, "fam.f", old,
		[]sessions.Item{
			{Kind: sessions.KindRefresh, ID: "fam.f", Value: []byte("gen-2"), TTL: longTTL},
			{Kind: sessions.KindCode, ID: "fam.used", Value: []byte{0, 1, 2}, TTL: shortTTL},
		},
		[]sessions.Ref{{Kind: sessions.KindRefresh, ID: "fam.live"}, {Kind: sessions.KindCode, ID: "fam.never-there"}})
	if err != nil {
		t.Fatalf("Swap with the current value: %v", err)
	}
	mustGet(t, s, sessions.KindRefresh, "fam.f", []byte("gen-2"))
	mustGet(t, s, sessions.KindCode, "fam.used", []byte{0, 1, 2})
	mustNotFound(t, s, sessions.KindRefresh, "fam.live")
	waitGone(t, s, sessions.KindCode, "fam.used") // written with its own TTL
	mustGet(t, s, sessions.KindRefresh, "fam.f", []byte("gen-2"))
}

func testSwapDeletesCompared(t *testing.T, s sessions.Store) {
	old := swapFixture(t, s)
	err := s.Swap(ctx(t), sessions.KindRefresh, "fam.f", old,
		[]sessions.Item{{Kind: sessions.KindCode, ID: "fam.marker", Value: []byte("m"), TTL: longTTL}},
		[]sessions.Ref{{Kind: sessions.KindRefresh, ID: "fam.f"}})
	if err != nil {
		t.Fatalf("Swap that deletes the compared record: %v", err)
	}
	mustNotFound(t, s, sessions.KindRefresh, "fam.f")
	mustGet(t, s, sessions.KindCode, "fam.marker", []byte("m"))
	// The record is gone: a second swapper with the same old value loses.
	err = s.Swap(ctx(t), sessions.KindRefresh, "fam.f", old,
		[]sessions.Item{{Kind: sessions.KindCode, ID: "fam.marker", Value: []byte("other"), TTL: longTTL}}, nil)
	if !errors.Is(err, sessions.ErrConflict) {
		t.Fatalf("Swap of a deleted record = %v, want ErrConflict", err)
	}
	mustGet(t, s, sessions.KindCode, "fam.marker", []byte("m"))
}

func testSwapConflicts(t *testing.T, s sessions.Store) {
	old := swapFixture(t, s)
	put := []sessions.Item{{Kind: sessions.KindRefresh, ID: "fam.f", Value: []byte("gen-2"), TTL: longTTL}}
	del := []sessions.Ref{{Kind: sessions.KindRefresh, ID: "fam.live"}}
	for _, tc := range []struct {
		name      string
		id        string
		old       []byte
		beforeTry func(t *testing.T)
	}{
		{name: "another value", id: "fam.f", old: []byte("gen-0")},
		{name: "a prefix of the value", id: "fam.f", old: old[:3]},
		{name: "an empty old value", id: "fam.f", old: []byte{}},
		{name: "a missing record", id: "fam.nothing", old: old},
		{name: "a record taken first", id: "fam.f", old: old, beforeTry: func(t *testing.T) {
			if _, err := s.Take(ctx(t), sessions.KindRefresh, "fam.f"); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.beforeTry != nil {
				tc.beforeTry(t)
			}
			err := s.Swap(ctx(t), sessions.KindRefresh, tc.id, tc.old, put, del)
			if !errors.Is(err, sessions.ErrConflict) {
				t.Fatalf("Swap = %v, want ErrConflict", err)
			}
			mustGet(t, s, sessions.KindRefresh, "fam.live", []byte("live-1"))
			if tc.beforeTry == nil {
				mustGet(t, s, sessions.KindRefresh, "fam.f", old)
			} else {
				mustNotFound(t, s, sessions.KindRefresh, "fam.f") // not resurrected
			}
		})
	}
}

func testSwapExpired(t *testing.T, s sessions.Store) {
	if err := s.Put(ctx(t), sessions.KindRefresh, "short.f", []byte("v"), shortTTL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, s, sessions.KindRefresh, "short.f")
	err := s.Swap(ctx(t), sessions.KindRefresh, "short.f", []byte("v"),
		[]sessions.Item{{Kind: sessions.KindRefresh, ID: "short.f", Value: []byte("w"), TTL: longTTL}}, nil)
	if !errors.Is(err, sessions.ErrConflict) {
		t.Fatalf("Swap of an expired record = %v, want ErrConflict", err)
	}
	mustNotFound(t, s, sessions.KindRefresh, "short.f")
}

func testSwapRefusesBadBatches(t *testing.T, s sessions.Store) {
	old := swapFixture(t, s)
	item := func(kind sessions.Kind, id string) sessions.Item {
		return sessions.Item{Kind: kind, ID: id, Value: []byte("new"), TTL: longTTL}
	}
	for _, tc := range []struct {
		name string
		put  []sessions.Item
		del  []sessions.Ref
	}{
		{name: "a written record of another hash tag", put: []sessions.Item{item(sessions.KindRefresh, "fam.f"), item(sessions.KindCode, "other.x")}},
		{name: "a deleted record of another hash tag", del: []sessions.Ref{{Kind: sessions.KindRefresh, ID: "other.live"}}},
		{name: "a record both written and deleted", put: []sessions.Item{item(sessions.KindRefresh, "fam.live")}, del: []sessions.Ref{{Kind: sessions.KindRefresh, ID: "fam.live"}}},
		{name: "a zero TTL", put: []sessions.Item{{Kind: sessions.KindRefresh, ID: "fam.f", Value: []byte("x")}}},
		{name: "an invalid id", put: []sessions.Item{item(sessions.KindRefresh, "fam.{x}")}},
		{name: "an empty kind", del: []sessions.Ref{{ID: "fam.live"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Swap(ctx(t), sessions.KindRefresh, "fam.f", old, tc.put, tc.del)
			if err == nil || errors.Is(err, sessions.ErrConflict) {
				t.Fatalf("Swap = %v, want a refusal", err)
			}
			mustGet(t, s, sessions.KindRefresh, "fam.f", old)
			mustGet(t, s, sessions.KindRefresh, "fam.live", []byte("live-1"))
			mustNotFound(t, s, sessions.KindCode, "other.x")
		})
	}
}

// testSwapConcurrent: of 32 swappers that read the same value exactly one wins, and the
// record then holds the winner's value with the winner's companion record.
func testSwapConcurrent(t *testing.T, s sessions.Store) {
	for round := range 20 {
		tag := fmt.Sprintf("fam%d", round)
		old := []byte("gen-0")
		if err := s.Put(ctx(t), sessions.KindRefresh, tag+".f", old, longTTL); err != nil {
			t.Fatal(err)
		}
		var winner atomic.Int32
		wins := race(t, 32, sessions.ErrConflict, func(i int) error {
			v := []byte(fmt.Sprintf("gen-1-by-%d", i))
			err := s.Swap(ctx(t), sessions.KindRefresh, tag+".f", old, []sessions.Item{
				{Kind: sessions.KindRefresh, ID: tag + ".f", Value: v, TTL: longTTL},
				{Kind: sessions.KindCode, ID: tag + ".by", Value: v, TTL: longTTL},
			}, nil)
			if err == nil {
				winner.Store(int32(i))
			}
			return err
		})
		if wins != 1 {
			t.Fatalf("round %d: %d swappers won, want exactly 1", round, wins)
		}
		want := []byte(fmt.Sprintf("gen-1-by-%d", winner.Load()))
		mustGet(t, s, sessions.KindRefresh, tag+".f", want)
		mustGet(t, s, sessions.KindCode, tag+".by", want)
	}
}

// testSwapVersusTake: a record taken concurrently with swaps is either taken before every
// swap (all of them lose, nothing is written) or after one swap (the taker gets the new
// value); a swap never writes after the take.
func testSwapVersusTake(t *testing.T, s sessions.Store) {
	for round := range 20 {
		tag := fmt.Sprintf("rev%d", round)
		old := []byte("gen-0")
		if err := s.Put(ctx(t), sessions.KindRefresh, tag+".f", old, longTTL); err != nil {
			t.Fatal(err)
		}
		var taken atomic.Value
		wins := race(t, 16, sessions.ErrConflict, func(i int) error {
			if i == 0 {
				v, err := s.Take(ctx(t), sessions.KindRefresh, tag+".f")
				if err != nil {
					return fmt.Errorf("take: %w", err)
				}
				taken.Store(string(v))
				return sessions.ErrConflict // not a swap: not counted
			}
			return s.Swap(ctx(t), sessions.KindRefresh, tag+".f", old, []sessions.Item{
				{Kind: sessions.KindRefresh, ID: tag + ".f", Value: []byte("gen-1"), TTL: longTTL},
			}, nil)
		})
		mustNotFound(t, s, sessions.KindRefresh, tag+".f")
		want := map[int]string{0: "gen-0", 1: "gen-1"}[wins]
		if got := taken.Load(); wins > 1 || got != want {
			t.Fatalf("round %d: %d swaps won and the taker got %v", round, wins, got)
		}
	}
}

// swapAtCapacity checks Swap on a full store (RunFull): one that would add a record fails
// with ErrFull and changes nothing; one that only deletes works.
func swapAtCapacity(t *testing.T, s sessions.Store, wantFull func(string, error)) {
	t.Helper()
	cx := ctx(t)
	wantFull("Swap", s.Swap(cx, sessions.KindSession, "kept.s", []byte("session"),
		[]sessions.Item{{Kind: sessions.KindCode, ID: "kept.new", Value: []byte("c"), TTL: longTTL}}, nil))
	mustNotFound(t, s, sessions.KindCode, "kept.new")
	mustGet(t, s, sessions.KindSession, "kept.s", []byte("session"))
	if err := s.Swap(cx, sessions.KindSession, "kept.s", []byte("session"), nil,
		[]sessions.Ref{{Kind: sessions.KindCode, ID: "kept.none"}}); err != nil {
		t.Fatalf("Swap that writes nothing on a full store: %v", err)
	}
}
