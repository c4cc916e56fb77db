package broker

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/logs/logtest"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// TestConsoleBreakGlassSignInsSpendTheTokensBucket: every break-glass sign-in with a valid
// token, successful ones too, is one request of the token's bucket
// (rate_limits.management.per_token); past it the sign-in is a 429 page and a fapi event
// naming the token, and nothing is stored.
func TestConsoleBreakGlassSignInsSpendTheTokensBucket(t *testing.T) {
	tests := []struct {
		name      string
		burst     int
		wantSaved int
	}{
		{name: "a burst of 3 opens 3 sessions", burst: 3, wantSaved: 3},
		{name: "a burst of 1 opens 1 session", burst: 1, wantSaved: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := consoleHarness(t, func(c *config.Config) {
				c.RateLimits.Enabled = true
				c.RateLimits.Management.PerIP = config.RateLimit{Rate: "100/s", Burst: 1000}
				c.RateLimits.Management.PerToken = config.RateLimit{Rate: "1/h", Burst: tt.burst}
			})
			for i := range tt.wantSaved {
				if resp, body := consoleTokenSignInAs(t, noRedirects(h.browser()), h.srv.URL, consoleTestToken, "same-origin"); resp.StatusCode != http.StatusSeeOther {
					t.Fatalf("sign-in %d: %d\n%s", i, resp.StatusCode, body)
				}
			}
			resp, body := consoleTokenSignInAs(t, noRedirects(h.browser()), h.srv.URL, consoleTestToken, "same-origin")
			if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || strings.Contains(resp.Header.Get("Set-Cookie"), consoleCookie+"=") {
				t.Fatalf("the sign-in past the token's bucket: %d %v\n%s", resp.StatusCode, resp.Header, body)
			}
			ev := h.consoleEventOf(logs.TypeFailedAPI, "rate_limited")
			if rl := rateLimitOf(t, ev); rl["by"] != byToken || eventUser(ev) != "token:ops" {
				t.Fatalf("refusal event %+v", ev.Details)
			}
			members, err := sessions.IndexMembers(t.Context(), h.store, consoleOperatorIndexID("token:ops"), h.clock.Now())
			if err != nil || len(members) != tt.wantSaved {
				t.Fatalf("%d console sessions of the token (%v), want %d", len(members), err, tt.wantSaved)
			}
		})
	}
}

// TestConsoleSessionsPerOperatorAreBounded: an operator who signs in again and again holds at
// most consoleSessionsPerOperator console sessions; each sign-in past it ends the oldest
// (its browser is sent to the sign-in page), the newest stay open, and another operator's
// session is untouched.
func TestConsoleSessionsPerOperatorAreBounded(t *testing.T) {
	tests := []struct {
		name    string
		signIns int
		wantOut int // the first browsers signed out
	}{
		{name: "up to the bound nothing ends", signIns: consoleSessionsPerOperator, wantOut: 0},
		{name: "three past the bound end the three oldest", signIns: consoleSessionsPerOperator + 3, wantOut: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := consoleHarness(t, func(c *config.Config) {
				c.Management.Tokens = append(c.Management.Tokens, config.ManagementToken{Name: "other", Token: consoleTestToken + "-other", Scopes: []string{config.ScopeReadLogs}})
			})
			other := h.browser()
			if resp, _ := consoleTokenSignInAs(t, other, h.srv.URL, consoleTestToken+"-other", "same-origin"); resp.Request.URL.Path != "/console/" {
				t.Fatalf("the other operator's sign-in ended at %s", resp.Request.URL)
			}
			var browsers []*http.Client
			for range tt.signIns {
				b := h.browser()
				consoleTokenSignIn(t, b, h.srv.URL)
				h.clock.Advance(time.Second) // one second apart: the oldest expires first
				browsers = append(browsers, b)
			}
			for i, b := range append(browsers, other) {
				resp, _ := get(t, b, h.srv.URL+"/console/")
				out := resp.Request.URL.Path == "/console/signin"
				if want := i < tt.wantOut; out != want {
					t.Errorf("browser %d signed out: %v, want %v", i, out, want)
				}
			}
			members, err := sessions.IndexMembers(t.Context(), h.store, consoleOperatorIndexID("token:ops"), h.clock.Now())
			if err != nil || len(members) != min(tt.signIns, consoleSessionsPerOperator) {
				t.Fatalf("%d indexed console sessions (%v)", len(members), err)
			}
		})
	}
}

