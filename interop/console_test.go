package interop

import (
	"fmt"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
)

// The operators' console in headless Chromium (sso-browser.mjs): an admin signs in through
// the broker (the console's built-in client, oidc-provider as the upstream), a user of
// another connection is refused, the Connections page shows the live discovery check, and
// turning DPoP off there is what the next login through that connection uses; the Apps and
// Sessions pages list the app and the admin's own broker session. Screenshots
// go to interop/.cache/console-*.png.

func TestConsoleInChromium(t *testing.T) {
	t.Parallel()
	needChromium(t)
	b, acme, globex := startConsoleBroker(t, "globex", false, "read:connections, update:connections, read:logs", `"acme"`)
	br := startSSOBrowser(t, b.URL, acme, globex)
	noViolations := func(step string) ssoAnswer {
		t.Helper()
		a := br.do(t, "inspect "+step, map[string]any{"op": "inspect"})
		if len(a.CSPViolations) > 0 {
			t.Errorf("%s: the page broke its CSP: %v", step, a.CSPViolations)
		}
		return a
	}
	submit := func(step, selector, waitFor string) ssoAnswer {
		t.Helper()
		return br.do(t, step, map[string]any{"op": "submit", "selector": selector, "wait_for": waitFor})
	}
	viewport := func(w, h int) {
		br.do(t, fmt.Sprintf("viewport %dx%d", w, h), map[string]any{"op": "viewport", "width": w, "height": h})
	}
	viewport(1280, 800)

	// The sign-in page, then the admin through the broker's chooser and acme.
	page := br.get(t, "main", b.URL+"/console/")
	if !strings.HasPrefix(page.URL, b.URL+"/console/signin") || !strings.Contains(page.Text, "Sign in through the broker") {
		t.Fatalf("want the console's sign-in page, got %s:\n%s", page.URL, page.Text)
	}
	noViolations("sign-in page")
	br.shot(t, "main", "console-signin")
	// Keyboard: the first Tab reaches the skip link, two more the sign-in through the broker.
	tab := map[string]string{"press": "Tab"}
	if a := br.do(t, "Tab", map[string]any{"op": "keys", "keys": []map[string]string{tab}}); a.Focused != "skip" {
		t.Errorf("the first Tab focuses %q, want the skip link", a.Focused)
	}
	if a := br.do(t, "Tab twice", map[string]any{"op": "keys", "keys": []map[string]string{tab, tab}}); a.Focused != "signin-broker" {
		t.Errorf("three Tabs focus %q, want the sign-in through the broker", a.Focused)
	}
	br.shot(t, "main", "console-signin-focus")
	submit("sign in through the broker", "#signin-broker", "#connection-acme")
	home := submit("choose acme", "#connection-acme", ".operator")
	if !strings.HasPrefix(home.URL, b.URL+"/console/") || !strings.Contains(home.Text, "oidc|acme|alice") {
		t.Fatalf("the admin's sign-in ended at %s:\n%s", home.URL, home.Text)
	}
	br.shot(t, "main", "console-home")
	wantEventWhere(t, b.proc, "the console sign-in's sapi event", func(ev loginEvent) bool {
		c, _ := ev.Details["console"].(map[string]any)
		return ev.Type == "sapi" && c["action"] == "sign_in"
	})

	// Connections: the list at desktop and phone width, then acme's live check.
	list := br.get(t, "main", b.URL+"/console/connections")
	for _, want := range []string{"acme", "globex", acme, "ES256", "off (Bearer)", "DPoP works", "upstream has no DPoP"} {
		if !strings.Contains(list.Text, want) {
			t.Errorf("the connections page lacks %q:\n%s", want, list.Text)
		}
	}
	noViolations("connections page")
	br.shot(t, "main", "console-connections")
	viewport(390, 844)
	br.shot(t, "main", "console-connections-phone")
	viewport(1280, 800)
	acmeID := config.DeriveConnectionID("acme")
	conn := br.get(t, "main", b.URL+"/console/connections/"+acmeID)
	if !strings.Contains(conn.Text, "DPoP works") || !strings.Contains(conn.Text, "DPoP algorithms offered") {
		t.Errorf("acme's live check does not say DPoP works:\n%s", conn.Text)
	}
	br.shot(t, "main", "console-connection")
	viewport(390, 844)
	br.shot(t, "main", "console-connection-phone")
	viewport(1280, 800)
	globexPage := br.get(t, "main", b.URL+"/console/connections/"+config.DeriveConnectionID("globex"))
	if !strings.Contains(globexPage.Text, "dpop_signing_alg_values_supported is absent") {
		t.Errorf("globex's live check does not say the upstream lacks DPoP:\n%s", globexPage.Text)
	}

	// Apps and the admin's own sessions.
	apps := br.get(t, "main", b.URL+"/console/apps")
	if !strings.Contains(apps.Text, "intranet") || strings.Contains(apps.Text, "dpop-broker-console") {
		t.Errorf("the apps page:\n%s", apps.Text)
	}
	noViolations("apps page")
	br.shot(t, "main", "console-apps")
	sessions := br.get(t, "main", b.URL+"/console/sessions?user_id=oidc%7Cacme%7Calice")
	if !strings.Contains(sessions.Text, "dpop-broker-console") || !strings.Contains(sessions.Text, "End all sessions") {
		t.Errorf("the sessions page does not list the admin's console session:\n%s", sessions.Text)
	}
	noViolations("sessions page")
	br.shot(t, "main", "console-sessions")
	viewport(390, 844)
	if a := br.do(t, "measure the sessions page at phone width", map[string]any{"op": "inspect"}); a.ScrollWidth > 390 {
		t.Errorf("the sessions page is %d px wide at a 390 px viewport", a.ScrollWidth)
	}
	br.shot(t, "main", "console-sessions-phone")
	viewport(1280, 800)

	// Turn DPoP off for acme from the console.
	br.get(t, "main", b.URL+"/console/connections/"+acmeID)
	br.do(t, "choose Off", map[string]any{"op": "select", "selector": "#dpop_signing_alg", "value": ""})
	confirm := submit("save", "#save-dpop", "#confirm-off")
	if !strings.Contains(confirm.Text, "Turn DPoP off?") || !strings.Contains(confirm.Text, "upstream_requires_dpop") {
		t.Errorf("saving Off does not ask first:\n%s", confirm.Text)
	}
	br.shot(t, "main", "console-connection-confirm-off")
	saved := submit("confirm", "#confirm-dpop-off", ".notice")
	if !strings.Contains(saved.Text, "Saved.") || !strings.Contains(saved.Text, "the broker sends no DPoP proof") {
		t.Errorf("after saving, the page says:\n%s", saved.Text)
	}
	br.shot(t, "main", "console-connection-saved")
	patch := wantEventWhere(t, b.proc, "the PATCH's sapi event naming the operator", func(ev loginEvent) bool {
		req, _ := ev.Details["request"].(map[string]any)
		auth, _ := req["auth"].(map[string]any)
		return ev.Type == "sapi" && req["method"] == "PATCH" && auth["user"] == "console:oidc|acme|alice"
	})
	// Its event view: the operator, request and status as labelled facts.
	if id, _ := patch.Raw["log_id"].(string); id != "" {
		view := br.get(t, "main", b.URL+"/console/logs/"+id)
		for _, want := range []string{"Operator", "oidc|acme|alice (via broker)", "PATCH /api/v2/connections/" + acmeID, "Status", "200"} {
			if !strings.Contains(view.Text, want) {
				t.Errorf("the PATCH's event view lacks %q:\n%s", want, view.Text)
			}
		}
		br.shot(t, "main", "console-sapi-event")
	} else {
		t.Errorf("the PATCH's event has no log_id: %v", patch.Raw)
	}

	// A user of globex is no admin: refused, with a page that says why.
	br.do(t, "forget cookies", map[string]any{"op": "clear_cookies"})
	br.get(t, "main", b.URL+"/console/login")
	refused := submit("choose globex", "#connection-globex", ".problem")
	if !strings.Contains(refused.Text, "not a console administrator") {
		t.Errorf("the non-admin's page says:\n%s", refused.Text)
	}
	br.shot(t, "main", "console-refused")

	// The next login through acme is a Bearer login (the admin's, again through the console).
	br.do(t, "forget cookies", map[string]any{"op": "clear_cookies"})
	br.get(t, "main", b.URL+"/console/login")
	submit("choose acme again", "#connection-acme", ".operator")
	ev := wantEventWhere(t, b.proc, "a Bearer login through acme", func(ev loginEvent) bool {
		return ev.Type == "s" && ev.Raw["connection"] == "acme" && ev.Details["idp_token_type"] == "bearer"
	})
	if _, on := ev.Details["dpop_signing_alg"]; on {
		t.Errorf("the login after DPoP was turned off still names dpop_signing_alg: %v", ev.Details)
	}
}

