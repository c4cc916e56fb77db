package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/config/configtest"
	"github.com/dpop-broker/dpop-broker/logs"
)

func rateOf(t *testing.T, s string) rate.Limit {
	t.Helper()
	l, err := config.ParseRate(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// serve runs one request through the broker's handler in process.
func (h *harness) serve(req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.broker.Handler().ServeHTTP(rec, req)
	return rec
}

// getRaw builds a GET for path with a raw (unchecked) query.
func getRaw(path, rawQuery string) *http.Request {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.URL.RawQuery = rawQuery
	req.RequestURI = path + "?" + rawQuery
	return req
}

// eventCount is the number of events in the harness log.
func (h *harness) eventCount() int {
	h.t.Helper()
	evs, err := h.events.Recent(context.Background(), "", 1000)
	if err != nil {
		h.t.Fatalf("events: %v", err)
	}
	return len(evs)
}

func TestLimitsAuthorize(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp})
	long := func(n int) string { return strings.Repeat("a", n) }
	base := func(mut func(q url.Values)) string {
		u, _ := url.Parse(h.authorizeURL(mut))
		return u.RawQuery
	}
	const toApp, page = "app", "page"
	for _, tc := range []struct {
		name, rawQuery string
		want           string // toApp (redirect with invalid_request) or page
		status         int    // for page
		param, desc    string
	}{
		{name: "state longer than 512 bytes", rawQuery: base(func(q url.Values) { q.Set("state", long(513)) }), want: toApp, status: 0, param: "state", desc: "state is longer than 512 bytes"},
		{name: "state of 512 bytes accepted", rawQuery: base(func(q url.Values) { q.Set("state", long(512)) }), want: "", status: 0, param: "", desc: ""},
		{name: "nonce longer than 256 bytes is refused", rawQuery: base(func(q url.Values) { q.Set("nonce", long(257)) }), want: toApp, status: 0, param: "nonce", desc: "nonce is longer than 256 bytes"},
		{name: "nonce of 256 bytes is accepted", rawQuery: base(func(q url.Values) { q.Set("nonce", long(256)) }), want: "", status: 0, param: "", desc: ""},
		{name: "scope longer than 1 KiB", rawQuery: base(func(q url.Values) { q.Set("scope", "openid "+long(1024)) }), want: toApp, status: 0, param: "scope", desc: "scope is longer than 1024 bytes"},
		{name: "code_challenge longer than 43", rawQuery: base(func(q url.Values) { q.Set("code_challenge", long(44)) }), want: toApp, status: 0, param: "code_challenge", desc: "code_challenge must be exactly 43 characters (a base64url SHA-256 value)"},
		{name: "login_hint longer than 512 bytes", rawQuery: base(func(q url.Values) { q.Set("login_hint", long(513)) }), want: toApp, status: 0, param: "login_hint", desc: "login_hint is longer than 512 bytes"},
		{name: "unknown parameter longer than 2 KiB", rawQuery: base(func(q url.Values) { q.Set("x_extra", long(2049)) }), want: toApp, status: 0, param: "x_extra", desc: "x_extra is longer than 2048 bytes"},
		{name: "RFC 6749 3.1 repeated login_hint", rawQuery: base(func(q url.Values) { q["login_hint"] = []string{"a", "b"} }), want: toApp, status: 0, param: "login_hint", desc: "login_hint must not be repeated"},
		{name: "RFC 6749 3.1 repeated nonce", rawQuery: base(func(q url.Values) { q["nonce"] = []string{"a", "b"} }), want: toApp, status: 0, param: "nonce", desc: "nonce must not be repeated"},
		{name: "more than 64 parameters", rawQuery: base(func(q url.Values) {
			for i := range 60 {
				q.Set("p"+strconv.Itoa(i), "x")
			}
		}), want: toApp, status: 0, param: "", desc: "the request has more than 64 parameters"},
		{name: "long parameter name", rawQuery: base(func(q url.Values) { q.Set(long(65), "x") }), want: toApp, status: 0, param: long(64) + "…", desc: "a parameter name is longer than 64 bytes"},
		{name: "redirect_uri longer than 2 KiB: no redirect", rawQuery: base(func(q url.Values) { q.Set("redirect_uri", h.app.URL+"/cb?"+long(2048)) }), want: page, status: 400, param: "redirect_uri", desc: "redirect_uri is longer than 2048 bytes"},
		{name: "unknown client with a long state: no redirect", rawQuery: base(func(q url.Values) { q.Set("client_id", "nope"); q.Set("state", long(600)) }), want: page, status: 400, param: "state", desc: "state is longer than 512 bytes"},
		{name: "RFC 6749 3.1 repeated client_id: no redirect", rawQuery: base(func(q url.Values) { q.Add("client_id", appClient) }), want: page, status: 400, param: "client_id", desc: "client_id must not be repeated"},
		{name: "query longer than 8 KiB", rawQuery: base(func(q url.Values) { q.Set("x_pad", long(8192)) }), want: page, status: 414, param: "", desc: "The request is too large: the query string is longer than 8192 bytes."},
		{name: "malformed percent-encoding", rawQuery: base(nil) + "&x=%zz", want: page, status: 400, param: "", desc: "The query string is malformed (invalid percent-encoding or a ';' separator)."},
		{name: "semicolon separator", rawQuery: base(nil) + ";x=1", want: page, status: 400, param: "", desc: "The query string is malformed (invalid percent-encoding or a ';' separator)."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.up.Stats.AuthorizeRequests.Load()
			rec := h.serve(getRaw("/authorize", tc.rawQuery))
			loc := rec.Header().Get("Location")
			switch tc.want {
			case "":
				if rec.Code != http.StatusFound || !strings.HasPrefix(loc, h.up.URL) {
					t.Fatalf("got %d %s, want a redirect to the upstream", rec.Code, loc)
				}
				return
			case toApp:
				u, err := url.Parse(loc)
				if rec.Code != http.StatusFound || err != nil || !strings.HasPrefix(loc, h.app.URL+"/cb?") {
					t.Fatalf("got %d Location %q, want a redirect to the app", rec.Code, loc)
				}
				q := u.Query()
				if q.Get("error") != "invalid_request" || q.Get("error_description") != tc.desc || q.Get("iss") != h.cfg.Issuer {
					t.Fatalf("app got %v, want invalid_request %q with iss", q, tc.desc)
				}
				if st := q.Get("state"); tc.param == "state" && st != "" || tc.param != "state" && st != "app-state-123" {
					t.Fatalf("state = %q (an over-long state must not be echoed; a valid one must)", st)
				}
			case page:
				if rec.Code != tc.status || loc != "" || !strings.Contains(rec.Body.String(), "invalid_request") {
					t.Fatalf("got %d Location %q, want a %d error page", rec.Code, loc, tc.status)
				}
				if !strings.Contains(rec.Body.String(), htmlEscape(tc.desc)) {
					t.Fatalf("page does not say %q:\n%s", tc.desc, rec.Body.String())
				}
			}
			ev := wantFail(t, h, codeInvalidRequest)
			if tc.param != "" && ev.Details["parameter"] != tc.param {
				t.Errorf("details.parameter = %v, want %s", ev.Details["parameter"], tc.param)
			}
			if ev.Details["error_description"] != clip(tc.desc, 512) {
				t.Errorf("details.error_description = %v", ev.Details["error_description"])
			}
			if h.up.Stats.AuthorizeRequests.Load() != before {
				t.Error("the upstream was contacted for a refused request")
			}
		})
	}
}

func htmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "'", "&#39;", "<", "&lt;", ">", "&gt;", `"`, "&#34;").Replace(s)
}

func TestLimitsCallback(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp})
	for _, tc := range []struct {
		name, rawQuery string
		status         int
		desc           string
		event          string // details.error of the f event; "" means invalid_request
	}{
		{name: "callback query longer than 8 KiB", rawQuery: "state=x&code=" + strings.Repeat("c", 8200), status: 414, desc: "the query string is longer than 8192 bytes"},
		{name: "callback code longer than 4 KiB", rawQuery: "state=x&code=" + strings.Repeat("c", 4097), status: 400, desc: "code is longer than 4096 bytes"},
		{name: "callback state longer than 512", rawQuery: "state=" + strings.Repeat("s", 513) + "&code=x", status: 400, desc: "state is longer than 512 bytes"},
		{name: "callback error_description longer than 2 KiB", rawQuery: "state=x&error=access_denied&error_description=" + strings.Repeat("d", 2049), status: 400, desc: "error_description is longer than 2048 bytes"},
		{name: "RFC 6749 3.1 callback repeated code", rawQuery: "state=x&code=a&code=b", status: 400, desc: "code must not be repeated"},
		{name: "RFC 6749 3.1 callback repeated state", rawQuery: "state=x&state=y&code=a", status: 400, desc: "state must not be repeated"},
		{name: "callback malformed query", rawQuery: "state=x&code=%zz", status: 400, desc: "malformed"},
		// A long (Azure-style) code passes the limits and reaches the handler.
		{name: "callback code of 1500 bytes reaches the handler", rawQuery: "state=x&code=" + strings.Repeat("c", 1500), status: 400, desc: "login transaction unknown, expired or already used", event: codeInvalidState},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := h.serve(getRaw("/login/callback", tc.rawQuery))
			if rec.Code != tc.status || rec.Header().Get("Location") != "" || !strings.Contains(rec.Body.String(), tc.desc) {
				t.Fatalf("got %d %s, want %d page with %q", rec.Code, rec.Body.String(), tc.status, tc.desc)
			}
			code := codeInvalidRequest
			if tc.event != "" {
				code = tc.event
			}
			wantFail(t, h, code)
		})
	}
}

