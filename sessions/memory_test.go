package sessions_test

import (
	"fmt"
	"testing"

	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/sessions/storetest"
)

func TestMemoryConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) sessions.Store {
		s := sessions.NewMemory()
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

// TestMemoryStoreAtRecordLimitFailsClosed runs the capacity conformance on a memory store
// with a small record limit.
func TestMemoryStoreAtRecordLimitFailsClosed(t *testing.T) {
	const limit = 16
	var fill []string
	storetest.RunFull(t, func(t *testing.T) sessions.Store {
		s := sessions.NewMemoryWithOptions(sessions.MemoryOptions{MaxRecords: limit})
		t.Cleanup(func() { _ = s.Close() })
		return s
	}, storetest.Capacity{
		Fill: func(t *testing.T, s sessions.Store) { fill = storetest.FillMemory(t, s, limit) },
		Free: func(t *testing.T, s sessions.Store) {
			for _, id := range fill {
				if err := s.Delete(t.Context(), sessions.KindNonce, id); err != nil {
					t.Fatal(err)
				}
			}
		},
	})
}

// TestMemoryStoreKindLimitKeepsRoomForOtherKinds runs the per-kind cap conformance on a
// memory store that caps proof jtis below its record limit.
func TestMemoryStoreKindLimitKeepsRoomForOtherKinds(t *testing.T) {
	storetest.RunKindLimit(t, func(t *testing.T) sessions.Store {
		s := sessions.NewMemoryWithOptions(sessions.MemoryOptions{
			MaxRecords: 100, KindLimits: map[sessions.Kind]int{sessions.KindJTI: 8},
		})
		t.Cleanup(func() { _ = s.Close() })
		return s
	}, sessions.KindJTI, 8)
}

// TestMemoryLogKeepsExactlyMaxLen: the memory log is one list per class, so AppendLog keeps
// exactly the maxLen greatest ids of the class (the Redis log, sharded, keeps a little more).
func TestMemoryLogKeepsExactlyMaxLen(t *testing.T) {
	tests := []struct {
		name    string
		maxLen  int
		appends []int
		want    []int // newest first
	}{
		{name: "in order", maxLen: 4, appends: []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, want: []int{10, 9, 8, 7}},
		{name: "a late old id is dropped at once", maxLen: 3, appends: []int{5, 6, 7, 1}, want: []int{7, 6, 5}},
		{name: "out of order", maxLen: 2, appends: []int{3, 1, 5, 2, 4}, want: []int{5, 4}},
		{name: "one", maxLen: 1, appends: []int{1, 2, 3}, want: []int{3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := sessions.NewMemory()
			for _, n := range tc.appends {
				if err := s.AppendLog(t.Context(), sessions.LogAudit, fmt.Sprintf("%056d", n), fmt.Appendf(nil, "%d", n), tc.maxLen); err != nil {
					t.Fatal(err)
				}
			}
			got, err := s.Logs(t.Context(), "", 100)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprintf("%s", got) != fmt.Sprint(tc.want) {
				t.Fatalf("Logs = %s, want %v", got, tc.want)
			}
		})
	}
}
