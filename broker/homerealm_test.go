package broker

import (
	"context"
	"encoding/json"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// hrdHarness: the SPA client may use corp (domain alias corp.example), other (other.example,
// a display name and an icon) and hidden (hidden.example, not shown as a button).
func hrdHarness(t testing.TB) *harness {
	t.Helper()
	hide := false
	return newHarness(t, harnessOpts{up: demoidp.Options{DPoPAlgs: []string{"ES256"}}, mutate: func(c *config.Config) {
		withMgmt(c)
		c.Clients[1].Connections = []string{"corp", "other", "hidden"}
		c.Connections[0].Options.DomainAliases = []string{"corp.example"}
		c.Connections[1].DisplayName = `Other <b>Co</b>`
		c.Connections[1].Options.DomainAliases = []string{"Other.Example", "other-group.example"}
		c.Connections[1].Options.IconURL = "https://icons.example/other.png?size=32&v=1"
		hidden := c.Connections[1]
		hidden.Name, hidden.DisplayName, hidden.ShowAsButton = "hidden", "", &hide
		hidden.Options.DomainAliases, hidden.Options.IconURL = []string{"hidden.example"}, ""
		c.Connections = append(c.Connections, hidden)
	}})
}

var (
	hiddenField = regexp.MustCompile(`<input type="hidden" name="([^"]*)" value="([^"]*)">`)
	buttonLink  = regexp.MustCompile(`<a class="connection" id="connection-corp" href="([^"]*)">`)
)

// spaLoginURL is the SPA's /authorize with mut applied.
func (h *harness) spaLoginURL(mut func(url.Values)) string {
	return h.authorizeURL(func(q url.Values) {
		q.Set("client_id", spaClient)
		q.Set("redirect_uri", h.app.URL+"/spa")
		if mut != nil {
			mut(q)
		}
	})
}

func TestHomeRealmDiscoveryRoutesByEmailDomain(t *testing.T) {
	h := hrdHarness(t)
	for _, tc := range []struct {
		name           string
		hint           string
		connection     string
		wantConnection string // the login goes to the upstream through it
		wantDomain     string // the event's home_realm_domain
		wantPage       []string
		wantNot        []string
	}{
		{name: "no hint shows the identifier-first page with the buttons",
			wantPage: []string{`<form id="identifier" method="get" action="` + "http://", `name="login_hint" type="email"`,
				`<input type="hidden" name="client_id" value="spa">`, `id="connection-corp"`, `id="connection-other"`,
				`Other &lt;b&gt;Co&lt;/b&gt;`, `<img src="https://icons.example/other.png?size=32&amp;v=1" alt="">`},
			wantNot: []string{`connection-hidden`, `<b>Co</b>`, `id="error"`, `name="login_hint" value`}},
		{name: "login_hint with an alias goes straight to its connection", hint: "alice@Corp.Example", wantConnection: "corp", wantDomain: "corp.example"},
		{name: "any alias of a connection routes to it", hint: "bob@other-group.example.", wantConnection: "other", wantDomain: "other-group.example"},
		{name: "a connection not shown as a button is reached by its domain", hint: "carol@hidden.example", wantConnection: "hidden", wantDomain: "hidden.example"},
		{name: "connection= wins over login_hint", hint: "alice@corp.example", connection: "other", wantConnection: "other"},
		{name: "an unknown domain gets the chooser",
			hint: "dave@unknown.example",
			wantPage: []string{`No single sign-on is set up for unknown.example.`, `id="connection-corp"`, `id="connection-other"`,
				`<a id="other" href="http://`},
			wantNot: []string{`connection-hidden`, `<form`}},
		{name: "a hint that is no email address is asked for again",
			hint:     `"><script>x</script>`,
			wantPage: []string{`id="error" role="alert"`, `value="&#34;&gt;&lt;script&gt;x&lt;/script&gt;"`, `aria-invalid="true"`},
			wantNot:  []string{`<script>x`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := h.spaLoginURL(func(q url.Values) {
				if tc.hint != "" {
					q.Set("login_hint", tc.hint)
				}
				if tc.connection != "" {
					q.Set("connection", tc.connection)
				}
			})
			resp, body := get(t, h.browser(), u)
			if tc.wantConnection != "" {
				if q := appResult(t, resp, h.app.URL+"/spa"); q.Get("code") == "" {
					t.Fatalf("login through %s: %v", tc.wantConnection, q)
				}
				ev := h.lastEvent()
				if ev.Type != "s" || ev.Connection != tc.wantConnection {
					t.Fatalf("event %s through %q, want s through %q", ev.Type, ev.Connection, tc.wantConnection)
				}
				if got, _ := ev.Details["home_realm_domain"].(string); got != tc.wantDomain {
					t.Errorf("details.home_realm_domain = %q, want %q", got, tc.wantDomain)
				}
				return
			}
			if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/authorize" {
				t.Fatalf("want the sign-in page, got %d at %s: %s", resp.StatusCode, resp.Request.URL, body)
			}
			csp := resp.Header.Get("Content-Security-Policy")
			for _, want := range []string{"default-src 'none'", "frame-ancestors 'none'", "base-uri 'none'", "img-src https://icons.example;", "style-src 'unsafe-inline'"} {
				if !strings.Contains(csp+";", want) {
					t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
				}
			}
			for _, want := range tc.wantPage {
				if !strings.Contains(body, want) {
					t.Errorf("page lacks %q:\n%s", want, body)
				}
			}
			for _, not := range tc.wantNot {
				if strings.Contains(body, not) {
					t.Errorf("page has %q:\n%s", not, body)
				}
			}
		})
	}
}

