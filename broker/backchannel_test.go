package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// logoutApp is an app's back-channel logout endpoint on 127.0.0.1. It checks every request as
// a relying party must (OpenID Connect Back-Channel Logout 1.0 §2.5, §2.6): a form POST with
// one logout_token, a JWS that verifies with a key of the broker's JWKS (fetched over HTTP),
// typ logout+jwt, and the claims of §2.4. Then it answers from its script.
type logoutApp struct {
	clientID string
	srv      *httptest.Server
	// script are the statuses of the successive requests; past its end, 200.
	script []int
	// location is the Location of a 3xx answer.
	location string
	// arrived, when set, gets a value as each request arrives; hold, when set, delays every
	// answer until it is closed (or the broker gives up on the request).
	arrived chan struct{}
	hold    chan struct{}

	mu       sync.Mutex
	issuer   string // the broker's issuer; its JWKS is at issuer + .well-known/jwks.json
	received []logoutReceipt
}

// logoutReceipt is one request the app received.
type logoutReceipt struct {
	raw     string // the logout token
	claims  map[string]any
	header  jose.Header
	problem string // what the app's checks found wrong; "" = a valid logout token
}

func newLogoutApp(t *testing.T, clientID string, script ...int) *logoutApp {
	t.Helper()
	a := &logoutApp{clientID: clientID, script: script}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.srv.Close)
	return a
}

// uri is the app's backchannel_logout_uri.
func (a *logoutApp) uri() string { return a.srv.URL + "/backchannel-logout?tenant=t1" }

func (a *logoutApp) serve(w http.ResponseWriter, r *http.Request) {
	rec := a.check(r)
	a.mu.Lock()
	a.received = append(a.received, rec)
	n := len(a.received)
	a.mu.Unlock()
	if a.arrived != nil {
		a.arrived <- struct{}{}
	}
	if a.hold != nil {
		select {
		case <-a.hold:
		case <-r.Context().Done():
		}
	}
	status := http.StatusOK
	if n <= len(a.script) {
		status = a.script[n-1]
	}
	if status >= 300 && status < 400 {
		w.Header().Set("Location", a.location)
	}
	w.Header().Set("Cache-Control", "no-store") // §2.8
	w.WriteHeader(status)
}

// check applies the relying party's checks to one request.
func (a *logoutApp) check(r *http.Request) logoutReceipt {
	switch {
	case r.Method != http.MethodPost:
		return logoutReceipt{problem: "method " + r.Method + ", want POST (§2.5)"}
	case r.Header.Get("Content-Type") != "application/x-www-form-urlencoded":
		return logoutReceipt{problem: "Content-Type " + r.Header.Get("Content-Type") + ", want application/x-www-form-urlencoded (§2.5)"}
	}
	if err := r.ParseForm(); err != nil {
		return logoutReceipt{problem: "form: " + err.Error()}
	}
	if len(r.PostForm) != 1 || len(r.PostForm["logout_token"]) != 1 {
		return logoutReceipt{problem: fmt.Sprintf("form %v, want exactly one logout_token (§2.5)", keys(r.PostForm))}
	}
	if r.URL.Query().Get("tenant") != "t1" {
		return logoutReceipt{problem: "the query of the registered URI was lost"}
	}
	a.mu.Lock()
	issuer := a.issuer
	a.mu.Unlock()
	resp, err := http.Get(issuer + ".well-known/jwks.json")
	if err != nil {
		return logoutReceipt{problem: "JWKS: " + err.Error()}
	}
	defer resp.Body.Close()
	var jwks jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&jwks); err != nil {
		return logoutReceipt{problem: "JWKS: " + err.Error()}
	}
	raw := r.PostForm.Get("logout_token")
	rec := checkLogoutToken(raw, jwks, issuer, a.clientID)
	rec.raw = raw
	return rec
}

func keys(v map[string][]string) []string {
	return slices.Sorted(func(yield func(string) bool) {
		for k := range v {
			if !yield(k) {
				return
			}
		}
	})
}

