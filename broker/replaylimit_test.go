package broker

import (
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/sessions"
)

func TestReplayBudgetDefaultsToHalfTheStore(t *testing.T) {
	for _, tc := range []struct {
		name string
		mem  MemoryStoreConfig
		want int
	}{
		{name: "unset: half of max_records", mem: MemoryStoreConfig{MaxRecords: 100_000}, want: 50_000},
		{name: "unset with a small store", mem: MemoryStoreConfig{MaxRecords: 2000}, want: 1000},
		{name: "set", mem: MemoryStoreConfig{MaxRecords: 2000, MaxReplayRecords: 300}, want: 300},
		{name: "equal to max_records: no budget of its own", mem: MemoryStoreConfig{MaxRecords: 2000, MaxReplayRecords: 2000}, want: 2000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.mem.options()
			if o.MaxRecords != tc.mem.MaxRecords || o.KindLimits[sessions.KindJTI] != tc.want {
				t.Fatalf("options %+v, want max %d and jti %d", o, tc.mem.MaxRecords, tc.want)
			}
		})
	}
	cfg := Default()
	cfg.Store.Memory = MemoryStoreConfig{MaxRecords: 200, MaxReplayRecords: 10}
	st, err := OpenStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i := range 11 {
		err := st.Create(t.Context(), sessions.KindJTI, "j"+strings.Repeat("x", i), []byte("1"), 5*time.Minute)
		if i < 10 && err != nil || i == 10 && !storeFull(err) {
			t.Fatalf("jti %d in the store OpenStore built: %v", i, err)
		}
	}
}
