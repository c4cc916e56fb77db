package broker

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

func TestConsoleAppsListsClientsWithoutSecrets(t *testing.T) {
	h := consoleHarness(t, func(c *config.Config) {
		c.Management.Tokens[0].Scopes = []string{config.ScopeReadClients}
	})
	browser := h.browser()
	consoleTokenSignIn(t, browser, h.srv.URL)
	resp, body := get(t, browser, h.srv.URL+"/console/apps")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("apps: %d\n%s", resp.StatusCode, body)
	}
	if strings.Contains(body, `href="/console/connections/`) {
		t.Error("the apps page links connections for an operator who may not read them")
	}
	for _, want := range []string{appClient, "Test App", spaClient, "public (PKCE)", "client_secret_basic", h.app.URL + "/cb",
		"by API policy", "Bearer when it does not"} {
		if !strings.Contains(body, want) {
			t.Errorf("the apps page lacks %q", want)
		}
	}
	for _, secret := range []string{appSecret, upSecret, config.ConsoleClientID} {
		if strings.Contains(body, secret) {
			t.Errorf("the apps page shows %q", secret)
		}
	}
}

// TestConsoleAppsLinkTheirConnections: an operator who may read connections opens an app's
// connection from the Apps page.
func TestConsoleAppsLinkTheirConnections(t *testing.T) {
	h := consoleHarness(t, func(c *config.Config) {
		c.Management.Tokens[0].Scopes = []string{config.ScopeReadClients, config.ScopeReadConnections}
	})
	browser := h.browser()
	consoleTokenSignIn(t, browser, h.srv.URL)
	_, body := get(t, browser, h.srv.URL+"/console/apps")
	for _, name := range []string{"corp", "other"} {
		if want := `<a href="/console/connections/` + config.DeriveConnectionID(name) + `">` + name + `</a>`; !strings.Contains(body, want) {
			t.Errorf("the apps page lacks the link %s", want)
		}
	}
}

func TestConsoleSessionsFindsAndEndsAUsersSessions(t *testing.T) {
	h := consoleHarness(t, func(c *config.Config) {
		c.Management.Tokens[0].Scopes = []string{config.ScopeReadSessions, config.ScopeDeleteSessions}
	})
	h.login() // alice at corp through the app
	browser := h.browser()
	consoleTokenSignIn(t, browser, h.srv.URL)
	user := "oidc|corp|alice"
	resp, page := get(t, browser, h.srv.URL+"/console/sessions?user_id="+url.QueryEscape(user))
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, "<td data-label=\"Connection\">corp</td>") || !strings.Contains(page, appClient) {
		t.Fatalf("sessions page: %d\n%s", resp.StatusCode, page)
	}
	resp, body := postForm(t, browser, h.srv.URL+"/console/sessions/end",
		url.Values{"csrf": {consoleCSRF(t, page)}, "user_id": {user}}, "same-origin")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Every session of this user has ended") || !strings.Contains(body, "No live session.") {
		t.Fatalf("ending the sessions: %d\n%s", resp.StatusCode, body)
	}
	ev := h.lastEventOf(logs.TypeSuccessAPI)
	if eventUser(ev) != "console:token:ops" || ev.UserID != user {
		t.Errorf("the sapi event names %v for %q, want console:token:ops ending %s's sessions", eventUser(ev), ev.UserID, user)
	}
}

func TestConsoleSessionsPagesNeedTheirPermissions(t *testing.T) {
	h := consoleHarness(t, nil) // the token reads connections only
	browser := h.browser()
	home := consoleTokenSignIn(t, browser, h.srv.URL)
	for _, p := range []string{"/console/apps", "/console/sessions"} {
		if resp, _ := get(t, browser, h.srv.URL+p); resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s answered %d to an operator without its scope, want 403", p, resp.StatusCode)
		}
	}
	if strings.Contains(home, `href="/console/apps"`) || strings.Contains(home, `href="/console/sessions"`) {
		t.Error("the navigation offers pages the operator may not open")
	}
	resp, _ := postForm(t, browser, h.srv.URL+"/console/sessions/end", url.Values{"csrf": {consoleCSRF(t, home)}, "user_id": {"oidc|corp|alice"}}, "same-origin")
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("ending sessions without delete:sessions answered %d, want 403", resp.StatusCode)
	}
}

