package broker

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/sessions/redistest"
	"github.com/dpop-broker/dpop-broker/upstream"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// connectionID returns the id of the connection named name.
func (h *harness) connectionID(name string) string {
	h.t.Helper()
	snap, err := h.broker.reg.current(context.Background(), false)
	if err != nil || snap.byName[name] == nil {
		h.t.Fatalf("connection %s: %v", name, err)
	}
	return snap.byName[name].id
}

// backchannelURL is the back-channel logout URI of the connection named name.
func (h *harness) backchannelURL(name string) string {
	return h.srv.URL + "/logout/backchannel/" + url.PathEscape(h.connectionID(name))
}

// upstreamLogout has the upstream IdP send a logout token made as o says to the back-channel
// logout URI of connection corp, and returns the answer (its JSON body decoded).
func (h *harness) upstreamLogout(o demoidp.LogoutTokenOptions) httpResult {
	h.t.Helper()
	resp, err := h.up.BackchannelLogout(h.backchannelURL("corp"), o)
	if err != nil {
		h.t.Fatalf("back-channel logout: %v", err)
	}
	return readResult(h.t, resp)
}

// readResult reads resp into an httpResult (a JSON body decoded, when there is one).
func readResult(t testing.TB, resp *http.Response) httpResult {
	t.Helper()
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	res := httpResult{status: resp.StatusCode, header: resp.Header}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &res.body); err != nil {
			t.Fatalf("body %q: %v", b, err)
		}
	}
	return res
}

// upstreamSignedIn is one browser signed in at the app through connection corp (signIn), and
// the upstream session its broker session came from (the upstream ID token's sid).
type upstreamSignedIn struct {
	signedIn
	upstreamSID string
}

// signInUpstream is signIn, with the upstream session of the login.
func (h *harness) signInUpstream() upstreamSignedIn {
	h.t.Helper()
	si := upstreamSignedIn{signedIn: h.signIn(), upstreamSID: h.up.LastSID()}
	if si.upstreamSID == "" || si.access == "" {
		h.t.Fatalf("sign-in without an upstream sid or access token: %+v", si)
	}
	return si
}

// alive reports whether the broker session of si still stands: its access token works at
// /userinfo (wantEnded checks every sign of an ended session).
func (h *harness) alive(si upstreamSignedIn) bool {
	h.t.Helper()
	return h.userinfo("Bearer "+si.access, "").status == http.StatusOK
}

// wantEnded checks that si's session has ended: its refresh token and access token stop
// working and the next login in its browser goes to the upstream.
func (h *harness) wantEnded(t *testing.T, si upstreamSignedIn) {
	t.Helper()
	if r := h.tok(tokReq{client: appClient, form: refreshGrant(si.refresh)}); r.status != http.StatusBadRequest || r.str("error") != "invalid_grant" {
		t.Errorf("refresh after the upstream logout: %d %v, want invalid_grant", r.status, r.body)
	}
	if r := h.userinfo("Bearer "+si.access, ""); r.status != http.StatusUnauthorized {
		t.Errorf("userinfo after the upstream logout: %d, want 401", r.status)
	}
	if status, loc := h.authorizeStep(si.browser, appClient, nil); status != http.StatusFound || !strings.HasPrefix(loc, h.up.URL) {
		t.Errorf("/authorize after the upstream logout: %d %s, want the upstream", status, loc)
	}
}

// sloEvents returns the slo events of the broker's log, newest first.
func (h *harness) sloEvents() []logs.Event {
	h.t.Helper()
	evs, err := h.events.Recent(context.Background(), "", 100)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []logs.Event
	for _, ev := range evs {
		if ev.Type == logs.TypeSuccessLogout {
			out = append(out, ev)
		}
	}
	return out
}

