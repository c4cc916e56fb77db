package broker

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
)

// mgmtLimitHarness is a management harness with rate limits on, only the given management
// limits (every other limit off), and X-Forwarded-For trusted from loopback.
func mgmtLimitHarness(t *testing.T, m config.ManagementRateLimits) *harness {
	t.Helper()
	return newHarness(t, harnessOpts{up: optionalDPoPUp, mutate: func(c *config.Config) {
		withMgmt(c)
		c.TrustedProxies = []string{"127.0.0.0/8"}
		c.RateLimits = config.RateLimits{Enabled: true, MaxKeys: 1000, Management: m}
	}})
}

// apiFrom calls the management API as the client at ip (X-Forwarded-For) with token ("" =
// no Authorization header) and a JSON body (nil = none).
func apiFrom(t *testing.T, h *harness, ip, method, path, token string, body any) apiResp {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
	}
	req, _ := http.NewRequest(method, h.srv.URL+path, rd)
	req.Header.Set("X-Forwarded-For", ip)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, text := do(t, http.DefaultClient, req)
	out := apiResp{status: resp.StatusCode, header: resp.Header, raw: text}
	if text != "" {
		if err := json.Unmarshal([]byte(text), &out.body); err != nil {
			t.Fatalf("%s %s: %d non-JSON body %q", method, path, resp.StatusCode, text)
		}
	}
	return out
}

// wantAPI429 checks a refused management call: the SaaS error body with errorCode
// too_many_requests and a Retry-After of retryAfter seconds.
func wantAPI429(t *testing.T, r apiResp, retryAfter int) {
	t.Helper()
	wantAPIError(t, r, http.StatusTooManyRequests, codeTooManyRequests, "Too many requests")
	if got := r.header.Get("Retry-After"); got != strconv.Itoa(retryAfter) {
		t.Fatalf("Retry-After %q, want %d", got, retryAfter)
	}
}

// TestManagementTokenIsRateLimitedIncludingRefusedCalls: a read:logs token sending PATCH
// requests it may not make spends its own bucket with each 403, then gets 429 for every call,
// and its refusals are limited events; other tokens, from the same address, are not touched.
func TestManagementTokenIsRateLimitedIncludingRefusedCalls(t *testing.T) {
	h := mgmtLimitHarness(t, config.ManagementRateLimits{PerIP: config.RateLimit{Rate: "1/h", Burst: 2}, PerToken: config.RateLimit{Rate: "1/h", Burst: 3}})
	h.events.Limits = logs.NewLimiter(logs.LimiterConfig{PerIPRate: 1.0 / 3600, PerIPBurst: 2})
	const ip = "198.51.100.20"
	patch := map[string]any{"options": map[string]any{"issuer": h.up.URL}}
	path := "/api/v2/connections/" + idOf(t, h, "corp")
	for range 3 {
		wantAPIError(t, apiFrom(t, h, ip, http.MethodPatch, path, tokLogs, patch), http.StatusForbidden, "insufficient_scope", "")
	}
	n := h.eventCount()
	for range 50 {
		wantAPI429(t, apiFrom(t, h, ip, http.MethodPatch, path, tokLogs, patch), 3600)
	}
	wantAPI429(t, apiFrom(t, h, ip, http.MethodGet, "/api/v2/logs", tokLogs, nil), 3600) // one bucket per token
	if got := h.eventCount() - n; got != 2 {
		t.Fatalf("%d events for 51 refused calls, want 2 (the per-IP event budget)", got)
	}
	ev := h.lastEventOf(logs.TypeFailedAPI)
	req, _ := ev.Details["request"].(map[string]any)
	auth, _ := req["auth"].(map[string]any)
	errObj, _ := ev.Details["error"].(map[string]any)
	if rl := rateLimitOf(t, ev); rl["endpoint"] != "management" || rl["by"] != byToken || rl["limit"] != "1/h" ||
		auth["user"] != "auditor" || errObj["errorCode"] != codeTooManyRequests || ev.IP != ip {
		t.Fatalf("refusal event %+v", ev)
	}
	// Another token from the same address has its own bucket (idOf spent one of its three),
	// and valid tokens never spent the address's.
	for i := range 2 {
		if r := apiFrom(t, h, ip, http.MethodGet, "/api/v2/connections", tokAll, nil); r.status != http.StatusOK {
			t.Fatalf("the ops token, call %d: %d %s", i, r.status, r.raw)
		}
	}
	wantAPIError(t, apiFrom(t, h, ip, http.MethodGet, "/api/v2/connections", tokWrong, nil), http.StatusUnauthorized, "invalid_token", "")
	h.clock.Advance(time.Hour)
	if r := apiFrom(t, h, ip, http.MethodGet, "/api/v2/logs", tokLogs, nil); r.status != http.StatusOK {
		t.Fatalf("the auditor an hour later: %d %s", r.status, r.raw)
	}
}

