package interop

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
)

// Single sign-on at the broker (one session per browser, cookie dpop_broker_session, answering
// /authorize without the upstream) proven with real apps in one headless Chromium
// (sso-browser.mjs): auth0-spa-js pages on two origins (spa/sso.html).

// ssoSPA is one auth0-spa-js app (spa/sso.html) on its own origin (its own 127.0.0.1 port).
type ssoSPA struct {
	clientID string
	origin   string // http://127.0.0.1:PORT
	cfg      *atomic.Pointer[[]byte]
}

// page is the app's page: its redirect URI and post-logout redirect URI.
func (a *ssoSPA) page() string { return a.origin + "/sso.html" }

// startSSOSPA serves spa/ for clientID on a new origin; its /config.json is set by configure.
func startSSOSPA(t *testing.T, clientID string) *ssoSPA {
	t.Helper()
	a := &ssoSPA{clientID: clientID, cfg: &atomic.Pointer[[]byte]{}}
	srv := httptest.NewServer(spaHandler(a.cfg)) // 127.0.0.1: a potentially trustworthy origin
	t.Cleanup(srv.Close)
	a.origin = srv.URL
	return a
}

// clientYAML registers the app at the broker: a public client whose redirect URI, post-logout
// redirect URI and web-message origin are its page, with DPoP-bound tokens for the interop API.
func (a *ssoSPA) clientYAML() string {
	return fmt.Sprintf(`  - client_id: %[1]q
    name: "auth0-spa-js %[1]s"
    token_endpoint_auth_method: none
    redirect_uris: [%[2]q]
    post_logout_redirect_uris: [%[2]q]
    allowed_origins: [%[3]q]
    connections: ["oidc-provider"]
    apis: [{ audience: %[4]q }]
`, a.clientID, a.page(), a.origin, apiAudience)
}

// configure points the page at the broker.
func (a *ssoSPA) configure(t *testing.T, w *asWorld) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"domain": w.base(), "clientId": a.clientID, "audience": apiAudience, "scope": tokenScope})
	if err != nil {
		t.Fatal(err)
	}
	a.cfg.Store(&b)
}

// ssoBrowser is sso-browser.mjs: one user's Chromium (one cookie jar, tabs) driven step by step.
type ssoBrowser struct {
	p       *proc
	stdin   io.WriteCloser
	answers chan ssoAnswer
	next    int
	shots   string // directory of the screenshots (interop/.cache)
}

// ssoAnswer is one answer line of sso-browser.mjs.
type ssoAnswer struct {
	ID         int            `json:"id"`
	OK         bool           `json:"ok"`
	Error      string         `json:"error"`
	URL        string         `json:"url"`
	Status     string         `json:"status"`
	State      map[string]any `json:"state"`
	Silent     map[string]any `json:"silent"`
	PageError  string         `json:"page_error"`
	HTTPStatus int            `json:"http_status"`
	Text       string         `json:"text"`
	Requests   []ssoRequest   `json:"requests"`
	// Focused, Images and CSPViolations answer keys and inspect.
	Focused       string     `json:"focused"`
	Images        []ssoImage `json:"images"`
	CSPViolations []string   `json:"csp_violations"`
	ScrollWidth   int        `json:"scroll_width"`
	// Texts answers texts: the text of each element its selector matched.
	Texts []string `json:"texts"`
	raw   string
}

// ssoImage is an image of the page: its URL, whether it finished, its natural width (0: it
// did not load).
type ssoImage struct {
	Src      string `json:"src"`
	Complete bool   `json:"complete"`
	Width    int    `json:"width"`
}

// ssoRequest is a response from a watched origin (the broker, the upstream) during one step.
type ssoRequest struct {
	Method       string `json:"method"`
	Origin       string `json:"origin"`
	Path         string `json:"path"`
	Status       int    `json:"status"`
	Type         string `json:"type"`
	ClientID     string `json:"client_id"`
	Prompt       string `json:"prompt"`
	ResponseMode string `json:"response_mode"`
}

// authenticated is the page's isAuthenticated() after it loaded.
func (a ssoAnswer) authenticated() bool { return a.State["authenticated"] == true }

