package main

import (
	"io"
	"log/slog"

	"github.com/dpop-broker/dpop-broker/logs"
)

// newLogger returns the process logger of serve and demo: JSON lines to w, with WARN and ERROR
// lines limited per message (logs.ThrottleHandler: 1/s, burst 10; one "log_lines_dropped"
// summary per 10 s), so that requests anyone can make fail (a callback with a made-up code,
// a flood while the upstream or the store is down) cannot flood stdout and the SIEM behind
// it. Login events (INFO) pass untouched: the event writer limits them itself. Call flush at
// exit to write the last summary.
func newLogger(w io.Writer) (logger *slog.Logger, flush func()) {
	h := logs.NewThrottleHandler(slog.NewJSONHandler(w, nil), logs.ThrottleConfig{})
	return slog.New(h), h.Flush
}
