package logs

import (
	"errors"
	"slices"
	"testing"

	"github.com/dpop-broker/dpop-broker/sessions"
)

func TestSearchRefusesABoundThatIsNotALogID(t *testing.T) {
	w := quietWriter(sessions.NewMemory(), newClock())
	for _, q := range []Query{{Before: "yesterday"}, {After: "1"}} {
		if _, err := w.Search(t.Context(), q); !errors.Is(err, ErrInvalidQuery) {
			t.Errorf("Search(%+v) = %v, want ErrInvalidQuery", q, err)
		}
	}
}

func TestTailDeliversOnlyNewMatchingEventsOnceAndMovesPastTheOthers(t *testing.T) {
	backends(t, func(t *testing.T, newStore func() sessions.Store) {
		clock := newClock()
		w := quietWriter(newStore(), clock)
		writeN(t, w, clock, 4) // before the tail starts: never shown
		evs, cursor, err := w.Tail(t.Context(), "", "type:f", 10)
		if err != nil || len(evs) != 0 || cursor == "" {
			t.Fatalf("Tail from now = %v, %q, %v; want no events and a cursor", clientIDs(evs), cursor, err)
		}
		ids := writeN(t, w, clock, 5) // c0..c4: c1 and c3 are f
		evs, next, err := w.Tail(t.Context(), cursor, "type:f", 1)
		if err != nil || !slices.Equal(clientIDs(evs), cs(1)) || next != ids[1] {
			t.Fatalf("Tail(take 1) = %v, %q, %v; want [c1] and its id", clientIDs(evs), next, err)
		}
		evs, next, err = w.Tail(t.Context(), next, "type:f", 10)
		if err != nil || !slices.Equal(clientIDs(evs), cs(3)) || next != ids[4] {
			t.Fatalf("Tail = %v, %q, %v; want [c3] and the last id read (c4's)", clientIDs(evs), next, err)
		}
		evs, again, err := w.Tail(t.Context(), next, "type:f", 10)
		if err != nil || len(evs) != 0 || again != next {
			t.Fatalf("Tail with nothing new = %v, %q, %v; want nothing and the same cursor", clientIDs(evs), again, err)
		}
	})
}

func TestTailOfAnEmptyLogShowsTheFirstEvent(t *testing.T) {
	clock := newClock()
	w := quietWriter(sessions.NewMemory(), clock)
	_, cursor, err := w.Tail(t.Context(), "", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	writeN(t, w, clock, 1)
	evs, _, err := w.Tail(t.Context(), cursor, "", 10)
	if err != nil || !slices.Equal(clientIDs(evs), cs(0)) {
		t.Fatalf("Tail = %v, %v; want [c0]", clientIDs(evs), err)
	}
}

func TestTailRefusesBadInput(t *testing.T) {
	w := quietWriter(sessions.NewMemory(), newClock())
	tests := []struct {
		name  string
		after string
		q     string
		take  int
	}{
		{name: "after not a log id", after: "42", take: 10},
		{name: "bad q", q: "type:(f)", take: 10},
		{name: "take 0", take: 0},
		{name: "take above the cap", take: MaxTake + 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := w.Tail(t.Context(), tc.after, tc.q, tc.take); !errors.Is(err, ErrInvalidQuery) {
				t.Fatalf("Tail = %v, want ErrInvalidQuery", err)
			}
		})
	}
}
