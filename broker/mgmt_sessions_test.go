package broker

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// Management tokens of the session routes' tests (withSessionTokens).
var (
	tokSessions     = strings.Repeat("s", 40) // read:sessions delete:sessions
	tokSessionsRead = strings.Repeat("v", 40) // read:sessions
)

// withSessionTokens is withMgmt plus a session administrator and a session reader.
func withSessionTokens(c *config.Config) {
	withMgmt(c)
	c.Management.Tokens = append(c.Management.Tokens,
		config.ManagementToken{Name: "sessions-admin", Token: tokSessions, Scopes: []string{config.ScopeReadSessions, config.ScopeDeleteSessions}},
		config.ManagementToken{Name: "sessions-reader", Token: tokSessionsRead, Scopes: []string{config.ScopeReadSessions}},
	)
}

// signedIn is one browser's login: its session id and the app's tokens.
type signedIn struct {
	browser *http.Client
	sid     string
	sub     string
	refresh string
	access  string
}

// signIn logs the confidential app in (offline_access) in a new browser and redeems its code.
func (h *harness) signIn() signedIn {
	h.t.Helper()
	b := h.browser()
	claims, res := h.idTokenOf(appClient, h.codeIn(b, appClient, func(q url.Values) { q.Set("scope", "openid profile email offline_access") }))
	sid, _ := claims["sid"].(string)
	sub, _ := claims["sub"].(string)
	if sid == "" || sub == "" || res.str("refresh_token") == "" {
		h.t.Fatalf("login without sid, sub or refresh token: %v %v", claims, res.body)
	}
	return signedIn{browser: b, sid: sid, sub: sub, refresh: res.str("refresh_token"), access: res.str("access_token")}
}

// storedSession reads the session record sid from the store (nil when absent).
func (h *harness) storedSession(sid string) *sessionRecord {
	h.t.Helper()
	raw, err := h.store.Get(context.Background(), sessions.KindSession, sid+".s")
	if err != nil {
		return nil
	}
	var rec sessionRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		h.t.Fatal(err)
	}
	return &rec
}

// userSessionsPath is the list route of userID (escaped: user ids hold '|').
func userSessionsPath(userID string) string {
	return "/api/v2/users/" + url.PathEscape(userID) + "/sessions"
}

// sessionIDs returns the ids of a list answer's sessions.
func sessionIDs(t *testing.T, r apiResp) []string {
	t.Helper()
	list, ok := r.obj()["sessions"].([]any)
	if r.status != http.StatusOK || !ok {
		t.Fatalf("list: %d %s, want 200 with sessions", r.status, r.raw)
	}
	var ids []string
	for _, s := range list {
		ids = append(ids, s.(map[string]any)["id"].(string))
	}
	return ids
}

// eventOf returns the newest of the recent events of type typ that match.
func (h *harness) eventOf(typ string, match func(logs.Event) bool) logs.Event {
	h.t.Helper()
	for _, ev := range h.recentEvents(50) {
		if ev.Type == typ && (match == nil || match(ev)) {
			return ev
		}
	}
	h.t.Fatalf("no matching %s event", typ)
	return logs.Event{}
}

var apiDate = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)

