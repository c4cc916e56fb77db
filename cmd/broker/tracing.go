package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/dpop-broker/dpop-broker/buildinfo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Tracing is off unless the standard OpenTelemetry environment asks for it (README
// "Tracing"):
//
//   - OTEL_SDK_DISABLED=true: off, whatever else is set;
//   - OTEL_TRACES_EXPORTER=none: off; =otlp: on; any other exporter is refused at start;
//   - otherwise on exactly when OTEL_EXPORTER_OTLP_ENDPOINT or
//     OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set.
//
// When on, spans go to an OTLP exporter that reads every OTEL_EXPORTER_OTLP_(TRACES_)*
// variable itself (endpoint, headers, timeout, compression, certificates, insecure): over
// HTTP (http/protobuf, the default) or gRPC as OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL says;
// http/json, which the Go exporters lack, is refused at start rather than silently ignored.
// The SDK reads the sampler
// (OTEL_TRACES_SAMPLER, _ARG; default parentbased_always_on), the batch processor's
// OTEL_BSP_* and the resource's OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
// (service.name defaults to dpop-broker).

// tracingShutdownTimeout bounds the flush of the spans still queued when serve stops.
const tracingShutdownTimeout = 5 * time.Second

// OTLP protocols (OTEL_EXPORTER_OTLP_PROTOCOL values) the broker exports over.
const (
	protocolHTTP = "http/protobuf"
	protocolGRPC = "grpc"
)

// tracingOn reports, from getenv, whether tracing is asked for and over which OTLP
// protocol, or why the environment cannot be honoured.
func tracingOn(getenv func(string) string) (on bool, protocol string, err error) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false, "", nil
	}
	exporter := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")))
	switch exporter {
	case "none":
		return false, "", nil
	case "", "otlp":
	default:
		return false, "", fmt.Errorf("OTEL_TRACES_EXPORTER=%q is not supported: use otlp or none", exporter)
	}
	on = exporter == "otlp" || getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	if !on {
		return false, "", nil
	}
	protocol = strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
	if protocol == "" {
		protocol = strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_PROTOCOL"))
	}
	switch protocol {
	case "":
		protocol = protocolHTTP
	case protocolHTTP, protocolGRPC:
	default:
		return false, "", fmt.Errorf("OTLP protocol %q is not supported: use http/protobuf or grpc", protocol)
	}
	// What the SDK would only report once spans go nowhere, or log as an export failure.
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
		if v := strings.TrimSpace(getenv(k)); v != "" {
			if u, err := url.Parse(v); err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
				return false, "", fmt.Errorf("%s must be a URL such as http://127.0.0.1:4318 (with http:// or https://)", k)
			}
		}
	}
	if sm := strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER")); sm != "" && !slices.Contains(tracingSamplers, sm) {
		return false, "", fmt.Errorf("OTEL_TRACES_SAMPLER=%q is not supported: use one of %s", sm, strings.Join(tracingSamplers, ", "))
	}
	return true, protocol, nil
}

// tracingSamplers are the OTEL_TRACES_SAMPLER values the Go SDK understands.
var tracingSamplers = []string{"always_on", "always_off", "traceidratio",
	"parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio"}

// tracingEndpoint names where spans go, for the start-up line: the endpoint's scheme and
// host (never its path, query or credentials), or the exporter's default.
func tracingEndpoint(getenv func(string) string, protocol string) string {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
		if u, err := url.Parse(strings.TrimSpace(getenv(k))); err == nil && u.Host != "" {
			return u.Scheme + "://" + u.Host
		}
	}
	if protocol == protocolGRPC {
		return "the default, https://localhost:4317"
	}
	return "the default, https://localhost:4318"
}

// newTracing returns the tracer provider the environment (getenv) asks for and the function
// that flushes and stops it, or a nil provider and a no-op stop when tracing is off. The
// SDK's own errors (an unreachable collector) are logged as warnings, which logger limits.
func newTracing(ctx context.Context, getenv func(string) string, logger *slog.Logger) (trace.TracerProvider, func(), error) {
	on, protocol, err := tracingOn(getenv)
	if err != nil || !on {
		return nil, func() {}, err
	}
	// Either exporter reads the OTEL_EXPORTER_OTLP_* variables itself.
	var exp sdktrace.SpanExporter
	if protocol == protocolGRPC {
		exp, err = otlptracegrpc.New(ctx)
	} else {
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	// Later sources win: the default service name, then OTEL_RESOURCE_ATTRIBUTES and
	// OTEL_SERVICE_NAME.
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName("dpop-broker"), semconv.ServiceVersion(buildinfo.Read().Version)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		_ = exp.Shutdown(ctx)
		return nil, nil, fmt.Errorf("tracing: resource: %w", err)
	}
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		logger.Warn("tracing export failed", "err", err)
	}))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	logger.Info("tracing on", "exporter", "otlp", "protocol", protocol, "endpoint", tracingEndpoint(getenv, protocol))
	stop := func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tracingShutdownTimeout)
		defer cancel()
		if err := tp.Shutdown(sctx); err != nil {
			logger.Warn("tracing shutdown", "err", err)
		}
	}
	return tp, stop, nil
}
