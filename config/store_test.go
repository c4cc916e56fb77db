package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/sessions"
)

func TestReplayBudgetDefaultsToHalfTheStore(t *testing.T) {
	for _, tc := range []struct {
		name string
		mem  MemoryStore
		want int
	}{
		{name: "unset: half of max_records", mem: MemoryStore{MaxRecords: 100_000}, want: 50_000},
		{name: "unset with a small store", mem: MemoryStore{MaxRecords: 2000}, want: 1000},
		{name: "set", mem: MemoryStore{MaxRecords: 2000, MaxReplayRecords: 300}, want: 300},
		{name: "equal to max_records: no budget of its own", mem: MemoryStore{MaxRecords: 2000, MaxReplayRecords: 2000}, want: 2000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.mem.Options()
			if o.MaxRecords != tc.mem.MaxRecords || o.KindLimits[sessions.KindJTI] != tc.want {
				t.Fatalf("options %+v, want max %d and jti %d", o, tc.mem.MaxRecords, tc.want)
			}
		})
	}
	cfg := Default()
	cfg.Store.Memory = MemoryStore{MaxRecords: 200, MaxReplayRecords: 10}
	st, err := OpenStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i := range 11 {
		err := st.Create(t.Context(), sessions.KindJTI, "j"+strings.Repeat("x", i), []byte("1"), 5*time.Minute)
		if i < 10 && err != nil || i == 10 && !errors.Is(err, sessions.ErrFull) {
			t.Fatalf("jti %d in the store OpenStore built: %v", i, err)
		}
	}
}
