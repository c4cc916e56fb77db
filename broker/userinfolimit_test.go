package broker

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/dpop"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// userinfoLimitHarness is a harness with rate limits on, only the given /userinfo limits
// (every other limit off), X-Forwarded-For trusted from loopback, and st as its store (nil:
// a memory store with the default bound).
func userinfoLimitHarness(t *testing.T, st sessions.Store, ui config.UserinfoRateLimits) *harness {
	t.Helper()
	// An upstream where DPoP is optional: connection "other" (no DPoP) signs in another user.
	return newHarness(t, harnessOpts{up: optionalDPoPUp, store: st, mutate: func(c *config.Config) {
		c.TrustedProxies = []string{"127.0.0.0/8"} // tests name the client with X-Forwarded-For
		c.RateLimits = config.RateLimits{Enabled: true, MaxKeys: 1000, Userinfo: ui}
	}})
}

// boundLogin logs in through the SPA over connection (DPoP proof by s) and returns the
// DPoP-bound, userinfo-only access token and the session id of its ID token.
func (h *harness) boundLogin(t *testing.T, s *dpop.Signer, connection string) (at, sid string) {
	t.Helper()
	code := h.codeFor(spaClient, func(q url.Values) { q.Set("connection", connection) })
	r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code), proof: h.tokenProof(s)})
	wantBound(t, r, s)
	sid, _ = claimsOf(t, r.str("id_token"))["sid"].(string)
	if sid == "" {
		t.Fatalf("ID token without sid: %v", r.body)
	}
	return r.str("access_token"), sid
}

