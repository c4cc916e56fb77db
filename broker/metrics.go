package broker

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dpop-broker/dpop-broker/buildinfo"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/upstream"
)

// metrics are the broker's Prometheus collectors on a registry private to one Server, so
// several servers (tests, replicas in one process) never share or collide on counters.
type metrics struct {
	reg           *prometheus.Registry
	logins        *prometheus.CounterVec
	exchange      *prometheus.HistogramVec
	nonceRetries  *prometheus.CounterVec
	tokenType     *prometheus.CounterVec
	storeErrors   *prometheus.CounterVec
	tokenRequests *prometheus.CounterVec
	events        *prometheus.CounterVec
	eventsDropped *prometheus.CounterVec
	httpRequests  *prometheus.CounterVec
	httpDuration  *prometheus.HistogramVec
	backchannel   *prometheus.CounterVec
	connWatch     *prometheus.CounterVec
	reloads       *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dpop_broker_logins_total",
			Help: "Logins through the broker by result, connection and stable error code (\"\" on success).",
		}, []string{"result", "connection", "error"}),
		exchange: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dpop_broker_upstream_exchange_seconds",
			Help:    "Duration of the back-channel code exchange with the upstream, nonce retries included.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"connection"}),
		nonceRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dpop_broker_upstream_nonce_retries_total",
			Help: "use_dpop_nonce retries during upstream code exchanges.",
		}, []string{"connection"}),
		tokenType: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dpop_broker_upstream_token_type_total",
			Help: "Upstream token responses by whether the upstream answered token_type DPoP (bound) or Bearer.",
		}, []string{"connection", "bound"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dpop_broker_store_errors_total",
			Help: "Session store operations that failed (not-found and already-exists outcomes excluded).",
		}, []string{"op"}),
		tokenRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dpop_broker_token_requests_total",
			Help: "Requests to the broker's /oauth/token by grant, result and whether the access token is DPoP-bound.",
		}, []string{"grant", "result", "bound"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dpop_broker_events_total",
			Help: "Log events the broker produced, by type code (s, f, seacft, slo, flo, srrt, sapi, …), including those dropped by the limits on unauthenticated events.",
		}, []string{"type"}),
		eventsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dpop_broker_events_dropped_total",
			Help: "Log events of the unauthenticated class dropped (neither logged nor stored) by the limits of logs.unauthenticated, by type code and reason (per_ip, global).",
		}, []string{"type", "reason"}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dpop_broker_http_requests_total",
			Help: "HTTP requests by route (the matched pattern, \"unmatched\" otherwise), method and status code.",
		}, []string{"route", "method", "code"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dpop_broker_http_request_duration_seconds",
			Help:    "HTTP request duration by route; a login's callback includes the upstream exchange.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
		}, []string{"route"}),
		backchannel: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dpop_broker_backchannel_logout_total",
			Help: "Back-channel logout deliveries to apps (OpenID Connect Back-Channel Logout 1.0) by result: succeeded (2xx), failed (after its attempts), dropped (never sent: the delivery queue was full or the broker was stopping).",
		}, []string{"result"}),
		connWatch: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dpop_broker_connections_watch_events_total",
			Help: "Events of the store's watch of the connection and client records, by event: change (a write reported through Pub/Sub) and subscribed (the watch subscribed, at start or again after losing its connection: messages may have been lost meanwhile).",
		}, []string{"event"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dpop_broker_config_reloads_total",
			Help: "Reloads of the configuration file (SIGHUP) by result: success (applied) or failure (refused: the running configuration is kept).",
		}, []string{"result"}),
	}
	m.reloads.WithLabelValues(reloadSuccess)
	m.reloads.WithLabelValues(reloadFailure)
	m.reg.MustRegister(m.logins, m.exchange, m.nonceRetries, m.tokenType, m.storeErrors, m.tokenRequests, m.events,
		m.eventsDropped, m.httpRequests, m.httpDuration, m.backchannel, m.connWatch, m.reloads, buildInfoGauge(buildinfo.Read()),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// buildInfoGauge is dpop_broker_build_info: always 1, the build in its labels (the common
// Prometheus idiom for a build, joined onto other series with group_left).
func buildInfoGauge(b buildinfo.Info) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "dpop_broker_build_info",
		Help: "Always 1; the labels name the running build: version, commit, goversion and build_date (the commit's time when the build was not stamped; `broker version` says which).",
		ConstLabels: prometheus.Labels{
			"version": b.Version, "commit": b.Commit, "goversion": b.GoVersion, "build_date": b.Date,
		},
	})
	g.Set(1)
	return g
}