func TestLimitsTokenBody(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp})
	pad := func(n int) string { return strings.Repeat("p", n) }
	formAt := func(size int) string { // a form body of exactly size bytes
		f := "grant_type=authorization_code&code=abc.def&pad="
		return f + pad(size-len(f))
	}
	jsonAt := func(size int) string {
		f := `{"grant_type":"authorization_code","code":"abc.def","pad":"`
		return f + pad(size-len(f)-2) + `"}`
	}
	for _, tc := range []struct {
		name, ct, body string
		chunked        bool
		status         int
		err            string
	}{
		{name: "form body over 64 KiB → 413", ct: "application/x-www-form-urlencoded", body: formAt(maxBodyBytes + 1), chunked: false, status: 413, err: "invalid_request"},
		{name: "JSON body over 64 KiB → 413", ct: "application/json", body: jsonAt(maxBodyBytes + 1), chunked: false, status: 413, err: "invalid_request"},
		{name: "chunked body over 64 KiB → 413", ct: "application/x-www-form-urlencoded", body: formAt(maxBodyBytes + 100), chunked: true, status: 413, err: "invalid_request"},
		{name: "form body of exactly 64 KiB reaches the handler", ct: "application/x-www-form-urlencoded", body: formAt(maxBodyBytes), chunked: false, status: 401, err: "invalid_client"},
		{name: "JSON body of exactly 64 KiB reaches the handler", ct: "application/json", body: jsonAt(maxBodyBytes), chunked: false, status: 401, err: "invalid_client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(tc.body)
			if tc.chunked {
				body = io.MultiReader(body) // unknown length: sent chunked
			}
			req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/oauth/token", body)
			req.Header.Set("Content-Type", tc.ct)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var got oauthError
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatalf("body is not OAuth JSON: %v", err)
			}
			if resp.StatusCode != tc.status || got.Code != tc.err || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("got %d %+v, want %d %s", resp.StatusCode, got, tc.status, tc.err)
			}
			if tc.status == 413 && got.Description != "the request body is larger than 65536 bytes" {
				t.Errorf("description %q", got.Description)
			}
		})
	}
}

// rlHarness is a harness with rate limits on and the given limits.
func rlHarness(t *testing.T, mut func(rl *config.RateLimits)) *harness {
	return newHarness(t, harnessOpts{up: dpopUp, mutate: func(c *config.Config) {
		c.RateLimits.Enabled = true
		unlimited := config.RateLimit{Rate: "0"}
		c.RateLimits.Authorize.EndpointRateLimits = config.EndpointRateLimits{PerIP: unlimited, PerClient: unlimited}
		c.RateLimits.Token.EndpointRateLimits = config.EndpointRateLimits{PerIP: unlimited, PerClient: unlimited}
		mut(&c.RateLimits)
	}})
}

// authorizeFrom sends the app's /authorize from a client address.
func (h *harness) authorizeFrom(remote string, mut func(q url.Values)) *httptest.ResponseRecorder {
	u, _ := url.Parse(h.authorizeURL(mut))
	req := getRaw("/authorize", u.RawQuery)
	req.RemoteAddr = remote
	return h.serve(req)
}

func wantTooMany(t *testing.T, rec *httptest.ResponseRecorder, retryAfter int) {
	t.Helper()
	if rec.Code != http.StatusTooManyRequests {
		t.Fatalf("got %d, want 429", rec.Code)
	}
	if got := rec.Header().Get("Retry-After"); got != strconv.Itoa(retryAfter) {
		t.Fatalf("Retry-After = %q, want %d", got, retryAfter)
	}
	if !strings.Contains(rec.Body.String(), codeTooManyRequests) {
		t.Fatalf("body lacks %s: %s", codeTooManyRequests, rec.Body.String())
	}
}

