package broker

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// countingTallies is a memory event store that counts the counter reads (Tallies calls), and
// apart the wide ones (more than 5 buckets: a span's closed buckets, not the current one).
type countingTallies struct {
	sessions.Store
	reads, wide atomic.Int64
}

func newCountingTallies() *countingTallies { return &countingTallies{Store: sessions.NewMemory()} }

func (c *countingTallies) AppendLogTallied(ctx context.Context, class sessions.LogClass, id string, event []byte, maxLen int, t sessions.Tally) error {
	return c.Store.(sessions.Tallier).AppendLogTallied(ctx, class, id, event, maxLen, t)
}

func (c *countingTallies) PutAllAndLogTallied(ctx context.Context, logID string, event []byte, maxLen int, t sessions.Tally, items ...sessions.Item) error {
	return c.Store.(sessions.Tallier).PutAllAndLogTallied(ctx, logID, event, maxLen, t, items...)
}

func (c *countingTallies) Tallies(ctx context.Context, step sessions.TallyStep, from, to time.Time) ([]sessions.TallyBucket, error) {
	c.reads.Add(1)
	if to.Sub(from) > 5*step.Duration() {
		c.wide.Add(1)
	}
	return c.Store.(sessions.Tallier).Tallies(ctx, step, from, to)
}

// TestConsoleRequestsAreHeldToTheManagementRateLimits: a signed-in operator's console requests
// spend the management API's per-token bucket (keyed by the operator), requests before
// sign-in the per-IP bucket; a refused request answers 429 with Retry-After and the refused
// page, and writes a fapi event with details.rate_limit naming the operator.
func TestConsoleRequestsAreHeldToTheManagementRateLimits(t *testing.T) {
	tests := []struct {
		name     string
		signIn   bool
		burst    config.ManagementRateLimits
		path     string
		wantUser any
		wantBy   string
	}{
		// The sign-in and the console's home page it lands on: two requests of the operator's five.
		{name: "a signed-in operator, per operator", signIn: true, path: "/console/connections",
			burst:    config.ManagementRateLimits{PerIP: config.RateLimit{Rate: "1/h", Burst: 100}, PerToken: config.RateLimit{Rate: "1/h", Burst: 5}},
			wantUser: "token:ops", wantBy: byToken},
		{name: "before sign-in, per IP", path: "/console/logs",
			burst:    config.ManagementRateLimits{PerIP: config.RateLimit{Rate: "1/h", Burst: 3}, PerToken: config.RateLimit{Rate: "1/h", Burst: 100}},
			wantUser: nil, wantBy: "ip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := consoleHarness(t, func(c *config.Config) {
				c.RateLimits.Enabled = true
				c.RateLimits.Management = tt.burst
			})
			browser := h.browser()
			if tt.signIn {
				consoleTokenSignIn(t, browser, h.srv.URL)
			}
			for i := range 3 {
				if resp, body := get(t, browser, h.srv.URL+tt.path); resp.StatusCode != http.StatusOK {
					t.Fatalf("request %d: %d\n%s", i, resp.StatusCode, body)
				}
			}
			resp, body := get(t, browser, h.srv.URL+tt.path)
			if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "Too many") {
				t.Fatalf("the request over the limit: %d (Retry-After %q)\n%s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
			}
			ev := h.consoleEventOf(logs.TypeFailedAPI, "rate_limited")
			if rl := rateLimitOf(t, ev); rl["by"] != tt.wantBy || rl["endpoint"] != "console" || eventUser(ev) != tt.wantUser {
				t.Fatalf("refusal event %+v", ev.Details)
			}
		})
	}
}

