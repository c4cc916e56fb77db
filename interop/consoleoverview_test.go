package interop

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestConsoleOverviewInChromium: an admin signs in to the console through the broker (a DPoP
// login through acme, oidc-provider with nonces), an app's login through "legacy" (DPoP
// configured, its upstream without DPoP) fails three times with dpop_not_supported, and the
// Overview shows them in its charts, legacy under "Needs a look" (all its logins failed, and
// all in the last minutes), at 1280 px and at phone width, without breaking the console's
// CSP. Screenshots: interop/.cache/console-overview*.png.
func TestConsoleOverviewInChromium(t *testing.T) {
	t.Parallel()
	needChromium(t)
	b, acme, legacy := startConsoleBroker(t, "legacy", true, "read:connections, read:logs", `"acme", "legacy"`)

	// The app's login through legacy fails before it leaves the broker.
	q := url.Values{"response_type": {"code"}, "client_id": {"intranet"}, "redirect_uri": {"http://127.0.0.1:9/callback"},
		"scope": {"openid"}, "state": {"s1"}, "nonce": {"n1"}, "connection": {"legacy"},
		"code_challenge": {"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"}, "code_challenge_method": {"S256"}}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for range 3 {
		resp, err := noRedirect.Get(b.URL + "/authorize?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
	}
	wantEventWhere(t, b.proc, "legacy's dpop_not_supported", func(ev loginEvent) bool {
		return ev.Type == "f" && ev.Details["error"] == "dpop_not_supported"
	})

	br := startSSOBrowser(t, b.URL, acme, legacy)
	br.do(t, "viewport 1280x900", map[string]any{"op": "viewport", "width": 1280, "height": 900})
	br.get(t, "main", b.URL+"/console/")
	br.do(t, "sign in through the broker", map[string]any{"op": "submit", "selector": "#signin-broker", "wait_for": "#connection-acme"})
	home := br.do(t, "choose acme", map[string]any{"op": "submit", "selector": "#connection-acme", "wait_for": ".operator"})
	if !strings.Contains(home.Text, "oidc|acme|alice") {
		t.Fatalf("the admin's sign-in ended at %s:\n%s", home.URL, home.Text)
	}
	// The landing page was rendered while the sign-in's own event was being written: reload.
	page := br.get(t, "main", b.URL+"/console/?span=hour")
	for _, want := range []string{"Logins per minute by result", "dpop_not_supported", "acme", "legacy", "1 logins succeeded", "3 failed",
		"Needs a look", "legacy: failures jumped",
		"Upstream code exchange latency per connection (p50, p95)"} {
		if !strings.Contains(strings.Join(strings.Fields(page.Text), " "), want) {
			t.Errorf("the overview lacks %q:\n%s", want, page.Text)
		}
	}
	if a := br.do(t, "inspect overview", map[string]any{"op": "inspect"}); len(a.CSPViolations) > 0 {
		t.Errorf("the overview broke its CSP: %v", a.CSPViolations)
	}
	br.shot(t, "main", "console-overview")
	br.do(t, "viewport 390x844", map[string]any{"op": "viewport", "width": 390, "height": 844})
	br.shot(t, "main", "console-overview-phone")
	br.get(t, "main", b.URL+"/console/?span=day")
	br.shot(t, "main", "console-overview-day-phone") // the time axis carries dates
	week := br.get(t, "main", b.URL+"/console/?span=week")
	if !strings.Contains(week.Text, "Logins per hour by result") {
		t.Errorf("the week view:\n%s", week.Text)
	}
}
