package interop

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// The console's Apps page in headless Chromium (sso-browser.mjs) with more apps than a page
// holds: an operator signs in with a management token by keyboard, and the page's first,
// previous, next and last links lead to the pages they name, each listing its apps in
// client_id order under the right page numbers; a page that is not a number is a 400.
// Screenshots go to interop/.cache/console-apps-page-*.png.

// consoleAppsTotal is how many apps the broker has: two full pages of 50 and a part.
const consoleAppsTotal = 120

func TestConsoleAppsPagesInChromium(t *testing.T) {
	t.Parallel()
	needChromium(t)
	needPeers(t)
	b, token := startAppsBroker(t)
	br := startSSOBrowser(t, b.URL)
	br.do(t, "viewport 1280x800", map[string]any{"op": "viewport", "width": 1280, "height": 800})

	// The break-glass sign-in, by keyboard: Tab to the token field, type it, Enter.
	if page := br.get(t, "main", b.URL+"/console/apps"); !strings.HasPrefix(page.URL, b.URL+"/console/signin") {
		t.Fatalf("want the sign-in page, got %s:\n%s", page.URL, page.Text)
	}
	tab := map[string]string{"press": "Tab"}
	focused := ""
	for i := 0; i < 10 && focused != "token"; i++ {
		focused = br.do(t, "Tab", map[string]any{"op": "keys", "keys": []map[string]string{tab}}).Focused
	}
	if focused != "token" {
		t.Fatalf("ten Tabs never reached the token field (last focus %q)", focused)
	}
	home := br.do(t, "type the token, Enter", map[string]any{"op": "keys",
		"keys": []map[string]string{{"type": token}, {"press": "Enter"}}, "wait_for": ".operator"})
	if !strings.Contains(home.Text, "token:ops") {
		t.Fatalf("the token sign-in ended at %s:\n%s", home.URL, home.Text)
	}

	// want checks the page the browser shows: its URL's page, the apps listed (client_id
	// order, from first on), its caption and its paging links.
	want := func(step string, a ssoAnswer, query string, first, n int, caption string, links []string) {
		t.Helper()
		if wantURL := b.URL + "/console/apps" + query; a.URL != wantURL {
			t.Fatalf("%s: the browser is at %s, want %s", step, a.URL, wantURL)
		}
		ids := br.do(t, step+": the apps", map[string]any{"op": "texts", "selector": "#apps tbody td[data-label=App] code"}).Texts
		wantIDs := make([]string, n)
		for i := range wantIDs {
			wantIDs[i] = fmt.Sprintf("app-%03d", first+i)
		}
		if !slices.Equal(ids, wantIDs) {
			t.Errorf("%s: the page lists %v, want %v", step, ids, wantIDs)
		}
		if got := br.do(t, step+": the caption", map[string]any{"op": "texts", "selector": "#apps caption"}).Texts; len(got) != 1 || got[0] != caption {
			t.Errorf("%s: the caption says %q, want %q", step, got, caption)
		}
		if got := br.do(t, step+": the paging links", map[string]any{"op": "texts", "selector": "#apps-paging a"}).Texts; !slices.Equal(got, links) {
			t.Errorf("%s: the paging links are %q, want %q", step, got, links)
		}
		if got := br.do(t, step+": the page number", map[string]any{"op": "texts", "selector": "#apps-paging [aria-current=page]"}).Texts; len(got) != 1 || !strings.HasSuffix(caption, strings.ToLower(got[0])) {
			t.Errorf("%s: the paging says %q, not the caption's page (%q)", step, got, caption)
		}
	}
	next, last := []string{"Next page", "Last page"}, []string{"First page", "Previous page"}
	middle := append(slices.Clone(last), next...)
	submit := func(step, selector, waitFor string) ssoAnswer {
		t.Helper()
		return br.do(t, step, map[string]any{"op": "submit", "selector": selector, "wait_for": waitFor})
	}

	p1 := br.get(t, "main", b.URL+"/console/apps")
	want("the first page", p1, "", 0, 50, "120 apps; 1–50 shown, page 1 of 3", next)
	br.shot(t, "main", "console-apps-page-1")
	p2 := submit("Next page", "#apps-next", "#apps-prev")
	want("Next page from the first", p2, "?page=1", 50, 50, "120 apps; 51–100 shown, page 2 of 3", middle)
	br.shot(t, "main", "console-apps-page-2")
	p3 := submit("Last page", "#apps-last", "#apps-first")
	want("Last page", p3, "?page=2", 100, consoleAppsTotal-100, "120 apps; 101–120 shown, page 3 of 3", last)
	br.shot(t, "main", "console-apps-page-3")
	back := submit("Previous page", "#apps-prev", "#apps-next")
	want("Previous page from the last", back, "?page=1", 50, 50, "120 apps; 51–100 shown, page 2 of 3", middle)
	top := submit("First page", "#apps-first", "#apps-next")
	want("First page", top, "?page=0", 0, 50, "120 apps; 1–50 shown, page 1 of 3", next)

	for _, page := range []string{"abc", "-1", "1.5"} {
		a := br.get(t, "main", b.URL+"/console/apps?page="+page)
		if a.HTTPStatus != 400 || !strings.Contains(a.Text, "The page is not a page number.") {
			t.Errorf("page=%s: HTTP %d, want 400 saying the page is not a page number:\n%s", page, a.HTTPStatus, a.Text)
		}
	}
	br.shot(t, "main", "console-apps-page-refused")
}

// startAppsBroker starts a broker (memory store) with consoleAppsTotal apps, app-000 to
// app-119, and a management token (name ops) that may read clients; it returns the broker and
// the token. Its connection is never used: nobody logs in.
func startAppsBroker(t *testing.T) (*brokerProc, string) {
	t.Helper()
	sock := listenSocket(t)
	token := randomHex(t, 24)
	var apps strings.Builder
	for i := range consoleAppsTotal {
		fmt.Fprintf(&apps, "  - client_id: \"app-%03d\"\n    redirect_uris: [\"http://127.0.0.1:9/callback\"]\n    connections: [\"corp\"]\n", i)
	}
	cfg := "# console apps interop config (generated by consoleapps_test.go)\n" + consoleBrokerYAML(sock.URL, "read:clients") + `clients:
` + apps.String() + `connections:
  - name: "corp"
    strategy: oidc
    options:
      issuer: "https://idp.example"
      client_id: "broker"
      client_secret: "${INTEROP_CORP_SECRET}"
`
	b := startBroker(t, sock, cfg, map[string]string{
		"INTEROP_SIGNING_KEY":    generateKey(t, "RS256"),
		"INTEROP_DPOP_ES256_KEY": generateKey(t, "ES256"),
		"INTEROP_MGMT_TOKEN":     token,
		"INTEROP_CORP_SECRET":    randomHex(t, 16),
	})
	return b, token
}
