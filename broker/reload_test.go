package broker

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

const (
	reloadKeepToken = "reload-keep-token-0123456789abcdefghij"
	reloadGoneToken = "reload-gone-token-0123456789abcdefghij"
)

// reloadHarness is a harness with two management tokens (keep: every client and connection
// scope; gone: read:clients) and rate limits on.
func reloadHarness(t *testing.T) *harness {
	t.Helper()
	return newHarness(t, harnessOpts{mutate: func(c *config.Config) {
		c.Management.Tokens = []config.ManagementToken{
			{Name: "keep", Token: reloadKeepToken, Scopes: []string{config.ScopeReadClients, config.ScopeUpdateClients,
				config.ScopeReadConnections, config.ScopeCreateConnections}},
			{Name: "gone", Token: reloadGoneToken, Scopes: []string{config.ScopeReadClients}},
		}
		c.RateLimits.Enabled = true
	}})
}

// reload applies the harness's configuration changed by mutate (on a copy whose lists may be
// replaced or edited) and returns Reload's error.
func (h *harness) reload(mutate func(*config.Config)) error {
	h.t.Helper()
	cur := h.broker.views.cur.Load().cfg
	return h.broker.Reload(context.Background(), func() (*config.Config, error) {
		next := *cur
		next.Clients = slices.Clone(cur.Clients)
		next.Connections = slices.Clone(cur.Connections)
		next.Management.Tokens = slices.Clone(cur.Management.Tokens)
		mutate(&next)
		next.ApplyDefaults()
		return &next, nil
	})
}

// reloadCall sends a management request to handler h with token and returns the status and body.
func reloadCall(t *testing.T, h http.Handler, method, path, token, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, rd)
	req.RemoteAddr = "192.0.2.1:1234"
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

// A management token removed from the file is refused by every request dispatched after the
// reload, while a request dispatched to the previous view (in flight when it happened)
// finishes on the configuration it started with.
func TestReloadRefusesARemovedTokenFromThenOnAndLetsARequestInFlightFinishOnItsView(t *testing.T) {
	h := reloadHarness(t)
	before := h.broker.views.cur.Load()
	if err := h.reload(func(c *config.Config) { c.Management.Tokens = c.Management.Tokens[:1] }); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		handler http.Handler
		token   string
		want    int
	}{
		{name: "the removed token after the reload", handler: h.broker.Handler(), token: reloadGoneToken, want: http.StatusUnauthorized},
		{name: "the kept token after the reload", handler: h.broker.Handler(), token: reloadKeepToken, want: http.StatusOK},
		{name: "the removed token on the view a request started on", handler: before.handler, token: reloadGoneToken, want: http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code, body := reloadCall(t, tt.handler, http.MethodGet, "/api/v2/clients", tt.token, ""); code != tt.want {
				t.Errorf("GET /api/v2/clients: %d %s, want %d", code, body, tt.want)
			}
		})
	}
	if len(before.cfg.Management.Tokens) != 2 || len(h.broker.views.cur.Load().cfg.Management.Tokens) != 1 {
		t.Errorf("the views' tokens: before %d, after %d", len(before.cfg.Management.Tokens), len(h.broker.views.cur.Load().cfg.Management.Tokens))
	}
}

// A reload applies the file's clients as a restart would (the seeding rule): an API edit of an
// entry the file leaves unchanged survives, an entry the file changes overwrites it, and an
// entry removed from the file stays in the store.
func TestReloadAppliesTheFileToTheStoreAsARestartWould(t *testing.T) {
	h := reloadHarness(t)
	handler := h.broker.Handler()
	clientName := func(id string) string {
		t.Helper()
		code, body := reloadCall(t, handler, http.MethodGet, "/api/v2/clients/"+id, reloadKeepToken, "")
		if code != http.StatusOK {
			return "status " + http.StatusText(code)
		}
		_, rest, _ := strings.Cut(body, `"name":"`)
		name, _, _ := strings.Cut(rest, `"`)
		return name
	}
	if code, body := reloadCall(t, handler, http.MethodPatch, "/api/v2/clients/"+appClient, reloadKeepToken, `{"name":"Edited through the API"}`); code != http.StatusOK {
		t.Fatalf("PATCH: %d %s", code, body)
	}
	steps := []struct {
		name   string
		mutate func(*config.Config)
		want   map[string]string // client_id → name
	}{
		{
			name:   "an entry the file leaves unchanged keeps its API edit",
			mutate: func(c *config.Config) { c.Clients[1].Name = "SPA renamed in the file" },
			want:   map[string]string{appClient: "Edited through the API", spaClient: "SPA renamed in the file"},
		},
		{
			name:   "an entry the file changes overwrites the API edit",
			mutate: func(c *config.Config) { c.Clients[0].Name = "Renamed in the file" },
			want:   map[string]string{appClient: "Renamed in the file"},
		},
		{
			name:   "an entry removed from the file stays in the store",
			mutate: func(c *config.Config) { c.Clients = c.Clients[:1] },
			want:   map[string]string{spaClient: "SPA renamed in the file"},
		},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if err := h.reload(st.mutate); err != nil {
				t.Fatal(err)
			}
			for id, want := range st.want {
				if got := clientName(id); got != want {
					t.Errorf("client %s: name %q, want %q", id, got, want)
				}
			}
		})
	}
}

