package logs

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// TestShrinkValueFitsTheBound: a value larger than the bound comes back within it, marked
// with the cut mark; a value within it comes back unchanged.
func TestShrinkValueFitsTheBound(t *testing.T) {
	many := map[string]any{}
	for i := range 500 {
		many[strings.Repeat("k", 10)+string(rune('a'+i%26))+strings.Repeat("x", i)] = i
	}
	deep := any("leaf")
	for range 50 {
		deep = map[string]any{"a": deep, "b": []any{strings.Repeat("y", 100)}}
	}
	tests := []struct {
		name      string
		v         any
		max       int
		unchanged bool
	}{
		{name: "a small object is kept", v: map[string]any{"name": "x"}, max: 100, unchanged: true},
		{name: "a long string", v: map[string]any{"display_name": strings.Repeat("<", 64<<10)}, max: 4096},
		{name: "many members", v: many, max: 4096},
		{name: "a long array", v: []any{strings.Repeat("a", 100), strings.Repeat("b", 5000), 3, true, nil}, max: 1024},
		{name: "deep nesting", v: deep, max: 2048},
		{name: "nothing fits but the mark", v: strings.Repeat("z", 100), max: 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, changed := ShrinkValue(tt.v, tt.max)
			if changed == tt.unchanged {
				t.Fatalf("changed = %v", changed)
			}
			b, err := json.Marshal(got)
			if err != nil || len(b) > tt.max {
				t.Fatalf("%d bytes (%v), want at most %d: %.200s", len(b), err, tt.max, b)
			}
			if !tt.unchanged && !strings.Contains(string(b), cutMark) && !strings.Contains(string(b), `\u2026`) {
				t.Fatalf("no cut mark in %.200s", b)
			}
		})
	}
}

// TestWriterBoundsTheSizeOfAnEvent: whatever its details or free-text fields carry, an event
// is stored and printed within MaxEventBytes; its identity fields are whole, every top-level
// detail is kept by name, and event_clipped says how large the details were. An event within
// the bound is written as it is.
func TestWriterBoundsTheSizeOfAnEvent(t *testing.T) {
	const limit = 4096
	long := strings.Repeat("<", 60<<10)
	tests := []struct {
		name    string
		ev      Event
		clipped bool
	}{
		{name: "a small event is untouched", ev: Event{Type: TypeFailedAPI, Details: map[string]any{"error": "bad", "request": map[string]any{"path": "/x"}}}},
		{name: "a request body of 60 KiB", clipped: true, ev: Event{Type: TypeFailedAPI, Details: map[string]any{
			"error": map[string]any{"message": "Payload validation error"}, "request": map[string]any{"method": "POST", "body": map[string]any{"display_name": long}}}}},
		{name: "many large details", clipped: true, ev: Event{Type: TypeSuccessAPI, Details: map[string]any{
			"a": long, "b": []any{long, long}, "c": map[string]any{"d": long}}}},
		{name: "a long user agent and user name", ev: Event{Type: TypeFailedLogin, UserAgent: long, UserName: long, Details: map[string]any{"error": "x"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := sessions.NewMemory()
			var out bytes.Buffer
			w := &Writer{Store: st, MaxEventBytes: limit, Logger: slog.New(slog.NewJSONHandler(&out, nil)), Hostname: "h"}
			ev := tt.ev
			ev.IP, ev.UserID, ev.ClientID, ev.Connection = "192.0.2.1", "oidc|corp|"+strings.Repeat("u", 200), "app", "corp"
			if err := w.Write(context.Background(), &ev); err != nil {
				t.Fatal(err)
			}
			raw, err := st.Logs(context.Background(), "", 1)
			if err != nil || len(raw) != 1 {
				t.Fatalf("stored: %v %d", err, len(raw))
			}
			if len(raw[0]) > limit {
				t.Fatalf("stored event of %d bytes, want at most %d", len(raw[0]), limit)
			}
			if line := out.String(); len(line) > limit+256 { // slog's time, level and msg besides
				t.Fatalf("printed line of %d bytes", len(line))
			}
			var got Event
			if err := json.Unmarshal(raw[0], &got); err != nil {
				t.Fatal(err)
			}
			if got.LogID != ev.LogID || got.Type != ev.Type || got.IP != ev.IP || got.UserID != ev.UserID || got.ClientID != "app" || got.Connection != "corp" {
				t.Fatalf("identity fields changed: %+v", got)
			}
			for k := range tt.ev.Details {
				if _, ok := got.Details[k]; !ok {
					t.Errorf("detail %s dropped", k)
				}
			}
			mark, isClipped := got.Details[ClippedKey].(map[string]any)
			if isClipped != tt.clipped || isClipped && mark["bytes"].(float64) <= limit {
				t.Fatalf("event_clipped = %v, want clipped %v", got.Details[ClippedKey], tt.clipped)
			}
		})
	}
}
