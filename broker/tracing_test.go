package broker

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// headerLog keeps one header of every request an upstream IdP saw, by path.
type headerLog struct {
	mu     sync.Mutex
	name   string
	byPath map[string][]string
}

func (l *headerLog) observe(r *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byPath == nil {
		l.byPath = map[string][]string{}
	}
	l.byPath[r.URL.Path] = append(l.byPath[r.URL.Path], r.Header.Get(l.name))
}

func (l *headerLog) values(path string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.byPath[path]...)
}

// tracedHarness is a harness whose broker traces into a span recorder (synchronous: a span is
// there once it ended).
func tracedHarness(t *testing.T, o harnessOpts) (*harness, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	prev := o.deps
	o.deps = func(d *Deps) {
		if prev != nil {
			prev(d)
		}
		d.TracerProvider = tp
	}
	return newHarness(t, o), rec
}

// spansByName indexes spans by name (the first of each name; all of them in the slice).
func spansByName(spans []sdktrace.ReadOnlySpan) map[string][]sdktrace.ReadOnlySpan {
	m := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		m[s.Name()] = append(m[s.Name()], s)
	}
	return m
}

// A login is one trace of the broker's own: /authorize starts it as a new root linked to the
// traceparent its request carried, the callback and the code's redemption are children of the
// /authorize span, and beneath them are the upstream
// steps (discovery, token exchange with an event per nonce retry, ID-token check,
// userinfo), one client span per upstream request whose traceparent the upstream received,
// and the store writes. The login's s event carries the trace id; no attribute carries a
// code, token, secret, state or nonce.
func TestLoginIsOneTraceFromAuthorizeToToken(t *testing.T) {
	seen := &headerLog{name: "traceparent"}
	h, rec := tracedHarness(t, harnessOpts{up: demoidp.Options{
		DPoPAlgs: []string{"ES256"}, RequireDPoP: true, RequireNonce: true, Observe: seen.observe,
	}})
	const appTrace, appSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"

	// The app's request carries its traceparent; the browser's later requests do not.
	browser := h.browser()
	stop := *browser
	stop.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	req, _ := http.NewRequest(http.MethodGet, h.authorizeURL(nil), nil)
	req.Header.Set("traceparent", "00-"+appTrace+"-"+appSpan+"-01")
	resp, err := stop.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("/authorize answered %d, want 302 to the upstream", resp.StatusCode)
	}
	final, _ := get(t, browser, resp.Header.Get("Location"))
	code := appResult(t, final, h.app.URL+"/cb").Get("code")
	// The app's backend redeems the code inside a trace of its own: a link, not the parent.
	const backendTrace, backendSpan = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	treq, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/oauth/token", strings.NewReader(h.codeForm(code).Encode()))
	treq.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	treq.Header.Set("traceparent", "00-"+backendTrace+"-"+backendSpan+"-01")
	treq.SetBasicAuth(appClient, appSecret)
	tresp, err := h.client().Do(treq)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	_ = json.NewDecoder(tresp.Body).Decode(&body)
	_ = tresp.Body.Close()
	if tresp.StatusCode != http.StatusOK {
		t.Fatalf("token: %d %v", tresp.StatusCode, body)
	}
	spans := rec.Ended()
	byName := spansByName(spans)
	one := func(name string) sdktrace.ReadOnlySpan {
		t.Helper()
		if len(byName[name]) == 0 {
			var names []string
			for _, s := range spans {
				names = append(names, s.Name())
			}
			t.Fatalf("no span %q among %q", name, names)
		}
		return byName[name][0]
	}
	authorize, callback, token := one("GET /authorize"), one("GET /login/callback"), one("POST /oauth/token")
	loginTrace := authorize.SpanContext().TraceID().String()
	if loginTrace == appTrace {
		t.Errorf("the login's trace is the app's %s: the traceparent of /authorize picked it", appTrace)
	}
	if ev := h.lastEventOf(logs.TypeSuccessLogin); ev.Details[detailTraceID] != loginTrace {
		t.Errorf("s event details.trace_id = %v, want the login's trace %s", ev.Details[detailTraceID], loginTrace)
	}
	for _, s := range spans {
		if got := s.SpanContext().TraceID().String(); got != loginTrace {
			t.Errorf("span %q is in trace %s, want the login's %s", s.Name(), got, loginTrace)
		}
	}
	if authorize.Parent().IsValid() {
		t.Errorf("/authorize has parent %v, want a new root", authorize.Parent())
	}
	if links := authorize.Links(); len(links) != 1 || links[0].SpanContext.TraceID().String() != appTrace || links[0].SpanContext.SpanID().String() != appSpan {
		t.Errorf("/authorize span links %v, want one to the app's span %s/%s", links, appTrace, appSpan)
	}
	exchange := one("upstream token exchange")
	parentOf := func(s sdktrace.ReadOnlySpan) trace.SpanID { return s.Parent().SpanID() }
	for _, tc := range []struct {
		child  string
		span   sdktrace.ReadOnlySpan
		parent trace.SpanID
	}{
		{child: "callback under /authorize", span: callback, parent: authorize.SpanContext().SpanID()},
		{child: "token under /authorize", span: token, parent: authorize.SpanContext().SpanID()},
		{child: "token exchange under the callback", span: exchange, parent: callback.SpanContext().SpanID()},
		{child: "ID-token check under the callback", span: one("upstream id_token check"), parent: callback.SpanContext().SpanID()},
		{child: "userinfo under the callback", span: one("upstream userinfo"), parent: callback.SpanContext().SpanID()},
		{child: "transaction write under /authorize", span: one("store create"), parent: authorize.SpanContext().SpanID()},
		{child: "transaction take under the callback", span: one("store take"), parent: callback.SpanContext().SpanID()},
		{child: "session and code write under the callback", span: one("store put_all"), parent: callback.SpanContext().SpanID()},
		{child: "code claim under the token request", span: one("store swap"), parent: token.SpanContext().SpanID()},
	} {
		if got := parentOf(tc.span); got != tc.parent {
			t.Errorf("%s: parent %s, want %s", tc.child, got, tc.parent)
		}
	}
	if links := token.Links(); len(links) != 1 || links[0].SpanContext.TraceID().String() != backendTrace || links[0].SpanContext.SpanID().String() != backendSpan {
		t.Errorf("token span links %v, want one to the backend's span %s/%s", links, backendTrace, backendSpan)
	}
	if got := len(byName["upstream discovery"]); got < 2 {
		t.Errorf("%d discovery spans, want one at /authorize and one at the callback", got)
	}
	if kind := callback.SpanKind(); kind != trace.SpanKindServer {
		t.Errorf("callback span kind %v, want server", kind)
	}

	// One client span per upstream token request, beneath the exchange: the first answered
	// use_dpop_nonce, which the exchange records as an event.
	var tokenCalls []sdktrace.ReadOnlySpan
	for _, s := range byName["upstream POST"] {
		if s.Parent().SpanID() == exchange.SpanContext().SpanID() {
			tokenCalls = append(tokenCalls, s)
		}
	}
	if len(tokenCalls) != 2 {
		t.Errorf("%d upstream POST spans under the exchange, want 2 (the nonce challenge and the retry)", len(tokenCalls))
	}
	var retries int
	for _, e := range exchange.Events() {
		if e.Name == "dpop.use_dpop_nonce" {
			retries++
		}
	}
	if retries != 1 {
		t.Errorf("exchange events %v, want one dpop.use_dpop_nonce", exchange.Events())
	}

	// The upstream received the trace: each token request's traceparent names its client span.
	got := seen.values("/token")
	if len(got) != len(tokenCalls) {
		t.Fatalf("upstream /token saw traceparents %q, want %d", got, len(tokenCalls))
	}
	for _, tp := range got {
		found := false
		for _, s := range tokenCalls {
			found = found || tp == fmt.Sprintf("00-%s-%s-01", loginTrace, s.SpanContext().SpanID())
		}
		if !found {
			t.Errorf("upstream /token traceparent %q names no client span of the exchange", tp)
		}
	}
	if got := seen.values("/authorize"); len(got) != 1 || got[0] != "" {
		t.Errorf("the upstream's /authorize (the browser's request) saw traceparent %q, want none", got)
	}

	// No attribute, event or link carries anything secret.
	secrets := []string{code, appSecret, upSecret, testVerifier, "app-state-123", "app-nonce-456"}
	for _, k := range []string{"access_token", "id_token", "refresh_token"} {
		if v, _ := body[k].(string); v != "" {
			secrets = append(secrets, v)
		}
	}
	jwtLike := regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.`)
	loginQuery := regexp.MustCompile(`[?&](code|state|nonce|code_verifier)=`)
	for _, s := range spans {
		var values []string
		for _, a := range s.Attributes() {
			values = append(values, string(a.Key)+"="+a.Value.String())
		}
		for _, e := range s.Events() {
			for _, a := range e.Attributes {
				values = append(values, string(a.Key)+"="+a.Value.String())
			}
		}
		for _, v := range values {
			for _, secret := range secrets {
				if strings.Contains(v, secret) {
					t.Errorf("span %q attribute %q carries a secret", s.Name(), v)
				}
			}
			if jwtLike.MatchString(v) || loginQuery.MatchString(v) {
				t.Errorf("span %q attribute %q looks like a credential or a login's query", s.Name(), v)
			}
		}
	}
}

// The traceparent a browser sends to /authorize (any page can make it send one) neither
// picks the login's trace id nor its sampling: with the default parent-based sampler, a
// login whose /authorize carried the sampled flag 00 is traced all the same, in a trace of
// the broker's own that its events name, the traceparent only a link.
func TestAuthorizeTraceparentPicksNeitherTheTraceNorItsSampling(t *testing.T) {
	const sentTrace, sentSpan = "5bf92f3577b34da6a3ce929d0e0e4737", "10f067aa0ba902b8"
	for _, tc := range []struct {
		name  string
		flags string
	}{
		{name: "not sampled (flags 00)", flags: "00"},
		{name: "sampled (flags 01)", flags: "01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, rec := tracedHarness(t, harnessOpts{up: demoidp.Options{DPoPAlgs: []string{"ES256"}}})
			req, _ := http.NewRequest(http.MethodGet, h.authorizeURL(nil), nil)
			req.Header.Set("traceparent", "00-"+sentTrace+"-"+sentSpan+"-"+tc.flags)
			resp, err := h.browser().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			code := appResult(t, resp, h.app.URL+"/cb").Get("code")
			if code == "" {
				t.Fatal("no code")
			}
			if status, body, _ := h.token(h.codeForm(code), true); status != http.StatusOK {
				t.Fatalf("token: %d %v", status, body)
			}
			ev := h.lastEventOf(logs.TypeSuccessLogin)
			id, _ := ev.Details[detailTraceID].(string)
			if id == "" || id == sentTrace {
				t.Fatalf("s event details.trace_id = %q, want a trace of the broker's own", id)
			}
			names := map[string]bool{}
			for _, s := range rec.Ended() {
				if s.SpanContext().TraceID().String() == sentTrace {
					t.Errorf("span %q is in the sent trace", s.Name())
				}
				if s.SpanContext().TraceID().String() != id {
					continue
				}
				names[s.Name()] = true
				if s.Name() == "GET /authorize" {
					if s.Parent().IsValid() {
						t.Errorf("/authorize has parent %v, want a new root", s.Parent())
					}
					if links := s.Links(); len(links) != 1 || links[0].SpanContext.TraceID().String() != sentTrace {
						t.Errorf("/authorize links %v, want the sent traceparent", links)
					}
				}
			}
			for _, want := range []string{"GET /authorize", "GET /login/callback", "POST /oauth/token"} {
				if !names[want] {
					t.Errorf("no %q span exported in the login's trace (have %v)", want, names)
				}
			}
		})
	}
}

// A sign-in that fails on a page of the broker shows the trace id the user can quote, which
// the failed login's event and the request's span carry too; without tracing the page shows
// none and the event has no trace_id.
func TestErrorPageShowsTraceIDOnlyWhenTracing(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tracing bool
	}{
		{name: "tracing on", tracing: true},
		{name: "tracing off", tracing: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h *harness
			var rec *tracetest.SpanRecorder
			if tc.tracing {
				h, rec = tracedHarness(t, harnessOpts{})
			} else {
				h = newHarness(t, harnessOpts{})
			}
			// A callback with a made-up state: no transaction, so no login to join.
			resp, page := get(t, h.browser(), h.srv.URL+"/login/callback?"+url.Values{"state": {"made-up"}, "code": {"c"}}.Encode())
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("callback answered %d, want 400", resp.StatusCode)
			}
			ev := h.lastEventOf(logs.TypeFailedLogin)
			m := regexp.MustCompile(`trace id: <code>([0-9a-f]{32})</code>`).FindStringSubmatch(page)
			if !tc.tracing {
				if m != nil || strings.Contains(page, "trace id") {
					t.Errorf("page shows a trace id without tracing:\n%s", page)
				}
				if _, ok := ev.Details[detailTraceID]; ok {
					t.Errorf("f event has details.trace_id %v without tracing", ev.Details[detailTraceID])
				}
				return
			}
			if m == nil {
				t.Fatalf("page shows no trace id:\n%s", page)
			}
			if ev.Details[detailTraceID] != m[1] {
				t.Errorf("f event details.trace_id = %v, want the page's %s", ev.Details[detailTraceID], m[1])
			}
			var found bool
			for _, s := range rec.Ended() {
				if s.Name() == "GET /login/callback" && s.SpanContext().TraceID().String() == m[1] {
					found = true
					if s.Parent().IsValid() {
						t.Errorf("the callback without a login has parent %v, want a trace of its own", s.Parent())
					}
				}
			}
			if !found {
				t.Errorf("no callback span in trace %s", m[1])
			}
		})
	}
}

// Without tracing the broker adds nothing: no traceparent goes upstream (even when the app
// sent one), the transaction and code carry none, and the s event has no trace_id.
func TestLoginWithoutTracingSendsNoTraceparentUpstream(t *testing.T) {
	seen := &headerLog{name: "traceparent"}
	h := newHarness(t, harnessOpts{up: demoidp.Options{DPoPAlgs: []string{"ES256"}, RequireNonce: true, Observe: seen.observe}})
	req, _ := http.NewRequest(http.MethodGet, h.authorizeURL(nil), nil)
	req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	resp, err := h.browser().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if code := appResult(t, resp, h.app.URL+"/cb").Get("code"); code == "" {
		t.Fatal("no code")
	}
	for _, path := range []string{"/.well-known/openid-configuration", "/token", "/userinfo"} {
		for _, v := range seen.values(path) {
			if v != "" {
				t.Errorf("upstream %s received traceparent %q without tracing", path, v)
			}
		}
	}
	if got := len(seen.values("/token")); got == 0 {
		t.Error("the upstream saw no token request")
	}
	if ev := h.lastEventOf(logs.TypeSuccessLogin); ev.Details[detailTraceID] != nil {
		t.Errorf("s event details.trace_id = %v without tracing", ev.Details[detailTraceID])
	}
}

// A reloaded configuration keeps tracing: the new view's routes, store and upstream
// connections trace as the first did.
func TestLoginAfterReloadIsStillTraced(t *testing.T) {
	seen := &headerLog{name: "traceparent"}
	h, rec := tracedHarness(t, harnessOpts{up: demoidp.Options{DPoPAlgs: []string{"ES256"}, Observe: seen.observe}})
	if err := h.reload(func(c *config.Config) { c.Connections[0].Options.Scope = "openid profile" }); err != nil {
		t.Fatalf("reload: %v", err)
	}
	ev := h.loginEvent()
	id, _ := ev.Details[detailTraceID].(string)
	if id == "" {
		t.Fatalf("s event after the reload has no trace_id: %v", ev.Details)
	}
	names := map[string]bool{}
	for _, s := range rec.Ended() {
		if s.SpanContext().TraceID().String() == id {
			names[s.Name()] = true
		}
	}
	for _, want := range []string{"GET /authorize", "GET /login/callback", "upstream token exchange", "store put_all"} {
		if !names[want] {
			t.Errorf("no %q span in the login's trace after the reload (have %v)", want, names)
		}
	}
	got := seen.values("/token")
	if len(got) == 0 || !strings.Contains(got[len(got)-1], id) {
		t.Errorf("upstream /token traceparents %q, want the login's trace %s", got, id)
	}
}