// backchannelSIDs polls (generously) until app has received n logout tokens and returns their
// sids, in arrival order.
func backchannelSIDs(t *testing.T, a *logoutApp, n int) []any {
	t.Helper()
	for range 3000 {
		if rs := a.receipts(); len(rs) >= n {
			var sids []any
			for _, r := range rs {
				if r.problem != "" {
					t.Fatalf("the app received an invalid logout token: %s", r.problem)
				}
				sids = append(sids, r.claims["sid"])
			}
			return sids
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the app received %d logout tokens, want %d", len(a.receipts()), n)
	return nil
}

// TestMgmtSessionsListGetAndDeleteEndSessionsForTheirApps: after two browsers of one user
// signed in, the user's list holds both sessions; a session object has the SaaS's fields from
// the record and nothing secret; DELETE of one ends it for its apps (back-channel logout,
// refresh token and userinfo stop, slo and sapi recorded) and leaves the other; DELETE of the
// user's sessions ends the rest.
func TestMgmtSessionsListGetAndDeleteEndSessionsForTheirApps(t *testing.T) {
	forStores(t, func(t *testing.T, store func() sessions.Store) {
		bcl := newLogoutApp(t, appClient)
		h := newHarness(t, harnessOpts{up: dpopUp, store: store(), mutate: func(c *config.Config) {
			withSessionTokens(c)
			c.Clients[0].BackchannelLogoutURI = bcl.uri()
		}})
		bcl.mu.Lock()
		bcl.issuer = h.cfg.Issuer
		bcl.mu.Unlock()
		one, two := h.signIn(), h.signIn()
		h.codeIn(one.browser, spaClient, func(q url.Values) { q.Del("connection") }) // a second app in browser one
		if one.sub != two.sub || one.sid == two.sid {
			t.Fatalf("want one user with two sessions: %+v %+v", one, two)
		}
		userID := one.sub
		base := h.srv.URL

		ids := sessionIDs(t, api(t, base, "GET", userSessionsPath(userID), tokSessionsRead, nil))
		if len(ids) != 2 || !slices.Contains(ids, one.sid) || !slices.Contains(ids, two.sid) {
			t.Fatalf("list %v, want %s and %s", ids, one.sid, two.sid)
		}

		t.Run("the session object has the record's facts and no secret", func(t *testing.T) {
			r := api(t, base, "GET", "/api/v2/sessions/"+one.sid, tokSessionsRead, nil)
			obj := r.obj()
			if r.status != http.StatusOK || obj == nil {
				t.Fatalf("get: %d %s", r.status, r.raw)
			}
			rec := h.storedSession(one.sid)
			idle := rec.Seen + int64(h.cfg.SessionIdle().Seconds())
			want := map[string]any{
				"id": one.sid, "user_id": userID, "connection": "corp",
				"created_at": apiTime(rec.Created), "updated_at": apiTime(rec.Seen), "last_interacted_at": apiTime(rec.Seen),
				"authenticated_at": apiTime(rec.AuthTime), "expires_at": apiTime(rec.Expires),
				"idle_expires_at": apiTime(min(idle, rec.Expires)),
			}
			for k, v := range want {
				if obj[k] != v {
					t.Errorf("%s = %v, want %v", k, obj[k], v)
				}
				if s, ok := v.(string); ok && strings.HasSuffix(k, "_at") && !apiDate.MatchString(s) {
					t.Errorf("%s = %q, want RFC 3339 UTC with milliseconds", k, s)
				}
			}
			var clients []string
			for _, c := range obj["clients"].([]any) {
				clients = append(clients, c.(map[string]any)["client_id"].(string))
			}
			if !slices.Equal(clients, []string{appClient, spaClient}) {
				t.Errorf("clients %v, want [%s %s]", clients, appClient, spaClient)
			}
			methods, _ := obj["authentication"].(map[string]any)["methods"].([]any)
			if len(methods) != 1 || methods[0].(map[string]any)["name"] != "federated" || methods[0].(map[string]any)["timestamp"] != apiTime(rec.AuthTime) {
				t.Errorf("authentication %v, want one federated method at the upstream login's time", obj["authentication"])
			}
			if obj["cookie"].(map[string]any)["mode"] != "persistent" {
				t.Errorf("cookie %v, want mode persistent", obj["cookie"])
			}
			allowed := []string{"id", "user_id", "connection", "created_at", "updated_at", "last_interacted_at", "authenticated_at",
				"expires_at", "idle_expires_at", "device", "clients", "authentication", "cookie"}
			for k := range obj {
				if !slices.Contains(allowed, k) {
					t.Errorf("unexpected member %q in %s", k, r.raw)
				}
			}
			for name, secret := range map[string]string{"cookie hash": rec.CookieHash, "upstream ID token": rec.UpstreamIDToken, "email claim": "alice@example.com"} {
				if secret == "" || strings.Contains(r.raw, secret) {
					t.Errorf("the session object carries the %s (or the record lacks it): %s", name, r.raw)
				}
			}
		})

		t.Run("DELETE ends one session for its apps and leaves the other", func(t *testing.T) {
			r := api(t, base, "DELETE", "/api/v2/sessions/"+one.sid, tokSessions, nil)
			if r.status != http.StatusNoContent || r.raw != "" {
				t.Fatalf("delete: %d %q, want 204 without a body", r.status, r.raw)
			}
			if sids := backchannelSIDs(t, bcl, 1); !slices.Equal(sids, []any{one.sid}) {
				t.Errorf("back-channel logouts for sids %v, want [%s]", sids, one.sid)
			}
			if res := h.tok(tokReq{client: appClient, form: refreshGrant(one.refresh)}); res.status != http.StatusBadRequest || res.str("error") != "invalid_grant" {
				t.Errorf("refresh of the deleted session: %d %v, want invalid_grant", res.status, res.body)
			}
			if res := h.userinfo("Bearer "+one.access, ""); res.status != http.StatusUnauthorized {
				t.Errorf("userinfo of the deleted session: %d, want 401", res.status)
			}
			res := h.tok(tokReq{client: appClient, form: refreshGrant(two.refresh)})
			if res.status != http.StatusOK {
				t.Fatalf("refresh of the other session: %d %v, want 200", res.status, res.body)
			}
			two.refresh = res.str("refresh_token")
			wantAPIError(t, api(t, base, "GET", "/api/v2/sessions/"+one.sid, tokSessionsRead, nil), http.StatusNotFound, "inexistent_session", "does not exist")
			if ids := sessionIDs(t, api(t, base, "GET", userSessionsPath(userID), tokSessionsRead, nil)); !slices.Equal(ids, []string{two.sid}) {
				t.Errorf("list after delete %v, want [%s]", ids, two.sid)
			}
			slo := h.eventOf(logs.TypeSuccessLogout, nil)
			if slo.UserID != userID || slo.Details["reason"] != reasonAdminDeleted {
				t.Errorf("slo %+v, want the user's with reason %q", slo, reasonAdminDeleted)
			}
			sapi := h.eventOf(logs.TypeSuccessAPI, func(ev logs.Event) bool { return ev.Details["session_id"] == one.sid })
			req, _ := sapi.Details["request"].(map[string]any)
			if sapi.UserID != userID || sapi.Connection != "corp" || req["method"] != "DELETE" ||
				req["auth"].(map[string]any)["user"] != "sessions-admin" || sapi.Details["response"].(map[string]any)["statusCode"] != float64(204) {
				t.Errorf("sapi %+v, want the DELETE of %s by sessions-admin answered 204", sapi, one.sid)
			}
		})

		t.Run("DELETE of the user's sessions ends every one", func(t *testing.T) {
			r := api(t, base, "DELETE", userSessionsPath(userID), tokSessions, nil)
			if r.status != http.StatusAccepted || r.raw != "" {
				t.Fatalf("delete all: %d %q, want 202 without a body", r.status, r.raw)
			}
			if sids := backchannelSIDs(t, bcl, 2); !slices.Equal(sids, []any{one.sid, two.sid}) {
				t.Errorf("back-channel logouts for sids %v, want [%s %s]", sids, one.sid, two.sid)
			}
			if res := h.tok(tokReq{client: appClient, form: refreshGrant(two.refresh)}); res.status != http.StatusBadRequest {
				t.Errorf("refresh after the user's sessions were deleted: %d %v, want invalid_grant", res.status, res.body)
			}
			if status, loc := h.authorizeStep(two.browser, appClient, nil); status != http.StatusFound || !strings.HasPrefix(loc, h.up.URL) {
				t.Errorf("after delete /authorize answered %d %s, want the upstream", status, loc)
			}
			if ids := sessionIDs(t, api(t, base, "GET", userSessionsPath(userID), tokSessionsRead, nil)); len(ids) != 0 {
				t.Errorf("list after deleting all: %v, want none", ids)
			}
			sapi := h.eventOf(logs.TypeSuccessAPI, func(ev logs.Event) bool { return ev.Details["sessions_ended"] != nil })
			if sapi.UserID != userID || sapi.Details["sessions_ended"] != float64(1) || sapi.Details["response"].(map[string]any)["statusCode"] != float64(202) {
				t.Errorf("sapi %+v, want the user's with sessions_ended 1 and 202", sapi)
			}
			again := api(t, base, "DELETE", userSessionsPath(userID), tokSessions, nil)
			if again.status != http.StatusAccepted {
				t.Errorf("delete all of a user without sessions: %d %s, want 202", again.status, again.raw)
			}
		})
	})
}

// TestMgmtUserSessionsPagingSurvivesEndedSessions: from/take page through a user's sessions
// oldest first, next absent on the last page; a cursor whose session has ended meanwhile
// still continues after it.
func TestMgmtUserSessionsPagingSurvivesEndedSessions(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp, upstreamOnClock: true, mutate: withSessionTokens})
	var sids []string
	var userID string
	for range 3 {
		in := h.signIn()
		sids, userID = append(sids, in.sid), in.sub
		h.clock.Advance(2 * time.Second) // distinct created_at
	}
	base, path := h.srv.URL, userSessionsPath(userID)
	first := api(t, base, "GET", path+"?take=2", tokSessionsRead, nil)
	if ids := sessionIDs(t, first); !slices.Equal(ids, sids[:2]) {
		t.Fatalf("first page %v, want the two oldest %v", ids, sids[:2])
	}
	next, _ := first.obj()["next"].(string)
	if next == "" {
		t.Fatalf("first page without next: %s", first.raw)
	}
	if r := api(t, base, "DELETE", "/api/v2/sessions/"+sids[1], tokSessions, nil); r.status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.status, r.raw)
	}
	second := api(t, base, "GET", path+"?take=2&from="+url.QueryEscape(next), tokSessionsRead, nil)
	if ids := sessionIDs(t, second); !slices.Equal(ids, sids[2:]) {
		t.Fatalf("second page %v, want %v", ids, sids[2:])
	}
	if _, has := second.obj()["next"]; has {
		t.Errorf("last page has next: %s", second.raw)
	}
	if ids := sessionIDs(t, api(t, base, "GET", path, tokSessionsRead, nil)); !slices.Equal(ids, []string{sids[0], sids[2]}) {
		t.Errorf("default page %v, want %v", ids, []string{sids[0], sids[2]})
	}
}