func TestRateLimitAuthorize(t *testing.T) {
	t.Run("per IP: burst, then 429 with Retry-After and one f event", func(t *testing.T) {
		h := rlHarness(t, func(rl *config.RateLimits) { rl.Authorize.PerIP = config.RateLimit{Rate: "1/h", Burst: 3} })
		// Refusal events are unauthenticated events: limited per IP by logs.unauthenticated.
		h.events.Limits = logs.NewLimiter(logs.LimiterConfig{PerIPRate: rate.Every(time.Minute), PerIPBurst: 1})
		for i := range 3 {
			if rec := h.authorizeFrom("192.0.2.1:1000", nil); rec.Code != http.StatusFound {
				t.Fatalf("request %d within the burst: %d", i, rec.Code)
			}
		}
		n := h.eventCount()
		wantTooMany(t, h.authorizeFrom("192.0.2.1:1001", nil), 3600)
		ev := wantFail(t, h, codeTooManyRequests)
		rl, _ := ev.Details["rate_limit"].(map[string]any)
		if ev.ClientID != appClient || ev.IP != "192.0.2.1" || rl["endpoint"] != "authorize" || rl["by"] != "ip" ||
			rl["limit"] != "1/h" || fmt.Sprint(rl["burst"]) != "3" || fmt.Sprint(rl["retry_after"]) != "3600" {
			t.Fatalf("event = %+v", ev)
		}
		// Further refusals are not logged until the event budget of the IP refills.
		for range 5 {
			wantTooMany(t, h.authorizeFrom("192.0.2.1:1002", nil), 3600)
		}
		if got := h.eventCount(); got != n+1 {
			t.Fatalf("%d events after 6 refusals, want 1", got-n)
		}
		if got := h.droppedEvents(logs.TypeFailedLogin, logs.DropPerIP); got != 5 {
			t.Fatalf("dropped events counter = %v, want 5", got)
		}
		// Another address has its own bucket.
		if rec := h.authorizeFrom("192.0.2.2:1000", nil); rec.Code != http.StatusFound {
			t.Fatalf("other IP: %d", rec.Code)
		}
		h.clock.Advance(61 * time.Second) // the event budget, not the request bucket, has recovered
		rec := h.authorizeFrom("192.0.2.1:1003", nil)
		if ra, _ := strconv.Atoi(rec.Header().Get("Retry-After")); rec.Code != http.StatusTooManyRequests || ra >= 3600 || ra < 3500 {
			t.Fatalf("got %d Retry-After %d, want 429 with less than an hour left", rec.Code, ra)
		}
		if got := h.eventCount(); got != n+2 {
			t.Fatalf("no event a minute later (%d)", got-n)
		}
	})
	t.Run("per client: registered clients only", func(t *testing.T) {
		h := rlHarness(t, func(rl *config.RateLimits) { rl.Authorize.PerClient = config.RateLimit{Rate: "1/m", Burst: 2} })
		for i := range 2 {
			if rec := h.authorizeFrom("192.0.2.1:1", nil); rec.Code != http.StatusFound {
				t.Fatalf("request %d: %d", i, rec.Code)
			}
		}
		wantTooMany(t, h.authorizeFrom("192.0.2.9:1", nil), 60) // any address
		ev := wantFail(t, h, codeTooManyRequests)
		if rl, _ := ev.Details["rate_limit"].(map[string]any); rl["by"] != "client" || ev.ClientID != appClient {
			t.Fatalf("event %+v", ev)
		}
		spa := h.authorizeFrom("192.0.2.1:1", func(q url.Values) {
			q.Set("client_id", spaClient)
			q.Set("redirect_uri", h.app.URL+"/spa")
			q.Set("connection", "corp")
		})
		if spa.Code != http.StatusFound {
			t.Fatalf("another client was limited: %d", spa.Code)
		}
		for i := range 50 { // unknown ids are refused by the handler and never keyed
			h.authorizeFrom("192.0.2.1:1", func(q url.Values) { q.Set("client_id", "spoof-"+strconv.Itoa(i)) })
		}
		if n := h.broker.guard.authorizeClient.len(); n != 2 {
			t.Fatalf("client table holds %d keys, want 2", n)
		}
	})
	t.Run("none when turned off", func(t *testing.T) {
		h := newHarness(t, harnessOpts{up: dpopUp}) // the harness turns them off
		if g := h.broker.guard; g.authorizeIP != nil || g.authorizeClient != nil || g.tokenIP != nil || g.tokenClient != nil ||
			g.callbackIP != nil || g.logoutIP != nil || g.liveTx != nil {
			t.Fatal("limiters built while disabled")
		}
		for i := range 60 {
			if rec := h.authorizeFrom("192.0.2.1:1", nil); rec.Code != http.StatusFound {
				t.Fatalf("request %d: %d", i, rec.Code)
			}
		}
	})
	t.Run("trusted proxy: per-IP key and event ip from X-Forwarded-For", func(t *testing.T) {
		h := newHarness(t, harnessOpts{up: dpopUp, mutate: func(c *config.Config) {
			c.TrustedProxies = []string{"10.0.0.0/8"}
			c.RateLimits.Enabled = true
			c.RateLimits.Authorize.EndpointRateLimits = config.EndpointRateLimits{PerIP: config.RateLimit{Rate: "1/h", Burst: 1}, PerClient: config.RateLimit{Rate: "0"}}
		}})
		send := func(peer, xff string) *httptest.ResponseRecorder {
			u, _ := url.Parse(h.authorizeURL(nil))
			req := getRaw("/authorize", u.RawQuery)
			req.RemoteAddr = peer
			req.Header.Set("X-Forwarded-For", xff)
			return h.serve(req)
		}
		if rec := send("10.0.0.5:1", "198.51.100.1"); rec.Code != http.StatusFound {
			t.Fatalf("first: %d", rec.Code)
		}
		// Same client through another proxy: same key, refused.
		wantTooMany(t, send("10.0.0.6:1", "spoofed, 198.51.100.1"), 3600)
		if ev := wantFail(t, h, codeTooManyRequests); ev.IP != "198.51.100.1" {
			t.Fatalf("event ip %q", ev.IP)
		}
		// Another client behind the proxy has its own bucket.
		if rec := send("10.0.0.5:1", "198.51.100.2"); rec.Code != http.StatusFound {
			t.Fatalf("other client: %d", rec.Code)
		}
		// An untrusted peer cannot pick its key with a spoofed X-Forwarded-For.
		if rec := send("203.0.113.1:1", "198.51.100.3"); rec.Code != http.StatusFound {
			t.Fatalf("untrusted peer first: %d", rec.Code)
		}
		wantTooMany(t, send("203.0.113.1:2", "198.51.100.4"), 3600)
	})
}