// TestUpstreamBackchannelLogoutEndsBrokerSession: a logout token from the upstream (by sid,
// by sub alone, by both; Back-Channel Logout 1.0 §2.4) ends the broker session created from
// that upstream login: 200 with Cache-Control: no-store (§2.8), the refresh and access tokens
// stop working, the next login goes upstream, the app gets the broker's own back-channel
// logout for the session, and slo records it with the reason and the session.
func TestUpstreamBackchannelLogoutEndsBrokerSession(t *testing.T) {
	for _, tc := range []struct {
		name  string
		token func(si upstreamSignedIn) demoidp.LogoutTokenOptions
		names []string // details.upstream_logout_by
	}{
		{name: "by sid", token: func(si upstreamSignedIn) demoidp.LogoutTokenOptions {
			return demoidp.LogoutTokenOptions{SID: si.upstreamSID}
		}, names: []string{"sid"}},
		{name: "by sub alone", token: func(upstreamSignedIn) demoidp.LogoutTokenOptions {
			return demoidp.LogoutTokenOptions{Subject: "alice"}
		}, names: []string{"sub"}},
		{name: "by sid and sub", token: func(si upstreamSignedIn) demoidp.LogoutTokenOptions {
			return demoidp.LogoutTokenOptions{SID: si.upstreamSID, Subject: "alice"}
		}, names: []string{"sid", "sub"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := newLogoutApp(t, appClient)
			h := newHarness(t, harnessOpts{up: dpopUp, mutate: func(c *config.Config) {
				c.Clients[0].BackchannelLogoutURI = app.uri()
			}})
			app.mu.Lock()
			app.issuer = h.cfg.Issuer
			app.mu.Unlock()
			si := h.signInUpstream()
			res := h.upstreamLogout(tc.token(si))
			if res.status != http.StatusOK || res.header.Get("Cache-Control") != "no-store" {
				t.Fatalf("answer %d Cache-Control %q %v, want 200 no-store", res.status, res.header.Get("Cache-Control"), res.body)
			}
			if sids := backchannelSIDs(t, app, 1); !slices.Equal(sids, []any{si.sid}) {
				t.Errorf("the app's back-channel logouts name sessions %v, want [%s]", sids, si.sid)
			}
			h.wantEnded(t, si)
			slo := h.sloEvents()
			if len(slo) != 1 {
				t.Fatalf("%d slo events, want 1", len(slo))
			}
			ev := slo[0]
			names, _ := ev.Details["upstream_logout_by"].([]any)
			if ev.Details["reason"] != reasonUpstreamLogout || ev.Details["session_id"] != si.sid || ev.Connection != "corp" ||
				ev.ConnectionID != h.connectionID("corp") || ev.ClientID != appClient || ev.UserID != "oidc|corp|alice" ||
				fmt.Sprint(names) != fmt.Sprint(tc.names) {
				t.Errorf("slo %+v: want reason %q, session_id %s, corp, the app, alice and names %v", ev, reasonUpstreamLogout, si.sid, tc.names)
			}
		})
	}
}

