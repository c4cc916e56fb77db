package storetest

import (
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// The checks of sessions.Tallier: counters that ride in a log append, per minute and per
// hour, with their TTLs.

func tallier(t *testing.T, s sessions.Store) sessions.Tallier {
	t.Helper()
	tl, ok := s.(sessions.Tallier)
	if !ok {
		t.Fatalf("%T does not implement sessions.Tallier", s)
	}
	return tl
}

// bucketAt returns the counters of the bucket of step that contains at.
func bucketAt(t *testing.T, tl sessions.Tallier, step sessions.TallyStep, at time.Time) map[string]int64 {
	t.Helper()
	bs, err := tl.Tallies(ctx(t), step, at, at.Add(time.Nanosecond))
	if err != nil {
		t.Fatalf("Tallies(%s at %v): %v", step, at, err)
	}
	if len(bs) != 1 {
		t.Fatalf("Tallies(%s at %v) = %d buckets, want 1", step, at, len(bs))
	}
	return bs[0].Counts
}

func wantBucket(t *testing.T, tl sessions.Tallier, step sessions.TallyStep, at time.Time, want map[string]int64) {
	t.Helper()
	if got := bucketAt(t, tl, step, at); !maps.Equal(got, want) {
		t.Errorf("%s bucket at %v = %v, want %v", step, at.UTC(), got, want)
	}
}

// testTallySums: the counters of every append (either class) and of PutAllAndLogTallied are
// summed in the minute and the hour that contain their time, and the events are stored too.
func testTallySums(t *testing.T, s sessions.Store) {
	tl := tallier(t, s)
	at := time.Now()
	if err := tl.AppendLogTallied(ctx(t), sessions.LogAudit, logID(1), []byte(`{"n":1}`), 10,
		sessions.Tally{At: at, Counts: map[string]int64{"s": 1, "c:a:s": 1, "r": 2}}); err != nil {
		t.Fatalf("AppendLogTallied: %v", err)
	}
	if err := tl.AppendLogTallied(ctx(t), sessions.LogUnauthenticated, logID(2), []byte(`{"n":2}`), 10,
		sessions.Tally{At: at, Counts: map[string]int64{"f": 1, "e:invalid_state": 1}}); err != nil {
		t.Fatalf("AppendLogTallied: %v", err)
	}
	if err := tl.AppendLogTallied(ctx(t), sessions.LogAudit, logID(3), []byte(`{"n":3}`), 10, sessions.Tally{}); err != nil {
		t.Fatalf("AppendLogTallied without counters: %v", err)
	}
	want := map[string]int64{"s": 1, "c:a:s": 1, "r": 2, "f": 1, "e:invalid_state": 1}
	item := sessions.Item{Kind: sessions.KindSession, ID: "tally.s", Value: []byte("sess"), TTL: time.Minute}
	err := tl.PutAllAndLogTallied(ctx(t), logID(4), []byte(`{"n":4}`), 10,
		sessions.Tally{At: at, Counts: map[string]int64{"s": 1, "c:a:s": 1}}, item)
	switch {
	case errors.Is(err, errors.ErrUnsupported):
		mustNotFound(t, s, sessions.KindSession, "tally.s")
		wantLogs(t, s, "", 10, 3, 2, 1)
	case err != nil:
		t.Fatalf("PutAllAndLogTallied: %v", err)
	default:
		mustGet(t, s, sessions.KindSession, "tally.s", []byte("sess"))
		wantLogs(t, s, "", 10, 4, 3, 2, 1)
		want["s"], want["c:a:s"] = 2, 2
	}
	wantBucket(t, tl, sessions.TallyMinute, at, want)
	wantBucket(t, tl, sessions.TallyHour, at, want)
	// The neighbouring minute is untouched.
	wantBucket(t, tl, sessions.TallyMinute, at.Add(-time.Minute), map[string]int64{})
}

// testTallyRefused: an invalid Tally is refused and writes neither the event nor any counter;
// so does a PutAllAndLogTallied whose batch is refused.
func testTallyRefused(t *testing.T, s sessions.Store) {
	tl := tallier(t, s)
	at := time.Now()
	many := map[string]int64{}
	for i := range sessions.MaxTallyCounts + 1 {
		many["c"+strings.Repeat("x", i)] = 1
	}
	for _, tc := range []struct {
		name  string
		tally sessions.Tally
	}{
		{name: "no time", tally: sessions.Tally{Counts: map[string]int64{"s": 1}}},
		{name: "empty counter name", tally: sessions.Tally{At: at, Counts: map[string]int64{"": 1}}},
		{name: "counter name too long", tally: sessions.Tally{At: at, Counts: map[string]int64{strings.Repeat("n", sessions.MaxTallyName+1): 1}}},
		{name: "zero increment", tally: sessions.Tally{At: at, Counts: map[string]int64{"s": 0, "f": 1}}},
		{name: "negative increment", tally: sessions.Tally{At: at, Counts: map[string]int64{"s": -1}}},
		{name: "too many counters", tally: sessions.Tally{At: at, Counts: many}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tl.AppendLogTallied(ctx(t), sessions.LogAudit, logID(1), []byte(`{}`), 10, tc.tally); err == nil {
				t.Error("AppendLogTallied accepted it")
			}
			item := sessions.Item{Kind: sessions.KindSession, ID: "tally.s", Value: []byte("x"), TTL: time.Minute}
			if err := tl.PutAllAndLogTallied(ctx(t), logID(2), []byte(`{}`), 10, tc.tally, item); err == nil {
				t.Error("PutAllAndLogTallied accepted it")
			}
			mustNotFound(t, s, sessions.KindSession, "tally.s")
		})
	}
	good := sessions.Tally{At: at, Counts: map[string]int64{"s": 1}}
	if err := tl.AppendLogTallied(ctx(t), sessions.LogAudit, "not-a-log-id", []byte(`{}`), 10, good); err == nil {
		t.Error("AppendLogTallied accepted a bad log id")
	}
	mixed := []sessions.Item{
		{Kind: sessions.KindSession, ID: "one.s", Value: []byte("x"), TTL: time.Minute},
		{Kind: sessions.KindCode, ID: "other.c", Value: []byte("x"), TTL: time.Minute},
	}
	if err := tl.PutAllAndLogTallied(ctx(t), logID(3), []byte(`{}`), 10, good, mixed...); err == nil {
		t.Error("PutAllAndLogTallied accepted mixed hash tags")
	}
	wantLogs(t, s, "", 10)
	wantBucket(t, tl, sessions.TallyMinute, at, map[string]int64{})
	wantBucket(t, tl, sessions.TallyHour, at, map[string]int64{})
}