// to returns the requests to origin.
func (a ssoAnswer) to(origin string) []ssoRequest {
	var out []ssoRequest
	for _, r := range a.Requests {
		if r.Origin == origin {
			out = append(out, r)
		}
	}
	return out
}

func (a ssoAnswer) String() string { return a.raw }

// startSSOBrowser starts sso-browser.mjs watching the given origins.
func startSSOBrowser(t *testing.T, watch ...string) *ssoBrowser {
	t.Helper()
	needChromium(t)
	args := []string{"sso-browser.mjs", "--chromium", chromiumPath,
		"--step-timeout-ms", fmt.Sprint((browserBudget - 30*time.Second).Milliseconds())}
	for _, o := range watch {
		args = append(args, "--watch", o)
	}
	cmd := exec.Command("node", args...)
	cmd.Dir = interopDir
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatalf("sso-browser.mjs stdin: %v", err)
	}
	b := &ssoBrowser{stdin: stdin, answers: make(chan ssoAnswer, 16)}
	ready, onReady := readyLine()
	b.p = start(t, "sso-browser.mjs", cmd, func(line string) {
		if !strings.HasPrefix(line, `{"id":`) {
			onReady(line)
			return
		}
		var a ssoAnswer
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			a = ssoAnswer{Error: "undecodable answer: " + err.Error()}
		}
		a.raw = line
		select {
		case b.answers <- a:
		default: // the test stopped reading: it failed already
		}
	})
	t.Cleanup(func() { _ = stdin.Close() }) // the script closes Chromium and exits
	b.p.waitReady(t, ready)
	b.shots = filepath.Join(interopDir, ".cache")
	if err := os.MkdirAll(b.shots, 0o755); err != nil {
		b.shots = t.TempDir()
	}
	return b
}

// do sends one command and waits (bounded) for its answer, logging it; a command the script
// could not carry out fails the test with the answer and the script's output.
func (b *ssoBrowser) do(t *testing.T, what string, cmd map[string]any) ssoAnswer {
	t.Helper()
	return b.doLogged(t, what, cmd, true)
}

// doLogged is do; logged false keeps a poll's answers out of the test log.
func (b *ssoBrowser) doLogged(t *testing.T, what string, cmd map[string]any, logged bool) ssoAnswer {
	t.Helper()
	b.next++
	cmd["id"] = b.next
	line, err := json.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := b.stdin.Write(append(line, '\n')); err != nil {
		t.Fatalf("%s: write to sso-browser.mjs: %v", what, err)
	}
	timer := time.NewTimer(browserBudget)
	defer timer.Stop()
	for {
		select {
		case a := <-b.answers:
			if a.ID != b.next {
				continue // an answer to a command that timed out before: never waited for twice
			}
			if !a.OK {
				t.Fatalf("%s: %s", what, a.Error)
			}
			took := time.Since(start).Round(time.Millisecond)
			switch {
			case !logged:
			case a.HTTPStatus != 0:
				t.Logf("%s (%v): HTTP %d %.200s", what, took, a.HTTPStatus, a.Text)
			case a.Status != "":
				t.Logf("%s (%v): %s %v", what, took, a.Status, a.State)
			default:
				t.Logf("%s (%v)", what, took)
			}
			return a
		case <-b.p.exited:
			t.Fatalf("%s: sso-browser.mjs exited (%v)", what, b.p.err)
		case <-timer.C:
			t.Fatalf("%s: no answer from sso-browser.mjs within %v", what, browserBudget)
		}
	}
}

// open opens url in tab; reload, click, get and shot are the script's other steps.
func (b *ssoBrowser) open(t *testing.T, tab, url string) ssoAnswer {
	t.Helper()
	return b.do(t, "open "+url+" in tab "+tab, map[string]any{"op": "open", "tab": tab, "url": url})
}

func (b *ssoBrowser) reload(t *testing.T, tab string) ssoAnswer {
	t.Helper()
	return b.do(t, "reload tab "+tab, map[string]any{"op": "reload", "tab": tab})
}