// TestUpstreamLogoutEndsEverySessionItNames: a logout token ends every broker session it
// names (Back-Channel Logout 1.0 §2.4, §2.7): with sid, each session created from that
// upstream session (two browsers that carried one upstream session) and no other; with sub
// alone, every session of that user at the connection. On the memory store and on Redis
// (the session indexes and the jti record).
func TestUpstreamLogoutEndsEverySessionItNames(t *testing.T) {
	redisAddr := sync.OnceValue(func() string { return redistest.Start(t) })
	for _, tc := range []struct {
		name          string
		redis         bool
		upstreamSID   string // one upstream session for both browsers; "" = one per login
		token         func(a, b upstreamSignedIn) demoidp.LogoutTokenOptions
		wantEndedA    bool
		wantEndedB    bool
		wantEndedSlos int
	}{
		{name: "sid of the first browser's upstream session ends only its session", token: func(a, _ upstreamSignedIn) demoidp.LogoutTokenOptions {
			return demoidp.LogoutTokenOptions{SID: a.upstreamSID, Subject: "alice"}
		}, wantEndedA: true, wantEndedSlos: 1},
		{name: "sid of an upstream session both browsers carry ends both", upstreamSID: "shared-idp-session", token: func(a, _ upstreamSignedIn) demoidp.LogoutTokenOptions {
			return demoidp.LogoutTokenOptions{SID: a.upstreamSID}
		}, wantEndedA: true, wantEndedB: true, wantEndedSlos: 2},
		{name: "sub alone ends every session of the user", token: func(upstreamSignedIn, upstreamSignedIn) demoidp.LogoutTokenOptions {
			return demoidp.LogoutTokenOptions{Subject: "alice"}
		}, wantEndedA: true, wantEndedB: true, wantEndedSlos: 2},
		{name: "sub alone issued before the user signed in ends nothing", token: func(upstreamSignedIn, upstreamSignedIn) demoidp.LogoutTokenOptions {
			return demoidp.LogoutTokenOptions{Subject: "alice", Extra: map[string]any{"iat": time.Now().Add(-10 * time.Minute).Unix()}}
		}},
		{name: "sub of another user ends nothing", token: func(upstreamSignedIn, upstreamSignedIn) demoidp.LogoutTokenOptions {
			return demoidp.LogoutTokenOptions{Subject: "bob"}
		}},
		{name: "on Redis: sid of an upstream session both browsers carry ends both", redis: true, upstreamSID: "shared-idp-session", token: func(a, _ upstreamSignedIn) demoidp.LogoutTokenOptions {
			return demoidp.LogoutTokenOptions{SID: a.upstreamSID}
		}, wantEndedA: true, wantEndedB: true, wantEndedSlos: 2},
		{name: "on Redis: sub alone ends every session of the user", redis: true, token: func(upstreamSignedIn, upstreamSignedIn) demoidp.LogoutTokenOptions {
			return demoidp.LogoutTokenOptions{Subject: "alice"}
		}, wantEndedA: true, wantEndedB: true, wantEndedSlos: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := dpopUp
			up.SessionID = tc.upstreamSID
			o := harnessOpts{up: up}
			if tc.redis {
				st, err := sessions.NewRedis(sessions.RedisConfig{Addrs: []string{redisAddr()}, Prefix: "bcl" + randomString(6)})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = st.Close() })
				o.store = st
			}
			h := newHarness(t, o)
			a, b := h.signInUpstream(), h.signInUpstream()
			if (a.upstreamSID == b.upstreamSID) != (tc.upstreamSID != "") || a.sid == b.sid {
				t.Fatalf("upstream sids %q %q, broker sids %q %q", a.upstreamSID, b.upstreamSID, a.sid, b.sid)
			}
			if res := h.upstreamLogout(tc.token(a, b)); res.status != http.StatusOK {
				t.Fatalf("answer %d %v, want 200", res.status, res.body)
			}
			for _, s := range []struct {
				name  string
				si    upstreamSignedIn
				ended bool
			}{{"first browser", a, tc.wantEndedA}, {"second browser", b, tc.wantEndedB}} {
				if alive := h.alive(s.si); alive == s.ended {
					t.Errorf("%s: session alive %t, want ended %t", s.name, alive, s.ended)
				}
			}
			var ended []string
			for _, ev := range h.sloEvents() {
				if id, ok := ev.Details["session_id"].(string); ok {
					ended = append(ended, id)
				}
			}
			if len(ended) != tc.wantEndedSlos {
				t.Errorf("slo events for sessions %v, want %d", ended, tc.wantEndedSlos)
			}
		})
	}
}