// TestMgmtSessionRoutesRefuseBadCalls: the session routes need their scopes (403 naming
// them) and refuse malformed ids, user ids and paging parameters with the SaaS error body;
// an unknown session is 404. Each refusal is a fapi event with its errorCode.
func TestMgmtSessionRoutesRefuseBadCalls(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp, mutate: withSessionTokens})
	const unknown = "AAAAAAAAAAAAAAAAAAAAAA"
	user := userSessionsPath("oidc|corp|alice")
	for _, tc := range []struct {
		name, method, path, token string
		status                    int
		code, msg                 string
	}{
		{name: "GET without a token is 401", method: "GET", path: "/api/v2/sessions/" + unknown, status: 401, code: "missing_authorization"},
		{name: "GET needs read:sessions", method: "GET", path: "/api/v2/sessions/" + unknown, token: tokAll, status: 403, code: "insufficient_scope", msg: "expected any of: read:sessions"},
		{name: "DELETE needs delete:sessions", method: "DELETE", path: "/api/v2/sessions/" + unknown, token: tokSessionsRead, status: 403, code: "insufficient_scope", msg: "expected any of: delete:sessions"},
		{name: "list needs read:sessions", method: "GET", path: user, token: tokRead, status: 403, code: "insufficient_scope", msg: "read:sessions"},
		{name: "DELETE of a user's sessions needs delete:sessions", method: "DELETE", path: user, token: tokSessionsRead, status: 403, code: "insufficient_scope", msg: "delete:sessions"},
		{name: "unknown session is 404", method: "GET", path: "/api/v2/sessions/" + unknown, token: tokSessions, status: 404, code: "inexistent_session", msg: "does not exist"},
		{name: "DELETE of an unknown session is 404", method: "DELETE", path: "/api/v2/sessions/" + unknown, token: tokSessions, status: 404, code: "inexistent_session", msg: "does not exist"},
		{name: "short id is 400", method: "GET", path: "/api/v2/sessions/abc", token: tokSessions, status: 400, code: "invalid_uri", msg: "22 base64url characters"},
		{name: "23-character id is 400", method: "GET", path: "/api/v2/sessions/" + unknown + "A", token: tokSessions, status: 400, code: "invalid_uri", msg: "session id"},
		{name: "id with a dot is 400", method: "DELETE", path: "/api/v2/sessions/AAAAAAAAAAAAAAAAAAAAA.", token: tokSessions, status: 400, code: "invalid_uri", msg: "session id"},
		{name: "id with a hash tag brace is 400", method: "GET", path: "/api/v2/sessions/AAAAAAAAAAAAAAAAAAAAA%7B", token: tokSessions, status: 400, code: "invalid_uri", msg: "session id"},
		{name: "overlong user_id is 400", method: "GET", path: userSessionsPath("oidc|corp|" + strings.Repeat("x", maxAPIUserID)), token: tokSessions, status: 400, code: "invalid_uri", msg: "user_id"},
		{name: "user_id with a control character is 400", method: "DELETE", path: "/api/v2/users/oidc%7Ccorp%7Ca%0Ab/sessions", token: tokSessions, status: 400, code: "invalid_uri", msg: "user_id"},
		{name: "user_id not UTF-8 is 400", method: "GET", path: "/api/v2/users/oidc%7Ccorp%7C%FF/sessions", token: tokSessions, status: 400, code: "invalid_uri", msg: "user_id"},
		{name: "from not a cursor is 400", method: "GET", path: user + "?from=not-a-cursor", token: tokSessions, status: 400, code: "invalid_query_string", msg: "from is not a cursor"},
		{name: "from naming no session id is 400", method: "GET", path: user + "?from=" + "MTIzLmFiYw", token: tokSessions, status: 400, code: "invalid_query_string", msg: "from is not a cursor"},
		{name: "take 0 is 400", method: "GET", path: user + "?take=0", token: tokSessions, status: 400, code: "invalid_query_string", msg: "take must be an integer from 1 to 100"},
		{name: "take 101 is 400", method: "GET", path: user + "?take=101", token: tokSessions, status: 400, code: "invalid_query_string", msg: "take"},
		{name: "POST to a session is the API's 404", method: "POST", path: "/api/v2/sessions/" + unknown, token: tokSessions, status: 404, code: "not_found", msg: "Not Found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantAPIError(t, api(t, h.srv.URL, tc.method, tc.path, tc.token, nil), tc.status, tc.code, tc.msg)
			ev := h.lastEvent()
			e, _ := ev.Details["error"].(map[string]any)
			if ev.Type != logs.TypeFailedAPI || e["errorCode"] != tc.code || ev.Details["response"].(map[string]any)["statusCode"] != float64(tc.status) {
				t.Errorf("event %s %v, want fapi with errorCode %s and status %d", ev.Type, ev.Details, tc.code, tc.status)
			}
		})
	}
}