// A file connection whose name the store holds under another id (made through the API) refuses
// the reload before anything is written: the file's new client is not stored and the running
// configuration stays.
func TestReloadRefusesAConnectionNameTakenInTheStoreBeforeWritingAnything(t *testing.T) {
	h := reloadHarness(t)
	handler := h.broker.Handler()
	body := `{"name":"partner","strategy":"oidc","options":{"issuer":"` + h.up.URL + `","client_id":"x","client_secret":"y"}}`
	if code, resp := reloadCall(t, handler, http.MethodPost, "/api/v2/connections", reloadKeepToken, body); code != http.StatusCreated {
		t.Fatalf("POST /api/v2/connections: %d %s", code, resp)
	}
	before := h.broker.views.cur.Load()
	err := h.reload(func(c *config.Config) {
		c.Connections = append(c.Connections, config.Connection{Name: "partner", Strategy: "oidc",
			Options: config.ConnectionOptions{Issuer: h.up.URL, ClientID: upClientID, ClientSecret: upSecret}})
		c.Clients = append(c.Clients, config.Client{ClientID: "late", RedirectURIs: []string{h.app.URL + "/late"}, Connections: []string{"partner"}})
	})
	var re *ReloadError
	if !errors.As(err, &re) || len(re.Problems) != 1 || !strings.Contains(re.Problems[0], `the store already has a connection named "partner"`) {
		t.Fatalf("reload: %v, want the name clash", err)
	}
	if code, _ := reloadCall(t, handler, http.MethodGet, "/api/v2/clients/late", reloadKeepToken, ""); code != http.StatusNotFound {
		t.Errorf("the refused file's client: %d, want 404 (nothing written)", code)
	}
	if h.broker.views.cur.Load() != before {
		t.Errorf("a refused reload swapped the view")
	}
}

// The rate-limit tables whose rate, burst and max_keys a reload leaves alone are kept (their
// buckets with them); a changed one is new, and the changed keys are named.
func TestReloadKeepsTheBucketsOfTheRateLimitsItDoesNotChange(t *testing.T) {
	base := func() *config.Config {
		c := config.Default()
		c.RateLimits.Enabled = true
		c.ApplyDefaults()
		return c
	}
	tests := []struct {
		name        string
		mutate      func(*config.Config)
		wantChanged []string
		keptTokenIP bool
		keptLiveTx  bool
	}{
		{name: "nothing changed", mutate: func(*config.Config) {}, keptTokenIP: true, keptLiveTx: true},
		{
			name:        "the token endpoint's per-IP rate",
			mutate:      func(c *config.Config) { c.RateLimits.Token.PerIP = config.RateLimit{Rate: "1/h", Burst: 1} },
			wantChanged: []string{"rate_limits.token.per_ip"},
			keptLiveTx:  true,
		},
		{
			name:        "the live-transaction bound keeps its slots",
			mutate:      func(c *config.Config) { c.RateLimits.LiveTransactionsPerIP = 3 },
			wantChanged: []string{"rate_limits.live_transactions_per_ip"},
			keptTokenIP: true, keptLiveTx: true,
		},
		{
			name:        "trusted proxies only",
			mutate:      func(c *config.Config) { c.TrustedProxies = []string{"10.0.0.0/8"} },
			keptTokenIP: true, keptLiveTx: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prev, err := newGuard(base(), nil)
			if err != nil {
				t.Fatal(err)
			}
			cfg := base()
			tt.mutate(cfg)
			g, err := nextGuard(cfg, prev)
			if err != nil {
				t.Fatal(err)
			}
			if (g.tokenIP == prev.tokenIP) != tt.keptTokenIP || (g.liveTx == prev.liveTx) != tt.keptLiveTx || g.authorizeIP != prev.authorizeIP {
				t.Errorf("kept: token per_ip %v, live transactions %v, authorize per_ip %v", g.tokenIP == prev.tokenIP, g.liveTx == prev.liveTx, g.authorizeIP == prev.authorizeIP)
			}
			if got := g.changedLimits(prev); !slices.Equal(got, tt.wantChanged) {
				t.Errorf("changed limits %v, want %v", got, tt.wantChanged)
			}
			if g.refused != prev.refused {
				t.Errorf("the rate-limit counter is not shared")
			}
		})
	}
}

