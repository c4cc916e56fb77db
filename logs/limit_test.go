package logs

import (
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/logs/logtest"
	"github.com/dpop-broker/dpop-broker/sessions"
)

func TestLimiterBoundsEventsPerIPAndInAll(t *testing.T) {
	type try struct {
		ip   string
		want string // "" admitted, else the drop reason
	}
	tests := []struct {
		name  string
		cfg   LimiterConfig
		tries []try
	}{
		{
			name: "per IP burst, then dropped; another IP has its own budget",
			cfg:  LimiterConfig{PerIPRate: 1, PerIPBurst: 2},
			tries: []try{
				{ip: "192.0.2.1"}, {ip: "192.0.2.1"}, {ip: "192.0.2.1", want: DropPerIP},
				{ip: "192.0.2.2"}, {ip: "::ffff:192.0.2.1", want: DropPerIP},
			},
		},
		{
			name: "an IPv6 /64 is one client",
			cfg:  LimiterConfig{PerIPRate: 1, PerIPBurst: 1},
			tries: []try{
				{ip: "2001:db8:1:2::1"}, {ip: "2001:db8:1:2:ffff::9", want: DropPerIP}, {ip: "2001:db8:1:3::1"},
			},
		},
		{
			name: "global budget shared by all IPs",
			cfg:  LimiterConfig{PerIPRate: 1, PerIPBurst: 5, GlobalRate: 1, GlobalBurst: 2},
			tries: []try{
				{ip: "192.0.2.1"}, {ip: "192.0.2.2"}, {ip: "192.0.2.3", want: DropGlobal},
			},
		},
		{
			name: "an IP over its own budget does not use up the global one",
			cfg:  LimiterConfig{PerIPRate: 1, PerIPBurst: 1, GlobalRate: 1, GlobalBurst: 2},
			tries: []try{
				{ip: "192.0.2.1"},
				{ip: "192.0.2.1", want: DropPerIP}, {ip: "192.0.2.1", want: DropPerIP}, {ip: "192.0.2.1", want: DropPerIP},
				{ip: "192.0.2.2"}, {ip: "192.0.2.3", want: DropGlobal},
			},
		},
		{
			name:  "rate 0 is unlimited",
			cfg:   LimiterConfig{},
			tries: []try{{ip: "192.0.2.1"}, {ip: "192.0.2.1"}, {ip: "192.0.2.1"}},
		},
		{
			name:  "events without an IP share one budget",
			cfg:   LimiterConfig{PerIPRate: 1, PerIPBurst: 1},
			tries: []try{{ip: ""}, {ip: "", want: DropPerIP}, {ip: "not-an-ip"}},
		},
	}
	now := time.Date(2024, 1, 15, 10, 30, 0, 0, time.UTC)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLimiter(tc.cfg)
			for i, tr := range tc.tries {
				if got := l.Allow(tr.ip, now); got != tr.want {
					t.Fatalf("try %d (%s) = %q, want %q", i, tr.ip, got, tr.want)
				}
			}
		})
	}
	t.Run("budget refills with time", func(t *testing.T) {
		l := NewLimiter(LimiterConfig{PerIPRate: 1, PerIPBurst: 1})
		if l.Allow("192.0.2.1", now) != "" || l.Allow("192.0.2.1", now) != DropPerIP {
			t.Fatal("burst of 1 not enforced")
		}
		if got := l.Allow("192.0.2.1", now.Add(time.Second)); got != "" {
			t.Fatalf("after one second = %q, want admitted", got)
		}
	})
}

// Spoofed or many client addresses cannot grow the per-IP table past MaxKeys.
func TestLimiterForgetsLeastRecentlySeenIPs(t *testing.T) {
	l := NewLimiter(LimiterConfig{PerIPRate: 1, PerIPBurst: 1, MaxKeys: 100})
	now := time.Now()
	for i := range 10000 {
		l.Allow(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), now)
	}
	if n := l.ipKeys(); n != 100 {
		t.Fatalf("table holds %d IPs, want 100", n)
	}
}

