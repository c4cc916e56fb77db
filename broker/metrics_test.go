package broker

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dpop-broker/dpop-broker/buildinfo"
	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// scrape fetches GET /metrics and returns the exposition text.
func (h *harness) scrape() string {
	h.t.Helper()
	resp, body := get(h.t, http.DefaultClient, h.srv.URL+"/metrics")
	if resp.StatusCode != http.StatusOK {
		h.t.Fatalf("GET /metrics: %d %s", resp.StatusCode, body)
	}
	return body
}

// wantMetrics checks that /metrics has every one of the lines.
func (h *harness) wantMetrics(t *testing.T, lines ...string) {
	t.Helper()
	text := h.scrape()
	for _, want := range lines {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestMetrics(t *testing.T) {
	h := newHarness(t, harnessOpts{
		up: demoidp.Options{DPoPAlgs: []string{"ES256"}, RequireDPoP: true, RequireNonce: true},
		mutate: func(c *config.Config) {
			// "rsa" asks RS256, which the upstream does not offer: a dpop_alg_mismatch failure.
			c.Connections = append(c.Connections, config.Connection{Name: "rsa", Strategy: "oidc", Options: config.ConnectionOptions{
				Issuer: c.Connections[0].Options.Issuer, ClientID: upClientID, ClientSecret: upSecret, DPoPSigningAlg: "RS256",
			}})
			c.Clients[0].Connections = append(c.Clients[0].Connections, "rsa")
		},
	})
	// One successful login (with one use_dpop_nonce retry) and its code exchange.
	resp, _ := get(t, h.browser(), h.authorizeURL(func(v url.Values) { v.Set("connection", "corp") }))
	q := appResult(t, resp, h.app.URL+"/cb")
	if q.Get("code") == "" {
		t.Fatalf("login failed: %v", q)
	}
	if st, body, _ := h.token(h.codeForm(q.Get("code")), true); st != http.StatusOK {
		t.Fatalf("token: %d %v", st, body)
	}
	// One failed login: the connection's DPoP alg is not offered upstream (RFC 9449 §5.1).
	resp, _ = get(t, h.browser(), h.authorizeURL(func(v url.Values) { v.Set("connection", "rsa") }))
	if e := appResult(t, resp, h.app.URL+"/cb").Get("error"); e == "" {
		t.Fatal("login through connection rsa did not fail")
	}
	// One failed login without a connection: unknown state at the callback.
	_, _ = get(t, h.browser(), h.srv.URL+"/login/callback?state=unknown&code=x")
	// A token request with an unknown grant type (bounded label "other").
	_, _, _ = h.token(url.Values{"grant_type": {"password"}}, true)

	text := h.scrape()
	for _, want := range []string{
		`dpop_broker_logins_total{connection="corp",error="",result="success"} 1`,
		`dpop_broker_logins_total{connection="rsa",error="dpop_alg_mismatch",result="failure"} 1`,
		`dpop_broker_logins_total{connection="",error="invalid_state",result="failure"} 1`,
		`dpop_broker_upstream_exchange_seconds_count{connection="corp"} 1`,
		`dpop_broker_upstream_nonce_retries_total{connection="corp"} 1`,
		`dpop_broker_upstream_token_type_total{bound="true",connection="corp"} 1`,
		`dpop_broker_token_requests_total{bound="false",grant="authorization_code",result="success"} 1`,
		`dpop_broker_token_requests_total{bound="false",grant="other",result="failure"} 1`,
		`dpop_broker_http_requests_total{code="200",method="POST",route="POST /oauth/token"} 1`,
		`dpop_broker_http_requests_total{code="400",method="POST",route="POST /oauth/token"} 1`,
		`dpop_broker_http_request_duration_seconds_count{route="GET /login/callback"} 2`,
		`dpop_broker_events_total{type="s"} 1`,
		`dpop_broker_events_total{type="f"} 2`,
		`dpop_broker_events_total{type="seacft"} 1`,
		`dpop_broker_events_total{type="feacft"} 1`,
		"go_goroutines ",
		"process_start_time_seconds ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(text, "dpop_broker_store_errors_total{") {
		t.Errorf("store errors counted on a healthy store:\n%s", grep(text, "store_errors"))
	}
}

// /metrics names the running build in dpop_broker_build_info (always 1), as `broker version`
// reports it.
func TestMetricsNameTheRunningBuild(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	b := buildinfo.Read()
	h.wantMetrics(t, fmt.Sprintf(`dpop_broker_build_info{build_date=%q,commit=%q,goversion=%q,version=%q} 1`,
		b.Date, b.Commit, b.GoVersion, b.Version))

	for _, tc := range []struct {
		name string
		info buildinfo.Info
		want map[string]string
	}{
		{
			name: "stamped release",
			info: buildinfo.Info{Version: "v1.2.3", Commit: "0123456789abcdef0123456789abcdef01234567", GoVersion: "go1.26.8", Date: "2026-12-01T10:00:00Z"},
			want: map[string]string{"version": "v1.2.3", "commit": "0123456789abcdef0123456789abcdef01234567", "goversion": "go1.26.8", "build_date": "2026-12-01T10:00:00Z"},
		},
		{
			name: "go run",
			info: buildinfo.Info{Version: "(devel)", Commit: buildinfo.Unknown, GoVersion: "go1.26.8", Date: buildinfo.Unknown},
			want: map[string]string{"version": "(devel)", "commit": "unknown", "goversion": "go1.26.8", "build_date": "unknown"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			reg.MustRegister(buildInfoGauge(tc.info))
			mfs, err := reg.Gather()
			if err != nil || len(mfs) != 1 || mfs[0].GetName() != "dpop_broker_build_info" || len(mfs[0].GetMetric()) != 1 {
				t.Fatalf("gathered %v, %v", mfs, err)
			}
			m := mfs[0].GetMetric()[0]
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			if m.GetGauge().GetValue() != 1 || !maps.Equal(got, tc.want) {
				t.Errorf("value %v labels %v, want 1 %v", m.GetGauge().GetValue(), got, tc.want)
			}
		})
	}
}

func TestMetricCodeBounded(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{in: "use_dpop_nonce", want: "use_dpop_nonce"},
		{in: "dpop_not_supported", want: "dpop_not_supported"},
		{in: "access_denied", want: "access_denied"},
		{in: "x_custom_upstream_error_1234", want: "other"},
		{in: "", want: "other"},
	} {
		if got := metricCode(tc.in); got != tc.want {
			t.Errorf("metricCode(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// pingDown is a store that cannot be reached (every Ping fails).
type pingDown struct{ sessions.Store }

func (pingDown) Ping(context.Context) error { return fmt.Errorf("dial: %w", sessions.ErrUnavailable) }

func TestHealthAndReadiness(t *testing.T) {
	for _, tc := range []struct {
		name      string
		store     sessions.Store
		readyz    int
		storeErrs string
	}{
		{name: "store reachable", store: sessions.NewMemory(), readyz: http.StatusOK, storeErrs: ""},
		{name: "store down", store: pingDown{Store: sessions.NewMemory()}, readyz: http.StatusServiceUnavailable, storeErrs: `dpop_broker_store_errors_total{op="ping"} 1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{store: tc.store})
			if resp, body := get(t, http.DefaultClient, h.srv.URL+"/healthz"); resp.StatusCode != http.StatusOK {
				t.Errorf("/healthz = %d %s, want 200 (process up)", resp.StatusCode, body)
			}
			if resp, body := get(t, http.DefaultClient, h.srv.URL+"/readyz"); resp.StatusCode != tc.readyz {
				t.Errorf("/readyz = %d %s, want %d", resp.StatusCode, body, tc.readyz)
			}
			if tc.storeErrs != "" && !strings.Contains(h.scrape(), tc.storeErrs) {
				t.Errorf("/metrics lacks %q", tc.storeErrs)
			}
		})
	}
}

// TestMetricsPrivateRegistry: two servers in one process keep separate counters.
func TestMetricsPrivateRegistry(t *testing.T) {
	a := newHarness(t, harnessOpts{up: demoidp.Options{DPoPAlgs: []string{"ES256"}}})
	b := newHarness(t, harnessOpts{up: demoidp.Options{DPoPAlgs: []string{"ES256"}}})
	a.login()
	if !strings.Contains(a.scrape(), `dpop_broker_logins_total{connection="corp",error="",result="success"} 1`) {
		t.Error("server a did not count its login")
	}
	if strings.Contains(b.scrape(), "dpop_broker_logins_total{") {
		t.Error("server b shows server a's login")
	}
}

func grep(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestMeteredStoreKeepsConnections: the metrics wrapper keeps sessions.Connections (the
// management registry needs it) and counts its failures too.
func TestMeteredStoreKeepsConnections(t *testing.T) {
	m := newMetrics()
	st := m.instrumentStore(sessions.NewMemory())
	c, ok := st.(sessions.Connections)
	if !ok {
		t.Fatal("wrapped store lost sessions.Connections")
	}
	ctx := context.Background()
	if err := c.CreateConnection(ctx, "con_1", "a", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateConnection(ctx, "con_1", "a", []byte(`{}`)); err == nil {
		t.Fatal("duplicate create accepted")
	}
	if _, err := st.Get(ctx, sessions.KindCode, "missing"); err == nil {
		t.Fatal("get of a missing record succeeded")
	}
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "dpop_broker_store_errors_total" && len(mf.GetMetric()) > 0 {
			t.Errorf("ErrExists/ErrNotFound counted as store errors: %v", mf)
		}
	}
	if _, ok := m.instrumentStore(pingDown{Store: sessions.NewMemory()}).(sessions.Connections); ok {
		t.Error("a store without Connections gained it")
	}
}