// carryOver names each changed setting that needs a restart by its key and keeps the running
// value; live settings change.
func TestReloadNamesTheSettingsThatNeedARestartAndKeepsTheirRunningValues(t *testing.T) {
	tests := []struct {
		name        string
		mutate      func(*config.Config)
		wantChanged []string
		wantNotLive []string
	}{
		{name: "listen", mutate: func(c *config.Config) { c.Listen = "127.0.0.1:9999" }, wantNotLive: []string{"listen"}},
		{name: "a nested store key", mutate: func(c *config.Config) { c.Store.Redis.Addrs = []string{"10.0.0.1:6379"} }, wantNotLive: []string{"store.redis.addrs"}},
		{name: "issuer and keys", mutate: func(c *config.Config) {
			c.Issuer = "https://other.example/"
			c.Keys.Signing.PrivateKeyFile = "/elsewhere.pem"
		}, wantNotLive: []string{"issuer", "keys.signing.private_key_file"}},
		{name: "lifetimes are live", mutate: func(c *config.Config) { c.Lifetimes.Code *= 2 }, wantChanged: []string{"lifetimes"}},
		{name: "the console's settings are live", mutate: func(c *config.Config) {
			c.Console.Admins = []config.ConsoleAdmin{{UserID: "oidc|corp|alice"}}
			c.Console.URL = "https://admin.example/console"
		}, wantChanged: []string{"console"}},
		{name: "log streams are live", mutate: func(c *config.Config) { c.LogStreams = []config.LogStream{logStreamTo("https://siem.example/in")} },
			wantChanged: []string{"log_streams"}},
		{name: "logs need a restart", mutate: func(c *config.Config) { c.Logs.MaxEvents++ }, wantNotLive: []string{"logs.max_events"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cur := config.Default()
			cur.ApplyDefaults()
			next := config.Default()
			next.ApplyDefaults()
			tt.mutate(next)
			changed, notLive := carryOver(cur, next)
			if !slices.Equal(changed, tt.wantChanged) || !slices.Equal(notLive, tt.wantNotLive) {
				t.Errorf("changed %v, not live %v; want %v, %v", changed, notLive, tt.wantChanged, tt.wantNotLive)
			}
			if len(tt.wantNotLive) > 0 && (next.Listen != cur.Listen || next.Issuer != cur.Issuer || !slices.Equal(next.Store.Redis.Addrs, cur.Store.Redis.Addrs) || next.Keys.Signing != cur.Keys.Signing) {
				t.Errorf("the running values were not kept")
			}
		})
	}
}

