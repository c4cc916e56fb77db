package broker

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/discovery"
	"github.com/dpop-broker/dpop-broker/dpop"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// consoleTokenSignIn signs browser in at base's console with the break-glass token and
// returns the home page.
func consoleTokenSignIn(t *testing.T, browser *http.Client, base string) string {
	t.Helper()
	resp, body := consoleTokenSignInAs(t, browser, base, consoleTestToken, "same-origin")
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/console/" {
		t.Fatalf("token sign-in: %d at %s:\n%s", resp.StatusCode, resp.Request.URL, body)
	}
	return body
}

// dpopConsoleHarness is consoleHarness against an upstream offering ES256 DPoP (corp uses
// it), with a token that may read and update connections and read the logs.
func dpopConsoleHarness(t *testing.T) *harness {
	t.Helper()
	return newHarness(t, harnessOpts{up: demoidp.Options{DPoPAlgs: []string{"ES256"}}, mutate: func(c *config.Config) {
		c.Console.Admins = []config.ConsoleAdmin{{UserID: "oidc|corp|alice"}}
		c.Management.Tokens = []config.ManagementToken{{Name: "ops", Token: consoleTestToken,
			Scopes: []string{config.ScopeReadConnections, config.ScopeUpdateConnections, config.ScopeReadLogs}}}
	}})
}

func TestConsoleConnectionsListsUpstreamStrategyAndDPoP(t *testing.T) {
	h := dpopConsoleHarness(t)
	browser := h.browser()
	consoleTokenSignIn(t, browser, h.srv.URL)
	resp, body := get(t, browser, h.srv.URL+"/console/connections")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("connections: %d\n%s", resp.StatusCode, body)
	}
	for _, want := range []string{"corp", "other", h.up.URL, `<span class="badge ok">ES256</span>`, "off (Bearer)", "oidc"} {
		if !strings.Contains(body, want) {
			t.Errorf("the connections page lacks %q", want)
		}
	}
	if strings.Contains(body, upSecret) {
		t.Error("the connections page shows a client secret")
	}
}

func TestConsoleConnectionLiveCheckGivesTheAPIsReasons(t *testing.T) {
	tests := []struct {
		name string
		conn string
		want []string
	}{
		{name: "DPoP on and offered", conn: "corp", want: []string{"DPoP works", "<code>ES256</code>", `<dt>Discovery checked</dt><dd id="check-time">just now, took `}},
		{name: "DPoP off", conn: "other", want: []string{"DPoP off", "<code>ES256</code>"}},
	}
	h := dpopConsoleHarness(t)
	browser := h.browser()
	consoleTokenSignIn(t, browser, h.srv.URL)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := config.DeriveConnectionID(tt.conn)
			resp, body := get(t, browser, h.srv.URL+"/console/connections/"+id)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("connection page: %d\n%s", resp.StatusCode, body)
			}
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("the connection page lacks %q", w)
				}
			}
		})
	}
	t.Run("an unknown connection", func(t *testing.T) {
		if resp, _ := get(t, browser, h.srv.URL+"/console/connections/con_doesnotexist000"); resp.StatusCode != http.StatusNotFound {
			t.Errorf("unknown connection answered %d, want 404", resp.StatusCode)
		}
	})
}

