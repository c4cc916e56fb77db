package storetest

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// The checks of sessions.LogCursors: named log positions with a lease, and the count of
// entries after a position.

func logCursors(t *testing.T, s sessions.Store) sessions.LogCursors {
	t.Helper()
	lc, ok := s.(sessions.LogCursors)
	if !ok {
		t.Fatalf("%T does not implement sessions.LogCursors", s)
	}
	return lc
}

func wantCursor(t *testing.T, lc sessions.LogCursors, name, wantPos, wantHolder string) {
	t.Helper()
	pos, holder, err := lc.LogCursor(ctx(t), name)
	if err != nil {
		t.Fatalf("LogCursor(%s): %v", name, err)
	}
	if pos != wantPos || holder != wantHolder {
		t.Fatalf("LogCursor(%s) = (%q, %q), want (%q, %q)", name, pos, holder, wantPos, wantHolder)
	}
}

// testLogCursorLease: one holder at a time; the holder renews, advances and releases; another
// holder is refused until the release, and only the holder moves the position.
func testLogCursorLease(t *testing.T, s sessions.Store) {
	lc := logCursors(t, s)
	wantCursor(t, lc, "siem", "", "")
	pos, err := lc.LeaseLogCursor(ctx(t), "siem", "replica-a", longTTL)
	if err != nil || pos != "" {
		t.Fatalf("first lease = (%q, %v), want no position", pos, err)
	}
	if _, err := lc.LeaseLogCursor(ctx(t), "siem", "replica-b", longTTL); !errors.Is(err, sessions.ErrConflict) {
		t.Fatalf("lease of a held cursor by another = %v, want ErrConflict", err)
	}
	if err := lc.AdvanceLogCursor(ctx(t), "siem", "replica-b", logID(5)); !errors.Is(err, sessions.ErrConflict) {
		t.Fatalf("advance by a non-holder = %v, want ErrConflict", err)
	}
	wantCursor(t, lc, "siem", "", "replica-a")
	if err := lc.AdvanceLogCursor(ctx(t), "siem", "replica-a", logID(5)); err != nil {
		t.Fatalf("advance by the holder: %v", err)
	}
	if pos, err := lc.LeaseLogCursor(ctx(t), "siem", "replica-a", longTTL); err != nil || pos != logID(5) {
		t.Fatalf("renewal = (%q, %v), want the stored position", pos, err)
	}
	if err := lc.AdvanceLogCursor(ctx(t), "siem", "replica-a", logID(5)); err != nil {
		t.Fatalf("advance to the same position: %v", err)
	}
	if err := lc.AdvanceLogCursor(ctx(t), "siem", "replica-a", logID(4)); err == nil || errors.Is(err, sessions.ErrConflict) {
		t.Fatalf("advance back = %v, want a refusal other than ErrConflict", err)
	}
	wantCursor(t, lc, "siem", logID(5), "replica-a")
	if err := lc.ReleaseLogCursor(ctx(t), "siem", "replica-b"); err != nil {
		t.Fatalf("release by a non-holder: %v", err)
	}
	wantCursor(t, lc, "siem", logID(5), "replica-a") // a non-holder's release changes nothing
	if err := lc.ReleaseLogCursor(ctx(t), "siem", "replica-a"); err != nil {
		t.Fatalf("release: %v", err)
	}
	wantCursor(t, lc, "siem", logID(5), "")
	if err := lc.AdvanceLogCursor(ctx(t), "siem", "replica-a", logID(6)); !errors.Is(err, sessions.ErrConflict) {
		t.Fatalf("advance after the release = %v, want ErrConflict", err)
	}
	if pos, err := lc.LeaseLogCursor(ctx(t), "siem", "replica-b", longTTL); err != nil || pos != logID(5) {
		t.Fatalf("lease after the release = (%q, %v), want the stored position", pos, err)
	}
	wantCursor(t, lc, "siem", logID(5), "replica-b")
	wantCursor(t, lc, "other", "", "") // cursors are apart
}

// testLogCursorLeaseExpires: a lease its holder stops renewing lapses; another holder then
// takes it with the position, and the former holder can no longer advance.
func testLogCursorLeaseExpires(t *testing.T, s sessions.Store) {
	lc := logCursors(t, s)
	if _, err := lc.LeaseLogCursor(ctx(t), "siem", "replica-a", longTTL); err != nil {
		t.Fatalf("lease: %v", err)
	}
	if err := lc.AdvanceLogCursor(ctx(t), "siem", "replica-a", logID(7)); err != nil {
		t.Fatalf("advance: %v", err)
	}
	if _, err := lc.LeaseLogCursor(ctx(t), "siem", "replica-a", shortTTL); err != nil {
		t.Fatalf("renewal with a short TTL: %v", err)
	}
	deadline := time.Now().Add(expiryMax)
	for {
		pos, err := lc.LeaseLogCursor(ctx(t), "siem", "replica-b", longTTL)
		if err == nil {
			if pos != logID(7) {
				t.Fatalf("lease after expiry = %q, want the stored position", pos)
			}
			break
		}
		if !errors.Is(err, sessions.ErrConflict) || time.Now().After(deadline) {
			t.Fatalf("lease of a lapsing cursor: %v", err)
		}
		time.Sleep(shortTTL / 3)
	}
	if err := lc.AdvanceLogCursor(ctx(t), "siem", "replica-a", logID(8)); !errors.Is(err, sessions.ErrConflict) {
		t.Fatalf("advance by the lapsed holder = %v, want ErrConflict", err)
	}
	wantCursor(t, lc, "siem", logID(7), "replica-b")
}

