package broker

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

func TestTokenErrors(t *testing.T) {
	h := newHarness(t, harnessOpts{up: demoidp.Options{DPoPAlgs: []string{"ES256"}}})
	for _, tc := range []struct {
		name   string
		form   func(code string) url.Values
		basic  bool
		status int
		err    string
		// codeKept: the refused presentation leaves the code for the app's own redemption.
		codeKept bool
	}{
		{name: "verifier mismatch", form: func(c string) url.Values {
			f := h.codeForm(c)
			f.Set("code_verifier", strings.Repeat("a", 43))
			return f
		}, basic: true, status: 400, err: "invalid_grant", codeKept: true},
		{name: "verifier missing", form: func(c string) url.Values { f := h.codeForm(c); f.Del("code_verifier"); return f }, basic: true, status: 400, err: "invalid_grant", codeKept: true},
		{name: "verifier shorter than 43 characters", form: func(c string) url.Values {
			f := h.codeForm(c)
			f.Set("code_verifier", strings.Repeat("a", 42))
			return f
		}, basic: true, status: 400, err: "invalid_grant", codeKept: true},
		{name: "redirect_uri mismatch", form: func(c string) url.Values { f := h.codeForm(c); f.Set("redirect_uri", h.app.URL+"/x"); return f }, basic: true, status: 400, err: "invalid_grant", codeKept: true},
		{name: "wrong client secret", form: func(c string) url.Values {
			f := h.codeForm(c)
			f.Set("client_id", appClient)
			f.Set("client_secret", "wrong")
			return f
		}, basic: false, status: 401, err: "invalid_client"},
		{name: "public auth for a confidential client", form: func(c string) url.Values { f := h.codeForm(c); f.Set("client_id", appClient); return f }, basic: false, status: 401, err: "invalid_client"},
		{name: "unsupported grant", form: func(c string) url.Values { f := h.codeForm(c); f.Set("grant_type", "password"); return f }, basic: true, status: 400, err: "unsupported_grant_type"},
		{name: "unknown code", form: func(string) url.Values { return h.codeForm("abc.def") }, basic: true, status: 400, err: "invalid_grant"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code := h.login().Get("code")
			status, body, hdr := h.token(tc.form(code), tc.basic)
			if status != tc.status || body["error"] != tc.err {
				t.Fatalf("got %d %v, want %d %s", status, body, tc.status, tc.err)
			}
			if status == 401 && tc.basic && hdr.Get("WWW-Authenticate") == "" {
				t.Error("401 after Basic without WWW-Authenticate")
			}
			// Whatever failed, the code stays single use: a failed check claims nothing (the
			// checks run before the claim), so the app's correct redemption succeeds once, and
			// only once.
			if tc.codeKept {
				if s, b, _ := h.token(h.codeForm(code), true); s != 200 {
					t.Errorf("the app's redemption after a failed one: %d %v", s, b)
				}
				if s, b, _ := h.token(h.codeForm(code), true); s != 400 || b["error"] != "invalid_grant" {
					t.Errorf("code usable twice: %d %v", s, b)
				}
			}
		})
	}
	t.Run("code replay", func(t *testing.T) {
		code := h.login().Get("code")
		if s, b, _ := h.token(h.codeForm(code), true); s != 200 {
			t.Fatalf("first redemption: %d %v", s, b)
		}
		if s, b, _ := h.token(h.codeForm(code), true); s != 400 || b["error"] != "invalid_grant" {
			t.Fatalf("replay: %d %v", s, b)
		}
	})
	t.Run("code expired", func(t *testing.T) {
		code := h.login().Get("code")
		h.clock.Advance(h.cfg.Lifetimes.Code + time.Second)
		if s, b, _ := h.token(h.codeForm(code), true); s != 400 || b["error"] != "invalid_grant" {
			t.Fatalf("expired code: %d %v", s, b)
		}
	})
	t.Run("client_secret_post accepted only when registered", func(t *testing.T) {
		code := h.login().Get("code")
		f := h.codeForm(code)
		f.Set("client_id", appClient)
		f.Set("client_secret", appSecret)
		if s, b, _ := h.token(f, false); s != 401 || b["error"] != "invalid_client" {
			t.Fatalf("post for a basic client: %d %v", s, b)
		}
	})
}

