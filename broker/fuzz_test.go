package broker

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// Fuzz targets for hostile input. Each runs its seed corpus in a normal go test;
// `make fuzz` runs them for a bounded time. Inputs go through the broker's handler in process
// (memory store, demoidp IdP on loopback); most fail before any upstream call.

// fuzzHarness is a broker with rate limits on (generous, so they rarely refuse), a small key
// table (eviction under fuzzed X-Forwarded-For keys) and loopback as a trusted proxy.
func fuzzHarness(f *testing.F, mut func(*config.Config)) *harness {
	return newHarness(f, harnessOpts{up: dpopUp, mutate: func(c *config.Config) {
		c.TrustedProxies = []string{"127.0.0.0/8"}
		c.RateLimits.Enabled = true
		c.RateLimits.MaxKeys = 64
		if mut != nil {
			mut(c)
		}
	}})
}

// takeTxFrom removes the login transaction a redirect to the upstream created (its state in
// loc, its browser cookie among cookies), so fuzzing does not fill the store.
func (h *harness) takeTxFrom(loc string, cookies []*http.Cookie) {
	if u, err := url.Parse(loc); err == nil {
		if st := u.Query().Get("state"); st != "" {
			for _, c := range cookies {
				if c.Name == txCookie {
					_, _ = h.store.Take(context.Background(), sessions.KindTransaction, txID(st, hashString(c.Value)))
				}
			}
		}
	}
}

// checkAppRedirect reports a problem with a redirect to an app: it must go to a registered
// redirect_uri of a client and carry iss and an error (neither handler issues codes to
// fuzzed input).
func (h *harness) appRedirectProblem(loc string) string {
	u, err := url.Parse(loc)
	if err != nil {
		return "unparseable Location"
	}
	q := u.Query()
	u.RawQuery = ""
	registered := false
	for _, c := range h.cfg.Clients {
		for _, r := range c.RedirectURIs {
			registered = registered || r == u.String()
		}
	}
	switch {
	case !registered:
		return "redirect to an unregistered URI (open redirect)"
	case q.Get("iss") != h.cfg.Issuer:
		return "app redirect without iss"
	case q.Get("error") == "" || q.Has("code"):
		return "app redirect without error (or with a code)"
	}
	return ""
}

// webMessageProblem reports a problem with a web_message page: its frame-ancestors and its
// postMessage target must both be the origin of a registered redirect URI, and it must carry
// an error (never a code) for fuzzed input.
func (h *harness) webMessageProblem(csp, body string) string {
	for _, c := range h.cfg.Clients {
		for _, r := range c.RedirectURIs {
			u, err := url.Parse(r)
			if err != nil {
				continue
			}
			origin := u.Scheme + "://" + u.Host
			if strings.HasSuffix(csp, "frame-ancestors "+origin) && strings.Contains(body, `}}, "`+origin+`");`) {
				if !strings.Contains(body, `"error":`) || strings.Contains(body, `"code":`) {
					return "web_message answer without an error (or with a code)"
				}
				return ""
			}
		}
	}
	return "web_message page for an origin that is not a registered redirect URI's"
}