// TestManagementCallsWithoutAValidTokenAreLimitedPerIP: calls without a valid token (none,
// wrong, malformed, to any path) spend their address's bucket; once it is empty every call
// from that address is refused before its token is compared, so a valid token gets the same
// 429 as a guess. Other addresses, and valid calls, are not touched.
func TestManagementCallsWithoutAValidTokenAreLimitedPerIP(t *testing.T) {
	h := mgmtLimitHarness(t, config.ManagementRateLimits{PerIP: config.RateLimit{Rate: "1/h", Burst: 3}, PerToken: config.RateLimit{Rate: "0"}})
	const guesser, operator = "198.51.100.30", "198.51.100.31"
	wantAPIError(t, apiFrom(t, h, guesser, http.MethodGet, "/api/v2/connections", tokWrong, nil), http.StatusUnauthorized, "invalid_token", "")
	wantAPIError(t, apiFrom(t, h, guesser, http.MethodGet, "/api/v2/logs", "", nil), http.StatusUnauthorized, "missing_authorization", "")
	wantAPIError(t, apiFrom(t, h, guesser, http.MethodDelete, "/api/v2/nope", tokWrong, nil), http.StatusUnauthorized, "invalid_token", "")
	wantAPI429(t, apiFrom(t, h, guesser, http.MethodGet, "/api/v2/connections", tokWrong, nil), 3600)
	wantAPI429(t, apiFrom(t, h, guesser, http.MethodGet, "/api/v2/connections", tokAll, nil), 3600) // not compared
	ev := h.lastEventOf(logs.TypeFailedAPI)
	if rl := rateLimitOf(t, ev); rl["endpoint"] != "management" || rl["by"] != "ip" || ev.IP != guesser ||
		ev.Details["request"].(map[string]any)["auth"] != nil {
		t.Fatalf("refusal event %+v", ev)
	}
	for i := range 10 { // valid calls spend nothing of their address's bucket
		if r := apiFrom(t, h, operator, http.MethodGet, "/api/v2/connections", tokAll, nil); r.status != http.StatusOK {
			t.Fatalf("valid call %d from another address: %d %s", i, r.status, r.raw)
		}
	}
	for range 3 {
		wantAPIError(t, apiFrom(t, h, operator, http.MethodGet, "/api/v2/connections", tokWrong, nil), http.StatusUnauthorized, "invalid_token", "")
	}
	wantAPI429(t, apiFrom(t, h, operator, http.MethodGet, "/api/v2/connections", tokWrong, nil), 3600)
}

// TestManagementDefaultsLeaveRoomForLogsFollow: with the default limits, the traffic of
// `broker logs --follow` passes for a long session: its start (the newest event, then up to
// ten history pages at once), a poll every 250 ms, and a backlog read page after page without
// waiting, several times.
func TestManagementDefaultsLeaveRoomForLogsFollow(t *testing.T) {
	h := newHarness(t, harnessOpts{up: optionalDPoPUp, mutate: func(c *config.Config) {
		withMgmt(c)
		c.RateLimits = config.Default().RateLimits
	}})
	const ip = "127.0.0.1"
	call := func(what string, q string) {
		t.Helper()
		if r := apiFrom(t, h, ip, http.MethodGet, "/api/v2/logs?"+q, tokLogs, nil); r.status != http.StatusOK {
			t.Fatalf("%s: %d %s", what, r.status, r.raw)
		}
	}
	call("the newest event", "sort=date:-1&per_page=1")
	for page := range 10 {
		call("history page "+strconv.Itoa(page), "sort=date:-1&per_page=100&page="+strconv.Itoa(page))
	}
	for second := range 600 { // ten minutes of polling
		for range 4 {
			call("poll", "take=100")
			h.clock.Advance(250 * time.Millisecond)
		}
		if second%60 == 59 { // a backlog of 50 pages, read without waiting
			for range 50 {
				call("backlog page", "take=100")
			}
		}
	}
}

// TestLimiterHoldRefundGivesBackOneRequestAtMost: a held request refunded is as if it had not
// been made (called twice, it still gives back one), and a refund never fills the bucket past
// its burst.
func TestLimiterHoldRefundGivesBackOneRequestAtMost(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name    string
		held    int // requests held (and refunded) before the count
		refunds int // calls of each refund
		want    int // requests allowed afterwards, of a burst of 2
	}{
		{name: "nothing held", want: 2},
		{name: "one held, not refunded", held: 1, want: 1},
		{name: "one held and refunded", held: 1, refunds: 1, want: 2},
		{name: "one held, refunded twice", held: 1, refunds: 2, want: 2},
		{name: "two held and refunded", held: 2, refunds: 1, want: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := newGuard(&config.Config{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			g.mgmtIP = newLimiterTable("management", "ip", config.RateLimit{Rate: "1/h", Burst: 2}, rateOf(t, "1/h"), 10)
			var refunds []func(time.Time)
			for range tt.held {
				ref, refund := g.hold(g.mgmtIP, "192.0.2.1", now)
				if ref != nil {
					t.Fatalf("hold refused: %+v", ref)
				}
				refunds = append(refunds, refund)
			}
			for _, f := range refunds {
				for range tt.refunds {
					f(now)
				}
			}
			got := 0
			for range 5 {
				if g.check(g.mgmtIP, "192.0.2.1", now) == nil {
					got++
				}
			}
			if got != tt.want {
				t.Fatalf("%d requests allowed afterwards, want %d", got, tt.want)
			}
		})
	}
}
