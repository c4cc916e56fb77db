package logs

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// The broker's operational log (WARN and ERROR lines such as "upstream code exchange failed"
// or "store operation failed") is written once per failing request, so anyone who can make
// requests fail (a callback with a made-up code, a flood while the upstream or the store is
// down) could flood stdout and the SIEM behind it, past the limits that keep unauthenticated
// login events off stdout. ThrottleHandler limits those lines per message text and sums what
// it dropped up in one "log_lines_dropped" warning per interval, as the Writer does for the
// events it drops ("login_events_dropped").
//
// Login events are INFO lines ("login_event"), which pass untouched: they have their own
// limits (Writer.Limits), and are not limited twice. The Writer's own warnings go through the
// throttle like any other line; its "login_events_dropped" summary is written at most once per
// DropReportEvery, far below a message's budget.

// Defaults of ThrottleConfig.
const (
	DefaultThrottleRate        rate.Limit = 1 // lines per second of one message, sustained
	DefaultThrottleBurst                  = 10
	DefaultThrottleMaxMessages            = 1000
	DefaultThrottleReportEvery            = 10 * time.Second
)

// ThrottledMessage is the message of ThrottleHandler's summary line.
const ThrottledMessage = "log_lines_dropped"

// otherMessages is the by_message key of the drops of messages beyond MaxMessages.
const otherMessages = "(other messages)"

// ThrottleConfig sets a ThrottleHandler's limits; zero values take the defaults above.
type ThrottleConfig struct {
	// Rate and Burst are the token bucket of one message text (records at WARN and above).
	Rate  rate.Limit
	Burst int
	// MaxMessages bounds the buckets kept (the least recently used message is forgotten
	// first; it starts again with a full bucket). Messages are the code's constant texts,
	// so the table holds them all.
	MaxMessages int
	// ReportEvery spaces the summary lines: the first drop after a quiet spell schedules one
	// ReportEvery later, summing every drop until then.
	ReportEvery time.Duration
	// Now is the clock of the buckets (default time.Now).
	Now func() time.Time
}

// ThrottleHandler is a slog.Handler that passes records below WARN to its next handler
// untouched and limits records at WARN and above per message text (a token bucket each).
// What it drops is counted and reported in one ThrottledMessage warning per ReportEvery:
// {"dropped": N, "by_message": {MESSAGE: COUNT, ...}}. Handlers derived through WithAttrs and
// WithGroup share the buckets and the count. It is safe for concurrent use.
type ThrottleHandler struct {
	next slog.Handler
	st   *throttleState
}

// throttleState is shared by a ThrottleHandler and the handlers derived from it.
type throttleState struct {
	cfg  ThrottleConfig
	root slog.Handler // the next handler without derived attributes: writes the summary

	mu      sync.Mutex
	buckets *LRU[*rate.Limiter]
	dropped map[string]int // by message, since the last summary
	n       int
	timer   *time.Timer // writes the pending summary; nil when none is scheduled
}

// NewThrottleHandler returns a ThrottleHandler in front of next.
func NewThrottleHandler(next slog.Handler, cfg ThrottleConfig) *ThrottleHandler {
	if cfg.Rate <= 0 {
		cfg.Rate = DefaultThrottleRate
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultThrottleBurst
	}
	if cfg.MaxMessages <= 0 {
		cfg.MaxMessages = DefaultThrottleMaxMessages
	}
	if cfg.ReportEvery <= 0 {
		cfg.ReportEvery = DefaultThrottleReportEvery
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	st := &throttleState{cfg: cfg, root: next, dropped: map[string]int{}}
	st.buckets = NewLRU(cfg.MaxMessages, func() *rate.Limiter { return rate.NewLimiter(cfg.Rate, cfg.Burst) })
	return &ThrottleHandler{next: next, st: st}
}

// Enabled reports whether the next handler handles level.
func (h *ThrottleHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle passes r on, unless it is at WARN or above and its message has used up its budget:
// then it is counted for the next summary and dropped.
func (h *ThrottleHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn || h.st.allow(r.Message) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

// WithAttrs returns a handler whose next handler has attrs; it shares h's buckets.
func (h *ThrottleHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &ThrottleHandler{next: h.next.WithAttrs(attrs), st: h.st}
}

// WithGroup returns a handler whose next handler opens group; it shares h's buckets.
func (h *ThrottleHandler) WithGroup(name string) slog.Handler {
	return &ThrottleHandler{next: h.next.WithGroup(name), st: h.st}
}

// Flush writes the summary of the drops not reported yet, if any (at shutdown).
func (h *ThrottleHandler) Flush() { h.st.flush() }

// allow spends one line of msg, or counts it as dropped.
func (st *throttleState) allow(msg string) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.buckets.GetOrCreate(msg).AllowN(st.cfg.Now(), 1) {
		return true
	}
	if _, counted := st.dropped[msg]; counted || len(st.dropped) < st.cfg.MaxMessages {
		st.dropped[msg]++
	} else {
		st.dropped[otherMessages]++ // more distinct messages than buckets: summed together
	}
	st.n++
	if st.timer == nil {
		st.timer = time.AfterFunc(st.cfg.ReportEvery, st.flush)
	}
	return false
}

// flush writes one summary line for the drops counted so far.
func (st *throttleState) flush() {
	st.mu.Lock()
	if st.timer != nil {
		st.timer.Stop()
		st.timer = nil
	}
	if st.n == 0 {
		st.mu.Unlock()
		return
	}
	as := make([]any, 0, len(st.dropped))
	for _, m := range slices.Sorted(maps.Keys(st.dropped)) {
		as = append(as, slog.Int(m, st.dropped[m]))
	}
	n := st.n
	st.n = 0
	clear(st.dropped)
	st.mu.Unlock()
	ctx := context.Background()
	if !st.root.Enabled(ctx, slog.LevelWarn) {
		return
	}
	r := slog.NewRecord(st.cfg.Now(), slog.LevelWarn, ThrottledMessage, 0)
	r.AddAttrs(slog.Int("dropped", n), slog.Group("by_message", as...))
	_ = st.root.Handle(ctx, r)
}