func FuzzAuthorize(f *testing.F) {
	h := fuzzHarness(f, nil)
	valid, _ := url.Parse(h.authorizeURL(nil))
	spa, _ := url.Parse(h.authorizeURL(func(q url.Values) {
		q.Set("client_id", spaClient)
		q.Set("redirect_uri", h.app.URL+"/spa")
	}))
	for _, seed := range []struct{ q, xff string }{
		{q: valid.RawQuery, xff: ""},
		{q: valid.RawQuery, xff: "198.51.100.1"},
		{q: spa.RawQuery, xff: "spoofed, 198.51.100.2"},
		{q: spa.RawQuery + "&connection=corp", xff: ""},
		{q: spa.RawQuery + "&connection=nope", xff: ""},
		{q: valid.RawQuery + "&state=again", xff: ""},
		{q: valid.RawQuery + "&client_id=app", xff: ""},
		{q: valid.RawQuery + "&login_hint=a&login_hint=b", xff: ""},
		{q: valid.RawQuery + "&prompt=none", xff: ""},
		{q: valid.RawQuery + "&prompt=none&response_mode=web_message", xff: ""},
		{q: spa.RawQuery + "&response_mode=web_message", xff: ""},
		{q: valid.RawQuery + "&response_mode=fragment", xff: ""},
		{q: valid.RawQuery + "&audience=https%3A%2F%2Fapi.example", xff: ""},
		{q: valid.RawQuery + "&dpop_jkt=" + strings.Repeat("A", 43), xff: ""},
		{q: valid.RawQuery + "&x=%zz", xff: ""},
		{q: valid.RawQuery + ";x", xff: ""},
		{q: strings.Replace(valid.RawQuery, "response_type=code", "response_type=token", 1), xff: ""},
		{q: strings.Replace(valid.RawQuery, "S256", "plain", 1), xff: ""},
		{q: "client_id=app&redirect_uri=" + url.QueryEscape(h.app.URL+"/cb") + "&state=" + strings.Repeat("s", 600), xff: ""},
		{q: "", xff: ""},
		{q: "client_id=%00", xff: "::1"},
	} {
		f.Add(seed.q, seed.xff)
	}
	f.Fuzz(func(t *testing.T, rawQuery, xff string) {
		req := getRaw("/authorize", rawQuery)
		req.RemoteAddr = "127.0.0.1:40000"
		if xff != "" {
			req.Header["X-Forwarded-For"] = []string{xff}
		}
		rec := h.serve(req)
		loc := rec.Header().Get("Location")
		switch rec.Code {
		case http.StatusFound:
			if strings.HasPrefix(loc, h.up.URL+"/") {
				h.takeTxFrom(loc, rec.Result().Cookies())
				return
			}
			if p := h.appRedirectProblem(loc); p != "" {
				t.Fatalf("%s: %q", p, loc)
			}
		case http.StatusOK:
			if csp := rec.Header().Get("Content-Security-Policy"); strings.Contains(rec.Body.String(), `"authorization_response"`) {
				// web_message: posted only to the origin of a registered redirect URI, which
				// alone may frame the page.
				if p := h.webMessageProblem(csp, rec.Body.String()); p != "" {
					t.Fatalf("%s: CSP %q", p, csp)
				}
			} else if !strings.Contains(rec.Body.String(), "Choose how to sign in") {
				t.Fatalf("200 that is neither the connection chooser nor a web_message answer: %s", rec.Body.String())
			}
		case http.StatusBadRequest, http.StatusRequestURITooLong, http.StatusTooManyRequests, http.StatusServiceUnavailable:
			if !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") || loc != "" {
				t.Fatalf("%d is not an error page", rec.Code)
			}
		default:
			t.Fatalf("unexpected status %d for %q", rec.Code, rawQuery)
		}
	})
}

// Modes of FuzzCallback (bits).
const (
	cbFreshState = 1 << iota // replace state with a live transaction's
	cbTxCookie               // send that transaction's cookie
	cbFuzzCookie             // send extra as the cookie value
	cbRawQuery               // use extra as the whole raw query
)