func TestRateLimitToken(t *testing.T) {
	postTo := func(path string, h *harness, remote string, form url.Values, basic bool) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.RemoteAddr = remote
		if basic {
			req.SetBasicAuth(appClient, appSecret)
		}
		return h.serve(req)
	}
	post := func(h *harness, remote string, form url.Values, basic bool) *httptest.ResponseRecorder {
		return postTo("/oauth/token", h, remote, form, basic)
	}
	wantJSON429 := func(t *testing.T, rec *httptest.ResponseRecorder, retryAfter string) {
		t.Helper()
		var e oauthError
		if rec.Code != http.StatusTooManyRequests || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Code != codeTooManyRequests ||
			rec.Header().Get("Content-Type") != "application/json" ||
			retryAfter != "" && rec.Header().Get("Retry-After") != retryAfter || rec.Header().Get("Retry-After") == "" {
			t.Fatalf("got %d %s Retry-After %q, want 429 too_many_requests %s", rec.Code, rec.Body.String(), rec.Header().Get("Retry-After"), retryAfter)
		}
	}
	t.Run("per IP: 429 JSON, Retry-After, feacft event", func(t *testing.T) {
		h := rlHarness(t, func(rl *config.RateLimits) { rl.Token.PerIP = config.RateLimit{Rate: "2/m", Burst: 2} })
		form := url.Values{"grant_type": {"authorization_code"}, "code": {"abc.def"}, "redirect_uri": {h.app.URL + "/cb"}}
		for i := range 2 {
			if rec := post(h, "192.0.2.1:1", form, true); rec.Code != http.StatusBadRequest {
				t.Fatalf("request %d: %d %s", i, rec.Code, rec.Body.String())
			}
		}
		wantJSON429(t, post(h, "192.0.2.1:2", form, true), "30")
		ev := h.lastEvent()
		rl, _ := ev.Details["rate_limit"].(map[string]any)
		if ev.Type != logs.TypeFailedExchange || ev.Details["error"] != codeTooManyRequests || ev.ClientID != appClient ||
			rl["endpoint"] != "token" || rl["by"] != "ip" {
			t.Fatalf("event %+v", ev)
		}
		h.clock.Advance(2 * time.Second)
		form.Set("grant_type", "refresh_token")
		wantJSON429(t, post(h, "192.0.2.1:3", form, true), "") // about 28 s: real time passes too
		if ev := h.lastEvent(); ev.Type != logs.TypeFailedRefresh || ev.Details["error"] != codeTooManyRequests {
			t.Fatalf("refresh refusal event %+v", ev)
		}
	})
	t.Run("/oauth/revoke shares the token limits; its refusals are frrt", func(t *testing.T) {
		h := rlHarness(t, func(rl *config.RateLimits) { rl.Token.PerIP = config.RateLimit{Rate: "1/m", Burst: 1} })
		revoke := url.Values{"token": {"not-a-token"}}
		if rec := postTo("/oauth/revoke", h, "192.0.2.9:1", revoke, true); rec.Code != http.StatusOK {
			t.Fatalf("first revocation: %d %s", rec.Code, rec.Body.String())
		}
		wantJSON429(t, postTo("/oauth/revoke", h, "192.0.2.9:2", revoke, true), "60")
		if ev := h.lastEvent(); ev.Type != logs.TypeFailedRevocation || ev.Details["error"] != codeTooManyRequests || ev.ClientID != appClient {
			t.Fatalf("revocation refusal event %+v", ev)
		}
	})
	t.Run("per client: authenticated requests only, from any address", func(t *testing.T) {
		h := rlHarness(t, func(rl *config.RateLimits) { rl.Token.PerClient = config.RateLimit{Rate: "1/h", Burst: 1} })
		postApp := newHarness(t, harnessOpts{up: dpopUp, mutate: func(c *config.Config) {
			c.RateLimits.Enabled = true
			c.RateLimits.Token.PerClient = config.RateLimit{Rate: "1/h", Burst: 1}
			c.Clients[0].TokenEndpointAuthMethod = config.AuthSecretPost // the app sends its secret in the body
		}})
		form := url.Values{"grant_type": {"authorization_code"}, "code": {"abc.def"}}
		if rec := post(h, "192.0.2.1:1", form, true); rec.Code != http.StatusBadRequest {
			t.Fatalf("first: %d", rec.Code)
		}
		wantJSON429(t, post(h, "192.0.2.2:1", form, true), "3600")
		if ev := h.lastEvent(); ev.Type != logs.TypeFailedExchange || ev.ClientID != appClient ||
			ev.Details["rate_limit"].(map[string]any)["by"] != "client" {
			t.Fatalf("per-client refusal event %+v", ev)
		}
		body := url.Values{"grant_type": {"authorization_code"}, "code": {"abc.def"}, "client_id": {appClient}, "client_secret": {"wrong"}}
		for i := range 3 {
			if rec := post(postApp, "192.0.2.3:1", body, false); rec.Code != http.StatusUnauthorized {
				t.Fatalf("wrong secret in the body, request %d: %d, want 401 (the client's bucket untouched)", i, rec.Code)
			}
		}
		body.Set("client_secret", appSecret)
		if rec := post(postApp, "192.0.2.3:1", body, false); rec.Code != http.StatusBadRequest {
			t.Fatalf("the app with its secret in the body: %d", rec.Code)
		}
		wantJSON429(t, post(postApp, "192.0.2.4:1", body, false), "3600")
		body.Del("client_secret")
		body.Set("client_id", spaClient)
		for i := range 5 { // a public client proves nothing by naming itself: limited per IP only
			if rec := post(h, "192.0.2.3:1", body, false); rec.Code == http.StatusTooManyRequests {
				t.Fatalf("public client request %d limited per client", i)
			}
		}
		for i := range 20 {
			body.Set("client_id", "spoof-"+strconv.Itoa(i))
			post(h, "192.0.2.3:1", body, false)
		}
		if n := h.broker.guard.tokenClient.len(); n != 1 {
			t.Fatalf("client table holds %d keys, want only the authenticated app", n)
		}
	})
}