func (b *ssoBrowser) click(t *testing.T, tab, selector string, navigates bool) ssoAnswer {
	t.Helper()
	return b.do(t, "click "+selector+" in tab "+tab, map[string]any{"op": "click", "tab": tab, "selector": selector, "navigates": navigates})
}

func (b *ssoBrowser) get(t *testing.T, tab, url string) ssoAnswer {
	t.Helper()
	return b.do(t, "get "+url+" in tab "+tab, map[string]any{"op": "get", "tab": tab, "url": url})
}

// shot writes a screenshot of tab to interop/.cache/NAME.png.
func (b *ssoBrowser) shot(t *testing.T, tab, name string) {
	t.Helper()
	b.do(t, "screenshot "+name, map[string]any{"op": "shot", "tab": tab, "path": filepath.Join(b.shots, name+".png")})
}

// upstreamAuthorizations is the upstream's authorization-request count (GET /__stats).
func upstreamAuthorizations(t *testing.T, w *asWorld) int {
	t.Helper()
	return getStats(t, w.upstreamURL).AuthorizationRequests
}

// wantNoUpstream fails when the step reached the upstream, by the upstream's own count
// (before, read before the step) and by the browser's requests.
func wantNoUpstream(t *testing.T, w *asWorld, step string, before int, a ssoAnswer) {
	t.Helper()
	if got := upstreamAuthorizations(t, w); got != before {
		t.Errorf("%s: upstream authorization requests %d → %d, want no upstream visit", step, before, got)
	}
	if up := a.to(w.upstreamURL); len(up) > 0 {
		t.Errorf("%s: the browser went to the upstream: %+v", step, up)
	}
}

// wantEventFor waits (bounded) for the first login event of type typ for clientID and
// returns it.
func wantEventFor(t *testing.T, p *proc, typ, clientID string) loginEvent {
	t.Helper()
	return wantEventWhere(t, p, fmt.Sprintf("%q event for %s", typ, clientID), func(ev loginEvent) bool {
		return ev.Type == typ && ev.Raw["client_id"] == clientID
	})
}