// startConsoleBroker starts a broker (memory store) whose console admits alice of acme
// (oidc-provider with DPoP nonces; the connection has dpop_signing_alg ES256) and a second
// connection named other on an upstream without DPoP (with dpop_signing_alg ES256 when
// otherDPoP: its logins then fail with dpop_not_supported). The app "intranet" may use
// appConns (a YAML flow list's items); the management token has scopes. It returns the broker
// and the two upstreams' issuers.
func startConsoleBroker(t *testing.T, other string, otherDPoP bool, scopes, appConns string) (b *brokerProc, acme, otherIssuer string) {
	t.Helper()
	sock := listenSocket(t)
	acmeSecret, otherSecret, token := randomHex(t, 16), randomHex(t, 16), randomHex(t, 24)
	callback := sock.URL + "/login/callback"
	_, acme = startUpstream(t, "--port", "0", "--mode", "nonce", "--client-id", "broker", "--client-secret", acmeSecret, "--redirect-uri", callback)
	_, otherIssuer = startUpstream(t, "--port", "0", "--mode", "nodpop", "--client-id", "broker", "--client-secret", otherSecret, "--redirect-uri", callback)
	otherAlg := ""
	if otherDPoP {
		otherAlg = "\n      dpop_signing_alg: ES256"
	}
	cfg := "# console interop config (generated by console_test.go)\n" + consoleBrokerYAML(sock.URL, scopes) + fmt.Sprintf(`clients:
  - client_id: "intranet"
    redirect_uris: ["http://127.0.0.1:9/callback"]
    connections: [%[1]s]
console:
  admins:
    - user_id: "oidc|acme|alice"
connections:
  - name: "acme"
    strategy: oidc
    options:
      issuer: %[2]q
      client_id: "broker"
      client_secret: "${INTEROP_ACME_SECRET}"
      dpop_signing_alg: ES256
  - name: %[4]q
    strategy: oidc
    options:
      issuer: %[3]q
      client_id: "broker"
      client_secret: "${INTEROP_OTHER_SECRET}"%[5]s
`, appConns, acme, otherIssuer, other, otherAlg)
	b = startBroker(t, sock, cfg, map[string]string{
		"INTEROP_SIGNING_KEY":    generateKey(t, "RS256"),
		"INTEROP_DPOP_ES256_KEY": generateKey(t, "ES256"),
		"INTEROP_ACME_SECRET":    acmeSecret,
		"INTEROP_OTHER_SECRET":   otherSecret,
		"INTEROP_MGMT_TOKEN":     token,
	})
	return b, acme, otherIssuer
}

// consoleBrokerYAML is the start of a console test broker's configuration: the public URL
// issuer, a memory store, keysYAML, and the management token ops (${INTEROP_MGMT_TOKEN}) with
// scopes (a YAML flow list's items).
func consoleBrokerYAML(issuer, scopes string) string {
	return fmt.Sprintf(`issuer: "%s/"
store:
  type: memory
%s
management:
  tokens:
    - name: ops
      token: "${INTEROP_MGMT_TOKEN}"
      scopes: [%s]
`, issuer, keysYAML, scopes)
}
