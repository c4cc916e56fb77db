package broker

import (
	"net/http"
	"net/url"
	"sync"
	"testing"

	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/sessions/redistest"
)

// TestReplayedCodeRevokesSessionAndRefreshFamily: a presentation of an authorization code the
// app already redeemed, with everything the redemption needed (the client, redirect_uri and
// PKCE verifier), gets invalid_grant, and the session and the refresh-token family issued
// from that code end (RFC 6749 §4.1.2), with an feacft event saying so. (Another client
// presenting it revokes nothing: TestUsedCodeFromSomeoneWhoCouldNotRedeemItRevokesNothing.)
func TestReplayedCodeRevokesSessionAndRefreshFamily(t *testing.T) {
	h := dpopHarness(t, nil)
	offline := func(q url.Values) { q.Set("scope", "openid profile offline_access") }
	for _, tc := range []struct {
		name       string
		scope      func(url.Values)
		replayer   string // the client that presents the code again
		wantFamily bool   // a refresh-token family was minted and must be revoked
	}{
		{name: "the same client presents the code again", scope: offline, replayer: appClient, wantFamily: true},
		{name: "a code without offline_access: the session is revoked", scope: nil, replayer: appClient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code := h.codeFor(appClient, tc.scope)
			first := h.tok(tokReq{client: appClient, form: h.codeGrant(appClient, code)})
			at, rt := first.str("access_token"), first.str("refresh_token")
			if first.status != http.StatusOK || (rt != "") != tc.wantFamily || !h.sessionAlive(t, at) {
				t.Fatalf("first redemption: %d %v", first.status, first.body)
			}
			replay := h.tok(tokReq{client: tc.replayer, form: h.codeGrant(tc.replayer, code)})
			wantOAuth(t, replay, http.StatusBadRequest, "invalid_grant",
				"authorization code was already used: the session and the tokens issued from it are revoked")
			ev := h.lastEvent()
			if ev.Type != logs.TypeFailedExchange || ev.Details["code_reuse"] != true || ev.Details["session_revoked"] != true ||
				ev.Details["refresh_family_revoked"] != tc.wantFamily || ev.UserID != "oidc|corp|alice" || ev.Details["session_id"] == "" {
				t.Errorf("event = %+v, want feacft with code_reuse and the revocation", ev)
			}
			if h.sessionAlive(t, at) {
				t.Error("the session of the replayed code is still alive")
			}
			if rt != "" {
				wantOAuth(t, h.tok(tokReq{client: appClient, form: refreshGrant(rt)}), http.StatusBadRequest, "invalid_grant", "")
				if _, err := h.store.Get(t.Context(), sessions.KindRefresh, rt[:22]+familySuffix); err == nil {
					t.Error("the refresh-token family record is still stored")
				}
			}
		})
	}
}

// TestCodeReplayDetectedAfterCodeLifetime: the replay marker outlives the code, so a replay
// after the code expired still revokes the session.
func TestCodeReplayDetectedAfterCodeLifetime(t *testing.T) {
	h := dpopHarness(t, nil)
	code := h.codeFor(appClient, nil)
	first := h.tok(tokReq{client: appClient, form: h.codeGrant(appClient, code)})
	if first.status != http.StatusOK {
		t.Fatalf("first redemption: %d %v", first.status, first.body)
	}
	h.clock.Advance(2 * h.cfg.Lifetimes.Code)
	wantOAuth(t, h.tok(tokReq{client: appClient, form: h.codeGrant(appClient, code)}), http.StatusBadRequest, "invalid_grant",
		"authorization code was already used: the session and the tokens issued from it are revoked")
	if h.sessionAlive(t, first.str("access_token")) {
		t.Error("the session survived a replay after the code lifetime")
	}
}

// TestUnknownCodeRevokesNothing: a made-up code (even under a real session's tag), or an
// expired code presented once, is invalid_grant and ends no session.
func TestUnknownCodeRevokesNothing(t *testing.T) {
	h := dpopHarness(t, nil)
	for _, tc := range []struct {
		name          string
		code          func(issued string) string
		expire        bool // let the issued code expire first
		presentations int
	}{
		{name: "a made-up secret under a live session's tag, twice", code: func(issued string) string { return issued[:22] + "." + randomString(32) }, presentations: 2},
		{name: "the issued code after it expired, once", code: func(issued string) string { return issued }, expire: true, presentations: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			issued := h.codeFor(appClient, nil)
			_, _, other := h.logoutLogin(t) // another session, which must not be touched either
			if tc.expire {
				h.clock.Advance(h.cfg.Lifetimes.Code + 1)
			}
			for range tc.presentations {
				wantOAuth(t, h.tok(tokReq{client: appClient, form: h.codeGrant(appClient, tc.code(issued))}), http.StatusBadRequest,
					"invalid_grant", "authorization code is invalid, expired or already used")
			}
			if ev := h.lastEvent(); ev.Type != logs.TypeFailedExchange || ev.Details["code_reuse"] != nil {
				t.Errorf("event = %+v, want feacft without code_reuse", ev)
			}
			if !h.sessionAlive(t, other) {
				t.Error("an unrelated session ended")
			}
			if _, err := h.store.Get(t.Context(), sessions.KindSession, issued[:22]+".s"); err != nil {
				t.Errorf("the session of the issued code ended: %v", err)
			}
		})
	}
}

// TestConcurrentCodeRedemptionsGetTokensOnce: on Redis, of many concurrent presentations of one
// code exactly one gets tokens, every other one is a replay, and the replays revoke the
// session (no window between the claim and the marker lets one through unnoticed).
func TestConcurrentCodeRedemptionsGetTokensOnce(t *testing.T) {
	st, err := sessions.NewRedis(sessions.RedisConfig{Addrs: []string{redistest.Start(t)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	h := newHarness(t, harnessOpts{up: dpopUp, store: st})
	code := h.login().Get("code")
	const n = 8
	results := make([]httpResult, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[i] = h.tok(tokReq{client: appClient, form: h.codeForm(code)})
		}()
	}
	close(start)
	wg.Wait()
	var ok, replays int
	var at string
	for _, r := range results {
		switch {
		case r.status == http.StatusOK:
			ok++
			at = r.str("access_token")
		case r.str("error") == "invalid_grant" && r.str("error_description") == "authorization code was already used: the session and the tokens issued from it are revoked":
			replays++
		default:
			t.Errorf("unexpected answer %d %v", r.status, r.body)
		}
	}
	if ok != 1 || replays != n-1 {
		t.Fatalf("%d redemptions succeeded and %d were replays, want 1 and %d", ok, replays, n-1)
	}
	if h.sessionAlive(t, at) {
		t.Error("the session survived the replays")
	}
}