func TestLimiterTable(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	t.Run("burst then refill", func(t *testing.T) {
		tb := newLimiterTable("token", "ip", config.RateLimit{Rate: "1/s", Burst: 2}, 1, 10)
		for i := range 2 {
			if tb.take("k", t0) != nil {
				t.Fatalf("request %d of the burst refused", i)
			}
		}
		ref := tb.take("k", t0.Add(250*time.Millisecond))
		if ref == nil || ref.retryAfter != 750*time.Millisecond || ref.retryAfterSeconds() != 1 {
			t.Fatalf("refusal %+v", ref)
		}
		if ref := tb.take("k", t0.Add(500*time.Millisecond)); ref == nil {
			t.Fatal("second refusal within a second allowed")
		}
		if tb.take("k", t0.Add(time.Second)) != nil {
			t.Fatal("not refilled after 1 s")
		}
	})
	t.Run("Retry-After rounds up to whole seconds", func(t *testing.T) {
		tb := newLimiterTable("authorize", "ip", config.RateLimit{Rate: "1/m", Burst: 1}, rateOf(t, "1/m"), 10)
		_ = tb.take("k", t0)
		ref := tb.take("k", t0.Add(100*time.Millisecond))
		rec := httptest.NewRecorder()
		ref.setRetryAfter(rec)
		if rec.Header().Get("Retry-After") != "60" {
			t.Fatalf("Retry-After %q", rec.Header().Get("Retry-After"))
		}
		if d := ref.description(); d != "too many requests from this address (limit 1/m, burst 1); retry after 60 s" {
			t.Fatalf("description %q", d)
		}
	})
	t.Run("eviction under many keys", func(t *testing.T) {
		tb := newLimiterTable("authorize", "ip", config.RateLimit{Rate: "1/h", Burst: 1}, rateOf(t, "1/h"), 100)
		if tb.take("hot", t0) != nil {
			t.Fatal("first hot request refused")
		}
		for i := range 100_000 {
			if tb.take("spoof-"+strconv.Itoa(i), t0) != nil {
				t.Fatal("new key refused")
			}
			if i%50 == 0 && tb.take("hot", t0) == nil { // recently used: never evicted
				t.Fatalf("hot key forgotten after %d spoofed keys", i)
			}
			if n := tb.len(); n > 100 {
				t.Fatalf("table grew to %d keys", n)
			}
		}
		if tb.take("spoof-0", t0) != nil { // long evicted: a fresh bucket
			t.Fatal("evicted key still limited")
		}
	})
}

