package broker

import (
	"log/slog"
	"net/url"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/logs/logtest"
)

// A browser looping /authorize and then /login/callback with its own state and a made-up code
// makes every exchange fail with a warning; through the throttle the process logger uses
// (serve, demo), the warnings stop at the message's burst and one summary counts the rest,
// while every failed-login event (INFO, limited by the event writer only) is still written.
func TestLoopedCallbackFailuresCannotFloodStdout(t *testing.T) {
	const loops, burst = 40, 5
	stdout := &logtest.Buffer{}
	frozen := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC) // no refill during the loop
	throttle := logs.NewThrottleHandler(slog.NewJSONHandler(stdout, nil), logs.ThrottleConfig{
		Burst: burst, ReportEvery: time.Hour, Now: func() time.Time { return frozen },
	})
	logger := slog.New(throttle)
	h := newHarness(t, harnessOpts{up: optionalDPoPUp, mutate: func(c *config.Config) {
		c.Logs.Unauthenticated.PerIP.Rate, c.Logs.Unauthenticated.Global.Rate = "0", "0"
	}, deps: func(d *Deps) {
		d.Logger = logger
		d.Events.Logger = logger
	}})
	for i := range loops {
		b := h.browser()
		cb, err := url.Parse(h.toCallback(b, h.authorizeURL(nil)))
		if err != nil {
			t.Fatal(err)
		}
		q := cb.Query()
		q.Set("code", "garbage-"+string(rune('a'+i%26)))
		cb.RawQuery = q.Encode()
		get(t, b, cb.String())
	}
	throttle.Flush()

	warns := stdoutLines(t, stdout, "upstream code exchange failed")
	if len(warns) != burst {
		t.Fatalf("%d exchange warnings on stdout, want the burst (%d)", len(warns), burst)
	}
	sums := stdoutLines(t, stdout, logs.ThrottledMessage)
	if len(sums) != 1 || sums[0]["dropped"] != float64(loops-burst) ||
		sums[0]["by_message"].(map[string]any)["upstream code exchange failed"] != float64(loops-burst) {
		t.Fatalf("summaries = %v, want one of %d dropped exchange warnings", sums, loops-burst)
	}
	failed := 0
	for _, l := range stdoutLines(t, stdout, "login_event") {
		if l["type"] == logs.TypeFailedLogin {
			failed++
		}
	}
	if failed != loops {
		t.Fatalf("%d failed-login events on stdout, want all %d (events are not throttled twice)", failed, loops)
	}
}