// TestMgmtSessionRoutesAreRateLimitedPerToken: the session routes spend the management
// token's bucket like every management route (429 with the SaaS body once it is empty).
func TestMgmtSessionRoutesAreRateLimitedPerToken(t *testing.T) {
	h := newHarness(t, harnessOpts{up: optionalDPoPUp, mutate: func(c *config.Config) {
		withSessionTokens(c)
		c.TrustedProxies = []string{"127.0.0.0/8"}
		c.RateLimits = config.RateLimits{Enabled: true, MaxKeys: 1000, Management: config.ManagementRateLimits{
			PerIP: config.RateLimit{Rate: "1/h", Burst: 100}, PerToken: config.RateLimit{Rate: "1/h", Burst: 2},
		}}
	}})
	const ip = "198.51.100.30"
	user := userSessionsPath("oidc|corp|alice")
	if r := apiFrom(t, h, ip, "GET", user, tokSessions, nil); r.status != http.StatusOK {
		t.Fatalf("list: %d %s", r.status, r.raw)
	}
	if r := apiFrom(t, h, ip, "DELETE", user, tokSessions, nil); r.status != http.StatusAccepted {
		t.Fatalf("delete all: %d %s", r.status, r.raw)
	}
	wantAPI429(t, apiFrom(t, h, ip, "DELETE", "/api/v2/sessions/AAAAAAAAAAAAAAAAAAAAAA", tokSessions, nil), 3600)
	if r := apiFrom(t, h, ip, "GET", user, tokSessionsRead, nil); r.status != http.StatusOK {
		t.Errorf("another token after the first was limited: %d %s, want 200", r.status, r.raw)
	}
}

