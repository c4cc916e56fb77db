package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/sessions/redistest"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// Faults: the upstream IdP misbehaving at the token endpoint, rotating its
// signing key, Redis going away mid-run, and no goroutine or connection left behind.

// faultIdP serves demoidp providers at one URL with an injectable token-endpoint fault,
// an optional token_endpoint override in discovery, and a switchable provider (key rotation).
type faultIdP struct {
	URL  string
	opts demoidp.Options
	srv  *httptest.Server

	cur        atomic.Pointer[idpInstance]
	fault      atomic.Pointer[tokenFault]
	tokenURL   atomic.Pointer[string] // discovery token_endpoint override
	tokenCalls atomic.Int64
	jwksCalls  atomic.Int64
	release    chan struct{} // closed at cleanup: unblocks every held token request
}

type idpInstance struct {
	h     http.Handler
	stats *demoidp.Stats
}

// tokenFault answers POST /token instead of (or around) the provider, next.
type tokenFault func(w http.ResponseWriter, r *http.Request, next http.Handler)

func newFaultIdP(t testing.TB, opts demoidp.Options) *faultIdP {
	t.Helper()
	if opts.ClientID == "" {
		opts.ClientID, opts.ClientSecret = upClientID, upSecret
	}
	f := &faultIdP{opts: opts, release: make(chan struct{})}
	f.srv = httptest.NewUnstartedServer(f)
	f.URL = "http://" + f.srv.Listener.Addr().String()
	f.rotate(t)
	f.srv.Start()
	t.Cleanup(func() {
		close(f.release)
		f.srv.Close()
	})
	return f
}

// rotate replaces the provider by a fresh one with the same issuer and a new signing key (kid).
func (f *faultIdP) rotate(t testing.TB) *idpInstance {
	t.Helper()
	opts := f.opts
	opts.FreshKey = f.cur.Load() != nil // a replacement signs with a key of its own
	h, stats, err := demoidp.NewHandler(f.URL, opts)
	if err != nil {
		t.Fatalf("upstream: %v", err)
	}
	in := &idpInstance{h: h, stats: stats}
	f.cur.Store(in)
	return in
}

func (f *faultIdP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	next := f.cur.Load().h
	switch {
	case r.URL.Path == "/jwks":
		f.jwksCalls.Add(1)
	case r.Method == http.MethodPost && r.URL.Path == "/token":
		f.tokenCalls.Add(1)
		if fault := f.fault.Load(); fault != nil {
			(*fault)(w, r, next)
			return
		}
	case r.URL.Path == "/.well-known/openid-configuration" && f.tokenURL.Load() != nil:
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		var doc map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		doc["token_endpoint"] = *f.tokenURL.Load()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(doc)
		return
	}
	next.ServeHTTP(w, r)
}

func (f *faultIdP) setFault(tf tokenFault) { f.fault.Store(&tf) }

// faultUpstreamTimeout is the fault harness's upstream_timeout: short enough that the held
// token request of the "slow" case ends the login soon, long enough that no call which does
// answer (discovery, JWKS, token, userinfo over loopback) outlives it on a loaded machine.
const faultUpstreamTimeout = 5 * time.Second

// faultHarness is a broker whose connection "corp" points at a faultIdP, with a shortened
// upstream_timeout.
func faultHarness(t testing.TB, idp *faultIdP, store sessions.Store) *harness {
	t.Helper()
	return faultHarnessTimeout(t, idp, store, faultUpstreamTimeout)
}

func faultHarnessTimeout(t testing.TB, idp *faultIdP, store sessions.Store, timeout time.Duration) *harness {
	t.Helper()
	return newHarness(t, harnessOpts{up: dpopUp, store: store, mutate: func(c *config.Config) {
		c.UpstreamTimeout = timeout
		for i := range c.Connections {
			c.Connections[i].Options.Issuer = idp.URL
		}
	}})
}

