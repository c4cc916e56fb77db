package storetest

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// Conformance of checkpoint paging while events are being written (the Redis log is sharded,
// so one read merges many sets read at slightly different instants).

// pagingWriters append concurrently: writer w appends the ids n ≡ w (mod writers), in
// increasing order, each append done before its next begins.
const (
	pagingWriters = 3
	pagingPerW    = 120
)

// testLogPagingConcurrent: LogsAfter and LogsBefore paged by small steps while three writers
// append return, in id order and exactly once, every entry that was stored before the read
// began (a reader stops below the ids still being written, as logs.Writer does); afterwards
// both directions page through every entry, Log finds each by id, and TrimLogs and
// retention apply to all of them.
func testLogPagingConcurrent(t *testing.T, s sessions.Store) {
	c := ctx(t)
	// next[w] is the smallest id of writer w not yet stored: every id below the least of
	// them was stored.
	var next [pagingWriters]atomic.Int64
	for w := range next {
		next[w].Store(int64(w + 1))
	}
	stored := func() int64 {
		low := next[0].Load()
		for w := 1; w < pagingWriters; w++ {
			low = min(low, next[w].Load())
		}
		return low
	}
	var wg sync.WaitGroup
	errs := make(chan error, pagingWriters)
	for w := range pagingWriters {
		wg.Go(func() {
			for i := range pagingPerW {
				n := 1 + w + i*pagingWriters
				if err := s.AppendLog(c, sessions.LogAudit, logID(n), fmt.Appendf(nil, `{"n":%d}`, n), 10000); err != nil {
					errs <- fmt.Errorf("AppendLog(%d): %w", n, err)
					return
				}
				next[w].Store(int64(n + pagingWriters))
			}
		})
	}
	const total = pagingWriters * pagingPerW
	var after []int
	cursor := ""
	stalled := 0
	for reads := 0; len(after) < total; reads++ {
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
		}
		if stalled > 20000 { // 20000 reads without a new entry, a millisecond apart
			t.Fatalf("LogsAfter paging: %d entries after %d reads, %d without progress", len(after), reads, stalled)
		}
		bound := int(stored()) // every id below bound is stored before this read
		es, err := s.LogsAfter(c, cursor, 1+reads%7)
		if err != nil {
			t.Fatalf("LogsAfter(%q): %v", cursor, err)
		}
		had := len(after)
		for _, n := range entryNs(t, es) {
			if n >= bound {
				break // may have passed an id still being written
			}
			after = append(after, n)
			cursor = logID(n)
		}
		if len(after) == had {
			stalled++
			time.Sleep(time.Millisecond) // let the writers run
		} else {
			stalled = 0
		}
		// Backwards from a bound below which everything is stored: exactly those ids.
		if reads%25 == 0 && bound > 1 {
			wantPagedBefore(t, s, bound, 5)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i, n := range after {
		if n != i+1 {
			t.Fatalf("LogsAfter paging while writing returned %v..., want 1..%d in order once each", after[:i+1], total)
		}
	}
	wantPagedBefore(t, s, total+1, 11)
	for n := 1; n <= total; n++ {
		if e, err := s.Log(c, logID(n)); err != nil || e.ID != logID(n) || string(e.Event) != fmt.Sprintf(`{"n":%d}`, n) {
			t.Fatalf("Log(%d) = %+v, %v", n, e, err)
		}
	}
	// TrimLogs removes the entries below its bound in every shard.
	if err := s.TrimLogs(c, sessions.LogAudit, logID(101)); err != nil {
		t.Fatal(err)
	}
	var rest []int
	for n := 101; n <= total; n++ {
		rest = append(rest, n)
	}
	wantNewest(t, s, len(rest), len(rest), rest...)
	// Count retention applies to all of them.
	for n := total + 1; n <= total+10; n++ {
		if err := s.AppendLog(c, sessions.LogAudit, logID(n), fmt.Appendf(nil, `{"n":%d}`, n), 50); err != nil {
			t.Fatal(err)
		}
		rest = append(rest, n)
	}
	wantNewest(t, s, 50, total, rest...)
}

// wantPagedBefore pages LogsBefore from logID(bound) down by step and wants bound-1 … 1.
func wantPagedBefore(t *testing.T, s sessions.Store, bound, step int) {
	t.Helper()
	var got []int
	cursor := logID(bound)
	for range bound {
		es, err := s.LogsBefore(ctx(t), cursor, step)
		if err != nil {
			t.Fatalf("LogsBefore(%q): %v", cursor, err)
		}
		if len(es) == 0 {
			break
		}
		got = append(got, entryNs(t, es)...)
		cursor = es[len(es)-1].ID
	}
	for i, n := range got {
		if n != bound-1-i {
			t.Fatalf("LogsBefore paging from %d by %d = %v, want %d down to 1 once each", bound, step, got, bound-1)
		}
	}
	if len(got) != bound-1 {
		t.Fatalf("LogsBefore paging from %d by %d: %d entries, want %d", bound, step, len(got), bound-1)
	}
}