func TestConsoleDPoPSwitchUsesPATCHsValidationAndNamesTheOperator(t *testing.T) {
	tests := []struct {
		name       string
		conn       string
		alg        string
		wantStatus int
		wantAlg    string // the stored dpop_signing_alg afterwards
		wantText   string
		wantEvent  string
		confirm    string // the form's confirm field ("off" confirms turning DPoP off)
	}{
		{name: "turn DPoP off, confirmed", conn: "corp", alg: "", confirm: "off", wantStatus: http.StatusOK, wantAlg: "", wantText: "Saved.", wantEvent: logs.TypeSuccessAPI},
		{name: "turn DPoP on with an offered alg", conn: "other", alg: "ES256", wantStatus: http.StatusOK, wantAlg: "ES256", wantText: "Saved.", wantEvent: logs.TypeSuccessAPI},
		{name: "an alg the upstream does not offer is refused with the API's reason", conn: "corp", alg: "Ed25519", wantStatus: http.StatusOK,
			wantAlg: "ES256", wantText: "Not saved. The upstream does not accept Ed25519 DPoP proofs; it offers ES256. To fix it: choose ES256 (the broker has a key for it).", wantEvent: logs.TypeFailedAPI},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := dpopConsoleHarness(t)
			browser := h.browser()
			consoleTokenSignIn(t, browser, h.srv.URL)
			id := config.DeriveConnectionID(tt.conn)
			_, page := get(t, browser, h.srv.URL+"/console/connections/"+id)
			resp, body := postForm(t, browser, h.srv.URL+"/console/connections/"+id+"/dpop",
				url.Values{"csrf": {consoleCSRF(t, page)}, "dpop_signing_alg": {tt.alg}, "confirm": {tt.confirm}}, "same-origin")
			if resp.StatusCode != tt.wantStatus || !strings.Contains(body, tt.wantText) {
				t.Fatalf("save answered %d, want %d with %q:\n%s", resp.StatusCode, tt.wantStatus, tt.wantText, body)
			}
			if resp.Request.Method != http.MethodGet {
				t.Errorf("the save ends on a %s page: a reload would submit it again", resp.Request.Method)
			}
			snap, err := h.broker.reg.current(t.Context(), true)
			if err != nil {
				t.Fatal(err)
			}
			if got := snap.byID[id].cfg.Options.DPoPSigningAlg; got != tt.wantAlg {
				t.Errorf("stored dpop_signing_alg = %q, want %q", got, tt.wantAlg)
			}
			if snap.byID[id].cfg.Options.ClientSecret != upSecret {
				t.Error("the console's change lost the connection's client secret")
			}
			ev := h.lastEventOf(tt.wantEvent)
			if eventUser(ev) != "console:token:ops" || ev.ConnectionID != id {
				t.Errorf("the %s event names %v on %q, want the operator console:token:ops on %s", tt.wantEvent, eventUser(ev), ev.ConnectionID, id)
			}
		})
	}
}

// dpopConsoleSignedIn is dpopConsoleHarness with a browser signed in to its console.
func dpopConsoleSignedIn(t *testing.T) (*harness, *http.Client) {
	t.Helper()
	h := dpopConsoleHarness(t)
	browser := h.browser()
	consoleTokenSignIn(t, browser, h.srv.URL)
	return h, browser
}

// saveDPoP submits the DPoP switch of connection id with form (and the page's CSRF token),
// following the redirects.
func saveDPoP(t *testing.T, h *harness, browser *http.Client, id string, form url.Values) (*http.Response, string) {
	t.Helper()
	_, page := get(t, browser, h.srv.URL+"/console/connections/"+id)
	form.Set("csrf", consoleCSRF(t, page))
	return postForm(t, browser, h.srv.URL+"/console/connections/"+id+"/dpop", form, "same-origin")
}

// TestConsoleTurningDPoPOffAsksFirst: saving "Off" on a connection with DPoP on stores
// nothing and lands on a GET page that says what turning DPoP off does (a reload saves
// nothing); only the confirmation's own form turns DPoP off.
func TestConsoleTurningDPoPOffAsksFirst(t *testing.T) {
	h, browser := dpopConsoleSignedIn(t)
	id := config.DeriveConnectionID("corp")
	resp, body := saveDPoP(t, h, browser, id, url.Values{"dpop_signing_alg": {""}})
	if resp.StatusCode != http.StatusOK || resp.Request.Method != http.MethodGet || resp.Request.URL.Query().Get("confirm") != "off" {
		t.Fatalf("saving Off answered %d at %s %s, want the confirmation page", resp.StatusCode, resp.Request.Method, resp.Request.URL)
	}
	for _, want := range []string{`id="confirm-off"`, "Turn DPoP off?", "upstream_requires_dpop", `name="confirm" value="off"`, `id="keep-dpop"`} {
		if !strings.Contains(body, want) {
			t.Errorf("the confirmation lacks %q", want)
		}
	}
	snap, err := h.broker.reg.current(t.Context(), true)
	if err != nil {
		t.Fatal(err)
	}
	if got := snap.byID[id].cfg.Options.DPoPSigningAlg; got != "ES256" {
		t.Errorf("saving Off without confirming stored dpop_signing_alg %q", got)
	}
	if _, plain := get(t, browser, h.srv.URL+"/console/connections/"+id); strings.Contains(plain, `id="confirm-off"`) {
		t.Error("the connection page asks to confirm without ?confirm=off")
	}
}