// testLogCursorConcurrent: of 16 concurrent takers of a free lease exactly one wins.
func testLogCursorConcurrent(t *testing.T, s sessions.Store) {
	lc := logCursors(t, s)
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			_, err := lc.LeaseLogCursor(ctx(t), "siem", fmt.Sprintf("replica-%d", i), longTTL)
			switch {
			case err == nil:
				wins.Add(1)
			case !errors.Is(err, sessions.ErrConflict):
				t.Errorf("lease %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if n := wins.Load(); n != 1 {
		t.Fatalf("%d takers won the lease, want 1", n)
	}
}

// testLogCursorInvalid: malformed names, holders, TTLs and positions are refused.
func testLogCursorInvalid(t *testing.T, s sessions.Store) {
	lc := logCursors(t, s)
	long := string(make([]byte, sessions.MaxLogCursorName+1))
	for _, name := range []string{"", "a.b", "{x}", "a b", long} {
		if _, err := lc.LeaseLogCursor(ctx(t), name, "h", longTTL); err == nil {
			t.Errorf("lease of cursor %q accepted", name)
		}
		if _, err := lc.LeaseLogCursor(ctx(t), "ok", name, longTTL); err == nil {
			t.Errorf("lease by holder %q accepted", name)
		}
		if _, _, err := lc.LogCursor(ctx(t), name); err == nil {
			t.Errorf("read of cursor %q accepted", name)
		}
		// Refused as malformed, not as another's lease (ErrConflict).
		if err := lc.AdvanceLogCursor(ctx(t), name, "h", logID(1)); err == nil || errors.Is(err, sessions.ErrConflict) {
			t.Errorf("advance of cursor %q = %v, want a validation error", name, err)
		}
		if err := lc.AdvanceLogCursor(ctx(t), "ok", name, logID(1)); err == nil || errors.Is(err, sessions.ErrConflict) {
			t.Errorf("advance by holder %q = %v, want a validation error", name, err)
		}
		if err := lc.ReleaseLogCursor(ctx(t), name, "h"); err == nil {
			t.Errorf("release of cursor %q accepted", name)
		}
		if err := lc.ReleaseLogCursor(ctx(t), "ok", name); err == nil {
			t.Errorf("release by holder %q accepted", name)
		}
	}
	if _, err := lc.LeaseLogCursor(ctx(t), "ok", "h", 0); err == nil {
		t.Error("lease with TTL 0 accepted")
	}
	if _, err := lc.LeaseLogCursor(ctx(t), "ok", "h", longTTL); err != nil {
		t.Fatalf("lease: %v", err)
	}
	for _, pos := range []string{"", "12", logID(1) + "0", "x" + logID(1)[1:]} {
		if err := lc.AdvanceLogCursor(ctx(t), "ok", "h", pos); err == nil {
			t.Errorf("advance to %q accepted", pos)
		}
	}
	if _, err := s.(sessions.LogCursors).CountLogsAfter(ctx(t), "12"); err == nil {
		t.Error("count after a malformed id accepted")
	}
	wantCursor(t, lc, "ok", "", "h")
}

// testCountLogsAfter: every class counts, from the bound on (exclusive).
func testCountLogsAfter(t *testing.T, s sessions.Store) {
	lc := logCursors(t, s)
	classes := []sessions.LogClass{sessions.LogAudit, sessions.LogUnauthenticated, sessions.LogAdmin}
	for n := 1; n <= 30; n++ {
		if err := s.AppendLog(ctx(t), classes[n%3], logID(n), fmt.Appendf(nil, `{"n":%d}`, n), 1000); err != nil {
			t.Fatalf("AppendLog(%d): %v", n, err)
		}
	}
	for _, tc := range []struct {
		after string
		want  int64
	}{
		{after: "", want: 30},
		{after: logID(0), want: 30},
		{after: logID(1), want: 29},
		{after: logID(17), want: 13},
		{after: logID(30), want: 0},
		{after: logID(99), want: 0},
	} {
		got, err := lc.CountLogsAfter(ctx(t), tc.after)
		if err != nil || got != tc.want {
			t.Errorf("CountLogsAfter(%q) = (%d, %v), want %d", tc.after, got, err, tc.want)
		}
	}
}