// userinfoFrom calls /userinfo (method GET or POST) as the client at ip with an
// Authorization header value and an optional proof.
func (h *harness) userinfoFrom(method, ip, auth, proof string) httpResult {
	h.t.Helper()
	req, _ := http.NewRequest(method, h.srv.URL+"/userinfo", nil)
	if ip != "" {
		req.Header.Set("X-Forwarded-For", ip)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if proof != "" {
		req.Header.Set("DPoP", proof)
	}
	return h.do(req)
}

// wantUserinfo429 checks a refused /userinfo answer: 429, too_many_requests as OAuth JSON,
// and a Retry-After of 1 to max seconds.
func wantUserinfo429(t *testing.T, r httpResult, max int) {
	t.Helper()
	ra, err := strconv.Atoi(r.header.Get("Retry-After"))
	if r.status != http.StatusTooManyRequests || r.str("error") != codeTooManyRequests || r.str("error_description") == "" ||
		r.header.Get("Content-Type") != "application/json" || err != nil || ra < 1 || ra > max {
		t.Fatalf("got %d %v Retry-After %q, want 429 too_many_requests with Retry-After 1..%d", r.status, r.body, r.header.Get("Retry-After"), max)
	}
}

// TestUserinfoFloodFromOneSessionIsRefusedWhileOthersWork: one user floods /userinfo with a
// DPoP-bound token and a fresh proof each time, from one address, on a small memory store.
// Past the session's burst every request is refused with 429 and stores nothing (its proof
// is accepted later), so another user's session still reads userinfo and logins still start.
func TestUserinfoFloodFromOneSessionIsRefusedWhileOthersWork(t *testing.T) {
	st := sessions.NewMemoryWithOptions(config.MemoryStore{MaxRecords: 100}.Options())
	h := userinfoLimitHarness(t, st, config.UserinfoRateLimits{
		PerIP: config.RateLimit{Rate: "0"}, PerSession: config.RateLimit{Rate: "1/m", Burst: 5},
	})
	a, b, _ := testSigners(t)
	at, sid := h.boundLogin(t, a, "corp")
	proof := func(s *dpop.Signer, token string) string { return h.proof(s, http.MethodGet, "/userinfo", "", token) }

	var refusedProof string
	for i := range 300 { // three times the whole store
		p := proof(a, at)
		r := h.userinfoFrom(http.MethodGet, "", "DPoP "+at, p)
		if i < 5 {
			if r.status != http.StatusOK || r.str("sub") != "oidc|corp|alice" {
				t.Fatalf("request %d within the burst: %d %v", i, r.status, r.body)
			}
			continue
		}
		wantUserinfo429(t, r, 60)
		refusedProof = p
	}
	ev := h.lastEventOf(logs.TypeAPILimit)
	rl := rateLimitOf(t, ev)
	if ev.UserID != "oidc|corp|alice" || ev.ClientID != spaClient || ev.Details["session_id"] != sid ||
		ev.Details["error"] != codeTooManyRequests || ev.Description != "Rate Limit On API" ||
		rl["endpoint"] != "userinfo" || rl["by"] != bySession || rl["limit"] != "1/m" || ev.IP != "127.0.0.1" {
		t.Fatalf("refusal event %+v", ev)
	}

	// Another user (another connection, another broker user) still reads userinfo.
	other, _ := h.boundLogin(t, b, "other")
	if r := h.userinfoFrom(http.MethodGet, "", "DPoP "+other, proof(b, other)); r.status != http.StatusOK || r.str("sub") != "oidc|other|alice" {
		t.Fatalf("another user's userinfo: %d %v", r.status, r.body)
	}
	// Logins still start and finish: the flood left the store's room alone.
	for i := range 20 {
		req, _ := http.NewRequest(http.MethodGet, h.authorizeURL(nil), nil)
		if resp, body := do(t, noRedirect(h.client()), req); resp.StatusCode != http.StatusFound {
			t.Fatalf("/authorize %d after the flood: %d %s", i, resp.StatusCode, body)
		}
	}
	if q := h.login(); q.Get("code") == "" {
		t.Fatalf("a login after the flood: %v", q)
	}
	// A refused request stored nothing: once the bucket refilled, its proof is still new.
	h.clock.Advance(time.Minute)
	if r := h.userinfoFrom(http.MethodGet, "", "DPoP "+at, refusedProof); r.status != http.StatusOK {
		t.Fatalf("the proof of a refused request, a minute later: %d %v (its jti was stored)", r.status, r.body)
	}
}

// TestBogusTokensDoNotSpendASessionBucket: made-up tokens, a forged token naming the user's
// session, and the user's own token without its DPoP key are refused with 401 and spend
// nothing of the session's bucket; the user then gets the whole burst.
func TestBogusTokensDoNotSpendASessionBucket(t *testing.T) {
	h := userinfoLimitHarness(t, nil, config.UserinfoRateLimits{
		PerIP: config.RateLimit{Rate: "0"}, PerSession: config.RateLimit{Rate: "1/h", Burst: 2},
	})
	a, b, _ := testSigners(t)
	at, sid := h.boundLogin(t, a, "corp")
	forged := forgedAccessToken(t, h, sid, b.Thumbprint())
	for i := range 20 {
		for _, bogus := range []struct{ auth, proof string }{
			{auth: "DPoP made-up-token-" + strconv.Itoa(i), proof: h.proof(b, http.MethodGet, "/userinfo", "", "made-up-token-"+strconv.Itoa(i))},
			{auth: "DPoP " + forged, proof: h.proof(b, http.MethodGet, "/userinfo", "", forged)},
			{auth: "DPoP " + at, proof: h.proof(b, http.MethodGet, "/userinfo", "", at)}, // the token without its key
			{auth: "DPoP " + at},
			{auth: "Bearer " + at},
		} {
			if r := h.userinfoFrom(http.MethodGet, "", bogus.auth, bogus.proof); r.status != http.StatusUnauthorized {
				t.Fatalf("bogus request %d: %d %v, want 401", i, r.status, r.body)
			}
		}
	}
	for i := range 2 {
		if r := h.userinfoFrom(http.MethodGet, "", "DPoP "+at, h.proof(a, http.MethodGet, "/userinfo", "", at)); r.status != http.StatusOK {
			t.Fatalf("the user's request %d after the bogus ones: %d %v", i, r.status, r.body)
		}
	}
	wantUserinfo429(t, h.userinfoFrom(http.MethodGet, "", "DPoP "+at, h.proof(a, http.MethodGet, "/userinfo", "", at)), 3600)
}

// forgedAccessToken is an at+jwt naming session sid and bound to jkt, signed with a key the
// broker does not know.
func forgedAccessToken(t *testing.T, h *harness, sid, jkt string) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k},
		(&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", h.broker.keys.JWKS().Keys[0].KeyID))
	if err != nil {
		t.Fatal(err)
	}
	now := h.clock.Now()
	claims, _ := json.Marshal(map[string]any{
		"iss": h.cfg.Issuer, "sub": "oidc|corp|alice", "aud": []string{h.broker.userinfoAudience()}, "sid": sid,
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "client_id": spaClient, "cnf": map[string]string{"jkt": jkt},
	})
	jws, err := signer.Sign(claims)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestUserinfoIsRateLimitedPerIP: every /userinfo request, GET or POST, with or without
// credentials, spends its address's bucket before anything is checked; a refusal is a 429
// and an api_limit event naming the address only; other addresses keep theirs.
func TestUserinfoIsRateLimitedPerIP(t *testing.T) {
	h := userinfoLimitHarness(t, nil, config.UserinfoRateLimits{
		PerIP: config.RateLimit{Rate: "1/h", Burst: 3}, PerSession: config.RateLimit{Rate: "0"},
	})
	a, _, _ := testSigners(t)
	at, _ := h.boundLogin(t, a, "corp")
	const attacker = "198.51.100.7"
	for i, method := range []string{http.MethodGet, http.MethodPost, http.MethodGet} {
		if r := h.userinfoFrom(method, attacker, "", ""); r.status != http.StatusUnauthorized {
			t.Fatalf("request %d within the burst: %d", i, r.status)
		}
	}
	wantUserinfo429(t, h.userinfoFrom(http.MethodPost, attacker, "Bearer x", ""), 3600)
	// A valid token from that address is refused too: the address's bucket comes first.
	wantUserinfo429(t, h.userinfoFrom(http.MethodGet, attacker, "DPoP "+at, h.proof(a, http.MethodGet, "/userinfo", "", at)), 3600)
	ev := h.lastEventOf(logs.TypeAPILimit)
	if rl := rateLimitOf(t, ev); rl["endpoint"] != "userinfo" || rl["by"] != "ip" || ev.IP != attacker || ev.UserID != "" ||
		ev.ClientID != "" || ev.Details["error"] != codeTooManyRequests {
		t.Fatalf("refusal event %+v", ev)
	}
	if r := h.userinfoFrom(http.MethodGet, "198.51.100.8", "DPoP "+at, h.proof(a, http.MethodGet, "/userinfo", "", at)); r.status != http.StatusOK {
		t.Fatalf("another address: %d %v", r.status, r.body)
	}
}

// TestUserinfoRefusalsAreLimitedEvents: refusals at /userinfo are unauthenticated events,
// limited per address like every refusal, so a flood cannot flood the log.
func TestUserinfoRefusalsAreLimitedEvents(t *testing.T) {
	h := userinfoLimitHarness(t, nil, config.UserinfoRateLimits{
		PerIP: config.RateLimit{Rate: "0"}, PerSession: config.RateLimit{Rate: "1/h", Burst: 1},
	})
	h.events.Limits = logs.NewLimiter(logs.LimiterConfig{PerIPRate: 1.0 / 3600, PerIPBurst: 2})
	a, _, _ := testSigners(t)
	at, _ := h.boundLogin(t, a, "corp")
	n := h.eventCount()
	for i := range 30 {
		r := h.userinfoFrom(http.MethodGet, "", "DPoP "+at, h.proof(a, http.MethodGet, "/userinfo", "", at))
		if i > 0 {
			wantUserinfo429(t, r, 3600)
		}
	}
	if got := h.eventCount() - n; got != 2 {
		t.Fatalf("%d events for 29 refusals, want 2 (the per-IP event budget)", got)
	}
	if got := h.droppedEvents(logs.TypeAPILimit, logs.DropPerIP); got != 27 {
		t.Fatalf("dropped api_limit events = %v, want 27", got)
	}
}
