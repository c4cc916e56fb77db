package broker

import (
	"maps"
	"math"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/sessions/redistest"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

func TestLoginTallyCountsOutcomesPerResolvedConnection(t *testing.T) {
	conn := func(ev logs.Event) logs.Event {
		ev.Connection, ev.ConnectionID = "corp", "con_corp"
		return ev
	}
	for _, tc := range []struct {
		name string
		ev   logs.Event
		want map[string]int64
	}{
		{name: "DPoP-bound success with a nonce retry and its exchange latency",
			ev: conn(logs.Event{Type: logs.TypeSuccessLogin, Details: map[string]any{"dpop_signing_alg": "ES256",
				"dpop_returned_from_upstream": true, "dpop_nonce_retries": 1, "code_exchange_ms": int64(40)}}),
			want: map[string]int64{"login:s": 1, "retries": 1, "c:corp:s": 1, "c:corp:r": 1, "c:corp:tok": 1, "c:corp:dpop": 1, "c:corp:l1": 1}},
		{name: "Bearer answer with DPoP configured is a downgrade",
			ev: conn(logs.Event{Type: logs.TypeSuccessLogin, Details: map[string]any{"dpop_signing_alg": "ES256",
				"dpop_returned_from_upstream": false, "dpop_nonce_retries": 0, "code_exchange_ms": int64(20000)}}),
			want: map[string]int64{"login:s": 1, "c:corp:s": 1, "c:corp:tok": 1, "c:corp:down": 1, "c:corp:l9": 1}},
		{name: "Bearer answer without DPoP configured is no downgrade",
			ev:   conn(logs.Event{Type: logs.TypeSuccessLogin, Details: map[string]any{"dpop_returned_from_upstream": false}}),
			want: map[string]int64{"login:s": 1, "c:corp:s": 1, "c:corp:tok": 1}},
		{name: "failure counted by its code and connection",
			ev:   conn(logs.Event{Type: logs.TypeFailedLogin, Details: map[string]any{"error": "dpop_not_supported"}}),
			want: map[string]int64{"login:f": 1, "err:dpop_not_supported": 1, "c:corp:f": 1}},
		{name: "an upstream requiring DPoP of a connection with DPoP off is counted for that connection",
			ev:   conn(logs.Event{Type: logs.TypeFailedLogin, Details: map[string]any{"error": "upstream_requires_dpop"}}),
			want: map[string]int64{"login:f": 1, "err:upstream_requires_dpop": 1, "c:corp:f": 1, "c:corp:nodpop": 1}},
		{name: "an upstream's free-form error code is other",
			ev:   conn(logs.Event{Type: logs.TypeFailedLogin, Details: map[string]any{"error": "made_up_by_upstream"}}),
			want: map[string]int64{"login:f": 1, "err:other": 1, "c:corp:f": 1}},
		{name: "failure before a connection was resolved has no connection counters",
			ev:   logs.Event{Type: logs.TypeFailedLogin, Connection: "requested", Details: map[string]any{"error": "invalid_state"}},
			want: map[string]int64{"login:f": 1, "err:invalid_state": 1}},
		{name: "a code exchange is not a login", ev: conn(logs.Event{Type: logs.TypeSuccessExchange, Details: map[string]any{}})},
		{name: "silent authentication is not an upstream login", ev: conn(logs.Event{Type: logs.TypeFailedSilentAuth, Details: map[string]any{"error": "login_required"}})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := loginTally(&tc.ev); !maps.Equal(got, tc.want) {
				t.Errorf("loginTally = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestLatencyQuantilesInterpolateWithinBuckets(t *testing.T) {
	for _, tc := range []struct {
		name    string
		buckets map[int]int64
		q       float64
		want    float64
	}{
		{name: "no exchanges", q: 0.5, want: -1},
		{name: "all in 25-50 ms: median halfway", buckets: map[int]int64{1: 10}, q: 0.5, want: 37.5},
		{name: "p95 in the slow tail", buckets: map[int]int64{0: 90, 6: 10}, q: 0.95, want: 1750},
		{name: "beyond the last bound answers it", buckets: map[int]int64{9: 4}, q: 0.95, want: 10000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c [len(latencyBounds) + 1]int64
			for i, n := range tc.buckets {
				c[i] = n
			}
			if got := latencyQuantile(c[:], tc.q); math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("quantile %.2f = %v, want %v", tc.q, got, tc.want)
			}
		})
	}
}

// TestOverviewFlagsAConnectionWhoseFailuresOrDowngradesJump: over an hour of minute buckets,
// a connection that failed rarely and then mostly in the last ten minutes is flagged and
// listed first; one whose upstream started answering Bearer is flagged for downgrades; a
// steady one is not.
func TestOverviewFlagsAConnectionWhoseFailuresOrDowngradesJump(t *testing.T) {
	sp, _ := spanNamed("hour")
	from := time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
	var bs []sessions.TallyBucket
	for i := range 60 {
		c := map[string]int64{"login:s": 3, "c:steady:s": 1, "c:steady:tok": 1, "c:steady:dpop": 1,
			"c:breaking:s": 1, "c:bearer:s": 1, "c:bearer:tok": 1}
		if i >= 52 {
			c["c:breaking:f"], c["login:f"], c["err:upstream_error"] = 2, 2, 2
			c["c:bearer:down"] = 1
		} else {
			c["c:bearer:dpop"] = 1
		}
		if i == 10 {
			c["c:breaking:f"], c["login:f"], c["err:invalid_state"] = 1, 1, 1
		}
		bs = append(bs, sessions.TallyBucket{Start: from.Add(time.Duration(i) * time.Minute), Counts: c})
	}
	o := summarize(sp, from, from.Add(time.Hour), bs)
	if len(o.Points) != 60 || o.Success != 180 || o.Failure != 17 {
		t.Fatalf("points %d, success %d, failure %d; want 60, 180, 17", len(o.Points), o.Success, o.Failure)
	}
	if len(o.Errors) != 2 || o.Errors[0] != (codeCount{"upstream_error", 16}) || o.Errors[1] != (codeCount{"invalid_state", 1}) {
		t.Errorf("errors = %v", o.Errors)
	}
	got := map[string][]string{}
	for _, c := range o.Connections {
		got[c.Name] = c.Jumps
	}
	if len(got["breaking"]) != 1 || got["breaking"][0] != "failures jumped" {
		t.Errorf("breaking: %v", got["breaking"])
	}
	if len(got["bearer"]) != 1 || got["bearer"][0] != "Bearer downgrades jumped" {
		t.Errorf("bearer: %v", got["bearer"])
	}
	if len(got["steady"]) != 0 {
		t.Errorf("steady flagged: %v", got["steady"])
	}
	if o.Connections[2].Name != "steady" {
		t.Errorf("order: %s, %s, %s; flagged connections first", o.Connections[0].Name, o.Connections[1].Name, o.Connections[2].Name)
	}
	if s := o.Connections[2]; s.SuccessRate() != 1 || s.DPoPShare() != 1 {
		t.Errorf("steady: success rate %v, DPoP share %v", s.SuccessRate(), s.DPoPShare())
	}
}

// TestOverviewCountsTheLoginsJustMade: three logins through three upstreams sharing one store
// (a DPoP-bound one with a nonce retry, one answering Bearer, one refusing with
// access_denied) show up in the overview of the last hour, day and week, on the memory
// store, Redis, and Redis Cluster (where the login's records and event are two writes and the
// counters ride in the event's).
func TestOverviewCountsTheLoginsJustMade(t *testing.T) {
	for _, tc := range []struct {
		name  string
		store func(t *testing.T) sessions.Store
	}{
		{name: "memory", store: func(*testing.T) sessions.Store { return sessions.NewMemory() }},
		{name: "Redis", store: func(t *testing.T) sessions.Store { return redisStore(t, redistest.Start(t)) }},
		{name: "Redis Cluster", store: func(t *testing.T) sessions.Store { return clusterStore(t, redistest.StartCluster(t)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.store(t)
			var h *harness
			for _, up := range []demoidp.Options{
				{DPoPAlgs: []string{"ES256"}, AnswerBearer: true},
				{DPoPAlgs: []string{"ES256"}, AuthorizeError: "access_denied"},
				dpopUp,
			} {
				h = newHarness(t, harnessOpts{up: up, store: st, eventStore: st})
				resp, _ := get(t, h.browser(), h.authorizeURL(nil))
				_ = resp.Body.Close()
			}
			for _, name := range []string{"hour", "day", "week"} {
				sp, _ := spanNamed(name)
				o, err := h.broker.overview(t.Context(), sp, h.clock.Now())
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if o.Success != 2 || o.Failure != 1 || o.Retries != 1 || len(o.Errors) != 1 || o.Errors[0] != (codeCount{"access_denied", 1}) {
					t.Fatalf("%s: success %d, failure %d, retries %d, errors %v", name, o.Success, o.Failure, o.Retries, o.Errors)
				}
				if len(o.Connections) != 1 {
					t.Fatalf("%s: connections %+v", name, o.Connections)
				}
				c := o.Connections[0]
				if c.Name != "corp" || c.Success != 2 || c.Failure != 1 || c.Tokens != 2 || c.DPoP != 1 || c.Downgrades != 1 || c.Retries != 1 || c.P50() < 0 {
					t.Errorf("%s: corp %+v", name, c)
				}
				if r := c.SuccessRate(); math.Abs(r-2.0/3) > 1e-9 {
					t.Errorf("%s: success rate %v", name, r)
				}
			}
		})
	}
}

// clusterStore opens a client on a private Redis Cluster.
func clusterStore(t *testing.T, addrs []string) sessions.Store {
	t.Helper()
	st, err := sessions.NewRedis(sessions.RedisConfig{Addrs: addrs, Prefix: "cluster-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// TestEveryTroubleshootingCodeIsCountedUnderItsName: each details.error of the
// troubleshooting entries (the README's table) is a failure code of its own in the overview's
// counters and in dpop_broker_logins_total, not "other"; a code an upstream made up is other.
func TestEveryTroubleshootingCodeIsCountedUnderItsName(t *testing.T) {
	var n int
	for _, e := range logs.TroubleshootingEntries() {
		for _, code := range e.Codes {
			n++
			if got := metricCode(code); got != code {
				t.Errorf("%s is counted as %q", code, got)
			}
		}
	}
	if n < 20 {
		t.Fatalf("only %d troubleshooting codes", n)
	}
	if got := metricCode("made_up_by_upstream"); got != "other" {
		t.Errorf("an unknown code is counted as %q", got)
	}
}

func TestExchangeMillisRoundsUp(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want int64
	}{
		{d: 300 * time.Microsecond, want: 1},
		{d: time.Millisecond, want: 1},
		{d: 1001 * time.Microsecond, want: 2},
		{d: 41 * time.Millisecond, want: 41},
	} {
		if got := exchangeMillis(tc.d); got != tc.want {
			t.Errorf("exchangeMillis(%v) = %d, want %d", tc.d, got, tc.want)
		}
	}
}