// TestConsoleConnectionSaysWhenTheUpstreamRequiresDPoP: with DPoP off toward an upstream that
// requires it, logins fail with upstream_requires_dpop; the connection page says so from the
// login counters, with the fix, and the live check does not promise Bearer tokens.
func TestConsoleConnectionSaysWhenTheUpstreamRequiresDPoP(t *testing.T) {
	h := newHarness(t, harnessOpts{dpopAlg: "-", up: demoidp.Options{DPoPAlgs: []string{"ES256"}, RequireDPoP: true}, mutate: func(c *config.Config) {
		c.Management.Tokens = []config.ManagementToken{{Name: "ops", Token: consoleTestToken,
			Scopes: []string{config.ScopeReadConnections, config.ScopeUpdateConnections, config.ScopeReadLogs}}}
	}})
	browser := h.browser()
	consoleTokenSignIn(t, browser, h.srv.URL)
	id := config.DeriveConnectionID("corp")
	_, before := get(t, browser, h.srv.URL+"/console/connections/"+id)
	if strings.Contains(before, `id="requires-dpop"`) {
		t.Fatal("the warning shows before any login failed")
	}
	if !strings.Contains(before, "the broker sends no DPoP proof") || strings.Contains(before, "get Bearer tokens from the upstream") {
		t.Errorf("the DPoP-off texts promise Bearer tokens:\n%s", before)
	}
	if q := h.login(); q.Get("error") == "" {
		t.Fatalf("a login without DPoP toward an upstream requiring it succeeded: %v", q)
	}
	ev := h.lastEventOf(logs.TypeFailedLogin)
	if ev.Details["error"] != "upstream_requires_dpop" {
		t.Fatalf("the failed login's error is %v", ev.Details["error"])
	}
	// The upstream's token endpoint was called: the exchange took time, never 0 ms.
	if ms, _ := ev.Details["code_exchange_ms"].(float64); ms < 1 && detailInt(ev.Details["code_exchange_ms"]) < 1 {
		t.Errorf("details.code_exchange_ms = %v, want at least 1 (the token endpoint was called)", ev.Details["code_exchange_ms"])
	}
	// The event's What to do names the console's DPoP switch: it links to it.
	if _, page := get(t, browser, h.srv.URL+"/console/logs/"+ev.LogID); !strings.Contains(page, `<a href="/console/connections/`+id+`#conn-dpop" id="trouble-connection">Open the DPoP switch of the connection corp</a>`) {
		t.Errorf("the event page does not link the connection's DPoP switch:\n%s", page)
	}
	_, body := get(t, browser, h.srv.URL+"/console/connections/"+id)
	for _, want := range []string{`id="requires-dpop"`, "1 login through this connection failed in the last hour", "turn DPoP back on", `href="#conn-dpop"`} {
		if !strings.Contains(body, want) {
			t.Errorf("the connection page lacks %q:\n%s", want, body)
		}
	}
}

// TestConsoleDPoPChangeEventSaysWhatChanged: the sapi event of a DPoP change records the
// field before and after, and the event page shows it as a fact (the secret never).
func TestConsoleDPoPChangeEventSaysWhatChanged(t *testing.T) {
	h, browser := dpopConsoleSignedIn(t)
	id := config.DeriveConnectionID("corp")
	if resp, body := saveDPoP(t, h, browser, id, url.Values{"dpop_signing_alg": {""}, "confirm": {"off"}}); resp.StatusCode != http.StatusOK {
		t.Fatalf("turning DPoP off: %d\n%s", resp.StatusCode, body)
	}
	ev := h.lastEventOf(logs.TypeSuccessAPI)
	changes, _ := ev.Details["changes"].([]any)
	if len(changes) != 1 {
		t.Fatalf("details.changes = %#v, want the one field", ev.Details["changes"])
	}
	if ch, _ := changes[0].(map[string]any); ch["field"] != "options.dpop_signing_alg" || ch["from"] != "ES256" || ch["to"] != nil {
		t.Errorf("details.changes[0] = %#v", ch)
	}
	_, view := get(t, browser, h.srv.URL+"/console/logs/"+ev.LogID)
	if !strings.Contains(view, "<dt>Changed options.dpop_signing_alg</dt><dd>ES256 → off</dd>") {
		t.Errorf("the event page does not show what changed:\n%s", view)
	}
	if strings.Contains(view, upSecret) {
		t.Error("the event page shows the client secret")
	}
}