// TestConsoleSignInCookieMustBeOneThisBrokerSealedAndLive: the callback opens the sign-in
// cookie; a value another broker sealed (another signing key), an altered one, one of an
// expired sign-in or a made-up one is refused with 400 and nothing is signed in.
func TestConsoleSignInCookieMustBeOneThisBrokerSealedAndLive(t *testing.T) {
	h := consoleHarness(t, nil)
	// Another broker: a signing key of its own (the harnesses share one key ring, so another
	// harness would seal under this broker's key).
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, err := newConsoleSealer(&config.KeyRing{Signing: otherKey})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		cookie func(real string) string
		age    time.Duration
	}{
		// The very sign-in (its state, verifier and nonce) sealed under the other key: only
		// the key can refuse it.
		{name: "this sign-in sealed by another broker", cookie: func(real string) string {
			st, err := h.broker.consoleSeal.open(real, h.clock.Now().Unix())
			if err != nil {
				t.Fatal(err)
			}
			resealed, err := other.seal(st)
			if err != nil {
				t.Fatal(err)
			}
			return resealed
		}},
		{name: "an altered cookie", cookie: func(real string) string {
			b := []byte(real)
			i := strings.LastIndexByte(real, '.') - 2 // in the ciphertext
			b[i] ^= 1
			if b[i] == '.' {
				b[i] = 'A'
			}
			return string(b)
		}},
		{name: "a made-up value", cookie: func(string) string { return "a.b.c.d.e" }},
		{name: "a sign-in older than 10 minutes", cookie: func(real string) string { return real }, age: 11 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			browser := h.browser()
			callback := consoleToCallback(t, h, browser)
			u, _ := url.Parse(h.srv.URL + "/console")
			var real string
			for _, c := range browser.Jar.Cookies(u) {
				if c.Name == consoleLoginCookie {
					real = c.Value
				}
			}
			if callback == "" || real == "" {
				t.Fatalf("no callback (%q) or sign-in cookie", callback)
			}
			browser.Jar.SetCookies(u, []*http.Cookie{{Name: consoleLoginCookie, Value: tt.cookie(real), Path: "/console"}})
			h.clock.Advance(tt.age)
			resp, body := get(t, browser, callback)
			if resp.StatusCode != http.StatusBadRequest || resp.Request.URL.Path != "/console/callback" {
				t.Fatalf("got %d at %s:\n%s", resp.StatusCode, resp.Request.URL, body)
			}
		})
	}
}

// TestFailedCredentialChecksReachStdoutWhenTheLimitsDropThem: a wrong management token at the
// API or at the console's break-glass form is printed on stdout even when the limits on
// unauthenticated events drop its event (another address used up the global budget).
func TestFailedCredentialChecksReachStdoutWhenTheLimitsDropThem(t *testing.T) {
	tests := []struct {
		name    string
		attempt func(h *harness)
	}{
		{name: "a wrong token at the management API", attempt: func(h *harness) {
			api(t, h.srv.URL, http.MethodGet, "/api/v2/connections", "wrong-token-0123456789abcdef", nil)
		}},
		{name: "a wrong token at the break-glass form", attempt: func(h *harness) {
			consoleTokenSignInAs(t, h.browser(), h.srv.URL, "wrong-token", "same-origin")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := consoleHarness(t, nil)
			var out logtest.Buffer
			h.events.Logger = slog.New(slog.NewJSONHandler(&out, nil))
			h.events.Limits = logs.NewLimiter(logs.LimiterConfig{GlobalRate: 1e-9, GlobalBurst: 1})
			h.events.Limits.Allow("198.51.100.1", h.clock.Now()) // another address spent the budget
			tt.attempt(h)
			var found bool
			for _, line := range strings.Split(out.String(), "\n") {
				if strings.Contains(line, `"msg":"`+logs.CredentialCheckFailed+`"`) && strings.Contains(line, `"type":"fapi"`) && strings.Contains(line, `"dropped":"global"`) {
					found = true
				}
			}
			if !found {
				t.Fatalf("no %s line on stdout:\n%s", logs.CredentialCheckFailed, out.String())
			}
		})
	}
}

// TestConsoleSignInsOfOneOperatorAtOnceLeaveNoSessionOutOfTheIndex: many break-glass sign-ins
// of one token at once (some may be refused while they contend for the operator's index)
// leave no console session behind outside the index, so the console's share of the store
// does not fill up and the next sign-in goes through.
func TestConsoleSignInsOfOneOperatorAtOnceLeaveNoSessionOutOfTheIndex(t *testing.T) {
	tests := []struct {
		name             string
		workers, signIns int
	}{
		{name: "24 browsers signing in 3 times each", workers: 24, signIns: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A console share of 15 records: 10 indexed sessions and a few in flight.
			st := sessions.NewMemoryWithOptions(config.MemoryStore{MaxRecords: 1500}.Options())
			h := newHarness(t, harnessOpts{dpopAlg: "-", store: st, mutate: func(c *config.Config) {
				c.Console.Admins = []config.ConsoleAdmin{{UserID: "oidc|corp|alice"}}
				c.Console.Connection = "corp"
				c.Management.Tokens = []config.ManagementToken{{Name: "ops", Token: consoleTestToken, Scopes: []string{config.ScopeReadLogs}}}
			}})
			var wg sync.WaitGroup
			for range tt.workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range tt.signIns {
						consoleTokenSignInAs(t, noRedirects(h.browser()), h.srv.URL, consoleTestToken, "same-origin")
					}
				}()
			}
			wg.Wait()
			for i := range 3 {
				if resp, body := consoleTokenSignInAs(t, noRedirects(h.browser()), h.srv.URL, consoleTestToken, "same-origin"); resp.StatusCode != http.StatusSeeOther {
					t.Fatalf("sign-in %d after the concurrent ones: %d\n%s", i, resp.StatusCode, body)
				}
			}
			members, err := sessions.IndexMembers(t.Context(), h.store, consoleOperatorIndexID("token:ops"), h.clock.Now())
			if err != nil || len(members) != consoleSessionsPerOperator {
				t.Fatalf("%d indexed console sessions (%v)", len(members), err)
			}
		})
	}
}