// checkLogoutToken validates a logout token as §2.6 asks of the relying party: signature
// with the key its kid names in jwks, then each claim rule of §2.4.
func checkLogoutToken(raw string, jwks jose.JSONWebKeySet, issuer, clientID string) logoutReceipt {
	jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil {
		return logoutReceipt{problem: "not a JWS: " + err.Error()}
	}
	if len(jws.Signatures) != 1 {
		return logoutReceipt{problem: "not exactly one signature"}
	}
	h := jws.Signatures[0].Header
	found := jwks.Key(h.KeyID)
	if len(found) != 1 {
		return logoutReceipt{header: h, problem: "kid " + h.KeyID + " is not in the JWKS"}
	}
	payload, err := jws.Verify(found[0])
	if err != nil {
		return logoutReceipt{header: h, problem: "signature: " + err.Error()}
	}
	var c map[string]any
	if err := json.Unmarshal(payload, &c); err != nil {
		return logoutReceipt{header: h, problem: "claims: " + err.Error()}
	}
	num := func(k string) float64 { f, _ := c[k].(float64); return f }
	str := func(k string) string { s, _ := c[k].(string); return s }
	var problems []string
	for _, rule := range []struct {
		name string
		ok   bool
	}{
		{name: "typ is logout+jwt (§2.4)", ok: h.ExtraHeaders[jose.HeaderType] == "logout+jwt"},
		{name: "iss is the broker's issuer", ok: str("iss") == issuer},
		{name: "aud is the app's client_id", ok: str("aud") == clientID},
		{name: "iat is set", ok: num("iat") > 0},
		{name: "exp is 2 minutes after iat", ok: num("exp") == num("iat")+120},
		{name: "jti is set", ok: str("jti") != ""},
		{name: "events holds the back-channel logout member, an object", ok: func() bool {
			ev, _ := c["events"].(map[string]any)
			m, ok := ev["http://schemas.openid.net/event/backchannel-logout"].(map[string]any)
			return ok && len(m) == 0 && len(ev) == 1
		}()},
		{name: "sid is set", ok: str("sid") != ""},
		{name: "sub is set", ok: str("sub") != ""},
		{name: "no nonce (§2.4: it MUST NOT carry one)", ok: c["nonce"] == nil},
	} {
		if !rule.ok {
			problems = append(problems, rule.name)
		}
	}
	return logoutReceipt{claims: c, header: h, problem: strings.Join(problems, "; ")}
}

// receipts returns what the app received so far.
func (a *logoutApp) receipts() []logoutReceipt {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.received)
}

// bclClient is a public client named id with backchannel_logout_uri uri ("" = none).
func bclClient(id, uri string) config.Client {
	return config.Client{ClientID: id, Name: "App " + id, RedirectURIs: []string{"http://127.0.0.1:9/cb"},
		Connections: []string{"corp"}, BackchannelLogoutURI: uri}
}

// backchannelHarness is a broker with the given clients besides the harness's own, whose
// apps learn its issuer; retries wait a millisecond.
func backchannelHarness(t *testing.T, clients []config.Client, apps ...*logoutApp) *harness {
	t.Helper()
	h := newHarness(t, harnessOpts{mutate: func(c *config.Config) { c.Clients = append(c.Clients, clients...) }})
	for _, a := range apps {
		a.mu.Lock()
		a.issuer = h.cfg.Issuer
		a.mu.Unlock()
	}
	h.broker.bcl.delays = []time.Duration{time.Millisecond, time.Millisecond}
	return h
}

// bclSession is a session of alice at connection corp in which clients received codes.
func bclSession(clients ...string) *sessionRecord {
	return &sessionRecord{UserID: "oidc|corp|alice", Connection: "corp", ClientID: clients[0], Clients: clients}
}

// bclEntry is one back-channel logout event with its retention class.
type bclEntry struct {
	ev    logs.Event
	class sessions.LogClass
}

// backchannelEvents returns the back-channel logout events of client, oldest first.
func (h *harness) backchannelEvents(client string) []bclEntry {
	h.t.Helper()
	es, err := h.events.Store.LogsBefore(context.Background(), "", 1000)
	if err != nil {
		h.t.Fatalf("event log: %v", err)
	}
	var out []bclEntry
	for _, e := range slices.Backward(es) {
		var ev logs.Event
		if err := json.Unmarshal(e.Event, &ev); err != nil {
			h.t.Fatal(err)
		}
		if strings.HasPrefix(ev.Type, "oidc_backchannel_logout_") && ev.ClientID == client {
			out = append(out, bclEntry{ev: ev, class: e.Class})
		}
	}
	return out
}