// The identifier-first form repeats the app's request and adds the address as login_hint:
// submitting it (what the browser does) routes like an app's login_hint, and the chooser's
// links keep every parameter of the app's request.
func TestIdentifierFormAndChooserLinksCarryTheAppsRequest(t *testing.T) {
	h := hrdHarness(t)
	b := h.browser()
	resp, body := get(t, b, h.spaLoginURL(nil))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("identifier page: %d %s", resp.StatusCode, body)
	}
	form := url.Values{}
	for _, m := range hiddenField.FindAllStringSubmatch(body, -1) {
		form.Add(html.UnescapeString(m[1]), html.UnescapeString(m[2]))
	}
	if form.Get("state") != "app-state-123" || form.Get("code_challenge") == "" || form.Has("login_hint") {
		t.Fatalf("hidden fields = %v", form)
	}
	form.Set("login_hint", "erin@other.example")
	resp, _ = get(t, b, h.srv.URL+"/authorize?"+form.Encode())
	if q := appResult(t, resp, h.app.URL+"/spa"); q.Get("code") == "" || q.Get("state") != "app-state-123" {
		t.Fatalf("login after the identifier form: %v", q)
	}
	if ev := h.lastEvent(); ev.Connection != "other" {
		t.Fatalf("connection = %q, want other", ev.Connection)
	}

	// Unknown domain: the chooser's button for corp finishes the login there.
	_, body = get(t, h.browser(), h.spaLoginURL(func(q url.Values) { q.Set("login_hint", "frank@elsewhere.example") }))
	m := buttonLink.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no corp button on the chooser:\n%s", body)
	}
	resp, _ = get(t, h.browser(), html.UnescapeString(m[1]))
	if q := appResult(t, resp, h.app.URL+"/spa"); q.Get("code") == "" || q.Get("state") != "app-state-123" {
		t.Fatalf("login from the chooser: %v", q)
	}
	if ev := h.lastEvent(); ev.Connection != "corp" {
		t.Fatalf("connection = %q, want corp", ev.Connection)
	}
}