func FuzzCallback(f *testing.F) {
	h := fuzzHarness(f, func(c *config.Config) { c.RateLimits.Enabled = false }) // logins start here at full speed
	valid := h.authorizeURL(nil)
	for _, s := range []struct {
		state, code, iss, errParam, extra string
		mode                              uint8
	}{
		{state: "", code: "code", iss: h.up.URL, errParam: "", extra: "", mode: cbFreshState | cbTxCookie},
		{state: "", code: "code", iss: "", errParam: "", extra: "", mode: cbFreshState | cbTxCookie},
		{state: "", code: "code", iss: "https://evil.example", errParam: "", extra: "", mode: cbFreshState | cbTxCookie},
		{state: "", code: "", iss: h.up.URL, errParam: "access_denied", extra: "the user said no", mode: cbFreshState | cbTxCookie},
		{state: "", code: "", iss: h.up.URL, errParam: "bad\"code", extra: "", mode: cbFreshState | cbTxCookie},
		{state: "", code: "code", iss: h.up.URL, errParam: "", extra: "forged-cookie", mode: cbFreshState | cbFuzzCookie},
		{state: "", code: "code", iss: h.up.URL, errParam: "", extra: "", mode: cbFreshState},
		{state: "forged", code: "code", iss: h.up.URL, errParam: "", extra: "", mode: 0},
		{state: strings.Repeat("s", 600), code: "code", iss: "", errParam: "", extra: "", mode: 0},
		{state: "x", code: strings.Repeat("c", 5000), iss: "", errParam: "", extra: "", mode: 0},
		{state: "", code: "", iss: "", errParam: "", extra: "state=a&state=b&code=c", mode: cbRawQuery},
		{state: "", code: "", iss: "", errParam: "", extra: "state=%zz", mode: cbRawQuery},
		{state: "", code: "", iss: "", errParam: "", extra: "", mode: cbRawQuery},
	} {
		f.Add(s.state, s.code, s.iss, s.errParam, s.extra, s.mode)
	}
	f.Fuzz(func(t *testing.T, state, code, iss, errParam, extra string, mode uint8) {
		var cookie *http.Cookie
		if mode&cbFreshState != 0 {
			u, _ := url.Parse(valid)
			rec := h.serve(getRaw("/authorize", u.RawQuery))
			loc, _ := url.Parse(rec.Header().Get("Location"))
			if rec.Code != http.StatusFound || loc == nil {
				t.Fatalf("could not start a login: %d", rec.Code)
			}
			state = loc.Query().Get("state")
			defer h.takeTxFrom(loc.String(), rec.Result().Cookies())
			for _, c := range rec.Result().Cookies() {
				if c.Name == txCookie {
					cookie = c
				}
			}
		}
		q := url.Values{}
		for k, v := range map[string]string{"state": state, "code": code, "iss": iss, "error": errParam} {
			if v != "" {
				q.Set(k, v)
			}
		}
		if errParam != "" {
			q.Set("error_description", extra)
		}
		raw := q.Encode()
		if mode&cbRawQuery != 0 {
			raw = extra
		}
		req := getRaw("/login/callback", raw)
		switch {
		case mode&cbTxCookie != 0 && cookie != nil:
			req.AddCookie(&http.Cookie{Name: txCookie, Value: cookie.Value})
		case mode&cbFuzzCookie != 0:
			req.Header.Set("Cookie", txCookie+"="+extra)
		}
		rec := h.serve(req)
		loc := rec.Header().Get("Location")
		switch rec.Code {
		case http.StatusFound:
			if p := h.appRedirectProblem(loc); p != "" {
				t.Fatalf("%s: %q", p, loc)
			}
		case http.StatusBadRequest, http.StatusRequestURITooLong:
			if !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") || loc != "" {
				t.Fatalf("%d is not an error page", rec.Code)
			}
		default:
			t.Fatalf("unexpected status %d for %q", rec.Code, raw)
		}
	})
}

