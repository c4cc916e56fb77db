package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/config/configtest"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// noRedirect is a client that returns the first response (loopback, generous timeout).
func noRedirect(c *http.Client) *http.Client {
	cc := *c
	cc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if cc.Timeout == 0 {
		cc.Timeout = 30 * time.Second
	}
	return &cc
}

// do sends req with c and returns the response with its body read.
func do(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// rateLimitOf returns details.rate_limit of ev.
func rateLimitOf(t *testing.T, ev logs.Event) map[string]any {
	t.Helper()
	rl, ok := ev.Details["rate_limit"].(map[string]any)
	if !ok {
		t.Fatalf("event without details.rate_limit: %+v", ev)
	}
	return rl
}

func TestLiveTransactionTableBoundsSlotsPerKey(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	exp := func(d time.Duration) int64 { return t0.Add(d).UnixMilli() }
	t.Run("a key holds at most limit live transactions; Retry-After is the first expiry", func(t *testing.T) {
		tb := newLiveTxTable(2, 10)
		if tb.reserve("k", t0, exp(10*time.Minute)) != nil || tb.reserve("k", t0.Add(time.Minute), exp(11*time.Minute)) != nil {
			t.Fatal("a slot within the limit was refused")
		}
		ref := tb.reserve("k", t0.Add(2*time.Minute), exp(12*time.Minute))
		if ref == nil || ref.retryAfter != 8*time.Minute || ref.by != byLiveTransactions || ref.limit != "2" {
			t.Fatalf("refusal %+v", ref)
		}
		if d := ref.description(); d != "too many sign-ins in progress from this address (limit 2); retry after 480 s" {
			t.Fatalf("description %q", d)
		}
		if d := ref.details(); d["by"] != byLiveTransactions || d["limit"] != "2" || d["burst"] != nil || d["retry_after"] != int64(480) {
			t.Fatalf("details %v", d)
		}
		if tb.reserve("other", t0, exp(10*time.Minute)) != nil {
			t.Fatal("another key was refused")
		}
	})
	t.Run("release frees the slot of that transaction only", func(t *testing.T) {
		tb := newLiveTxTable(2, 10)
		_ = tb.reserve("k", t0, exp(10*time.Minute))
		_ = tb.reserve("k", t0, exp(11*time.Minute))
		tb.release("k", exp(99*time.Minute), t0) // not one of its transactions
		tb.release("unknown", exp(10*time.Minute), t0)
		if tb.held("k", t0) != 2 || tb.len() != 1 {
			t.Fatalf("unknown releases changed the table: held %d, keys %d", tb.held("k", t0), tb.len())
		}
		tb.release("k", exp(11*time.Minute), t0)
		if tb.held("k", t0) != 1 {
			t.Fatalf("held %d after a release, want 1", tb.held("k", t0))
		}
		if ref := tb.reserve("k", t0, exp(12*time.Minute)); ref != nil {
			t.Fatalf("freed slot refused: %+v", ref)
		}
	})
	t.Run("expired transactions free their slots on the broker clock", func(t *testing.T) {
		tb := newLiveTxTable(1, 10)
		_ = tb.reserve("k", t0, exp(10*time.Minute))
		if tb.reserve("k", t0.Add(10*time.Minute-time.Millisecond), exp(20*time.Minute)) == nil {
			t.Fatal("second slot before the first expired")
		}
		if ref := tb.reserve("k", t0.Add(10*time.Minute), exp(20*time.Minute)); ref != nil {
			t.Fatalf("refused after the first transaction expired: %+v", ref)
		}
	})
	t.Run("keys are bounded: the least recently seen is forgotten", func(t *testing.T) {
		tb := newLiveTxTable(1, 100)
		_ = tb.reserve("hot", t0, exp(time.Hour))
		for i := range 10_000 {
			if tb.reserve("spoof-"+strconv.Itoa(i), t0, exp(time.Hour)) != nil {
				t.Fatal("a new key was refused")
			}
			if i%50 == 0 && tb.reserve("hot", t0, exp(time.Hour)) == nil { // recently used: kept
				t.Fatalf("hot key forgotten after %d spoofed keys", i)
			}
			if n := tb.len(); n > 100 {
				t.Fatalf("table grew to %d keys", n)
			}
		}
	})
}

func TestLiveTransactionsPerIPAreBoundedAtAuthorize(t *testing.T) {
	h := rlHarness(t, func(rl *config.RateLimits) { rl.LiveTransactionsPerIP = 2 })
	first, second := h.browser(), h.browser()
	cb1 := h.toCallback(first, h.authorizeURL(nil)) // both from 127.0.0.1, left at the IdP
	_ = h.toCallback(second, h.authorizeURL(nil))

	before := h.up.Stats.AuthorizeRequests.Load()
	req, _ := http.NewRequest(http.MethodGet, h.authorizeURL(nil), nil)
	resp, body := do(t, noRedirect(h.browser()), req)
	// Retry-After: until the first transaction expires (10 minutes after it started).
	if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); resp.StatusCode != http.StatusTooManyRequests || ra > 600 || ra < 540 ||
		resp.Header.Get("Location") != "" || !strings.Contains(body, codeTooManyRequests) {
		t.Fatalf("third live transaction: %d Retry-After %q Location %q", resp.StatusCode, resp.Header.Get("Retry-After"), resp.Header.Get("Location"))
	}
	for _, c := range resp.Cookies() {
		if c.Name == txCookie {
			t.Fatal("a refused login set the transaction cookie")
		}
	}
	if h.up.Stats.AuthorizeRequests.Load() != before {
		t.Fatal("the browser was sent to the IdP")
	}
	ev := wantFail(t, h, codeTooManyRequests)
	if rl := rateLimitOf(t, ev); rl["endpoint"] != "authorize" || rl["by"] != byLiveTransactions || rl["limit"] != "2" ||
		ev.ClientID != appClient || ev.Connection != "corp" || ev.IP != "127.0.0.1" {
		t.Fatalf("event %+v", ev)
	}
	if rec := h.authorizeFrom("192.0.2.9:1", nil); rec.Code != http.StatusFound {
		t.Fatalf("another address: %d", rec.Code)
	}

	// Finishing a login gives its slot back.
	resp, _ = get(t, first, cb1)
	if q := appResult(t, resp, h.app.URL+"/cb"); q.Get("code") == "" {
		t.Fatalf("login did not finish: %v", q)
	}
	third := h.browser()
	_ = h.toCallback(third, h.authorizeURL(nil))
	if rec := h.authorizeFrom("127.0.0.1:1", nil); rec.Code != http.StatusTooManyRequests {
		t.Fatalf("over the bound again: %d", rec.Code)
	}
	// Abandoned transactions give theirs back when they expire.
	h.clock.Advance(h.cfg.Lifetimes.Transaction)
	for i := range 2 {
		if rec := h.authorizeFrom("127.0.0.1:1", nil); rec.Code != http.StatusFound {
			t.Fatalf("after the transactions expired, request %d: %d", i, rec.Code)
		}
	}
}