// TestConsoleDPoPSaveRefusedForAnUnreachableUpstreamSaysSo: a DPoP save the management API
// refuses because the upstream's discovery document cannot be fetched redirects to the
// connection page saying the setting could not be checked, and stores nothing.
func TestConsoleDPoPSaveRefusedForAnUnreachableUpstreamSaysSo(t *testing.T) {
	h := newHarness(t, harnessOpts{mutate: func(c *config.Config) {
		c.Connections[1].Options.Issuer = "http://127.0.0.1:1" // nothing listens on port 1
		c.Management.Tokens = []config.ManagementToken{{Name: "ops", Token: consoleTestToken,
			Scopes: []string{config.ScopeReadConnections, config.ScopeUpdateConnections}}}
	}})
	browser := h.browser()
	consoleTokenSignIn(t, browser, h.srv.URL)
	id := config.DeriveConnectionID("other")
	resp, body := saveDPoP(t, h, browser, id, url.Values{"dpop_signing_alg": {"ES256"}})
	if resp.Request.Method != http.MethodGet || resp.Request.URL.Query().Get("refused") != "discovery" ||
		!strings.Contains(body, "the DPoP setting cannot be checked against it") {
		t.Fatalf("the refused save ended at %s %s:\n%s", resp.Request.Method, resp.Request.URL, body)
	}
	snap, err := h.broker.reg.current(t.Context(), true)
	if err != nil {
		t.Fatal(err)
	}
	if got := snap.byID[id].cfg.Options.DPoPSigningAlg; got != "" {
		t.Errorf("the refused save stored dpop_signing_alg %q", got)
	}
}

// TestConsoleDPoPRefusalLinksCarryNoWords: the refusal a DPoP save redirects to is worded by
// the page itself; a crafted link names no algorithm the broker has no key for, and no text.
func TestConsoleDPoPRefusalLinksCarryNoWords(t *testing.T) {
	h := dpopConsoleHarness(t)
	browser := h.browser()
	consoleTokenSignIn(t, browser, h.srv.URL)
	base := h.srv.URL + "/console/connections/" + config.DeriveConnectionID("corp")
	tests := []struct {
		name, query, want, wantNot string
	}{
		{name: "an alg the broker has a key for", query: "refused=alg&alg=Ed25519", want: "The upstream does not accept Ed25519 DPoP proofs"},
		{name: "a made-up alg", query: "refused=alg&alg=" + url.QueryEscape("Call 555-0100"), want: "does not offer that DPoP algorithm", wantNot: "555-0100"},
		{name: "an unknown refusal", query: "refused=" + url.QueryEscape("Call 555-0100"), wantNot: "555-0100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, body := get(t, browser, base+"?"+tt.query)
			if !strings.Contains(body, tt.want) || (tt.wantNot != "" && strings.Contains(body, tt.wantNot)) {
				t.Errorf("?%s: want %q, not %q:\n%s", tt.query, tt.want, tt.wantNot, body)
			}
		})
	}
}