// A reload that changes the upstream DPoP options builds every connection again with them.
func TestReloadRebuildsTheConnectionsWhenTheUpstreamOptionsChange(t *testing.T) {
	h := reloadHarness(t)
	ctx := context.Background()
	snap, err := h.broker.reg.current(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	old := snap.byName["corp"]
	if err := h.reload(func(c *config.Config) { c.DPoP.MaxRetries = 3 }); err != nil {
		t.Fatal(err)
	}
	snap, err = h.broker.reg.current(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if c := snap.byName["corp"]; c == old || c.opts != h.broker.reg.options() || c.opts.MaxRetries != 3 {
		t.Errorf("corp after the reload: rebuilt %v, max retries %d", c != old, c.opts.MaxRetries)
	}
}

// Requests served while reloads swap the view each see one whole configuration: the kept
// token always works, the alternately removed one is accepted or refused, never anything else
// (run with -race: a view is never written while requests read it).
func TestReloadWhileRequestsAreServed(t *testing.T) {
	h := reloadHarness(t)
	handler := h.broker.Handler()
	if err := h.reload(func(c *config.Config) { c.RateLimits.Enabled = false }); err != nil { // this test is the flood
		t.Fatal(err)
	}
	stop := make(chan struct{})
	errs := make(chan string, 4)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if code, _ := reloadCall(t, handler, http.MethodGet, "/api/v2/clients", reloadKeepToken, ""); code != http.StatusOK {
					errs <- "kept token: " + http.StatusText(code)
					return
				}
				if code, _ := reloadCall(t, handler, http.MethodGet, "/api/v2/clients", reloadGoneToken, ""); code != http.StatusOK && code != http.StatusUnauthorized {
					errs <- "alternating token: " + http.StatusText(code)
					return
				}
			}
		}()
	}
	all := slices.Clone(h.cfg.Management.Tokens)
	for i := range 20 {
		err := h.reload(func(c *config.Config) {
			c.Management.Tokens = slices.Clone(all[:1+i%2])
			c.Clients[0].Name = "App " + strconv.Itoa(i)
			c.RateLimits.Enabled = false
		})
		if err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// A client a reload adds on one replica reaches the other through the store, as a
// management API write does; that replica's own file decides its local settings.
func TestReloadedClientReachesTheOtherReplicaThroughTheStore(t *testing.T) {
	p := newReplicaPair(t)
	if err := p.h.reload(func(c *config.Config) {
		c.Clients = append(c.Clients, config.Client{ClientID: "reloaded-app", RedirectURIs: []string{p.h.app.URL + "/reloaded"}, Connections: []string{"corp"}})
	}); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: time.Minute}
	for deadline := time.Now().Add(2 * time.Minute); ; { // bounded, generous: a reached replica answers at once
		req, _ := http.NewRequest(http.MethodGet, p.bURL+"/api/v2/clients/reloaded-app", nil)
		req.Header.Set("Authorization", "Bearer "+tokClients)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica B still answers %d for the reloaded client after 2 minutes", resp.StatusCode)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A console session refused because what opened it was removed from the file is ended for
// good: its record and its operator's index entry are deleted, so putting the token (or the
// administrator) back in the file does not bring the old cookie's session back.
func TestConsoleSessionRefusedAfterAReloadStaysEndedWhenItsGroundsComeBack(t *testing.T) {
	tests := []struct {
		name     string
		signIn   func(t *testing.T, h *harness, browser *http.Client)
		operator string
		remove   func(*config.Config)
	}{
		{name: "a break-glass token removed, then restored", operator: "token:ops",
			signIn: func(t *testing.T, h *harness, browser *http.Client) { consoleTokenSignIn(t, browser, h.srv.URL) },
			remove: func(c *config.Config) { c.Management.Tokens = nil }},
		{name: "an administrator removed from console.admins, then restored", operator: "oidc|corp|alice",
			signIn: func(t *testing.T, h *harness, browser *http.Client) {
				if resp, body := h.consoleSignIn(browser); resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/console/" {
					t.Fatalf("sign-in through the broker: %d at %s:\n%s", resp.StatusCode, resp.Request.URL, body)
				}
			},
			remove: func(c *config.Config) { c.Console.Admins = []config.ConsoleAdmin{{UserID: "oidc|corp|bob"}} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := consoleHarness(t, nil)
			browser := h.browser()
			tt.signIn(t, h, browser)
			home := func() string {
				t.Helper()
				resp, body := get(t, browser, h.srv.URL+"/console/")
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("GET /console/: %d %s", resp.StatusCode, body)
				}
				return resp.Request.URL.Path
			}
			if p := home(); p != "/console/" {
				t.Fatalf("signed in, GET /console/ ends at %s", p)
			}
			orig := h.broker.views.cur.Load().cfg
			if err := h.reload(tt.remove); err != nil {
				t.Fatal(err)
			}
			if p := home(); p != "/console/signin" {
				t.Fatalf("after the removal, GET /console/ ends at %s, want the sign-in page", p)
			}
			ctx := context.Background()
			members, err := sessions.IndexMembers(ctx, h.broker.store, consoleOperatorIndexID(tt.operator), time.Now())
			if err != nil || len(members) != 0 {
				t.Errorf("the operator's index after the refusal: %v, %v; want empty", members, err)
			}
			if err := h.reload(func(c *config.Config) {
				c.Management.Tokens = slices.Clone(orig.Management.Tokens)
				c.Console = orig.Console
			}); err != nil {
				t.Fatal(err)
			}
			if p := home(); p != "/console/signin" {
				t.Errorf("after the restoring reload, the old cookie reaches %s, want the sign-in page", p)
			}
		})
	}
}

