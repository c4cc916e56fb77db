package broker

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/dpop-broker/dpop-broker/logs"
)

// TestRevoke covers OAuth 2.0 Token Revocation (RFC 7009) at /oauth/revoke.
func TestRevoke(t *testing.T) {
	h := dpopHarness(t, nil)
	a, _, _ := testSigners(t)
	offline := func(q url.Values) { q.Set("scope", "openid profile offline_access") }
	revoke := func(client string, form url.Values, json bool) httpResult {
		return h.tok(tokReq{client: client, form: form, json: json, path: "/oauth/revoke"})
	}
	// login returns a fresh refresh token of client, rotated once (so the family has an
	// older member), and the rotated-out one.
	login := func(t *testing.T, client string) (live, old string) {
		t.Helper()
		r := h.tok(tokReq{client: client, form: h.codeGrant(client, h.codeFor(client, offline)), proof: h.tokenProof(a)})
		old = r.str("refresh_token")
		r2 := h.tok(tokReq{client: client, form: refreshGrant(old), proof: h.tokenProof(a)})
		if old == "" || r2.status != http.StatusOK {
			t.Fatalf("refresh: %d %v", r2.status, r2.body)
		}
		return r2.str("refresh_token"), old
	}
	wantDead := func(t *testing.T, client, rt string) {
		t.Helper()
		r := h.tok(tokReq{client: client, form: refreshGrant(rt), proof: h.tokenProof(a)})
		if r.status != http.StatusBadRequest || r.str("error") != "invalid_grant" {
			t.Errorf("refresh with a revoked token: %d %v, want invalid_grant", r.status, r.body)
		}
	}

	t.Run("RFC 7009 §2.1 confidential client revokes its refresh token: the family ends (srrt)", func(t *testing.T) {
		live, _ := login(t, appClient)
		if r := revoke(appClient, url.Values{"token": {live}, "token_type_hint": {"refresh_token"}}, false); r.status != http.StatusOK {
			t.Fatalf("revoke: %d %v", r.status, r.body)
		}
		if ev := h.lastEvent(); ev.Type != logs.TypeSuccessRevocation || ev.ClientID != appClient || ev.UserID == "" {
			t.Errorf("event = %+v, want srrt with client and user", ev)
		}
		wantDead(t, appClient, live)
	})
	// Revocations that change nothing (200): the live token still refreshes afterwards.
	for _, tc := range []struct {
		name, revoker string
		old, json     bool // revoke the rotated-out token; JSON body
	}{
		{name: "RFC 7009 public client, JSON body, the rotated-out token: 200, the live one still works", revoker: spaClient, old: true, json: true},
		{name: "RFC 7009 §2.2 another client's refresh token: 200, nothing revoked", revoker: appClient, old: false, json: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			live, old := login(t, spaClient)
			tok := live
			if tc.old {
				tok = old
			}
			if r := revoke(tc.revoker, url.Values{"token": {tok}}, tc.json); r.status != http.StatusOK {
				t.Fatalf("revoke: %d %v", r.status, r.body)
			}
			if r := h.tok(tokReq{client: spaClient, form: refreshGrant(live), proof: h.tokenProof(a)}); r.status != http.StatusOK {
				t.Errorf("the live token afterwards: %d %v", r.status, r.body)
			}
		})
	}
	for _, tc := range []struct {
		name, client string
		form         url.Values
		status       int
		code         string
	}{
		{name: "RFC 7009 §2.2 unknown token: 200", client: appClient, form: url.Values{"token": {"not-a-token"}}, status: 200, code: ""},
		{name: "RFC 7009 §2.2.1 access token: unsupported_token_type", client: appClient, form: url.Values{"token": {"eyJhbGciOiJSUzI1NiJ9.e30.c2ln"}}, status: 400, code: "unsupported_token_type"},
		{name: "RFC 7009 §2.1 token missing: invalid_request", client: appClient, form: url.Values{}, status: 400, code: "invalid_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := revoke(tc.client, tc.form, false)
			if r.status != tc.status || r.str("error") != tc.code {
				t.Fatalf("got %d %v, want %d %q", r.status, r.body, tc.status, tc.code)
			}
			if tc.code != "" {
				if ev := h.lastEvent(); ev.Type != logs.TypeFailedRevocation || ev.Details["error"] != tc.code {
					t.Errorf("event = %+v, want frrt %s", ev, tc.code)
				}
			}
		})
	}
	t.Run("RFC 7009 §2.1 client authentication failure: 401 invalid_client", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/oauth/revoke", nil)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(appClient, "wrong-secret")
		r := h.do(req)
		if r.status != http.StatusUnauthorized || r.str("error") != "invalid_client" {
			t.Fatalf("got %d %v", r.status, r.body)
		}
	})
	if doc := h.broker.discoveryDocument(); doc["revocation_endpoint"] != h.srv.URL+"/oauth/revoke" {
		t.Errorf("revocation_endpoint = %v", doc["revocation_endpoint"])
	}
}