// Metrics returns the server's private Prometheus registry (served at GET /metrics).
func (s *Server) Metrics() *prometheus.Registry { return s.metrics.reg }

// handler serves the registry in the Prometheus exposition format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// instrument counts and times every request by the route the mux matched (r.Pattern, set by
// http.ServeMux on the request it serves), so label values are bounded by the route table.
func (m *metrics) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		m.httpRequests.WithLabelValues(route, metricMethod(r.Method), strconv.Itoa(sw.status)).Inc()
		m.httpDuration.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

// metricMethod bounds the method label.
func metricMethod(method string) string {
	switch method {
	case http.MethodGet, http.MethodPost, http.MethodPatch, http.MethodDelete, http.MethodOptions, http.MethodHead, http.MethodPut:
		return method
	}
	return "other"
}

// statusWriter remembers the response status; Unwrap keeps http.ResponseController working.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// login counts one s or f event (from succeed and recordFailedLogin).
func (m *metrics) login(ev *logs.Event) {
	result, code := "success", ""
	if ev.Type == logs.TypeFailedLogin || ev.Type == logs.TypeFailedSilentAuth {
		result = "failure"
		c, _ := ev.Details["error"].(string)
		code = metricCode(c)
	}
	m.logins.WithLabelValues(result, ev.Connection, code).Inc()
}

// upstream records what one upstream code exchange did; res may be nil or partial.
func (m *metrics) upstream(conn string, res *upstream.Result) {
	if res == nil {
		return
	}
	if res.ExchangeLatency > 0 {
		m.exchange.WithLabelValues(conn).Observe(res.ExchangeLatency.Seconds())
	}
	if res.NonceRetries > 0 {
		m.nonceRetries.WithLabelValues(conn).Add(float64(res.NonceRetries))
	}
	if res.TokenType != "" {
		m.tokenType.WithLabelValues(conn, strconv.FormatBool(res.DPoPBound)).Inc()
	}
}

// tokenRequest counts one /oauth/token outcome.
func (m *metrics) tokenRequest(grant string, ok, bound bool) {
	result := "success"
	if !ok {
		result = "failure"
	}
	m.tokenRequests.WithLabelValues(metricGrant(grant), result, strconv.FormatBool(bound)).Inc()
}

// metricCodes are the details.error codes used as label values (and login counter names,
// logintally.go): every code of the troubleshooting entries (logs/troubleshoot.go, the
// README's table) and the ones below; anything else (an upstream's free-form error parameter)
// is counted as "other" so the label set stays bounded.
var metricCodes = func() map[string]bool {
	m := map[string]bool{
		codeInvalidClient: true, codeInvalidRedirectURI: true, codeInvalidRequest: true,
		codeInvalidState: true, codeInvalidIss: true, codeStoreUnavailable: true, codeCallbackMismatch: true,
		codeStoreFull: true, codeTooManyRequests: true,
		upstream.CodeDPoPNotSupported: true, upstream.CodeDPoPAlgMismatch: true,
		upstream.CodeUseDPoPNonce: true, upstream.CodeInvalidDPoPProof: true,
		upstream.CodeUpstreamError: true, upstream.CodeIDTokenInvalid: true,
		upstream.CodeDiscovery: true, upstream.CodeUserinfo: true, upstream.CodeIssMismatch: true,
		upstream.CodeClaimsTooLarge: true,
		// OAuth 2.0 / OIDC authorization-response errors an upstream may return (RFC 6749 §4.1.2.1, OIDC Core §3.1.2.6).
		"access_denied": true, "unauthorized_client": true, "unsupported_response_type": true,
		"invalid_scope": true, "server_error": true, "temporarily_unavailable": true,
		"interaction_required": true, "login_required": true, "account_selection_required": true,
		"consent_required": true, "invalid_request_uri": true, "invalid_request_object": true,
		"request_not_supported": true, "request_uri_not_supported": true, "registration_not_supported": true,
		"invalid_grant": true,
	}
	for _, e := range logs.TroubleshootingEntries() {
		for _, c := range e.Codes {
			m[c] = true
		}
	}
	return m
}()

func metricCode(code string) string {
	if metricCodes[code] {
		return code
	}
	return "other"
}
