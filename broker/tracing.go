package broker

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// Tracing (README "Tracing"). With Deps.TracerProvider set, a login is one trace:
//
//   - GET /authorize starts it: its server span is always a new root, so the trace id and
//     the sampling decision are the broker's. A W3C traceparent the request carries becomes
//     a link and nothing else: /authorize is reached by a browser, and whoever sends it
//     (any web page, an attacker) could otherwise pick the trace id written into the
//     login's events (details.trace_id) and, with a parent-based sampler, turn the export of
//     the login's spans off (sampled flag 00) for it and for the callback and token requests
//     that inherit its stored context. The span's context is kept with the app's request
//     (appRequest.Trace), so it is stored in the login transaction and, later, in the
//     authorization code.
//   - GET /login/callback and POST /oauth/token cannot know their login before they read
//     its transaction or code from the store, so their server spans start then (joinTrace)
//     as children of the /authorize span, backdated to the request's arrival; the store
//     writes made before are added as child spans with their own times. A traceparent the
//     request carried becomes a link. A request whose login is unknown (no transaction, a
//     refresh) gets a trace of its own (a new root, its traceparent a link, as at
//     /authorize).
//   - Beneath them: the upstream package's spans (discovery, token exchange with a span
//     event per DPoP nonce retry, ID-token check, userinfo), one client span per upstream
//     HTTP request (otelhttp, which sends traceparent upstream), and one span per store
//     write.
//
// Span attributes name what a login event names (client_id, connection, alg, error codes),
// never a code, token, proof, secret, state, id of a record, or a query. The trace id goes
// into the events of a traced request (details.trace_id) and onto its error pages.
//
// Without a TracerProvider nothing here runs: no middleware, no span, no clock read.

// tracerName is the instrumentation scope of the broker's own spans.
const tracerName = "github.com/dpop-broker/dpop-broker/broker"

// w3c is the only propagator: W3C Trace Context (traceparent, tracestate), read from apps
// and sent upstream. Baggage is neither read nor sent.
var w3c = propagation.TraceContext{}

type requestTraceKey struct{}

// requestTrace is the server span of one traced request, started once its parent is known.
type requestTrace struct {
	tracer trace.Tracer
	name   string // "GET /authorize": the route pattern
	method string
	route  string
	start  time.Time
	remote trace.SpanContext // the request's own traceparent, if any (its tracestate dropped)

	mu      sync.Mutex
	span    trace.Span  // nil until begun
	pending []storeSpan // store writes made before the span began
	ended   bool
}

// storeSpan is a store write recorded before its request's span began.
type storeSpan struct {
	op         string
	kind       sessions.Kind
	start, end time.Time
	err        error
}

// maxPendingStoreSpans bounds the store writes kept for a span that has not begun.
const maxPendingStoreSpans = 8

// traced wraps a route's handler in a server span (nil tracer: next unchanged). join routes
// start the span when the handler calls joinTrace with the login's trace, or when something
// first asks for the trace id, or when the request ends; the others start it at once, as a
// new root linked to the request's traceparent.
func (s *Server) traced(join bool, next http.HandlerFunc) http.HandlerFunc {
	if s.tracer == nil {
		return next
	}
	return func(w http.ResponseWriter, r *http.Request) {
		method, route, _ := strings.Cut(r.Pattern, " ")
		// The caller's trace and span ids and sampled flag are kept; its tracestate is not,
		// so nothing else the caller chose is passed on to the upstream IdP.
		remote := trace.SpanContextFromContext(w3c.Extract(context.Background(), propagation.HeaderCarrier(r.Header)))
		rt := &requestTrace{
			tracer: s.tracer, name: r.Pattern, method: method, route: route, start: time.Now(),
			remote: remote.WithTraceState(trace.TraceState{}),
		}
		ctx := context.WithValue(r.Context(), requestTraceKey{}, rt)
		if !join {
			ctx = rt.begin(ctx, trace.SpanContext{})
		}
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next(sw, r.WithContext(ctx))
		rt.finish(sw.status)
	}
}

func requestTraceOf(ctx context.Context) *requestTrace {
	rt, _ := ctx.Value(requestTraceKey{}).(*requestTrace)
	return rt
}

// joinTrace starts the request's span as a child of the login's span (traceparent, as
// loginTrace returned it at /authorize) and returns ctx with it. An invalid or empty
// traceparent starts it as the request's own trace. Without tracing, or when the span has
// begun already, it only puts that span in ctx.
func joinTrace(ctx context.Context, traceparent string) context.Context {
	rt := requestTraceOf(ctx)
	if rt == nil {
		return ctx
	}
	var parent trace.SpanContext
	if traceparent != "" {
		carrier := propagation.MapCarrier{"traceparent": traceparent}
		parent = trace.SpanContextFromContext(w3c.Extract(context.Background(), carrier))
	}
	return rt.begin(ctx, parent)
}

// loginTrace returns the W3C traceparent of ctx's request span ("" without tracing), to be
// stored with the login and passed to joinTrace by its later requests.
func loginTrace(ctx context.Context) string {
	rt := requestTraceOf(ctx)
	if rt == nil {
		return ""
	}
	carrier := propagation.MapCarrier{}
	w3c.Inject(rt.begin(ctx, trace.SpanContext{}), carrier)
	return carrier.Get("traceparent")
}