// waitBackchannel polls (generously) for the first back-channel logout event of client.
func (h *harness) waitBackchannel(client string) bclEntry {
	h.t.Helper()
	for range 3000 {
		if es := h.backchannelEvents(client); len(es) > 0 {
			return es[0]
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.t.Fatalf("no back-channel logout event for %s", client)
	return bclEntry{}
}

// TestBackchannelLogoutDeliveryOutcomes: each app's answer decides the outcome (§2.8): 2xx
// succeeds, 429 and 5xx are retried up to three attempts, another 4xx is final at once, a
// redirect is never followed; every outcome is one audit event, and every request carries a
// logout token the app can verify against the broker's JWKS.
func TestBackchannelLogoutDeliveryOutcomes(t *testing.T) {
	trap := newLogoutApp(t, "trap") // where the redirect points: never called
	tests := []struct {
		name         string
		script       []int
		wantType     string
		wantAttempts int
		wantStatus   int
		wantError    string
	}{
		{name: "200 succeeds at once", script: []int{200}, wantType: logs.TypeBackchannelLogoutSucceeded, wantAttempts: 1, wantStatus: 200},
		{name: "204 succeeds too", script: []int{204}, wantType: logs.TypeBackchannelLogoutSucceeded, wantAttempts: 1, wantStatus: 204},
		{name: "503 is retried, then 200 succeeds", script: []int{503, 200}, wantType: logs.TypeBackchannelLogoutSucceeded, wantAttempts: 2, wantStatus: 200},
		{name: "429 is retried, then 200 succeeds", script: []int{429, 200}, wantType: logs.TypeBackchannelLogoutSucceeded, wantAttempts: 2, wantStatus: 200},
		{name: "503 on every attempt fails after three", script: []int{503, 503, 503, 200}, wantType: logs.TypeBackchannelLogoutFailed, wantAttempts: 3, wantStatus: 503, wantError: codeUnexpectedStatus},
		{name: "400 is final", script: []int{400, 200}, wantType: logs.TypeBackchannelLogoutFailed, wantAttempts: 1, wantStatus: 400, wantError: codeUnexpectedStatus},
		{name: "a redirect is not followed", script: []int{302, 200}, wantType: logs.TypeBackchannelLogoutFailed, wantAttempts: 1, wantStatus: 302, wantError: codeRedirectNotFollowed},
	}
	var clients []config.Client
	apps := []*logoutApp{trap}
	for i, tc := range tests {
		a := newLogoutApp(t, fmt.Sprintf("bcl-%d", i), tc.script...)
		a.location = trap.uri()
		apps = append(apps, a)
		clients = append(clients, bclClient(a.clientID, a.uri()))
	}
	h := backchannelHarness(t, clients, apps...)
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := apps[i+1]
			sid := "sid-" + a.clientID
			h.broker.notifyLogout(sid, bclSession(a.clientID))
			got := h.waitBackchannel(a.clientID)
			ev := got.ev
			if ev.Type != tc.wantType || got.class != sessions.LogAudit {
				t.Fatalf("event %s in class %v, want %s in the audit class", ev.Type, got.class, tc.wantType)
			}
			d := ev.Details
			if d["attempts"] != float64(tc.wantAttempts) || d["status"] != float64(tc.wantStatus) || d["session_id"] != sid ||
				d["backchannel_logout_host"] != strings.TrimPrefix(a.srv.URL, "http://") {
				t.Errorf("details %v, want attempts %d, status %d, session_id %s, the app's host", d, tc.wantAttempts, tc.wantStatus, sid)
			}
			if errCode, _ := d["error"].(string); errCode != tc.wantError || (tc.wantError != "") != (d["error_description"] != nil) {
				t.Errorf("error %v (%v), want %q with a description", d["error"], d["error_description"], tc.wantError)
			}
			if ev.ClientName != "App "+a.clientID || ev.UserID != "oidc|corp|alice" || ev.Connection != "corp" {
				t.Errorf("event %+v, want the app, alice and connection corp", ev)
			}
			rs := a.receipts()
			if len(rs) != tc.wantAttempts {
				t.Fatalf("the app received %d requests, want %d", len(rs), tc.wantAttempts)
			}
			for _, r := range rs {
				if r.problem != "" {
					t.Errorf("the app refused the logout token: %s", r.problem)
				}
				if r.claims["sid"] != sid || r.claims["sub"] != "oidc|corp|alice" {
					t.Errorf("claims %v, want sid %s and sub alice", r.claims, sid)
				}
				if r.header.KeyID != h.broker.keys.KID || r.header.Algorithm != string(h.broker.keys.SigningAlg) {
					t.Errorf("header kid %s alg %s, want the ID-token key's", r.header.KeyID, r.header.Algorithm)
				}
			}
		})
	}
	if n := len(trap.receipts()); n != 0 {
		t.Errorf("the redirect target received %d requests", n)
	}
	// No event carries a logout token.
	es, err := h.events.Store.LogsBefore(context.Background(), "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range apps {
		for _, r := range a.receipts() {
			for _, e := range es {
				if strings.Contains(string(e.Event), r.raw) {
					t.Fatalf("event %s carries a logout token", e.Event)
				}
			}
		}
	}
}

