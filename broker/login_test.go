package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

func TestLoginEndToEnd(t *testing.T) {
	cases := []struct {
		name       string
		up         demoidp.Options
		dpopAlg    string
		signing    string
		wantBound  bool
		wantType   string
		wantNonce  bool
		wantDPoPOn bool
	}{
		{name: "ES256 DPoP with required nonce: one retry", up: demoidp.Options{DPoPAlgs: []string{"ES256"}, RequireDPoP: true, RequireNonce: true},
			wantBound: true, wantType: "dpop", wantNonce: true, wantDPoPOn: true},
		{name: "ES256 DPoP without nonce", up: demoidp.Options{DPoPAlgs: []string{"ES256"}, RequireDPoP: true},
			wantBound: true, wantType: "dpop", wantDPoPOn: true},
		{name: "Ed25519 labelled EdDSA", up: demoidp.Options{DPoPAlgs: []string{"EdDSA"}, RequireDPoP: true, RequireNonce: true},
			dpopAlg: "Ed25519", wantBound: true, wantType: "dpop", wantNonce: true, wantDPoPOn: true},
		{name: "RS256 for RSA-only upstream", up: demoidp.Options{DPoPAlgs: []string{"RS256"}, RequireDPoP: true},
			dpopAlg: "RS256", wantBound: true, wantType: "dpop", wantDPoPOn: true},
		{name: "PS256 DPoP and ES256 broker ID tokens", up: demoidp.Options{DPoPAlgs: []string{"PS256"}, RequireDPoP: true},
			dpopAlg: "PS256", signing: "ES256", wantBound: true, wantType: "dpop", wantDPoPOn: true},
		{name: "upstream answers Bearer: a downgrade, still a login", up: demoidp.Options{DPoPAlgs: []string{"ES256"}, AnswerBearer: true},
			wantBound: false, wantType: "bearer", wantDPoPOn: true},
		{name: "no DPoP configured", up: demoidp.Options{}, dpopAlg: "-", wantType: "bearer"},
		{name: "RFC 9207 iss on the upstream redirect", up: demoidp.Options{DPoPAlgs: []string{"ES256"}, IssParameter: true},
			wantBound: true, wantType: "dpop", wantDPoPOn: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			signing := tc.signing
			if signing == "" {
				signing = "RS256"
			}
			h := newHarness(t, harnessOpts{up: tc.up, dpopAlg: tc.dpopAlg, mutate: func(c *config.Config) { c.Keys.Signing.Alg = signing }})
			q := h.login()
			if q.Get("code") == "" || q.Get("state") != "app-state-123" || q.Get("iss") != h.cfg.Issuer {
				t.Fatalf("app callback query = %v; want code, state and iss (RFC 9207 §2)", q)
			}
			ev := h.lastEvent()
			if ev.Type != logs.TypeSuccessLogin || ev.UserID != "oidc|corp|alice" || ev.UserName != "alice@example.com" ||
				ev.ClientID != appClient || ev.ClientName != "Test App" || ev.Connection != "corp" ||
				ev.ConnectionID != config.DeriveConnectionID("corp") || ev.Strategy != "oidc" || ev.IP != "127.0.0.1" {
				t.Fatalf("event = %+v", ev)
			}
			if got := fmt.Sprint(detail(ev, "idp_token_type")); got != tc.wantType {
				t.Errorf("idp_token_type = %s, want %s", got, tc.wantType)
			}
			if tc.wantDPoPOn {
				want := tc.dpopAlg
				if want == "" {
					want = "ES256"
				}
				if detail(ev, "dpop_signing_alg") != want || detail(ev, "dpop_returned_from_upstream") != tc.wantBound ||
					detail(ev, "dpop_nonce_used") != tc.wantNonce {
					t.Errorf("DPoP details = %v", ev.Details)
				}
				if tc.wantNonce && fmt.Sprint(detail(ev, "dpop_nonce_retries")) != "1" {
					t.Errorf("dpop_nonce_retries = %v, want exactly 1", detail(ev, "dpop_nonce_retries"))
				}
			} else if _, ok := ev.Details["dpop_signing_alg"]; ok {
				t.Errorf("dpop_signing_alg present without DPoP: %v", ev.Details)
			}
			uf, _ := detail(ev, "upstream_userinfo_fetch").(map[string]any)
			if uf["status"] != "SUCCESS" {
				t.Errorf("upstream_userinfo_fetch = %v", detail(ev, "upstream_userinfo_fetch"))
			}
			raw, _ := json.Marshal(ev)
			if s := string(raw); strings.Contains(s, q.Get("code")) || strings.Contains(s, "eyJ") {
				t.Errorf("event carries a code or token: %s", s)
			}

			// The app redeems the code and verifies the ID token with go-oidc (OIDC Core §3.1.3.7).
			status, body, hdr := h.token(h.codeForm(q.Get("code")), true)
			if status != http.StatusOK || hdr.Get("Cache-Control") != "no-store" || hdr.Get("Pragma") != "no-cache" {
				t.Fatalf("token: %d %v %v", status, body, hdr)
			}
			if body["token_type"] != "Bearer" || body["scope"] != "openid profile email" {
				t.Fatalf("token body = %v", body)
			}
			ctx := oidc.ClientContext(context.Background(), http.DefaultClient)
			prov, err := oidc.NewProvider(ctx, h.cfg.Issuer)
			if err != nil {
				t.Fatalf("go-oidc discovery of the broker: %v", err)
			}
			idt, err := prov.VerifierContext(ctx, &oidc.Config{ClientID: appClient, SupportedSigningAlgs: []string{signing}}).
				Verify(ctx, body["id_token"].(string))
			if err != nil {
				t.Fatalf("verify broker ID token: %v", err)
			}
			if err := idt.VerifyAccessToken(body["access_token"].(string)); err != nil {
				t.Errorf("at_hash: %v", err)
			}
			var claims map[string]any
			_ = idt.Claims(&claims)
			if idt.Subject != "oidc|corp|alice" || claims["nonce"] != "app-nonce-456" || claims["email"] != "alice@example.com" ||
				claims["name"] != "Alice Example" || claims["azp"] != appClient || claims["sid"] == nil || claims["auth_time"] == nil {
				t.Errorf("ID token claims = %v", claims)
			}
			ui, err := prov.UserInfo(ctx, oauth2Static(body["access_token"].(string)))
			if err != nil {
				t.Fatalf("userinfo: %v", err)
			}
			if ui.Subject != "oidc|corp|alice" || ui.Email != "alice@example.com" {
				t.Errorf("userinfo = %+v", ui)
			}
		})
	}
}

