package config

import (
	"log/slog"
	"slices"
	"testing"

	"github.com/dpop-broker/dpop-broker/config/configtest"
)

// log: is read from the YAML, its defaults filled for the keys left out, and every bad value
// is reported under its key with what is accepted.
func TestLogConfig(t *testing.T) {
	configtest.SetEnv(t)
	tests := []struct {
		name       string
		yaml       string
		wantErr    *FieldError
		wantLevel  slog.Level
		wantFormat string
		wantOutput string
		wantEvents string
		wantFile   bool
	}{
		{name: "defaults", yaml: ``, wantLevel: slog.LevelInfo, wantFormat: "json", wantOutput: "stdout", wantEvents: "log"},
		{name: "text at debug", yaml: "log: { level: debug, format: text }", wantLevel: slog.LevelDebug, wantFormat: "text", wantOutput: "stdout", wantEvents: "log"},
		{name: "events on stdout, log on stderr", yaml: "log: { output: stderr, events: stdout }", wantLevel: slog.LevelInfo, wantFormat: "json", wantOutput: "stderr", wantEvents: "stdout"},
		{name: "events to a file", yaml: "log: { level: warn, events: /var/log/dpop-broker/events.jsonl }", wantLevel: slog.LevelWarn, wantFormat: "json", wantOutput: "stdout", wantEvents: "/var/log/dpop-broker/events.jsonl", wantFile: true},
		{name: "events off", yaml: "log: { level: error, events: off }", wantLevel: slog.LevelError, wantFormat: "json", wantOutput: "stdout", wantEvents: "off"},
		{name: "unknown level", yaml: "log: { level: warning }", wantErr: &FieldError{Key: "log.level", Reason: `"warning" is not a level: use debug, info, warn or error`}},
		{name: "level in capitals", yaml: "log: { level: INFO }", wantErr: &FieldError{Key: "log.level", Reason: `"INFO" is not a level: use debug, info, warn or error`}},
		{name: "unknown format", yaml: "log: { format: logfmt }", wantErr: &FieldError{Key: "log.format", Reason: `"logfmt" is not a format: use json or text`}},
		{name: "unknown output", yaml: "log: { output: /var/log/broker.log }", wantErr: &FieldError{Key: "log.output", Reason: `"/var/log/broker.log" is not an output: use stdout or stderr`}},
		{name: "events on the log's own stream", yaml: "log: { events: stdout }", wantErr: &FieldError{Key: "log.events", Reason: `"stdout" is also log.output: use log to keep the events in the application log, or send one of them to the other stream`}},
		{name: "relative events file", yaml: "log: { events: events.log }", wantErr: &FieldError{Key: "log.events", Reason: `"events.log" is neither log, stdout, stderr nor off, nor an absolute file path`}},
		{name: "events directory", yaml: "log: { events: /var/log/ }", wantErr: &FieldError{Key: "log.events", Reason: `"/var/log/" is a directory: name the file the events are appended to`}},
		{name: "events path with a trailing space", yaml: `log: { events: "/var/log/events.log " }`, wantErr: &FieldError{Key: "log.events", Reason: `"/var/log/events.log " has leading or trailing spaces`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(configtest.ValidYAML + "\n" + tt.yaml + "\n"))
			if err != nil {
				t.Fatal(err)
			}
			errs := cfg.Validate()
			if tt.wantErr != nil {
				if !slices.Contains(errs, *tt.wantErr) {
					t.Fatalf("got %v\nwant %v", FieldErrors(errs), *tt.wantErr)
				}
				return
			}
			if len(errs) != 0 {
				t.Fatalf("Validate: %v", FieldErrors(errs))
			}
			l := &cfg.Log
			if l.SlogLevel() != tt.wantLevel || l.FormatName() != tt.wantFormat || l.OutputName() != tt.wantOutput ||
				l.EventsTo() != tt.wantEvents || l.EventsFile() != tt.wantFile {
				t.Errorf("log = level %v, format %s, output %s, events %s (file %v); want %v, %s, %s, %s (%v)",
					l.SlogLevel(), l.FormatName(), l.OutputName(), l.EventsTo(), l.EventsFile(),
					tt.wantLevel, tt.wantFormat, tt.wantOutput, tt.wantEvents, tt.wantFile)
			}
		})
	}
}

// A configuration built in code with an empty log: takes the defaults.
func TestEmptyLogConfigIsTheDefault(t *testing.T) {
	var v validator
	l := Log{}
	v.log(&l)
	if len(v.errs) != 0 || l.SlogLevel() != slog.LevelInfo || l.FormatName() != "json" || l.OutputName() != "stdout" || l.EventsTo() != "log" {
		t.Errorf("empty log: errors %v, level %v, format %s, output %s, events %s", v.errs, l.SlogLevel(), l.FormatName(), l.OutputName(), l.EventsTo())
	}
}