// TestBackchannelLogoutCallsEachSessionAppWithAURIOnce: the apps notified are the distinct
// client ids of the session's Clients (ClientID when the list is empty) that registered a
// backchannel_logout_uri; each gets one token of its own (aud, jti), however often it is
// listed, and no other app is called.
func TestBackchannelLogoutCallsEachSessionAppWithAURIOnce(t *testing.T) {
	tests := []struct {
		name     string
		sess     func(a, b string) *sessionRecord
		wantApps []string // of a, b, other: the ones called
	}{
		{name: "Clients with repeats, one without a URI and one unknown",
			sess: func(a, b string) *sessionRecord {
				s := bclSession(a, "no-uri", a, "unknown-client", b, b)
				return s
			},
			wantApps: []string{"a", "b"}},
		{name: "ClientID alone when Clients is empty",
			sess: func(a, _ string) *sessionRecord {
				s := bclSession(a)
				s.Clients = nil
				return s
			},
			wantApps: []string{"a"}},
		{name: "only apps without a URI", sess: func(_, _ string) *sessionRecord { return bclSession("no-uri") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			apps := map[string]*logoutApp{"a": newLogoutApp(t, "app-a"), "b": newLogoutApp(t, "app-b"), "other": newLogoutApp(t, "app-other")}
			h := backchannelHarness(t, []config.Client{
				bclClient("app-a", apps["a"].uri()), bclClient("app-b", apps["b"].uri()),
				bclClient("app-other", apps["other"].uri()), bclClient("no-uri", ""),
			}, apps["a"], apps["b"], apps["other"])
			h.broker.notifyLogout("sid-1", tc.sess("app-a", "app-b"))
			h.broker.Close() // waits for every queued delivery
			jtis := map[string]bool{}
			for name, a := range apps {
				rs := a.receipts()
				want := 0
				if slices.Contains(tc.wantApps, name) {
					want = 1
				}
				if len(rs) != want {
					t.Fatalf("app %s received %d requests, want %d", name, len(rs), want)
				}
				for _, r := range rs {
					if r.problem != "" {
						t.Errorf("app %s refused its logout token: %s", name, r.problem)
					}
					jti, _ := r.claims["jti"].(string)
					if jtis[jti] {
						t.Errorf("jti %q sent twice", jti)
					}
					jtis[jti] = true
				}
				if evs := h.backchannelEvents(a.clientID); len(evs) != want || (want == 1 && evs[0].ev.Type != logs.TypeBackchannelLogoutSucceeded) {
					t.Errorf("events of %s: %+v, want %d success", name, evs, want)
				}
			}
			if evs := h.backchannelEvents("no-uri"); len(evs) != 0 {
				t.Errorf("events for the client without a URI: %+v", evs)
			}
			if len(tc.wantApps) > 0 {
				h.wantMetrics(t, fmt.Sprintf(`dpop_broker_backchannel_logout_total{result="succeeded"} %d`, len(tc.wantApps)))
			}
		})
	}
}

