package broker

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// codeTheft is one way someone who is not the app presents the app's code.
type codeTheft struct {
	name   string
	client string                            // who presents it
	form   func(h *harness, form url.Values) // changes to the app's own grant form
	proof  func(h *harness) string           // DPoP header; nil = the app's own (key a)
}

// codeThefts are presentations that must fail every check of the grant: no verifier, a wrong
// one, another client, another redirect_uri, another DPoP key than the code's dpop_jkt.
func codeThefts(t *testing.T) []codeTheft {
	_, b, _ := testSigners(t)
	return []codeTheft{
		{name: "without the PKCE verifier", client: spaClient, form: func(_ *harness, f url.Values) { f.Del("code_verifier") }},
		{name: "with a wrong PKCE verifier", client: spaClient, form: func(_ *harness, f url.Values) { f.Set("code_verifier", testVerifier+"x") }},
		{name: "by another client", client: appClient, form: func(h *harness, f url.Values) { f.Set("redirect_uri", h.app.URL+"/cb") }},
		{name: "with another redirect_uri", client: spaClient, form: func(h *harness, f url.Values) { f.Set("redirect_uri", h.app.URL+"/spa/other") }},
		{name: "with a proof from another key than dpop_jkt", client: spaClient, proof: func(h *harness) string { return h.tokenProof(b) }},
		{name: "without a proof although the code is bound to a key", client: spaClient, proof: func(*harness) string { return "" }},
	}
}

// present sends the public client's code as the theft describes.
func (c codeTheft) present(h *harness, code string) httpResult {
	a, _, _ := testSigners(h.t)
	form := h.codeGrant(spaClient, code)
	if c.form != nil {
		c.form(h, form)
	}
	proof := h.tokenProof(a)
	if c.proof != nil {
		proof = c.proof(h)
	}
	return h.tok(tokReq{client: c.client, form: form, proof: proof})
}

// offlineBoundCode is a public client's code with offline_access, bound to key a (dpop_jkt).
func offlineBoundCode(h *harness) string {
	a, _, _ := testSigners(h.t)
	return h.codeFor(spaClient, func(q url.Values) {
		q.Set("scope", "openid profile offline_access")
		q.Set("dpop_jkt", a.Thumbprint())
	})
}

// boundSessionAlive reports whether the session of a DPoP-bound access token of key a is
// alive (/userinfo answers).
func (h *harness) boundSessionAlive(at string) bool {
	a, _, _ := testSigners(h.t)
	return h.userinfo("DPoP "+at, h.proof(a, http.MethodGet, "/userinfo", "", at)).status == http.StatusOK
}

// TestStolenCodeFailingAGrantCheckLeavesItForTheApp: every check of the grant (client,
// redirect_uri, PKCE, dpop_jkt) runs before the code is claimed, so a stolen unused code
// presented once by someone who fails one of them is not consumed: the app's own redemption
// then works and is no replay.
func TestStolenCodeFailingAGrantCheckLeavesItForTheApp(t *testing.T) {
	h := dpopHarness(t, nil)
	a, _, _ := testSigners(t)
	for _, tc := range codeThefts(t) {
		t.Run(tc.name, func(t *testing.T) {
			code := offlineBoundCode(h)
			r := tc.present(h, code)
			if r.status != http.StatusBadRequest || r.str("error") != "invalid_grant" && r.str("error") != "invalid_request" {
				t.Fatalf("stolen code: %d %v, want a refusal", r.status, r.body)
			}
			if ev := h.lastEvent(); ev.Type != logs.TypeFailedExchange || ev.Details["code_reuse"] != nil {
				t.Errorf("event = %+v, want feacft without code_reuse", ev)
			}
			app := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code), proof: h.tokenProof(a)})
			wantBound(t, app, a)
			if app.str("refresh_token") == "" || !h.boundSessionAlive(app.str("access_token")) {
				t.Fatal("the app's redemption after the theft gave no refresh token or no live session")
			}
			if r := h.tok(tokReq{client: spaClient, form: refreshGrant(app.str("refresh_token")), proof: h.tokenProof(a)}); r.status != http.StatusOK {
				t.Errorf("the app's refresh token: %d %v", r.status, r.body)
			}
		})
	}
}

// TestUsedCodeFromSomeoneWhoCouldNotRedeemItRevokesNothing: a code the app redeemed,
// presented again by someone who fails a check the redemption passed (no verifier, another
// client, another redirect_uri, another key) is invalid_grant and revokes nothing: knowing a
// used code does not let an attacker log the user out. The app's own replay (everything the
// redemption needed) still revokes the session and the family, in the audit class.
func TestUsedCodeFromSomeoneWhoCouldNotRedeemItRevokesNothing(t *testing.T) {
	h := dpopHarness(t, nil)
	a, _, _ := testSigners(t)
	code := offlineBoundCode(h)
	first := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code), proof: h.tokenProof(a)})
	at, rt := first.str("access_token"), first.str("refresh_token")
	if first.status != http.StatusOK || rt == "" {
		t.Fatalf("redemption: %d %v", first.status, first.body)
	}
	for _, tc := range codeThefts(t) {
		t.Run(tc.name, func(t *testing.T) {
			wantOAuth(t, tc.present(h, code), http.StatusBadRequest, "invalid_grant", "authorization code is invalid, expired or already used")
			if ev := h.lastEvent(); ev.Type != logs.TypeFailedExchange || ev.Details["code_reuse"] != nil {
				t.Errorf("event = %+v, want feacft without code_reuse", ev)
			}
			if !h.boundSessionAlive(at) {
				t.Fatal("the session ended")
			}
		})
	}
	r := h.tok(tokReq{client: spaClient, form: refreshGrant(rt), proof: h.tokenProof(a)})
	if r.status != http.StatusOK {
		t.Fatalf("the refresh token after the failed presentations: %d %v", r.status, r.body)
	}
	rt = r.str("refresh_token")

	replay := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code), proof: h.tokenProof(a)})
	wantOAuth(t, replay, http.StatusBadRequest, "invalid_grant", "authorization code was already used: the session and the tokens issued from it are revoked")
	e := h.newestEntry()
	if ev := h.lastEvent(); ev.Details["code_reuse"] != true || ev.Details["session_revoked"] != true || ev.Details["refresh_family_revoked"] != true {
		t.Errorf("event = %+v, want feacft with code_reuse and both revocations", ev)
	}
	if e.Class != sessions.LogAudit {
		t.Errorf("the code_reuse event is in class %v, want audit", e.Class)
	}
	if h.boundSessionAlive(at) {
		t.Error("the session survived the replay")
	}
	wantOAuth(t, h.tok(tokReq{client: spaClient, form: refreshGrant(rt), proof: h.tokenProof(a)}), http.StatusBadRequest, "invalid_grant", "")
}
