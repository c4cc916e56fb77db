package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// idTokenOf redeems code for client and returns the ID token's claims (and the whole answer).
func (h *harness) idTokenOf(client, code string) (map[string]any, httpResult) {
	h.t.Helper()
	res := h.tok(tokReq{client: client, form: h.codeGrant(client, code)})
	if res.status != http.StatusOK {
		h.t.Fatalf("token for %s: %d %v", client, res.status, res.body)
	}
	return claimsOf(h.t, res.str("id_token")), res
}

// upstreamLogins is how many authorization requests the upstream IdP has seen.
func (h *harness) upstreamLogins() int64 { return h.up.Stats.AuthorizeRequests.Load() }

// authorizeStep sends one /authorize request in browser b without following redirects and
// returns the response's status and Location.
func (h *harness) authorizeStep(b *http.Client, client string, mut func(url.Values)) (int, string) {
	h.t.Helper()
	path, _ := clientInfo(client)
	q := url.Values{
		"response_type": {"code"}, "client_id": {client}, "redirect_uri": {h.app.URL + path},
		"scope": {"openid profile email"}, "state": {"st"}, "nonce": {"n"},
		"code_challenge": {s256(testVerifier)}, "code_challenge_method": {"S256"},
	}
	if mut != nil {
		mut(q)
	}
	stop := *b
	stop.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := stop.Get(h.srv.URL + "/authorize?" + q.Encode())
	if err != nil {
		h.t.Fatalf("authorize: %v", err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Location")
}

// TestSingleSignOnGivesSecondAppCodeWithoutUpstream: after one upstream login, another app
// in the same browser gets its code from the broker's session with no upstream round trip;
// the s event says sso, and both apps' ID tokens carry the same sid and the upstream login's
// auth_time (OIDC Core §2).
func TestSingleSignOnGivesSecondAppCodeWithoutUpstream(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp})
	b := h.browser()
	first := h.codeIn(b, appClient, nil)
	if n := h.upstreamLogins(); n != 1 {
		t.Fatalf("upstream logins after the first app = %d, want 1", n)
	}
	second := h.codeIn(b, spaClient, func(q url.Values) { q.Del("connection") })
	if n := h.upstreamLogins(); n != 1 {
		t.Fatalf("upstream logins after the second app = %d, want still 1 (single sign-on)", n)
	}
	ev := h.lastEventOf(logs.TypeSuccessLogin)
	if ev.ClientID != spaClient || ev.Details["sso"] != true || ev.Connection != "corp" || ev.Details["auth_time"] == nil {
		t.Fatalf("event %+v: want s for the SPA with details.sso, connection corp and auth_time", ev)
	}
	a, _ := h.idTokenOf(appClient, first)
	c, _ := h.idTokenOf(spaClient, second)
	if a["sid"] == nil || a["sid"] != c["sid"] {
		t.Errorf("sid %v and %v: want one session for both apps", a["sid"], c["sid"])
	}
	if a["auth_time"] != c["auth_time"] || a["sub"] != c["sub"] {
		t.Errorf("auth_time %v/%v sub %v/%v: want the upstream login's", a["auth_time"], c["auth_time"], a["sub"], c["sub"])
	}
	if c["aud"] != spaClient {
		t.Errorf("aud %v, want %s", c["aud"], spaClient)
	}
}