// TestBackchannelLogoutRetriesTransportFailuresThenFails: an app that cannot be reached, or
// does not answer within the attempt timeout, is tried three times; the failure event names
// the cause and carries no HTTP status.
func TestBackchannelLogoutRetriesTransportFailuresThenFails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := "http://" + ln.Addr().String() + "/bcl"
	_ = ln.Close()
	silent := newLogoutApp(t, "silent")
	silent.hold = make(chan struct{}) // never closed: it answers when the broker gives up
	tests := []struct {
		name      string
		client    string
		uri       string
		wantError string
	}{
		{name: "connection refused", client: "refused", uri: closedPort, wantError: codeTransportError},
		{name: "no answer within the timeout", client: "silent", uri: silent.uri(), wantError: codeTimeout},
	}
	var clients []config.Client
	for _, tc := range tests {
		clients = append(clients, bclClient(tc.client, tc.uri))
	}
	h := backchannelHarness(t, clients, silent)
	h.broker.bcl.timeout = 200 * time.Millisecond
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h.broker.notifyLogout("sid-"+tc.client, bclSession(tc.client))
			got := h.waitBackchannel(tc.client)
			d := got.ev.Details
			if got.ev.Type != logs.TypeBackchannelLogoutFailed || d["error"] != tc.wantError || d["attempts"] != float64(3) ||
				d["status"] != nil || d["error_description"] == nil || got.class != sessions.LogAudit {
				t.Fatalf("event %s %v in class %v, want a failure %s after 3 attempts, no status, audit class", got.ev.Type, d, got.class, tc.wantError)
			}
			if desc, _ := d["error_description"].(string); strings.Contains(desc, "tenant") || strings.Contains(desc, "/bcl") {
				t.Errorf("error_description %q names the URI's path or query", desc)
			}
		})
	}
	if n := len(silent.receipts()); n != 3 {
		t.Errorf("the silent app received %d requests, want 3", n)
	}
}

// TestBackchannelLogoutDropsWhenTheAppsQueueIsFull: with the app's worker busy and its queue
// full, a further delivery to that app is not sent: notifyLogout records it at once as a
// failure (queue_full, counted as dropped) and still returns; the queued one is delivered
// later.
func TestBackchannelLogoutDropsWhenTheAppsQueueIsFull(t *testing.T) {
	busy := newLogoutApp(t, "busy")
	busy.arrived, busy.hold = make(chan struct{}, 4), make(chan struct{})
	h := backchannelHarness(t, []config.Client{bclClient("busy", busy.uri())}, busy)
	h.broker.bcl.queueCap = 1
	release := sync.OnceFunc(func() { close(busy.hold) })
	t.Cleanup(release)

	h.broker.notifyLogout("sid-1", bclSession("busy"))
	<-busy.arrived // the app's worker waits for its answer
	h.broker.notifyLogout("sid-2", bclSession("busy"))
	h.broker.notifyLogout("sid-3", bclSession("busy"))
	evs := h.backchannelEvents("busy") // recorded before notifyLogout returned
	if len(evs) != 1 || evs[0].ev.Type != logs.TypeBackchannelLogoutFailed || evs[0].ev.Details["error"] != codeQueueFull ||
		evs[0].ev.Details["attempts"] != float64(0) || evs[0].ev.Details["session_id"] != "sid-3" || evs[0].class != sessions.LogAudit {
		t.Fatalf("events of the dropped delivery: %+v, want one queue_full failure for sid-3 in the audit class", evs)
	}
	release()
	h.broker.Close()
	var sids []any
	for _, r := range busy.receipts() {
		if r.problem != "" {
			t.Errorf("the app refused a logout token: %s", r.problem)
		}
		sids = append(sids, r.claims["sid"])
	}
	if !slices.Equal(sids, []any{"sid-1", "sid-2"}) {
		t.Errorf("the app received logout tokens for %v, want sid-1 and sid-2 (in order)", sids)
	}
	h.wantMetrics(t, `dpop_broker_backchannel_logout_total{result="dropped"} 1`,
		`dpop_broker_backchannel_logout_total{result="succeeded"} 2`)
}

