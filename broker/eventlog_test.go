package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/config/configtest"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/logs/logtest"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// droppedEvents reads dpop_broker_events_dropped_total{type,reason} from /metrics.
func (h *harness) droppedEvents(typ, reason string) float64 {
	h.t.Helper()
	want := fmt.Sprintf(`dpop_broker_events_dropped_total{reason=%q,type=%q} `, reason, typ)
	for l := range strings.SplitSeq(h.scrape(), "\n") {
		if v, ok := strings.CutPrefix(l, want); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				h.t.Fatalf("metric line %q: %v", l, err)
			}
			return f
		}
	}
	return 0
}

// captureEvents sends the event writer's JSON lines (what `serve` prints on stdout) to the
// returned buffer. Call it before any request.
func (h *harness) captureEvents() *logtest.Buffer {
	buf := &logtest.Buffer{}
	h.events.Logger = slog.New(slog.NewJSONHandler(buf, nil))
	return buf
}

// stdoutLines decodes the captured lines whose msg is msg.
func stdoutLines(t *testing.T, buf *logtest.Buffer, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for l := range strings.SplitSeq(buf.String(), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("stdout line %q: %v", l, err)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// newestEntry returns the newest stored event-log entry.
func (h *harness) newestEntry() sessions.LogEntry {
	h.t.Helper()
	es, err := h.events.Store.LogsBefore(context.Background(), "", 1)
	if err != nil || len(es) != 1 {
		h.t.Fatalf("newest entry: %v, %v", es, err)
	}
	return es[0]
}

// Whether an event belongs to the audit trail is decided where it is created, by whether the
// caller proved who it is: a failure after authentication is audit, one anyone can cause is
// unauthenticated.
func TestEventClassFollowsWhetherTheCallerAuthenticated(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp, mutate: withMgmt})
	base := h.srv.URL
	revoke := func(client, secret, token string) func(t *testing.T) {
		return func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, base+"/oauth/revoke", strings.NewReader(url.Values{"token": {token}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth(client, secret)
			h.do(req)
		}
	}
	tests := []struct {
		name      string
		do        func(t *testing.T)
		wantType  string
		wantClass sessions.LogClass
	}{
		{name: "authorize with an unknown client", wantType: logs.TypeFailedLogin, wantClass: sessions.LogUnauthenticated,
			do: func(t *testing.T) { get(t, http.DefaultClient, base+"/authorize?client_id=bogus") }},
		{name: "management call without a token", wantType: logs.TypeFailedAPI, wantClass: sessions.LogUnauthenticated,
			do: func(t *testing.T) { api(t, base, "GET", "/api/v2/connections", "", nil) }},
		{name: "management call with an unknown token", wantType: logs.TypeFailedAPI, wantClass: sessions.LogUnauthenticated,
			do: func(t *testing.T) { api(t, base, "GET", "/api/v2/connections", tokWrong, nil) }},
		{name: "management call with a valid token lacking the scope", wantType: logs.TypeFailedAPI, wantClass: sessions.LogAudit,
			do: func(t *testing.T) { api(t, base, "GET", "/api/v2/logs", tokRead, nil) }},
		{name: "management write refused to a read-only token", wantType: logs.TypeFailedAPI, wantClass: sessions.LogAudit,
			do: func(t *testing.T) {
				api(t, base, "PATCH", "/api/v2/connections/"+idOf(t, h, "other"), tokLogs, map[string]any{})
			}},
		{name: "management read refused to a token with the scope", wantType: logs.TypeFailedAPI, wantClass: sessions.LogAudit,
			do: func(t *testing.T) { api(t, base, "GET", "/api/v2/logs?per_page=1000", tokLogs, nil) }},
		{name: "management write to an unknown path by a write-scoped token", wantType: logs.TypeFailedAPI, wantClass: sessions.LogAudit,
			do: func(t *testing.T) { api(t, base, "POST", "/api/v2/nothing", tokAll, map[string]any{}) }},
		{name: "management write refused to a token whose scope allows it", wantType: logs.TypeFailedAPI, wantClass: sessions.LogAdmin,
			do: func(t *testing.T) {
				api(t, base, "PATCH", "/api/v2/connections/"+idOf(t, h, "other"), tokAll, map[string]any{"no_such_field": true})
			}},
		{name: "successful management write", wantType: logs.TypeSuccessAPI, wantClass: sessions.LogAdmin,
			do: func(t *testing.T) {
				api(t, base, "PATCH", "/api/v2/connections/"+idOf(t, h, "other"), tokAll, map[string]any{"enabled_clients": []string{spaClient}})
			}},
		{name: "code exchange by the confidential client with a bad code", wantType: logs.TypeFailedExchange, wantClass: sessions.LogAudit,
			do: func(t *testing.T) { h.tok(tokReq{client: appClient, form: h.codeGrant(appClient, "bad.code")}) }},
		{name: "code exchange with a wrong client secret", wantType: logs.TypeFailedExchange, wantClass: sessions.LogUnauthenticated,
			do: func(t *testing.T) {
				req, _ := http.NewRequest(http.MethodPost, base+"/oauth/token", strings.NewReader(h.codeGrant(appClient, "bad.code").Encode()))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				req.SetBasicAuth(appClient, "wrong-secret")
				h.do(req)
			}},
		{name: "code exchange by a public client with a bad code", wantType: logs.TypeFailedExchange, wantClass: sessions.LogUnauthenticated,
			do: func(t *testing.T) { h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, "bad.code")}) }},
		{name: "revocation of an access token by the confidential client", wantType: logs.TypeFailedRevocation, wantClass: sessions.LogAudit,
			do: revoke(appClient, appSecret, "a.b.c")},
		{name: "revocation with a wrong client secret", wantType: logs.TypeFailedRevocation, wantClass: sessions.LogUnauthenticated,
			do: revoke(appClient, "wrong-secret", "a.b.c")},
		{name: "reuse of a rotated refresh token by a public client", wantType: logs.TypeFailedRotatingRefresh, wantClass: sessions.LogAudit,
			do: func(t *testing.T) {
				code := h.codeFor(spaClient, func(q url.Values) { q.Set("scope", "openid offline_access") })
				rt1 := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code)}).str("refresh_token")
				if rt2 := h.tok(tokReq{client: spaClient, form: refreshGrant(rt1)}).str("refresh_token"); rt1 == "" || rt2 == "" {
					t.Fatal("no refresh token")
				}
				h.tok(tokReq{client: spaClient, form: refreshGrant(rt1)})
			}},
		{name: "replay of a redeemed code by a public client with its verifier", wantType: logs.TypeFailedExchange, wantClass: sessions.LogAudit,
			do: func(t *testing.T) {
				code := h.codeFor(spaClient, nil)
				if r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code)}); r.status != http.StatusOK {
					t.Fatalf("redemption: %d %v", r.status, r.body)
				}
				h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code)})
			}},
		{name: "a redeemed code presented by a public client without the verifier", wantType: logs.TypeFailedExchange, wantClass: sessions.LogUnauthenticated,
			do: func(t *testing.T) {
				code := h.codeFor(spaClient, nil)
				if r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code)}); r.status != http.StatusOK {
					t.Fatalf("redemption: %d %v", r.status, r.body)
				}
				f := h.codeGrant(spaClient, code)
				f.Del("code_verifier")
				h.tok(tokReq{client: spaClient, form: f})
			}},
		{name: "logout request naming an unknown client", wantType: logs.TypeFailedLogout, wantClass: sessions.LogUnauthenticated,
			do: func(t *testing.T) { get(t, http.DefaultClient, base+"/oidc/logout?client_id=bogus") }},
		{name: "successful login", wantType: logs.TypeSuccessLogin, wantClass: sessions.LogAudit,
			do: func(t *testing.T) { h.login() }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.do(t)
			e := h.newestEntry()
			var ev logs.Event
			if err := json.Unmarshal(e.Event, &ev); err != nil {
				t.Fatal(err)
			}
			if ev.Type != tc.wantType || e.Class != tc.wantClass {
				t.Fatalf("newest event %s in class %v, want %s in class %v", ev.Type, e.Class, tc.wantType, tc.wantClass)
			}
		})
	}
}

