package broker

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// Proofs made up with a public client's id (no secret to pass) and an unknown code or refresh
// token never reach the replay cache (RFC 9449 §11.1): the claim waits until the grant is
// known to be live, so such requests cannot fill the store.
func TestMadeUpProofsLeaveNoReplayRecords(t *testing.T) {
	const maxRecords = 50
	st := sessions.NewMemoryWithOptions(sessions.MemoryOptions{MaxRecords: maxRecords})
	h := newHarness(t, harnessOpts{up: dpopUp, store: st})
	a, _, _ := testSigners(t)
	for i := range 3 * maxRecords {
		form := h.codeGrant(spaClient, "made-up."+randomString(32))
		if i%2 == 1 {
			form = refreshGrant(randomString(16) + "." + randomString(32))
		}
		if r := h.tok(tokReq{client: spaClient, form: form, proof: h.tokenProof(a)}); r.status != http.StatusBadRequest || r.str("error") != "invalid_grant" {
			t.Fatalf("request %d: %d %v, want invalid_grant", i, r.status, r.body)
		}
	}
	// The store has room: a real login and its token request still work.
	r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, h.codeFor(spaClient, nil)), proof: h.tokenProof(a)})
	if r.status != http.StatusOK || r.str("token_type") != "DPoP" {
		t.Fatalf("a real token request after the made-up ones: %d %v", r.status, r.body)
	}
}

// A proof presented again with a live code is refused as a replay before the code is claimed,
// so the code stays for the client's retry with a fresh proof.
func TestReplayedProofLeavesTheCodeForARetry(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp})
	a, _, _ := testSigners(t)
	p := h.tokenProof(a)
	if r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, h.codeFor(spaClient, nil)), proof: p}); r.status != http.StatusOK {
		t.Fatalf("first use of the proof: %d %v", r.status, r.body)
	}
	code := h.codeFor(spaClient, func(q url.Values) { q.Set("state", "second") })
	if r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code), proof: p}); r.status != http.StatusBadRequest || r.str("error") != "invalid_dpop_proof" {
		t.Fatalf("replayed proof: %d %v, want invalid_dpop_proof", r.status, r.body)
	}
	if r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code), proof: h.tokenProof(a)}); r.status != http.StatusOK {
		t.Fatalf("the code after the refused replay: %d %v, want it still redeemable", r.status, r.body)
	}
}