// TestUpstreamLogoutRefusalsEndNothing: a back-channel logout request that breaks a rule of
// Back-Channel Logout 1.0 (§2.5 request, §2.6 token validation) is answered 400
// {"error":"invalid_request"} (§2.8; 405 for another method) with an flo event naming the
// rule, and ends nothing. A valid token naming no session is answered 200 (the upstream
// learns nothing about the broker's sessions) with one slo event saying nothing ended.
func TestUpstreamLogoutRefusalsEndNothing(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp})
	si := h.signInUpstream()
	corp := h.backchannelURL("corp")
	valid := demoidp.LogoutTokenOptions{SID: si.upstreamSID, Subject: "alice"}
	with := func(mut func(o *demoidp.LogoutTokenOptions)) demoidp.LogoutTokenOptions {
		o := valid
		mut(&o)
		return o
	}
	token := func(o demoidp.LogoutTokenOptions) string {
		tok, err := h.up.LogoutToken(o)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	form := func(tok string) string { return url.Values{"logout_token": {tok}}.Encode() }
	const formType = "application/x-www-form-urlencoded"
	for _, tc := range []struct {
		name        string
		method      string // default POST
		url         string // default corp's back-channel logout URI
		contentType string // default form
		body        func() string
		before      func() // a request the case needs first
		status      int
		event       string // flo, or slo for the valid token naming nothing
		code        string // details.error
		rule        string // in details.error_description
		connection  bool   // the event names corp
	}{
		{name: "no events claim", body: func() string {
			return form(token(with(func(o *demoidp.LogoutTokenOptions) { o.Omit = []string{"events"} })))
		},
			status: 400, event: "flo", code: "logout_token_invalid", rule: "logout token events:", connection: true},
		{name: "events without the back-channel logout member", body: func() string {
			return form(token(with(func(o *demoidp.LogoutTokenOptions) { o.Events = map[string]any{"urn:other": map[string]any{}} })))
		}, status: 400, event: "flo", code: "logout_token_invalid", rule: "has no member", connection: true},
		{name: "the member's value is not an object", body: func() string {
			return form(token(with(func(o *demoidp.LogoutTokenOptions) {
				o.Events = map[string]any{demoidp.BackchannelLogoutEvent: true}
			})))
		}, status: 400, event: "flo", code: "logout_token_invalid", rule: "is not a JSON object", connection: true},
		{name: "with a nonce", body: func() string {
			return form(token(with(func(o *demoidp.LogoutTokenOptions) { o.Extra = map[string]any{"nonce": "n"} })))
		},
			status: 400, event: "flo", code: "logout_token_invalid", rule: "logout token nonce:", connection: true},
		{name: "replayed jti", before: func() {
			if r := h.upstreamLogout(demoidp.LogoutTokenOptions{SID: "no-such-session", JTI: "once"}); r.status != http.StatusOK {
				t.Fatalf("first use of the jti: %d %v", r.status, r.body)
			}
		}, body: func() string { return form(token(with(func(o *demoidp.LogoutTokenOptions) { o.JTI = "once" }))) },
			status: 400, event: "flo", code: codeLogoutTokenReplayed, rule: "replayed", connection: true},
		{name: "aud is another client", body: func() string {
			return form(token(with(func(o *demoidp.LogoutTokenOptions) { o.Audience = "another" })))
		},
			status: 400, event: "flo", code: "logout_token_invalid", rule: "logout token aud:", connection: true},
		{name: "iss is another issuer", body: func() string {
			return form(token(with(func(o *demoidp.LogoutTokenOptions) { o.Issuer = "https://evil.example" })))
		}, status: 400, event: "flo", code: "logout_token_invalid", rule: "logout token iss:", connection: true},
		{name: "expired", body: func() string {
			return form(token(with(func(o *demoidp.LogoutTokenOptions) { o.TTL = -5 * time.Minute })))
		},
			status: 400, event: "flo", code: "logout_token_invalid", rule: "logout token exp:", connection: true},
		{name: "signed by a key the upstream does not publish", body: func() string {
			return form(token(with(func(o *demoidp.LogoutTokenOptions) { o.ForeignKey = true })))
		}, status: 400, event: "flo", code: "logout_token_invalid", rule: "logout token signature:", connection: true},
		{name: "typ at+jwt", body: func() string { return form(token(with(func(o *demoidp.LogoutTokenOptions) { o.Type = "at+jwt" }))) },
			status: 400, event: "flo", code: "logout_token_invalid", rule: "logout token typ:", connection: true},
		{name: "neither sid nor sub", body: func() string { return form(token(demoidp.LogoutTokenOptions{})) },
			status: 400, event: "flo", code: "logout_token_invalid", rule: "logout token sid/sub:", connection: true},
		{name: "unknown connection id", url: h.srv.URL + "/logout/backchannel/con_doesnotexist", body: func() string { return form(token(valid)) },
			status: 400, event: "flo", code: codeUnknownConnection, rule: "no connection"},
		{name: "GET instead of POST", method: http.MethodGet, body: func() string { return "" },
			status: 405, event: "flo", code: codeInvalidRequest, rule: "POST", connection: false},
		{name: "body larger than 16 KB", body: func() string { return form(token(valid)) + "&pad=" + strings.Repeat("a", 17<<10) },
			status: 400, event: "flo", code: codeInvalidRequest, rule: "larger than", connection: true},
		{name: "JSON instead of a form", contentType: "application/json", body: func() string { return `{"logout_token":"` + token(valid) + `"}` },
			status: 400, event: "flo", code: codeInvalidRequest, rule: "x-www-form-urlencoded", connection: true},
		{name: "no logout_token", body: func() string { return "token=" + token(valid) },
			status: 400, event: "flo", code: codeInvalidRequest, rule: "exactly one logout_token", connection: true},
		{name: "two logout_tokens", body: func() string { return form(token(valid)) + "&" + form(token(valid)) },
			status: 400, event: "flo", code: codeInvalidRequest, rule: "exactly one logout_token", connection: true},
		{name: "valid token naming no session: 200, nothing ended", body: func() string {
			return form(token(demoidp.LogoutTokenOptions{SID: "no-such-session", Subject: "alice"}))
		}, status: 200, event: "slo", connection: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.before != nil {
				tc.before()
			}
			method, target, ct := tc.method, tc.url, tc.contentType
			if method == "" {
				method = http.MethodPost
			}
			if target == "" {
				target = corp
			}
			if ct == "" {
				ct = formType
			}
			req, _ := http.NewRequest(method, target, strings.NewReader(tc.body()))
			req.Header.Set("Content-Type", ct)
			res := h.do(req)
			if res.status != tc.status || res.header.Get("Cache-Control") != "no-store" {
				t.Fatalf("answer %d (Cache-Control %q) %v, want %d no-store", res.status, res.header.Get("Cache-Control"), res.body, tc.status)
			}
			if tc.status == http.StatusMethodNotAllowed && res.header.Get("Allow") != http.MethodPost {
				t.Errorf("Allow %q, want POST", res.header.Get("Allow"))
			}
			if tc.status != http.StatusOK && (res.str("error") != "invalid_request" || res.str("error_description") == "") {
				t.Errorf("body %v, want invalid_request with a description (§2.8)", res.body)
			}
			ev := h.lastEvent()
			desc, _ := ev.Details["error_description"].(string)
			if ev.Type != tc.event || ev.Details["reason"] != reasonUpstreamLogout || tc.code != "" && ev.Details["error"] != tc.code || !strings.Contains(desc, tc.rule) {
				t.Errorf("event %s %v, want %s with error %q naming %q", ev.Type, ev.Details, tc.event, tc.code, tc.rule)
			}
			if (ev.Connection == "corp") != tc.connection {
				t.Errorf("event connection %q, want corp: %t", ev.Connection, tc.connection)
			}
			if tc.event == "slo" && (fmt.Sprint(ev.Details["sessions_ended"]) != "0" || ev.Details["session_id"] != nil) {
				t.Errorf("slo %v: want sessions_ended 0 and no session", ev.Details)
			}
			if !h.alive(si) {
				t.Fatal("the session ended")
			}
		})
	}
}

