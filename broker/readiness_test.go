package broker

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// /readyz needs no token: a flood of probes is answered from one store ping per second.
func TestReadinessPingsTheStoreAtMostOncePerSecond(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	down := errors.New("store down")
	var pings atomic.Int32
	var fail atomic.Bool
	ping := func(context.Context) error {
		pings.Add(1)
		if fail.Load() {
			return down
		}
		return nil
	}
	var rd readiness
	var wg sync.WaitGroup
	for range 50 { // concurrent probes: one ping
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := rd.check(t.Context(), t0, ping); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := pings.Load(); n != 1 {
		t.Fatalf("50 concurrent probes pinged the store %d times, want 1", n)
	}
	fail.Store(true)
	for _, tc := range []struct {
		name      string
		at        time.Duration
		wantErr   error
		wantPings int32
	}{
		{name: "within a second: the last answer", at: 999 * time.Millisecond, wantErr: nil, wantPings: 1},
		{name: "a second later: a new ping finds the store down", at: time.Second, wantErr: down, wantPings: 2},
		{name: "the failure is reused too", at: 1500 * time.Millisecond, wantErr: down, wantPings: 2},
	} {
		if err := rd.check(t.Context(), t0.Add(tc.at), ping); !errors.Is(err, tc.wantErr) || pings.Load() != tc.wantPings {
			t.Errorf("%s: %v after %d pings, want %v after %d", tc.name, err, pings.Load(), tc.wantErr, tc.wantPings)
		}
	}
}
