package logstream

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/logs/logtest"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/sessions/redistest"
)

// waitFor bounds the polls below: a bound for loaded machines only, never a speed claim.
const waitFor = 90 * time.Second

// receiver is a loopback webhook endpoint that records every batch it takes.
type receiver struct {
	srv *httptest.Server

	mu       sync.Mutex
	batches  [][]logs.Event
	requests int
	status   int           // answer of the next requests (0: 200)
	block    chan struct{} // when set, requests wait until it is closed
	verify   func(r *http.Request, body []byte) error
	problems []string
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(func() {
		rc.unblock()
		rc.srv.Close()
	})
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.requests++
	block, status, verify := rc.block, rc.status, rc.verify
	rc.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-r.Context().Done():
			return
		}
	}
	if verify != nil {
		if err := verify(r, body); err != nil {
			rc.mu.Lock()
			rc.problems = append(rc.problems, err.Error())
			rc.mu.Unlock()
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
	}
	if status != 0 {
		w.WriteHeader(status)
		return
	}
	var batch []logs.Event
	if err := json.Unmarshal(body, &batch); err != nil {
		rc.mu.Lock()
		rc.problems = append(rc.problems, "body: "+err.Error())
		rc.mu.Unlock()
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	rc.batches = append(rc.batches, batch)
	rc.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (rc *receiver) setStatus(code int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.status = code
}

func (rc *receiver) setBlock() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.block = make(chan struct{})
}

func (rc *receiver) unblock() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.block != nil {
		close(rc.block)
		rc.block = nil
	}
}

func (rc *receiver) requestCount() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.requests
}

// ids returns the log_ids received, in arrival order, duplicates included.
func (rc *receiver) ids() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []string
	for _, b := range rc.batches {
		for _, ev := range b {
			out = append(out, ev.LogID)
		}
	}
	return out
}

