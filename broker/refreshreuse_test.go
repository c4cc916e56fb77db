package broker

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/dpop-broker/dpop-broker/dpop"
	"github.com/dpop-broker/dpop-broker/logs"
)

// TestForeignTokenCannotRevokeRefreshFamily: knowing a refresh token's 22-character family
// prefix, or holding a rotated-out token of another client, revokes nothing: only the
// family's own client presenting one of its rotated-out tokens does (reuse detection). The
// same holds at /oauth/revoke (RFC 7009 §2.2: 200, nothing changes).
func TestForeignTokenCannotRevokeRefreshFamily(t *testing.T) {
	h := dpopHarness(t, nil)
	offline := func(q url.Values) { q.Set("scope", "openid profile offline_access") }
	madeUp := func(_, live string) string { return live[:22] + "." + randomString(32) }
	rotatedOut := func(old, _ string) string { return old }
	for _, tc := range []struct {
		name        string
		presenter   string
		token       func(old, live string) string
		path        string // /oauth/token (refresh grant) or /oauth/revoke
		wantRevoked bool
	}{
		{name: "another client, a made-up secret under the family prefix", presenter: spaClient, token: madeUp, path: "/oauth/token"},
		{name: "another client, the family's rotated-out token", presenter: spaClient, token: rotatedOut, path: "/oauth/token"},
		{name: "the owning client, a made-up secret under its family prefix", presenter: appClient, token: madeUp, path: "/oauth/token"},
		{name: "revocation endpoint, another client, a made-up secret", presenter: spaClient, token: madeUp, path: "/oauth/revoke"},
		{name: "revocation endpoint, the owning client, a made-up secret", presenter: appClient, token: madeUp, path: "/oauth/revoke"},
		{name: "revocation endpoint, another client, the rotated-out token", presenter: spaClient, token: rotatedOut, path: "/oauth/revoke"},
		{name: "the owning client reuses its rotated-out token: the family is revoked", presenter: appClient, token: rotatedOut, path: "/oauth/token", wantRevoked: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.tok(tokReq{client: appClient, form: h.codeGrant(appClient, h.codeFor(appClient, offline))})
			old := r.str("refresh_token")
			r2 := h.tok(tokReq{client: appClient, form: refreshGrant(old)})
			live := r2.str("refresh_token")
			if old == "" || live == "" {
				t.Fatalf("no refresh tokens: %v %v", r.body, r2.body)
			}
			form := url.Values{"token": {tc.token(old, live)}}
			if tc.path == "/oauth/token" {
				form = refreshGrant(tc.token(old, live))
			}
			got := h.tok(tokReq{client: tc.presenter, form: form, path: tc.path})
			switch {
			case tc.path == "/oauth/revoke":
				if got.status != http.StatusOK {
					t.Fatalf("revoke: %d %v, want 200", got.status, got.body)
				}
			case tc.wantRevoked:
				wantOAuth(t, got, http.StatusBadRequest, "invalid_grant", "refresh token was already used: every token of its family is revoked")
				if ev := h.lastEvent(); ev.Type != logs.TypeFailedRotatingRefresh {
					t.Errorf("event = %+v, want ferrt", ev)
				}
			default:
				wantOAuth(t, got, http.StatusBadRequest, "invalid_grant", "refresh token is invalid, expired or revoked")
				if ev := h.lastEvent(); ev.Type != logs.TypeFailedRefresh || ev.ClientID != tc.presenter {
					t.Errorf("event = %+v, want fertft for %s", ev, tc.presenter)
				}
			}
			after := h.tok(tokReq{client: appClient, form: refreshGrant(live)})
			if revoked := after.status != http.StatusOK; revoked != tc.wantRevoked {
				t.Errorf("the owner's live token afterwards: %d %v (revoked %v, want %v)", after.status, after.body, revoked, tc.wantRevoked)
			}
		})
	}
}

// A public client's refresh tokens are bound to its DPoP key (RFC 9449 §5): whoever steals one
// without the key can neither trigger reuse detection (which would log the user out) nor
// revoke the family; the key's holder can do both.
func TestStolenBoundRefreshTokenCannotRevokeItsFamily(t *testing.T) {
	h := dpopHarness(t, nil)
	a, b, _ := testSigners(t)
	offline := func(q url.Values) { q.Set("scope", "openid profile offline_access") }
	for _, tc := range []struct {
		name        string
		path        string       // /oauth/token (the rotated-out token again) or /oauth/revoke (the live token)
		signer      *dpop.Signer // nil: no proof
		wantRevoked bool
		wantEvent   string // the event's details.error, or its type when revoked
	}{
		{name: "reuse without a proof", path: "/oauth/token"},
		{name: "reuse with another key's proof", path: "/oauth/token", signer: b},
		{name: "reuse by the key's holder revokes the family", path: "/oauth/token", signer: a, wantRevoked: true, wantEvent: logs.TypeFailedRotatingRefresh},
		{name: "revocation without a proof", path: "/oauth/revoke", wantEvent: "dpop_proof_required"},
		{name: "revocation with another key's proof", path: "/oauth/revoke", signer: b, wantEvent: "invalid_dpop_proof"},
		{name: "revocation by the key's holder", path: "/oauth/revoke", signer: a, wantRevoked: true, wantEvent: logs.TypeSuccessRevocation},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, h.codeFor(spaClient, offline)), proof: h.tokenProof(a)})
			old := r.str("refresh_token")
			r2 := h.tok(tokReq{client: spaClient, form: refreshGrant(old), proof: h.tokenProof(a)})
			live := r2.str("refresh_token")
			if old == "" || live == "" {
				t.Fatalf("no refresh tokens: %v %v", r.body, r2.body)
			}
			req := tokReq{client: spaClient, form: refreshGrant(old), path: tc.path}
			if tc.path == "/oauth/revoke" {
				req.form = url.Values{"token": {live}}
			}
			if tc.signer != nil {
				req.proof = h.proof(tc.signer, http.MethodPost, tc.path, "", "")
			}
			got := h.tok(req)
			ev := h.lastEvent()
			switch {
			case tc.path == "/oauth/revoke":
				if got.status != http.StatusOK {
					t.Fatalf("revoke: %d %v, want 200", got.status, got.body)
				}
				if ev.Type != tc.wantEvent && ev.Details["error"] != tc.wantEvent {
					t.Errorf("event %+v, want %s", ev, tc.wantEvent)
				}
			case tc.wantRevoked:
				wantOAuth(t, got, http.StatusBadRequest, "invalid_grant", "refresh token was already used: every token of its family is revoked")
				if ev.Type != tc.wantEvent {
					t.Errorf("event %+v, want %s", ev, tc.wantEvent)
				}
			default:
				wantOAuth(t, got, http.StatusBadRequest, "invalid_grant", "refresh token is invalid, expired or revoked")
			}
			after := h.tok(tokReq{client: spaClient, form: refreshGrant(live), proof: h.tokenProof(a)})
			if revoked := after.status != http.StatusOK; revoked != tc.wantRevoked {
				t.Errorf("the holder's live token afterwards: %d %v (revoked %v, want %v)", after.status, after.body, revoked, tc.wantRevoked)
			}
		})
	}
}
