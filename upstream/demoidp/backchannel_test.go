package demoidp

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
)

// idTokenSID logs in at p and returns the sid of the ID token (verified by go-oidc).
func idTokenSID(t *testing.T, p *Provider) string {
	t.Helper()
	res := postToken(t, p, codeForm(freshCode(t, p), verifier))
	if res.status != http.StatusOK {
		t.Fatalf("token: %d %v", res.status, res.body)
	}
	prov, err := oidc.NewProvider(context.Background(), p.URL)
	if err != nil {
		t.Fatal(err)
	}
	idt, err := prov.Verifier(&oidc.Config{ClientID: "broker"}).Verify(context.Background(), res.str("id_token"))
	if err != nil {
		t.Fatalf("verify id_token: %v", err)
	}
	var c struct {
		SID string `json:"sid"`
	}
	if err := idt.Claims(&c); err != nil {
		t.Fatal(err)
	}
	return c.SID
}

// TestIDTokensCarrySessionID: every ID token carries a sid (Back-Channel Logout 1.0 §2.1
// and §2.4: the sid a logout token names): a fresh one per login by default, the configured
// one for every login with SessionID or SetSessionID; LastSID reports the last one issued.
func TestIDTokensCarrySessionID(t *testing.T) {
	p := startProvider(t, Options{})
	first, second := idTokenSID(t, p), idTokenSID(t, p)
	if first == "" || first == second {
		t.Fatalf("sids %q and %q: want a fresh sid per login", first, second)
	}
	if p.LastSID() != second {
		t.Errorf("LastSID = %q, want %q", p.LastSID(), second)
	}
	p.SetSessionID("idp-session-1")
	if a, b := idTokenSID(t, p), idTokenSID(t, p); a != "idp-session-1" || b != a {
		t.Errorf("sids %q and %q after SetSessionID, want idp-session-1 twice", a, b)
	}
	fixed := startProvider(t, Options{SessionID: "fixed"})
	if s := idTokenSID(t, fixed); s != "fixed" || fixed.LastSID() != "fixed" {
		t.Errorf("sid %q (LastSID %q) with Options.SessionID, want fixed", s, fixed.LastSID())
	}
	d := getJSON(t, p.URL+"/.well-known/openid-configuration")
	if d["backchannel_logout_supported"] != true || d["backchannel_logout_session_supported"] != true {
		t.Errorf("discovery lacks backchannel_logout_supported/backchannel_logout_session_supported (§2.1): %v", d)
	}
}

// decodeJWT returns the protected header and claims of a compact JWS, unverified.
func decodeJWT(t *testing.T, tok string) (hdr, claims map[string]any) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %q", tok)
	}
	for i, dst := range []*map[string]any{&hdr, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, dst); err != nil {
			t.Fatal(err)
		}
	}
	return hdr, claims
}

