package logs

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/logs/logtest"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// TestCredentialCheckFailuresReachStdoutWhenTheLimitsDropThem: an unauthenticated event marked
// CredentialCheck that the limits drop is still printed, as a credential_check_failed warning
// with its fields and the drop's reason, not stored; an unmarked one dropped is not printed;
// the process log's throttle bounds the warnings.
func TestCredentialCheckFailuresReachStdoutWhenTheLimitsDropThem(t *testing.T) {
	tests := []struct {
		name       string
		credential bool
		throttle   int // burst of the process log's throttle (0: none)
		attempts   int
		wantLines  int // credential_check_failed lines
	}{
		{name: "failed credential checks dropped are printed", credential: true, attempts: 4, wantLines: 3},
		{name: "other dropped events are not", attempts: 4, wantLines: 0},
		{name: "the throttle bounds the warnings", credential: true, throttle: 2, attempts: 10, wantLines: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out logtest.Buffer
			var handler slog.Handler = slog.NewJSONHandler(&out, nil)
			if tt.throttle > 0 {
				handler = NewThrottleHandler(handler, ThrottleConfig{Rate: 1e-9, Burst: tt.throttle, ReportEvery: time.Hour})
			}
			st := sessions.NewMemory()
			w := &Writer{Store: st, Logger: slog.New(handler), Hostname: "h",
				Limits: NewLimiter(LimiterConfig{GlobalRate: 1e-9, GlobalBurst: 1})}
			for i := range tt.attempts {
				ev := &Event{Type: TypeFailedAPI, Class: ClassUnauthenticated, IP: "192.0.2.7", UserAgent: "guesser", CredentialCheck: tt.credential,
					Details: map[string]any{"error": map[string]any{"errorCode": "invalid_token"}, "request": map[string]any{"path": "/api/v2/connections"}}}
				err := w.Write(context.Background(), ev)
				if dropped := err != nil; dropped != (i > 0) {
					t.Fatalf("event %d: %v", i, err)
				}
			}
			if got := len(out.Lines(t, "login_event")); got != 1 {
				t.Fatalf("%d login_event lines, want the one admitted", got)
			}
			lines := out.Lines(t, CredentialCheckFailed)
			if len(lines) != tt.wantLines {
				t.Fatalf("%d %s lines, want %d", len(lines), CredentialCheckFailed, tt.wantLines)
			}
			for _, l := range lines {
				if l["level"] != "WARN" || l["type"] != TypeFailedAPI || l["ip"] != "192.0.2.7" || l["dropped"] != DropGlobal || l["log_id"] != nil || l["details"] == nil {
					t.Fatalf("line %v", l)
				}
			}
			if raw, _ := st.Logs(context.Background(), "", 10); len(raw) != 1 {
				t.Fatalf("%d events stored, want the one admitted", len(raw))
			}
		})
	}
}
