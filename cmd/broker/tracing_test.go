package main

import (
	"compress/gzip"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/dpop-broker/dpop-broker/broker"
	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// Tracing is on only when the OTEL_* environment asks for it; OTEL_SDK_DISABLED=true wins,
// and what the broker cannot honour stops it at start.
func TestTracingOnlyWhenTheEnvironmentAsks(t *testing.T) {
	for _, tc := range []struct {
		name     string
		env      map[string]string
		on       bool
		protocol string // when on
		problem  string // part of the start-up error; "" none
	}{
		{name: "nothing set", env: nil, on: false},
		{name: "endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, on: true, protocol: "http/protobuf"},
		{name: "traces endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, on: true, protocol: "http/protobuf"},
		{name: "exporter otlp alone", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, on: true, protocol: "http/protobuf"},
		{name: "exporter none wins over an endpoint", env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, on: false},
		{name: "SDK disabled wins", env: map[string]string{"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, on: false},
		{name: "SDK disabled false", env: map[string]string{"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"}, on: true, protocol: "http/protobuf"},
		{name: "other exporter refused", env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, problem: "OTEL_TRACES_EXPORTER"},
		{name: "grpc", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, on: true, protocol: "grpc"},
		{name: "http/json refused", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, problem: "http/json"},
		{name: "traces protocol wins", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, on: true, protocol: "http/protobuf"},
		{name: "protocol ignored when off", env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, on: false},
		{name: "an endpoint without a scheme refused", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "127.0.0.1:4318"}, problem: "OTEL_EXPORTER_OTLP_ENDPOINT must be a URL"},
		{name: "a traces endpoint without a host refused", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http:///v1/traces"}, problem: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT must be a URL"},
		{name: "an unknown sampler refused", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "bogus"}, problem: "OTEL_TRACES_SAMPLER"},
		{name: "a ratio sampler", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio"}, on: true, protocol: "http/protobuf"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			on, protocol, err := tracingOn(func(k string) string { return tc.env[k] })
			switch {
			case tc.problem != "" && (err == nil || !strings.Contains(err.Error(), tc.problem)):
				t.Fatalf("err = %v, want one naming %q", err, tc.problem)
			case tc.problem == "" && err != nil:
				t.Fatalf("err = %v", err)
			case on != tc.on || on && protocol != tc.protocol:
				t.Errorf("on = %v over %q, want %v over %q", on, protocol, tc.on, tc.protocol)
			}
		})
	}
}

// otlpReceiver is an OTLP trace receiver on loopback, over HTTP (ServeHTTP) or gRPC
// (Export): it keeps every span it is sent with its service.name.
type otlpReceiver struct {
	coltrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []receivedSpan
}

// Export is the gRPC TraceService's method.
func (rcv *otlpReceiver) Export(_ context.Context, req *coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error) {
	rcv.add(req)
	return &coltrace.ExportTraceServiceResponse{}, nil
}

func (rcv *otlpReceiver) add(req *coltrace.ExportTraceServiceRequest) {
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				rcv.spans = append(rcv.spans, receivedSpan{service: service, name: s.GetName(), traceID: hexID(s.GetTraceId())})
			}
		}
	}
}

type receivedSpan struct {
	service, name, traceID string
}

func (rcv *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "not an OTLP/HTTP protobuf trace export", http.StatusBadRequest)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	raw, err := io.ReadAll(io.LimitReader(body, 8<<20))
	var req coltrace.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(raw, &req)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rcv.add(&req)
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

func (rcv *otlpReceiver) received() []receivedSpan {
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	return append([]receivedSpan(nil), rcv.spans...)
}

func hexID(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// Configured only by OTEL_EXPORTER_OTLP_ENDPOINT (and OTEL_EXPORTER_OTLP_PROTOCOL for gRPC),
// a login's spans reach an OTLP receiver on loopback as one trace under the service
// dpop-broker, by the time serve's stop has flushed them.
func TestLoginTraceReachesAnOTLPReceiver(t *testing.T) {
	for _, tc := range []struct {
		protocol string
		start    func(t *testing.T, rcv *otlpReceiver) string // the receiver's endpoint
	}{
		{protocol: "http/protobuf", start: func(t *testing.T, rcv *otlpReceiver) string {
			collector := httptest.NewServer(rcv)
			t.Cleanup(collector.Close)
			return collector.URL
		}},
		{protocol: "grpc", start: func(t *testing.T, rcv *otlpReceiver) string {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			gs := grpc.NewServer()
			coltrace.RegisterTraceServiceServer(gs, rcv)
			go func() { _ = gs.Serve(ln) }()
			t.Cleanup(gs.Stop)
			return "http://" + ln.Addr().String() // http: plaintext gRPC
		}},
	} {
		t.Run(tc.protocol, func(t *testing.T) {
			rcv := &otlpReceiver{}
			for _, k := range []string{"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
				"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER"} {
				t.Setenv(k, "") // whatever the machine running the test has
			}
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", tc.start(t, rcv))
			t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", tc.protocol)
			loginTraceReaches(t, rcv)
		})
	}
}

// loginTraceReaches runs serve's tracing set-up from the environment and one login through
// a broker using it, then checks the spans rcv received.
func loginTraceReaches(t *testing.T, rcv *otlpReceiver) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	tp, stop, err := newTracing(context.Background(), os.Getenv, logger)
	if err != nil || tp == nil {
		t.Fatalf("newTracing: provider %v, err %v; want tracing on", tp, err)
	}

	up := demoidp.Options{ClientID: "broker", ClientSecret: "broker-secret", DPoPAlgs: []string{"ES256"}, RequireNonce: true}
	brokerURL, b, callback := startTestBroker(t, up, broker.Deps{Logger: logger, TracerProvider: tp}, func(cfg *config.Config) {
		cfg.Connections[0].Options.DPoPSigningAlg = "ES256"
	})

	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	q := url.Values{"response_type": {"code"}, "client_id": {"app"}, "redirect_uri": {callback}, "scope": {"openid"}, "state": {"s"}}
	resp, err := browser.Get(brokerURL + "/authorize?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.Request.URL.Path != "/cb" || resp.Request.URL.Query().Get("code") == "" {
		t.Fatalf("the login ended at %s, want the app's callback with a code", resp.Request.URL)
	}
	b.Close()
	stop() // flushes the batch

	byName := map[string]receivedSpan{}
	for _, s := range rcv.received() {
		byName[s.name] = s
	}
	authorize, ok := byName["GET /authorize"]
	if !ok {
		t.Fatalf("the receiver got %v, want the login's spans", rcv.received())
	}
	for _, name := range []string{"GET /login/callback", "upstream token exchange", "upstream POST", "store take"} {
		s, ok := byName[name]
		switch {
		case !ok:
			t.Errorf("no %q span received", name)
		case s.traceID != authorize.traceID:
			t.Errorf("%q is in trace %s, want the login's %s", name, s.traceID, authorize.traceID)
		}
	}
	if authorize.service != "dpop-broker" {
		t.Errorf("service.name = %q, want dpop-broker", authorize.service)
	}
}
