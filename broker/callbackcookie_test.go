package broker

import (
	"net/http"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// TestLeakedStateCannotConsumeLoginInFlight: someone who learns the callback URL (state and
// upstream code) of a login in flight and calls it first, without that browser's transaction
// cookie, gets an error page and an f invalid_state event; the transaction stays, and the
// user's browser completes the login.
func TestLeakedStateCannotConsumeLoginInFlight(t *testing.T) {
	forStores(t, func(t *testing.T, store func() sessions.Store) {
		h := newHarness(t, harnessOpts{up: dpopUp, store: store()})
		for _, tc := range []struct {
			name     string
			attacker func() *http.Client
		}{
			{name: "attacker without a transaction cookie", attacker: h.browser},
			{name: "attacker with the cookie of a login of its own", attacker: func() *http.Client {
				b := h.browser()
				h.toCallback(b, h.authorizeURL(nil)) // its own transaction and cookie
				return b
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				user := h.browser()
				cb := h.toCallback(user, h.authorizeURL(nil))
				resp, body := get(t, tc.attacker(), cb)
				if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, codeInvalidState) {
					t.Fatalf("attacker's callback: %d %s", resp.StatusCode, body)
				}
				wantFail(t, h, codeInvalidState)
				resp, _ = get(t, user, cb)
				if q := appResult(t, resp, h.app.URL+"/cb"); q.Get("code") == "" {
					t.Fatalf("the user's login did not complete: %v", q)
				}
			})
		}
	})
}