func FuzzTokenRequest(f *testing.F) {
	h := fuzzHarness(f, func(c *config.Config) {
		c.DPoPServer.RequireNonce = true
		c.DPoPServer.NonceSecret = strings.Repeat("n", 32)
		c.RateLimits.Token.PerIP.Rate = "0" // every input comes from one address: let it reach the handler
	})
	a, _, _ := testSigners(f)
	proof := h.tokenProof(a)
	form := "grant_type=authorization_code&code=abc.def&redirect_uri=" + url.QueryEscape(h.app.URL+"/cb") + "&code_verifier=" + testVerifier
	basic := "Basic " + "YXBwOmFwcC1zZWNyZXQtdmFsdWU=" // app:app-secret-value
	for _, s := range []struct{ ct, body, dpop, authz string }{
		{ct: "application/x-www-form-urlencoded", body: form, dpop: "", authz: basic},
		{ct: "application/x-www-form-urlencoded", body: form, dpop: proof, authz: basic},
		{ct: "application/x-www-form-urlencoded", body: form + "&client_id=spa", dpop: proof, authz: ""},
		{ct: "application/x-www-form-urlencoded; charset=utf-8", body: form + "&client_id=app&client_secret=x", dpop: "", authz: ""},
		{ct: "application/x-www-form-urlencoded", body: "grant_type=refresh_token&refresh_token=" + strings.Repeat("A", 22) + "." + strings.Repeat("B", 43), dpop: proof, authz: basic},
		{ct: "application/x-www-form-urlencoded", body: "grant_type=password&username=a", dpop: "", authz: basic},
		{ct: "application/x-www-form-urlencoded", body: "code=a&code=b", dpop: "", authz: basic},
		{ct: "application/x-www-form-urlencoded", body: "%zz", dpop: "", authz: basic},
		{ct: "application/json", body: `{"grant_type":"authorization_code","code":"abc.def","client_id":"spa"}`, dpop: proof, authz: ""},
		{ct: "application/json", body: `{"grant_type":1}`, dpop: "", authz: basic},
		{ct: "application/json", body: `[[[[[[`, dpop: "", authz: basic},
		{ct: "application/json", body: `{"client_id":"app","client_id":"spa"}`, dpop: "", authz: ""},
		{ct: "text/plain", body: "x", dpop: "", authz: ""},
		{ct: "", body: "", dpop: "a.b.c", authz: "DPoP x"},
		{ct: "application/x-www-form-urlencoded", body: form, dpop: proof + "," + proof, authz: "Basic !!!"},
	} {
		f.Add(s.ct, s.body, s.dpop, s.authz)
	}
	f.Fuzz(func(t *testing.T, ct, body, dpopHeader, authz string) {
		req := httptest.NewRequest(http.MethodPost, "/oauth/token", strings.NewReader(body))
		req.RemoteAddr = "127.0.0.1:40000"
		if ct != "" {
			req.Header["Content-Type"] = []string{ct}
		}
		if dpopHeader != "" {
			req.Header["Dpop"] = []string{dpopHeader}
		}
		if authz != "" {
			req.Header["Authorization"] = []string{authz}
		}
		rec := h.serve(req)
		switch rec.Code {
		case http.StatusBadRequest, http.StatusUnauthorized, http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
		default:
			t.Fatalf("unexpected status %d: %s", rec.Code, rec.Body.String())
		}
		var e struct {
			Error string `json:"error"`
		}
		if rec.Header().Get("Content-Type") != "application/json" || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error == "" {
			t.Fatalf("%d is not an OAuth JSON error: %q", rec.Code, rec.Body.String())
		}
		if rec.Header().Get("Cache-Control") != "no-store" {
			t.Fatal("error response without Cache-Control: no-store")
		}
	})
}

// FuzzLogout drives /oidc/logout (GET or POST, with or without a live session cookie) with
// hostile parameters. Invariants: no 5xx; a redirect goes only to a registered
// post_logout_redirect_uri (plus state), never anywhere else (open redirect); every other
// answer is a page.
func FuzzLogout(f *testing.F) {
	h := fuzzHarness(f, func(c *config.Config) {
		app := strings.TrimSuffix(c.Clients[0].RedirectURIs[0], "/cb")
		c.Clients[0].PostLogoutRedirectURIs = []string{app + "/bye", app + "/bye?x=1"}
		c.RateLimits.Logout.PerIP.Rate = "0" // every input comes from one address: let it reach the handler
	})
	bye := h.app.URL + "/bye"
	_, idt, _ := h.logoutLogin(f) // an ID token for the seeds
	for _, seed := range []struct {
		q    string
		mode uint8 // bit 0: POST; bit 1: send the session cookie
	}{
		{q: url.Values{"id_token_hint": {idt}, "post_logout_redirect_uri": {bye}, "state": {"s"}}.Encode(), mode: 2},
		{q: url.Values{"id_token_hint": {idt}, "post_logout_redirect_uri": {bye + "?x=1"}}.Encode(), mode: 0},
		{q: url.Values{"client_id": {appClient}, "post_logout_redirect_uri": {bye}}.Encode(), mode: 3},
		{q: url.Values{"client_id": {appClient}, "post_logout_redirect_uri": {"https://evil.example/"}}.Encode(), mode: 0},
		{q: url.Values{"post_logout_redirect_uri": {bye}}.Encode(), mode: 0},
		{q: url.Values{"id_token_hint": {"a.b.c"}}.Encode(), mode: 1},
		{q: url.Values{"logout_hint": {"x"}, "confirm": {"y"}}.Encode(), mode: 3},
		{q: "state=%zz;x", mode: 0},
		{q: url.Values{"id_token_hint": {idt}, "post_logout_redirect_uri": {bye}, "federated": {""}}.Encode(), mode: 2},
		{q: "", mode: 2},
	} {
		f.Add(seed.q, seed.mode)
	}
	// The session cookie of one live login (the logout under test may end it; later inputs
	// then run without a live session, which is fine).
	var cookie *http.Cookie
	b, _, _ := h.logoutLogin(f)
	if u, err := url.Parse(h.srv.URL); err == nil {
		for _, c := range b.Jar.Cookies(u) {
			if c.Name == sessionCookie {
				cookie = c
			}
		}
	}
	f.Fuzz(func(t *testing.T, rawQuery string, mode uint8) {
		var req *http.Request
		if mode&1 != 0 {
			req = httptest.NewRequest(http.MethodPost, "/oidc/logout", strings.NewReader(rawQuery))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		} else {
			req = getRaw("/oidc/logout", rawQuery)
		}
		req.RemoteAddr = "127.0.0.1:40000"
		if mode&2 != 0 && cookie != nil {
			req.AddCookie(cookie)
		}
		rec := h.serve(req)
		switch loc := rec.Header().Get("Location"); rec.Code {
		case http.StatusFound:
			u, err := url.Parse(loc)
			if err != nil {
				t.Fatalf("unparseable Location %q", loc)
			}
			if strings.HasPrefix(loc, h.up.URL+"/logout?") { // federated: the upstream's end_session_endpoint
				return
			}
			q := u.Query()
			q.Del("state")
			u.RawQuery = q.Encode()
			if !slices.Contains(h.cfg.Clients[0].PostLogoutRedirectURIs, u.String()) {
				t.Fatalf("redirect to an unregistered URI (open redirect): %q", loc)
			}
		case http.StatusOK, http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
			if loc != "" || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
				t.Fatalf("%d is not a page (Location %q)", rec.Code, loc)
			}
		default:
			t.Fatalf("unexpected status %d for %q", rec.Code, rawQuery)
		}
	})
}

