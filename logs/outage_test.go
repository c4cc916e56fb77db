package logs

import (
	"errors"
	"fmt"
	"log/slog"
	"testing"

	"github.com/dpop-broker/dpop-broker/logs/logtest"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// StoreOutageHandler writes a warning or error about an unreachable store at DEBUG (the
// store reports the outage once itself), and every other record at its own level.
func TestStoreOutageHandlerLowersOutageLinesToDebug(t *testing.T) {
	down := fmt.Errorf("sessions: redis get sess: %w: dial tcp 127.0.0.1:6379: connect: connection refused", sessions.ErrUnavailable)
	full := fmt.Errorf("sessions: redis put sess: %w: OOM", sessions.ErrFull)
	tests := []struct {
		name      string
		level     slog.Level
		attrs     []any
		minLevel  slog.Level // of the handler behind
		wantLevel string     // "" = not written
	}{
		{name: "error carrying an outage", level: slog.LevelError, attrs: []any{"err", down}, minLevel: slog.LevelDebug, wantLevel: "DEBUG"},
		{name: "warning carrying an outage wrapped again", level: slog.LevelWarn, attrs: []any{"cause", fmt.Errorf("logs: store event: %w", down)}, minLevel: slog.LevelDebug, wantLevel: "DEBUG"},
		{name: "outage in a group", level: slog.LevelError, attrs: []any{slog.Group("store", "err", down)}, minLevel: slog.LevelDebug, wantLevel: "DEBUG"},
		{name: "outage below the log level is not written", level: slog.LevelError, attrs: []any{"err", down}, minLevel: slog.LevelInfo},
		{name: "outage marked to keep its level", level: slog.LevelError, attrs: []any{"err", KeepLevel(down)}, minLevel: slog.LevelInfo, wantLevel: "ERROR"},
		{name: "line with an outage and a marked error keeps its level", level: slog.LevelError, attrs: []any{"cause", down, "err", KeepLevel(down)}, minLevel: slog.LevelInfo, wantLevel: "ERROR"},
		{name: "full store keeps its level", level: slog.LevelError, attrs: []any{"err", full}, minLevel: slog.LevelInfo, wantLevel: "ERROR"},
		{name: "other error keeps its level", level: slog.LevelWarn, attrs: []any{"err", errors.New("upstream code exchange failed")}, minLevel: slog.LevelInfo, wantLevel: "WARN"},
		{name: "outage as text keeps its level", level: slog.LevelWarn, attrs: []any{"err", down.Error()}, minLevel: slog.LevelInfo, wantLevel: "WARN"},
		{name: "info is untouched", level: slog.LevelInfo, attrs: []any{"err", down}, minLevel: slog.LevelInfo, wantLevel: "INFO"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf := &logtest.Buffer{}
			logger := slog.New(NewStoreOutageHandler(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: tt.minLevel})))
			logger.With("component", "test").Log(t.Context(), tt.level, "store operation failed", tt.attrs...)
			lines := allLines(t, buf)
			if tt.wantLevel == "" {
				if len(lines) != 0 {
					t.Fatalf("written: %v, want nothing", lines)
				}
				return
			}
			if len(lines) != 1 || lines[0]["level"] != tt.wantLevel || lines[0]["component"] != "test" {
				t.Fatalf("lines = %v, want one %s line with the logger's attributes", lines, tt.wantLevel)
			}
		})
	}
}

// With EventLogger set, the events' lines go there and the Writer's own warnings (a store
// failure) stay in Logger.
func TestWriteSendsEventLinesToEventLogger(t *testing.T) {
	app, events := &logtest.Buffer{}, &logtest.Buffer{}
	w := &Writer{
		Logger:      slog.New(slog.NewJSONHandler(app, nil)),
		EventLogger: slog.New(slog.NewJSONHandler(events, nil)),
		Store:       failingStore{},
	}
	ev := &Event{Type: TypeFailedLogin, Details: map[string]any{"error": "upstream_error"}}
	if err := w.Write(t.Context(), ev); !errors.Is(err, sessions.ErrUnavailable) {
		t.Fatalf("Write = %v, want wrapped ErrUnavailable", err)
	}
	if l := allLines(t, events); len(l) != 1 || l[0]["msg"] != "login_event" || l[0]["log_id"] != ev.LogID {
		t.Errorf("event stream = %v, want the event's line only", l)
	}
	if l := allLines(t, app); len(l) != 1 || l[0]["msg"] != "login_event_store_failed" {
		t.Errorf("application log = %v, want the store failure only", l)
	}
}
