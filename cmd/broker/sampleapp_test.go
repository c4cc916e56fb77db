package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// TestSampleAppBackchannelLogoutEndsSessionsOnlyForValidLogoutTokens: the demo app's
// backchannel_logout_uri validates each logout token (Back-Channel Logout 1.0 §2.6) against
// its OP, here a demo IdP that signs tokens breaking one rule at a time, and ends its sessions
// of the token's sid only when it is valid (§2.7, answers §2.8).
func TestSampleAppBackchannelLogoutEndsSessionsOnlyForValidLogoutTokens(t *testing.T) {
	op, err := demoidp.Start(demoidp.Options{ClientID: "app"})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	app := &sampleApp{name: "App", cookie: "app", issuer: op.URL, clientID: "app",
		pending: map[string]pendingLogin{}, sessions: map[string]*appSession{}}
	m := http.NewServeMux()
	app.routes(m)
	srv := httptest.NewServer(m)
	defer srv.Close()
	uri := srv.URL + "/backchannel-logout"

	const sid = "Ry53Sxf9dz5nwux7dbr6Gg"
	for _, tc := range []struct {
		name        string
		opts        demoidp.LogoutTokenOptions
		wantRefusal string // in error_description of a 400; "" for 200
		wantEnded   bool
	}{
		{name: "valid token ends the sid's session", opts: demoidp.LogoutTokenOptions{SID: sid, Subject: "alice"}, wantEnded: true},
		{name: "another sid ends nothing", opts: demoidp.LogoutTokenOptions{SID: "another-session-id-0000", Subject: "alice"}},
		{name: "typ JWT (an ID token's) is refused", opts: demoidp.LogoutTokenOptions{SID: sid, Type: "JWT"}, wantRefusal: "typ is not logout+jwt"},
		{name: "no typ is refused", opts: demoidp.LogoutTokenOptions{SID: sid, NoType: true}, wantRefusal: "typ is not logout+jwt"},
		{name: "signature by a key the OP does not publish is refused", opts: demoidp.LogoutTokenOptions{SID: sid, ForeignKey: true}, wantRefusal: "signature"},
		{name: "another issuer is refused", opts: demoidp.LogoutTokenOptions{SID: sid, Issuer: "http://127.0.0.1:1"}, wantRefusal: "issued by a different provider"},
		{name: "another audience is refused", opts: demoidp.LogoutTokenOptions{SID: sid, Audience: "other-app"}, wantRefusal: "expected audience"},
		{name: "expired token is refused", opts: demoidp.LogoutTokenOptions{SID: sid, TTL: -time.Minute}, wantRefusal: "expired"},
		{name: "no events claim is refused", opts: demoidp.LogoutTokenOptions{SID: sid, Omit: []string{"events"}}, wantRefusal: "events lacks the back-channel logout event"},
		{name: "event member not an object is refused", opts: demoidp.LogoutTokenOptions{SID: sid, Events: map[string]any{demoidp.BackchannelLogoutEvent: "yes"}}, wantRefusal: "events lacks the back-channel logout event"},
		{name: "nonce is refused", opts: demoidp.LogoutTokenOptions{SID: sid, Extra: map[string]any{"nonce": "n"}}, wantRefusal: "carries a nonce"},
		{name: "sub without sid is refused", opts: demoidp.LogoutTokenOptions{Subject: "alice"}, wantRefusal: "no sid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sess := &appSession{User: "Alice", SID: sid, Claims: "{}", SignedIn: time.Now()}
			app.mu.Lock()
			app.sessions = map[string]*appSession{"cookie": sess}
			app.mu.Unlock()
			resp, err := op.BackchannelLogout(uri, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			app.mu.Lock()
			ended := !sess.EndedByBroker.IsZero()
			app.mu.Unlock()
			wantStatus := http.StatusOK
			if tc.wantRefusal != "" {
				wantStatus = http.StatusBadRequest
			}
			if resp.StatusCode != wantStatus || ended != tc.wantEnded || resp.Header.Get("Cache-Control") != "no-store" ||
				(tc.wantRefusal != "" && (!strings.Contains(string(body), `"error":"invalid_request"`) || !strings.Contains(string(body), tc.wantRefusal))) {
				t.Fatalf("%d %s (Cache-Control %q), session ended %v; want %d %q, ended %v",
					resp.StatusCode, body, resp.Header.Get("Cache-Control"), ended, wantStatus, tc.wantRefusal, tc.wantEnded)
			}
		})
	}

	// A body that is no form of at most 16 KiB is refused before any token is read.
	resp, err := http.Post(uri, "application/x-www-form-urlencoded", strings.NewReader("logout_token="+strings.Repeat("a", maxLogoutRequest)))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("oversized body: %s", resp.Status)
	}
}