// FuzzConsole sends hostile requests to the console: any path below /console, GET or POST,
// any form body, with or without a live console session, its CSRF token and a cross-site
// Sec-Fetch-Site. Nothing may fail with 500, show a secret, open a console session without
// the management token, or let a POST through without the session's CSRF token sent from
// the console's own origin.
func FuzzConsole(f *testing.F) {
	h := fuzzHarness(f, func(c *config.Config) {
		c.Console.Admins = []config.ConsoleAdmin{{UserID: "oidc|corp|alice"}}
		c.Management.Tokens = []config.ManagementToken{{Name: "ops", Token: consoleTestToken,
			Scopes: []string{config.ScopeReadConnections, config.ScopeUpdateConnections, config.ScopeReadClients,
				config.ScopeReadSessions, config.ScopeDeleteSessions, config.ScopeReadLogs}}}
	})
	// One live session and its CSRF token (a fuzzed sign-out may end it; later inputs then run
	// without a live session, which is fine).
	signin := httptest.NewRequest(http.MethodGet, "/console/signin", nil)
	signinRec := h.serve(signin)
	pre := csrfField.FindStringSubmatch(signinRec.Body.String())
	if pre == nil || len(signinRec.Result().Cookies()) != 1 {
		f.Fatal("no pre-session CSRF token on the sign-in page")
	}
	login := httptest.NewRequest(http.MethodPost, "/console/login/token", strings.NewReader(url.Values{"token": {consoleTestToken}, "csrf": {pre[1]}}.Encode()))
	login.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	login.RemoteAddr = "127.0.0.1:40000"
	login.AddCookie(signinRec.Result().Cookies()[0])
	var cookie *http.Cookie
	for _, c := range h.serve(login).Result().Cookies() {
		if c.Name == consoleCookie {
			cookie = c
		}
	}
	if cookie == nil {
		f.Fatal("no console session for the seeds")
	}
	home := httptest.NewRequest(http.MethodGet, "/console/", nil)
	home.AddCookie(cookie)
	m := csrfField.FindStringSubmatch(h.serve(home).Body.String())
	if m == nil {
		f.Fatal("no CSRF token on the console's home page")
	}
	csrf := m[1]
	corp := config.DeriveConnectionID("corp")
	for _, seed := range []struct {
		path, body string
		mode       uint8 // bit 0: POST; bit 1: the session cookie; bit 2: the CSRF token; bit 3: cross-site
	}{
		{path: "/", mode: 2},
		{path: "/?span=week", mode: 2},
		{path: "/?span=day&span=week", mode: 2},
		{path: "/?span=%00", mode: 2},
		{path: "/connections", mode: 2},
		{path: "/connections/" + corp, mode: 2},
		{path: "/connections/" + corp + "/dpop", body: "dpop_signing_alg=ES256", mode: 7},
		{path: "/connections/" + corp + "/dpop", body: "dpop_signing_alg=none&dpop_signing_alg=ES256", mode: 7},
		{path: "/connections/" + corp + "/dpop", body: "dpop_signing_alg=", mode: 3},
		{path: "/connections/" + corp + "/dpop", body: "dpop_signing_alg=", mode: 15},
		{path: "/connections/con_%2e%2e", mode: 2},
		{path: "/login/token", body: "token=" + consoleTestToken, mode: 1},
		{path: "/login/token", body: "token=x&token=y", mode: 9},
		{path: "/callback", body: "", mode: 0},
		{path: "/assets/console.css", mode: 0},
		{path: "/assets/..%2fconsole.go", mode: 0},
		{path: "/signout", mode: 3},
		{path: "/signin", mode: 0},
		{path: "/apps", mode: 2},
		{path: "/sessions?user_id=oidc%7Ccorp%7Calice", mode: 2},
		{path: "/sessions?user_id=a&user_id=b", mode: 2},
		{path: "/sessions/end", body: "user_id=oidc%7Ccorp%7Calice", mode: 7},
		{path: "/sessions/end", body: "user_id=%ff", mode: 7},
		{path: "/logs", mode: 2},
		{path: "/logs/tail", mode: 2},
		{path: "/logs/01796224350133636558000000000001658388793549977601538780", mode: 2},
		{path: "/logs/%3Cb%3E", mode: 2},
		{path: "/logs?type=f&q=details.error%3Adpop*&range=1h", mode: 2},
		{path: "/logs/tail?after=1&connection=%C0", mode: 2},
	} {
		f.Add(seed.path, seed.body, seed.mode)
	}
	f.Fuzz(func(t *testing.T, path, body string, mode uint8) {
		target := "/console" + path
		if u, err := url.Parse(target); err != nil || u.Host != "" || strings.ContainsAny(target, " \t\r\n#") {
			return // not a request path
		}
		method := http.MethodGet
		if mode&1 != 0 {
			method = http.MethodPost
		}
		form := body
		if mode&4 != 0 {
			form += "&csrf=" + url.QueryEscape(csrf)
		}
		req := httptest.NewRequest(method, "http://broker.test"+target, strings.NewReader(form))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.RemoteAddr = "127.0.0.1:40000"
		if mode&2 != 0 {
			req.AddCookie(cookie)
		}
		if mode&8 != 0 {
			req.Header.Set("Sec-Fetch-Site", "cross-site")
		}
		rec := h.serve(req)
		out := rec.Body.String()
		if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("%s %s answered %d:\n%s", method, target, rec.Code, out)
		}
		for _, secret := range []string{consoleTestToken, upSecret, cookie.Value} {
			if strings.Contains(out, secret) || strings.Contains(rec.Header().Get("Location"), secret) {
				t.Fatalf("%s %s shows a secret", method, target)
			}
		}
		for _, c := range rec.Result().Cookies() {
			if c.Name == consoleCookie && c.Value != "" && !strings.Contains(body, consoleTestToken) {
				t.Fatalf("%s %s opened a console session without the management token", method, target)
			}
		}
		tokenLogin := strings.HasPrefix(req.URL.Path, "/console/login/token")
		// 301/307/308 come from the mux cleaning the path (a browser repeats the POST there,
		// where the checks run); the console's own answers are 303 or a page.
		cleaned := rec.Code == http.StatusMovedPermanently || rec.Code == http.StatusTemporaryRedirect || rec.Code == http.StatusPermanentRedirect
		if method == http.MethodPost && !tokenLogin && !cleaned && (mode&4 == 0 || mode&8 != 0) && rec.Code < 400 {
			t.Fatalf("POST %s without the CSRF token from the console's origin answered %d", target, rec.Code)
		}
	})
}