func TestConsoleEndingSessionsKeepsTheConsoleDetailsInTheEvent(t *testing.T) {
	h := consoleHarness(t, func(c *config.Config) {
		c.Management.Tokens[0].Scopes = []string{config.ScopeReadSessions, config.ScopeDeleteSessions}
	})
	h.login()
	browser := h.browser()
	consoleTokenSignIn(t, browser, h.srv.URL)
	user := "oidc|corp|alice"
	_, page := get(t, browser, h.srv.URL+"/console/sessions?user_id="+url.QueryEscape(user))
	if resp, body := postForm(t, browser, h.srv.URL+"/console/sessions/end",
		url.Values{"csrf": {consoleCSRF(t, page)}, "user_id": {user}}, "same-origin"); resp.StatusCode != http.StatusOK {
		t.Fatalf("ending the sessions: %d\n%s", resp.StatusCode, body)
	}
	ev := h.lastEventOf(logs.TypeSuccessAPI)
	console, _ := ev.Details["console"].(map[string]any)
	if console["operator"] != "token:ops" || console["via"] == nil {
		t.Errorf("details.console = %v, want the operator and how they signed in", ev.Details["console"])
	}
	if ev.Details["sessions_ended"] != float64(1) && ev.Details["sessions_ended"] != 1 {
		t.Errorf("details.sessions_ended = %v, want 1", ev.Details["sessions_ended"])
	}
}

func TestConsoleSignOutLandsOnTheSignInPageSayingSo(t *testing.T) {
	h := consoleHarness(t, nil)
	browser := h.browser()
	home := consoleTokenSignIn(t, browser, h.srv.URL)
	resp, body := postForm(t, browser, h.srv.URL+"/console/signout", url.Values{"csrf": {consoleCSRF(t, home)}}, "same-origin")
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/console/signin" || !strings.Contains(body, "You are signed out of the console.") {
		t.Fatalf("sign-out: %d at %s:\n%s", resp.StatusCode, resp.Request.URL, body)
	}
	if _, page := get(t, browser, h.srv.URL+"/console/signin"); strings.Contains(page, "signed out") {
		t.Error("the sign-in page says signed out without a sign-out")
	}
}

func TestConsoleSessionsLookupSaysItTakesAUserIDAndNotAnEmail(t *testing.T) {
	tests := []struct {
		name    string
		scopes  []string
		userID  string
		want    []string
		wantNot []string
	}{
		{name: "the form says what to type", scopes: []string{config.ScopeReadSessions}, userID: "",
			want: []string{"Look up by user id", "strategy|connection|subject"}, wantNot: []string{`id="email-hint"`}},
		{name: "an unknown user id: no email hint", scopes: []string{config.ScopeReadSessions}, userID: "oidc|corp|nobody",
			want: []string{"No live session."}, wantNot: []string{`id="email-hint"`}},
		{name: "an email: said not to be looked up, with a search of the Logs", scopes: []string{config.ScopeReadSessions, config.ScopeReadLogs},
			userID: "alice@example.com",
			want:   []string{"No live session.", "Emails are not looked up", `href="/console/logs?q=user_name%3A%22alice%40example.com%22"`}},
		{name: "a bare subject: the user ids it makes, the one with sessions first", scopes: []string{config.ScopeReadSessions}, userID: "alice",
			want: []string{`id="subject-hint"`, "<code>strategy|connection|subject</code>, not the subject alone",
				`<li><a href="/console/sessions?user_id=oidc%7Ccorp%7Calice"><code>oidc|corp|alice</code></a>: 1 live session</li>`,
				`<code>oidc|other|alice</code></a>: no live session`}},
		{name: "a full user id: no subject hint", scopes: []string{config.ScopeReadSessions}, userID: "oidc|other|alice",
			want: []string{"No live session."}, wantNot: []string{`id="subject-hint"`}},
		{name: "an email without read:logs: no link to the Logs", scopes: []string{config.ScopeReadSessions}, userID: "alice@example.com",
			want: []string{"Emails are not looked up"}, wantNot: []string{`href="/console/logs?`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := consoleHarness(t, func(c *config.Config) { c.Management.Tokens[0].Scopes = tt.scopes })
			h.login() // alice has a session, under her user id
			browser := h.browser()
			consoleTokenSignIn(t, browser, h.srv.URL)
			resp, body := get(t, browser, h.srv.URL+"/console/sessions?user_id="+url.QueryEscape(tt.userID))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("sessions page: %d\n%s", resp.StatusCode, body)
			}
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("the page lacks %s:\n%s", w, body)
				}
			}
			for _, w := range tt.wantNot {
				if strings.Contains(body, w) {
					t.Errorf("the page has %s", w)
				}
			}
		})
	}
}

