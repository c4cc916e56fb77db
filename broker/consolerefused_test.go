package broker

import (
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
)

func TestConsoleRefusalOfASignedInOperatorKeepsTheNavigation(t *testing.T) {
	h := consoleHarness(t, nil) // the break-glass token has read:connections only
	browser := h.browser()
	if resp, body := consoleTokenSignInAs(t, browser, h.srv.URL, consoleTestToken, "same-origin"); resp.StatusCode != http.StatusOK {
		t.Fatalf("token sign-in: %d\n%s", resp.StatusCode, body)
	}
	resp, body := get(t, browser, h.srv.URL+"/console/apps")
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "lacks the read:clients permission") {
		t.Fatalf("GET /console/apps = %d, want 403 naming the permission:\n%s", resp.StatusCode, body)
	}
	for _, want := range []string{`aria-label="Console sections"`, `>Connections</a>`, `action="/console/signout"`, `>Console home</a>`,
		`id="scope-needed"`, "a management token that has the <code>read:clients</code> scope", "as an administrator (<code>console.admins</code>)"} {
		if !strings.Contains(body, want) {
			t.Errorf("the refusal page lacks %s:\n%s", want, body)
		}
	}
	for _, unwanted := range []string{`>Apps</a>`, `href="/console/signin"`} {
		if strings.Contains(body, unwanted) {
			t.Errorf("the refusal page of a signed-in operator has %s", unwanted)
		}
	}

	// Without a session, the refusal offers the sign-in page and no navigation.
	resp, body = postForm(t, h.browser(), h.srv.URL+"/console/signout", url.Values{}, "same-origin")
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `href="/console/signin"`) || strings.Contains(body, `aria-label="Console sections"`) {
		t.Errorf("a refusal without a session: %d, want 401 offering the sign-in page without navigation:\n%s", resp.StatusCode, body)
	}
}

var brokerSignOutLink = regexp.MustCompile(`id="broker-signout" href="([^"]+)"`)

func TestConsoleRefusedNonAdminIsOfferedTheBrokersSignOutBeforeSigningInAgain(t *testing.T) {
	h := consoleHarness(t, func(c *config.Config) { c.Console.Admins = []config.ConsoleAdmin{{UserID: "oidc|corp|bob"}} })
	browser := h.browser()
	resp, body := h.consoleSignIn(browser)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "still signed in to the broker") {
		t.Fatalf("non-admin got %d:\n%s", resp.StatusCode, body)
	}
	if strings.Contains(body, `href="/console/signin"`) {
		t.Errorf("the refusal offers the sign-in page, which would bring the same account back:\n%s", body)
	}
	m := brokerSignOutLink.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no sign-out link:\n%s", body)
	}
	link, err := url.Parse(html.UnescapeString(m[1]))
	if err != nil || link.Path != "/v2/logout" || link.Query().Get("client_id") != config.ConsoleClientID {
		t.Fatalf("sign-out link %q, want the broker's /v2/logout as the console's client", m[1])
	}

	// Signing in again before signing out reuses the broker session (single sign-on) ...
	if resp, _ := h.consoleSignIn(browser); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("second sign-in: %d, want 403 again", resp.StatusCode)
	}
	if s := h.lastEventOf(logs.TypeSuccessLogin); s.Details["sso"] != true {
		t.Fatalf("the second sign-in's s event %v, want single sign-on", s.Details)
	}
	// ... the link ends it and returns to the sign-in page, which says so.
	resp, body = get(t, browser, link.String())
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/console/signin" || !strings.Contains(body, "signed out of the broker") {
		t.Fatalf("the sign-out link ended at %s (%d), want the sign-in page saying so:\n%s", resp.Request.URL, resp.StatusCode, body)
	}
	if resp, _ := h.consoleSignIn(browser); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("sign-in after signing out: %d, want 403 (alice is still no admin)", resp.StatusCode)
	}
	if s := h.lastEventOf(logs.TypeSuccessLogin); s.Details["sso"] == true {
		t.Errorf("the sign-in after the broker's sign-out reused a session: %v", s.Details)
	}
}
