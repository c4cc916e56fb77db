package sessions_test

import (
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
