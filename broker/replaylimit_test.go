package broker

import (
	"net/http"
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// TestReplayCacheCannotTakeTheRoomOfLogins: with rate limits off, a flood of fresh DPoP
// proofs at /userinfo fills only the replay cache's budget of the memory store
// (store.memory.max_replay_records): past it, proofs are refused with 503 at the endpoints
// that check them (fail closed: no proof goes unrecorded), while logins still start, finish
// and redeem their codes without a proof.
func TestReplayCacheCannotTakeTheRoomOfLogins(t *testing.T) {
	const budget = 20
	st := sessions.NewMemoryWithOptions(config.MemoryStore{MaxRecords: 100, MaxReplayRecords: budget}.Options())
	h := newHarness(t, harnessOpts{up: optionalDPoPUp, store: st})
	a, _, _ := testSigners(t)
	at, _ := h.boundLogin(t, a, "corp") // its token request stored one jti

	ok := 0
	for i := range 200 {
		r := h.userinfoFrom(http.MethodGet, "", "DPoP "+at, h.proof(a, http.MethodGet, "/userinfo", "", at))
		if r.status == http.StatusOK {
			ok++
			continue
		}
		if r.status != http.StatusServiceUnavailable || r.str("error") != "temporarily_unavailable" {
			t.Fatalf("request %d: %d %v, want 200 or, with the budget full, 503 temporarily_unavailable", i, r.status, r.body)
		}
	}
	if ok != budget-1 {
		t.Fatalf("%d proofs accepted, want %d (the budget less the token request's)", ok, budget-1)
	}

	// Logins keep their room: they start, finish and redeem their code (no proof).
	for range 10 {
		code := h.login().Get("code")
		if status, body, _ := h.token(h.codeForm(code), true); status != http.StatusOK || body["access_token"] == nil {
			t.Fatalf("code redemption beside a full replay cache: %d %v", status, body)
		}
	}
	// A token request with a proof fails closed too, and keeps its code for a retry.
	code := h.codeFor(spaClient, nil)
	r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code), proof: h.tokenProof(a)})
	if r.status != http.StatusServiceUnavailable || r.str("error") != "temporarily_unavailable" {
		t.Fatalf("token request with a proof beside a full replay cache: %d %v", r.status, r.body)
	}
	if r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code)}); r.status != http.StatusOK {
		t.Fatalf("the same code without a proof: %d %v", r.status, r.body)
	}
}