// failingSessions is a store whose session takes fail while fail is set (the store is down
// after the logout token's jti was recorded).
type failingSessions struct {
	sessions.Store
	fail atomic.Bool
}

func (s *failingSessions) Take(ctx context.Context, kind sessions.Kind, id string) ([]byte, error) {
	if kind == sessions.KindSession && s.fail.Load() {
		return nil, fmt.Errorf("dial: %w", sessions.ErrUnavailable)
	}
	return s.Store.Take(ctx, kind, id)
}

// TestUpstreamLogoutFailsClosedWhenStoreIsDown: when the store cannot record the token's jti,
// or cannot end the sessions, the answer is 503 with an flo event (store_unavailable) so that
// the upstream may retry; the retry of the same token then ends the session (the jti of the
// failed attempt is forgotten).
func TestUpstreamLogoutFailsClosedWhenStoreIsDown(t *testing.T) {
	t.Run("jti cannot be recorded", func(t *testing.T) {
		h := newHarness(t, harnessOpts{up: dpopUp, store: jtiDown{Store: sessions.NewMemory()}})
		si := h.signInUpstream()
		res := h.upstreamLogout(demoidp.LogoutTokenOptions{SID: si.upstreamSID})
		if res.status != http.StatusServiceUnavailable || res.str("error") != "temporarily_unavailable" {
			t.Fatalf("answer %d %v, want 503 temporarily_unavailable", res.status, res.body)
		}
		wantFailOf(t, h, logs.TypeFailedLogout, codeStoreUnavailable)
		if !h.alive(si) {
			t.Error("the session ended")
		}
	})
	t.Run("sessions cannot be ended, then the retry ends them", func(t *testing.T) {
		st := &failingSessions{Store: sessions.NewMemory()}
		h := newHarness(t, harnessOpts{up: dpopUp, store: st})
		si := h.signInUpstream()
		tok := demoidp.LogoutTokenOptions{SID: si.upstreamSID, JTI: "retried"}
		st.fail.Store(true)
		if res := h.upstreamLogout(tok); res.status != http.StatusServiceUnavailable {
			t.Fatalf("answer with the store down: %d %v, want 503", res.status, res.body)
		}
		wantFailOf(t, h, logs.TypeFailedLogout, codeStoreUnavailable)
		st.fail.Store(false)
		if res := h.upstreamLogout(tok); res.status != http.StatusOK {
			t.Fatalf("retry: %d %v, want 200", res.status, res.body)
		}
		h.wantEnded(t, si)
	})
}