// A broker session of one connection does not answer a login_hint that routes to another:
// that is a new login there (single sign-on stays with the session's own connection).
func TestLoginHintOfAnotherConnectionIsNotAnsweredBySession(t *testing.T) {
	h := hrdHarness(t)
	b := h.browser()
	for i, tc := range []struct {
		hint, wantConnection string
		wantSSO              bool
	}{
		{hint: "alice@corp.example", wantConnection: "corp"},
		{hint: "alice@corp.example", wantConnection: "corp", wantSSO: true},
		{hint: "alice@other.example", wantConnection: "other"},
	} {
		resp, _ := get(t, b, h.spaLoginURL(func(q url.Values) { q.Set("login_hint", tc.hint) }))
		if q := appResult(t, resp, h.app.URL+"/spa"); q.Get("code") == "" {
			t.Fatalf("login %d: %v", i, q)
		}
		ev := h.lastEvent()
		if ev.Connection != tc.wantConnection || (ev.Details["sso"] != nil) != tc.wantSSO {
			t.Fatalf("login %d (%s): connection %q sso %v, want %q sso %v", i, tc.hint, ev.Connection, ev.Details["sso"], tc.wantConnection, tc.wantSSO)
		}
	}
}

// Every connection hidden: without domain aliases nothing can be chosen and the app is told
// why; with one, an address of another domain is asked for again (there is no chooser to
// fall back to).
func TestHiddenConnectionsLeaveNothingToChoose(t *testing.T) {
	hide := false
	hidden := func(aliases ...string) func(*config.Config) {
		return func(c *config.Config) {
			for i := range c.Connections {
				c.Connections[i].ShowAsButton = &hide
			}
			c.Connections[0].Options.DomainAliases = aliases
		}
	}
	t.Run("no domain alias", func(t *testing.T) {
		h := newHarness(t, harnessOpts{up: demoidp.Options{DPoPAlgs: []string{"ES256"}}, mutate: hidden()})
		resp, _ := get(t, h.browser(), h.spaLoginURL(nil))
		q := appResult(t, resp, h.app.URL+"/spa")
		if q.Get("error") != "invalid_request" || !strings.Contains(q.Get("error_description"), "show_as_button") {
			t.Fatalf("app got %v", q)
		}
		if ev := h.lastEvent(); ev.Type != "f" || !strings.Contains(ev.Details["error_description"].(string), "domain_aliases") {
			t.Fatalf("event = %+v", ev)
		}
	})
	t.Run("an unknown domain", func(t *testing.T) {
		h := newHarness(t, harnessOpts{up: demoidp.Options{DPoPAlgs: []string{"ES256"}}, mutate: hidden("corp.example")})
		resp, body := get(t, h.browser(), h.spaLoginURL(func(q url.Values) { q.Set("login_hint", "gina@elsewhere.example") }))
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "No sign-in is set up for elsewhere.example.") ||
			!strings.Contains(body, `value="gina@elsewhere.example"`) || strings.Contains(body, `class="connection"`) {
			t.Fatalf("want the identifier page asking again without buttons, got %d:\n%s", resp.StatusCode, body)
		}
	})
}

// A domain that two stored connections claim (management writes racing on two replicas; each
// write alone is refused) is never guessed: the user chooses between those two.
func TestDomainOfTwoConnectionsIsNeverGuessed(t *testing.T) {
	h := hrdHarness(t)
	clash := config.Connection{ID: "con_clashclashclash1", Name: "clash", Strategy: "oidc", EnabledClients: []string{spaClient},
		Options: config.ConnectionOptions{Issuer: h.up.URL, ClientID: upClientID, ClientSecret: upSecret, DomainAliases: []string{"corp.example"}}}
	clash.Options.ApplyDefaults()
	raw, err := json.Marshal(storedConnection{Connection: clash})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.store.(sessions.Connections).CreateConnection(context.Background(), clash.ID, clash.Name, raw); err != nil {
		t.Fatal(err)
	}
	resp, body := get(t, h.browser(), h.spaLoginURL(func(q url.Values) { q.Set("login_hint", "hank@corp.example") }))
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "More than one sign-in is set up for corp.example.") ||
		!strings.Contains(body, `id="connection-corp"`) || !strings.Contains(body, `id="connection-clash"`) || strings.Contains(body, `id="connection-other"`) {
		t.Fatalf("want the chooser of corp and clash, got %d:\n%s", resp.StatusCode, body)
	}
}