func TestIPKeyAndRates(t *testing.T) {
	for _, tc := range []struct{ name, a, b string }{
		{name: "IPv6 keyed by /64", a: "2001:db8:1:2::1", b: "2001:db8:1:2:ffff::9"},
		{name: "IPv4-mapped IPv6 is the IPv4 address", a: "::ffff:192.0.2.1", b: "192.0.2.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if logs.IPKey(tc.a) != logs.IPKey(tc.b) {
				t.Fatalf("%s → %s, %s → %s", tc.a, logs.IPKey(tc.a), tc.b, logs.IPKey(tc.b))
			}
		})
	}
	if logs.IPKey("2001:db8:1:2::1") == logs.IPKey("2001:db8:1:3::1") || logs.IPKey("192.0.2.1") == logs.IPKey("192.0.2.2") {
		t.Fatal("distinct clients share a key")
	}
	for _, tc := range []struct {
		in   string
		want float64 // per second; -1 = error
	}{
		{in: "20/s", want: 20}, {in: "600/m", want: 10}, {in: "3600/h", want: 1}, {in: "0.5/s", want: 0.5}, {in: "0", want: 0}, {in: "", want: 0}, {in: "0/s", want: 0},
		{in: "20", want: -1}, {in: "20/d", want: -1}, {in: "-1/s", want: -1}, {in: "abc/s", want: -1}, {in: "Inf/s", want: -1}, {in: "NaN/s", want: -1}, {in: "/s", want: -1},
	} {
		t.Run("rate "+tc.in, func(t *testing.T) {
			got, err := config.ParseRate(tc.in)
			if tc.want < 0 {
				if err == nil {
					t.Fatalf("accepted: %v", got)
				}
				return
			}
			if err != nil || float64(got) != tc.want {
				t.Fatalf("got %v %v, want %v", got, err, tc.want)
			}
		})
	}
}

