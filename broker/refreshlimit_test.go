package broker

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
)

// TestRefreshFamilyIsRateLimited: a public client's refresh-token family may be refreshed
// burst times, then every refresh is refused with 429 (fertft with details.rate_limit) and
// changes nothing: the presented token stays live and the proof's jti is not stored, so both
// work once the bucket refilled. Made-up tokens under the family's prefix, and the live
// token with another key, spend nothing; another family of the same client is not touched.
func TestRefreshFamilyIsRateLimited(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp, mutate: func(c *config.Config) {
		c.RateLimits = config.RateLimits{Enabled: true, MaxKeys: 1000, Token: config.TokenRateLimits{
			PerRefreshFamily: config.RateLimit{Rate: "1/m", Burst: 2},
		}}
	}})
	a, b, _ := testSigners(t)
	offline := func(q url.Values) { q.Set("scope", "openid profile offline_access") }
	login := func() string {
		t.Helper()
		r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, h.codeFor(spaClient, offline)), proof: h.tokenProof(a)})
		if r.status != http.StatusOK || r.str("refresh_token") == "" {
			t.Fatalf("login: %d %v", r.status, r.body)
		}
		return r.str("refresh_token")
	}
	refresh := func(rt, proof string) httpResult {
		t.Helper()
		return h.tok(tokReq{client: spaClient, form: refreshGrant(rt), proof: proof})
	}
	rt := login()
	fam, _, _ := strings.Cut(rt, ".")
	for i := range 5 { // tokens the family never issued, and the live one with another key
		madeUp := fam + "." + strings.Repeat("A", 43-len(strconv.Itoa(i))) + strconv.Itoa(i)
		wantOAuth(t, refresh(madeUp, h.tokenProof(a)), http.StatusBadRequest, "invalid_grant", "")
		wantOAuth(t, refresh(rt, h.tokenProof(b)), http.StatusBadRequest, "invalid_grant", "")
	}
	for i := range 2 {
		r := refresh(rt, h.tokenProof(a))
		if r.status != http.StatusOK || r.str("refresh_token") == "" {
			t.Fatalf("refresh %d within the burst: %d %v", i, r.status, r.body)
		}
		rt = r.str("refresh_token")
	}
	refused := h.tokenProof(a)
	r := refresh(rt, refused)
	if ra, _ := strconv.Atoi(r.header.Get("Retry-After")); r.status != http.StatusTooManyRequests || r.str("error") != codeTooManyRequests ||
		ra < 1 || ra > 60 {
		t.Fatalf("refresh beyond the burst: %d %v Retry-After %q", r.status, r.body, r.header.Get("Retry-After"))
	}
	ev := h.lastEventOf(logs.TypeFailedRefresh)
	if rl := rateLimitOf(t, ev); ev.Details["error"] != codeTooManyRequests || rl["endpoint"] != "token" ||
		rl["by"] != byRefreshFamily || rl["limit"] != "1/m" || ev.ClientID != spaClient || ev.UserID != "oidc|corp|alice" {
		t.Fatalf("refusal event %+v", ev)
	}

	other := login() // another family of the same client
	if r := refresh(other, h.tokenProof(a)); r.status != http.StatusOK {
		t.Fatalf("another family: %d %v", r.status, r.body)
	}

	h.clock.Advance(time.Minute)
	if r := refresh(rt, refused); r.status != http.StatusOK {
		t.Fatalf("the refused refresh a minute later (same token, same proof): %d %v", r.status, r.body)
	}
}

// TestRefreshFamilyRefusalsAreLimitedEvents: a confidential client's refusals by the
// per-family limit are unauthenticated events, limited like every refusal, not audit events.
func TestRefreshFamilyRefusalsAreLimitedEvents(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp, mutate: func(c *config.Config) {
		c.RateLimits = config.RateLimits{Enabled: true, MaxKeys: 1000, Token: config.TokenRateLimits{
			PerRefreshFamily: config.RateLimit{Rate: "1/h", Burst: 1},
		}}
	}})
	h.events.Limits = logs.NewLimiter(logs.LimiterConfig{PerIPRate: 1.0 / 3600, PerIPBurst: 2})
	r := h.tok(tokReq{client: appClient, form: h.codeGrant(appClient, h.codeFor(appClient, func(q url.Values) {
		q.Set("scope", "openid offline_access")
	}))})
	rt := r.str("refresh_token")
	if r = h.tok(tokReq{client: appClient, form: refreshGrant(rt)}); r.status != http.StatusOK {
		t.Fatalf("first refresh: %d %v", r.status, r.body)
	}
	rt = r.str("refresh_token")
	n := h.eventCount()
	for range 20 {
		wantOAuth(t, h.tok(tokReq{client: appClient, form: refreshGrant(rt)}), http.StatusTooManyRequests, codeTooManyRequests, "")
	}
	if got := h.eventCount() - n; got != 2 {
		t.Fatalf("%d events for 20 refusals, want 2 (the per-IP event budget)", got)
	}
}