// limitedWriter is a Writer on a memory store whose JSON log goes to the returned buffer,
// with a fake clock, limits lim and drop warnings every hour (so that none is written by the
// timer while a test runs).
func limitedWriter(clock *fakeClock, lim LimiterConfig) (*Writer, *logtest.Buffer, sessions.Store) {
	buf := &logtest.Buffer{}
	st := sessions.NewMemory()
	return &Writer{
		Logger: slog.New(slog.NewJSONHandler(buf, nil)), Store: st, Now: clock.Now,
		Limits: NewLimiter(lim), DropReportEvery: time.Hour,
	}, buf, st
}

// A flood of unauthenticated events from one IP reaches neither stdout nor the store beyond
// the budget; audit events from the same IP are never limited.
func TestWriteDropsUnauthenticatedEventsFromStdoutAndStore(t *testing.T) {
	clock := newClock()
	w, buf, st := limitedWriter(clock, LimiterConfig{PerIPRate: 1, PerIPBurst: 3, GlobalRate: 100, GlobalBurst: 100})
	var dropped int
	for range 100 {
		err := w.Write(t.Context(), &Event{Type: TypeFailedLogin, IP: "192.0.2.7", Details: map[string]any{"error": "invalid_client"}})
		var de *DropError
		switch {
		case err == nil:
		case errors.As(err, &de) && errors.Is(err, ErrDropped) && de.Reason == DropPerIP && de.Type == TypeFailedLogin:
			dropped++
		default:
			t.Fatalf("Write = %v", err)
		}
	}
	for range 100 {
		if err := w.Write(t.Context(), &Event{Type: TypeSuccessLogin, IP: "192.0.2.7"}); err != nil {
			t.Fatalf("audit event: %v", err)
		}
	}
	if dropped != 97 {
		t.Fatalf("%d dropped, want 97", dropped)
	}
	if n := len(buf.Lines(t, "login_event")); n != 103 {
		t.Fatalf("%d login_event lines on stdout, want 3 failures and 100 successes", n)
	}
	es, err := st.LogsAfter(t.Context(), "", 1000)
	if err != nil || len(es) != 103 {
		t.Fatalf("store holds %d entries, %v; want 103", len(es), err)
	}
}

// Drops are summed up: one warning at the first drop, then at most one per interval with the
// count since the previous one (by reason and type).
func TestDroppedEventsAreSummedUpOncePerInterval(t *testing.T) {
	clock := newClock()
	w, buf, _ := limitedWriter(clock, LimiterConfig{PerIPRate: 1, PerIPBurst: 1})
	write := func(typ, ip string) {
		_ = w.Write(t.Context(), &Event{Type: typ, IP: ip})
	}
	write(TypeFailedLogin, "192.0.2.1") // admitted
	for range 50 {
		write(TypeFailedLogin, "192.0.2.1")
	}
	for range 10 {
		write(TypeFailedAPI, "192.0.2.1")
	}
	warns := buf.Lines(t, "login_events_dropped")
	if len(warns) != 1 || warns[0]["dropped"] != 1.0 || warns[0]["level"] != "WARN" || warns[0]["class"] != "unauthenticated" {
		t.Fatalf("after the first drop: %v, want one warning for 1 event", warns)
	}
	w.flushDrops() // what the timer does DropReportEvery after the first warning
	warns = buf.Lines(t, "login_events_dropped")
	want := map[string]any{"dropped": 59.0, "by_reason": map[string]any{"per_ip": 59.0},
		"by_type": map[string]any{"f": 49.0, "fapi": 10.0}}
	if len(warns) != 2 || fmt.Sprint(pick(warns[1], "dropped", "by_reason", "by_type")) != fmt.Sprint(want) {
		t.Fatalf("second warning = %v, want %v", warns[len(warns)-1], want)
	}
	w.flushDrops() // nothing pending: no warning
	clock.Add(time.Hour)
	write(TypeFailedLogin, "192.0.2.2") // admitted: a new IP
	write(TypeFailedLogin, "192.0.2.2") // dropped, an interval after the last warning
	if warns = buf.Lines(t, "login_events_dropped"); len(warns) != 3 || warns[2]["dropped"] != 1.0 {
		t.Fatalf("warnings = %v, want a third one for 1 event", warns)
	}
}

func pick(m map[string]any, keys ...string) map[string]any {
	out := map[string]any{}
	for _, k := range keys {
		out[k] = m[k]
	}
	return out
}
