package broker

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// testClock is an injectable clock: real time plus an offset the test moves forward, or,
// once stopped, the time it was stopped at plus that offset (so a test's assertions about
// durations do not depend on how fast a loaded machine runs its requests).
type testClock struct {
	mu      sync.Mutex
	off     time.Duration
	stopped time.Time // zero while the clock runs
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.stopped.IsZero() {
		return c.stopped.Add(c.off)
	}
	return time.Now().Add(c.off)
}

// Stop makes the clock stand still; only Advance moves it from then on.
func (c *testClock) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped.IsZero() {
		c.stopped = time.Now()
	}
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.off += d
}

// harness is one broker on loopback with an demoidp IdP and an app callback server.
type harness struct {
	t      testing.TB
	up     *demoidp.Provider
	srv    *httptest.Server
	app    *httptest.Server
	broker *Server
	cfg    *config.Config
	store  sessions.Store
	events *logs.Writer
	clock  *testClock
}

const (
	appClient    = "app"
	appSecret    = "app-secret-value"
	spaClient    = "spa"
	upClientID   = "broker"
	upSecret     = "broker-secret"
	testVerifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXkdBjftJeZ4CVP"
)

type harnessOpts struct {
	up      demoidp.Options
	dpopAlg string // connection dpop_signing_alg; "-" = off; default ES256
	store   sessions.Store
	mutate  func(*config.Config)
	keys    *config.KeyRing
	// eventStore holds the event log (default: a memory store of its own).
	eventStore sessions.Store
	// deps adjusts the broker's collaborators before New (an upstream resolver, TLS roots).
	deps func(*Deps)
	tls  bool // serve the broker over https (issuer https://127.0.0.1:PORT/)
	// upstreamOnClock runs the upstream IdP on the harness clock too (unless up.Now is set).
	upstreamOnClock bool
}

// sharedKeys are generated once per test binary (RSA generation is slow).
var (
	keysOnce       sync.Once
	rsKeys, esKeys *config.KeyRing
	keysErr        error
)

func testKeys(t testing.TB, alg string) *config.KeyRing {
	t.Helper()
	keysOnce.Do(func() {
		cfg := config.Default()
		cfg.Connections = []config.Connection{
			{Name: "a", Options: config.ConnectionOptions{DPoPSigningAlg: "ES256"}},
			{Name: "b", Options: config.ConnectionOptions{DPoPSigningAlg: "Ed25519"}},
			{Name: "c", Options: config.ConnectionOptions{DPoPSigningAlg: "RS256"}},
		}
		if rsKeys, keysErr = config.LoadKeys(cfg, true); keysErr != nil {
			return
		}
		// The ES256 set takes the DPoP keys of the RS256 set: without the RS256 connection
		// LoadKeys generates no RSA DPoP key that would be replaced anyway.
		cfg.Keys.Signing.Alg = "ES256"
		cfg.Connections = cfg.Connections[:2]
		var es *config.KeyRing
		if es, keysErr = config.LoadKeys(cfg, true); keysErr != nil {
			return
		}
		es.DPoP = rsKeys.DPoP
		esKeys = es
	})
	if keysErr != nil {
		t.Fatalf("keys: %v", keysErr)
	}
	if alg == "ES256" {
		return esKeys
	}
	return rsKeys
}