// TestUpstreamLogoutIsRateLimitedPerIP: the back-channel logout URI shares the per-IP bucket
// of the logout endpoints (rate_limits.logout): anyone can send requests to it before the
// token is checked. Forged tokens it lets through cost the upstream no JWK Set requests
// beyond the one that fetched the keys.
func TestUpstreamLogoutIsRateLimitedPerIP(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp, mutate: func(c *config.Config) {
		c.RateLimits.Enabled = true
		c.RateLimits.Logout.PerIP = config.RateLimit{Rate: "1/m", Burst: 5}
	}})
	var statuses []int
	for i := range 7 {
		res := h.upstreamLogout(demoidp.LogoutTokenOptions{SID: "s", KeyID: fmt.Sprintf("made-up-%d", i)})
		statuses = append(statuses, res.status)
	}
	// The first made-up kid fetches the JWK Set and is refused (400); the next ones, within
	// the minute in which the set is not fetched again, cannot be checked yet (503).
	if want := []int{400, 503, 503, 503, 503, 429, 429}; !slices.Equal(statuses, want) {
		t.Fatalf("statuses %v, want %v", statuses, want)
	}
	if ev := h.lastEvent(); ev.Type != logs.TypeFailedLogout || ev.Details["error"] != codeTooManyRequests {
		t.Errorf("event %s %v, want flo too_many_requests", ev.Type, ev.Details)
	}
	if n := h.up.Stats.JWKSRequests.Load(); n != 1 {
		t.Errorf("JWK Set requests for 5 forged tokens = %d, want 1", n)
	}
}

