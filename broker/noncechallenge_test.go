package broker

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/logs"
)

// With dpop_server.require_nonce, a DPoP client's first token request is answered
// use_dpop_nonce. That is a normal protocol step: it is recorded as a dpop_nonce_challenge
// event and counted as result nonce_challenge, not as a failed exchange (no feacft, no
// failure metric), and the retried request with the nonce succeeds. The same holds for the
// refresh_token grant.
func TestNonceChallengeAtTokenEndpointIsNotAFailedExchange(t *testing.T) {
	h := dpopHarness(t, withNonces)
	a, _, _ := testSigners(t)
	offline := func(q url.Values) { q.Set("scope", "openid profile offline_access") }
	code := h.codeFor(spaClient, offline)

	r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code), proof: h.tokenProof(a)})
	wantOAuth(t, r, 400, "use_dpop_nonce", nonceRequiredText)
	ev := h.lastEvent()
	if ev.Type != logs.TypeDPoPNonceChallenge || ev.Description != "DPoP Nonce Challenge" || ev.ClientID != spaClient ||
		ev.Details["grant_type"] != "authorization_code" || ev.Details["error"] != "use_dpop_nonce" {
		t.Fatalf("challenge event = %+v, want type dpop_nonce_challenge for the spa's authorization_code grant", ev)
	}

	r = h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code), proof: h.proof(a, http.MethodPost, "/oauth/token", r.header.Get("DPoP-Nonce"), "")})
	wantBound(t, r, a)
	if ev := h.lastEvent(); ev.Type != logs.TypeSuccessExchange {
		t.Fatalf("retried request recorded as %q, want seacft", ev.Type)
	}

	// The refresh_token grant: a nonce from another secret (rotated out) is challenged too.
	rt := r.str("refresh_token")
	r = h.tok(tokReq{client: spaClient, form: refreshGrant(rt), proof: h.proof(a, http.MethodPost, "/oauth/token", "outdated-nonce", "")})
	wantOAuth(t, r, 400, "use_dpop_nonce", nonceRequiredText)
	if ev := h.lastEvent(); ev.Type != logs.TypeDPoPNonceChallenge || ev.Details["grant_type"] != "refresh_token" {
		t.Fatalf("refresh challenge event = %+v, want dpop_nonce_challenge for refresh_token", ev)
	}
	r = h.tok(tokReq{client: spaClient, form: refreshGrant(rt), proof: h.proof(a, http.MethodPost, "/oauth/token", r.header.Get("DPoP-Nonce"), "")})
	wantBound(t, r, a)

	text := h.scrape()
	for _, want := range []string{
		`dpop_broker_token_requests_total{bound="false",grant="authorization_code",result="nonce_challenge"} 1`,
		`dpop_broker_token_requests_total{bound="true",grant="authorization_code",result="success"} 1`,
		`dpop_broker_token_requests_total{bound="false",grant="refresh_token",result="nonce_challenge"} 1`,
		`dpop_broker_token_requests_total{bound="true",grant="refresh_token",result="success"} 1`,
		`dpop_broker_events_total{type="dpop_nonce_challenge"} 2`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q\n%s", want, grep(text, "dpop_broker_token_requests_total"))
		}
	}
	exchanges := grep(text, "dpop_broker_token_requests_total") + "\n" + grep(text, "dpop_broker_events_total")
	for _, unwanted := range []string{`result="failure"`, `type="feacft"`, `type="fertft"`} {
		if lines := grep(exchanges, unwanted); lines != "" {
			t.Errorf("a nonce challenge was counted as a failure:\n%s", lines)
		}
	}
}

// A proof that fails a check other than the nonce is still a failed exchange (feacft), even
// when it also lacks the nonce.
func TestInvalidProofWithoutNonceIsAFailedExchange(t *testing.T) {
	h := dpopHarness(t, withNonces)
	a, _, _ := testSigners(t)
	p := h.proof(a, http.MethodGet, "/oauth/token", "", "") // wrong htm
	r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, h.codeFor(spaClient, nil)), proof: p})
	wantOAuth(t, r, 400, "invalid_dpop_proof", "")
	if ev := h.lastEvent(); ev.Type != logs.TypeFailedExchange {
		t.Fatalf("event type %q, want feacft", ev.Type)
	}
	if text := h.scrape(); !strings.Contains(text, `dpop_broker_token_requests_total{bound="false",grant="authorization_code",result="failure"} 1`) {
		t.Errorf("failure not counted:\n%s", grep(text, "dpop_broker_token_requests_total"))
	}
}