func newHarness(t testing.TB, o harnessOpts) *harness {
	t.Helper()
	if o.up.ClientID == "" {
		o.up.ClientID, o.up.ClientSecret = upClientID, upSecret
	}
	clock := &testClock{}
	if o.upstreamOnClock && o.up.Now == nil {
		o.up.Now = clock.Now
	}
	up, err := demoidp.Start(o.up)
	if err != nil {
		t.Fatalf("upstream: %v", err)
	}
	t.Cleanup(up.Close)
	h := &harness{t: t, up: up, clock: clock}
	h.app = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "app callback")
	}))
	t.Cleanup(h.app.Close)
	h.srv = httptest.NewUnstartedServer(nil)
	alg := o.dpopAlg
	if alg == "" {
		alg = "ES256"
	}
	if alg == "-" {
		alg = ""
	}
	cfg := config.Default()
	cfg.Issuer = "http://" + h.srv.Listener.Addr().String() + "/"
	if o.tls {
		cfg.Issuer = "https://" + h.srv.Listener.Addr().String() + "/"
	}
	cfg.DPoP.RetryDelay, cfg.DPoP.Jitter = 0, 0
	cfg.Clients = []config.Client{
		{ClientID: appClient, Name: "Test App", ClientSecret: appSecret, RedirectURIs: []string{h.app.URL + "/cb"}, Connections: []string{"corp"}},
		{ClientID: spaClient, Name: "Test SPA", RedirectURIs: []string{h.app.URL + "/spa"}, Connections: []string{"corp", "other"}},
	}
	cfg.Connections = []config.Connection{
		{Name: "corp", Strategy: "oidc", Options: config.ConnectionOptions{
			Issuer: up.URL, ClientID: upClientID, ClientSecret: upSecret, DPoPSigningAlg: alg, FetchUserinfo: true,
		}},
		{Name: "other", Strategy: "oidc", Options: config.ConnectionOptions{
			Issuer: up.URL, ClientID: upClientID, ClientSecret: upSecret,
		}},
	}
	// The test IdPs and apps listen on loopback, which the upstream address policy refuses
	// by default; tests of that refusal take it out again in mutate.
	cfg.UpstreamAllowedNetworks = []string{"127.0.0.0/8"}
	cfg.RateLimits.Enabled = false // on by default (serve); tests of the limits turn them on
	if o.mutate != nil {
		o.mutate(cfg)
	}
	cfg.ApplyDefaults()
	h.cfg = cfg
	h.store = o.store
	if h.store == nil {
		h.store = sessions.NewMemory()
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	evStore := o.eventStore
	if evStore == nil {
		evStore = sessions.NewMemory()
	}
	h.events = &logs.Writer{Logger: logger, Store: evStore, Now: h.clock.Now}
	keys := o.keys
	if keys == nil {
		keys = testKeys(t, cfg.Keys.Signing.Alg)
	}
	deps := Deps{Store: h.store, Events: h.events, Logger: logger, Now: h.clock.Now, Keys: keys}
	if o.deps != nil {
		o.deps(&deps)
	}
	b, err := New(cfg, deps)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.broker = b
	t.Cleanup(b.Close) // runs before the servers close (cleanups run last-registered first)
	h.srv.Config.Handler = b.Handler()
	if o.tls {
		h.srv.StartTLS()
	} else {
		h.srv.Start()
	}
	t.Cleanup(h.srv.Close)
	return h
}

// browser returns a client with a cookie jar that follows redirects (trusting the broker's
// test certificate when it serves https).
func (h *harness) browser() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 30 * time.Second, Transport: h.client().Transport}
}

// client is a client without cookies for direct requests to the broker.
func (h *harness) client() *http.Client {
	if h.srv.TLS != nil {
		return h.srv.Client()
	}
	return http.DefaultClient
}

// authorizeURL builds /authorize for the confidential app with PKCE S256.
func (h *harness) authorizeURL(mut func(q url.Values)) string {
	q := url.Values{
		"response_type": {"code"}, "client_id": {appClient}, "redirect_uri": {h.app.URL + "/cb"},
		"scope": {"openid profile email"}, "state": {"app-state-123"}, "nonce": {"app-nonce-456"},
		"code_challenge": {s256(testVerifier)}, "code_challenge_method": {"S256"},
	}
	if mut != nil {
		mut(q)
	}
	return h.srv.URL + "/authorize?" + q.Encode()
}

