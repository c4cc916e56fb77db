package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
)

// The process's logs (the configuration's log:): the application log, for operators, and
// the login events' lines, for the SIEM, in one stream or apart.
//
// The application log writes lines at log.level and above, as JSON or text (log.format), to
// log.output. In front of it:
//   - logs.StoreOutageHandler writes the per-request lines of a store outage at DEBUG: the
//     Redis store reports the outage itself, once when it begins and once when it ends;
//   - logs.ThrottleHandler limits WARN and ERROR lines per message (1/s, burst 10; one
//     "log_lines_dropped" summary per 10 s), so that requests anyone can make fail (a callback
//     with a made-up code, a flood while the upstream is down) cannot flood the log and the
//     SIEM behind it.
//
// The events' lines (INFO "login_event", logs.Writer.EventLogger) are written whatever
// log.level, untouched by the throttle (the event writer limits the unauthenticated ones
// itself): into the application log (log.events: log), as JSON lines on the other standard
// stream, appended to a file, or not at all.

// processLog is the process's application log and its events' lines.
type processLog struct {
	logger *slog.Logger // the application log
	events *slog.Logger // the login events' lines (logs.Writer.EventLogger)
	flush  func()       // writes the throttle's last summary
	file   *os.File     // log.events' file, when it names one
}

// newLogger returns the application log of the demo: JSON lines at INFO to w, the events in
// it. Call flush at exit to write the throttle's last summary.
func newLogger(w io.Writer) (logger *slog.Logger, flush func()) {
	p, _ := openProcessLog(&config.Log{}, w, w) // the default log: opens no file, cannot fail
	return p.logger, p.flush
}

// openProcessLog builds the logs c configures on stdout and stderr; it opens log.events'
// file when c names one (openEventsFile). Call close at exit.
func openProcessLog(c *config.Log, stdout, stderr io.Writer) (*processLog, error) {
	streams := map[string]io.Writer{config.LogStdout: &lockedWriter{w: stdout}, config.LogStderr: &lockedWriter{w: stderr}}
	if stdout == stderr {
		streams[config.LogStderr] = streams[config.LogStdout]
	}
	out := streams[c.OutputName()]
	if out == nil {
		return nil, fmt.Errorf("log.output: %q is not an output", c.OutputName())
	}
	throttle := logs.NewThrottleHandler(formatHandler(out, c.FormatName(), c.SlogLevel()), logs.ThrottleConfig{})
	p := &processLog{logger: slog.New(logs.NewStoreOutageHandler(throttle)), flush: throttle.Flush}
	switch to := c.EventsTo(); {
	case to == config.LogEventsInLog:
		// The same stream and format; INFO whatever the level.
		p.events = slog.New(formatHandler(out, c.FormatName(), slog.LevelInfo))
	case to == config.LogEventsOff:
		p.events = slog.New(slog.DiscardHandler)
	case c.EventsFile():
		f, err := openEventsFile(to, p.logger)
		if err != nil {
			return nil, fmt.Errorf("log.events: %w", err)
		}
		p.file = f
		w := &reportingWriter{w: f, report: func(err error) {
			p.logger.Error("login event line not written", "file", to, "err", err)
		}}
		p.events = slog.New(slog.NewJSONHandler(w, nil))
	default:
		s := streams[to]
		if s == nil {
			return nil, fmt.Errorf("log.events: %q is not a destination", to)
		}
		p.events = slog.New(slog.NewJSONHandler(s, nil))
	}
	return p, nil
}

// openEventsFile opens log.events' file for appending, creating it 0600. It does not follow
// a symbolic link (O_NOFOLLOW: the open fails), so that whoever can write the directory
// cannot send the events elsewhere; an existing file that its group or others may access
// (0644 left by an earlier tool) loses those bits, through the open file, and the change is
// logged: events carry IP addresses and user names. A named pipe or device is left as it is.
func openEventsFile(path string, logger *slog.Logger) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%s is a symbolic link: name the file itself: %w", path, err)
		}
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	if perm := fi.Mode().Perm(); fi.Mode().IsRegular() && perm&0o077 != 0 {
		if err := f.Chmod(perm &^ 0o077); err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("%s is mode %#o and cannot be made 0600: %w", path, perm, err)
		}
		logger.Warn("log.events file permissions restricted", "file", path,
			"was", fmt.Sprintf("%#o", perm), "now", fmt.Sprintf("%#o", perm&^0o077))
	}
	return f, nil
}

// close writes the throttle's last summary and closes the events' file.
func (p *processLog) close() error {
	p.flush()
	if p.file == nil {
		return nil
	}
	if err := p.file.Close(); err != nil {
		return fmt.Errorf("log.events: %w", err)
	}
	return nil
}

// formatHandler writes records at level and above to w in format (json or text).
func formatHandler(w io.Writer, format string, level slog.Level) slog.Handler {
	o := &slog.HandlerOptions{Level: level}
	if format == config.LogFormatText {
		return slog.NewTextHandler(w, o)
	}
	return slog.NewJSONHandler(w, o)
}

// lockedWriter serializes the writes of the handlers that share a stream (the application
// log and the events' lines), so that lines never interleave: slog's handlers each lock
// only themselves, and a pipe takes a write over 4 KiB in several pieces.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// reportingWriter reports each failed write (a full disk, a removed mount) to report, so that
// lost event lines show in the application log (throttled like any error line).
type reportingWriter struct {
	w      io.Writer
	report func(error)
}

func (r *reportingWriter) Write(p []byte) (int, error) {
	n, err := r.w.Write(p)
	if err != nil {
		r.report(err)
	} else if n < len(p) {
		r.report(errors.New("short write"))
	}
	return n, err
}