// The console's issuer pins are the reloaded file's: a connection the file no longer names
// for administrators admits none (and may be deleted through the management API), and one it
// names again is pinned again.
func TestReloadPinsTheConsoleConnectionsOfTheNewFile(t *testing.T) {
	h := consoleHarness(t, nil)
	orig := h.broker.views.cur.Load().cfg.Console
	tests := []struct {
		name       string
		console    config.Console
		wantPinned bool
	}{
		{name: "console.admins and console.connection removed", console: config.Console{}, wantPinned: false},
		{name: "console.admins restored", console: orig, wantPinned: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := h.reload(func(c *config.Config) { c.Console = tt.console }); err != nil {
				t.Fatal(err)
			}
			cur := h.broker.views.cur.Load()
			if _, pinned := cur.consolePins["corp"]; pinned != tt.wantPinned {
				t.Errorf("corp pinned: %v, want %v", pinned, tt.wantPinned)
			}
			if refused := cur.consolePinnedDeleteProblem("corp") != nil; refused != tt.wantPinned {
				t.Errorf("deleting corp refused: %v, want %v", refused, tt.wantPinned)
			}
			snap, err := h.broker.reg.current(context.Background(), false)
			if err != nil {
				t.Fatal(err)
			}
			if hasClient := snap.clients[config.ConsoleClientID] != nil; hasClient != tt.wantPinned {
				t.Errorf("the console's built-in client registered: %v, want %v", hasClient, tt.wantPinned)
			}
		})
	}
}

// A reload that changes log_streams stops the running streams and starts the file's: after it
// returns the old endpoint gets nothing more and the old token is sent no more, the stream
// kept under its name sends on to its new endpoint with its new token, and a removed stream no
// longer runs. (Where a restarted stream resumes, its stored position and late window, is the
// logstream package's and tested there.)
func TestReloadReplacesTheLogStreams(t *testing.T) {
	tests := []struct {
		name string
		// next is the stream after the reload (nil: removed), given the new receiver's URL.
		next func(url string) *config.LogStream
	}{
		{name: "moved to another endpoint with another token", next: func(url string) *config.LogStream {
			ls := logStreamTo(url, "127.0.0.0/8")
			ls.Auth.Token = "rotated-stream-token-0123456789"
			return &ls
		}},
		{name: "removed", next: func(string) *config.LogStream { return nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			oldRC, newRC := newStreamReceiver(t, false), newStreamReceiver(t, false)
			h := newHarness(t, harnessOpts{up: demoidp.Options{DPoPAlgs: []string{"ES256"}}, mutate: func(c *config.Config) {
				c.LogStreams = []config.LogStream{logStreamTo(oldRC.srv.URL, "127.0.0.0/8")}
			}})
			if err := h.broker.Init(t.Context()); err != nil {
				t.Fatalf("Init: %v", err)
			}
			h.login()
			first := h.lastEventOf("s").LogID
			pollUntil(t, "the first login's event at the old endpoint", func() bool { return oldRC.has(first) })
			_, oldHolder, err := h.broker.streams.cursors.LogCursor(t.Context(), "siem")
			if err != nil || oldHolder == "" {
				t.Fatalf("the lease of the stream that sent = (%q, %v), want its holder", oldHolder, err)
			}

			next := tt.next(newRC.srv.URL)
			if err := h.reload(func(c *config.Config) {
				c.LogStreams = nil
				if next != nil {
					c.LogStreams = []config.LogStream{*next}
				}
			}); err != nil {
				t.Fatal(err)
			}
			// The old streams stopped before Reload returned: they released the lease (a
			// stream still running would renew it), whoever holds it now.
			if _, holder, err := h.broker.streams.cursors.LogCursor(t.Context(), "siem"); err != nil || holder == oldHolder {
				t.Errorf("the lease after the reload = (%q, %v): the old streams still hold it", holder, err)
			}
			sent := oldRC.count()
			h.login()
			after := h.lastEventOf("s").LogID // the second login, after the reload
			if next == nil {
				if names := h.broker.streams.names(); len(names) != 0 {
					t.Errorf("streams running after their removal: %v", names)
				}
			} else {
				pollUntil(t, "the second login's event at the new endpoint", func() bool { return newRC.has(after) })
				newRC.mu.Lock()
				for _, a := range newRC.auth {
					if a != "Bearer "+next.Auth.Token {
						t.Errorf("the new endpoint got Authorization %q", a)
					}
				}
				newRC.mu.Unlock()
			}
			if n := oldRC.count(); n != sent || oldRC.has(after) {
				t.Errorf("the old endpoint got %d requests after the reload", n-sent)
			}
		})
	}
}
