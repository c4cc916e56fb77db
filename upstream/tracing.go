package upstream

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Spans of a login's upstream steps (Options.TracerProvider): discovery, the token exchange
// (each DPoP nonce retry is an event on it, added by dpop.Transport), the ID-token check and
// userinfo. Their attributes are the connection's name, the DPoP alg, the client
// authentication method, the token type, the ID token's alg and stable error codes: never a
// code, token, proof, nonce, secret or claim.

// tracerName is the instrumentation scope of the upstream spans.
const tracerName = "github.com/dpop-broker/dpop-broker/upstream"

// noSpan is what startSpan returns without tracing: every method is a no-op.
var noSpan = trace.SpanFromContext(context.Background())

// startSpan starts the span of an upstream step under ctx's span; without a tracer (or
// outside a traced request) it returns ctx and noSpan.
func (c *Connection) startSpan(ctx context.Context, name string) (context.Context, trace.Span) {
	if c.tracer == nil || !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx, noSpan
	}
	return c.tracer.Start(ctx, name, trace.WithAttributes(attribute.String("dpop_broker.connection", c.cfg.Name)))
}

// endSpan ends span, marking it failed with err's stable code (CodeOf) when err is set.
func endSpan(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		code := CodeOf(err)
		span.SetAttributes(semconv.ErrorTypeKey.String(code))
		span.SetStatus(codes.Error, code)
	}
	span.End()
}

// resultAttrs are the span attributes of what res says of the exchange so far.
func resultAttrs(res *Result) []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, 5)
	if res.DPoPAlg != "" {
		attrs = append(attrs, attribute.String("dpop.alg", res.DPoPAlg),
			attribute.Int("dpop.nonce_retries", res.NonceRetries), attribute.Bool("dpop.nonce_used", res.NonceUsed))
	}
	if res.ClientAuthMethod != "" {
		attrs = append(attrs, attribute.String("oauth.token_endpoint_auth_method", res.ClientAuthMethod))
	}
	if res.TokenType != "" {
		attrs = append(attrs, attribute.String("oauth.token_type", res.TokenType))
	}
	return attrs
}
