package broker

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
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
