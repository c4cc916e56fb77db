package broker

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/config/configtest"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// sessionLimitHarness is a harness with rate limits on and only the per-session limit of
// logins answered from a session (every other limit off), remembering at most maxKeys keys.
func sessionLimitHarness(t *testing.T, perSession config.RateLimit, maxKeys int) *harness {
	t.Helper()
	return newHarness(t, harnessOpts{up: dpopUp, mutate: func(c *config.Config) {
		c.RateLimits = config.RateLimits{Enabled: true, MaxKeys: maxKeys,
			Authorize: config.AuthorizeRateLimits{PerSession: perSession}}
	}})
}

// answer is one /authorize answer, redirects not followed.
type answer struct {
	status int
	header http.Header
	body   string
}

// location is the answer's Location parsed (nil without one).
func (a answer) location(t *testing.T) *url.URL {
	t.Helper()
	loc := a.header.Get("Location")
	if loc == "" {
		return nil
	}
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatalf("Location %q: %v", loc, err)
	}
	return u
}

// spaAuthorize sends the SPA's /authorize (connection corp) in browser b, or with no cookies
// but the given Cookie header when b is nil, without following redirects.
func (h *harness) spaAuthorize(b *http.Client, cookie string, mut func(url.Values)) answer {
	h.t.Helper()
	q := url.Values{
		"response_type": {"code"}, "client_id": {spaClient}, "redirect_uri": {h.app.URL + "/spa"},
		"scope": {"openid profile email"}, "state": {"spa-state"}, "nonce": {"n"}, "connection": {"corp"},
		"code_challenge": {s256(testVerifier)}, "code_challenge_method": {"S256"},
	}
	if mut != nil {
		mut(q)
	}
	c := h.client()
	if b != nil {
		c = b
	}
	stop := *c
	stop.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/authorize?"+q.Encode(), nil)
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	resp, err := stop.Do(req)
	if err != nil {
		h.t.Fatalf("authorize: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, header: resp.Header, body: string(body)}
}

// sessionCookieOf returns the value of browser b's session cookie.
func (h *harness) sessionCookieOf(b *http.Client) string {
	h.t.Helper()
	u, _ := url.Parse(h.srv.URL)
	for _, c := range b.Jar.Cookies(u) {
		if c.Name == sessionCookie {
			return c.Value
		}
	}
	h.t.Fatal("the browser has no session cookie")
	return ""
}

// auditEntries is how many events the audit class holds (up to 1000).
func (h *harness) auditEntries() int {
	h.t.Helper()
	es, err := h.events.Store.LogsBefore(context.Background(), "", 1000)
	if err != nil {
		h.t.Fatalf("events: %v", err)
	}
	n := 0
	for _, e := range es {
		if e.Class == sessions.LogAudit {
			n++
		}
	}
	return n
}

// The ways a login is answered from the session, and how each answers when the session's
// login limit refuses it.
var sessionLoginModes = []struct {
	name string
	mut  func(url.Values)
	// answered checks an answer from the session (the code to the app).
	answered func(t *testing.T, h *harness, a answer)
	// refused checks the answer of a refused login.
	refused  func(t *testing.T, h *harness, a answer)
	wantType string // of the refusal's event
}{
	{
		name: "single sign-on: the 429 page",
		answered: func(t *testing.T, h *harness, a answer) {
			if u := a.location(t); a.status != http.StatusFound || u == nil || u.Query().Get("code") == "" {
				t.Fatalf("got %d %v, want the code at the app", a.status, a.header.Get("Location"))
			}
		},
		refused: func(t *testing.T, h *harness, a answer) {
			ra, err := strconv.Atoi(a.header.Get("Retry-After"))
			if a.status != http.StatusTooManyRequests || err != nil || ra < 1 || ra > 60 ||
				!strings.Contains(a.body, codeTooManyRequests) || !strings.Contains(a.body, sessionSignInsBusy) {
				t.Fatalf("got %d Retry-After %q:\n%s\nwant the 429 page with Retry-After 1..60", a.status, a.header.Get("Retry-After"), a.body)
			}
		},
		wantType: logs.TypeFailedLogin,
	},
	{
		name: "silent authentication: temporarily_unavailable at the redirect_uri",
		mut:  func(q url.Values) { q.Set("prompt", "none") },
		answered: func(t *testing.T, h *harness, a answer) {
			if u := a.location(t); a.status != http.StatusFound || u == nil || u.Query().Get("code") == "" {
				t.Fatalf("got %d %v, want the code at the app", a.status, a.header.Get("Location"))
			}
		},
		refused: func(t *testing.T, h *harness, a answer) {
			u := a.location(t)
			if a.status != http.StatusFound || u == nil || !strings.HasPrefix(u.String(), h.app.URL+"/spa?") {
				t.Fatalf("got %d %v, want a redirect to the app", a.status, a.header.Get("Location"))
			}
			if q := u.Query(); q.Get("error") != "temporarily_unavailable" || q.Get("code") != "" || q.Get("state") != "spa-state" ||
				q.Get("iss") == "" || !strings.Contains(q.Get("error_description"), "too many sign-ins through this session") {
				t.Fatalf("the app got %v, want temporarily_unavailable with state and iss", q)
			}
		},
		wantType: logs.TypeFailedSilentAuth,
	},
	{
		name: "silent authentication by web_message: temporarily_unavailable posted to the app",
		mut:  func(q url.Values) { q.Set("prompt", "none"); q.Set("response_mode", "web_message") },
		answered: func(t *testing.T, h *harness, a answer) {
			if a.status != http.StatusOK || !strings.Contains(a.body, `"code":"`) {
				t.Fatalf("got %d, want the code posted to the app:\n%s", a.status, a.body)
			}
		},
		refused: func(t *testing.T, h *harness, a answer) {
			if a.status != http.StatusOK || !strings.Contains(a.body, `"error":"temporarily_unavailable"`) ||
				!strings.Contains(a.body, `"state":"spa-state"`) || strings.Contains(a.body, `"code":"`) {
				t.Fatalf("got %d, want temporarily_unavailable posted to the app:\n%s", a.status, a.body)
			}
		},
		wantType: logs.TypeFailedSilentAuth,
	},
}

// TestSessionLoginsBeyondTheLimitAreRefused: a session answers logins (single sign-on, silent
// authentication) within its burst; beyond it each is refused as the other /authorize limits
// refuse (prompt=none: an answer the app can read), recorded as a refusal in the
// unauthenticated class, with nothing written to the session, the audit trail or the
// upstream. Another browser's session is not affected, and the session answers again once its
// bucket has refilled.
func TestSessionLoginsBeyondTheLimitAreRefused(t *testing.T) {
	for _, tc := range sessionLoginModes {
		t.Run(tc.name, func(t *testing.T) {
			h := sessionLimitHarness(t, config.RateLimit{Rate: "1/m", Burst: 3}, 100)
			b := h.browser()
			h.codeIn(b, appClient, nil) // the upstream login that creates the session: not charged
			for i := range 3 {
				tc.answered(t, h, h.spaAuthorize(b, "", tc.mut))
				if i == 0 && h.lastEvent().Details["sso"] != true {
					t.Fatalf("the login within the burst was not answered from the session: %+v", h.lastEvent())
				}
			}
			sid, _ := h.lastEvent().Details["session_id"].(string)
			h.clock.Advance(2 * time.Second) // an answered login would move the session's last use
			record, err := h.store.Get(context.Background(), sessions.KindSession, sid+".s")
			if err != nil {
				t.Fatal(err)
			}
			audit, upstream := h.auditEntries(), h.upstreamLogins()

			for range 5 {
				tc.refused(t, h, h.spaAuthorize(b, "", tc.mut))
			}
			e := h.newestEntry()
			var ev logs.Event
			if err := json.Unmarshal(e.Event, &ev); err != nil {
				t.Fatal(err)
			}
			rl := rateLimitOf(t, ev)
			if e.Class != sessions.LogUnauthenticated || ev.Type != tc.wantType || ev.Details["error"] != codeTooManyRequests ||
				ev.UserID != "oidc|corp|alice" || ev.ClientID != spaClient || ev.Details["session_id"] != sid ||
				rl["endpoint"] != "authorize" || rl["by"] != bySession || rl["limit"] != "1/m" || rl["burst"] != float64(3) {
				t.Fatalf("refusal event %s in class %v, want %s with details.rate_limit by session in the unauthenticated class", e.Event, e.Class, tc.wantType)
			}
			if n := h.auditEntries(); n != audit {
				t.Fatalf("the audit trail grew from %d to %d events with refused logins", audit, n)
			}
			if h.upstreamLogins() != upstream {
				t.Fatal("a refused login called the upstream")
			}
			if after, err := h.store.Get(context.Background(), sessions.KindSession, sid+".s"); err != nil || string(after) != string(record) {
				t.Fatalf("a refused login rewrote the session (err %v)", err)
			}

			other := h.browser()
			h.codeIn(other, appClient, nil)
			tc.answered(t, h, h.spaAuthorize(other, "", tc.mut))
			if ev := h.lastEvent(); ev.Details["sso"] != true || ev.Details["session_id"] == sid {
				t.Fatalf("another browser's login %+v, want it answered from its own session", ev)
			}

			h.clock.Advance(time.Minute)
			tc.answered(t, h, h.spaAuthorize(b, "", tc.mut))
		})
	}
}

// TestSessionLoginLimitIsSpentOnlyWhenTheSessionAnswers: requests the session does not answer
// (a cookie naming it with the wrong secret, as anyone who saw its sid in an ID token could
// send; a prompt or max_age that needs a new upstream login; another connection) spend
// nothing of its bucket: the user then gets the whole burst.
func TestSessionLoginLimitIsSpentOnlyWhenTheSessionAnswers(t *testing.T) {
	h := sessionLimitHarness(t, config.RateLimit{Rate: "1/h", Burst: 2}, 100)
	b := h.browser()
	h.codeIn(b, appClient, nil)
	sid, _, _ := strings.Cut(h.sessionCookieOf(b), ".")
	h.clock.Advance(10 * time.Second) // the session's auth_time is 10 s old
	loginRequired := func(t *testing.T, a answer) {
		if u := a.location(t); a.status != http.StatusFound || u == nil || u.Query().Get("error") != "login_required" {
			t.Fatalf("got %d %v, want login_required at the app", a.status, a.header.Get("Location"))
		}
	}
	for _, tc := range []struct {
		name   string
		forged bool // the session's sid with a made-up secret, from a browser without the session
		mut    func(url.Values)
		want   func(t *testing.T, a answer)
	}{
		{name: "the session's sid with a wrong secret", forged: true,
			mut: func(q url.Values) { q.Set("prompt", "none") }, want: loginRequired},
		{name: "prompt=login goes upstream", mut: func(q url.Values) { q.Set("prompt", "login") },
			want: func(t *testing.T, a answer) {
				if u := a.location(t); a.status != http.StatusFound || u == nil || !strings.HasPrefix(u.String(), h.up.URL) {
					t.Fatalf("got %d %v, want a redirect to the upstream", a.status, a.header.Get("Location"))
				}
			}},
		{name: "max_age exceeded by the session's auth_time",
			mut: func(q url.Values) { q.Set("prompt", "none"); q.Set("max_age", "5") }, want: loginRequired},
		{name: "another connection requested",
			mut: func(q url.Values) { q.Set("prompt", "none"); q.Set("connection", "other") }, want: loginRequired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range 5 {
				if tc.forged {
					tc.want(t, h.spaAuthorize(nil, sessionCookie+"="+sid+"."+strings.Repeat("x", 43), tc.mut))
				} else {
					tc.want(t, h.spaAuthorize(b, "", tc.mut))
				}
			}
		})
	}
	for i := range 2 {
		if a := h.spaAuthorize(b, "", nil); a.status != http.StatusFound || a.location(t).Query().Get("code") == "" {
			t.Fatalf("login %d of the burst after the unanswered requests: %d %v", i, a.status, a.header.Get("Location"))
		}
	}
	if a := h.spaAuthorize(b, "", nil); a.status != http.StatusTooManyRequests {
		t.Fatalf("the login beyond the burst: %d, want 429", a.status)
	}
}

// TestSessionLoginLimitRemembersBoundedSessions: the per-session buckets are a table bounded by
// rate_limits.max_keys like every limiter's (least recently used forgotten): many sessions
// never hold more, and the session in use keeps its bucket.
func TestSessionLoginLimitRemembersBoundedSessions(t *testing.T) {
	const maxKeys = 2
	h := sessionLimitHarness(t, config.RateLimit{Rate: "1/h", Burst: 1}, maxKeys)
	for i := range 5 {
		b := h.browser()
		h.codeIn(b, appClient, nil)
		if a := h.spaAuthorize(b, "", nil); a.status != http.StatusFound || a.location(t).Query().Get("code") == "" {
			t.Fatalf("session %d: first login %d %v, want its code", i, a.status, a.header.Get("Location"))
		}
		if a := h.spaAuthorize(b, "", nil); a.status != http.StatusTooManyRequests {
			t.Fatalf("session %d: second login %d, want 429 (burst 1)", i, a.status)
		}
		if n := h.broker.guard.authorizeSession.len(); n > maxKeys {
			t.Fatalf("after %d sessions the table holds %d keys, want at most %d", i+1, n, maxKeys)
		}
	}
}

// TestSessionLoginLimitDefaults: the per-session limit of logins answered from a session is
// on by default (1/s, burst 20) and off with rate "0" or rate_limits.enabled false.
func TestSessionLoginLimitDefaults(t *testing.T) {
	for _, tc := range []struct {
		name   string
		yaml   string
		wantOn bool
	}{
		{name: "default", wantOn: true},
		{name: "rate 0", yaml: "rate_limits: { authorize: { per_session: { rate: \"0\" } } }\n"},
		{name: "rate limits disabled", yaml: "rate_limits: { enabled: false }\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			configtest.SetEnv(t)
			cfg, err := config.Parse([]byte(configtest.ValidYAML + tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			g, err := newGuard(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			if on := g.authorizeSession != nil; on != tc.wantOn {
				t.Fatalf("per-session limiter built: %v, want %v", on, tc.wantOn)
			}
			if tc.wantOn && (g.authorizeSession.limit != 1 || g.authorizeSession.burst != 20 || g.authorizeSession.key != bySession) {
				t.Fatalf("limiter %+v, want 1/s burst 20 by session", g.authorizeSession)
			}
		})
	}
}