// testTallyTTL: a minute bucket lives a little over a day and an hour bucket a little over a
// week, counted from the bucket's start: counters of 26 hours ago are gone from the minute
// but still in the hour; those of 9 days ago from both.
func testTallyTTL(t *testing.T, s sessions.Store) {
	tl := tallier(t, s)
	now := time.Now()
	dayAgo, weekAgo := now.Add(-26*time.Hour), now.Add(-9*24*time.Hour)
	for i, at := range []time.Time{dayAgo, weekAgo} {
		if err := tl.AppendLogTallied(ctx(t), sessions.LogAudit, logID(i+1), fmt.Appendf(nil, `{"n":%d}`, i+1), 10,
			sessions.Tally{At: at, Counts: map[string]int64{"s": 1}}); err != nil {
			t.Fatalf("AppendLogTallied: %v", err)
		}
	}
	wantBucket(t, tl, sessions.TallyMinute, dayAgo, map[string]int64{})
	wantBucket(t, tl, sessions.TallyHour, dayAgo, map[string]int64{"s": 1})
	wantBucket(t, tl, sessions.TallyMinute, weekAgo, map[string]int64{})
	wantBucket(t, tl, sessions.TallyHour, weekAgo, map[string]int64{})
	wantLogs(t, s, "", 10, 2, 1) // the events themselves are kept by the log's own retention
}

// testTallyRange: Tallies returns every bucket of [from, to), from rounded down, oldest
// first with their starts; an empty range is no buckets; an unknown step or a range of more
// than MaxTallyBuckets buckets is refused.
func testTallyRange(t *testing.T, s sessions.Store) {
	tl := tallier(t, s)
	now := time.Now()
	hour := now.Truncate(time.Hour)
	if err := tl.AppendLogTallied(ctx(t), sessions.LogAudit, logID(1), []byte(`{}`), 10,
		sessions.Tally{At: hour.Add(90 * time.Second), Counts: map[string]int64{"s": 3}}); err != nil {
		t.Fatalf("AppendLogTallied: %v", err)
	}
	bs, err := tl.Tallies(ctx(t), sessions.TallyMinute, hour.Add(30*time.Second), hour.Add(3*time.Minute))
	if err != nil {
		t.Fatalf("Tallies: %v", err)
	}
	if len(bs) != 3 {
		t.Fatalf("Tallies over 3 minutes = %d buckets, want 3", len(bs))
	}
	for i, b := range bs {
		if want := hour.Add(time.Duration(i) * time.Minute); !b.Start.Equal(want) {
			t.Errorf("bucket %d starts %v, want %v", i, b.Start, want)
		}
		want := map[string]int64{}
		if i == 1 {
			want["s"] = 3
		}
		if !maps.Equal(b.Counts, want) {
			t.Errorf("bucket %d = %v, want %v", i, b.Counts, want)
		}
	}
	if bs, err := tl.Tallies(ctx(t), sessions.TallyHour, now, now.Add(-time.Hour)); err != nil || len(bs) != 0 {
		t.Errorf("Tallies of an empty range = %d buckets, %v; want none", len(bs), err)
	}
	if _, err := tl.Tallies(ctx(t), sessions.TallyMinute, now.Add(-7*24*time.Hour), now); err == nil {
		t.Error("a week of minute buckets was not refused")
	}
	if _, err := tl.Tallies(ctx(t), sessions.TallyStep(0), now.Add(-time.Hour), now); err == nil {
		t.Error("an unknown step was not refused")
	}
	if bs, err := tl.Tallies(ctx(t), sessions.TallyHour, now.Add(-7*24*time.Hour), now); err != nil || len(bs) != 7*24+1 {
		t.Errorf("a week of hour buckets = %d, %v; want %d", len(bs), err, 7*24+1)
	}
}

// testTallyConcurrent: 16 concurrent appenders, 8 appends each, lose no increment.
func testTallyConcurrent(t *testing.T, s sessions.Store) {
	tl := tallier(t, s)
	at := time.Now()
	const writers, each = 16, 8
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				errs <- tl.AppendLogTallied(ctx(t), sessions.LogAudit, logID(1+w*each+i), []byte(`{}`), 1000,
					sessions.Tally{At: at, Counts: map[string]int64{"s": 1, "r": 2}})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("AppendLogTallied: %v", err)
		}
	}
	wantBucket(t, tl, sessions.TallyMinute, at, map[string]int64{"s": writers * each, "r": 2 * writers * each})
	wantBucket(t, tl, sessions.TallyHour, at, map[string]int64{"s": writers * each, "r": 2 * writers * each})
}