// TestConsoleAppsPagesByFiftyInClientIDOrder: with more apps than a page holds, the Apps page
// lists them fifty a page in client_id order (GET /api/v2/clients's page/per_page), the
// second page holds the rest, each page links its neighbours, and a page that is not a number
// is a 400.
func TestConsoleAppsPagesByFiftyInClientIDOrder(t *testing.T) {
	const extra = 60
	h := consoleHarness(t, func(c *config.Config) {
		c.Management.Tokens[0].Scopes = []string{config.ScopeReadClients}
		for i := range extra {
			cl := c.Clients[0]
			cl.ClientID, cl.Name = fmt.Sprintf("zz-app-%02d", i), fmt.Sprintf("Paged <app> %02d", i)
			c.Clients = append(c.Clients, cl)
		}
	})
	total := len(h.broker.cfg.Clients)
	browser := h.browser()
	consoleTokenSignIn(t, browser, h.srv.URL)
	rows := regexp.MustCompile(`<td data-label="App"><code>([^<]+)</code>`)
	tests := []struct {
		name       string
		query      string
		wantStatus int
		wantRows   int
		wantFirst  string   // the first app listed
		want       []string // in the page
		dontWant   []string
	}{
		{name: "the first page", wantStatus: http.StatusOK, wantRows: 50,
			want:     []string{fmt.Sprintf("%d apps; 1–50 shown, page 1 of 2", total), `href="/console/apps?page=1" rel="next"`, "Paged &lt;app&gt;"},
			dontWant: []string{`rel="prev"`, "zz-app-59"}},
		{name: "the second page holds the rest", query: "?page=1", wantStatus: http.StatusOK, wantRows: total - 50, wantFirst: "zz-app-" + fmt.Sprintf("%02d", extra-(total-50)),
			want:     []string{fmt.Sprintf("51–%d shown, page 2 of 2", total), `href="/console/apps?page=0" rel="prev"`, "zz-app-59"},
			dontWant: []string{`rel="next"`}},
		{name: "a page past the last", query: "?page=7", wantStatus: http.StatusOK, wantRows: 0,
			want: []string{"none on this page", `href="/console/apps?page=1" rel="prev"`}},
		{name: "a page that is not a number", query: "?page=%3Cb%3E", wantStatus: http.StatusBadRequest,
			want: []string{"not a page number"}, dontWant: []string{"<b>"}},
		{name: "a negative page", query: "?page=-1", wantStatus: http.StatusBadRequest},
		{name: "two pages", query: "?page=1&page=0", wantStatus: http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := get(t, browser, h.srv.URL+"/console/apps"+tt.query)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("GET /console/apps%s = %d, want %d\n%s", tt.query, resp.StatusCode, tt.wantStatus, body)
			}
			if tt.wantStatus != http.StatusOK {
				return
			}
			got := rows.FindAllStringSubmatch(body, -1)
			if len(got) != tt.wantRows {
				t.Fatalf("%d apps listed, want %d", len(got), tt.wantRows)
			}
			if tt.wantFirst != "" && got[0][1] != tt.wantFirst {
				t.Errorf("the page starts at %s, want %s", got[0][1], tt.wantFirst)
			}
			for i := 1; i < len(got); i++ {
				if got[i-1][1] >= got[i][1] {
					t.Errorf("%s listed before %s", got[i-1][1], got[i][1])
				}
			}
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("the page lacks %q", w)
				}
			}
			for _, w := range tt.dontWant {
				if strings.Contains(body, w) {
					t.Errorf("the page has %q", w)
				}
			}
		})
	}
}

