package config

import (
	"errors"
	"fmt"
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

// TestConsoleRecordsHaveTheirOwnShareOfTheMemoryStore: console records cannot take more than
// their share (a hundredth of max_records, at least 10), and logins keep the rest.
func TestConsoleRecordsHaveTheirOwnShareOfTheMemoryStore(t *testing.T) {
	for _, tc := range []struct {
		name     string
		max      int
		wantCons int
	}{
		{name: "a hundredth of max_records", max: 100_000, wantCons: 1000},
		{name: "at least 10 in a small store", max: 200, wantCons: 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Default()
			cfg.Store.Memory = MemoryStore{MaxRecords: tc.max}
			if got := cfg.Store.Memory.Options().KindLimits[sessions.KindConsole]; got != tc.wantCons {
				t.Fatalf("console share %d, want %d", got, tc.wantCons)
			}
			st, err := OpenStore(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			for i := range tc.wantCons + 1 {
				err := st.Put(t.Context(), sessions.KindConsole, fmt.Sprintf("s.%d", i), []byte("1"), time.Hour)
				if i < tc.wantCons && err != nil || i == tc.wantCons && !errors.Is(err, sessions.ErrFull) {
					t.Fatalf("console record %d: %v", i, err)
				}
			}
			if err := st.Put(t.Context(), sessions.KindTransaction, "login", []byte("1"), time.Hour); err != nil {
				t.Fatalf("a login beside a full console share: %v", err)
			}
		})
	}
}