// TestConsoleOverviewReadsTheClosedBucketsOncePerSpanWhileFresh: views of one span, one
// after another or at once, share one read of its closed buckets on a replica until it is
// consoleOverviewTTL old, each view reading only the current bucket besides, so a login made
// after the shared read shows at once; another span is its own read.
func TestConsoleOverviewReadsTheClosedBucketsOncePerSpanWhileFresh(t *testing.T) {
	evs := newCountingTallies()
	h := newHarness(t, harnessOpts{eventStore: evs, up: demoidp.Options{DPoPAlgs: []string{"ES256"}}, mutate: func(c *config.Config) {
		c.Management.Tokens = []config.ManagementToken{{Name: "ops", Token: consoleTestToken, Scopes: []string{config.ScopeReadLogs}}}
	}})
	h.broker.console.overviewTTL = time.Hour // this test's views never outlive it, however slow the machine
	browser := h.browser()
	consoleTokenSignIn(t, browser, h.srv.URL) // lands on the Overview: the hour's shared read
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := browser.Get(h.srv.URL + "/console/?span=hour")
			if err == nil {
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	if wide, all := evs.wide.Load(), evs.reads.Load(); wide != 1 || all != 10 {
		t.Fatalf("%d wide counter reads (%d in all) for 9 views of the hour, want 1 (and 9 of the current bucket)", wide, all)
	}
	h.login()
	if _, body := get(t, browser, h.srv.URL+"/console/?span=hour"); !strings.Contains(body, `<span class="num">1</span> logins succeeded`) {
		t.Errorf("the login made after the shared read is not on the overview:\n%s", body)
	}
	get(t, browser, h.srv.URL+"/console/?span=day")
	get(t, browser, h.srv.URL+"/console/?span=day")
	if got := evs.wide.Load(); got != 2 {
		t.Fatalf("%d wide counter reads after two views of the day, want 2", got)
	}
	h.clock.Advance(2 * time.Hour)
	consoleTokenSignIn(t, browser, h.srv.URL) // the console session aged too: the hour, read again
	get(t, browser, h.srv.URL+"/console/?span=day")
	if got := evs.wide.Load(); got != 4 {
		t.Fatalf("%d wide counter reads after the shared reads aged, want 4", got)
	}
}

// TestConsoleLiveChecksShareOneDiscoveryFetchPerUpstreamWhileFresh: the Connections list
// and a connection's page check each upstream's discovery document once on a replica until
// the answer is consoleDiscoveryTTL old (corp and other share an upstream), then fetch again.
func TestConsoleLiveChecksShareOneDiscoveryFetchPerUpstreamWhileFresh(t *testing.T) {
	h := dpopConsoleHarness(t)
	h.broker.console.discoveryTTL = time.Hour
	browser := h.browser()
	consoleTokenSignIn(t, browser, h.srv.URL)
	before := h.up.Stats.DiscoveryRequests.Load()
	for range 3 {
		if resp, body := get(t, browser, h.srv.URL+"/console/connections"); resp.StatusCode != http.StatusOK || !strings.Contains(body, "DPoP works") {
			t.Fatalf("connections: %d\n%s", resp.StatusCode, body)
		}
	}
	get(t, browser, h.srv.URL+"/console/connections/"+config.DeriveConnectionID("corp"))
	if got := h.up.Stats.DiscoveryRequests.Load() - before; got != 1 {
		t.Fatalf("%d discovery fetches for 3 lists of 2 connections and a connection page on one upstream, want 1", got)
	}
	h.clock.Advance(2 * time.Hour)
	consoleTokenSignIn(t, browser, h.srv.URL) // the console session aged too
	get(t, browser, h.srv.URL+"/console/connections/"+config.DeriveConnectionID("corp"))
	if got := h.up.Stats.DiscoveryRequests.Load() - before; got != 2 {
		t.Fatalf("%d discovery fetches after the answer aged, want 2", got)
	}
}

// TestConsoleSignInsStartedHoldNothingSoAFloodCannotLockAdminsOut: starting a sign-in through
// the broker stores nothing and holds no place (its state is in the sealed sign-in cookie), so
// however many are started and never finished, from the administrator's own address too, the
// administrator signs in.
func TestConsoleSignInsStartedHoldNothingSoAFloodCannotLockAdminsOut(t *testing.T) {
	tests := []struct {
		name    string
		started int
		mutate  func(*config.Config)
	}{
		{name: "more than a replica's former 1000 places", started: 1100},
		{name: "more than the address's live transactions", started: 5, mutate: func(c *config.Config) {
			c.RateLimits.Enabled = true
			c.RateLimits.LiveTransactionsPerIP = 2
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := consoleHarness(t, tt.mutate)
			start := noRedirects(h.browser())
			for i := range tt.started {
				if resp, body := get(t, start, h.srv.URL+"/console/login"); resp.StatusCode != http.StatusSeeOther {
					t.Fatalf("sign-in %d started: %d\n%s", i, resp.StatusCode, body)
				}
			}
			if resp, body := h.consoleSignIn(h.browser()); resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/console/" {
				t.Fatalf("the administrator's sign-in after the flood: %d at %s\n%s", resp.StatusCode, resp.Request.URL, body)
			}
		})
	}
}