// parUpstream is an upstream whose discovery offers pushed authorization requests (RFC 9126)
// and that counts the pushes it receives; a push fails while failing is set.
type parUpstream struct {
	srv     *httptest.Server
	pushes  atomic.Int64
	failing atomic.Bool
}

func newPARUpstream(t *testing.T) *parUpstream {
	t.Helper()
	u := &parUpstream{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		doc := demoidp.Metadata{Issuer: u.srv.URL, IDTokenAlgs: []string{"RS256"}, PKCE: true}.Document()
		doc["pushed_authorization_request_endpoint"] = u.srv.URL + "/par"
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(doc)
	})
	mux.HandleFunc("POST /par", func(w http.ResponseWriter, _ *http.Request) {
		n := u.pushes.Add(1)
		w.Header().Set("Content-Type", "application/json")
		if u.failing.Load() {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"error":"invalid_request"}`)
			return
		}
		w.WriteHeader(http.StatusCreated)
		_, _ = fmt.Fprintf(w, `{"request_uri":"urn:ietf:params:oauth:request_uri:%d","expires_in":60}`, n)
	})
	u.srv = httptest.NewServer(mux)
	t.Cleanup(u.srv.Close)
	return u
}

func TestLoginsOverTheLiveBoundPushNothingUpstream(t *testing.T) {
	up := newPARUpstream(t)
	h := newHarness(t, harnessOpts{up: dpopUp, dpopAlg: "-", mutate: func(c *config.Config) {
		c.RateLimits.Enabled = true
		unlimited := config.RateLimit{Rate: "0"}
		c.RateLimits.Authorize.EndpointRateLimits = config.EndpointRateLimits{PerIP: unlimited, PerClient: unlimited}
		c.RateLimits.LiveTransactionsPerIP = 2
		c.Connections[0].Options.Issuer, c.Connections[0].Options.UsePAR = up.srv.URL, true
	}})

	accepted, refused := 0, 0
	for i := range 20 {
		switch rec := h.authorizeFrom("192.0.2.5:1", nil); rec.Code {
		case http.StatusFound:
			accepted++
		case http.StatusTooManyRequests:
			refused++
		default:
			t.Fatalf("request %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	if accepted != 2 || refused != 18 || up.pushes.Load() != int64(accepted) {
		t.Fatalf("%d accepted, %d refused, %d pushed upstream; want 2, 18 and one push per accepted login", accepted, refused, up.pushes.Load())
	}
	if ev := wantFail(t, h, codeTooManyRequests); ev.Connection != "corp" || rateLimitOf(t, ev)["by"] != byLiveTransactions {
		t.Fatalf("event %+v", ev)
	}

	// A push the upstream refuses gives its slot back: the address is not locked out by
	// logins that never started.
	up.failing.Store(true)
	for i := range 3 {
		rec := h.authorizeFrom("192.0.2.6:1", nil)
		if loc := rec.Header().Get("Location"); rec.Code != http.StatusFound || !strings.HasPrefix(loc, h.app.URL+"/cb?") || !strings.Contains(loc, "error=temporarily_unavailable") {
			t.Fatalf("failed push %d: %d Location %q, want the error sent to the app", i, rec.Code, loc)
		}
	}
	if n := h.broker.guard.liveTx.held("192.0.2.6", h.clock.Now()); n != 0 || up.pushes.Load() != 5 {
		t.Fatalf("after 3 refused pushes: %d slots held, %d pushes; want 0 and 5", n, up.pushes.Load())
	}
	up.failing.Store(false)
	if rec := h.authorizeFrom("192.0.2.6:1", nil); rec.Code != http.StatusFound {
		t.Fatalf("after the upstream recovered: %d", rec.Code)
	}
}

func TestFullMemoryStoreAnswers503AtAuthorize(t *testing.T) {
	const limit = 3
	st := sessions.NewMemoryWithOptions(sessions.MemoryOptions{MaxRecords: limit})
	h := newHarness(t, harnessOpts{up: dpopUp, store: st, mutate: func(c *config.Config) { c.RateLimits.Enabled = true }})
	var states []string // the transactions' store ids (state and cookie hash)
	for range limit {
		rec := h.authorizeFrom("192.0.2.1:1", nil)
		u, _ := url.Parse(rec.Header().Get("Location"))
		for _, c := range rec.Result().Cookies() {
			if st := u.Query().Get("state"); st != "" && c.Name == txCookie {
				states = append(states, txID(st, hashString(c.Value)))
			}
		}
	}
	if len(states) != limit {
		t.Fatalf("%d logins started, want %d", len(states), limit)
	}

	rec := h.authorizeFrom("192.0.2.7:1", nil)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Location") != "" ||
		!strings.Contains(rec.Body.String(), codeStoreFull) || strings.Contains(rec.Header().Get("Set-Cookie"), txCookie) {
		t.Fatalf("full store: %d Location %q Set-Cookie %q", rec.Code, rec.Header().Get("Location"), rec.Header().Get("Set-Cookie"))
	}
	ev := wantFail(t, h, codeStoreFull)
	if ev.ClientID != appClient || ev.Connection != "corp" {
		t.Fatalf("event %+v", ev)
	}
	if n := h.broker.guard.liveTx.held("192.0.2.7", h.clock.Now()); n != 0 {
		t.Fatalf("the unstored transaction holds %d live slots", n)
	}

	// Room again (a transaction taken, as by its callback or its expiry): logins start again.
	if _, err := st.Take(t.Context(), sessions.KindTransaction, states[0]); err != nil {
		t.Fatal(err)
	}
	if rec := h.authorizeFrom("192.0.2.7:1", nil); rec.Code != http.StatusFound {
		t.Fatalf("after room was made: %d", rec.Code)
	}
}

func TestFullMemoryStoreAtCallbackWritesNothing(t *testing.T) {
	const limit = 2
	st := sessions.NewMemoryWithOptions(sessions.MemoryOptions{MaxRecords: limit})
	h := newHarness(t, harnessOpts{up: dpopUp, store: st})
	c := h.browser()
	cb := h.toCallback(c, h.authorizeURL(nil)) // one record: the transaction
	if err := st.Put(t.Context(), sessions.KindNonce, "filler", []byte("x"), time.Hour); err != nil {
		t.Fatal(err)
	}
	// The callback takes the transaction (one record free) and needs two: session and code.
	resp, body := get(t, c, cb)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.HasPrefix(resp.Request.URL.String(), h.srv.URL+"/login/callback") ||
		!strings.Contains(body, codeStoreFull) {
		t.Fatalf("callback on a full store: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	for _, ck := range resp.Cookies() {
		if ck.Name == sessionCookie && ck.MaxAge >= 0 {
			t.Fatal("a session cookie was set although no session was stored")
		}
	}
	ev := wantFail(t, h, codeStoreFull)
	if ev.Details["session_id"] != nil || ev.ClientID != appClient {
		t.Fatalf("event %+v", ev)
	}
	// Nothing half-written: of the two records, only the filler is left.
	if err := st.Create(t.Context(), sessions.KindNonce, "probe", []byte("x"), time.Hour); err != nil {
		t.Fatalf("the free record is taken (a session or code was half-written): %v", err)
	}
	if err := st.Create(t.Context(), sessions.KindNonce, "probe2", []byte("x"), time.Hour); !errors.Is(err, sessions.ErrFull) {
		t.Fatalf("third record: %v, want ErrFull", err)
	}
}

func TestCallbackIsRateLimitedPerIP(t *testing.T) {
	h := rlHarness(t, func(rl *config.RateLimits) { rl.Callback.PerIP = config.RateLimit{Rate: "1/h", Burst: 2} })
	callback := func(remote string) *httptest.ResponseRecorder {
		req := getRaw("/login/callback", "state=forged&code=abc")
		req.RemoteAddr = remote
		return h.serve(req)
	}
	for i := range 2 {
		if rec := callback("192.0.2.1:1"); rec.Code != http.StatusBadRequest {
			t.Fatalf("callback %d within the burst: %d", i, rec.Code)
		}
	}
	wantTooMany(t, callback("192.0.2.1:2"), 3600)
	ev := wantFail(t, h, codeTooManyRequests)
	if rl := rateLimitOf(t, ev); rl["endpoint"] != "callback" || rl["by"] != "ip" || ev.IP != "192.0.2.1" {
		t.Fatalf("event %+v", ev)
	}
	if rec := callback("192.0.2.2:1"); rec.Code != http.StatusBadRequest {
		t.Fatalf("another address: %d", rec.Code)
	}
}

func TestLogoutIsRateLimitedPerIP(t *testing.T) {
	h := rlHarness(t, func(rl *config.RateLimits) { rl.Logout.PerIP = config.RateLimit{Rate: "1/h", Burst: 3} })
	send := func(method, path, remote string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, nil)
		if method == http.MethodPost {
			req = httptest.NewRequest(method, path, strings.NewReader("client_id="+appClient))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		req.RemoteAddr = remote
		return h.serve(req)
	}
	// GET and POST /oidc/logout and /v2/logout share one bucket per address.
	for _, r := range []struct{ method, path string }{
		{method: http.MethodGet, path: "/oidc/logout"}, {method: http.MethodPost, path: "/oidc/logout"}, {method: http.MethodGet, path: "/v2/logout"},
	} {
		if rec := send(r.method, r.path, "192.0.2.1:1"); rec.Code != http.StatusOK {
			t.Fatalf("%s %s within the burst: %d %s", r.method, r.path, rec.Code, rec.Body.String())
		}
	}
	for _, r := range []struct{ method, path string }{
		{method: http.MethodPost, path: "/oidc/logout"}, {method: http.MethodGet, path: "/v2/logout"},
		{method: http.MethodGet, path: "/logout/federated?state=x"}, {method: http.MethodGet, path: "/oidc/logout?client_id=" + appClient},
	} { // the last refusal's event is checked below
		wantTooMany(t, send(r.method, r.path, "192.0.2.1:2"), 3600)
	}
	ev := h.lastEventOf(logs.TypeFailedLogout)
	if rl := rateLimitOf(t, ev); ev.Details["error"] != codeTooManyRequests || rl["endpoint"] != "logout" || rl["by"] != "ip" ||
		ev.ClientID != appClient || ev.IP != "192.0.2.1" {
		t.Fatalf("event %+v", ev)
	}
	if rec := send(http.MethodGet, "/oidc/logout", "192.0.2.2:1"); rec.Code != http.StatusOK {
		t.Fatalf("another address: %d", rec.Code)
	}
}

func TestAuthorizeClientBucketNeedsARegisteredRedirectURI(t *testing.T) {
	h := rlHarness(t, func(rl *config.RateLimits) { rl.Authorize.PerClient = config.RateLimit{Rate: "1/h", Burst: 1} })
	for i := range 20 { // the app's client_id with a redirect_uri it did not register, or none
		rec := h.authorizeFrom(fmt.Sprintf("198.51.100.%d:1", i), func(q url.Values) {
			if i%2 == 0 {
				q.Set("redirect_uri", "https://attacker.example/cb")
			} else {
				q.Del("redirect_uri")
			}
		})
		if rec.Code != http.StatusBadRequest {
			t.Fatalf("request %d: %d, want the invalid_redirect_uri page", i, rec.Code)
		}
	}
	if rec := h.authorizeFrom("192.0.2.1:1", nil); rec.Code != http.StatusFound {
		t.Fatalf("the app was limited by requests it never made: %d", rec.Code)
	}
	// Requests with a registered redirect_uri do spend it, from any address (README: limits).
	wantTooMany(t, h.authorizeFrom("192.0.2.2:1", nil), 3600)
}

// TestTokenFloodWithWrongCredentialsDoesNotLockOutTheApp: an attacker behind the trusted
// proxy floods /oauth/token and /oauth/revoke naming the app with wrong or missing
// credentials; the app, from another address, keeps logging in and redeeming its codes, while
// the attacker runs into its own per-IP limit.
func TestTokenFloodWithWrongCredentialsDoesNotLockOutTheApp(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp, mutate: func(c *config.Config) {
		c.TrustedProxies = []string{"127.0.0.0/8"}
		c.RateLimits.Enabled = true
		c.RateLimits.Token.EndpointRateLimits = config.EndpointRateLimits{
			PerIP:     config.RateLimit{Rate: "1/h", Burst: 30},
			PerClient: config.RateLimit{Rate: "1/h", Burst: 5},
		}
	}})
	const attacker = "198.51.100.66"
	attack := func(i int) int {
		path, form := "/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {"guessed.code"}}
		basicSecret := ""
		switch i % 4 {
		case 0:
			basicSecret = "wrong-secret"
		case 1:
			form.Set("client_id", appClient) // no credentials at all
		case 2:
			form.Set("client_id", appClient)
			form.Set("client_secret", "wrong-secret")
		case 3:
			path, form = "/oauth/revoke", url.Values{"token": {"x"}}
			basicSecret = "wrong-secret"
		}
		req, _ := http.NewRequest(http.MethodPost, h.srv.URL+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Forwarded-For", attacker)
		if basicSecret != "" {
			req.SetBasicAuth(appClient, basicSecret)
		}
		resp, _ := do(t, http.DefaultClient, req)
		return resp.StatusCode
	}
	refused, limited := 0, 0
	for round := range 3 {
		for i := range 20 {
			switch code := attack(round*20 + i); code {
			case http.StatusUnauthorized:
				refused++
			case http.StatusTooManyRequests:
				limited++
			default:
				t.Fatalf("attack request %d: %d", round*20+i, code)
			}
		}
		code := h.login().Get("code") // the app, from 127.0.0.1
		status, body, _ := h.token(h.codeForm(code), true)
		if status != http.StatusOK || body["access_token"] == nil {
			t.Fatalf("round %d: the app got %d %v", round, status, body)
		}
	}
	if refused != 30 || limited != 30 {
		t.Fatalf("attacker: %d refused (401), %d rate-limited, want 30 and 30", refused, limited)
	}
	ev := h.lastEventOf(logs.TypeFailedExchange)
	if ev.IP != attacker {
		t.Fatalf("last failed exchange from %s, want the attacker", ev.IP)
	}
}

func TestRateLimitsOnByDefault(t *testing.T) {
	configtest.SetEnv(t)
	cfg, err := config.Parse([]byte(configtest.ValidYAML)) // as `broker serve` loads a file without rate_limits
	if err != nil {
		t.Fatal(err)
	}
	rl := cfg.RateLimits
	if !rl.Enabled || rl.LiveTransactionsPerIP != 50 || rl.Authorize.PerIP != (config.RateLimit{Rate: "20/s", Burst: 40}) ||
		rl.Callback.PerIP != (config.RateLimit{Rate: "20/s", Burst: 40}) || rl.Logout.PerIP != (config.RateLimit{Rate: "10/s", Burst: 20}) ||
		rl.Token.PerIP != (config.RateLimit{Rate: "100/s", Burst: 200}) || rl.Token.PerClient != (config.RateLimit{Rate: "200/s", Burst: 400}) ||
		cfg.Store.Memory.MaxRecords != sessions.DefaultMaxRecords {
		t.Fatalf("defaults %+v, store.memory %+v", rl, cfg.Store.Memory)
	}
	g, err := newGuard(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if g.authorizeIP == nil || g.callbackIP == nil || g.tokenIP == nil ||
		g.tokenClient == nil || g.logoutIP == nil || g.liveTx == nil {
		t.Fatalf("a default limiter is missing: %+v", g)
	}
	if g.authorizeClient != nil { // no client authentication at /authorize: anyone would spend it
		t.Fatal("the per-client /authorize limit is on by default")
	}
	off, err := config.Parse([]byte(configtest.ValidYAML + "rate_limits: { enabled: false }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if g, _ := newGuard(off, nil); g.authorizeIP != nil || g.callbackIP != nil || g.logoutIP != nil || g.liveTx != nil || g.tokenClient != nil {
		t.Fatal("limiters built with rate_limits.enabled false")
	}
}

func TestBoundedStateConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		mut  func(c *config.Config)
		want config.FieldError
	}{
		{name: "callback per-IP rate must parse", mut: func(c *config.Config) { c.RateLimits.Callback.PerIP.Rate = "lots" },
			want: config.FieldError{Key: "rate_limits.callback.per_ip.rate", Reason: `"lots" is not a rate (use N/s, N/m or N/h, e.g. 20/s; 0 = unlimited)`}},
		{name: "logout per-IP rate needs a burst", mut: func(c *config.Config) { c.RateLimits.Logout.PerIP.Burst = 0 },
			want: config.FieldError{Key: "rate_limits.logout.per_ip.burst", Reason: "must be between 1 and 1000000 when a rate is set"}},
		{name: "live transactions per IP not negative", mut: func(c *config.Config) { c.RateLimits.LiveTransactionsPerIP = -1 },
			want: config.FieldError{Key: "rate_limits.live_transactions_per_ip", Reason: "must be between 0 (unbounded) and 10000"}},
		{name: "live transactions per IP bounded", mut: func(c *config.Config) { c.RateLimits.LiveTransactionsPerIP = 10_001 },
			want: config.FieldError{Key: "rate_limits.live_transactions_per_ip", Reason: "must be between 0 (unbounded) and 10000"}},
		{name: "memory store record limit too small", mut: func(c *config.Config) { c.Store.Memory.MaxRecords = 99 },
			want: config.FieldError{Key: "store.memory.max_records", Reason: "must be between 100 and 100000000"}},
		{name: "memory store record limit too large", mut: func(c *config.Config) { c.Store.Memory.MaxRecords = 100_000_001 },
			want: config.FieldError{Key: "store.memory.max_records", Reason: "must be between 100 and 100000000"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			configtest.SetEnv(t)
			cfg, err := config.Parse([]byte(configtest.ValidYAML))
			if err != nil {
				t.Fatal(err)
			}
			tc.mut(cfg)
			if errs := cfg.Validate(); len(errs) != 1 || errs[0] != tc.want {
				t.Fatalf("got %v, want exactly %v", config.FieldErrors(errs), tc.want)
			}
		})
	}
	t.Run("YAML shape", func(t *testing.T) {
		configtest.SetEnv(t)
		cfg, err := config.Parse([]byte(configtest.ValidYAML + `
store:
  memory: { max_records: 5000 }
rate_limits:
  live_transactions_per_ip: 0
  callback: { per_ip: { rate: "5/s", burst: 10 } }
  logout: { per_ip: { rate: "0" } }
`))
		if err != nil {
			t.Fatal(err)
		}
		rl := cfg.RateLimits
		if cfg.Store.Memory.MaxRecords != 5000 || rl.LiveTransactionsPerIP != 0 || rl.Callback.PerIP != (config.RateLimit{Rate: "5/s", Burst: 10}) ||
			rl.Logout.PerIP.Rate != "0" || !rl.Enabled {
			t.Fatalf("decoded %+v %+v", rl, cfg.Store)
		}
		if errs := cfg.Validate(); len(errs) != 0 {
			t.Fatal(config.FieldErrors(errs))
		}
		if g, _ := newGuard(cfg, nil); g.liveTx != nil || g.logoutIP != nil || g.callbackIP == nil {
			t.Fatalf("0 must mean unlimited: %+v", g)
		}
		_, err = config.Parse([]byte("rate_limits:\n  callback:\n    per_client: { rate: 5/s }\n"))
		if err == nil || !strings.Contains(err.Error(), "rate_limits.callback.per_client: unknown key") {
			t.Fatalf("per_client at the callback: %v", err)
		}
	})
}