// TestSessionObjectShowsTheBrowsersThatCreatedAndLastUsedIt: the login records its browser
// as the session's initial device and noteDevice (a later single sign-on) the latest as its
// last; the session object shows both, and none when nothing is known.
func TestSessionObjectShowsTheBrowsersThatCreatedAndLastUsedIt(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp, mutate: withSessionTokens})
	in := h.signIn()
	for _, tc := range []struct {
		name string
		ip   string
		ua   string
	}{{"a single sign-on", "192.0.2.10:4000", "Browser/1"}, {"a later single sign-on", "192.0.2.11:4000", "Browser/2 " + strings.Repeat("x", 600)}} {
		raw, err := h.store.Get(context.Background(), sessions.KindSession, in.sid+".s")
		if err != nil {
			t.Fatal(err)
		}
		var rec sessionRecord
		_ = json.Unmarshal(raw, &rec)
		r := httptest.NewRequest("GET", "/authorize", nil)
		r.RemoteAddr, r.Header["User-Agent"] = tc.ip, []string{tc.ua}
		h.broker.noteDevice(&rec, r)
		updated, _ := json.Marshal(rec)
		if err := h.store.Swap(context.Background(), sessions.KindSession, in.sid+".s", raw,
			[]sessions.Item{{Kind: sessions.KindSession, ID: in.sid + ".s", Value: updated, TTL: h.cfg.SessionIdle()}}, nil); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
	}
	r := api(t, h.srv.URL, "GET", "/api/v2/sessions/"+in.sid, tokSessionsRead, nil)
	dev, _ := r.obj()["device"].(map[string]any)
	if dev["initial_ip"] != "127.0.0.1" || dev["initial_user_agent"] != "Go-http-client/1.1" || dev["last_ip"] != "192.0.2.11" {
		t.Fatalf("device %v, want the first browser as initial and the second as last", dev)
	}
	if ua, _ := dev["last_user_agent"].(string); !strings.HasPrefix(ua, "Browser/2") || len(ua) > maxDeviceUserAgent+len("…") {
		t.Errorf("last_user_agent of %d bytes, want the second browser's clipped to %d (and a cut mark)", len(ua), maxDeviceUserAgent)
	}
	if v := h.broker.sessionView(in.sid, &sessionRecord{UserID: "u"}); v.Device != nil || len(v.Clients) != 0 || v.CreatedAt != "" {
		t.Errorf("view of a record without facts %+v: want no device, clients or times", v)
	}
}