// TestConsoleInputErrorsAreShownNotLogged: a mistyped Logs search or time range, an unknown
// Overview period, a tail after something else than a log id is an input error the page
// answers with 400 and says why; it writes no event (the log keeps real refusals).
func TestConsoleInputErrorsAreShownNotLogged(t *testing.T) {
	tests := []struct {
		name string
		path string
		want string // in the answer
	}{
		{name: "an unknown overview period", path: "/console/?span=year", want: "Unknown period"},
		{name: "a search the API refuses", path: "/console/logs?q=" + url.QueryEscape("type:f OR type:s"), want: "The search is not valid"},
		{name: "an unknown field in the search", path: "/console/logs?q=" + url.QueryEscape("foo:bar"), want: "foo"},
		{name: "an unknown time range", path: "/console/logs?range=1y", want: "unknown time range"},
		{name: "a tail after something else than a log id", path: "/console/logs/tail?after=1", want: "not a log_id"},
	}
	h := dpopConsoleHarness(t)
	browser := h.browser()
	consoleTokenSignIn(t, browser, h.srv.URL)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := h.eventCount()
			resp, body := get(t, browser, h.srv.URL+tt.path)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, tt.want) {
				t.Fatalf("GET %s: %d, want 400 saying %q\n%s", tt.path, resp.StatusCode, tt.want, body)
			}
			if got := h.eventCount() - n; got != 0 {
				t.Fatalf("%d events for a mistyped input, want none", got)
			}
		})
	}
}

// gatedBody is a request body that says when the handler starts reading it (the request got
// past the checks before the form) and answers nothing until release is closed.
type gatedBody struct {
	io.ReadCloser
	once    sync.Once
	reading chan<- struct{}
	release <-chan struct{}
}

func (b *gatedBody) Read(p []byte) (int, error) {
	b.once.Do(func() { b.reading <- struct{}{} })
	<-b.release
	return b.ReadCloser.Read(p)
}

