package broker

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/config/configtest"
	"github.com/dpop-broker/dpop-broker/logs"
)

// spaAuthorizeURL is /authorize for the public SPA client (PKCE) with connection.
func (h *harness) spaAuthorizeURL(connection string) string {
	q := url.Values{
		"response_type": {"code"}, "client_id": {spaClient}, "redirect_uri": {h.app.URL + "/spa"},
		"scope": {"openid"}, "state": {"spa-state"}, "connection": {connection},
		"code_challenge": {s256(testVerifier)}, "code_challenge_method": {"S256"},
	}
	return h.srv.URL + "/authorize?" + q.Encode()
}

// TestDedicatedCallbackPathRefusesOtherConnection: a connection with callback_path: dedicated
// sends PUBLIC_URL/login/callback/{id} upstream and completes there; an authorization response
// of another connection's login arriving at that path (an IdP mix-up, RFC 9700 §4.4), or its
// own response arriving at the shared path, is refused with f callback_mismatch before any
// code exchange; the shared path keeps working for the other connections.
func TestDedicatedCallbackPathRefusesOtherConnection(t *testing.T) {
	h := newHarness(t, harnessOpts{up: optionalDPoPUp, mutate: func(c *config.Config) {
		c.Connections[0].Options.CallbackPath = config.CallbackDedicated // corp (DPoP); other has none
	}})
	shared := h.srv.URL + "/login/callback"
	dedicated := shared + "/" + config.DeriveConnectionID("corp")
	for _, tc := range []struct {
		name       string
		connection string
		wantSent   string // the callback the login sends upstream
		arriveAt   string // where the browser delivers the response
		wantOK     bool
	}{
		{name: "the dedicated connection completes at its own path", connection: "corp", wantSent: dedicated, arriveAt: dedicated, wantOK: true},
		{name: "another connection completes at the shared path", connection: "other", wantSent: shared, arriveAt: shared, wantOK: true},
		{name: "another connection's response at the dedicated path: refused", connection: "other", wantSent: shared, arriveAt: dedicated},
		{name: "the dedicated connection's response at the shared path: refused", connection: "corp", wantSent: dedicated, arriveAt: shared},
		{name: "a response at the path of a connection that does not exist: refused", connection: "corp", wantSent: dedicated, arriveAt: shared + "/con_unknown0000000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := h.browser()
			cb, err := url.Parse(h.toCallback(b, h.spaAuthorizeURL(tc.connection)))
			if err != nil {
				t.Fatal(err)
			}
			if sent := cb.Scheme + "://" + cb.Host + cb.Path; sent != tc.wantSent {
				t.Fatalf("the upstream sent the browser to %s, want %s", sent, tc.wantSent)
			}
			target := tc.arriveAt + "?" + cb.RawQuery
			tokens := h.up.Stats.TokenRequests.Load()
			resp, _ := get(t, b, target)
			q := appResult(t, resp, h.app.URL+"/spa")
			if tc.wantOK {
				if q.Get("code") == "" || h.lastEvent().Type != logs.TypeSuccessLogin {
					t.Fatalf("login did not complete: %v", q)
				}
				return
			}
			if q.Get("error") != "invalid_request" || q.Get("code") != "" || !strings.Contains(q.Get("error_description"), codeCallbackMismatch) ||
				strings.Contains(q.Get("error_description"), "/login/callback") {
				t.Fatalf("app got %v, want invalid_request naming callback_mismatch, without the broker's paths", q)
			}
			if ev := wantFail(t, h, codeCallbackMismatch); ev.Connection != tc.connection || ev.Details["callback"] != tc.arriveAt ||
				!strings.Contains(ev.Details["error_description"].(string), "mix-up") {
				t.Errorf("event = %+v", ev)
			}
			if h.up.Stats.TokenRequests.Load() != tokens {
				t.Error("the upstream code was exchanged although the response arrived at the wrong callback")
			}
		})
	}
}

// TestCallbackPathOptionValidated: options.callback_path accepts shared and dedicated only,
// in the YAML (a FieldError naming the key) and in the management API, whose connection
// object carries it; a connection switched to dedicated through the API logs in at its path.
func TestCallbackPathOptionValidated(t *testing.T) {
	configtest.SetEnv(t)
	for _, tc := range []struct {
		value   string
		wantErr bool
	}{
		{value: ""}, {value: config.CallbackShared}, {value: config.CallbackDedicated}, {value: "/custom/path", wantErr: true},
	} {
		cfg, err := config.Parse([]byte(configtest.ValidYAML))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Connections[0].Options.CallbackPath = tc.value
		want := config.FieldError{Key: "connections[0].options.callback_path", Reason: `"/custom/path" is not supported (use shared or dedicated)`}
		if got := slices.Contains(cfg.Validate(), want); got != tc.wantErr {
			t.Errorf("callback_path %q: error %v, want %v (%v)", tc.value, got, tc.wantErr, config.FieldErrors(cfg.Validate()))
		}
	}

	h := mgmtHarness(t, nil)
	otherID := config.DeriveConnectionID("other")
	opts := func(callbackPath string) map[string]any {
		return map[string]any{"options": map[string]any{"issuer": h.up.URL, "client_id": upClientID, "callback_path": callbackPath}}
	}
	wantAPIError(t, api(t, h.srv.URL, "PATCH", "/api/v2/connections/"+otherID, tokAll, opts("elsewhere")), 400, "invalid_body", "options.callback_path")
	r := api(t, h.srv.URL, "PATCH", "/api/v2/connections/"+otherID, tokAll, opts(config.CallbackDedicated))
	if o, _ := r.obj()["options"].(map[string]any); r.status != http.StatusOK || o["callback_path"] != config.CallbackDedicated {
		t.Fatalf("PATCH: %d %s", r.status, r.raw)
	}
	cb := h.toCallback(h.browser(), h.spaAuthorizeURL("other"))
	if !strings.HasPrefix(cb, h.srv.URL+"/login/callback/"+otherID+"?") {
		t.Fatalf("callback %s, want the dedicated path of %s", cb, otherID)
	}
}