func TestManagementAPIShowAsButtonAndDomainAliases(t *testing.T) {
	h := hrdHarness(t)
	base := h.srv.URL + "/api/v2/connections"
	body := map[string]any{"name": "acme", "strategy": "oidc", "display_name": "Acme", "show_as_button": false,
		"options": map[string]any{"issuer": h.up.URL, "client_id": "x", "client_secret": "y",
			"domain_aliases": []string{"acme.example"}, "icon_url": "https://icons.example/acme.svg"}}
	r := api(t, base, http.MethodPost, "", tokAll, body)
	if r.status != http.StatusCreated || r.obj()["show_as_button"] != false {
		t.Fatalf("create: %d %s", r.status, r.raw)
	}
	id := r.obj()["id"].(string)
	r = api(t, base, http.MethodGet, "/"+id, tokAll, nil)
	opts, _ := r.obj()["options"].(map[string]any)
	if r.obj()["show_as_button"] != false || opts["icon_url"] != "https://icons.example/acme.svg" || len(opts["domain_aliases"].([]any)) != 1 {
		t.Fatalf("get: %s", r.raw)
	}
	r = api(t, base, http.MethodGet, "", tokAll, nil)
	for _, c := range r.list() {
		if c := c.(map[string]any); c["name"] == "corp" && c["show_as_button"] != true {
			t.Fatalf("corp without show_as_button is shown as a button: %v", c)
		}
	}
	for _, tc := range []struct {
		name    string
		body    map[string]any
		wantMsg string
	}{
		{name: "alias of another connection",
			body:    map[string]any{"options": map[string]any{"issuer": h.up.URL, "client_id": "x", "domain_aliases": []string{"acme.example", "CORP.example"}}},
			wantMsg: `options.domain_aliases[1]: "CORP.example" is already a domain alias of connection corp`},
		{name: "not a domain",
			body:    map[string]any{"options": map[string]any{"issuer": h.up.URL, "client_id": "x", "domain_aliases": []string{"*.acme.example"}}},
			wantMsg: `options.domain_aliases[0]: "*.acme.example" must be a domain name`},
		{name: "icon over plain http",
			body:    map[string]any{"options": map[string]any{"issuer": h.up.URL, "client_id": "x", "icon_url": "http://icons.example/a.png"}},
			wantMsg: `options.icon_url: "http://icons.example/a.png" must use https`},
		{name: "show_as_button not a boolean", body: map[string]any{"show_as_button": "yes"}, wantMsg: "show_as_button"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := api(t, base, http.MethodPatch, "/"+id, tokAll, tc.body)
			if msg, _ := r.obj()["message"].(string); r.status != http.StatusBadRequest || !strings.Contains(msg, tc.wantMsg) {
				t.Fatalf("PATCH: %d %s, want 400 with %q", r.status, r.raw, tc.wantMsg)
			}
		})
	}
	// The connection's own aliases are no clash with itself.
	r = api(t, base, http.MethodPatch, "/"+id, tokAll, map[string]any{"show_as_button": true,
		"options": map[string]any{"issuer": h.up.URL, "client_id": "x", "domain_aliases": []string{"acme.example", "acme.test"}}})
	if r.status != http.StatusOK || r.obj()["show_as_button"] != true {
		t.Fatalf("PATCH own aliases: %d %s", r.status, r.raw)
	}
}