// TestConsoleBreakGlassAttemptsInFlightAtOnceAreHeldToTheBurst: break-glass sign-ins sent at
// once, each holding its form back, spend the per-IP bucket before the form is read: only the
// burst's attempts get to compare a token, the others are refused with 429 at once.
func TestConsoleBreakGlassAttemptsInFlightAtOnceAreHeldToTheBurst(t *testing.T) {
	const n, burst = 8, 3
	h := consoleHarness(t, func(c *config.Config) {
		c.RateLimits.Enabled = true
		c.RateLimits.Management = config.ManagementRateLimits{PerIP: config.RateLimit{Rate: "1/h", Burst: burst}, PerToken: config.RateLimit{Rate: "1/h", Burst: 100}}
	})
	reading, release := make(chan struct{}, n), make(chan struct{})
	handler := h.broker.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/console/login/token" {
			r.Body = &gatedBody{ReadCloser: r.Body, reading: reading, release: release}
		}
		handler.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	browser := h.browser()
	_, page := get(t, browser, srv.URL+"/console/signin")
	form := url.Values{"token": {"not-the-token-0123456789abcdef"}, "csrf": {consoleCSRF(t, page)}}.Encode()
	statuses := make(chan int, n)
	for range n {
		go func() {
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/console/login/token", strings.NewReader(form))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Sec-Fetch-Site", "same-origin")
			resp, err := browser.Do(req)
			if err != nil {
				statuses <- 0
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	// Every attempt either answers (refused before its form) or waits in its form.
	got := map[int]int{}
	deadline := time.After(60 * time.Second)
	for waiting := 0; waiting+got[http.StatusTooManyRequests]+got[http.StatusUnauthorized]+got[0] < n; {
		select {
		case <-reading:
			waiting++
		case st := <-statuses:
			got[st]++
		case <-deadline:
			close(release)
			t.Fatalf("after 60 s: %d attempts reading their form, answers %v", waiting, got)
		}
	}
	close(release)
	for len(statuses) > 0 || got[http.StatusTooManyRequests]+got[http.StatusUnauthorized]+got[0] < n {
		select {
		case st := <-statuses:
			got[st]++
		case <-time.After(60 * time.Second):
			t.Fatalf("after 60 s: answers %v", got)
		}
	}
	if got[http.StatusUnauthorized] != burst || got[http.StatusTooManyRequests] != n-burst {
		t.Fatalf("answers %v for %d wrong tokens at once, want %d × 401 and %d × 429", got, n, burst, n-burst)
	}
}

// TestConsoleBreakGlassSpendsTheBucketOnFailedAttemptsOnly: a valid token and a form refused
// before its token was compared give the per-IP request back; a wrong token keeps it spent.
func TestConsoleBreakGlassSpendsTheBucketOnFailedAttemptsOnly(t *testing.T) {
	h := consoleHarness(t, func(c *config.Config) {
		c.RateLimits.Enabled = true
		c.RateLimits.Management = config.ManagementRateLimits{PerIP: config.RateLimit{Rate: "1/h", Burst: 2}, PerToken: config.RateLimit{Rate: "1/h", Burst: 100}}
	})
	browser := h.browser()
	for i := range 3 {
		if resp, body := consoleTokenSignInAs(t, browser, h.srv.URL, consoleTestToken, "same-origin"); resp.StatusCode != http.StatusOK {
			t.Fatalf("valid sign-in %d: %d\n%s", i, resp.StatusCode, body)
		}
		if resp, body := postForm(t, h.browser(), h.srv.URL+"/console/login/token", url.Values{"token": {"wrong"}}, "same-origin"); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("form without CSRF %d: %d\n%s", i, resp.StatusCode, body)
		}
	}
	for i, want := range []int{http.StatusUnauthorized, http.StatusUnauthorized, http.StatusTooManyRequests} {
		if resp, body := consoleTokenSignInAs(t, browser, h.srv.URL, "wrong-token", "same-origin"); resp.StatusCode != want {
			t.Fatalf("wrong token %d: %d, want %d\n%s", i, resp.StatusCode, want, body)
		}
	}
}

// TestConsoleBreakGlassAndTheManagementAPIShareOnePerIPBucket: failed break-glass sign-ins
// and the management API's failed calls from an address spend one bucket
// (rate_limits.management.per_ip), so the address cannot guess tokens twice as fast by
// using both; a valid break-glass sign-in gives its request back.
func TestConsoleBreakGlassAndTheManagementAPIShareOnePerIPBucket(t *testing.T) {
	tests := []struct {
		name  string
		first string // "api" or "console": which spends the burst of 2
		then  string // which is refused next
	}{
		{name: "failed API calls spend the break-glass sign-in's guesses", first: "api", then: "console"},
		{name: "failed break-glass sign-ins spend the API's guesses", first: "console", then: "api"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := consoleHarness(t, func(c *config.Config) {
				c.RateLimits.Enabled = true
				c.RateLimits.Management = config.ManagementRateLimits{PerIP: config.RateLimit{Rate: "1/h", Burst: 2}, PerToken: config.RateLimit{Rate: "1/h", Burst: 100}}
			})
			try := func(via string) int {
				if via == "api" {
					return api(t, h.srv.URL, http.MethodGet, "/api/v2/connections", "wrong-token-0123456789abcdef", nil).status
				}
				resp, _ := consoleTokenSignInAs(t, h.browser(), h.srv.URL, "wrong-token", "same-origin")
				return resp.StatusCode
			}
			if resp, body := consoleTokenSignInAs(t, h.browser(), h.srv.URL, consoleTestToken, "same-origin"); resp.StatusCode != http.StatusOK {
				t.Fatalf("valid sign-in: %d\n%s", resp.StatusCode, body) // given back: spends nothing
			}
			for i := range 2 {
				if got := try(tt.first); got != http.StatusUnauthorized {
					t.Fatalf("%s attempt %d: %d, want 401", tt.first, i, got)
				}
			}
			if got := try(tt.then); got != http.StatusTooManyRequests {
				t.Fatalf("%s attempt past the shared burst: %d, want 429", tt.then, got)
			}
		})
	}
}

