package config

import (
	"log/slog"
	"path/filepath"
	"strings"
)

// Log is log: the process's application log (its level, format and stream) and where the
// login events' lines go. It is not logs:, the retention of the store-backed event log.
type Log struct {
	// Level is the lowest level the application log writes: debug, info (default), warn or
	// error. Login events are written whatever the level.
	Level string `yaml:"level"`
	// Format is json (default: one JSON object a line, for machines) or text (key=value
	// lines, for people).
	Format string `yaml:"format"`
	// Output is the stream of the application log: stdout (default) or stderr.
	Output string `yaml:"output"`
	// Events is where the login events' lines go: log (default: the application log, in its
	// format), stdout or stderr (JSON lines apart from the application log: not its output),
	// an absolute file path (JSON lines appended, the file created 0600 or made 0600, not a
	// symbolic link), or off (no lines:
	// the events are still stored, GET /api/v2/logs).
	Events string `yaml:"events"`
}

// Values of log.level, log.format, log.output and log.events.
const (
	LogFormatJSON = "json"
	LogFormatText = "text"

	LogStdout = "stdout"
	LogStderr = "stderr"

	LogEventsInLog = "log"
	LogEventsOff   = "off"
)

var logLevels = map[string]slog.Level{
	"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError,
}

// SlogLevel is log.level as a slog.Level (info when empty; validated).
func (l *Log) SlogLevel() slog.Level {
	return logLevels[l.Level] // "" and unknown: the zero Level, INFO
}

// FormatName is log.format, json when empty.
func (l *Log) FormatName() string {
	if l.Format == "" {
		return LogFormatJSON
	}
	return l.Format
}

// OutputName is log.output, stdout when empty.
func (l *Log) OutputName() string {
	if l.Output == "" {
		return LogStdout
	}
	return l.Output
}

// EventsTo is log.events, log when empty.
func (l *Log) EventsTo() string {
	if l.Events == "" {
		return LogEventsInLog
	}
	return l.Events
}

// EventsFile reports whether log.events names a file (the path is the value).
func (l *Log) EventsFile() bool {
	switch l.EventsTo() {
	case LogEventsInLog, LogEventsOff, LogStdout, LogStderr:
		return false
	}
	return true
}

// log validates log.
func (v *validator) log(l *Log) {
	if _, ok := logLevels[l.Level]; !ok && l.Level != "" {
		v.add("log.level", "%q is not a level: use debug, info, warn or error", l.Level)
	}
	if f := l.FormatName(); f != LogFormatJSON && f != LogFormatText {
		v.add("log.format", "%q is not a format: use json or text", f)
	}
	out := l.OutputName()
	if out != LogStdout && out != LogStderr {
		v.add("log.output", "%q is not an output: use stdout or stderr", out)
	}
	switch ev := l.EventsTo(); {
	case ev == out:
		v.add("log.events", "%q is also log.output: use log to keep the events in the application log, or send one of them to the other stream", ev)
	case !l.EventsFile():
	case strings.TrimSpace(ev) != ev:
		v.add("log.events", "%q has leading or trailing spaces", ev)
	case !filepath.IsAbs(ev):
		v.add("log.events", "%q is neither log, stdout, stderr nor off, nor an absolute file path", ev)
	case strings.HasSuffix(ev, "/"):
		v.add("log.events", "%q is a directory: name the file the events are appended to", ev)
	}
}