// TestBackchannelLogoutCloseEndsDeliveriesAfterTheGrace: Close gives waiting and running
// deliveries the grace, then cancels the running attempt (a failure, shutting_down) and
// records what still waited as not sent; it returns with every worker stopped, and a logout
// after it is recorded as not sent at once.
func TestBackchannelLogoutCloseEndsDeliveriesAfterTheGrace(t *testing.T) {
	stuck := newLogoutApp(t, "stuck")
	stuck.arrived, stuck.hold = make(chan struct{}, 4), make(chan struct{}) // never released
	h := backchannelHarness(t, []config.Client{bclClient("stuck", stuck.uri())}, stuck)
	h.broker.bcl.grace = 50 * time.Millisecond

	h.broker.notifyLogout("sid-running", bclSession("stuck"))
	<-stuck.arrived
	h.broker.notifyLogout("sid-waiting", bclSession("stuck"))
	h.broker.Close()
	h.broker.notifyLogout("sid-after", bclSession("stuck"))
	evs := h.backchannelEvents("stuck")
	if len(evs) != 3 {
		t.Fatalf("events: %+v, want 3", evs)
	}
	for i, want := range []struct {
		sid      string
		attempts int
	}{
		{sid: "sid-running", attempts: 1},
		{sid: "sid-waiting", attempts: 0},
		{sid: "sid-after", attempts: 0},
	} {
		d := evs[i].ev.Details
		if evs[i].ev.Type != logs.TypeBackchannelLogoutFailed || d["error"] != codeShuttingDown ||
			d["session_id"] != want.sid || d["attempts"] != float64(want.attempts) {
			t.Errorf("event %d: %s %v, want a shutting_down failure of %s after %d attempts", i, evs[i].ev.Type, d, want.sid, want.attempts)
		}
	}
	if n := len(stuck.receipts()); n != 1 {
		t.Errorf("the app received %d requests, want 1 (the waiting delivery is not sent after the grace)", n)
	}
	h.wantMetrics(t, `dpop_broker_backchannel_logout_total{result="failed"} 1`,
		`dpop_broker_backchannel_logout_total{result="dropped"} 2`)
}

// hungApp is an app's back-channel logout endpoint that accepts connections and never
// answers (a black hole): every attempt ends with the broker's timeout.
func hungApp(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return "http://" + ln.Addr().String() + "/bcl"
}

