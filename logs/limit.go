package logs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Events of the unauthenticated class are limited before they are written anywhere (stdout
// or store), per client IP and in all, so that anonymous requests cannot flood the log, the
// SIEM behind stdout or the store. A dropped event is counted (Write returns a *DropError) and
// summed up in one "login_events_dropped" warning per DropReportEvery.

// Reasons a Limiter drops an event (the reason label of the dropped-events metric).
const (
	DropPerIP  = "per_ip" // the client IP used up its budget
	DropGlobal = "global" // every IP together used up the budget
)

// ErrDropped is wrapped by every *DropError.
var ErrDropped = errors.New("logs: event dropped by the limits on unauthenticated events")

// DropError is Write's answer for an event the limits dropped: it was neither logged nor
// stored.
type DropError struct {
	Type   string // the event's type
	Reason string // DropPerIP or DropGlobal
}

func (e *DropError) Error() string {
	return fmt.Sprintf("logs: %s event dropped (%s limit on unauthenticated events)", e.Type, e.Reason)
}

// Unwrap makes errors.Is(err, ErrDropped) true.
func (e *DropError) Unwrap() error { return ErrDropped }

// LimiterConfig sets a Limiter's token buckets. A rate of 0 is unlimited (the burst is then
// ignored).
type LimiterConfig struct {
	PerIPRate   rate.Limit // sustained events per second from one client IP (IPv6: one /64)
	PerIPBurst  int
	GlobalRate  rate.Limit // sustained events per second from all IPs together
	GlobalBurst int
	MaxKeys     int // IPs remembered (least recently seen forgotten first); default 10000
}

// Limiter admits unauthenticated events: per client IP (a bounded table of token buckets)
// and in all. It is safe for concurrent use.
type Limiter struct {
	cfg    LimiterConfig
	global *rate.Limiter // nil = unlimited

	mu  sync.Mutex
	ips *LRU[*rate.Limiter] // per-IP token buckets
}

// NewLimiter returns a Limiter for cfg.
func NewLimiter(cfg LimiterConfig) *Limiter {
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = 10000
	}
	l := &Limiter{cfg: cfg, ips: NewLRU(cfg.MaxKeys, func() *rate.Limiter {
		return rate.NewLimiter(cfg.PerIPRate, max(cfg.PerIPBurst, 1))
	})}
	if cfg.GlobalRate > 0 {
		l.global = rate.NewLimiter(cfg.GlobalRate, max(cfg.GlobalBurst, 1))
	}
	return l
}

// Allow spends one event of ip at now: "" when the event may be written, else DropPerIP or
// DropGlobal. The per-IP budget is checked first, so one IP's dropped events never use up
// the budget shared by all.
func (l *Limiter) Allow(ip string, now time.Time) (dropReason string) {
	if l.cfg.PerIPRate > 0 && !l.allowIP(IPKey(ip), now) {
		return DropPerIP
	}
	if l.global != nil && !l.global.AllowN(now, 1) {
		return DropGlobal
	}
	return ""
}

func (l *Limiter) allowIP(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ips.GetOrCreate(key).AllowN(now, 1)
}

// ipKeys reports how many IPs l remembers (tests).
func (l *Limiter) ipKeys() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ips.Len()
}

// IPKey is the per-IP limit key of a client address (this Limiter's and the broker's rate
// limits): IPv4 addresses as they are, IPv6 by their /64 (one subscriber's prefix, so rotating
// addresses inside it does not evade a limit), anything else (empty, unparsable) as its first
// 64 bytes.
func IPKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip[:min(len(ip), 64)]
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// DefaultDropReportEvery spaces the "login_events_dropped" warnings when
// Writer.DropReportEvery is 0.
const DefaultDropReportEvery = 10 * time.Second

// dropState counts the events dropped since the last warning.
type dropState struct {
	mu       sync.Mutex
	byReason map[string]int
	byType   map[string]int
	n        int
	reported bool // a warning was written (last is its time)
	last     time.Time
	timer    *time.Timer // writes the pending count; nil when none is scheduled
}

func (w *Writer) dropReportEvery() time.Duration {
	if w.DropReportEvery > 0 {
		return w.DropReportEvery
	}
	return DefaultDropReportEvery
}

// dropped counts one dropped event. The first drop after a quiet interval is reported at
// once; later ones are summed and reported DropReportEvery after the previous warning.
func (w *Writer) dropped(ctx context.Context, typ, reason string, now time.Time) {
	st := &w.drops
	st.mu.Lock()
	if st.byReason == nil {
		st.byReason, st.byType = map[string]int{}, map[string]int{}
	}
	st.n++
	st.byReason[reason]++
	st.byType[typ]++
	every := w.dropReportEvery()
	if !st.reported || now.Sub(st.last) >= every || now.Before(st.last) {
		if st.timer != nil {
			st.timer.Stop()
			st.timer = nil
		}
		attrs := st.takeLocked(now)
		st.mu.Unlock()
		w.reportDrops(ctx, attrs)
		return
	}
	if st.timer == nil {
		st.timer = time.AfterFunc(every-now.Sub(st.last), w.flushDrops)
	}
	st.mu.Unlock()
}

// flushDrops writes the warning for the drops counted since the last one, if any.
func (w *Writer) flushDrops() {
	st := &w.drops
	st.mu.Lock()
	st.timer = nil
	if st.n == 0 {
		st.mu.Unlock()
		return
	}
	attrs := st.takeLocked(w.clock())
	st.mu.Unlock()
	w.reportDrops(context.Background(), attrs)
}

// takeLocked returns the warning's attributes for the pending count and resets it. mu is held.
func (st *dropState) takeLocked(now time.Time) []slog.Attr {
	group := func(name string, m map[string]int) slog.Attr {
		as := make([]any, 0, len(m))
		for _, k := range slices.Sorted(maps.Keys(m)) {
			as = append(as, slog.Int(k, m[k]))
		}
		return slog.Group(name, as...)
	}
	attrs := []slog.Attr{
		slog.String("class", ClassUnauthenticated.String()),
		slog.Int("dropped", st.n), group("by_reason", st.byReason), group("by_type", st.byType),
	}
	st.n = 0
	clear(st.byReason)
	clear(st.byType)
	st.reported, st.last = true, now
	return attrs
}

func (w *Writer) reportDrops(ctx context.Context, attrs []slog.Attr) {
	w.logger().LogAttrs(ctx, slog.LevelWarn, "login_events_dropped", attrs...)
}