// TestSilentAuthenticationWithSession: prompt=none with a live session returns a code, by
// query redirect and by web_message, records ssa and never calls the upstream (OIDC Core
// §3.1.2.1).
func TestSilentAuthenticationWithSession(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp})
	b := h.browser()
	h.codeIn(b, appClient, nil)
	for _, tc := range []struct {
		name        string
		webMessage  bool
		wantInBody  string
		wantAtApp   bool
		wantEvClass string
	}{
		{name: "query", wantAtApp: true},
		{name: "web_message", webMessage: true, wantInBody: `"code":"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.upstreamLogins()
			mut := func(q url.Values) {
				q.Set("client_id", spaClient)
				q.Set("redirect_uri", h.app.URL+"/spa")
				q.Set("prompt", "none")
				if tc.webMessage {
					q.Set("response_mode", "web_message")
				}
			}
			resp, body := get(t, b, h.authorizeURL(mut))
			if tc.wantAtApp && appResult(t, resp, h.app.URL+"/spa").Get("code") == "" {
				t.Fatalf("no code at the app: %s", resp.Request.URL)
			}
			if tc.wantInBody != "" && !strings.Contains(body, tc.wantInBody) {
				t.Fatalf("web_message page lacks the code:\n%s", body)
			}
			if ev := h.lastEvent(); ev.Type != logs.TypeSuccessSilentAuth || ev.ClientID != spaClient || ev.Details["sso"] != true {
				t.Fatalf("event %s %s %v, want ssa for the SPA", ev.Type, ev.ClientID, ev.Details)
			}
			if h.upstreamLogins() != before {
				t.Fatal("silent authentication called the upstream")
			}
		})
	}
}

// TestSingleSignOnAsksUpstreamAgain: the session does not answer when the request needs a new
// authentication (prompt=login, max_age exceeded, another connection) or when the session is
// idle or past its absolute lifetime, or the cookie is not the session's; the login goes
// upstream, and prompt=none gets login_required with fsa instead.
func TestSingleSignOnAsksUpstreamAgain(t *testing.T) {
	for _, tc := range []struct {
		name    string
		client  string
		mut     func(url.Values)
		advance time.Duration         // broker (and upstream) clock moves on after the first login
		cookie  func(v string) string // rewrites the session cookie's value
	}{
		{name: "prompt=login", client: appClient, mut: func(q url.Values) { q.Set("prompt", "login") }},
		{name: "max_age exceeded by auth_time", client: appClient, advance: 10 * time.Second, mut: func(q url.Values) { q.Set("max_age", "5") }},
		{name: "another connection requested", client: spaClient, mut: func(q url.Values) { q.Set("connection", "other") }},
		{name: "idle timeout passed", client: appClient, advance: 31 * time.Minute},
		{name: "absolute timeout passed while used", client: appClient, advance: 61 * time.Minute},
		{name: "tampered cookie secret", client: appClient, cookie: func(v string) string { return v[:len(v)-2] + "xx" }},
		{name: "cookie naming another tag", client: appClient, cookie: func(v string) string { return "AAAAAAAAAAAAAAAAAAAAAA" + v[strings.Index(v, "."):] }},
	} {
		for _, silent := range []bool{false, true} {
			if silent && tc.name == "prompt=login" {
				continue // prompt=none with login is invalid_request (TestAuthorizeErrorRedirects)
			}
			name := tc.name
			if silent {
				name += " (prompt=none)"
			}
			t.Run(name, func(t *testing.T) {
				h := newHarness(t, harnessOpts{up: dpopUp, upstreamOnClock: true, mutate: func(c *config.Config) {
					c.Sessions.IdleTimeout, c.Sessions.AbsoluteTimeout = 30*time.Minute, time.Hour
				}})
				b := h.browser()
				h.codeIn(b, appClient, nil)
				if tc.advance == 61*time.Minute { // used within its idle window until past the absolute end
					for i := 0; i < 2; i++ {
						h.clock.Advance(20 * time.Minute)
						h.codeIn(b, appClient, nil)
					}
					h.clock.Advance(21 * time.Minute) // 61 minutes after the login, 21 after its last use
					if n := h.upstreamLogins(); n != 1 {
						t.Fatalf("upstream logins while the session was used = %d, want 1", n)
					}
				} else {
					h.clock.Advance(tc.advance)
				}
				if tc.cookie != nil {
					u, _ := url.Parse(h.srv.URL)
					cs := b.Jar.Cookies(u)
					for _, c := range cs {
						if c.Name == sessionCookie {
							c.Value = tc.cookie(c.Value)
						}
					}
					b.Jar.SetCookies(u, cs)
				}
				before := h.upstreamLogins()
				status, loc := h.authorizeStep(b, tc.client, func(q url.Values) {
					if tc.mut != nil {
						tc.mut(q)
					}
					if silent {
						q.Set("prompt", "none")
					}
				})
				if silent {
					u, _ := url.Parse(loc)
					if status != http.StatusFound || u.Query().Get("error") != "login_required" {
						t.Fatalf("got %d %s, want login_required at the app", status, loc)
					}
					wantFailOf(t, h, logs.TypeFailedSilentAuth, "login_required")
				} else if status != http.StatusFound || !strings.HasPrefix(loc, h.up.URL) {
					t.Fatalf("got %d %s, want a redirect to the upstream", status, loc)
				}
				if h.upstreamLogins() != before {
					t.Fatal("the upstream was called before the browser got there")
				}
			})
		}
	}
}

// TestReauthenticationKeepsSession: prompt=login by the same user renews the session's
// auth_time in place: the sid stays and the apps that hold it stay signed in.
func TestReauthenticationKeepsSession(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp, upstreamOnClock: true})
	b := h.browser()
	first, _ := h.idTokenOf(appClient, h.codeIn(b, appClient, nil))
	h.clock.Advance(time.Minute)
	again, _ := h.idTokenOf(appClient, h.codeIn(b, appClient, func(q url.Values) { q.Set("prompt", "login") }))
	if h.upstreamLogins() != 2 {
		t.Fatalf("upstream logins = %d, want 2", h.upstreamLogins())
	}
	if first["sid"] != again["sid"] {
		t.Errorf("sid changed from %v to %v at re-authentication", first["sid"], again["sid"])
	}
	if a, b := first["auth_time"].(float64), again["auth_time"].(float64); b <= a {
		t.Errorf("auth_time %v after re-authentication, want later than %v", b, a)
	}
}

// TestLogoutEndsSessionForEveryApp: RP-initiated logout ends the one session every app holds:
// the refresh tokens and opaque access tokens of both apps stop working, and the next login
// goes upstream.
func TestLogoutEndsSessionForEveryApp(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp})
	b := h.browser()
	offline := func(q url.Values) { q.Set("scope", "openid profile offline_access") }
	_, app := h.idTokenOf(appClient, h.codeIn(b, appClient, offline))
	_, spa := h.idTokenOf(spaClient, h.codeIn(b, spaClient, offline))
	if app.str("refresh_token") == "" || spa.str("refresh_token") == "" {
		t.Fatalf("want refresh tokens for both apps: %v %v", app.body, spa.body)
	}
	if app.str("refresh_token")[:22] == spa.str("refresh_token")[:22] {
		t.Fatal("both apps' refresh tokens are of one family: each code must mint its own")
	}
	if r := h.userinfo("Bearer "+spa.str("access_token"), ""); r.status != http.StatusOK {
		t.Fatalf("userinfo before logout: %d %v", r.status, r.body)
	}
	resp, _ := get(t, b, h.srv.URL+"/v2/logout")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	for _, tc := range []struct {
		name   string
		client string
		rt     string
	}{{"confidential app", appClient, app.str("refresh_token")}, {"SPA", spaClient, spa.str("refresh_token")}} {
		if r := h.tok(tokReq{client: tc.client, form: refreshGrant(tc.rt)}); r.status != http.StatusBadRequest || r.str("error") != "invalid_grant" {
			t.Errorf("%s refresh after logout: %d %v, want invalid_grant", tc.name, r.status, r.body)
		}
	}
	if r := h.userinfo("Bearer "+spa.str("access_token"), ""); r.status != http.StatusUnauthorized {
		t.Errorf("userinfo after logout: %d, want 401", r.status)
	}
	if status, loc := h.authorizeStep(b, appClient, nil); status != http.StatusFound || !strings.HasPrefix(loc, h.up.URL) {
		t.Errorf("after logout /authorize answered %d %s, want the upstream", status, loc)
	}
}

// TestRefreshSlidesSessionIdleWindow: a refresh is a use of the session: it keeps the
// session alive past its idle timeout counted from the login, never past its absolute end.
func TestRefreshSlidesSessionIdleWindow(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp, upstreamOnClock: true, mutate: func(c *config.Config) {
		c.Sessions.IdleTimeout, c.Sessions.AbsoluteTimeout = 30*time.Minute, time.Hour
		c.Lifetimes.RefreshToken = 2 * time.Hour
	}})
	_, res := h.idTokenOf(appClient, h.codeFor(appClient, func(q url.Values) { q.Set("scope", "openid offline_access") }))
	rt := res.str("refresh_token")
	for i := 0; i < 3; i++ { // 20, 40, 60- minutes: each within the idle window of the last use
		h.clock.Advance(20*time.Minute - time.Second)
		r := h.tok(tokReq{client: appClient, form: refreshGrant(rt)})
		if r.status != http.StatusOK {
			t.Fatalf("refresh %d: %d %v", i, r.status, r.body)
		}
		rt = r.str("refresh_token")
	}
	h.clock.Advance(5 * time.Second) // past the absolute end
	if r := h.tok(tokReq{client: appClient, form: refreshGrant(rt)}); r.status != http.StatusBadRequest {
		t.Fatalf("refresh past the absolute end: %d %v, want invalid_grant", r.status, r.body)
	}
}

// TestLoginOfAnotherUserEndsBrowserSession: a new upstream login of another user in the same
// browser ends the browser's session first (slo with a reason): one browser, one user.
func TestLoginOfAnotherUserEndsBrowserSession(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp})
	b := h.browser()
	_, res := h.idTokenOf(appClient, h.codeIn(b, appClient, func(q url.Values) { q.Set("scope", "openid offline_access") }))
	h.up.SetSubject("bob")
	h.codeIn(b, spaClient, func(q url.Values) { q.Set("prompt", "login") })
	ev := h.lastEventOf(logs.TypeSuccessLogout)
	if ev.Details["reason"] == nil || !strings.Contains(ev.UserID, "alice") {
		t.Fatalf("slo %+v: want alice's session ended with a reason", ev)
	}
	if r := h.tok(tokReq{client: appClient, form: refreshGrant(res.str("refresh_token"))}); r.status != http.StatusBadRequest {
		t.Fatalf("alice's refresh token after bob's login: %d, want invalid_grant", r.status)
	}
}

// TestMaxAgeNeedsUpstreamAuthTime: when the upstream's ID token carried no auth_time, the
// session's auth_time is only the broker's login time, so a request with max_age is never
// answered from the session (OIDC Core §3.1.2.1): it goes upstream, and prompt=none gets
// login_required.
func TestMaxAgeNeedsUpstreamAuthTime(t *testing.T) {
	up := dpopUp
	up.OmitAuthTime, up.SessionAge = true, 72*time.Hour
	h := newHarness(t, harnessOpts{up: up})
	b := h.browser()
	h.codeIn(b, appClient, nil)
	withMaxAge := func(q url.Values) { q.Set("max_age", "300") }
	if status, loc := h.authorizeStep(b, appClient, withMaxAge); status != http.StatusFound || !strings.HasPrefix(loc, h.up.URL) {
		t.Fatalf("max_age with a session of unknown auth_time: %d %s, want the upstream", status, loc)
	}
	status, loc := h.authorizeStep(b, appClient, func(q url.Values) { withMaxAge(q); q.Set("prompt", "none") })
	if u, _ := url.Parse(loc); status != http.StatusFound || u.Query().Get("error") != "login_required" {
		t.Fatalf("prompt=none with max_age: %d %s, want login_required", status, loc)
	}
	// Without max_age the session still answers.
	if status, loc := h.authorizeStep(b, appClient, nil); status != http.StatusFound || !strings.HasPrefix(loc, h.app.URL) {
		t.Fatalf("without max_age: %d %s, want a code", status, loc)
	}
}

// TestCodeOfEndedSessionGetsNoTokens: a code issued before its session ended (logout here;
// an administrator or the upstream alike) is refused with invalid_grant: the apps were already
// told the session ended, so no tokens may follow.
func TestCodeOfEndedSessionGetsNoTokens(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp})
	b := h.browser()
	h.codeIn(b, appClient, nil)
	code := h.codeIn(b, spaClient, nil) // from the session
	if resp, _ := get(t, b, h.srv.URL+"/v2/logout"); resp.StatusCode != http.StatusOK {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code)})
	if r.status != http.StatusBadRequest || r.str("error") != "invalid_grant" || !strings.Contains(r.str("error_description"), "session") {
		t.Fatalf("code of an ended session: %d %v, want invalid_grant", r.status, r.body)
	}
}

// TestUpstreamSessionIndexOverflowEndsOldest: one upstream session carried into more browsers
// than its index holds ends the oldest broker session, so that no live session escapes an
// upstream back-channel logout of that upstream session; the logout then ends the rest.
func TestUpstreamSessionIndexOverflowEndsOldest(t *testing.T) {
	up := dpopUp
	up.SessionID = "one-idp-session"
	h := newHarness(t, harnessOpts{up: up})
	var all []upstreamSignedIn
	for i := 0; i <= maxUpstreamSIDSessions; i++ {
		all = append(all, h.signInUpstream())
	}
	if h.alive(all[0]) {
		t.Fatal("the oldest session outlived its upstream session's full index")
	}
	if ev := h.lastEventOf(logs.TypeSuccessLogout); ev.Details["session_id"] != all[0].sid || ev.Details["reason"] == nil {
		t.Errorf("slo %v, want the oldest session with a reason", ev.Details)
	}
	if res := h.upstreamLogout(demoidp.LogoutTokenOptions{SID: "one-idp-session", Subject: "alice"}); res.status != http.StatusOK {
		t.Fatalf("upstream logout: %d %v", res.status, res.body)
	}
	for i, si := range all {
		if h.alive(si) {
			t.Errorf("session %d survived the upstream logout", i)
		}
	}
}

// conflictingStore changes the first session record swapped after armed is set just before
// the swap, as a concurrent refresh sliding it would.
type conflictingStore struct {
	sessions.Store
	armed atomic.Bool
}

func (c *conflictingStore) Swap(ctx context.Context, k sessions.Kind, id string, old []byte, put []sessions.Item, del []sessions.Ref) error {
	if k == sessions.KindSession && c.armed.CompareAndSwap(true, false) {
		var rec sessionRecord
		if json.Unmarshal(old, &rec) == nil {
			rec.Seen++
			changed, _ := json.Marshal(rec)
			_ = c.Store.Put(ctx, k, id, changed, time.Minute)
		}
	}
	return c.Store.Swap(ctx, k, id, old, put, del)
}

// TestReauthenticationRetriesAfterConcurrentChange: a re-authentication whose session changed
// between its read and its write (a refresh sliding it) reads it again and re-authenticates
// it: the browser keeps one session, none is left live behind the cookie.
func TestReauthenticationRetriesAfterConcurrentChange(t *testing.T) {
	cs := &conflictingStore{Store: sessions.NewMemory()}
	h := newHarness(t, harnessOpts{up: dpopUp, store: cs})
	b := h.browser()
	first, _ := h.idTokenOf(appClient, h.codeIn(b, appClient, nil))
	cs.armed.Store(true)
	again, _ := h.idTokenOf(appClient, h.codeIn(b, appClient, func(q url.Values) { q.Set("prompt", "login") }))
	if cs.armed.Load() {
		t.Fatal("the re-authentication wrote no session")
	}
	if first["sid"] != again["sid"] {
		t.Errorf("sid %v became %v: the re-authentication left its session for a new one", first["sid"], again["sid"])
	}
	found, err := h.broker.userSessions(context.Background(), first["sub"].(string))
	if err != nil || len(found) != 1 {
		t.Errorf("user sessions %d (%v), want 1", len(found), err)
	}
}

// TestLoginStoreFailuresAreAnsweredByKind: a login whose store write failed gets 503 with the
// code of what happened (full, unreachable, or a record that kept changing under concurrent
// writers, as one user's session index signed in from very many browsers at once), and
// store_unavailable for anything else: never a 500 for the store.
func TestLoginStoreFailuresAreAnsweredByKind(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp})
	for _, tc := range []struct {
		name       string
		err        error
		wantStatus int
		wantCode   string
	}{
		{name: "store full", err: sessions.ErrFull, wantStatus: http.StatusServiceUnavailable, wantCode: codeStoreFull},
		{name: "store unreachable", err: fmt.Errorf("dial: %w", sessions.ErrUnavailable), wantStatus: http.StatusServiceUnavailable, wantCode: codeStoreUnavailable},
		{name: "index kept changing", err: fmt.Errorf("index add: 16 attempts: %w", sessions.ErrConflict), wantStatus: http.StatusServiceUnavailable, wantCode: codeStoreBusy},
		{name: "anything else", err: errors.New("boom"), wantStatus: http.StatusServiceUnavailable, wantCode: codeStoreUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if f := h.broker.storeFailure(tc.err); f.Status != tc.wantStatus || f.Code != tc.wantCode {
				t.Errorf("storeFailure(%v) = %d %s, want %d %s", tc.err, f.Status, f.Code, tc.wantStatus, tc.wantCode)
			}
		})
	}
}

// TestCodeTakesUserClaimsFromSession: a code record does not carry the user's claims; the ID
// token takes them from the code's session at redemption. A code written in the earlier
// format, with claims of its own, still redeems, and the session's claims win.
func TestCodeTakesUserClaimsFromSession(t *testing.T) {
	tests := []struct {
		name       string
		codeClaims map[string]any // nil: the code as issued now
	}{
		{name: "code without claims"},
		{name: "code of the earlier format with claims", codeClaims: map[string]any{"email": "stale@example.com", "name": "Stale"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{up: dpopUp})
			b := h.browser()
			code := h.codeIn(b, appClient, nil)
			raw, err := h.store.Get(t.Context(), sessions.KindCode, code)
			if err != nil {
				t.Fatalf("read code: %v", err)
			}
			var stored map[string]any
			if err := json.Unmarshal(raw, &stored); err != nil {
				t.Fatalf("decode code: %v", err)
			}
			if _, ok := stored["claims"]; ok {
				t.Fatalf("code record %s carries claims, want them in the session only", raw)
			}
			if tc.codeClaims != nil {
				stored["claims"] = tc.codeClaims
				old, _ := json.Marshal(stored)
				if err := h.store.Put(t.Context(), sessions.KindCode, code, old, time.Minute); err != nil {
					t.Fatalf("write code of the earlier format: %v", err)
				}
			}
			idt, _ := h.idTokenOf(appClient, code)
			email, _ := idt["email"].(string)
			if email == "" || email == "stale@example.com" {
				t.Fatalf("ID token email %q, want the session's", email)
			}
		})
	}
}