// TestUpstreamLogoutOfAnUnknownKidWhileTheRefetchWaitsIsRetryable: a logout token naming a
// kid the broker does not hold, within the minute after the upstream's JWK Set was fetched
// (here for a forged token with a made-up kid), may be a genuine token of a rotated key: it is
// answered 503 temporarily_unavailable with Retry-After (the seconds until the set may be
// fetched again) and an flo event, never 400; once that time has passed the set is fetched
// again and the answer is final. Meanwhile a token of a known key is accepted.
func TestUpstreamLogoutOfAnUnknownKidWhileTheRefetchWaitsIsRetryable(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp, upstreamOnClock: true})
	if res := h.upstreamLogout(demoidp.LogoutTokenOptions{SID: "s", KeyID: "made-up"}); res.status != http.StatusBadRequest {
		t.Fatalf("the forged token that fetched the set: %d %v, want 400", res.status, res.body)
	}
	h.clock.Advance(15 * time.Second)
	res := h.upstreamLogout(demoidp.LogoutTokenOptions{SID: "s", KeyID: "rotated"})
	retry, err := strconv.Atoi(res.header.Get("Retry-After"))
	if res.status != http.StatusServiceUnavailable || res.str("error") != "temporarily_unavailable" || err != nil || retry < 30 || retry > 45 {
		t.Fatalf("unknown kid 15 s after the fetch: %d Retry-After %q %v, want 503 temporarily_unavailable, Retry-After 45",
			res.status, res.header.Get("Retry-After"), res.body)
	}
	if ev := h.lastEvent(); ev.Type != logs.TypeFailedLogout || ev.Details["error"] != upstream.CodeJWKSRefetchThrottled {
		t.Errorf("event %s %v, want flo %s", ev.Type, ev.Details, upstream.CodeJWKSRefetchThrottled)
	}
	if res := h.upstreamLogout(demoidp.LogoutTokenOptions{SID: "no-such-session"}); res.status != http.StatusOK {
		t.Errorf("a token of the known key meanwhile: %d %v, want 200", res.status, res.body)
	}
	h.clock.Advance(time.Duration(retry) * time.Second)
	if res := h.upstreamLogout(demoidp.LogoutTokenOptions{SID: "s", KeyID: "rotated"}); res.status != http.StatusBadRequest || res.header.Get("Retry-After") != "" {
		t.Errorf("unknown kid after the Retry-After: %d Retry-After %q, want 400 (the set was fetched again)", res.status, res.header.Get("Retry-After"))
	}
	if n := h.up.Stats.JWKSRequests.Load(); n != 2 {
		t.Errorf("JWK Set requests = %d, want 2", n)
	}
}

// TestUpstreamLogoutRefusesTokensOutlivingTheJTIMemory: a logout token's jti is remembered
// for at most 24 hours, so a token whose exp is further ahead (which could be replayed after
// that) is refused with logout_token_invalid naming the exp rule, however far ahead (a far
// exp once overflowed the jti's lifetime to a second); a short-lived one is accepted and its
// replay refused.
func TestUpstreamLogoutRefusesTokensOutlivingTheJTIMemory(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp})
	for _, tc := range []struct {
		name   string
		opts   demoidp.LogoutTokenOptions
		status int // of the first request; a 200 is replayed, which must be refused
	}{
		{name: "exp 300 years ahead", opts: demoidp.LogoutTokenOptions{SID: "s", Extra: map[string]any{"exp": time.Now().AddDate(300, 0, 0).Unix()}},
			status: http.StatusBadRequest},
		{name: "exp 25 hours ahead", opts: demoidp.LogoutTokenOptions{SID: "s", TTL: 25 * time.Hour}, status: http.StatusBadRequest},
		{name: "exp 2 minutes ahead, then replayed", opts: demoidp.LogoutTokenOptions{SID: "s", TTL: 2 * time.Minute}, status: http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.JTI = rand.Text()
			res := h.upstreamLogout(tc.opts)
			if res.status != tc.status {
				t.Fatalf("answer %d %v, want %d", res.status, res.body, tc.status)
			}
			wantCode, wantRule := upstream.CodeLogoutTokenInvalid, "logout token exp: exp"
			if tc.status == http.StatusOK {
				res = h.upstreamLogout(tc.opts)
				wantCode, wantRule = codeLogoutTokenReplayed, "replayed"
			}
			ev := h.lastEvent()
			desc, _ := ev.Details["error_description"].(string)
			if res.status != http.StatusBadRequest || ev.Type != logs.TypeFailedLogout || ev.Details["error"] != wantCode || !strings.Contains(desc, wantRule) {
				t.Errorf("answer %d, event %s %v: want 400 and flo %s naming %q", res.status, ev.Type, ev.Details, wantCode, wantRule)
			}
		})
	}
}