// closedPort returns a loopback URL that refuses connections for the whole test: a TCP socket
// is bound to its port but never listens, so the kernel answers connection refused, and no other
// process (another test run on the machine) can listen there meanwhile.
func closedPort(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("http://127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

// bigBody writes n bytes of a JSON string value, stopping when the client goes away.
func bigBody(w http.ResponseWriter, n int) {
	_, _ = io.WriteString(w, `{"token_type":"DPoP","access_token":"`)
	chunk := []byte(strings.Repeat("a", 64<<10))
	for written := 0; written < n; written += len(chunk) {
		if _, err := w.Write(chunk); err != nil {
			return
		}
	}
	_, _ = io.WriteString(w, `"}`)
}

// upstreamFaultCases are token-endpoint faults and the precise f event each must produce.
func upstreamFaultCases(closed string) []struct {
	name     string
	fault    tokenFault
	tokenURL string
	desc     []string // substrings of details.error_description
} {
	return []struct {
		name     string
		fault    tokenFault
		tokenURL string
		desc     []string
	}{
		{name: "slow: token endpoint outlives upstream_timeout", fault: func(w http.ResponseWriter, r *http.Request, _ http.Handler) {
			_, _ = io.Copy(io.Discard, r.Body) // lets the server notice the broker hanging up
			select {                           // held until the broker gives up or the test ends
			case <-r.Context().Done():
			case <-time.After(time.Minute):
			}
		}, desc: []string{"token endpoint did not answer within " + faultUpstreamTimeout.String() + " (upstream timeout)", "/token"}},
		{name: "down: token endpoint refuses connections", tokenURL: closed + "/token",
			desc: []string{"token request failed", closed + "/token", "connection refused"}},
		{name: "5xx: 502 HTML page", fault: func(w http.ResponseWriter, _ *http.Request, _ http.Handler) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			_, _ = io.WriteString(w, "<html><body>502 Bad Gateway</body></html>")
		}, desc: []string{"token endpoint answered HTTP 502"}},
		{name: "malformed JSON", fault: func(w http.ResponseWriter, _ *http.Request, _ http.Handler) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"access_token": "at", "token_type": "DPoP", `)
		}, desc: []string{"token request failed", "cannot parse json"}},
		{name: "oversized: 10 MiB with Content-Length", fault: func(w http.ResponseWriter, _ *http.Request, _ http.Handler) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", "10485800")
			bigBody(w, 10<<20)
		}, desc: []string{"token request failed", "upstream response body is 10485800 bytes, more than the 524288-byte limit"}},
		{name: "oversized: 10 MiB chunked", fault: func(w http.ResponseWriter, _ *http.Request, _ http.Handler) {
			w.Header().Set("Content-Type", "application/json")
			bigBody(w, 10<<20)
		}, desc: []string{"token request failed", "upstream response body is larger than the 524288-byte limit"}},
		{name: "wrong content type: token JSON served as text/html", fault: func(w http.ResponseWriter, r *http.Request, next http.Handler) {
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			if rec.Code == http.StatusOK {
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
			}
			w.WriteHeader(rec.Code)
			_, _ = w.Write(rec.Body.Bytes())
		}, desc: []string{"token request failed", `token endpoint answered HTTP 200 with Content-Type "text/html; charset=utf-8", want application/json`}},
	}
}

// TestUpstreamTokenEndpointFaultsEndTheLoginCleanly: each token-endpoint fault ends the login
// with a bounded wait, an OAuth error at the app, no code, and an f event whose details.error and
// error_description say precisely what went wrong. Afterwards no goroutine is left behind.
func TestUpstreamTokenEndpointFaultsEndTheLoginCleanly(t *testing.T) {
	baseline := runtime.NumGoroutine()
	var clients []*http.Client
	for _, tc := range upstreamFaultCases(closedPort(t)) {
		t.Run(tc.name, func(t *testing.T) {
			idp := newFaultIdP(t, dpopUp)
			if tc.fault != nil {
				idp.setFault(tc.fault)
			}
			if tc.tokenURL != "" {
				idp.tokenURL.Store(&tc.tokenURL)
			}
			h := faultHarness(t, idp, nil)
			clients = append(clients, h.broker.upstreamHTTP)
			browser := h.browser()
			resp, _ := get(t, browser, h.authorizeURL(nil))
			q := appResult(t, resp, h.app.URL+"/cb")
			if q.Get("error") != "server_error" || q.Get("code") != "" || !strings.Contains(q.Get("error_description"), "upstream_error") {
				t.Fatalf("app got %v, want error=server_error (upstream_error) and no code", q)
			}
			ev := wantFail(t, h, "upstream_error")
			desc, _ := ev.Details["error_description"].(string)
			for _, want := range tc.desc {
				if !strings.Contains(desc, want) {
					t.Errorf("error_description %q lacks %q", desc, want)
				}
			}
			if ev.Details["dpop_signing_alg"] != "ES256" || ev.Connection != "corp" || ev.ClientID != appClient {
				t.Errorf("f event lacks the login's facts: %+v", ev)
			}
			if tc.tokenURL == "" && idp.tokenCalls.Load() == 0 {
				t.Error("the token endpoint was never called")
			}
			browser.CloseIdleConnections()
		})
	}
	t.Run("down: IdP unreachable at /authorize", func(t *testing.T) {
		idp := newFaultIdP(t, dpopUp)
		h := faultHarness(t, idp, nil)
		clients = append(clients, h.broker.upstreamHTTP)
		idp.srv.Close()
		browser := h.browser()
		resp, body := get(t, browser, h.authorizeURL(nil))
		if resp.Request.URL.Host == h.app.Listener.Addr().String() {
			if q := resp.Request.URL.Query(); q.Get("code") != "" || q.Get("error") == "" {
				t.Fatalf("app got %v, want an error", q)
			}
		} else if resp.StatusCode < 400 {
			t.Fatalf("%d at %s: %s", resp.StatusCode, resp.Request.URL, body)
		}
		ev := wantFail(t, h, "discovery_failed")
		if desc, _ := ev.Details["error_description"].(string); !strings.Contains(desc, idp.URL) || !strings.Contains(desc, "connection refused") {
			t.Errorf("error_description %q should name the issuer and the refused connection", desc)
		}
		browser.CloseIdleConnections()
	})

	// No goroutine or connection leak: every server above is closed; once idle connections
	// are dropped the count returns to the baseline (a few goroutines of slack).
	for _, c := range clients {
		c.CloseIdleConnections()
	}
	http.DefaultClient.CloseIdleConnections()
	waitGoroutines(t, baseline)
}

// waitGoroutines polls (bounded: a minute, for loaded machines) until at most baseline+slack
// goroutines run.
func waitGoroutines(t *testing.T, baseline int) {
	t.Helper()
	const slack = 3
	n := runtime.NumGoroutine()
	for deadline := time.Now().Add(time.Minute); n > baseline+slack && time.Now().Before(deadline); {
		time.Sleep(25 * time.Millisecond)
		n = runtime.NumGoroutine()
	}
	t.Logf("goroutines: %d (baseline %d)", n, baseline)
	if n > baseline+slack {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("goroutine leak: %d running, baseline %d\n%s", n, baseline, buf)
	}
}

// TestUpstreamSigningKeyRotationIsPickedUp: the upstream rotates its signing key mid-run; the
// next login still succeeds because the cached remote key set is refetched on an unknown kid.
func TestUpstreamSigningKeyRotationIsPickedUp(t *testing.T) {
	idp := newFaultIdP(t, dpopUp)
	h := faultHarness(t, idp, nil)
	if q := h.login(); q.Get("code") == "" {
		t.Fatalf("first login: %v", q)
	}
	first := h.lastEventOf(logs.TypeSuccessLogin)
	jwks := idp.jwksCalls.Load()
	next := idp.rotate(t) // new key, new kid; the old one is gone from the JWKS
	q := h.login()
	if q.Get("code") == "" {
		t.Fatalf("login after key rotation: %v (event %+v)", q, h.lastEvent())
	}
	ev := h.lastEvent()
	if ev.Type != logs.TypeSuccessLogin || ev.LogID == first.LogID || ev.Details["dpop_returned_from_upstream"] != true {
		t.Fatalf("after rotation: %+v", ev)
	}
	if next.stats.TokenRequests.Load() == 0 {
		t.Fatal("the rotated provider never issued the token")
	}
	if idp.jwksCalls.Load() <= jwks {
		t.Errorf("JWKS fetched %d times before and %d after the rotation: the new kid was not looked up", jwks, idp.jwksCalls.Load())
	}
	status, body, _ := h.token(h.codeForm(q.Get("code")), true)
	if status != http.StatusOK || body["id_token"] == nil {
		t.Fatalf("token after rotation: %d %v", status, body)
	}
}

// cutProxy is a TCP proxy to Redis that the test can cut (every connection dropped, new ones
// refused) and restore while Redis keeps its data.
type cutProxy struct {
	Addr   string
	target string
	ln     net.Listener
	down   atomic.Bool
	mu     sync.Mutex
	conns  map[net.Conn]bool
	wg     sync.WaitGroup
}

func newCutProxy(t testing.TB, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{Addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.down.Load() {
			_ = c.Close()
			continue
		}
		up, err := net.DialTimeout("tcp", p.target, time.Second)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = true, true
		p.mu.Unlock()
		p.wg.Add(2)
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			_, _ = io.Copy(dst, src)
			_ = dst.Close()
			_ = src.Close()
		}
		go pipe(up, c)
		go pipe(c, up)
	}
}

// cut drops every proxied connection and refuses new ones until restore.
func (p *cutProxy) cut() {
	p.down.Store(true)
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
		delete(p.conns, c)
	}
}

func (p *cutProxy) restore() { p.down.Store(false) }

// countKeys counts the keys of kind under prefix on a Redis node.
func countKeys(t testing.TB, rc *redis.Client, prefix string, kind sessions.Kind) int {
	t.Helper()
	keys, err := rc.Keys(context.Background(), prefix+":"+string(kind)+":*").Result()
	if err != nil {
		t.Fatalf("KEYS: %v", err)
	}
	return len(keys)
}

// redisFaultTimeout is the store timeout of the Redis fault tests: a stopped or cut Redis fails
// at once (connection refused or closed), so it only has to be long enough for the calls that
// succeed, on a loaded machine.
const redisFaultTimeout = 5 * time.Second

// TestRedisStoppedOrCutMidLoginWritesNothingHalfWay: Redis stopped or cut mid-run: every
// endpoint answers 503 at once and recovers without a restart, and a cut during the code
// exchange leaves no half-written session or code.
func TestRedisStoppedOrCutMidLoginWritesNothingHalfWay(t *testing.T) {
	baseline := runtime.NumGoroutine()
	var clients []*http.Client
	defer func() {
		if t.Failed() {
			return
		}
		for _, c := range clients {
			c.CloseIdleConnections()
		}
		http.DefaultClient.CloseIdleConnections()
		waitGoroutines(t, baseline)
	}()
	t.Run("stopped: every endpoint fails fast with 503, recovery without restarting the broker", func(t *testing.T) {
		rs := redistest.StartServer(t)
		st, err := sessions.NewRedis(sessions.RedisConfig{Addrs: []string{rs.Addr}, Timeout: redisFaultTimeout, Prefix: "faults"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		idp := newFaultIdP(t, dpopUp)
		h := faultHarness(t, idp, st)
		clients = append(clients, h.broker.upstreamHTTP)
		q := h.login()
		status, tok, _ := h.token(h.codeForm(q.Get("code")), true)
		if status != http.StatusOK {
			t.Fatalf("token before the outage: %d %v", status, tok)
		}
		at, _ := tok["access_token"].(string)

		rs.Stop()
		resp, body := get(t, h.browser(), h.authorizeURL(nil))
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, codeStoreUnavailable) {
			t.Errorf("/authorize with Redis down: %d %s", resp.StatusCode, body)
		}
		ev := wantFail(t, h, codeStoreUnavailable)
		if ev.ClientID != appClient {
			t.Errorf("f event without the client: %+v", ev)
		}
		if status, body, _ := h.token(h.codeForm("sometag.somesecret"), true); status != http.StatusServiceUnavailable || body["error"] != "temporarily_unavailable" {
			t.Errorf("/oauth/token with Redis down: %d %v", status, body)
		}
		req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/userinfo", nil)
		req.Header.Set("Authorization", "Bearer "+at)
		if r := h.do(req); r.status != http.StatusServiceUnavailable {
			t.Errorf("/userinfo with Redis down: %d %v", r.status, r.body)
		}
		if r, _ := get(t, http.DefaultClient, h.srv.URL+"/readyz"); r.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("/readyz with Redis down: %d", r.StatusCode)
		}

		rs.Restart()                    // a fresh, empty Redis on the same address; the broker keeps running
		h.clock.Advance(readinessReuse) // /readyz reuses an answer for that long
		if r, _ := get(t, http.DefaultClient, h.srv.URL+"/readyz"); r.StatusCode != http.StatusOK {
			t.Errorf("/readyz after Redis returned: %d", r.StatusCode)
		}
		q = h.login()
		if q.Get("code") == "" {
			t.Fatalf("login after Redis returned: %v (event %+v)", q, h.lastEvent())
		}
		if status, tok, _ := h.token(h.codeForm(q.Get("code")), true); status != http.StatusOK || tok["id_token"] == nil {
			t.Fatalf("token after Redis returned: %d %v", status, tok)
		}
	})

	t.Run("cut during the code exchange: 503, f event, no half-written session or code", func(t *testing.T) {
		rs := redistest.StartServer(t)
		proxy := newCutProxy(t, rs.Addr)
		const prefix = "cut"
		st, err := sessions.NewRedis(sessions.RedisConfig{Addrs: []string{proxy.Addr}, Timeout: redisFaultTimeout, Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		raw := redis.NewClient(&redis.Options{Addr: rs.Addr})
		t.Cleanup(func() { _ = raw.Close() })

		idp := newFaultIdP(t, dpopUp)
		arrived, proceed := make(chan struct{}, 1), make(chan struct{})
		idp.setFault(func(w http.ResponseWriter, r *http.Request, next http.Handler) {
			if r.Header.Get("DPoP") != "" {
				select {
				case arrived <- struct{}{}:
				default:
				}
				select {
				case <-proceed:
				case <-idp.release:
				}
			}
			next.ServeHTTP(w, r)
		})
		h := faultHarnessTimeout(t, idp, st, config.LoginExchangeBudget) // the test holds the exchange; no timeout race
		clients = append(clients, h.broker.upstreamHTTP)
		b := h.browser()
		cb := h.toCallback(b, h.authorizeURL(nil))
		if n := countKeys(t, raw, prefix, sessions.KindTransaction); n != 1 {
			t.Fatalf("%d login transactions stored, want 1", n)
		}
		type result struct {
			resp *http.Response
			body string
		}
		done := make(chan result, 1)
		go func() {
			resp, err := b.Get(cb)
			if err != nil {
				done <- result{body: err.Error()}
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			done <- result{resp: resp, body: string(body)}
		}()
		select {
		case <-arrived:
		case r := <-done:
			t.Fatalf("callback finished before the token request: %v %s", r.resp, r.body)
		case <-time.After(time.Minute): // a bound only
			t.Fatal("the token request never arrived within a minute")
		}
		proxy.cut()
		close(proceed)
		var r result
		select {
		case r = <-done:
		case <-time.After(time.Minute): // a bound only: the cut fails the store calls at once
			t.Fatal("callback did not return within a minute after Redis was cut")
		}
		if r.resp == nil || r.resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(r.body, codeStoreUnavailable) {
			t.Fatalf("callback with Redis cut: %v %s", r.resp, r.body)
		}
		wantFail(t, h, codeStoreUnavailable)

		proxy.restore()
		for _, kind := range []sessions.Kind{sessions.KindSession, sessions.KindCode, sessions.KindTransaction} {
			if n := countKeys(t, raw, prefix, kind); n != 0 {
				t.Errorf("%d %s record(s) left after the failed callback, want 0", n, kind)
			}
		}
		idp.fault.Store(nil)
		if q := h.login(); q.Get("code") == "" {
			t.Fatalf("login after Redis came back: %v (event %+v)", q, h.lastEvent())
		}
		if n := countKeys(t, raw, prefix, sessions.KindSession); n != 1 {
			t.Errorf("%d sessions after one good login, want 1", n)
		}
	})
}

// TestUpstreamBodiesOverTheLimitAreRefused: upstream bodies up to the limit pass, one byte
// more is refused, with or without Content-Length.
func TestUpstreamBodiesOverTheLimitAreRefused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		size    int
		chunked bool
		wantErr string
	}{
		{name: "exactly the limit, Content-Length", size: maxUpstreamBody, chunked: false, wantErr: ""},
		{name: "exactly the limit, chunked", size: maxUpstreamBody, chunked: true, wantErr: ""},
		{name: "one byte over, Content-Length", size: maxUpstreamBody + 1, chunked: false, wantErr: "is 524289 bytes, more than the 524288-byte limit"},
		{name: "one byte over, chunked", size: maxUpstreamBody + 1, chunked: true, wantErr: "larger than the 524288-byte limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				if !tc.chunked {
					w.Header().Set("Content-Length", fmt.Sprint(tc.size))
				}
				_, _ = w.Write(make([]byte, tc.size))
			}))
			defer srv.Close()
			c, err := upstreamClient(nil, upstreamHTTPOptions{timeout: 5 * time.Second, policy: loopbackPolicy(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseIdleConnections()
			resp, err := c.Get(srv.URL)
			var n int
			if err == nil {
				var b []byte
				b, err = io.ReadAll(resp.Body)
				n = len(b)
				resp.Body.Close()
			}
			switch {
			case tc.wantErr == "" && (err != nil || n != tc.size):
				t.Fatalf("read %d bytes, err %v; want all %d", n, err, tc.size)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("err %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestUpstreamTimeoutDefaultsAndBounds: upstream_timeout defaults to 10s, must be positive and fit
// in the per-login exchange budget.
func TestUpstreamTimeoutDefaultsAndBounds(t *testing.T) {
	if d := config.Default().UpstreamTimeout; d != 10*time.Second {
		t.Errorf("default upstream_timeout = %v, want 10s", d)
	}
	for _, d := range []time.Duration{0, -time.Second, config.LoginExchangeBudget + time.Second} {
		cfg := config.Default()
		cfg.Issuer = "http://127.0.0.1:8080/"
		cfg.UpstreamTimeout = d
		found := false
		for _, e := range cfg.Validate() {
			found = found || e.Key == "upstream_timeout"
		}
		if !found {
			t.Errorf("upstream_timeout %v: no validation error for the key", d)
		}
	}
}
