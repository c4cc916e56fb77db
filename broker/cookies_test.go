package broker

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestHTTPSCookiesUseHostPrefix: over https the transaction and session cookies are
// __Host- prefixed (Secure, Path=/, no Domain), and the callback and logout read them under
// that name; over http (loopback development) they keep their plain names and paths.
func TestHTTPSCookiesUseHostPrefix(t *testing.T) {
	for _, tc := range []struct {
		name       string
		tls        bool
		wantPrefix string
		wantTxPath string
	}{
		{name: "https public URL: __Host- names, Secure, Path=/", tls: true, wantPrefix: "__Host-", wantTxPath: "/"},
		{name: "http loopback public URL: plain names, the callback path", tls: false, wantPrefix: "", wantTxPath: "/login/callback"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{up: dpopUp, tls: tc.tls})
			b := h.browser()
			wantCookie := func(t *testing.T, resp *http.Response, base, path string, deleted bool) {
				t.Helper()
				for _, c := range resp.Cookies() {
					if c.Name != tc.wantPrefix+base {
						continue
					}
					if c.Secure != tc.tls || c.Path != path || c.Domain != "" || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode ||
						(c.MaxAge < 0) != deleted || strings.Contains(strings.ToLower(c.Raw), "domain=") {
						t.Errorf("cookie %s: %q", c.Name, c.Raw)
					}
					return
				}
				t.Errorf("no cookie %s%s among %v", tc.wantPrefix, base, resp.Header.Values("Set-Cookie"))
			}

			resp, err := noRedirects(b).Get(h.authorizeURL(nil))
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			wantCookie(t, resp, txCookie, tc.wantTxPath, false)

			// The callback reads the transaction cookie by its name and sets the session cookie.
			cb := h.toCallback(b, h.authorizeURL(nil))
			resp, err = noRedirects(b).Get(cb)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			loc, _ := url.Parse(resp.Header.Get("Location"))
			if resp.StatusCode != http.StatusFound || loc == nil || loc.Query().Get("code") == "" {
				t.Fatalf("callback: %d %q", resp.StatusCode, resp.Header.Get("Location"))
			}
			wantCookie(t, resp, sessionCookie, "/", false)
			wantCookie(t, resp, txCookie, tc.wantTxPath, true)

			// Logout finds the session by the cookie's name: it asks first, then ends it.
			resp, body := get(t, noRedirects(b), h.srv.URL+"/oidc/logout")
			form := formFields(t, body)
			if resp.StatusCode != http.StatusOK || form.Get("confirm") == "" {
				t.Fatalf("logout did not see the session: %d %s", resp.StatusCode, body)
			}
			resp, err = noRedirects(b).PostForm(h.srv.URL+"/oidc/logout", form)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if ev := h.lastEvent(); ev.Type != "slo" {
				t.Errorf("after confirming: %d, last event %s, want slo", resp.StatusCode, ev.Type)
			}
			wantCookie(t, resp, sessionCookie, "/", true)
		})
	}
}