// TestUpstreamLogoutRefusalNamesTheRuleWithoutTheConfiguration: the sender of a back-channel
// logout request is not authenticated, so a refusal's error_description names the rule
// broken but not the configured upstream issuer or client_id; the event keeps the full
// detail.
func TestUpstreamLogoutRefusalNamesTheRuleWithoutTheConfiguration(t *testing.T) {
	const clientID = "corp-client-7f3a9"
	h := newHarness(t, harnessOpts{up: demoidp.Options{ClientID: clientID, ClientSecret: upSecret}, mutate: func(c *config.Config) {
		c.Connections[0].Options.ClientID = clientID
	}})
	for _, tc := range []struct {
		name       string
		opts       demoidp.LogoutTokenOptions
		rule       string // the answer's error_description starts with it
		configured string // what the event names and the answer must not
	}{
		{name: "iss is another issuer", opts: demoidp.LogoutTokenOptions{SID: "s", Issuer: "https://evil.example"},
			rule: "logout token iss: iss is not the upstream's issuer", configured: h.up.URL},
		{name: "aud is another client", opts: demoidp.LogoutTokenOptions{SID: "s", Audience: "another"},
			rule: "logout token aud: aud does not name the connection's client_id", configured: clientID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := h.up.BackchannelLogout(h.backchannelURL("corp"), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			var answer map[string]string
			if err := json.Unmarshal(body, &answer); err != nil || resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("answer %d %s (%v), want 400 JSON", resp.StatusCode, body, err)
			}
			if !strings.HasPrefix(answer["error_description"], tc.rule) || strings.Contains(string(body), tc.configured) {
				t.Errorf("answer %s: want the rule %q and not the configured %s", body, tc.rule, tc.configured)
			}
			ev := h.lastEvent()
			if desc, _ := ev.Details["error_description"].(string); ev.Type != logs.TypeFailedLogout || !strings.Contains(desc, tc.configured) {
				t.Errorf("event %s %v, want flo whose description names %s", ev.Type, ev.Details, tc.configured)
			}
		})
	}
}

// TestRegistrationURLsAreWhereTheBrokerListens: the redirect URI and back-channel logout URI
// `broker serve` logs for a connection are the ones its logins send upstream and its
// back-channel logout handler answers at, for the shared and the dedicated callback path.
func TestRegistrationURLsAreWhereTheBrokerListens(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp, mutate: func(c *config.Config) {
		c.Connections[1].Options.CallbackPath = config.CallbackDedicated
	}})
	for _, tc := range []struct {
		name         string
		conn         *config.Connection
		wantRedirect string
	}{
		{name: "shared callback path", conn: &h.cfg.Connections[0], wantRedirect: h.srv.URL + "/login/callback"},
		{name: "dedicated callback path", conn: &h.cfg.Connections[1], wantRedirect: h.srv.URL + "/login/callback/" + h.cfg.Connections[1].ConnectionID()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			redirect, bcl := h.broker.RegistrationURLs(tc.conn)
			if redirect != tc.wantRedirect {
				t.Errorf("redirect_uri %s, want %s", redirect, tc.wantRedirect)
			}
			if want := h.srv.URL + "/logout/backchannel/" + tc.conn.ConnectionID(); bcl != want {
				t.Errorf("backchannel_logout_uri %s, want %s", bcl, want)
			}
			resp, err := http.PostForm(bcl, url.Values{"logout_token": {"x.y.z"}})
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if ev := h.lastEvent(); resp.StatusCode != http.StatusBadRequest || ev.Connection != tc.conn.Name {
				t.Errorf("POST %s: %d, event of connection %q: want the handler of %s", bcl, resp.StatusCode, ev.Connection, tc.conn.Name)
			}
		})
	}
}
