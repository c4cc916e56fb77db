package broker

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/logs/logtest"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// streamReceiver is a loopback webhook that can hold every request until released.
type streamReceiver struct {
	srv *httptest.Server

	mu       sync.Mutex
	requests int
	auth     []string
	ids      []string
	hold     chan struct{}
}

func newStreamReceiver(t *testing.T, held bool) *streamReceiver {
	rc := &streamReceiver{}
	if held {
		rc.hold = make(chan struct{})
	}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.requests++
		rc.auth = append(rc.auth, r.Header.Get("Authorization"))
		hold := rc.hold
		rc.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
				return
			}
		}
		var batch []logs.Event
		if json.Unmarshal(body, &batch) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		rc.mu.Lock()
		for _, ev := range batch {
			rc.ids = append(rc.ids, ev.LogID)
		}
		rc.mu.Unlock()
	}))
	t.Cleanup(func() {
		rc.release()
		rc.srv.Close()
	})
	return rc
}

func (rc *streamReceiver) release() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.hold != nil {
		close(rc.hold)
		rc.hold = nil
	}
}

func (rc *streamReceiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.requests
}

func (rc *streamReceiver) has(id string) bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Contains(rc.ids, id)
}

// pollUntil polls cond generously (a bound for loaded machines, never a speed claim).
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func logStreamTo(url string, allowed ...string) config.LogStream {
	return config.LogStream{
		Name: "siem", URL: url, Start: "oldest", Types: []string{"s"}, Timeout: time.Minute,
		Auth:            config.LogStreamAuth{Type: config.LogStreamBearer, Token: "stream-token-0123456789"},
		AllowedNetworks: allowed,
	}
}

// Logins write their events to the store and go on: the stream's request, held by its
// receiver, is the only one made, and logins after it complete while it hangs. Once the
// receiver answers, the logins' s events arrive with the configured bearer token.
func TestLogStreamDeliversLoginsThatNeverWaitOnIt(t *testing.T) {
	rc := newStreamReceiver(t, true)
	h := newHarness(t, harnessOpts{up: demoidp.Options{DPoPAlgs: []string{"ES256"}}, mutate: func(c *config.Config) {
		c.LogStreams = []config.LogStream{logStreamTo(rc.srv.URL, "127.0.0.0/8")}
	}})
	if err := h.broker.Init(t.Context()); err != nil {
		t.Fatalf("Init: %v", err)
	}
	h.login()
	first := h.lastEventOf("s").LogID
	pollUntil(t, "the stream's first request", func() bool { return rc.count() > 0 })
	h.login()
	h.login()
	last := h.lastEventOf("s").LogID
	if n := rc.count(); n != 1 {
		t.Fatalf("%d requests to the stream's endpoint while it hangs, want the stream's one attempt", n)
	}
	rc.release()
	pollUntil(t, "the logins' events at the receiver", func() bool { return rc.has(first) && rc.has(last) })
	rc.mu.Lock()
	for _, a := range rc.auth {
		if a != "Bearer stream-token-0123456789" {
			t.Errorf("Authorization %q", a)
		}
	}
	rc.mu.Unlock()
	mfs, err := h.broker.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "dpop_broker_log_stream_") {
			names = append(names, mf.GetName())
		}
	}
	for _, want := range []string{"dpop_broker_log_stream_lag_events", "dpop_broker_log_stream_lag_seconds",
		"dpop_broker_log_stream_requests_total", "dpop_broker_log_stream_active"} {
		if !slices.Contains(names, want) {
			t.Errorf("metrics %v lack %s", names, want)
		}
	}
}

// A stream's endpoint on an internal address is refused when dialled, as upstream calls
// are, unless the stream's allowed_networks lists it; the refusal names that key. (An IP
// literal is refused by config validation already; a name is checked when dialled.)
func TestLogStreamToAnInternalAddressIsRefusedWithoutAllowedNetworks(t *testing.T) {
	rc := newStreamReceiver(t, false)
	buf := &logtest.Buffer{}
	byName := strings.Replace(rc.srv.URL, "127.0.0.1", "localhost", 1)
	h := newHarness(t, harnessOpts{
		up:     demoidp.Options{DPoPAlgs: []string{"ES256"}},
		mutate: func(c *config.Config) { c.LogStreams = []config.LogStream{logStreamTo(byName)} },
		deps:   func(d *Deps) { d.Logger = slog.New(slog.NewJSONHandler(buf, nil)) },
	})
	if err := h.broker.Init(t.Context()); err != nil {
		t.Fatalf("Init: %v", err)
	}
	h.login()
	pollUntil(t, "a refused delivery", func() bool {
		return strings.Contains(buf.String(), "log_stream_delivery_failed") &&
			strings.Contains(buf.String(), "refused: loopback address, not in log_streams[0].allowed_networks")
	})
	if n := rc.count(); n != 0 {
		t.Fatalf("the loopback endpoint got %d requests, want none", n)
	}
}