// TestBackchannelLogoutHungAppDoesNotDelayOtherApps: each app has its own queue and worker,
// so an app that accepts connections and never answers (each of its deliveries takes the
// attempt timeout, three times) delays only its own deliveries: after 50 logouts of sessions
// that both apps signed in to, the healthy app receives all 50 while the hung app's first
// delivery is still waiting for its first answer, and none of them is dropped. At Close the
// hung app's deliveries end with events (shutting_down).
func TestBackchannelLogoutHungAppDoesNotDelayOtherApps(t *testing.T) {
	const logouts = 50
	healthy := newLogoutApp(t, "healthy")
	h := backchannelHarness(t, []config.Client{bclClient("hung", hungApp(t)), bclClient("healthy", healthy.uri())}, healthy)
	h.broker.bcl.grace = 50 * time.Millisecond // for the Close below; attempts keep their 5 s timeout
	for i := range logouts {
		h.broker.notifyLogout(fmt.Sprintf("sid-%d", i), bclSession("hung", "healthy"))
	}
	for i := 0; len(healthy.receipts()) < logouts; i++ {
		if i == 6000 {
			t.Fatalf("the healthy app received %d of %d logout tokens", len(healthy.receipts()), logouts)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := 0; len(h.backchannelEvents("healthy")) < logouts; i++ {
		if i == 3000 {
			t.Fatalf("%d events of the healthy app, want %d", len(h.backchannelEvents("healthy")), logouts)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, e := range h.backchannelEvents("healthy") {
		if e.ev.Type != logs.TypeBackchannelLogoutSucceeded || e.ev.Details["attempts"] != float64(1) {
			t.Errorf("healthy app event %s %v, want a success at the first attempt (no queue_full)", e.ev.Type, e.ev.Details)
		}
	}
	h.broker.Close()
	hung := h.backchannelEvents("hung")
	if len(hung) != logouts {
		t.Fatalf("%d events of the hung app after Close, want %d", len(hung), logouts)
	}
	for _, e := range hung {
		if e.ev.Type != logs.TypeBackchannelLogoutFailed || e.ev.Details["error"] == codeQueueFull {
			t.Errorf("hung app event %s %v, want a failure (not queue_full)", e.ev.Type, e.ev.Details)
		}
	}
	h.wantMetrics(t, fmt.Sprintf(`dpop_broker_backchannel_logout_total{result="succeeded"} %d`, logouts))
}

// TestBackchannelLogoutSkipsRetriesWhileTheAppCoolsDown: after a delivery to an app failed
// every attempt, the app's deliveries within the cool-down (1 minute) get a single attempt,
// whose failure says why it was not retried; a success ends the cool-down at once, and past
// the cool-down the app is retried again.
func TestBackchannelLogoutSkipsRetriesWhileTheAppCoolsDown(t *testing.T) {
	app := newLogoutApp(t, "flaky",
		503, 503, 503, // 1: every attempt fails: the cool-down starts
		503,      // 2: one attempt only
		200,      // 3: succeeds: the cool-down ends
		503, 200, // 4: retried again
		503, 503, 503, // 5: every attempt fails: the cool-down starts again
		503, 200, // 6: after the cool-down, retried again
	)
	h := backchannelHarness(t, []config.Client{bclClient("flaky", app.uri())}, app)
	for i, step := range []struct {
		advance      time.Duration // the clock moves first
		wantType     string
		wantAttempts int
		wantSkipped  bool // the description says it was not retried
	}{
		{wantType: logs.TypeBackchannelLogoutFailed, wantAttempts: 3},
		{wantType: logs.TypeBackchannelLogoutFailed, wantAttempts: 1, wantSkipped: true},
		{wantType: logs.TypeBackchannelLogoutSucceeded, wantAttempts: 1},
		{wantType: logs.TypeBackchannelLogoutSucceeded, wantAttempts: 2},
		{wantType: logs.TypeBackchannelLogoutFailed, wantAttempts: 3},
		{advance: time.Minute, wantType: logs.TypeBackchannelLogoutSucceeded, wantAttempts: 2},
	} {
		h.clock.Advance(step.advance)
		h.broker.notifyLogout(fmt.Sprintf("sid-%d", i+1), bclSession("flaky"))
		var evs []bclEntry
		for n := 0; len(evs) <= i; n++ {
			if n == 3000 {
				t.Fatalf("delivery %d: no event", i+1)
			}
			time.Sleep(10 * time.Millisecond)
			evs = h.backchannelEvents("flaky")
		}
		ev := evs[i].ev
		desc, _ := ev.Details["error_description"].(string)
		if ev.Type != step.wantType || ev.Details["attempts"] != float64(step.wantAttempts) ||
			strings.Contains(desc, "not retried") != step.wantSkipped {
			t.Fatalf("delivery %d: %s %v, want %s after %d attempts (not retried: %t)", i+1, ev.Type, ev.Details, step.wantType, step.wantAttempts, step.wantSkipped)
		}
	}
	if n := len(app.receipts()); n != len(app.script) {
		t.Errorf("the app received %d requests, want %d", n, len(app.script))
	}
}

// TestBackchannelLogoutAfterLogoutCarriesTheIDTokensSidAndSub: a real login and /v2/logout; the app
// that signed in gets a logout token whose sid and sub are those of the ID token it received.
func TestBackchannelLogoutAfterLogoutCarriesTheIDTokensSidAndSub(t *testing.T) {
	a := newLogoutApp(t, appClient)
	h := newHarness(t, harnessOpts{up: dpopUp, mutate: func(c *config.Config) { c.Clients[0].BackchannelLogoutURI = a.uri() }})
	a.mu.Lock()
	a.issuer = h.cfg.Issuer
	a.mu.Unlock()
	b, idt, _ := h.logoutLogin(t)
	jws, err := jose.ParseSignedCompact(idt, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var id map[string]any
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &id); err != nil || id["sid"] == nil {
		t.Fatalf("ID token claims %v (%v), want a sid", id, err)
	}
	if resp, _ := get(t, b, h.srv.URL+"/v2/logout?client_id="+appClient); resp.StatusCode != http.StatusOK {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	got := h.waitBackchannel(appClient)
	if got.ev.Type != logs.TypeBackchannelLogoutSucceeded || got.ev.Details["session_id"] != id["sid"] {
		t.Fatalf("event %s %v, want success for session %v", got.ev.Type, got.ev.Details, id["sid"])
	}
	rs := a.receipts()
	if len(rs) != 1 || rs[0].problem != "" {
		t.Fatalf("the app received %+v, want one valid logout token", rs)
	}
	if rs[0].claims["sid"] != id["sid"] || rs[0].claims["sub"] != id["sub"] || rs[0].claims["aud"] != appClient {
		t.Errorf("logout token claims %v, want the ID token's sid %v and sub %v, aud %s", rs[0].claims, id["sid"], id["sub"], appClient)
	}
}