// traceID returns the trace id of ctx's request (32 hex digits), starting its span if it has
// not begun; "" without tracing.
func traceID(ctx context.Context) string {
	rt := requestTraceOf(ctx)
	if rt == nil {
		return ""
	}
	rt.begin(ctx, trace.SpanContext{})
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.span.SpanContext().TraceID().String()
}

// begin starts the span (once) under parent (the login's span, from the store), or when
// parent is invalid as a new root, and returns ctx carrying it. A traceparent the request
// carried is never the parent: it becomes a link (unless it is the parent itself).
func (rt *requestTrace) begin(ctx context.Context, parent trace.SpanContext) context.Context {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.span == nil {
		opts := []trace.SpanStartOption{
			trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(rt.start),
			trace.WithAttributes(semconv.HTTPRequestMethodKey.String(rt.method), semconv.HTTPRoute(rt.route)),
		}
		pctx := context.Background()
		if parent.IsValid() {
			pctx = trace.ContextWithRemoteSpanContext(pctx, parent)
		} else {
			opts = append(opts, trace.WithNewRoot())
		}
		if rt.remote.IsValid() && !rt.remote.Equal(parent) {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: rt.remote}))
		}
		sctx, span := rt.tracer.Start(pctx, rt.name, opts...)
		rt.span = span
		for _, p := range rt.pending {
			rt.storeSpanLocked(sctx, p)
		}
		rt.pending = nil
	}
	return trace.ContextWithSpan(ctx, rt.span)
}

// finish ends the span with the response status, starting it first if it never began.
func (rt *requestTrace) finish(status int) {
	rt.begin(context.Background(), trace.SpanContext{})
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.ended = true
	rt.span.SetAttributes(semconv.HTTPResponseStatusCode(status))
	if status >= http.StatusInternalServerError {
		rt.span.SetStatus(codes.Error, http.StatusText(status))
	}
	rt.span.End()
}

// storeSpanLocked records p as a child span of ctx's span (rt.mu held).
func (rt *requestTrace) storeSpanLocked(ctx context.Context, p storeSpan) {
	_, span := rt.tracer.Start(ctx, "store "+p.op, trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(p.start),
		trace.WithAttributes(semconv.DBOperationName(p.op), attribute.String("dpop_broker.store.kind", string(p.kind))))
	if p.err != nil {
		span.SetStatus(codes.Error, storeOutcome(p.err))
	}
	span.End(trace.WithTimestamp(p.end))
}

// storeOutcome names a store error for a span without its text (which may hold an address).
func storeOutcome(err error) string {
	switch {
	case errors.Is(err, sessions.ErrNotFound):
		return "not_found"
	case errors.Is(err, sessions.ErrExists):
		return "exists"
	case errors.Is(err, sessions.ErrConflict):
		return "conflict"
	case storeFull(err):
		return codeStoreFull
	}
	return codeStoreUnavailable
}

// traceStore records a store write of ctx's request that started at start (zero: tracing
// off, nothing to do) and failed with err (nil: succeeded) as a span, or keeps it until the
// request's span begins.
func traceStore(ctx context.Context, op string, kind sessions.Kind, start time.Time, err error) {
	if start.IsZero() {
		return
	}
	rt := requestTraceOf(ctx)
	if rt == nil {
		return
	}
	p := storeSpan{op: op, kind: kind, start: start, end: time.Now(), err: err}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	switch {
	case rt.ended:
	case rt.span != nil:
		rt.storeSpanLocked(trace.ContextWithSpan(ctx, rt.span), p)
	case len(rt.pending) < maxPendingStoreSpans:
		rt.pending = append(rt.pending, p)
	}
}

// storeStart is the start of a store write to trace (traceStore): now when tracing is on,
// else zero.
func (s *Server) storeStart() time.Time {
	if s.tracer == nil {
		return time.Time{}
	}
	return time.Now()
}

// traceEvent adds the trace id of ctx's request to ev (details.trace_id) and what ev says
// of the login to the request's span: client_id, connection, the event type and, for a
// failure, its error code (span status error). Without tracing it does nothing.
func traceEvent(ctx context.Context, ev *logs.Event) {
	rt := requestTraceOf(ctx)
	if rt == nil || ev == nil {
		return
	}
	sctx := rt.begin(ctx, trace.SpanContext{})
	span := trace.SpanFromContext(sctx)
	if ev.Details == nil {
		ev.Details = map[string]any{}
	}
	ev.Details[detailTraceID] = span.SpanContext().TraceID().String()
	attrs := []attribute.KeyValue{attribute.String("dpop_broker.event.type", ev.Type)}
	if ev.ClientID != "" {
		attrs = append(attrs, attribute.String("oauth.client_id", ev.ClientID))
	}
	if ev.Connection != "" {
		attrs = append(attrs, attribute.String("dpop_broker.connection", ev.Connection))
	}
	if alg, ok := ev.Details["dpop_signing_alg"].(string); ok {
		attrs = append(attrs, attribute.String("dpop.alg", alg))
	}
	code, _ := ev.Details["error"].(string)
	if code != "" {
		attrs = append(attrs, semconv.ErrorTypeKey.String(safeErrorCode(code)))
	}
	span.SetAttributes(attrs...)
	if code != "" && strings.HasPrefix(ev.Type, "f") {
		span.SetStatus(codes.Error, safeErrorCode(code))
	}
}

// detailTraceID is the event detail that carries the trace id of a traced request.
const detailTraceID = "trace_id"