func TestConsoleDPoPSwitchNeedsTheUpdatePermission(t *testing.T) {
	h := consoleHarness(t, nil) // the token reads connections only
	browser := h.browser()
	home := consoleTokenSignIn(t, browser, h.srv.URL)
	id := config.DeriveConnectionID("corp")
	resp, _ := postForm(t, browser, h.srv.URL+"/console/connections/"+id+"/dpop",
		url.Values{"csrf": {consoleCSRF(t, home)}, "dpop_signing_alg": {""}}, "same-origin")
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a read-only operator's change answered %d, want 403", resp.StatusCode)
	}
	_, page := get(t, browser, h.srv.URL+"/console/connections/"+id)
	if strings.Contains(page, "save-dpop") {
		t.Error("a read-only operator is offered the DPoP switch")
	}
	if !strings.Contains(page, `id="dpop-scope"`) || !strings.Contains(page, "management token that has the <code>update:connections</code> scope") {
		t.Error("the connection page does not say which permission the DPoP switch needs and how to get it")
	}
}

func TestConsoleDPoPChangeIsUsedByTheNextLoginOnAnotherReplica(t *testing.T) {
	h := dpopConsoleHarness(t)
	if ev := loginEvent(t, h); ev.Details["dpop_signing_alg"] != "ES256" {
		t.Fatalf("before the change the login used DPoP %v", ev.Details["dpop_signing_alg"])
	}
	// A second replica on the same store serves the console.
	b2, err := New(h.cfg, Deps{Store: h.store, Events: h.events, Now: h.clock.Now, Keys: h.broker.keys})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b2.Close)
	srv2 := httptest.NewServer(b2.Handler())
	t.Cleanup(srv2.Close)
	browser := h.browser()
	consoleTokenSignIn(t, browser, srv2.URL)
	id := config.DeriveConnectionID("corp")
	_, page := get(t, browser, srv2.URL+"/console/connections/"+id)
	if resp, body := postForm(t, browser, srv2.URL+"/console/connections/"+id+"/dpop",
		url.Values{"csrf": {consoleCSRF(t, page)}, "dpop_signing_alg": {""}, "confirm": {"off"}}, "same-origin"); resp.StatusCode != http.StatusOK {
		t.Fatalf("turning DPoP off on replica 2: %d\n%s", resp.StatusCode, body)
	}
	ev := loginEvent(t, h) // replica 1
	if _, on := ev.Details["dpop_signing_alg"]; on || ev.Details["idp_token_type"] != "bearer" {
		t.Errorf("the next login on replica 1 still used DPoP: %v", ev.Details)
	}
}

// loginEvent runs a login through h and returns its s event.
func loginEvent(t *testing.T, h *harness) logs.Event {
	t.Helper()
	h.login()
	return h.lastEventOf(logs.TypeSuccessLogin)
}

func TestConsoleConnectionsListShowsEachConnectionsLiveCheck(t *testing.T) {
	tests := []struct {
		name string
		up   demoidp.Options
		want []string
	}{
		{name: "upstream offers ES256", up: demoidp.Options{DPoPAlgs: []string{"ES256"}},
			want: []string{`<span class="badge ok">DPoP works</span>`, `<span class="badge warn">DPoP offered, off here</span>`}},
		{name: "upstream without DPoP", up: demoidp.Options{},
			want: []string{`<span class="badge bad">ES256</span>`, `<span class="badge bad">DPoP broken</span>`, "The upstream does not offer DPoP", "To fix it: turn DPoP off",
				`<span class="badge off">upstream has no DPoP</span>`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{up: tt.up, mutate: func(c *config.Config) {
				c.Management.Tokens = []config.ManagementToken{{Name: "ops", Token: consoleTestToken, Scopes: []string{config.ScopeReadConnections}}}
			}})
			browser := h.browser()
			consoleTokenSignIn(t, browser, h.srv.URL)
			_, body := get(t, browser, h.srv.URL+"/console/connections")
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("the connections list lacks %q:\n%s", w, body)
				}
			}
		})
	}
}