// A federated logout that fails after the broker session ended is part of the audit trail.
func TestFederatedLogoutFailureIsAudited(t *testing.T) {
	up := dpopUp
	up.NoEndSession = true
	h := newHarness(t, harnessOpts{up: up})
	b, _, _ := h.logoutLogin(t)
	_, page := get(t, b, h.srv.URL+"/v2/logout?federated&client_id="+appClient) // asks first
	mustDo(t)(b.PostForm(h.srv.URL+"/v2/logout", formFields(t, page)))
	e := h.newestEntry()
	if !strings.Contains(string(e.Event), `"type":"federated_logout_failed"`) || e.Class != sessions.LogAudit {
		t.Fatalf("newest entry %s in class %v, want federated_logout_failed in the audit class", e.Event, e.Class)
	}
}

// floodAuthorize sends n anonymous GET /authorize?client_id=bogus over loopback, from a few
// concurrent connections, and checks that each is refused.
func floodAuthorize(t *testing.T, h *harness, n int) {
	t.Helper()
	const workers = 8
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	defer client.CloseIdleConnections()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				resp, err := client.Get(h.srv.URL + "/authorize?client_id=bogus")
				if err != nil {
					errs <- err
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusBadRequest {
					errs <- fmt.Errorf("request %d: status %d", i, resp.StatusCode)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// apiLogs pages through GET /api/v2/logs with from/take and returns every event's type, in
// order.
func apiLogTypes(t *testing.T, h *harness) []string {
	t.Helper()
	var types []string
	from := ""
	for range 100 {
		r := api(t, h.srv.URL, "GET", "/api/v2/logs?take=100&from="+from, tokLogs, nil)
		if r.status != http.StatusOK {
			t.Fatalf("GET /api/v2/logs: %d %s", r.status, r.raw)
		}
		if len(r.list()) == 0 {
			return types
		}
		for _, e := range r.list() {
			m := e.(map[string]any)
			types = append(types, m["type"].(string))
			from = m["log_id"].(string)
		}
	}
	t.Fatal("paging did not end")
	return nil
}

// An anonymous flood of /authorize requests with an unknown client (each a failed-login
// event) cannot flush the audit trail: the login, code exchange and management write
// recorded before it are all still listed by /api/v2/logs, the failures kept are bounded by
// logs.unauthenticated.max_events, and what the limits dropped (stdout and store alike) is
// counted.
//
// The flood comes in rounds from one IP, each many times the per-IP burst, and the broker's
// clock moves a burst's worth of time between rounds: the per-IP budget refills each time,
// so more failures are written than logs.max_events holds in all (a log without classes
// would lose the audit trail), on a fast or a slow machine alike.
func TestAnonymousAuthorizeFloodCannotFlushTheAuditTrail(t *testing.T) {
	const (
		rounds    = 4
		perRound  = 250 // requests per round: 12 times the per-IP burst (20)
		flood     = rounds * perRound
		maxEvents = 50 // logs.max_events
		refill    = 20 * time.Second
	)
	forStores(t, func(t *testing.T, store func() sessions.Store) {
		st := store()
		h := newHarness(t, harnessOpts{up: optionalDPoPUp, store: st, eventStore: st, mutate: func(c *config.Config) {
			withMgmt(c)
			c.Logs.MaxEvents = maxEvents
			c.Logs.Unauthenticated.MaxEvents = 20
		}})
		stdout := h.captureEvents()
		// The audit trail: a login (s), its code exchange (seacft), a management write (sapi).
		code := h.login().Get("code")
		if status, body, _ := h.token(h.codeForm(code), true); status != http.StatusOK {
			t.Fatalf("token: %d %v", status, body)
		}
		if r := api(t, h.srv.URL, "DELETE", "/api/v2/connections/"+idOf(t, h, "other"), tokAll, nil); r.status != http.StatusAccepted {
			t.Fatalf("DELETE connection: %d %s", r.status, r.raw)
		}

		start := time.Now()
		for round := range rounds {
			if round > 0 {
				h.clock.Advance(refill) // the per-IP budget refills: 1/s up to its burst
			}
			floodAuthorize(t, h, perRound)
		}
		// What the limiter saw pass: the real duration and the clock's moves.
		elapsed := time.Since(start) + (rounds-1)*refill

		for _, typ := range []string{logs.TypeSuccessLogin, logs.TypeSuccessExchange, logs.TypeSuccessAPI} {
			r := api(t, h.srv.URL, "GET", "/api/v2/logs?q="+url.QueryEscape("type:"+typ), tokLogs, nil)
			if r.status != http.StatusOK || len(r.list()) != 1 {
				t.Fatalf("GET /api/v2/logs?q=type:%s after the flood: %d, %d events (want 1): %s", typ, r.status, len(r.list()), r.raw)
			}
			if _, err := h.events.Get(context.Background(), r.list()[0].(map[string]any)["log_id"].(string)); err != nil {
				t.Fatalf("GET of the %s event: %v", typ, err)
			}
		}
		counts := map[string]int{}
		for _, typ := range apiLogTypes(t, h) {
			counts[typ]++
		}
		// At most logs.unauthenticated.max_events (20) in memory; a little more on Redis,
		// whose log shards each keep sessions.LogShardCap(20).
		keptMax := sessions.MaxLogKept(20)
		if counts[logs.TypeFailedLogin] == 0 || counts[logs.TypeFailedLogin] > keptMax {
			t.Fatalf("the log lists %d failed logins, want between 1 and sessions.MaxLogKept(logs.unauthenticated.max_events) (%d)", counts[logs.TypeFailedLogin], keptMax)
		}
		es, err := st.LogsAfter(context.Background(), "", 1000)
		if err != nil {
			t.Fatal(err)
		}
		unauth := 0
		for _, e := range es {
			if e.Class == sessions.LogUnauthenticated {
				unauth++
			}
		}
		if unauth > keptMax {
			t.Fatalf("the store keeps %d unauthenticated events, want at most %d", unauth, keptMax)
		}

		// Every failure was either written to stdout or dropped and counted; what was
		// written is bounded by the per-IP budget (burst 20, 1/s) over the flood's duration.
		dropped := h.droppedEvents(logs.TypeFailedLogin, logs.DropPerIP) + h.droppedEvents(logs.TypeFailedLogin, logs.DropGlobal)
		written := 0
		for _, l := range stdoutLines(t, stdout, "login_event") {
			if l["type"] == logs.TypeFailedLogin {
				written++
			}
		}
		if written+int(dropped) != flood {
			t.Fatalf("%d failures on stdout + %v dropped, want %d", written, dropped, flood)
		}
		if budget := 20 + int(math.Ceil(elapsed.Seconds())) + 1; written > budget {
			t.Fatalf("%d failures on stdout in %v, want at most %d", written, elapsed, budget)
		}
		if written <= maxEvents {
			t.Fatalf("the flood wrote %d failures, no more than logs.max_events (%d): it proves nothing", written, maxEvents)
		}
		if warns := stdoutLines(t, stdout, "login_events_dropped"); len(warns) == 0 || len(warns) > written+1 {
			t.Fatalf("%d drop warnings for %v drops", len(warns), dropped)
		}
	})
}

// A management token sent as ?access_token= (or in any other form the request carries it) on
// a refused call never reaches an event, stored or on stdout.
func TestManagementTokenInQueryNeverReachesAnEvent(t *testing.T) {
	const token = "Mgmt+Token/With=Specials-0123456789abcdefghij"
	h, stdout := harnessWithOpsToken(t, token)
	tests := []struct {
		name   string
		path   string
		bearer string
		want   int
	}{
		{name: "no Authorization header, token as access_token", path: "/api/v2/connections?access_token=" + url.QueryEscape(token), want: http.StatusUnauthorized},
		{name: "token in the query of a call whose scope is missing", path: "/api/v2/logs?per_page=5&access_token=" + url.QueryEscape(token), bearer: token, want: http.StatusForbidden},
		{name: "token under another parameter name", path: "/api/v2/connections?x=" + url.QueryEscape(token), want: http.StatusUnauthorized},
		{name: "token in the path", path: "/api/v2/" + url.PathEscape(token), bearer: token, want: http.StatusNotFound},
		{name: "token as a wrong bearer with access_token in the query", path: "/api/v2/connections?token=" + url.QueryEscape(token), bearer: tokWrong, want: http.StatusUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if r := api(t, h.srv.URL, "GET", tc.path, tc.bearer, nil); r.status != tc.want {
				t.Fatalf("%s: %d %s, want %d", tc.path, r.status, r.raw, tc.want)
			}
		})
	}
	es, err := h.events.Store.LogsAfter(context.Background(), "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	var stored strings.Builder
	fapi := 0
	for _, e := range es {
		stored.Write(e.Event)
		if strings.Contains(string(e.Event), `"type":"fapi"`) {
			fapi++
		}
	}
	if fapi != len(tests) {
		t.Fatalf("%d fapi events stored, want %d", fapi, len(tests))
	}
	for where, out := range map[string]string{"store": stored.String(), "stdout": stdout.String()} {
		for _, form := range []string{token, url.QueryEscape(token), url.PathEscape(token), "Mgmt+Token", "Mgmt%2BToken"} {
			if strings.Contains(out, form) {
				t.Errorf("%s carries the management token (%q):\n%s", where, form, out)
			}
		}
		if !strings.Contains(out, "access_token=[redacted]") {
			t.Errorf("%s lacks the redacted query:\n%s", where, out)
		}
	}
}

// A connection client secret set through the management API (not in the configuration) is
// redacted from events too, as soon as the broker loads it.
func TestConnectionSecretSetAtRuntimeNeverReachesAnEvent(t *testing.T) {
	const secret = "runtime-connection-secret-0123456789"
	h := newHarness(t, harnessOpts{up: optionalDPoPUp, mutate: withMgmt})
	stdout := h.captureEvents()
	id := idOf(t, h, "other")
	r := api(t, h.srv.URL, "PATCH", "/api/v2/connections/"+id, tokAll, map[string]any{
		"options": map[string]any{"issuer": h.up.URL, "client_id": upClientID, "client_secret": secret},
	})
	if r.status != http.StatusOK {
		t.Fatalf("PATCH: %d %s", r.status, r.raw)
	}
	idOf(t, h, "other") // a read after the write: the registry now holds the new secret
	api(t, h.srv.URL, "GET", "/api/v2/connections?note="+url.QueryEscape(secret), "", nil)
	get(t, http.DefaultClient, h.srv.URL+"/authorize?client_id="+url.QueryEscape(secret))
	es, err := h.events.Store.LogsAfter(context.Background(), "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if strings.Contains(string(e.Event), secret) {
			t.Errorf("stored event carries the connection secret: %s", e.Event)
		}
	}
	if strings.Contains(stdout.String(), secret) {
		t.Errorf("stdout carries the connection secret:\n%s", stdout)
	}
}

func TestUnauthenticatedLogsConfigValidated(t *testing.T) {
	configtest.SetEnv(t)
	tests := []struct {
		name string
		mut  func(u *config.UnauthenticatedLogs)
		want config.FieldError
	}{
		{name: "max_events zero", mut: func(u *config.UnauthenticatedLogs) { u.MaxEvents = 0 },
			want: config.FieldError{Key: "logs.unauthenticated.max_events", Reason: "must be between 1 and 10000000"}},
		{name: "max_age zero", mut: func(u *config.UnauthenticatedLogs) { u.MaxAge = 0 },
			want: config.FieldError{Key: "logs.unauthenticated.max_age", Reason: "must be a positive duration such as 168h"}},
		{name: "max_keys zero", mut: func(u *config.UnauthenticatedLogs) { u.MaxKeys = 0 },
			want: config.FieldError{Key: "logs.unauthenticated.max_keys", Reason: "must be between 1 and 10000000"}},
		{name: "per_ip rate malformed", mut: func(u *config.UnauthenticatedLogs) { u.PerIP.Rate = "fast" },
			want: config.FieldError{Key: "logs.unauthenticated.per_ip.rate", Reason: `"fast" is not a rate (use N/s, N/m or N/h, e.g. 20/s; 0 = unlimited)`}},
		{name: "global burst missing", mut: func(u *config.UnauthenticatedLogs) { u.Global.Burst = 0 },
			want: config.FieldError{Key: "logs.unauthenticated.global.burst", Reason: "must be between 1 and 1000000 when a rate is set"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(configtest.ValidYAML))
			if err != nil {
				t.Fatal(err)
			}
			tc.mut(&cfg.Logs.Unauthenticated)
			if errs := cfg.Validate(); !slices.Contains(errs, tc.want) {
				t.Fatalf("got %v\nwant %v", config.FieldErrors(errs), tc.want)
			}
		})
	}
	t.Run("keys decode and configure the event writer", func(t *testing.T) {
		cfg, err := config.Parse([]byte(configtest.ValidYAML + `
logs:
  max_events: 7
  unauthenticated:
    max_events: 5
    max_age: 2h
    per_ip: { rate: "0" }
    global: { rate: "2/m", burst: 3 }
`))
		if err != nil {
			t.Fatal(err)
		}
		if errs := cfg.Validate(); len(errs) != 0 {
			t.Fatalf("Validate: %v", config.FieldErrors(errs))
		}
		w := NewEventWriter(cfg, sessions.NewMemory(), nil, "h")
		if w.MaxLen != 7 || w.UnauthenticatedMaxLen != 5 || w.UnauthenticatedMaxAge != 2*time.Hour || w.Limits == nil || w.Secrets == nil {
			t.Fatalf("writer %+v", w)
		}
		now := time.Now()
		for i := range 3 { // per_ip "0": unlimited; global: burst 3
			if got := w.Limits.Allow("192.0.2.1", now); got != "" {
				t.Fatalf("event %d dropped (%s)", i, got)
			}
		}
		if got := w.Limits.Allow("192.0.2.2", now); got != logs.DropGlobal {
			t.Fatalf("fourth event = %q, want dropped by the global limit", got)
		}
		if d, want := config.Default().Logs.Unauthenticated, (config.UnauthenticatedLogs{
			MaxEvents: 10000, MaxAge: 168 * time.Hour, MaxKeys: 10000,
			PerIP: config.RateLimit{Rate: "1/s", Burst: 20}, Global: config.RateLimit{Rate: "20/s", Burst: 200},
		}); d != want {
			t.Fatalf("defaults %+v", d)
		}
	})
}
