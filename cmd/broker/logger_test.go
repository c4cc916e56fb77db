package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/logs"
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