func TestTrustedProxies(t *testing.T) {
	g, err := newGuard(&config.Config{TrustedProxies: []string{"10.0.0.0/8", "192.0.2.10", "::1", "fd00::/8"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	none, _ := newGuard(&config.Config{}, nil)
	for _, tc := range []struct {
		name   string
		g      *guard
		remote string
		xff    []string
		want   string
	}{
		{name: "no trusted proxies: X-Forwarded-For ignored", g: none, remote: "10.0.0.1:5", xff: []string{"198.51.100.1"}, want: "10.0.0.1"},
		{name: "spoofed X-Forwarded-For from an untrusted peer ignored", g: g, remote: "203.0.113.9:5", xff: []string{"198.51.100.1"}, want: "203.0.113.9"},
		{name: "trusted peer: client from X-Forwarded-For", g: g, remote: "10.1.2.3:5", xff: []string{"198.51.100.1"}, want: "198.51.100.1"},
		{name: "right-most untrusted hop wins over forged entries", g: g, remote: "10.1.2.3:5", xff: []string{"1.1.1.1, 8.8.8.8, 198.51.100.1"}, want: "198.51.100.1"},
		{name: "chain of trusted proxies skipped", g: g, remote: "10.0.0.1:5", xff: []string{"198.51.100.1, 192.0.2.10, 10.0.0.2"}, want: "198.51.100.1"},
		{name: "several X-Forwarded-For headers in order", g: g, remote: "10.0.0.1:5", xff: []string{"1.1.1.1", "198.51.100.7, 10.9.9.9"}, want: "198.51.100.7"},
		{name: "all hops trusted: left-most", g: g, remote: "10.0.0.1:5", xff: []string{"10.0.0.3, 10.0.0.2"}, want: "10.0.0.3"},
		{name: "no X-Forwarded-For: the proxy itself", g: g, remote: "10.0.0.1:5", xff: nil, want: "10.0.0.1"},
		{name: "garbage hop: the last trusted proxy", g: g, remote: "10.0.0.1:5", xff: []string{"198.51.100.1, not-an-ip"}, want: "10.0.0.1"},
		{name: "garbage left of the client ignored", g: g, remote: "10.0.0.1:5", xff: []string{"<script>, 198.51.100.1"}, want: "198.51.100.1"},
		{name: "hop with port and IPv6 brackets", g: g, remote: "[::1]:5", xff: []string{"[2001:db8::5]:443"}, want: "2001:db8::5"},
		{name: "IPv4 hop with port", g: g, remote: "[::1]:5", xff: []string{"198.51.100.1:8443"}, want: "198.51.100.1"},
		{name: "IPv4-mapped trusted peer", g: g, remote: "[::ffff:10.0.0.1]:5", xff: []string{"198.51.100.1"}, want: "198.51.100.1"},
		{name: "IPv6 trusted range", g: g, remote: "[fd00::1]:5", xff: []string{"2001:db8::9"}, want: "2001:db8::9"},
		{name: "unparseable peer kept as is", g: g, remote: "@", xff: []string{"198.51.100.1"}, want: "@"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/authorize", nil)
			r.RemoteAddr = tc.remote
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := tc.g.clientAddr(r); got != tc.want {
				t.Fatalf("client = %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("at most 32 hops examined", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = "10.0.0.1:5"
		r.Header.Set("X-Forwarded-For", "198.51.100.1,"+strings.Repeat("10.0.0.2,", 40)+"10.0.0.2")
		if got := g.clientAddr(r); got != "10.0.0.2" {
			t.Fatalf("client = %q", got)
		}
	})
}

func TestRateLimitConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		mut  func(c *config.Config)
		want config.FieldError
	}{
		{name: "bad rate", mut: func(c *config.Config) { c.RateLimits.Authorize.PerIP.Rate = "fast" },
			want: config.FieldError{Key: "rate_limits.authorize.per_ip.rate", Reason: `"fast" is not a rate (use N/s, N/m or N/h, e.g. 20/s; 0 = unlimited)`}},
		{name: "rate without unit", mut: func(c *config.Config) { c.RateLimits.Token.PerClient.Rate = "20" },
			want: config.FieldError{Key: "rate_limits.token.per_client.rate", Reason: `"20" is not a rate (use N/s, N/m or N/h, e.g. 20/s; 0 = unlimited)`}},
		{name: "burst zero with a rate", mut: func(c *config.Config) { c.RateLimits.Token.PerIP.Burst = 0 },
			want: config.FieldError{Key: "rate_limits.token.per_ip.burst", Reason: "must be between 1 and 1000000 when a rate is set"}},
		{name: "max_keys", mut: func(c *config.Config) { c.RateLimits.MaxKeys = 0 },
			want: config.FieldError{Key: "rate_limits.max_keys", Reason: "must be between 1 and 10000000"}},
		{name: "trusted proxy not a CIDR", mut: func(c *config.Config) { c.TrustedProxies = []string{"10.0.0.0/8", "proxy.internal"} },
			want: config.FieldError{Key: "trusted_proxies[1]", Reason: `"proxy.internal" is not an IP address or CIDR (e.g. 10.0.0.0/8 or 192.0.2.10)`}},
		{name: "trusted proxy bad prefix length", mut: func(c *config.Config) { c.TrustedProxies = []string{"10.0.0.0/33"} },
			want: config.FieldError{Key: "trusted_proxies[0]", Reason: `"10.0.0.0/33" is not an IP address or CIDR (e.g. 10.0.0.0/8 or 192.0.2.10)`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			configtest.SetEnv(t)
			cfg, err := config.Parse([]byte(configtest.ValidYAML))
			if err != nil {
				t.Fatal(err)
			}
			tc.mut(cfg)
			errs := cfg.Validate()
			if len(errs) != 1 || errs[0] != tc.want {
				t.Fatalf("got %v, want exactly %v", config.FieldErrors(errs), tc.want)
			}
		})
	}
	t.Run("YAML shape", func(t *testing.T) {
		configtest.SetEnv(t)
		cfg, err := config.Parse([]byte(configtest.ValidYAML + `
trusted_proxies: ["10.0.0.0/8", "::1"]
rate_limits:
  enabled: true
  max_keys: 500
  authorize:
    per_ip: { rate: "5/s", burst: 10 }
  token:
    per_client: { rate: "0" }
`))
		if err != nil {
			t.Fatal(err)
		}
		rl := cfg.RateLimits
		if !rl.Enabled || rl.MaxKeys != 500 || rl.Authorize.PerIP != (config.RateLimit{Rate: "5/s", Burst: 10}) ||
			rl.Authorize.PerClient != (config.RateLimit{Rate: "0"}) || rl.Token.PerClient.Rate != "0" || len(cfg.TrustedProxies) != 2 {
			t.Fatalf("decoded %+v %v", rl, cfg.TrustedProxies)
		}
		if errs := cfg.Validate(); len(errs) != 0 {
			t.Fatal(config.FieldErrors(errs))
		}
		_, err = config.Parse([]byte("rate_limits:\n  authorize:\n    per_ip: { rps: 5 }\n"))
		if err == nil || !strings.Contains(err.Error(), "rate_limits.authorize.per_ip.rps: unknown key") {
			t.Fatalf("unknown key: %v", err)
		}
	})
}

func TestLimitsManagementBody(t *testing.T) {
	h := mgmtHarness(t, nil)
	big := `{"name":"x","strategy":"oidc","options":{"pad":"` + strings.Repeat("p", maxBodyBytes) + `"}}`
	for _, tc := range []struct{ name, method, path string }{
		{name: "management POST body over 64 KiB → 413", method: http.MethodPost, path: "/api/v2/connections"},
		{name: "management PATCH body over 64 KiB → 413", method: http.MethodPatch, path: "/api/v2/connections/" + idOf(t, h, "corp")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantAPIError(t, api(t, h.srv.URL, tc.method, tc.path, tokAll, big), 413, "payload_too_large", "larger than 64 KiB")
		})
	}
}