func TestChooserAndConnectionParam(t *testing.T) {
	h := newHarness(t, harnessOpts{up: demoidp.Options{DPoPAlgs: []string{"ES256"}}})
	spa := func(mut func(url.Values)) string {
		return h.authorizeURL(func(q url.Values) {
			q.Set("client_id", spaClient)
			q.Set("redirect_uri", h.app.URL+"/spa")
			if mut != nil {
				mut(q)
			}
		})
	}
	resp, body := get(t, h.browser(), spa(nil))
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "connection=corp") || !strings.Contains(body, "connection=other") {
		t.Fatalf("chooser page: %d %s", resp.StatusCode, body)
	}
	resp, _ = get(t, h.browser(), spa(func(q url.Values) { q.Set("connection", "other") }))
	q := appResult(t, resp, h.app.URL+"/spa")
	if q.Get("code") == "" {
		t.Fatalf("public client login: %v", q)
	}
	if ev := h.lastEvent(); ev.Connection != "other" || ev.Type != "s" {
		t.Fatalf("event = %+v", ev)
	}
	// Public client: no secret, PKCE required at the token endpoint.
	form := url.Values{"grant_type": {"authorization_code"}, "code": {q.Get("code")}, "redirect_uri": {h.app.URL + "/spa"},
		"client_id": {spaClient}, "code_verifier": {testVerifier}}
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/oauth/token", strings.NewReader(mustJSON(form)))
	req.Header.Set("Content-Type", "application/json")
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Body.Close()
	var tb map[string]any
	_ = json.NewDecoder(r2.Body).Decode(&tb)
	if r2.StatusCode != http.StatusOK || tb["id_token"] == nil {
		t.Fatalf("public client token (JSON body): %d %v", r2.StatusCode, tb)
	}
}

func mustJSON(form url.Values) string {
	m := map[string]string{}
	for k := range form {
		m[k] = form.Get(k)
	}
	b, _ := json.Marshal(m)
	return string(b)
}
