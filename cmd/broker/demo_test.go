package main

import (
	"context"
	"encoding/json"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/logs/logtest"
)

// demoRun is `broker demo` running in-process, with what it printed.
type demoRun struct {
	out, errOut *logtest.Buffer
	done        chan int
}

// startDemoCommand runs `broker demo args...` until the test ends (then it must exit 0).
func startDemoCommand(t *testing.T, args ...string) *demoRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &demoRun{out: &logtest.Buffer{}, errOut: &logtest.Buffer{}, done: make(chan int, 1)}
	go func() { r.done <- run(ctx, append([]string{"demo"}, args...), r.out, r.errOut) }()
	t.Cleanup(func() {
		cancel()
		if code := <-r.done; code != 0 {
			t.Errorf("demo exited %d after Ctrl-C\n%s%s", code, r.out.String(), r.errOut.String())
		}
	})
	return r
}

// waitPrinted waits (generously: a loaded machine) until the demo printed want, and fails
// with its output when it exits or never prints it.
func (r *demoRun) waitPrinted(t *testing.T, want string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if out := r.out.String(); strings.Contains(out, want) {
			return out
		}
		select {
		case code := <-r.done:
			r.done <- code
			t.Fatalf("demo exited %d before printing %q\n%s%s", code, want, r.out.String(), r.errOut.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("demo did not print %q within 60s\n%s%s", want, r.out.String(), r.errOut.String())
	return ""
}

var (
	demoAppLine    = regexp.MustCompile(`(?m)^  sample app    (http://\S+)/$`)
	demoBrokerLine = regexp.MustCompile(`(?m)^  broker        (http://\S+)/  \(issuer; discovery at `)
	demoIdPLine    = regexp.MustCompile(`(?m)^  upstream IdP  (http://\S+)$`)
	demoLogsLine   = regexp.MustCompile(`(?m)^  BROKER_URL=(\S+) BROKER_MGMT_TOKEN=(\S+) (.+) logs --follow$`)
	demoSecondLine = regexp.MustCompile(`(?m)^  second app    (http://\S+)/$`)
	demoCurlLine   = regexp.MustCompile(`(?m)^  curl -H 'Authorization: Bearer (\S+)' (http://\S+/api/v2/users/\S+/sessions)$`)
)

func TestDemoFallsBackToFreePortsWhenItsPortsAreTaken(t *testing.T) {
	// Take the demo's default ports. One that something else holds right now (another test run
	// on the same machine) may be free again by the time the demo starts, so only the ports
	// this test holds are asserted on.
	held := map[string]bool{}
	for _, port := range []string{"8080", "8081", "8082"} {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
		if err == nil {
			t.Cleanup(func() { _ = ln.Close() })
			held[port] = true
		}
	}
	d := startDemoCommand(t)
	out := d.waitPrinted(t, "Stop the demo with Ctrl-C.\n")

	app, brk, idp, logsCmd := demoAppLine.FindStringSubmatch(out), demoBrokerLine.FindStringSubmatch(out),
		demoIdPLine.FindStringSubmatch(out), demoLogsLine.FindStringSubmatch(out)
	second, curl := demoSecondLine.FindStringSubmatch(out), demoCurlLine.FindStringSubmatch(out)
	if app == nil || brk == nil || idp == nil || logsCmd == nil || second == nil || curl == nil ||
		!strings.Contains(out, "\nOpen "+app[1]+"/ in your browser\n") || second[1] != app[1]+demoSecondPath ||
		!strings.Contains(out, "with every scope (read:logs read:connections create:connections ") {
		t.Fatalf("the demo must print the apps', broker and IdP URLs, a broker logs command, a sessions curl and what to open:\n%s", out)
	}
	for _, u := range []string{app[1], brk[1], idp[1]} {
		pu, err := url.Parse(u)
		if err != nil || pu.Hostname() != "127.0.0.1" || held[pu.Port()] {
			t.Fatalf("URL %s is not on a free loopback port:\n%s", u, out)
		}
	}
	for p := range held {
		if !strings.Contains(out, "  note: port "+p+" is not available (") {
			t.Errorf("no note that port %s was taken:\n%s", p, out)
		}
	}
	if logsCmd[1] != brk[1] || len(logsCmd[2]) < 32 || logsCmd[3] != selfCommand() {
		t.Fatalf("logs command %q: want BROKER_URL %s, a token of at least 32 characters, and %q", logsCmd[0], brk[1], selfCommand())
	}

	// The printed URLs work: the broker is up, a login goes through app → broker → IdP → app.
	resp, err := http.Get(brk[1] + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s/healthz: %s", brk[1], resp.Status)
	}
	demoLogin(t, app[1], idp[1])

	// The printed token reads the login log through the management API …
	req, _ := http.NewRequest(http.MethodGet, brk[1]+"/api/v2/logs?q=type:s", nil)
	req.Header.Set("Authorization", "Bearer "+logsCmd[2])
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	var events []struct {
		Type       string `json:"type"`
		Connection string `json:"connection"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &events) != nil || len(events) != 1 ||
		events[0].Type != "s" || events[0].Connection != demoConnection {
		t.Fatalf("GET /api/v2/logs with the printed token: %s %s", resp.Status, body)
	}
	// … and so does the printed command, which takes both from the environment.
	t.Setenv("BROKER_URL", logsCmd[1])
	t.Setenv("BROKER_MGMT_TOKEN", logsCmd[2])
	code, logsOut, logsErr := runCmd(t, "logs", "--type", "s")
	if code != 0 || !strings.Contains(logsOut, demoConnection) || !strings.Contains(logsOut, "dpop ES256") {
		t.Fatalf("broker logs with the printed environment: exit %d\n%s%s", code, logsOut, logsErr)
	}
	// The printed curl lists the user's broker session.
	var list struct {
		Sessions []struct {
			ID string `json:"id"`
		} `json:"sessions"`
	}
	if demoMgmtGet(t, curl[1], curl[2], &list); curl[1] != logsCmd[2] || !strings.HasPrefix(curl[2], brk[1]+"/") || len(list.Sessions) != 1 {
		t.Fatalf("%s: %+v", curl[0], list)
	}
}

func TestDemoRefusesATakenPortItWasToldToUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	code, out, errOut := runCmd(t, "demo", "--broker-port", port, "--idp-port", "0", "--app-port", "0")
	if code != 1 || out != "" || !strings.Contains(errOut, "broker demo: broker: listen on 127.0.0.1:"+port+" (--broker-port): ") ||
		!strings.Contains(errOut, "; --broker-port 0 picks a free port") {
		t.Fatalf("exit %d\nstdout %q\nstderr %q", code, out, errOut)
	}
}

func TestDemoStaysOnLoopback(t *testing.T) {
	code, _, errOut := runCmd(t, "demo", "--listen-host", "192.0.2.1", "--broker-port", "0", "--idp-port", "0", "--app-port", "0")
	if code != 1 || !strings.Contains(errOut, `--listen-host "192.0.2.1": the demo serves plain http, so it runs on loopback`) {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}

// TestDemoShowsSingleSignOnSilentAuthAndBackchannelLogout clicks through the demo's two apps
// in one browser (docs/sessions.md): the first login goes to the IdP; the second app signs in
// from the broker session without it (single sign-on); a silent check (prompt=none, OIDC Core
// §3.1.2.6) signs in; logging out of the first app ends the broker session, whose back-channel
// logout (Back-Channel Logout 1.0) signs the second app out; a silent check then comes back
// login_required.
func TestDemoShowsSingleSignOnSilentAuthAndBackchannelLogout(t *testing.T) {
	d := runDemo(t)
	c, body := demoLogin(t, d.appURL, d.idpURL)
	sid := demoPageSID(t, body)
	if n := d.idpStats.AuthorizeRequests.Load(); n != 1 {
		t.Fatalf("the first login made %d authorization requests at the IdP, want 1", n)
	}

	body = fetch(t, c, http.MethodGet, d.secondURL+"/login", nil)
	for _, want := range []string{"<title>Second App</title>", `<h1 id="user">Hello, Alice Example</h1>`,
		`<p id="how">Single sign-on: the broker answered from your broker session, with no trip to the identity provider.</p>`,
		`&#34;sso&#34;: true`} {
		if !strings.Contains(body, want) {
			t.Fatalf("second app after single sign-on lacks %s:\n%s", want, body)
		}
	}
	if got := demoPageSID(t, body); got != sid {
		t.Fatalf("second app's sid %q, want the first app's %q (one broker session)", got, sid)
	}
	body = fetch(t, c, http.MethodGet, d.secondURL+"/silent", nil)
	if !strings.Contains(body, `<p id="how">Signed in (silent authentication): prompt=none`) {
		t.Fatalf("second app after a silent check:\n%s", body)
	}
	if n := d.idpStats.AuthorizeRequests.Load(); n != 1 {
		t.Fatalf("single sign-on and the silent check reached the IdP: %d authorization requests, want 1", n)
	}

	// The demo's management token reads the session, which both apps went through.
	sessionsURL := strings.TrimSuffix(d.issuer, "/") + "/api/v2/users/oidc%7C" + demoConnection + "%7C" + demoSubject + "/sessions"
	var list struct {
		Sessions []struct {
			ID      string `json:"id"`
			Clients []struct {
				ClientID string `json:"client_id"`
			} `json:"clients"`
		} `json:"sessions"`
	}
	demoMgmtGet(t, d.mgmtToken, sessionsURL, &list)
	if len(list.Sessions) != 1 || list.Sessions[0].ID != sid || len(list.Sessions[0].Clients) != 2 {
		t.Fatalf("GET %s: %+v, want session %s with both apps", sessionsURL, list, sid)
	}

	// Log out of the first app, confirming on the broker's page (the app sends no id_token_hint).
	body = fetch(t, c, http.MethodGet, d.appURL+"/logout", nil)
	action := regexp.MustCompile(`<form method="post" action="([^"]+)">`).FindStringSubmatch(body)
	if action == nil || !strings.Contains(body, `id="confirm-logout"`) {
		t.Fatalf("broker's sign-out page:\n%s", body)
	}
	form := url.Values{}
	for _, f := range regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`).FindAllStringSubmatch(body, -1) {
		form.Set(f[1], html.UnescapeString(f[2]))
	}
	body = fetch(t, c, http.MethodPost, html.UnescapeString(action[1]), form)
	if !strings.Contains(body, `<a class="button" id="login" href="/login">Log in</a>`) {
		t.Fatalf("first app after logout:\n%s", body)
	}

	// The second app learns of it by back-channel logout, asynchronously: poll its page.
	deadline := time.Now().Add(60 * time.Second)
	for {
		body = fetch(t, c, http.MethodGet, d.secondURL+"/", nil)
		if strings.Contains(body, `<p class="notice" id="signed-out">The broker signed you out of this app by back-channel logout at `) {
			break
		}
		if !strings.Contains(body, `id="user"`) || time.Now().After(deadline) {
			t.Fatalf("second app after the first app's logout (no back-channel logout within 60s?):\n%s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(body, "<code>"+sid+"</code> ended.") || !strings.Contains(body, `id="login"`) {
		t.Fatalf("second app after back-channel logout:\n%s", body)
	}
	if body = fetch(t, c, http.MethodGet, d.secondURL+"/", nil); strings.Contains(body, `id="signed-out"`) || strings.Contains(body, `id="user"`) {
		t.Fatalf("second app's notice must show once, then the home page:\n%s", body)
	}
	body = fetch(t, c, http.MethodGet, d.secondURL+"/silent", nil)
	if !strings.Contains(body, `<p class="notice" id="silent-result">Silent check: <code>login_required</code>.`) || strings.Contains(body, `id="user"`) {
		t.Fatalf("second app's silent check after logout:\n%s", body)
	}
	demoMgmtGet(t, d.mgmtToken, sessionsURL, &list)
	if len(list.Sessions) != 0 {
		t.Fatalf("sessions after logout: %+v", list)
	}
	if n := d.idpStats.AuthorizeRequests.Load(); n != 1 {
		t.Fatalf("%d authorization requests at the IdP, want 1", n)
	}
}

// demoPageSID is the broker session id an app's signed-in page shows.
func demoPageSID(t *testing.T, body string) string {
	t.Helper()
	m := regexp.MustCompile(`<code id="sid">([A-Za-z0-9_-]{22})</code>`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("page shows no sid:\n%s", body)
	}
	return m[1]
}

// demoMgmtGet reads u from the management API with token into v.
func demoMgmtGet(t *testing.T, token, u string, v any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, v) != nil {
		t.Fatalf("GET %s: %s %s", u, resp.Status, body)
	}
}

// TestDemoTokenManagesAppsAndTheDemoPublishesClientAuthKeys follows the README's clients flow
// against the demo with its printed token: create an app, log in with it through the demo IdP
// (an app at a callback nobody serves: the code is read from the redirect), rotate its secret
// (the old one is refused), delete it (204). The demo publishes its private_key_jwt keys.
func TestDemoTokenManagesAppsAndTheDemoPublishesClientAuthKeys(t *testing.T) {
	d := runDemo(t)
	var banner strings.Builder
	d.printWelcome(&banner, "broker")
	brokerURL := strings.TrimSuffix(d.issuer, "/")
	for _, want := range []string{
		"\n  export BROKER_URL=" + brokerURL + " BROKER_MGMT_TOKEN=" + d.mgmtToken + "\n",
		"\n  client-auth   " + brokerURL + "/client-auth/jwks.json  (the broker's private_key_jwt keys: RS256, ES256)\n",
	} {
		if !strings.Contains(banner.String(), want) {
			t.Fatalf("banner lacks %q:\n%s", want, banner.String())
		}
	}
	var jwks struct {
		Keys []struct {
			Alg string `json:"alg"`
			Use string `json:"use"`
		} `json:"keys"`
	}
	resp, err := http.Get(brokerURL + "/client-auth/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&jwks)
	_ = resp.Body.Close()
	if err != nil || len(jwks.Keys) != 2 || jwks.Keys[0].Alg != "RS256" || jwks.Keys[1].Alg != "ES256" || jwks.Keys[0].Use != "sig" {
		t.Fatalf("/client-auth/jwks.json: %+v %v", jwks, err)
	}

	call := func(method, path string, body any) (int, map[string]any) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = strings.NewReader(string(b))
		}
		req, _ := http.NewRequest(method, brokerURL+path, rd)
		req.Header.Set("Authorization", "Bearer "+d.mgmtToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	const cb = "http://127.0.0.1:9/callback" // nobody serves it: the code is read from the redirect
	status, app := call(http.MethodPost, "/api/v2/clients", map[string]any{
		"name": "My app", "callbacks": []string{cb}, "connections": []string{demoConnection},
	})
	id, secret := app["client_id"].(string), app["client_secret"].(string)
	if status != http.StatusCreated || id == "" || secret == "" {
		t.Fatalf("POST /api/v2/clients with the demo token: %d %v", status, app)
	}
	if status, got := call(http.MethodGet, "/api/v2/clients/"+id, nil); status != http.StatusOK || got["name"] != "My app" {
		t.Fatalf("GET the new client: %d %v", status, got)
	}

	token := func(code, secret string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, brokerURL+"/oauth/token", strings.NewReader(url.Values{
			"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {cb},
		}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(id, secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	login := func() string {
		t.Helper()
		jar, _ := cookiejar.New(nil)
		c := &http.Client{Jar: jar, Timeout: 30 * time.Second,
			CheckRedirect: func(req *http.Request, _ []*http.Request) error {
				if strings.HasPrefix(req.URL.String(), cb) {
					return http.ErrUseLastResponse
				}
				return nil
			}}
		page := fetch(t, c, http.MethodGet, brokerURL+"/authorize?"+url.Values{
			"response_type": {"code"}, "client_id": {id}, "redirect_uri": {cb},
			"scope": {"openid profile email"}, "state": {"xyz"}, "nonce": {"n-0S6_WzA2Mj"},
		}.Encode(), nil)
		m := regexp.MustCompile(`name="request" value="([^"]+)"`).FindStringSubmatch(page)
		if m == nil {
			t.Fatalf("upstream sign-in page: %s", page)
		}
		resp, err := c.PostForm(d.idpURL+"/authorize/approve", url.Values{"request": {m[1]}})
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		loc, _ := url.Parse(resp.Header.Get("Location"))
		if loc == nil || loc.Query().Get("code") == "" || loc.Query().Get("state") != "xyz" {
			t.Fatalf("after signing in: %s, Location %q", resp.Status, resp.Header.Get("Location"))
		}
		return loc.Query().Get("code")
	}
	if got := token(login(), secret); got != http.StatusOK {
		t.Fatalf("token request of the new app: %d", got)
	}

	status, rotated := call(http.MethodPost, "/api/v2/clients/"+id+"/rotate-secret", nil)
	newSecret, _ := rotated["client_secret"].(string)
	if status != http.StatusOK || newSecret == "" || newSecret == secret {
		t.Fatalf("rotate-secret: %d %v", status, rotated)
	}
	code := login()
	if got := token(code, secret); got != http.StatusUnauthorized {
		t.Fatalf("token request with the rotated-out secret: %d, want 401", got)
	}
	if got := token(code, newSecret); got != http.StatusOK {
		t.Fatalf("token request with the new secret: %d", got)
	}

	if status, _ := call(http.MethodDelete, "/api/v2/clients/"+id, nil); status != http.StatusNoContent {
		t.Fatalf("DELETE the client: %d", status)
	}
	if status, _ := call(http.MethodGet, "/api/v2/clients/"+id, nil); status != http.StatusNotFound {
		t.Fatalf("GET a deleted client: %d", status)
	}
}