// TestConsoleDPoPProblemSaysWhatIsWrongAndWhatToDo: the console words the upstream's DPoP
// capability for people, with the fixes the broker's keys allow.
func TestConsoleDPoPProblemSaysWhatIsWrongAndWhatToDo(t *testing.T) {
	all := testKeys(t, "ES256").DPoP
	s := &Server{keys: &config.KeyRing{DPoP: map[string]*dpop.Signer{"ES256": all["ES256"], "Ed25519": all["Ed25519"]}}} // no RSA DPoP key
	tests := []struct {
		name    string
		offered []string
		alg     string
		current bool
		want    []string // in the text, in order
		wantNot string
	}{
		{name: "offered", offered: []string{"ES256"}, alg: "ES256", current: true},
		{name: "off", offered: nil, alg: "", current: true},
		{name: "an RSA-only upstream and the connection on ES256", offered: []string{"RS256"}, alg: "ES256", current: true,
			want: []string{"The upstream does not accept ES256 DPoP proofs; it offers RS256.", "Logins through this connection fail",
				"add an RSA DPoP key under keys.dpop.rsa (then RS256 can be chosen)", "turn DPoP off"}, wantNot: "cannot enable"},
		{name: "a choice the upstream does not offer, with one it does", offered: []string{"ES256", "RS256"}, alg: "Ed25519",
			want: []string{"it offers ES256, RS256.", "choose ES256 (the broker has a key for it)"}, wantNot: "turn DPoP off"},
		{name: "an upstream without DPoP", offered: nil, alg: "ES256", current: true,
			want: []string{"The upstream does not offer DPoP", "turn DPoP off"}},
		{name: "an upstream offering both RSA algs: one RSA key to add", offered: []string{"PS256", "RS256"}, alg: "ES256", current: true,
			want: []string{"it offers PS256, RS256.", "add an RSA DPoP key under keys.dpop.rsa (then PS256 or RS256 can be chosen); or turn DPoP off"}},
		{name: "an alg no keys.dpop entry holds is not advised", offered: []string{"ES384"}, alg: "ES256",
			want: []string{"it offers ES384."}, wantNot: "keys.dpop"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if s.keys.DPoP["ES256"] == nil {
				t.Fatal("the test keys have no ES256 DPoP key")
			}
			doc := &discovery.Document{Issuer: "https://idp.example", DPoPSigningAlgValuesSupported: tt.offered}
			got := s.consoleDPoPProblem(doc, tt.alg, tt.current)
			if len(tt.want) == 0 && got != "" {
				t.Fatalf("problem %q, want none", got)
			}
			rest := got
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("problem %q lacks %q (in order)", got, w)
				}
				rest = rest[i+len(w):]
			}
			if tt.wantNot != "" && strings.Contains(got, tt.wantNot) {
				t.Errorf("problem %q says %q", got, tt.wantNot)
			}
		})
	}
}

// TestConsoleCheckFailureSaysWhy: when the upstream cannot be reached, the connection page
// says why in a few words (not "the reason is in the broker's log").
func TestConsoleCheckFailureSaysWhy(t *testing.T) {
	// Port 1 (tcpmux) is not served on a test machine, and no test process can bind it: a
	// closed test server's port could be taken by another test meanwhile.
	const deadURL = "http://127.0.0.1:1"
	h := newHarness(t, harnessOpts{mutate: func(c *config.Config) {
		c.Connections[1].Options.Issuer = deadURL
		c.Management.Tokens = []config.ManagementToken{{Name: "ops", Token: consoleTestToken, Scopes: []string{config.ScopeReadConnections}}}
	}})
	browser := h.browser()
	consoleTokenSignIn(t, browser, h.srv.URL)
	_, body := get(t, browser, h.srv.URL+"/console/connections/"+config.DeriveConnectionID("other"))
	if !strings.Contains(body, "check failed") || !strings.Contains(body, "connection refused") || strings.Contains(body, "in the broker&#39;s log") {
		t.Errorf("the failed check does not say why:\n%s", body)
	}
}

func TestDiscoveryCheckSaysWhenAndHowLong(t *testing.T) {
	at := time.Date(2026, 12, 2, 17, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		now  time.Time
		took time.Duration
		want string
	}{
		{name: "fetched for this view", now: at.Add(300 * time.Millisecond), took: time.Millisecond, want: "just now, took 1 ms"},
		{name: "a shared fetch seconds old", now: at.Add(3 * time.Second), took: 41 * time.Millisecond, want: "3 s ago, took 41 ms"},
		{name: "under a millisecond", now: at, took: 0, want: "just now, took 0 ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := checkedText(at, tt.now, tt.took); got != tt.want {
				t.Errorf("checkedText = %q, want %q", got, tt.want)
			}
		})
	}
}