// TestConsoleSessionsPagesAUsersSessionsByFifty: a user with more live sessions than a page
// holds (a user may have up to maxUserSessions) gets them fifty a page, oldest first, through
// the management API's from cursor; the next page holds the rest; a cursor the page did not
// make is a 400.
func TestConsoleSessionsPagesAUsersSessionsByFifty(t *testing.T) {
	const n, user = 55, "oidc|corp|many"
	h := consoleHarness(t, func(c *config.Config) {
		c.Management.Tokens[0].Scopes = []string{config.ScopeReadSessions}
	})
	ctx := context.Background()
	now := h.broker.now()
	var tags []string
	for i := range n {
		tag := base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "consolepaging%03d", i)) // 22 characters
		sess := sessionRecord{UserID: user, Connection: "corp", Created: now.Unix() - int64(n-i), Seen: now.Unix(), Expires: now.Add(time.Hour).Unix()}
		raw, _ := json.Marshal(sess)
		if err := h.store.Put(ctx, sessions.KindSession, tag+".s", raw, time.Hour); err != nil {
			t.Fatal(err)
		}
		if err := h.broker.indexSession(httptest.NewRequest("GET", "/", nil), tag, &sess); err != nil {
			t.Fatal(err)
		}
		tags = append(tags, tag)
	}
	browser := h.browser()
	consoleTokenSignIn(t, browser, h.srv.URL)
	ids := regexp.MustCompile(`<td data-label="Session"><code>([^<]+)</code>`)
	next := regexp.MustCompile(`<a href="([^"]+)" rel="next"`)
	resp, body := get(t, browser, h.srv.URL+"/console/sessions?"+url.Values{"user_id": {user}}.Encode())
	got := ids.FindAllStringSubmatch(body, -1)
	if resp.StatusCode != http.StatusOK || len(got) != 50 || got[0][1] != tags[0] || got[49][1] != tags[49] || !strings.Contains(body, "55 live sessions; 1–50 shown") {
		t.Fatalf("the first page: %d, %d sessions\n%s", resp.StatusCode, len(got), body)
	}
	m := next.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("the first page links no next page:\n%s", body)
	}
	resp, body = get(t, browser, h.srv.URL+html.UnescapeString(m[1]))
	got = ids.FindAllStringSubmatch(body, -1)
	if resp.StatusCode != http.StatusOK || len(got) != n-50 || got[0][1] != tags[50] || got[len(got)-1][1] != tags[n-1] || !strings.Contains(body, "51–55 shown") {
		t.Fatalf("the second page: %d, %d sessions\n%s", resp.StatusCode, len(got), body)
	}
	if next.MatchString(body) || !strings.Contains(body, `id="sessions-first"`) {
		t.Errorf("the last page links a next page, or not the first:\n%s", body)
	}
	resp, body = get(t, browser, h.srv.URL+"/console/sessions?"+url.Values{"user_id": {user}, "from": {"<script>"}}.Encode())
	if resp.StatusCode != http.StatusBadRequest || strings.Contains(body, "<script>") {
		t.Errorf("a cursor the page did not make: %d\n%s", resp.StatusCode, body)
	}
}
