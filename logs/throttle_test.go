package logs

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/logs/logtest"
)

// allLines decodes every JSON line written to buf so far.
func allLines(t *testing.T, buf *logtest.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for l := range strings.SplitSeq(buf.String(), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// countMsg counts the lines whose msg is msg.
func countMsg(lines []map[string]any, msg string) int {
	n := 0
	for _, l := range lines {
		if l["msg"] == msg {
			n++
		}
	}
	return n
}

// summaries returns the ThrottledMessage lines.
func summaries(lines []map[string]any) []map[string]any {
	var out []map[string]any
	for _, l := range lines {
		if l["msg"] == ThrottledMessage {
			out = append(out, l)
		}
	}
	return out
}

// newThrottled returns a logger through a ThrottleHandler (burst 10, 1/s, summaries only on
// Flush) on the clock, writing JSON to the returned buffer.
func newThrottled(clock *fakeClock, cfg ThrottleConfig) (*slog.Logger, *ThrottleHandler, *logtest.Buffer) {
	buf := &logtest.Buffer{}
	cfg.Now = clock.Now
	if cfg.ReportEvery == 0 {
		cfg.ReportEvery = time.Hour // the tests flush themselves
	}
	h := NewThrottleHandler(slog.NewJSONHandler(buf, nil), cfg)
	return slog.New(h), h, buf
}

// A flood of one warning (a callback with a made-up code, looped) writes the burst, then
// nothing more until its bucket refills; one summary line counts what was dropped.
func TestThrottleFloodOfOneWarningWritesBurstAndOneSummary(t *testing.T) {
	clock := newClock()
	log, h, buf := newThrottled(clock, ThrottleConfig{})
	const msg = "upstream code exchange failed"
	for i := range 1000 {
		log.Warn(msg, "connection", "corp", "err", fmt.Sprintf("invalid_grant %d", i))
	}
	h.Flush()
	lines := allLines(t, buf)
	if got := countMsg(lines, msg); got != DefaultThrottleBurst {
		t.Fatalf("%d %q lines, want the burst (%d)", got, msg, DefaultThrottleBurst)
	}
	sums := summaries(lines)
	if len(sums) != 1 || len(lines) != DefaultThrottleBurst+1 {
		t.Fatalf("%d lines with %d summaries, want %d lines and one summary", len(lines), len(sums), DefaultThrottleBurst+1)
	}
	if sums[0]["level"] != "WARN" || sums[0]["dropped"] != float64(990) || sums[0]["by_message"].(map[string]any)[msg] != float64(990) {
		t.Fatalf("summary = %v, want 990 dropped %q lines", sums[0], msg)
	}

	// The bucket refills at 1/s: five seconds later five more lines pass.
	clock.Add(5 * time.Second)
	for range 100 {
		log.Error(msg)
	}
	h.Flush()
	lines = allLines(t, buf)
	if got := countMsg(lines, msg); got != DefaultThrottleBurst+5 {
		t.Fatalf("%d %q lines after 5 s, want %d", got, msg, DefaultThrottleBurst+5)
	}
	if sums := summaries(lines); len(sums) != 2 || sums[1]["dropped"] != float64(95) {
		t.Fatalf("summaries = %v, want a second one of 95 drops", sums)
	}
	h.Flush() // nothing pending: no line
	if got := len(allLines(t, buf)); got != len(lines) {
		t.Fatalf("an empty flush wrote %d lines", got-len(lines))
	}
}

// Each message has its own bucket: one flooded warning does not silence another, and the
// summary counts each apart.
func TestThrottleLimitsEachMessageApart(t *testing.T) {
	clock := newClock()
	log, h, buf := newThrottled(clock, ThrottleConfig{Burst: 3})
	for range 50 {
		log.Warn("store operation failed")
	}
	for range 20 {
		log.Error("DPoP proof check failed")
	}
	log.Warn("upstream login cannot start")
	h.Flush()
	lines := allLines(t, buf)
	for msg, want := range map[string]int{"store operation failed": 3, "DPoP proof check failed": 3, "upstream login cannot start": 1} {
		if got := countMsg(lines, msg); got != want {
			t.Errorf("%d %q lines, want %d", got, msg, want)
		}
	}
	sums := summaries(lines)
	if len(sums) != 1 {
		t.Fatalf("%d summaries, want 1", len(sums))
	}
	by := sums[0]["by_message"].(map[string]any)
	if sums[0]["dropped"] != float64(64) || by["store operation failed"] != float64(47) || by["DPoP proof check failed"] != float64(17) || len(by) != 2 {
		t.Fatalf("summary = %v, want 47 + 17 drops", sums[0])
	}
}

// Records below WARN (login events among them, which the Writer limits itself) pass
// untouched, however many; loggers derived with attributes or groups share the buckets.
func TestThrottlePassesInfoAndSharesBucketsWithDerivedLoggers(t *testing.T) {
	clock := newClock()
	log, h, buf := newThrottled(clock, ThrottleConfig{Burst: 2})
	for i := range 500 {
		log.Info("login_event", "type", "f", "i", i)
		log.Debug("never enabled")
	}
	derived := log.With("component", "redis").WithGroup("g")
	for range 5 {
		log.Warn("redis connection lost")
		derived.Warn("redis connection lost", "addr", "127.0.0.1:6379")
	}
	h.Flush()
	lines := allLines(t, buf)
	if got := countMsg(lines, "login_event"); got != 500 {
		t.Fatalf("%d INFO lines, want all 500", got)
	}
	if got := countMsg(lines, "redis connection lost"); got != 2 {
		t.Fatalf("%d warnings through the logger and its derived one, want the shared burst of 2", got)
	}
	if sums := summaries(lines); len(sums) != 1 || sums[0]["dropped"] != float64(8) || sums[0]["component"] != nil {
		t.Fatalf("summaries = %v, want one of 8 drops without derived attributes", sums)
	}
}

// The buckets are bounded: messages beyond MaxMessages push the least recently used out, and
// the summary sums the drops of messages it has no room for.
func TestThrottleBucketsAreBounded(t *testing.T) {
	clock := newClock()
	log, h, buf := newThrottled(clock, ThrottleConfig{Burst: 1, MaxMessages: 4})
	for i := range 100 {
		msg := fmt.Sprintf("message %d", i)
		log.Warn(msg)
		log.Warn(msg)
	}
	if n := h.st.buckets.Len(); n != 4 {
		t.Fatalf("%d buckets, want at most 4", n)
	}
	h.Flush()
	sums := summaries(allLines(t, buf))
	if len(sums) != 1 || sums[0]["dropped"] != float64(100) {
		t.Fatalf("summaries = %v, want one of 100 drops", sums)
	}
	if by := sums[0]["by_message"].(map[string]any); len(by) != 5 || by[otherMessages] != float64(96) {
		t.Fatalf("by_message = %v, want 4 messages and 96 other drops", by)
	}
}

// Without a Flush, the summary is written ReportEvery after the first drop.
func TestThrottleWritesTheSummaryOnItsOwn(t *testing.T) {
	clock := newClock()
	log, _, buf := newThrottled(clock, ThrottleConfig{Burst: 1, ReportEvery: 10 * time.Millisecond})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				log.Warn("store operation failed")
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for {
		lines := allLines(t, buf)
		if sums := summaries(lines); len(sums) > 0 {
			if len(sums) != 1 || sums[0]["dropped"] != float64(399) || countMsg(lines, "store operation failed") != 1 {
				t.Fatalf("lines = %v, want one warning and one summary of 399 drops", lines)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no summary after 30 s; lines: %v", lines)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
