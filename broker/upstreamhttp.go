package broker

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/dpop-broker/dpop-broker/discovery"
)

// maxUpstreamBody bounds every response body the broker reads from an upstream IdP
// (discovery, JWKS, token, userinfo). go-oidc reads JWKS and userinfo bodies without a limit
// and x/oauth2 silently truncates token responses at 1 MiB, so the limit is enforced here,
// below both, with an error that names it.
const maxUpstreamBody = 512 << 10

// upstreamHTTPOptions shape the client of every upstream call.
type upstreamHTTPOptions struct {
	timeout  time.Duration // upstream_timeout
	policy   *egressPolicy // which addresses may be connected to (egress.go)
	resolver *net.Resolver // DNS for upstream hosts; nil: the system's
	// tracing, when set, makes every upstream request of a traced login a client span that
	// sends its traceparent upstream (tracedTransport); nil: no spans, no headers.
	tracing trace.TracerProvider
}

// upstreamClient returns the client for upstream calls (discovery, JWKS through go-oidc, the
// token exchange through x/oauth2, userinfo): base (or a client with its own transport and
// o.timeout) with
//   - a dialer that applies the upstream address policy to every connection (egress.go);
//   - no proxy: a proxy from HTTP_PROXY/HTTPS_PROXY would make the connection for the broker
//     and so bypass the address check (the policy would only see the proxy's address);
//   - no redirects followed (discovery.RefuseRedirect);
//   - response bodies bounded by maxUpstreamBody;
//   - with o.tracing, a client span per request made for a traced request (tracedTransport).
//
// base's transport must be nil or an *http.Transport (it is cloned; its dialers and proxy are
// replaced), so no caller can hand the broker a client that skips the policy.
func upstreamClient(base *http.Client, o upstreamHTTPOptions) (*http.Client, error) {
	var t *http.Transport
	c := http.Client{Timeout: o.timeout}
	if base != nil {
		c = *base
		switch bt := base.Transport.(type) {
		case nil:
		case *http.Transport:
			t = bt.Clone()
		default:
			return nil, errUpstreamTransport
		}
	}
	if t == nil {
		t = http.DefaultTransport.(*http.Transport).Clone()
		// Keep a connection per concurrent login to the (usually single) upstream host, so
		// load does not churn TCP connections; token responses are small, so no gzip.
		t.MaxIdleConnsPerHost = 64
		t.DisableCompression = true
	}
	policy := o.policy
	if policy == nil {
		policy = &egressPolicy{} // no allowed networks: public addresses only
	}
	t.Proxy = nil
	t.DialContext = policy.dialer(o.resolver).DialContext
	t.DialTLSContext = nil // TLS goes over DialContext, so the policy sees every connection
	//lint:ignore SA1019 the deprecated dialers are cleared so that a base transport's cannot bypass the policy
	t.Dial, t.DialTLS = nil, nil
	c.CheckRedirect = discovery.RefuseRedirect
	c.Transport = &limitTransport{base: t, max: maxUpstreamBody}
	if o.tracing != nil {
		c.Transport = newTracedTransport(c.Transport, o.tracing)
	}
	return &c, nil
}

// tracedTransport is otelhttp's client instrumentation above base: each request made while a
// span is in its context (a traced login) becomes a child client span, and its W3C
// traceparent is sent upstream; requests outside traced requests (background discovery, the
// management API's checks) are neither traced nor given the header. Below it, base keeps
// the address policy in the dialer and the body limit.
type tracedTransport struct {
	http.RoundTripper
	base http.RoundTripper
}

func newTracedTransport(base http.RoundTripper, tp trace.TracerProvider) *tracedTransport {
	return &tracedTransport{
		RoundTripper: otelhttp.NewTransport(base,
			otelhttp.WithTracerProvider(tp),
			otelhttp.WithPropagators(w3c),
			otelhttp.WithFilter(func(r *http.Request) bool { return trace.SpanContextFromContext(r.Context()).IsValid() }),
			otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return "upstream " + r.Method }),
		),
		base: base,
	}
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the base transport.
func (t *tracedTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// limitTransport fails responses whose body is larger than max bytes: at once when the
// Content-Length says so, else on the read that passes the limit.
type limitTransport struct {
	base http.RoundTripper
	max  int64
}

func (t *limitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > t.max {
		_ = resp.Body.Close()
		return nil, &bodyTooLargeError{max: t.max, length: resp.ContentLength}
	}
	resp.Body = &limitedBody{rc: resp.Body, left: t.max, err: &bodyTooLargeError{max: t.max, length: -1}}
	return resp, nil
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the base transport.
func (t *limitTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// bodyTooLargeError says a response was refused for its size (the caller's error names the URL).
type bodyTooLargeError struct {
	max, length int64 // length -1: no Content-Length
}

func (e *bodyTooLargeError) Error() string {
	if e.length >= 0 {
		return fmt.Sprintf("upstream response body is %d bytes, more than the %d-byte limit", e.length, e.max)
	}
	return fmt.Sprintf("upstream response body is larger than the %d-byte limit", e.max)
}

// limitedBody reads at most left bytes and then fails with err instead of returning more.
type limitedBody struct {
	rc   io.ReadCloser
	left int64
	err  error
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// Tell a body that ends exactly at the limit from a longer one.
		var one [1]byte
		if n, err := b.rc.Read(one[:]); n == 0 {
			return 0, err // io.EOF: the body ends exactly at the limit
		}
		return 0, b.err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

// UpstreamHTTPClient returns a client built like the one the broker uses for upstream calls
// (address policy with allowedNetworks as upstream_allowed_networks, no proxy, no redirects,
// bounded bodies), so operator tools such as `broker discovery check` see what `serve` would.
func UpstreamHTTPClient(timeout time.Duration, allowedNetworks []string) (*http.Client, error) {
	policy, err := newEgressPolicy(allowedNetworks)
	if err != nil {
		return nil, err
	}
	return upstreamClient(nil, upstreamHTTPOptions{timeout: timeout, policy: policy})
}
