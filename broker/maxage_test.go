package broker

import (
	"net/http"
	"net/url"
	"testing"
	"time"
)

// TestMaxAgeAndAuthTime: the app's max_age and prompt=login go upstream; the broker's
// auth_time is the upstream's (an IdP SSO session may predate the login); an upstream that
// ignores max_age gets the login refused (OIDC Core §3.1.3.7 step 13).
func TestMaxAgeAndAuthTime(t *testing.T) {
	const sessionAge = 2 * time.Hour
	for _, tc := range []struct {
		name         string
		query        url.Values
		ignoreMaxAge bool
		wantUpstream url.Values    // parameters the upstream authorization request must carry
		wantAge      time.Duration // of the broker ID token's auth_time; -1 = the login fails
	}{
		{name: "no max_age: auth_time is the upstream SSO session's", query: nil, ignoreMaxAge: false, wantUpstream: nil, wantAge: sessionAge},
		{name: "max_age below the SSO session: the upstream authenticates again", query: url.Values{"max_age": {"300"}}, ignoreMaxAge: false,
			wantUpstream: url.Values{"max_age": {"300"}}, wantAge: 0},
		{name: "max_age above the SSO session: the session stands", query: url.Values{"max_age": {"86400"}}, ignoreMaxAge: false,
			wantUpstream: url.Values{"max_age": {"86400"}}, wantAge: sessionAge},
		{name: "prompt=login: the upstream authenticates again", query: url.Values{"prompt": {"login"}}, ignoreMaxAge: false,
			wantUpstream: url.Values{"prompt": {"login"}}, wantAge: 0},
		{name: "an upstream ignoring max_age: the old auth_time is refused", query: url.Values{"max_age": {"300"}}, ignoreMaxAge: true,
			wantUpstream: url.Values{"max_age": {"300"}}, wantAge: -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := dpopUp
			up.SessionAge, up.IgnoreMaxAge = sessionAge, tc.ignoreMaxAge
			h := newHarness(t, harnessOpts{up: up})
			authz := h.authorizeURL(func(q url.Values) {
				for k, v := range tc.query {
					q[k] = v
				}
			})
			// The broker's redirect to the upstream carries the app's requirements.
			resp, err := noRedirects(h.browser()).Get(authz)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			loc, _ := url.Parse(resp.Header.Get("Location"))
			for k := range tc.wantUpstream {
				if got := loc.Query().Get(k); got != tc.wantUpstream.Get(k) {
					t.Errorf("upstream %s = %q, want %q", k, got, tc.wantUpstream.Get(k))
				}
			}
			resp, _ = get(t, h.browser(), authz)
			q := appResult(t, resp, h.app.URL+"/cb")
			if tc.wantAge < 0 {
				if q.Get("error") == "" {
					t.Fatalf("login succeeded: %v", q)
				}
				wantFail(t, h, "id_token_invalid")
				return
			}
			status, body, _ := h.token(h.codeForm(q.Get("code")), true)
			idt, _ := body["id_token"].(string)
			if status != http.StatusOK || idt == "" {
				t.Fatalf("token: %d %v", status, body)
			}
			at, _ := claimsOf(t, idt)["auth_time"].(float64)
			age := time.Since(time.Unix(int64(at), 0))
			if age < tc.wantAge-time.Minute || age > tc.wantAge+time.Minute {
				t.Errorf("ID token auth_time is %v old, want about %v", age.Round(time.Second), tc.wantAge)
			}
		})
	}
	t.Run("max_age not a number: invalid_request", func(t *testing.T) {
		h := newHarness(t, harnessOpts{up: dpopUp})
		resp, _ := get(t, h.browser(), h.authorizeURL(func(q url.Values) { q.Set("max_age", "-5") }))
		if q := appResult(t, resp, h.app.URL+"/cb"); q.Get("error") != "invalid_request" {
			t.Errorf("app got %v", q)
		}
	})
}
