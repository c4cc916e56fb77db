package broker

import (
	"testing"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// incomparableStore is a store value that == cannot compare (it holds a map).
type incomparableStore struct {
	sessions.Store
	extra map[string]int
}

// TestSameStoreComparesStoreValuesWithoutPanicking: the event writer shares the server's
// store only when it holds the same store value; values of a store type that == cannot
// compare are never the same, and comparing them does not panic.
func TestSameStoreComparesStoreValuesWithoutPanicking(t *testing.T) {
	st := sessions.NewMemory()
	odd := incomparableStore{Store: st, extra: map[string]int{}}
	for _, tc := range []struct {
		a, b sessions.Store
		want bool
	}{
		{a: st, b: st, want: true},
		{a: st, b: sessions.NewMemory(), want: false},
		{a: nil, b: st, want: false},
		{a: nil, b: nil, want: false},
		{a: odd, b: st, want: false},
		{a: odd, b: odd, want: false},
	} {
		if got := sameStore(tc.a, tc.b); got != tc.want {
			t.Errorf("sameStore(%T, %T) = %t, want %t", tc.a, tc.b, got, tc.want)
		}
	}
}