// unique returns ids without repeats, first arrival kept: what a receiver deduplicating by
// log_id keeps.
func unique(ids []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// waitIDs polls until the receiver has every id of want and returns what it has,
// deduplicated; the test fails when the receiver refused a request, or when an id of want
// never came (callers that wait for a delivery before going on go on only after it).
func (rc *receiver) waitIDs(t *testing.T, want []string) []string {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		got := unique(rc.ids())
		var missing []string
		for _, id := range want {
			if !slices.Contains(got, id) {
				missing = append(missing, id)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			rc.mu.Lock()
			problems := slices.Clone(rc.problems)
			rc.mu.Unlock()
			if len(problems) > 0 {
				t.Fatalf("receiver refused requests: %v", problems)
			}
			if len(missing) > 0 {
				t.Fatalf("after %s the receiver lacks %d of the %d events awaited: %v", waitFor, len(missing), len(want), missing)
			}
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeEvents writes one event per type and returns their log ids.
func writeEvents(t *testing.T, w *logs.Writer, types ...string) []string {
	t.Helper()
	ids := make([]string, len(types))
	for i, typ := range types {
		ev := &logs.Event{Type: typ, ClientID: "app", Connection: "corp", UserID: fmt.Sprintf("user-%d", i)}
		if err := w.Write(context.Background(), ev); err != nil {
			t.Fatalf("Write(%s): %v", typ, err)
		}
		ids[i] = ev.LogID
	}
	return ids
}

func repeat(typ string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = typ
	}
	return out
}

// fixture is a store with its event writer.
type fixture struct {
	store sessions.Store
	w     *logs.Writer
}

func memoryFixture(t *testing.T) fixture {
	st := sessions.NewMemory()
	t.Cleanup(func() { _ = st.Close() })
	return fixture{store: st, w: &logs.Writer{Store: st}}
}

func redisFixture(t *testing.T, addr string) fixture {
	st, err := sessions.NewRedis(sessions.RedisConfig{Addrs: []string{addr}, Prefix: "ls-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	// Several writers share one Redis: the broker gives them a Settle (broker.NewEventWriter).
	return fixture{store: st, w: &logs.Writer{Store: st, Settle: 50 * time.Millisecond}}
}

// countingTransport counts the requests one sender makes.
type countingTransport struct {
	n    atomic.Int64
	base http.RoundTripper
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.base.RoundTrip(r)
}

// quickStream is a stream to url with short waits, so that tests poll briefly.
func quickStream(url string) Stream {
	return Stream{Name: "siem", URL: url, BearerToken: "stream-token", StartOldest: true,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, BatchSize: 10,
		LateWindow: time.Millisecond}
}

func start(t *testing.T, f fixture, o Options, st Stream) *Streams {
	t.Helper()
	o.Events, o.Cursors = f.w, f.store.(sessions.LogCursors)
	if o.Poll == 0 {
		o.Poll = 20 * time.Millisecond
	}
	s, err := New(o, st)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func storedPosition(t *testing.T, f fixture) string {
	t.Helper()
	pos, _, err := f.store.(sessions.LogCursors).LogCursor(context.Background(), "siem")
	if err != nil {
		t.Fatal(err)
	}
	return pos
}

func TestStreamDeliversEveryEventInLogIDOrder(t *testing.T) {
	f := memoryFixture(t)
	rc := newReceiver(t)
	want := writeEvents(t, f.w, repeat("s", 25)...)
	start(t, f, Options{}, quickStream(rc.srv.URL))
	want = append(want, writeEvents(t, f.w, repeat("f", 17)...)...)
	got := rc.waitIDs(t, want)
	if !slices.Equal(got, want) {
		t.Fatalf("received %d events %v,\nwant %d in log_id order %v", len(got), got, len(want), want)
	}
	if ids := rc.ids(); len(ids) != len(want) {
		t.Errorf("received %d events with a receiver always up, want each once (%d)", len(ids), len(want))
	}
	rc.mu.Lock()
	for i, b := range rc.batches {
		if len(b) > 10 {
			t.Errorf("batch %d has %d events, more than batch size 10", i, len(b))
		}
	}
	rc.mu.Unlock()
}

func TestStreamWithoutPositionStartsAtNewestEventUnlessStartOldest(t *testing.T) {
	f := memoryFixture(t)
	rc := newReceiver(t)
	old := writeEvents(t, f.w, "s", "s")
	st := quickStream(rc.srv.URL)
	st.StartOldest = false
	start(t, f, Options{}, st)
	deadline := time.Now().Add(waitFor)
	for storedPosition(t, f) == "" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if pos := storedPosition(t, f); pos != old[1] {
		t.Fatalf("start position %q, want the newest event %q", pos, old[1])
	}
	want := writeEvents(t, f.w, "f", "s")
	if got := rc.waitIDs(t, want); !slices.Equal(got, want) {
		t.Fatalf("received %v, want only the events after the start %v", got, want)
	}
}

func TestStreamRetriesAReceiverThatIsDownAndLosesNothing(t *testing.T) {
	f := memoryFixture(t)
	rc := newReceiver(t)
	rc.setStatus(http.StatusServiceUnavailable)
	reg := prometheus.NewRegistry()
	start(t, f, Options{Metrics: reg}, quickStream(rc.srv.URL))
	want := writeEvents(t, f.w, repeat("s", 23)...)
	// Wait until several attempts failed: the position must not have moved.
	deadline := time.Now().Add(waitFor)
	for rc.requestCount() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := rc.requestCount(); n < 3 {
		t.Fatalf("%d attempts against a down receiver, want retries", n)
	}
	if pos := storedPosition(t, f); pos >= want[0] {
		t.Fatalf("position %q moved past %q while the receiver failed", pos, want[0])
	}
	if lag := gauge(t, reg, "dpop_broker_log_stream_lag_events"); lag < 1 {
		t.Errorf("lag while the receiver is down = %v events, want > 0", lag)
	}
	rc.setStatus(0)
	want = append(want, writeEvents(t, f.w, repeat("f", 5)...)...)
	if got := rc.waitIDs(t, want); !slices.Equal(got, want) {
		t.Fatalf("after recovery, deduplicated events %v,\nwant %v", got, want)
	}
	if n := counter(t, reg, "dpop_broker_log_stream_requests_total", "result", "failed"); n < 3 {
		t.Errorf("failed requests counted %v, want at least 3", n)
	}
	// Once everything is sent the lag falls to zero.
	deadline = time.Now().Add(waitFor)
	for gauge(t, reg, "dpop_broker_log_stream_lag_events") != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if lag := gauge(t, reg, "dpop_broker_log_stream_lag_events"); lag != 0 {
		t.Errorf("lag after delivery = %v, want 0", lag)
	}
}

func TestStreamSplitsABatchTheReceiverFindsTooLarge(t *testing.T) {
	f := memoryFixture(t)
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var batch []logs.Event
		_ = json.NewDecoder(r.Body).Decode(&batch)
		if len(batch) > 3 {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		mu.Lock()
		for _, ev := range batch {
			got = append(got, ev.LogID)
		}
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	want := writeEvents(t, f.w, repeat("s", 10)...)
	start(t, f, Options{}, quickStream(srv.URL))
	deadline := time.Now().Add(waitFor)
	for {
		mu.Lock()
		n := len(unique(got))
		mu.Unlock()
		if n >= len(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if u := unique(got); !slices.Equal(u, want) {
		t.Fatalf("received %v, want %v in order", u, want)
	}
}

func TestStreamRestartResumesFromStoredPosition(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fixture func(t *testing.T) fixture
	}{
		{name: "memory", fixture: memoryFixture},
		{name: "redis", fixture: func(t *testing.T) fixture { return redisFixture(t, redistest.Start(t)) }},
	} {
		t.Run(tc.name, func(t *testing.T) { testRestartResumes(t, tc.fixture(t)) })
	}
}

// testRestartResumes: a sender closed after delivering leaves its position in the store; a
// new sender (another holder) on that store sends only what came after it.
func testRestartResumes(t *testing.T, f fixture) {
	rc := newReceiver(t)
	first := writeEvents(t, f.w, repeat("s", 12)...)
	s1 := start(t, f, Options{Holder: "first"}, quickStream(rc.srv.URL))
	rc.waitIDs(t, first)
	deadline := time.Now().Add(waitFor)
	for storedPosition(t, f) != first[len(first)-1] && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	s1.Close()
	pos := storedPosition(t, f)
	if pos != first[len(first)-1] {
		t.Fatalf("stored position %q after delivery, want the last event %q", pos, first[len(first)-1])
	}

	second := writeEvents(t, f.w, repeat("f", 7)...)
	rc2 := newReceiver(t)
	start(t, f, Options{Holder: "second"}, quickStream(rc2.srv.URL))
	if got := rc2.waitIDs(t, second); !slices.Equal(got, second) {
		t.Fatalf("a new sender on the same store sent %v, want only the events after the stored position %v", got, second)
	}
	for _, id := range rc2.ids() {
		if id <= pos {
			t.Fatalf("the new sender resent %s, at or before the stored position %s", id, pos)
		}
	}
}

func TestStreamTypeFilterSendsOnlyItsTypesAndPassesTheRest(t *testing.T) {
	f := memoryFixture(t)
	rc := newReceiver(t)
	ids := writeEvents(t, f.w, "s", "f", "slo", "f", "s", "seacft", "f")
	st := quickStream(rc.srv.URL)
	st.Types = []string{"f", "slo"}
	start(t, f, Options{}, st)
	want := []string{ids[1], ids[2], ids[3], ids[6]}
	if got := rc.waitIDs(t, want); !slices.Equal(got, want) {
		t.Fatalf("received %v, want only the f and slo events %v", got, want)
	}
	deadline := time.Now().Add(waitFor)
	for storedPosition(t, f) != ids[6] && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if pos := storedPosition(t, f); pos != ids[6] {
		t.Fatalf("position %q, want past every event read %q", pos, ids[6])
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, b := range rc.batches {
		for _, ev := range b {
			if ev.Type != "f" && ev.Type != "slo" {
				t.Errorf("received a %q event", ev.Type)
			}
		}
	}
}

// verifyStandardWebhook checks a request as the package doc tells receivers to, written
// apart from Sign: the secret's base64 key, the signed content id.timestamp.body, and the
// 5-minute replay window.
func verifyStandardWebhook(secret string, now time.Time) func(*http.Request, []byte) error {
	return func(r *http.Request, body []byte) error {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
		if err != nil {
			return err
		}
		id, ts := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp")
		sec, err := strconv.ParseInt(ts, 10, 64)
		if err != nil {
			return fmt.Errorf("webhook-timestamp %q: %v", ts, err)
		}
		if d := now.Sub(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
			return fmt.Errorf("webhook-timestamp %s outside the replay window", ts)
		}
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(id + "." + ts + "." + string(body)))
		want := mac.Sum(nil)
		for _, sig := range strings.Fields(r.Header.Get("webhook-signature")) {
			v, b64, _ := strings.Cut(sig, ",")
			got, err := base64.StdEncoding.DecodeString(b64)
			if v == "v1" && err == nil && hmac.Equal(got, want) {
				return nil
			}
		}
		return fmt.Errorf("no valid signature in %q", r.Header.Get("webhook-signature"))
	}
}

func TestStreamRequestsAuthenticate(t *testing.T) {
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	tests := []struct {
		name   string
		stream func(*Stream)
		verify func(r *http.Request, body []byte) error
	}{
		{
			name:   "an HMAC-signed request verifies as a Standard Webhooks signature",
			stream: func(s *Stream) { s.BearerToken, s.HMACKey = "", key },
			verify: verifyStandardWebhook(secret, time.Now()),
		},
		{
			name:   "a bearer token is sent in Authorization",
			stream: func(s *Stream) { s.BearerToken = "stream-token" },
			verify: func(r *http.Request, body []byte) error {
				if got := r.Header.Get("Authorization"); got != "Bearer stream-token" {
					return fmt.Errorf("Authorization %q", got)
				}
				if r.Header.Get("webhook-signature") != "" {
					return fmt.Errorf("a signature without an HMAC key")
				}
				return nil
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := memoryFixture(t)
			rc := newReceiver(t)
			rc.verify = tc.verify
			st := quickStream(rc.srv.URL)
			tc.stream(&st)
			want := writeEvents(t, f.w, "s", "f", "s")
			start(t, f, Options{}, st)
			if got := rc.waitIDs(t, want); !slices.Equal(got, want) {
				t.Fatalf("received %v, want %v", got, want)
			}
		})
	}
}

func TestSignIsRefusedForAnotherBodyOrKey(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	sig := Sign(key, "id1", 1700000000, []byte(`[{"log_id":"1"}]`))
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.Header.Set("webhook-id", "id1")
	r.Header.Set("webhook-timestamp", "1700000000")
	r.Header.Set("webhook-signature", sig)
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
	at := time.Unix(1700000000, 0)
	if err := verifyStandardWebhook(secret, at)(r, []byte(`[{"log_id":"1"}]`)); err != nil {
		t.Fatalf("the signed body: %v", err)
	}
	if err := verifyStandardWebhook(secret, at)(r, []byte(`[{"log_id":"2"}]`)); err == nil {
		t.Error("another body verified")
	}
	other := "whsec_" + base64.StdEncoding.EncodeToString([]byte("another key of thirty-two bytes!"))
	if err := verifyStandardWebhook(other, at)(r, []byte(`[{"log_id":"1"}]`)); err == nil {
		t.Error("another key verified")
	}
	if err := verifyStandardWebhook(secret, at.Add(6*time.Minute))(r, []byte(`[{"log_id":"1"}]`)); err == nil {
		t.Error("a timestamp outside the replay window verified")
	}
}

func TestStreamThatIsStuckNeverHoldsUpEventWrites(t *testing.T) {
	f := memoryFixture(t)
	rc := newReceiver(t)
	rc.setBlock() // every request hangs until the end of the test
	st := quickStream(rc.srv.URL)
	st.Timeout = time.Hour
	start(t, f, Options{}, st)
	writeEvents(t, f.w, "s")
	deadline := time.Now().Add(waitFor)
	for rc.requestCount() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if rc.requestCount() != 1 {
		t.Fatalf("%d requests, want the stream's one attempt in flight", rc.requestCount())
	}
	// Logins write their events while the stream's request hangs: every write returns and
	// is stored, and none of them makes a request of its own.
	ids := writeEvents(t, f.w, repeat("s", 200)...)
	for _, id := range []string{ids[0], ids[199]} {
		if _, err := f.w.Get(context.Background(), id); err != nil {
			t.Fatalf("event %s not stored: %v", id, err)
		}
	}
	if n := rc.requestCount(); n != 1 {
		t.Fatalf("%d requests after 200 writes, want still the one attempt in flight", n)
	}
}

func TestTwoSendersOnOneRedisTakeTurnsAndLoseNothing(t *testing.T) {
	addr := redistest.Start(t)
	fa, fb := redisFixture(t, addr), redisFixture(t, addr)
	rc := newReceiver(t)
	ta := &countingTransport{base: http.DefaultTransport}
	tb := &countingTransport{base: http.DefaultTransport}
	o := Options{LeaseTTL: 6 * time.Second}
	stA, stB := quickStream(rc.srv.URL), quickStream(rc.srv.URL)
	stA.HTTP, stB.HTTP = &http.Client{Transport: ta}, &http.Client{Transport: tb}
	oA, oB := o, o
	oA.Holder, oB.Holder = "replica-a", "replica-b"
	a := start(t, fa, oA, stA)
	b := start(t, fb, oB, stB)

	want := writeEvents(t, fa.w, repeat("s", 15)...)
	want = append(want, writeEvents(t, fb.w, repeat("f", 15)...)...)
	slices.Sort(want)
	rc.waitIDs(t, want)
	if ta.n.Load() > 0 && tb.n.Load() > 0 {
		t.Fatalf("both replicas sent (%d and %d requests), want only the lease holder", ta.n.Load(), tb.n.Load())
	}
	holder := a
	if tb.n.Load() > 0 {
		holder = b
	}

	// The sending replica stops: the other takes over from the stored position.
	holder.Close()
	more := writeEvents(t, fa.w, repeat("slo", 6)...)
	all := append(slices.Clone(want), more...)
	slices.Sort(all)
	got := rc.waitIDs(t, all)
	slices.Sort(got)
	if !slices.Equal(got, all) {
		t.Fatalf("deduplicated events %d, want all %d", len(got), len(all))
	}
	if ta.n.Load() == 0 || tb.n.Load() == 0 {
		t.Fatalf("requests %d and %d: the second replica did not take over", ta.n.Load(), tb.n.Load())
	}
}

// gauge returns the value of the single series of a gauge in reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	return metricValue(t, reg, name, "", "")
}

func counter(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	return metricValue(t, reg, name, label, value)
}

func metricValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					match = true
				}
			}
			if !match {
				continue
			}
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s{%s=%q}", name, label, value)
	return 0
}

// cutCursors fails every lease call of one holder once cut: its renewals stop reaching the
// store, as when a replica is cut off from it.
type cutCursors struct {
	sessions.LogCursors
	holder string
	cut    atomic.Bool
}

func (c *cutCursors) LeaseLogCursor(ctx context.Context, name, holder string, ttl time.Duration) (string, error) {
	if holder == c.holder && c.cut.Load() {
		return "", fmt.Errorf("cut off: %w", sessions.ErrUnavailable)
	}
	return c.LogCursors.LeaseLogCursor(ctx, name, holder, ttl)
}

func TestSenderThatCannotRenewItsLeaseStopsAndAnotherTakesOver(t *testing.T) {
	f := memoryFixture(t)
	rc := newReceiver(t)
	cut := &cutCursors{LogCursors: f.store.(sessions.LogCursors), holder: "replica-a"}
	ta := &countingTransport{base: http.DefaultTransport}
	tb := &countingTransport{base: http.DefaultTransport}
	stA, stB := quickStream(rc.srv.URL), quickStream(rc.srv.URL)
	stA.HTTP, stB.HTTP = &http.Client{Transport: ta}, &http.Client{Transport: tb}
	// replica-a starts no attempt past two thirds of the TTL after its last renewal, and
	// replica-b takes the lease only once all of it has lapsed: the third between them (1 s)
	// is what the last check below leaves a descheduled replica-a between its check of the
	// lease and its request.
	newStreams := func(holder string, st Stream) *Streams {
		s, err := New(Options{Events: f.w, Cursors: cut, Holder: holder, LeaseTTL: 3 * time.Second, Poll: 20 * time.Millisecond}, st)
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		t.Cleanup(s.Close)
		return s
	}
	newStreams("replica-a", stA)
	first := writeEvents(t, f.w, repeat("s", 5)...)
	rc.waitIDs(t, first)
	if ta.n.Load() == 0 {
		t.Fatal("replica-a did not send")
	}
	newStreams("replica-b", stB)
	cut.cut.Store(true)
	deadline := time.Now().Add(waitFor)
	for tb.n.Load() == 0 && time.Now().Before(deadline) {
		writeEvents(t, f.w, "f")
		time.Sleep(50 * time.Millisecond)
	}
	if tb.n.Load() == 0 {
		t.Fatal("replica-b never took over")
	}
	sentByA := ta.n.Load()
	more := writeEvents(t, f.w, repeat("slo", 5)...)
	got := rc.waitIDs(t, append(slices.Clone(first), more...))
	for _, id := range append(slices.Clone(first), more...) {
		if !slices.Contains(got, id) {
			t.Fatalf("event %s never delivered", id)
		}
	}
	if n := ta.n.Load(); n != sentByA {
		t.Fatalf("replica-a sent %d requests after replica-b took over, want none", n-sentByA)
	}
}

func TestStreamResendsABatchWhoseAnswerFailedAndTheLogIDsDeduplicateIt(t *testing.T) {
	f := memoryFixture(t)
	var mu sync.Mutex
	var raw []string
	answered := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var batch []logs.Event
		if err := json.NewDecoder(r.Body).Decode(&batch); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, ev := range batch {
			raw = append(raw, ev.LogID) // kept, as a receiver that fails after storing would
		}
		if answered++; answered == 1 {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	t.Cleanup(srv.Close)
	want := writeEvents(t, f.w, repeat("s", 4)...)
	start(t, f, Options{}, quickStream(srv.URL))
	deadline := time.Now().Add(waitFor)
	for {
		mu.Lock()
		done := len(raw) >= 2*len(want)
		mu.Unlock()
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(raw) != 2*len(want) {
		t.Fatalf("received %d events, want the batch twice (%d)", len(raw), 2*len(want))
	}
	if got := unique(raw); !slices.Equal(got, want) {
		t.Fatalf("deduplicated by log_id: %v, want %v", got, want)
	}
}

// An event that reaches the store below what the stream has already read (its log_id made
// by a replica whose clock is 2.5 s behind, or a write that took that long) is still sent,
// found by the re-read of the late window, and counted as late; the stored position stays
// behind the window, so a restart would send it too.
func TestStreamSendsAnEventWrittenBelowWhatItHadRead(t *testing.T) {
	for _, tc := range []struct {
		name string
		// fixtures returns the stream's replica and the one whose clock is behind.
		fixtures func(t *testing.T) (stream, skewed fixture)
	}{
		{name: "memory", fixtures: func(t *testing.T) (fixture, fixture) { f := memoryFixture(t); return f, f }},
		{name: "redis", fixtures: func(t *testing.T) (fixture, fixture) {
			addr := redistest.Start(t)
			return redisFixture(t, addr), redisFixture(t, addr)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, fk := tc.fixtures(t)
			rc := newReceiver(t)
			reg := prometheus.NewRegistry()
			st := quickStream(rc.srv.URL)
			st.LateWindow = 30 * time.Second
			start(t, fs, Options{Metrics: reg}, st)

			first := writeEvents(t, fs.w, "s")
			rc.waitIDs(t, first) // the stream's read has passed first

			lateID := logs.NewLogID(time.Now().Add(-2500 * time.Millisecond))
			if lateID >= first[0] {
				t.Fatalf("late id %s not below the event read %s", lateID, first[0])
			}
			body, err := json.Marshal(logs.Event{Type: "f", ClientID: "app", Connection: "corp", UserID: "late"})
			if err != nil {
				t.Fatal(err)
			}
			if err := fk.store.AppendLog(t.Context(), sessions.LogAudit, lateID, body, 1000); err != nil {
				t.Fatal(err)
			}
			last := writeEvents(t, fs.w, "s")

			want := []string{first[0], lateID, last[0]}
			if got := rc.waitIDs(t, want); len(got) != len(want) || !slices.Contains(got, lateID) {
				t.Fatalf("received %v, want %v: the late event %s too", got, want, lateID)
			}
			if n := counter(t, reg, "dpop_broker_log_stream_late_events_total", "stream", "siem"); n != 1 {
				t.Errorf("late events counted %v, want 1", n)
			}
			if pos := storedPosition(t, fs); pos >= lateID {
				t.Errorf("stored position %s passed the late event %s within the late window", pos, lateID)
			}
		})
	}
}

// The late window remembers the ids it read above its floor, each once, in order, and
// forgets those at or below a raised floor.
func TestReadWindowRemembersIDsAboveItsFloor(t *testing.T) {
	id := func(n int) string { return fmt.Sprintf("%056d", n) }
	for _, tc := range []struct {
		name      string
		floor     int
		add       []int
		raise     int // 0: not raised
		wantIDs   []int
		belowOf   int
		wantBelow string
	}{
		{name: "ids in order", floor: 1, add: []int{2, 3, 4}, wantIDs: []int{2, 3, 4}, belowOf: 4, wantBelow: id(3)},
		{name: "a late id is inserted in order", floor: 1, add: []int{2, 5, 3}, wantIDs: []int{2, 3, 5}, belowOf: 5, wantBelow: id(3)},
		{name: "an id twice is kept once", floor: 1, add: []int{2, 2, 3}, wantIDs: []int{2, 3}, belowOf: 9, wantBelow: id(3)},
		{name: "ids at or below the floor are ignored", floor: 3, add: []int{2, 3, 4}, wantIDs: []int{4}, belowOf: 4},
		{name: "raising the floor forgets the ids below", floor: 1, add: []int{2, 3, 4, 5}, raise: 3, wantIDs: []int{4, 5}, belowOf: 4},
		{name: "raising to an id not read", floor: 1, add: []int{2, 4, 6}, raise: 5, wantIDs: []int{6}, belowOf: 7, wantBelow: id(6)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &readWindow{floor: id(tc.floor)}
			for _, n := range tc.add {
				w.add(id(n))
			}
			if tc.raise != 0 {
				w.raise(id(tc.raise))
			}
			var want []string
			for _, n := range tc.wantIDs {
				want = append(want, id(n))
			}
			if !slices.Equal(w.ids, want) {
				t.Errorf("ids %v, want %v", w.ids, want)
			}
			for _, n := range tc.wantIDs {
				if !w.has(id(n)) {
					t.Errorf("has(%d) = false", n)
				}
			}
			if got := w.below(id(tc.belowOf)); got != tc.wantBelow {
				t.Errorf("below(%d) = %q, want %q", tc.belowOf, got, tc.wantBelow)
			}
		})
	}
}

// The window holds at most maxWindowIDs: past it the oldest are forgotten and the floor
// rises to the last of them.
func TestReadWindowIsBounded(t *testing.T) {
	w := &readWindow{floor: fmt.Sprintf("%056d", 0)}
	for n := 1; n <= maxWindowIDs+10; n++ {
		w.add(fmt.Sprintf("%056d", n))
	}
	if len(w.ids) != maxWindowIDs {
		t.Fatalf("window holds %d ids, want %d", len(w.ids), maxWindowIDs)
	}
	if want := fmt.Sprintf("%056d", 10); w.floor != want {
		t.Errorf("floor %s, want %s", w.floor, want)
	}
	for i, id := range w.ids {
		if want := fmt.Sprintf("%056d", i+11); id != want {
			t.Fatalf("ids[%d] = %s, want %s: the newest ids, in order", i, id, want)
		}
	}
	for _, n := range []int{1, 10} {
		if id := fmt.Sprintf("%056d", n); w.has(id) {
			t.Errorf("has(%d) after it was forgotten", n)
		}
	}
	w.raise(fmt.Sprintf("%056d", maxWindowIDs))
	if want := []string{fmt.Sprintf("%056d", maxWindowIDs+1)}; !slices.Equal(w.ids[:1], want) || len(w.ids) != 10 {
		t.Errorf("after raising the floor to %d: %d ids from %v, want 10 from %v", maxWindowIDs, len(w.ids), w.ids[:1], want)
	}
}

// BenchmarkReadWindowAddPastItsBound is a window at maxWindowIDs reading on: each add forgets
// the oldest id (a stream reading faster than maxWindowIDs per LateWindow).
func BenchmarkReadWindowAddPastItsBound(b *testing.B) {
	ids := make([]string, 2*maxWindowIDs)
	for i := range ids {
		ids[i] = fmt.Sprintf("%056d", i+1)
	}
	for b.Loop() {
		w := &readWindow{floor: fmt.Sprintf("%056d", 0)}
		for _, id := range ids {
			w.add(id)
		}
	}
}

// A replica taking a stream over starts at the stored position, up to the late window behind
// what the previous holder sent: it sends those events again (receivers drop them by log_id)
// and loses none, the late one included.
func TestStreamTakenOverWithinTheLateWindowSendsAgainAndLosesNothing(t *testing.T) {
	f := memoryFixture(t)
	rc := newReceiver(t)
	st := quickStream(rc.srv.URL)
	st.LateWindow = 30 * time.Second
	first := start(t, f, Options{Holder: "first"}, st)
	sent := writeEvents(t, f.w, repeat("s", 5)...)
	rc.waitIDs(t, sent)
	first.Close()
	if pos := storedPosition(t, f); pos >= sent[0] {
		t.Fatalf("stored position %s at or past %s, sent less than the late window ago", pos, sent[0])
	}

	lateID := logs.NewLogID(time.Now().Add(-2500 * time.Millisecond)) // written while no one sends
	body, err := json.Marshal(logs.Event{Type: "f", ClientID: "app", Connection: "corp", UserID: "late"})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store.AppendLog(t.Context(), sessions.LogAudit, lateID, body, 1000); err != nil {
		t.Fatal(err)
	}
	rc2 := newReceiver(t)
	st.URL = rc2.srv.URL
	start(t, f, Options{Holder: "second"}, st)
	want := append(slices.Clone(sent), lateID)
	slices.Sort(want)
	got := rc2.waitIDs(t, want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("the new holder sent %v, want the window's events again and the late one %v", got, want)
	}
}

// downCursors is a store that is unreachable while down is set: every cursor call fails
// with ErrUnavailable.
type downCursors struct {
	sessions.LogCursors
	down  atomic.Bool
	fails atomic.Int64
}

func (c *downCursors) err() error {
	c.fails.Add(1)
	return fmt.Errorf("dial tcp: connection refused: %w", sessions.ErrUnavailable)
}

func (c *downCursors) LeaseLogCursor(ctx context.Context, name, holder string, ttl time.Duration) (string, error) {
	if c.down.Load() {
		return "", c.err()
	}
	return c.LogCursors.LeaseLogCursor(ctx, name, holder, ttl)
}

func (c *downCursors) LogCursor(ctx context.Context, name string) (string, string, error) {
	if c.down.Load() {
		return "", "", c.err()
	}
	return c.LogCursors.LogCursor(ctx, name)
}

func (c *downCursors) CountLogsAfter(ctx context.Context, after string) (int64, error) {
	if c.down.Load() {
		return 0, c.err()
	}
	return c.LogCursors.CountLogsAfter(ctx, after)
}

// TestStreamAddsNoWarningsToAStoreOutage: the stream's store failures carry the store's error,
// so the process log's outage handler writes them at debug level (a store outage is the
// store's two lines, not a warning per stream attempt); once the store answers, the stream
// delivers again.
func TestStreamAddsNoWarningsToAStoreOutage(t *testing.T) {
	f := memoryFixture(t)
	rc := newReceiver(t)
	var buf logtest.Buffer
	logger := slog.New(logs.NewStoreOutageHandler(slog.NewJSONHandler(&buf, nil)))
	cur := &downCursors{LogCursors: f.store.(sessions.LogCursors)}
	cur.down.Store(true)
	s, err := New(Options{Events: f.w, Cursors: cur, Logger: logger, LeaseTTL: 300 * time.Millisecond, Poll: 20 * time.Millisecond}, quickStream(rc.srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(s.Close)
	deadline := time.Now().Add(waitFor)
	for cur.fails.Load() < 5 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if cur.fails.Load() < 5 {
		t.Fatalf("the stream tried the store %d times during the outage", cur.fails.Load())
	}
	cur.down.Store(false)
	ids := writeEvents(t, f.w, "s", "f")
	rc.waitIDs(t, ids)
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if strings.Contains(line, `"level":"WARN"`) && strings.Contains(line, "connection refused") {
			t.Errorf("a store failure logged as a warning: %s", line)
		}
	}
}