func TestUserinfoRejects(t *testing.T) {
	h := newHarness(t, harnessOpts{up: demoidp.Options{DPoPAlgs: []string{"ES256"}}})
	code := h.login().Get("code")
	_, body, _ := h.token(h.codeForm(code), true)
	at := body["access_token"].(string)
	call := func(auth string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/userinfo", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		_, _ = io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
	}
	if s, _ := call("Bearer " + at); s != 200 {
		t.Fatalf("valid token: %d", s)
	}
	if s, www := call(""); s != 401 || strings.Contains(www, "error=") {
		t.Errorf("no credentials: %d %q (no error info, RFC 6750 §3.1)", s, www)
	}
	if s, www := call("Bearer " + at[:len(at)-4] + "AAAA"); s != 401 || !strings.Contains(www, "invalid_token") {
		t.Errorf("tampered: %d %q", s, www)
	}
	if s, _ := call("Bearer " + body["id_token"].(string)); s != 401 {
		t.Errorf("ID token accepted as access token: %d", s)
	}
	h.clock.Advance(h.cfg.Lifetimes.AccessToken + time.Minute)
	if s, www := call("Bearer " + at); s != 401 || !strings.Contains(www, "invalid_token") {
		t.Errorf("expired: %d %q", s, www)
	}
}

func TestDiscoveryJWKSHealth(t *testing.T) {
	h := newHarness(t, harnessOpts{up: demoidp.Options{DPoPAlgs: []string{"ES256"}}})
	var doc map[string]any
	resp, body := get(t, http.DefaultClient, h.srv.URL+"/.well-known/openid-configuration")
	if err := json.Unmarshal([]byte(body), &doc); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	base := strings.TrimSuffix(h.cfg.Issuer, "/")
	want := map[string]any{
		"issuer": h.cfg.Issuer, "token_endpoint": base + "/oauth/token", "authorization_endpoint": base + "/authorize",
		"jwks_uri": base + "/.well-known/jwks.json", "authorization_response_iss_parameter_supported": true,
		"backchannel_logout_supported": true, "backchannel_logout_session_supported": true,
	}
	for k, v := range want {
		if doc[k] != v {
			t.Errorf("%s = %v, want %v", k, doc[k], v)
		}
	}
	if !strings.Contains(body, `"dpop_signing_alg_values_supported":["ES256","EdDSA","Ed25519","RS256","PS256"]`) ||
		!strings.Contains(body, `"code_challenge_methods_supported":["S256"]`) {
		t.Errorf("metadata (dpop_signing_alg_values_supported, S256 only): %s", body)
	}
	_, jwks := get(t, http.DefaultClient, h.srv.URL+"/.well-known/jwks.json")
	if !strings.Contains(jwks, `"use":"sig"`) || !strings.Contains(jwks, `"kid":"`+h.broker.keys.KID+`"`) || strings.Contains(jwks, `"d":`) {
		t.Errorf("jwks = %s", jwks)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if r, _ := get(t, http.DefaultClient, h.srv.URL+p); r.StatusCode != 200 {
			t.Errorf("%s = %d", p, r.StatusCode)
		}
	}
}

func TestLogout(t *testing.T) {
	h := newHarness(t, harnessOpts{up: demoidp.Options{DPoPAlgs: []string{"ES256"}}})
	b := h.browser()
	resp, _ := get(t, b, h.authorizeURL(nil))
	code := appResult(t, resp, h.app.URL+"/cb").Get("code")
	_, body, _ := h.token(h.codeForm(code), true)
	at := body["access_token"].(string)

	resp, _ = get(t, b, h.srv.URL+"/v2/logout?client_id="+appClient+"&returnTo="+url.QueryEscape(h.app.URL+"/bye"))
	if resp.Request.URL.String() != h.app.URL+"/bye" {
		t.Fatalf("logout ended at %s", resp.Request.URL)
	}
	if ev := h.lastEvent(); ev.Type != "slo" || ev.UserID != "oidc|corp|alice" {
		t.Errorf("logout event = %+v", ev)
	}
	req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+at)
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 401 {
		t.Errorf("userinfo after logout = %d", r.StatusCode)
	}
	resp, body2 := get(t, b, h.srv.URL+"/v2/logout?client_id="+appClient+"&returnTo="+url.QueryEscape("https://evil.example/"))
	if resp.Request.URL.Host != h.srv.Listener.Addr().String() || !strings.Contains(body2, "signed out") {
		t.Errorf("open redirect: ended at %s", resp.Request.URL)
	}
}