// TestConsoleRefusalsOfASignedInOperatorSayHowTheOperatorSignedIn: a signed-in operator's
// refused request (a scope it lacks, a write without its CSRF token, its rate limit) is an
// event naming the operator and how they signed in, so the Logs view labels it as the
// console's, never as a management API token's.
func TestConsoleRefusalsOfASignedInOperatorSayHowTheOperatorSignedIn(t *testing.T) {
	tests := []struct {
		name       string
		limited    bool
		method     string
		path       string
		wantStatus int
		wantAction string
	}{
		{name: "a page needing a scope the operator lacks", method: http.MethodGet, path: "/console/logs", wantStatus: http.StatusForbidden, wantAction: "refused"},
		{name: "a write without its CSRF token", method: http.MethodPost, path: "/console/signout", wantStatus: http.StatusForbidden, wantAction: "refused"},
		{name: "a request over the operator's rate limit", limited: true, method: http.MethodGet, path: "/console/connections", wantStatus: http.StatusTooManyRequests, wantAction: "rate_limited"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := consoleHarness(t, func(c *config.Config) {
				if tt.limited {
					c.RateLimits.Enabled = true
					// The sign-in and its home page spend the burst.
					c.RateLimits.Management = config.ManagementRateLimits{PerIP: config.RateLimit{Rate: "1/h", Burst: 100}, PerToken: config.RateLimit{Rate: "1/h", Burst: 2}}
				}
			})
			browser := h.browser()
			consoleTokenSignIn(t, browser, h.srv.URL)
			var resp *http.Response
			var body string
			if tt.method == http.MethodPost {
				resp, body = postForm(t, browser, h.srv.URL+tt.path, url.Values{}, "same-origin")
			} else {
				resp, body = get(t, browser, h.srv.URL+tt.path)
			}
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("%s %s: %d, want %d\n%s", tt.method, tt.path, resp.StatusCode, tt.wantStatus, body)
			}
			ev := h.consoleEventOf(logs.TypeFailedAPI, tt.wantAction)
			if got := logs.Operator(&ev); got != "token:ops (via token)" {
				t.Fatalf("the refusal's operator is %q, want token:ops (via token); event %+v", got, ev.Details)
			}
		})
	}
}

// TestConsoleRefusedWriteIsAnEventNamingTheOperator: a console write the console refuses as
// malformed (a DPoP form with two settings) is a fapi event naming the operator, as every
// console write is an sapi or fapi event; only mistyped reads write none.
func TestConsoleRefusedWriteIsAnEventNamingTheOperator(t *testing.T) {
	h, browser := dpopConsoleSignedIn(t)
	id := config.DeriveConnectionID("corp")
	n := h.eventCount()
	saveDPoP(t, h, browser, id, url.Values{"dpop_signing_alg": {"ES256", "RS256"}})
	if got := h.eventCount() - n; got != 1 {
		t.Fatalf("%d events for a refused console write, want 1", got)
	}
	ev := h.consoleEventOf(logs.TypeFailedAPI, "bad_request")
	errObj, _ := ev.Details["error"].(map[string]any)
	if msg, _ := errObj["message"].(string); eventUser(ev) != "token:ops" || !strings.Contains(msg, "not one DPoP setting") {
		t.Fatalf("refusal event %+v", ev.Details)
	}
}