// The demo's banner names the operators' console, and the printed token opens it
// (break-glass sign-in: the demo has no console.admins).
func TestDemoBannerNamesTheConsoleWhichItsTokenOpens(t *testing.T) {
	d := runDemo(t)
	var banner strings.Builder
	d.printWelcome(&banner, "broker")
	brokerURL := strings.TrimSuffix(d.issuer, "/")
	if want := "\n  " + brokerURL + "/console/\n"; !strings.Contains(banner.String(), want) {
		t.Fatalf("banner lacks %q:\n%s", want, banner.String())
	}
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	browser := &http.Client{Jar: jar}
	resp, err := browser.Get(brokerURL + "/console/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), `name="token"`) {
		t.Fatalf("/console/: %d, want the sign-in page with its token field:\n%s", resp.StatusCode, page)
	}
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(string(page))
	if csrf == nil {
		t.Fatalf("/console/: no CSRF field on the sign-in page:\n%s", page)
	}
	resp, err = browser.PostForm(brokerURL+"/console/login/token", url.Values{"token": {d.mgmtToken}, "csrf": {csrf[1]}})
	if err != nil {
		t.Fatal(err)
	}
	home, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(home), "token:") {
		t.Fatalf("signing in with the demo's token: %d\n%s", resp.StatusCode, home)
	}
}