// TestLogoutTokenOptionsShapeTheToken: the default logout token passes go-oidc's logout
// token verification against the provider's discovery and JWK Set (Back-Channel Logout 1.0
// §2.4, §2.6) and is typed logout+jwt; each knob changes exactly what it names.
func TestLogoutTokenOptionsShapeTheToken(t *testing.T) {
	p := startProvider(t, Options{})
	ctx := context.Background()
	prov, err := oidc.NewProvider(ctx, p.URL)
	if err != nil {
		t.Fatal(err)
	}
	verifier := prov.Verifier(&oidc.Config{ClientID: "broker"})
	for _, tc := range []struct {
		name     string
		opts     LogoutTokenOptions
		verifies bool // go-oidc's VerifyLogout accepts it
		check    func(t *testing.T, hdr, claims map[string]any)
	}{
		{name: "default with sid and sub: typed, all required claims, verifies", opts: LogoutTokenOptions{SID: "s1", Subject: "alice"}, verifies: true,
			check: func(t *testing.T, hdr, c map[string]any) {
				if hdr["typ"] != "logout+jwt" || hdr["alg"] != "RS256" || hdr["kid"] == nil {
					t.Errorf("header %v, want typ logout+jwt, RS256 and a kid", hdr)
				}
				for _, k := range []string{"iss", "aud", "iat", "exp", "jti", "events", "sid", "sub"} {
					if c[k] == nil {
						t.Errorf("claim %s missing: %v", k, c)
					}
				}
				ev, _ := c["events"].(map[string]any)
				if _, ok := ev[BackchannelLogoutEvent].(map[string]any); !ok {
					t.Errorf("events %v, want the back-channel logout member with an object value", c["events"])
				}
				if _, ok := c["nonce"]; ok {
					t.Error("nonce present")
				}
			}},
		{name: "sid only", opts: LogoutTokenOptions{SID: "s1"}, verifies: true, check: func(t *testing.T, _, c map[string]any) {
			if _, ok := c["sub"]; ok {
				t.Errorf("sub present: %v", c)
			}
		}},
		{name: "NoType leaves typ out", opts: LogoutTokenOptions{SID: "s1", NoType: true}, verifies: true, check: func(t *testing.T, hdr, _ map[string]any) {
			if _, ok := hdr["typ"]; ok {
				t.Errorf("typ present: %v", hdr)
			}
		}},
		{name: "Type sets typ", opts: LogoutTokenOptions{SID: "s1", Type: "at+jwt"}, verifies: true, check: func(t *testing.T, hdr, _ map[string]any) {
			if hdr["typ"] != "at+jwt" {
				t.Errorf("typ %v", hdr["typ"])
			}
		}},
		{name: "JTI is kept", opts: LogoutTokenOptions{SID: "s1", JTI: "same"}, verifies: true, check: func(t *testing.T, _, c map[string]any) {
			if c["jti"] != "same" {
				t.Errorf("jti %v", c["jti"])
			}
		}},
		{name: "Omit events", opts: LogoutTokenOptions{SID: "s1", Omit: []string{"events"}}, check: func(t *testing.T, _, c map[string]any) {
			if _, ok := c["events"]; ok {
				t.Error("events present")
			}
		}},
		{name: "Extra nonce", opts: LogoutTokenOptions{SID: "s1", Extra: map[string]any{"nonce": "n"}}, check: func(t *testing.T, _, c map[string]any) {
			if c["nonce"] != "n" {
				t.Errorf("nonce %v", c["nonce"])
			}
		}},
		{name: "Audience overrides aud", opts: LogoutTokenOptions{SID: "s1", Audience: "someone-else"}},
		{name: "Issuer overrides iss", opts: LogoutTokenOptions{SID: "s1", Issuer: "https://other.example"}},
		{name: "negative TTL is expired", opts: LogoutTokenOptions{SID: "s1", TTL: -time.Minute}},
		{name: "ForeignKey does not verify under the provider's kid", opts: LogoutTokenOptions{SID: "s1", ForeignKey: true}, check: func(t *testing.T, hdr, _ map[string]any) {
			if hdr["kid"] != p.p.kid {
				t.Errorf("kid %v, want the provider's %s", hdr["kid"], p.p.kid)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := p.LogoutToken(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				hdr, claims := decodeJWT(t, tok)
				tc.check(t, hdr, claims)
			}
			_, err = verifier.VerifyLogout(ctx, tok)
			if (err == nil) != tc.verifies {
				t.Errorf("go-oidc VerifyLogout: %v, want success %t", err, tc.verifies)
			}
		})
	}
}

// TestBackchannelLogoutPostsFormToURI: BackchannelLogout sends POST with a form body whose
// logout_token is the signed token (Back-Channel Logout 1.0 §2.5) and returns the answer.
func TestBackchannelLogoutPostsFormToURI(t *testing.T) {
	p := startProvider(t, Options{})
	type seen struct {
		method, path, contentType, body string
	}
	got := make(chan seen, 1)
	rp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.URL.Path, r.Header.Get("Content-Type"), string(b)}
		w.Header().Set("Cache-Control", "no-store")
	}))
	defer rp.Close()
	resp, err := p.BackchannelLogout(rp.URL+"/logout/backchannel/con_1", LogoutTokenOptions{SID: "s1", Subject: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	r := <-got
	mt, _, _ := mime.ParseMediaType(r.contentType)
	if r.method != http.MethodPost || mt != "application/x-www-form-urlencoded" || r.path != "/logout/backchannel/con_1" {
		t.Fatalf("request %s %s %s, want a form POST to the URI", r.method, r.path, mt)
	}
	form, err := url.ParseQuery(r.body)
	if err != nil || len(form) != 1 {
		t.Fatalf("form %q: want logout_token alone", r.body)
	}
	jws, err := jose.ParseSignedCompact(form.Get("logout_token"), []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatalf("logout_token: %v", err)
	}
	if _, err := jws.Verify(p.p.verifyKey); err != nil {
		t.Errorf("logout_token not signed with the ID-token key: %v", err)
	}
}
