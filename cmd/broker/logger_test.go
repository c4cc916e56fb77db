package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// The logger of serve and demo limits each warning message and passes INFO lines (login
// events) untouched; flush writes the summary of what it dropped.
func TestServeLoggerThrottlesWarningsNotEvents(t *testing.T) {
	var buf bytes.Buffer
	logger, flush := newLogger(&buf)
	for range 100 {
		logger.Warn("store operation failed", "err", "dial tcp: connection refused")
		logger.Info("login_event", "type", "f")
	}
	flush()
	out := buf.String()
	// The burst, plus at most what the bucket (1/s) refills while the loop runs.
	if n := strings.Count(out, `"msg":"store operation failed"`); n < logs.DefaultThrottleBurst || n > 50 {
		t.Errorf("%d warnings written, want the burst (%d) and few more", n, logs.DefaultThrottleBurst)
	}
	if n := strings.Count(out, `"msg":"login_event"`); n != 100 {
		t.Errorf("%d login events written, want all 100", n)
	}
	if n := strings.Count(out, `"msg":"`+logs.ThrottledMessage+`"`); n == 0 {
		t.Errorf("no summary written:\n%s", out)
	}
}

// jsonLines decodes the JSON lines of s.
func jsonLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for l := range strings.SplitSeq(s, "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q is not JSON: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// msgs returns the msg of each line.
func msgs(lines []map[string]any) []string {
	var out []string
	for _, l := range lines {
		out = append(out, fmt.Sprint(l["msg"]))
	}
	return out
}

// log.level drops the application's lines below it; login events are written at every level.
func TestProcessLogWritesLinesAtItsLevelAndEventsAtAnyLevel(t *testing.T) {
	tests := []struct {
		level string
		want  []string
	}{
		{level: "debug", want: []string{"d", "i", "w", "e", "login_event"}},
		{level: "", want: []string{"i", "w", "e", "login_event"}},
		{level: "info", want: []string{"i", "w", "e", "login_event"}},
		{level: "warn", want: []string{"w", "e", "login_event"}},
		{level: "error", want: []string{"e", "login_event"}},
	}
	for _, tt := range tests {
		t.Run("level "+tt.level, func(t *testing.T) {
			var out bytes.Buffer
			p, err := openProcessLog(&config.Log{Level: tt.level}, &out, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			p.logger.Debug("d")
			p.logger.Info("i")
			p.logger.Warn("w")
			p.logger.Error("e")
			w := &logs.Writer{Logger: p.logger, EventLogger: p.events}
			if err := w.Write(t.Context(), &logs.Event{Type: logs.TypeSuccessLogin}); err != nil {
				t.Fatal(err)
			}
			if err := p.close(); err != nil {
				t.Fatal(err)
			}
			if got := msgs(jsonLines(t, out.String())); !slices.Equal(got, tt.want) {
				t.Errorf("lines %q, want %q", got, tt.want)
			}
		})
	}
}

// log.format json writes one JSON object a line, text key=value lines; the events in the
// application log take its format.
func TestProcessLogFormat(t *testing.T) {
	tests := []struct {
		format string
		want   []string // each line, in order, contains this
	}{
		{format: "json", want: []string{`"level":"WARN","msg":"store busy","attempts":3}`, `"msg":"login_event","log_id":"`}},
		{format: "text", want: []string{`level=WARN msg="store busy" attempts=3`, `level=INFO msg=login_event log_id=`}},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			var out bytes.Buffer
			p, err := openProcessLog(&config.Log{Format: tt.format}, &out, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			p.logger.Warn("store busy", "attempts", 3)
			w := &logs.Writer{Logger: p.logger, EventLogger: p.events}
			if err := w.Write(t.Context(), &logs.Event{Type: logs.TypeSuccessLogin}); err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if len(lines) != len(tt.want) {
				t.Fatalf("%d lines, want %d:\n%s", len(lines), len(tt.want), out.String())
			}
			for i, w := range tt.want {
				if !strings.Contains(lines[i], w) {
					t.Errorf("line %d = %s, want it to contain %s", i, lines[i], w)
				}
			}
		})
	}
}

// log.events sends the events' lines to their own stream (JSON whatever log.format), a file
// (created 0600, appended to), or nowhere; the application log then carries none of them,
// and keeps the event writer's own warnings.
func TestProcessLogSendsEventsApartFromTheApplicationLog(t *testing.T) {
	file := filepath.Join(t.TempDir(), "events.jsonl")
	if err := os.WriteFile(file, []byte(`{"msg":"login_event","log_id":"earlier"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		cfg        config.Log
		wantStream string // "stdout", "stderr", "file" or "" (nowhere)
	}{
		{name: "stderr", cfg: config.Log{Format: "text", Events: "stderr"}, wantStream: "stderr"},
		{name: "stdout with the log on stderr", cfg: config.Log{Output: "stderr", Events: "stdout"}, wantStream: "stdout"},
		{name: "file", cfg: config.Log{Format: "text", Events: file}, wantStream: "file"},
		{name: "off", cfg: config.Log{Events: "off"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			streams := map[string]*bytes.Buffer{"stdout": {}, "stderr": {}}
			p, err := openProcessLog(&tt.cfg, streams["stdout"], streams["stderr"])
			if err != nil {
				t.Fatal(err)
			}
			w := &logs.Writer{Logger: p.logger, EventLogger: p.events, Store: failingStore{}}
			ev := &logs.Event{Type: logs.TypeFailedLogin, Details: map[string]any{"error": "access_denied"}}
			if err := w.Write(t.Context(), ev); err == nil {
				t.Fatal("Write to a failing store succeeded")
			}
			if err := p.close(); err != nil {
				t.Fatal(err)
			}
			app := streams[tt.cfg.OutputName()].String()
			if strings.Contains(app, "login_event ") || strings.Contains(app, `"login_event"`) || strings.Contains(app, "msg=login_event ") {
				t.Errorf("the application log carries the event:\n%s", app)
			}
			if !strings.Contains(app, "login_event_store_failed") {
				t.Errorf("the application log lacks the event writer's warning:\n%s", app)
			}
			var eventsOut string
			switch tt.wantStream {
			case "stdout", "stderr":
				eventsOut = streams[tt.wantStream].String()
			case "file":
				b, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				eventsOut = string(b)
				if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
					t.Errorf("events file mode = %v (%v), want 0600", fi.Mode().Perm(), err)
				}
			}
			var ids []string
			for _, l := range jsonLines(t, eventsOut) {
				if l["msg"] != "login_event" {
					t.Errorf("event stream line %v is not an event", l)
				}
				ids = append(ids, fmt.Sprint(l["log_id"]))
			}
			var want []string
			switch tt.wantStream {
			case "":
			case "file":
				want = []string{"earlier", ev.LogID} // appended
			default:
				want = []string{ev.LogID}
			}
			if !slices.Equal(ids, want) {
				t.Errorf("event stream ids %q, want %q", ids, want)
			}
		})
	}
}

// A log.events file that cannot be opened stops startup with the key and the reason.
func TestProcessLogEventsFileThatCannotBeOpened(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing-dir", "events.jsonl")
	_, err := openProcessLog(&config.Log{Events: path}, io.Discard, io.Discard)
	if err == nil || !strings.HasPrefix(err.Error(), "log.events: ") || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("openProcessLog = %v, want a log.events error that the directory does not exist", err)
	}
}

// An existing log.events file that its group or others may read is made 0600 before any
// event is written to it (the creation mode applies only to a new file), with a warning in
// the application log; a symbolic link is not followed: startup stops and its target
// receives nothing.
func TestProcessLogEventsFileIsPrivateAndNotASymlink(t *testing.T) {
	tests := []struct {
		name     string
		existing os.FileMode // mode of the file already there; 0: none
		symlink  bool        // log.events names a symbolic link to that file
		wantErr  string      // "" when the file opens
		wantWarn bool        // the application log reports the permissions' change
	}{
		{name: "new file is created 0600"},
		{name: "existing 0600 file is kept", existing: 0o600},
		{name: "existing 0644 file is made 0600", existing: 0o644, wantWarn: true},
		{name: "existing 0660 file is made 0600", existing: 0o660, wantWarn: true},
		{name: "symbolic link is refused", existing: 0o600, symlink: true, wantErr: "is a symbolic link"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "events.jsonl")
			if tt.existing != 0 {
				if err := os.WriteFile(file, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(file, tt.existing); err != nil { // past the umask
					t.Fatal(err)
				}
			}
			path := file
			if tt.symlink {
				path = filepath.Join(dir, "link.jsonl")
				if err := os.Symlink(file, path); err != nil {
					t.Fatal(err)
				}
			}
			var app bytes.Buffer
			p, err := openProcessLog(&config.Log{Events: path}, &app, &app)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), "log.events: ") || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("openProcessLog = %v, want a log.events error containing %q", err, tt.wantErr)
				}
				if b, err := os.ReadFile(file); err != nil || len(b) != 0 {
					t.Errorf("the link's target holds %q (%v), want nothing", b, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			p.events.Info("login_event", "log_id", "1")
			if err := p.close(); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(file)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("events file mode = %v, want 0600", fi.Mode().Perm())
			}
			if b, _ := os.ReadFile(file); !strings.Contains(string(b), `"log_id":"1"`) {
				t.Errorf("events file holds %q, want the event", b)
			}
			if got := strings.Contains(app.String(), "log.events file permissions restricted"); got != tt.wantWarn {
				t.Errorf("warning in the application log = %v, want %v:\n%s", got, tt.wantWarn, app.String())
			}
		})
	}
}

// The per-request lines of a store outage are DEBUG in the application log (the store
// reports the outage once): written at log.level debug, not at info.
func TestProcessLogWritesStoreOutageLinesAtDebug(t *testing.T) {
	down := fmt.Errorf("sessions: redis get sess: %w: dial tcp 127.0.0.1:6379: connect: connection refused", sessions.ErrUnavailable)
	for _, level := range []string{"info", "debug"} {
		t.Run(level, func(t *testing.T) {
			var out bytes.Buffer
			p, err := openProcessLog(&config.Log{Level: level}, &out, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			for range 50 {
				p.logger.Error("store operation failed", "err", down)
			}
			p.logger.Error("upstream code exchange failed", "err", errors.New("invalid_grant"))
			if err := p.close(); err != nil {
				t.Fatal(err)
			}
			lines := jsonLines(t, out.String())
			var outage, other, summaries int
			for _, l := range lines {
				switch l["msg"] {
				case "store operation failed":
					outage++
					if l["level"] != "DEBUG" {
						t.Errorf("outage line at %v, want DEBUG", l["level"])
					}
				case "upstream code exchange failed":
					other++
				case logs.ThrottledMessage:
					summaries++
				}
			}
			wantOutage := 0
			if level == "debug" {
				wantOutage = 50 // DEBUG lines are not throttled
			}
			if outage != wantOutage || other != 1 || summaries != 0 {
				t.Errorf("%d outage lines (want %d), %d other errors (want 1), %d throttle summaries (want 0):\n%s",
					outage, wantOutage, other, summaries, out.String())
			}
		})
	}
}

type failingStore struct{ sessions.Store }

func (failingStore) AppendLog(context.Context, sessions.LogClass, string, []byte, int) error {
	return fmt.Errorf("disk on fire: %w", errors.New("store refused"))
}