func s256(v string) string {
	sum := sha256.Sum256([]byte(v))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// get fetches u with c, following redirects, and returns the final response (body read).
func get(t testing.TB, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// toCallback follows the login until the upstream sends the browser to the broker's
// callback and returns that URL (not fetched).
func (h *harness) toCallback(c *http.Client, authorizeURL string) string {
	h.t.Helper()
	stop := *c
	stop.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
		if strings.HasPrefix(req.URL.String(), h.srv.URL+"/login/callback") {
			return http.ErrUseLastResponse
		}
		return nil
	}
	resp, err := stop.Get(authorizeURL)
	if err != nil {
		h.t.Fatalf("GET %s: %v", authorizeURL, err)
	}
	_ = resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound && resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, h.srv.URL+"/login/callback") {
		h.t.Fatalf("expected a redirect to the callback, got %d Location %q", resp.StatusCode, loc)
	}
	return loc
}

// appResult is the app's callback query after a login (final URL of the browser).
func appResult(t testing.TB, resp *http.Response, wantPrefix string) url.Values {
	t.Helper()
	if !strings.HasPrefix(resp.Request.URL.String(), wantPrefix) {
		t.Fatalf("browser ended at %s (status %d), want the app at %s", resp.Request.URL, resp.StatusCode, wantPrefix)
	}
	return resp.Request.URL.Query()
}

// lastEvent returns the newest event in the broker's log.
func (h *harness) lastEvent() logs.Event {
	h.t.Helper()
	evs, err := h.events.Recent(context.Background(), "", 1)
	if err != nil || len(evs) == 0 {
		h.t.Fatalf("no event recorded (err %v)", err)
	}
	return evs[0]
}

// token redeems code at /oauth/token with client_secret_basic.
func (h *harness) token(form url.Values, basic bool) (int, map[string]any, http.Header) {
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basic {
		req.SetBasicAuth(appClient, appSecret)
	}
	resp, err := h.client().Do(req)
	if err != nil {
		h.t.Fatalf("token: %v", err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body, resp.Header
}

func (h *harness) codeForm(code string) url.Values {
	return url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {h.app.URL + "/cb"},
		"code_verifier": {testVerifier},
	}
}

// login runs a full login for the confidential app and returns the app's callback query.
func (h *harness) login() url.Values {
	h.t.Helper()
	resp, _ := get(h.t, h.browser(), h.authorizeURL(nil))
	return appResult(h.t, resp, h.app.URL+"/cb")
}

// lastEventOf returns the newest event of type typ.
func (h *harness) lastEventOf(typ string) logs.Event {
	h.t.Helper()
	evs, err := h.events.Recent(context.Background(), "", 50)
	if err != nil {
		h.t.Fatalf("events: %v", err)
	}
	for _, ev := range evs {
		if ev.Type == typ {
			return ev
		}
	}
	h.t.Fatalf("no %s event recorded", typ)
	return logs.Event{}
}

func detail(ev logs.Event, k string) any { return ev.Details[k] }

func oauth2Static(at string) oauth2.TokenSource {
	return oauth2.StaticTokenSource(&oauth2.Token{AccessToken: at, TokenType: "Bearer"})
}

// updateClient changes the stored client id (as the management API or an edited YAML entry
// would: clients live in the store) and makes h's broker see the change at once.
func (h *harness) updateClient(id string, change func(*config.Client)) {
	h.t.Helper()
	ctx := context.Background()
	if _, err := h.broker.reg.current(ctx, false); err != nil { // seeds the YAML clients
		h.t.Fatal(err)
	}
	raw, err := h.broker.reg.clients.GetClient(ctx, id)
	if err != nil {
		h.t.Fatalf("client %s: %v", id, err)
	}
	var doc storedClient
	if err := json.Unmarshal(raw, &doc); err != nil {
		h.t.Fatal(err)
	}
	change(&doc.Client)
	if raw, err = json.Marshal(doc); err != nil {
		h.t.Fatal(err)
	}
	if err := h.broker.reg.clients.UpdateClient(ctx, id, raw); err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.broker.reg.current(ctx, true); err != nil {
		h.t.Fatal(err)
	}
}