// wantEventWhere waits (bounded) for the first login event for which match holds.
func wantEventWhere(t *testing.T, p *proc, what string, match func(loginEvent) bool) loginEvent {
	t.Helper()
	deadline := time.Now().Add(eventTimeout)
	for {
		for _, ev := range p.Events() {
			if match(ev) {
				return ev
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s on the broker's stdout within %v", what, eventTimeout)
		}
		time.Sleep(pollInterval)
	}
}

// TestSPAsShareOneBrokerSessionAndOneLogoutEndsBoth: auth0-spa-js on two origins in one
// Chromium. The first app logs in through the upstream; a reload brings its session back from
// the broker (checkSession: prompt=none, web_message) without the upstream; the second app's
// loginWithRedirect is answered from the broker's session without the upstream; logging out of
// the first (spa-js logout → /v2/logout) ends the broker session, so after a reload neither app
// is authenticated and the broker answers prompt=none with login_required.
func TestSPAsShareOneBrokerSessionAndOneLogoutEndsBoth(t *testing.T) {
	t.Parallel()
	needPeers(t)
	needChromium(t)
	began := time.Now()
	a := startSSOSPA(t, "sso-spa-a")
	b := startSSOSPA(t, "sso-spa-b")
	w := setupAS(t, 1, asOptions{clientsYAML: a.clientYAML() + b.clientYAML()})
	a.configure(t, w)
	b.configure(t, w)
	br := startSSOBrowser(t, w.base(), w.upstreamURL)
	t.Logf("broker %s, upstream %s, apps %s and %s: started in %v", w.base(), w.upstreamURL, a.origin, b.origin, time.Since(began).Round(time.Millisecond))

	// App A: not signed in, then a login through the upstream.
	if got := br.open(t, "a", a.page()); got.authenticated() || got.Status != "ready" {
		t.Fatalf("app A before login: %s, want ready and not authenticated", got)
	}
	got := br.click(t, "a", "#login", true)
	if !got.authenticated() || got.PageError != "" {
		t.Fatalf("app A after login: %s, want authenticated", got)
	}
	if user, _ := got.State["user"].(map[string]any); user["email"] != "alice@example.com" {
		t.Errorf("app A user = %v, want alice", got.State["user"])
	}
	if tok, _ := got.State["token"].(map[string]any); tok["token_type"] != "DPoP" || tok["cnf_jkt"] == nil {
		t.Errorf("app A token = %v, want a DPoP-bound token", got.State["token"])
	}
	upstream := upstreamAuthorizations(t, w)
	if upstream == 0 || len(got.to(w.upstreamURL)) == 0 {
		t.Fatalf("app A's login did not go through the upstream (authorization requests %d): %s", upstream, got)
	}
	if ev := wantEventFor(t, w.brokers[0].proc, "s", a.clientID); ev.Details["sso"] == true {
		t.Errorf("app A's first login is marked single sign-on: %s", eventJSON(ev))
	}

	// Reload: memory cache gone; checkSession asks the broker silently, which answers from the session.
	got = br.reload(t, "a")
	if !got.authenticated() {
		t.Fatalf("app A after reload: %s, want authenticated from the broker session", got)
	}
	wantNoUpstream(t, w, "app A reload", upstream, got)
	if !hasSilentAuthorize(got.to(w.base()), a.clientID) {
		t.Errorf("app A reload: no prompt=none web_message /authorize at the broker: %+v", got.Requests)
	}
	wantEventFor(t, w.brokers[0].proc, "ssa", a.clientID)
	br.shot(t, "a", "sso-spa-a-reloaded")

	// App B on another origin: no session of its own; its login is answered by the broker's session.
	if got := br.open(t, "b", b.page()); got.authenticated() {
		t.Fatalf("app B before login: %s, want not authenticated (it never logged in)", got)
	}
	got = br.click(t, "b", "#login", true)
	if !got.authenticated() || got.PageError != "" {
		t.Fatalf("app B after login: %s, want authenticated", got)
	}
	wantNoUpstream(t, w, "app B login", upstream, got)
	if ev := wantEventFor(t, w.brokers[0].proc, "s", b.clientID); ev.Details["sso"] != true {
		t.Errorf("app B's login event lacks details.sso: %s", eventJSON(ev))
	}
	if user, _ := got.State["user"].(map[string]any); user["email"] != "alice@example.com" {
		t.Errorf("app B user = %v, want alice", got.State["user"])
	}
	br.shot(t, "b", "sso-spa-b-signed-in")

	// Log out of A: spa-js logout → the broker's /v2/logout → back to A, signed out.
	got = br.click(t, "a", "#logout", true)
	if got.authenticated() {
		t.Fatalf("app A after logout: %s, want not authenticated", got)
	}
	if !hasPath(got.to(w.base()), "/v2/logout") {
		t.Errorf("app A logout did not go through the broker's /v2/logout: %+v", got.Requests)
	}
	wantEventFor(t, w.brokers[0].proc, "slo", a.clientID)
	// spa-js forgot A locally; the broker must have forgotten the session too.
	if got = br.click(t, "a", "#silent", false); got.Silent["error"] != "login_required" {
		t.Errorf("app A prompt=none after logout: %v, want login_required", got.Silent)
	}
	// B still believes it is signed in (its is.authenticated cookie): its reload asks the broker.
	got = br.reload(t, "b")
	if got.authenticated() {
		t.Fatalf("app B after A's logout and a reload: %s, want not authenticated", got)
	}
	if !hasSilentAuthorize(got.to(w.base()), b.clientID) {
		t.Errorf("app B reload: no prompt=none /authorize at the broker: %+v", got.Requests)
	}
	wantNoUpstream(t, w, "app B reload after logout", upstream, got)
	if got = br.click(t, "b", "#silent", false); got.Silent["error"] != "login_required" {
		t.Errorf("app B prompt=none after logout: %v, want login_required", got.Silent)
	}
	br.shot(t, "b", "sso-spa-b-signed-out")
	t.Logf("scenario done in %v", time.Since(began).Round(time.Millisecond))
}

// hasSilentAuthorize reports whether reqs hold a prompt=none, response_mode=web_message
// /authorize of clientID.
func hasSilentAuthorize(reqs []ssoRequest, clientID string) bool {
	for _, r := range reqs {
		if r.Path == "/authorize" && r.ClientID == clientID && r.Prompt == "none" && r.ResponseMode == "web_message" {
			return true
		}
	}
	return false
}

// hasPath reports whether reqs hold a request to path.
func hasPath(reqs []ssoRequest, path string) bool {
	for _, r := range reqs {
		if r.Path == path {
			return true
		}
	}
	return false
}

// eocApp is eoc.mjs (express-openid-connect with backchannelLogout) on a socket the test opened,
// so its URL is in the broker's config before it starts.
type eocApp struct {
	clientID, secret string
	sock             *socket
	url              string // http://127.0.0.1:PORT, set by start
}

func newEOCApp(t *testing.T, clientID string) *eocApp {
	t.Helper()
	return &eocApp{clientID: clientID, secret: randomHex(t, 24), sock: listenSocket(t)}
}

// envKey is the broker environment variable holding the app's client secret.
func (e *eocApp) envKey() string {
	return "INTEROP_EOC_SECRET_" + strings.ToUpper(strings.ReplaceAll(e.clientID, "-", "_"))
}

// clientYAML registers the app at the broker: a confidential client (client_secret_basic)
// whose back-channel logout URI is the library's /backchannel-logout route.
func (e *eocApp) clientYAML() string {
	return fmt.Sprintf(`  - client_id: %[1]q
    name: "express-openid-connect %[1]s"
    client_secret: "${%[2]s}"
    token_endpoint_auth_method: client_secret_basic
    redirect_uris: ["%[3]s/callback"]
    backchannel_logout_uri: "%[3]s/backchannel-logout"
    backchannel_logout_session_required: true
    connections: ["oidc-provider"]
`, e.clientID, e.envKey(), e.sock.URL)
}

// start runs eoc.mjs against the broker of w.
func (e *eocApp) start(t *testing.T, w *asWorld) {
	t.Helper()
	_, e.url = startNodeOn(t, e.sock, "eoc.mjs", "--issuer", w.issuer, "--client-id", e.clientID, "--client-secret", e.secret)
}

// backchannelLogouts is the app's count of POST /backchannel-logout answers by status.
func (e *eocApp) backchannelLogouts(t *testing.T) map[string]int {
	t.Helper()
	_, body, raw := getJSON(t, http.DefaultClient, e.url+"/__stats")
	var s struct {
		BackchannelLogouts map[string]int `json:"backchannel_logouts"`
	}
	if b, err := json.Marshal(body); err != nil || json.Unmarshal(b, &s) != nil {
		t.Fatalf("eoc.mjs /__stats: %s", raw)
	}
	return s.BackchannelLogouts
}

// loginEOC logs in at the express app in the browser's tab and checks /me answers 200 as alice.
func loginEOC(t *testing.T, br *ssoBrowser, tab string, e *eocApp) ssoAnswer {
	t.Helper()
	got := br.get(t, tab, e.url+"/login")
	if got.HTTPStatus != http.StatusOK || !strings.Contains(got.Text, `"authenticated":true`) {
		t.Fatalf("express app login ended at %s with %d: %s", got.URL, got.HTTPStatus, got.Text)
	}
	me := br.get(t, tab, e.url+"/me")
	if me.HTTPStatus != http.StatusOK || !strings.Contains(me.Text, "alice@example.com") {
		t.Fatalf("express app /me after login: %d %s, want 200 with alice", me.HTTPStatus, me.Text)
	}
	return got
}

// waitEOCLoggedOut polls (bounded) the express app's /me in the browser's tab until it answers
// 401: the back-channel logout reached the app and its middleware dropped the session.
func waitEOCLoggedOut(t *testing.T, br *ssoBrowser, tab string, e *eocApp) {
	t.Helper()
	deadline := time.Now().Add(eventTimeout)
	polls := 0
	for {
		me := br.doLogged(t, "poll express /me", map[string]any{"op": "get", "tab": tab, "url": e.url + "/me"}, false)
		if me.HTTPStatus == http.StatusUnauthorized {
			t.Logf("express app /me answered 401 after %d polls", polls)
			return
		}
		polls++
		if time.Now().After(deadline) {
			t.Fatalf("express app /me still %d %s %v after the logout (back-channel logouts received %v)",
				me.HTTPStatus, me.Text, eventTimeout, e.backchannelLogouts(t))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// spaSignedInWithEOC starts a broker (upstream.mjs with upstreamArgs), an auth0-spa-js app and
// an express-openid-connect app registered at it and one browser, and signs in at the SPA
// through the upstream; it returns them with the upstream's authorization count after it.
func spaSignedInWithEOC(t *testing.T, upstreamArgs ...string) (*ssoSPA, *eocApp, *asWorld, *ssoBrowser, int) {
	t.Helper()
	began := time.Now()
	a := startSSOSPA(t, "sso-spa-a")
	e := newEOCApp(t, "eoc-app")
	w := setupAS(t, 1, asOptions{
		clientsYAML:  a.clientYAML() + e.clientYAML(),
		env:          map[string]string{e.envKey(): e.secret},
		upstreamArgs: upstreamArgs,
	})
	a.configure(t, w)
	e.start(t, w)
	br := startSSOBrowser(t, w.base(), w.upstreamURL)
	t.Logf("broker %s, upstream %s, SPA %s, express app %s: started in %v", w.base(), w.upstreamURL, a.origin, e.url, time.Since(began).Round(time.Millisecond))
	br.open(t, "spa", a.page())
	if got := br.click(t, "spa", "#login", true); !got.authenticated() {
		t.Fatalf("SPA after login: %s, want authenticated", got)
	}
	return a, e, w, br, upstreamAuthorizations(t, w)
}

// TestLogoutAtSPAEndsExpressAppSessionByBackChannel: the user logs in at an auth0-spa-js app
// through the upstream, then at an express-openid-connect app without the upstream (single
// sign-on); logging out of the SPA (/v2/logout) ends the broker session, whose back-channel
// logout (OpenID Connect Back-Channel Logout 1.0) reaches the express app's /backchannel-logout:
// the library accepts the logout token (204) and its /me answers 401 to the same browser.
func TestLogoutAtSPAEndsExpressAppSessionByBackChannel(t *testing.T) {
	t.Parallel()
	needPeers(t)
	needChromium(t)
	began := time.Now()
	_, e, w, br, upstream := spaSignedInWithEOC(t)

	// The express app: its /login is answered by the broker's session.
	got := loginEOC(t, br, "eoc", e)
	wantNoUpstream(t, w, "express app login", upstream, got)
	if ev := wantEventFor(t, w.brokers[0].proc, "s", e.clientID); ev.Details["sso"] != true {
		t.Errorf("express app's login event lacks details.sso: %s", eventJSON(ev))
	}
	br.shot(t, "eoc", "sso-eoc-signed-in")

	// Logout at the SPA: the broker notifies the express app server to server.
	if got := br.click(t, "spa", "#logout", true); got.authenticated() {
		t.Fatalf("SPA after logout: %s, want not authenticated", got)
	}
	waitEOCLoggedOut(t, br, "eoc", e)
	if n := e.backchannelLogouts(t); n["204"] != 1 || len(n) != 1 {
		t.Errorf("express app back-channel logout answers = %v, want one 204", n)
	}
	if ev := wantEventFor(t, w.brokers[0].proc, "oidc_backchannel_logout_succeeded", e.clientID); ev.Details["status"] == nil {
		t.Errorf("back-channel logout event without the app's status: %s", eventJSON(ev))
	}
	br.shot(t, "eoc", "sso-eoc-signed-out")
	t.Logf("scenario done in %v", time.Since(began).Round(time.Millisecond))
}

// upstreamBackchannelLogoutPath is the broker's endpoint for the upstream's back-channel logout
// of the connection "oidc-provider": /logout/backchannel/{connection id} (docs/sessions.md,
// "Upstream back-channel logout"), the id derived from the name as the config has none.
var upstreamBackchannelLogoutPath = "/logout/backchannel/" + config.DeriveConnectionID("oidc-provider")

// TestUpstreamLogoutEndsBrokerSessionAndEveryApp: the user logs in at an auth0-spa-js app
// through the upstream and at an express-openid-connect app from the broker's session; then
// signs out at the upstream (oidc-provider's end_session_endpoint, logout confirmed). The
// upstream's back-channel logout reaches the broker's endpoint for the connection, which ends
// the broker session of that upstream sid and notifies the apps: the express app's /me answers
// 401, and the SPA after a reload is not authenticated (prompt=none gets login_required).
func TestUpstreamLogoutEndsBrokerSessionAndEveryApp(t *testing.T) {
	t.Parallel()
	needPeers(t)
	needChromium(t)
	began := time.Now()
	a, e, w, br, upstream := spaSignedInWithEOC(t, "--backchannel-logout-uri", "{broker}"+upstreamBackchannelLogoutPath)
	wantNoUpstream(t, w, "express app login", upstream, loginEOC(t, br, "eoc", e))

	// Sign out at the upstream, in the same browser (its upstream session cookie).
	status, disco, raw := getJSON(t, http.DefaultClient, w.upstreamURL+"/.well-known/openid-configuration")
	endSession, _ := disco["end_session_endpoint"].(string)
	if status != http.StatusOK || endSession == "" {
		t.Fatalf("upstream discovery: %d, no end_session_endpoint: %s", status, raw)
	}
	if got := br.get(t, "upstream", endSession); got.HTTPStatus != http.StatusOK || !strings.Contains(got.Text, "Yes, sign me out") {
		t.Fatalf("upstream end_session: %d %s, want the confirmation page", got.HTTPStatus, got.Text)
	}
	br.do(t, "confirm the upstream logout", map[string]any{"op": "submit", "tab": "upstream", "selector": "#upstream-logout", "wait_for": "#upstream-signed-out"})
	br.shot(t, "upstream", "sso-upstream-signed-out")
	// oidc-provider answers the confirmation only once its back-channel POSTs have been answered.
	if st := getStats(t, w.upstreamURL); st.BackchannelLogouts["succeeded"] != 1 || st.BackchannelLogouts["failed"] != 0 {
		t.Fatalf("upstream back-channel logouts = %v, want one accepted by the broker", st.BackchannelLogouts)
	}

	// The broker ended the session of that upstream sid and told the express app.
	ev := wantEventWhere(t, w.brokers[0].proc, `slo event of the upstream back-channel logout`, func(ev loginEvent) bool {
		return ev.Type == "slo" && ev.Details["reason"] == "upstream back-channel logout"
	})
	// oidc-provider's logout token names the upstream session (sid, as registered) and the user.
	if by := fmt.Sprint(ev.Details["upstream_logout_by"]); by != "[sid sub]" || ev.Details["session_id"] == nil {
		t.Errorf("upstream back-channel logout event = %s, want details.upstream_logout_by [sid sub] and the ended session_id", eventJSON(ev))
	}
	waitEOCLoggedOut(t, br, "eoc", e)
	if n := e.backchannelLogouts(t); n["204"] != 1 || len(n) != 1 {
		t.Errorf("express app back-channel logout answers = %v, want one 204", n)
	}
	wantEventFor(t, w.brokers[0].proc, "oidc_backchannel_logout_succeeded", e.clientID)
	// The SPA has no back-channel URI: its reload asks the broker, which has no session.
	got := br.reload(t, "spa")
	if got.authenticated() {
		t.Fatalf("SPA after the upstream logout and a reload: %s, want not authenticated", got)
	}
	if !hasSilentAuthorize(got.to(w.base()), a.clientID) {
		t.Errorf("SPA reload: no prompt=none /authorize at the broker: %+v", got.Requests)
	}
	if got = br.click(t, "spa", "#silent", false); got.Silent["error"] != "login_required" {
		t.Errorf("SPA prompt=none after the upstream logout: %v, want login_required", got.Silent)
	}
	br.shot(t, "spa", "sso-spa-after-upstream-logout")
	t.Logf("scenario done in %v", time.Since(began).Round(time.Millisecond))
}
