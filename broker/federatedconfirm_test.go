package broker

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
)

// TestUnconfirmedFederatedLogoutNeverReachesUpstream: a link or cross-site form to
// /v2/logout?federated does not carry the user to the upstream IdP's logout (which would end
// their single sign-on there): the broker asks first, and only the user's click, a POST with
// the token derived from their session cookie, goes upstream. Until then nothing ends.
func TestUnconfirmedFederatedLogoutNeverReachesUpstream(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp, mutate: func(c *config.Config) {
		c.Clients[0].PostLogoutRedirectURIs = []string{strings.TrimSuffix(c.Clients[0].RedirectURIs[0], "/cb") + "/bye"}
	}})
	bye := h.app.URL + "/bye"
	link := url.Values{"federated": {""}, "client_id": {appClient}, "returnTo": {bye}}
	for _, tc := range []struct {
		name    string
		request func(t *testing.T, victim, attacker *http.Client) *http.Response
	}{
		{name: "the attacker's link /v2/logout?federated&client_id", request: func(t *testing.T, victim, _ *http.Client) *http.Response {
			return mustDo(t)(noRedirects(victim).Get(h.srv.URL + "/v2/logout?" + link.Encode()))
		}},
		{name: "a cross-site form POST with a forged confirmation", request: func(t *testing.T, victim, _ *http.Client) *http.Response {
			f := url.Values{"federated": {"true"}, "client_id": {appClient}, "returnTo": {bye}, "confirm": {"forged"}}
			return mustDo(t)(noRedirects(victim).PostForm(h.srv.URL+"/v2/logout", f))
		}},
		{name: "a POST with the confirmation token of the attacker's own session", request: func(t *testing.T, victim, attacker *http.Client) *http.Response {
			_, body := get(t, noRedirects(attacker), h.srv.URL+"/v2/logout?"+link.Encode())
			return mustDo(t)(noRedirects(victim).PostForm(h.srv.URL+"/v2/logout", formFields(t, body)))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			victim, _, at := h.logoutLogin(t)
			attacker, _, _ := h.logoutLogin(t)
			before := h.up.Stats.EndSessions.Load()
			resp := tc.request(t, victim, attacker)
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Location") != "" {
				t.Fatalf("got %d Location %q, want the confirmation page", resp.StatusCode, resp.Header.Get("Location"))
			}
			if h.up.Stats.EndSessions.Load() != before {
				t.Error("the upstream's end_session_endpoint was reached without the user's confirmation")
			}
			if !h.sessionAlive(t, at) {
				t.Error("the broker session ended without the user's confirmation")
			}
		})
	}
	t.Run("the user's click goes through the upstream's logout", func(t *testing.T) {
		victim, _, at := h.logoutLogin(t)
		before := h.up.Stats.EndSessions.Load()
		resp, body := get(t, noRedirects(victim), h.srv.URL+"/v2/logout?"+link.Encode())
		form := formFields(t, body)
		if resp.StatusCode != http.StatusOK || form.Get("confirm") == "" || !strings.Contains(body, `action="`+h.srv.URL+`/v2/logout"`) {
			t.Fatalf("confirmation page: %d %s", resp.StatusCode, body)
		}
		resp = mustDo(t)(victim.PostForm(h.srv.URL+"/v2/logout", form))
		if resp.Request.URL.String() != bye || h.up.Stats.EndSessions.Load() != before+1 || h.sessionAlive(t, at) {
			t.Errorf("after the click: at %s, upstream logouts %d, session alive %v", resp.Request.URL, h.up.Stats.EndSessions.Load()-before, h.sessionAlive(t, at))
		}
	})
	t.Run("no session in this browser: nothing to ask, nothing upstream", func(t *testing.T) {
		before := h.up.Stats.EndSessions.Load()
		resp := mustDo(t)(noRedirects(h.browser()).Get(h.srv.URL + "/v2/logout?" + link.Encode()))
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != bye || h.up.Stats.EndSessions.Load() != before {
			t.Errorf("got %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
		}
	})
}

// mustDo returns a function that fails t on a request error and closes the response body.
func mustDo(t *testing.T) func(*http.Response, error) *http.Response {
	return func(resp *http.Response, err error) *http.Response {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp
	}
}