// FuzzHomeRealm sends the SPA's /authorize with a fuzzed login_hint (and fuzzed extra query):
// a login goes upstream only through a connection listing the hint's email domain; every page
// is one of the sign-in pages under their policy, with the hint escaped; everything else is an
// error page or an error redirect to the app.
func FuzzHomeRealm(f *testing.F) {
	h := hrdHarness(f)
	spa, _ := url.Parse(h.spaLoginURL(nil))
	for _, seed := range []struct{ hint, extra string }{
		{hint: ""}, {hint: "alice@corp.example"}, {hint: "bob@OTHER.example."}, {hint: "carol@hidden.example"},
		{hint: "dave@unknown.example"}, {hint: "dave"}, {hint: `"><script>alert(1)</script>@corp.example`},
		{hint: "a@b@corp.example"}, {hint: "x@corp.example", extra: "connection=other"}, {hint: "x@corp.example", extra: "login_hint=y"},
		{hint: "x@xn--bcher-kva.example"}, {hint: "x@corp.example", extra: "prompt=none"}, {hint: "é@corp.example\x00"},
	} {
		f.Add(seed.hint, seed.extra)
	}
	const policy = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
	f.Fuzz(func(t *testing.T, hint, extra string) {
		raw := spa.RawQuery + "&login_hint=" + url.QueryEscape(hint)
		if extra != "" {
			raw += "&" + extra
		}
		rec := h.serve(getRaw("/authorize", raw))
		body, loc := rec.Body.String(), rec.Header().Get("Location")
		switch rec.Code {
		case http.StatusFound:
			if !strings.HasPrefix(loc, h.up.URL+"/") {
				if p := h.appRedirectProblem(loc); p != "" {
					t.Fatalf("%s: %q", p, loc)
				}
				return
			}
			tx := h.takeTransaction(t, loc, rec.Result().Cookies())
			q, _ := url.ParseQuery(raw)
			if q.Get("connection") != "" {
				return // the app chose
			}
			i := slices.IndexFunc(h.cfg.Connections, func(c config.Connection) bool { return c.Name == tx.Connection })
			if d := config.EmailDomain(q.Get("login_hint")); i < 0 || d == "" || tx.HomeRealmDomain != d || !h.cfg.Connections[i].HasDomainAlias(d) {
				t.Fatalf("login_hint %q went upstream through %s (home_realm_domain %q)", q.Get("login_hint"), tx.Connection, tx.HomeRealmDomain)
			}
		case http.StatusOK:
			csp := rec.Header().Get("Content-Security-Policy")
			if csp != policy && csp != policy+"; img-src https://icons.example" {
				t.Fatalf("page policy %q", csp)
			}
			if p := injectedMarkup(body); p != "" {
				t.Fatalf("unescaped input on the page (%s):\n%s", p, body)
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

// takeTransaction removes and returns the login transaction a redirect to the upstream
// created (takeTxFrom, decoded).
func (h *harness) takeTransaction(t *testing.T, loc string, cookies []*http.Cookie) transaction {
	t.Helper()
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cookies {
		if c.Name != txCookie {
			continue
		}
		raw, err := h.store.Take(context.Background(), sessions.KindTransaction, txID(u.Query().Get("state"), hashString(c.Value)))
		if err != nil {
			t.Fatalf("the login's transaction: %v", err)
		}
		var tx transaction
		if err := json.Unmarshal(raw, &tx); err != nil {
			t.Fatal(err)
		}
		return tx
	}
	t.Fatal("no transaction cookie with the redirect to the upstream")
	return transaction{}
}

var (
	pageTag  = regexp.MustCompile(`<[a-zA-Z][^>]*>`)
	pageAttr = regexp.MustCompile(`\s([^\s="'<>/]+)(?:="([^"]*)")?`)
)

// injectedMarkup names what in a sign-in page could only come from input that escaped
// html/template: a script element, an event-handler attribute, a javascript: URL, or an
// attribute value holding a raw '<' or '>'. Attribute values are double-quoted by the
// templates and escaped input holds no raw '"', so input that stays inside its value never
// matches, however it is spelled.
func injectedMarkup(body string) string {
	if strings.Contains(strings.ToLower(body), "<script") {
		return "a script element"
	}
	for _, tag := range pageTag.FindAllString(body, -1) {
		if strings.Count(tag, `"`)%2 != 0 {
			return "a tag with unbalanced quotes: " + tag
		}
		for _, m := range pageAttr.FindAllStringSubmatch(tag, -1) {
			name, value := strings.ToLower(m[1]), strings.ToLower(m[2])
			switch {
			case strings.HasPrefix(name, "on"):
				return "event-handler attribute " + name
			case strings.Contains(value, "javascript:"):
				return "javascript: URL in " + name
			case strings.ContainsAny(m[2], "<>"):
				return "raw markup in " + name
			}
		}
	}
	return ""
}
