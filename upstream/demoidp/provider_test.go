package demoidp

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"
)

const verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXkdBjftJeZ4CVP"

func getJSON(t *testing.T, u string) map[string]any {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDiscovery(t *testing.T) {
	tests := []struct {
		name  string
		opts  Options
		check func(t *testing.T, d map[string]any, issuer string)
	}{
		{name: "required members, plain provider without DPoP", opts: Options{}, check: func(t *testing.T, d map[string]any, iss string) {
			// OpenID Connect Discovery 1.0 §3: required members, userinfo_endpoint recommended.
			want := map[string]any{
				"issuer": iss, "authorization_endpoint": iss + "/authorize", "token_endpoint": iss + "/token",
				"userinfo_endpoint": iss + "/userinfo", "jwks_uri": iss + "/jwks",
			}
			for k, v := range want {
				if d[k] != v {
					t.Errorf("%s = %v, want %v", k, d[k], v)
				}
			}
			for k, v := range map[string][]any{
				"response_types_supported": {"code"}, "subject_types_supported": {"public"},
				"id_token_signing_alg_values_supported": {"RS256"}, "code_challenge_methods_supported": {"S256"},
				"token_endpoint_auth_methods_supported": {"client_secret_basic", "client_secret_post"},
			} {
				got, _ := d[k].([]any)
				if !slices.Equal(got, v) {
					t.Errorf("%s = %v, want %v", k, got, v)
				}
			}
			for _, k := range []string{"dpop_signing_alg_values_supported", "authorization_response_iss_parameter_supported"} {
				if _, ok := d[k]; ok {
					t.Errorf("%s must be absent", k)
				}
			}
			if _, ok := d["scopes_supported"].([]any); !ok {
				t.Error("scopes_supported missing")
			}
		}},
		// RFC 9449 §5.1.
		{name: "dpop_signing_alg_values_supported advertised", opts: Options{DPoPAlgs: []string{"ES256", "EdDSA"}}, check: func(t *testing.T, d map[string]any, _ string) {
			got, _ := d["dpop_signing_alg_values_supported"].([]any)
			if !slices.Equal(got, []any{"ES256", "EdDSA"}) {
				t.Errorf("dpop algs = %v", got)
			}
		}},
		{name: "NoPKCE drops code_challenge_methods_supported", opts: Options{NoPKCE: true}, check: func(t *testing.T, d map[string]any, _ string) {
			if _, ok := d["code_challenge_methods_supported"]; ok {
				t.Error("code_challenge_methods_supported present")
			}
		}},
		// RFC 9207 §3.
		{name: "iss parameter advertised", opts: Options{IssParameter: true, AuthMethods: []string{"client_secret_post"}}, check: func(t *testing.T, d map[string]any, _ string) {
			if d["authorization_response_iss_parameter_supported"] != true {
				t.Error("authorization_response_iss_parameter_supported not true")
			}
			got, _ := d["token_endpoint_auth_methods_supported"].([]any)
			if !slices.Equal(got, []any{"client_secret_post"}) {
				t.Errorf("auth methods = %v", got)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := startProvider(t, tc.opts)
			tc.check(t, getJSON(t, p.URL+"/.well-known/openid-configuration"), p.URL)
			jwks := getJSON(t, p.URL+"/jwks")
			keys, _ := jwks["keys"].([]any)
			if len(keys) != 1 || keys[0].(map[string]any)["kid"] == "" || keys[0].(map[string]any)["d"] != nil {
				t.Errorf("jwks = %v", jwks)
			}
		})
	}
}

func TestDiscoveryKeepsTheTenantPathAndTrailingSlash(t *testing.T) {
	h, _, err := NewHandler("http://127.0.0.1:1/tenant/", Options{})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:1/tenant/.well-known/openid-configuration", nil)
	rec := &recorder{h: http.Header{}}
	h.ServeHTTP(rec, req)
	var d map[string]any
	if err := json.Unmarshal([]byte(rec.body.String()), &d); err != nil {
		t.Fatal(err)
	}
	if d["issuer"] != "http://127.0.0.1:1/tenant/" || d["token_endpoint"] != "http://127.0.0.1:1/tenant/token" {
		// OpenID Connect Discovery 1.0 §4.3: the issuer is advertised exactly, trailing slash included.
		t.Errorf("issuer not kept exactly (trailing slash): %v / %v", d["issuer"], d["token_endpoint"])
	}
	if _, _, err := NewHandler("ftp://x", Options{}); err == nil {
		t.Error("non-http issuer accepted")
	}
}

type recorder struct {
	h      http.Header
	status int
	body   strings.Builder
}

func (r *recorder) Header() http.Header         { return r.h }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(s int)           { r.status = s }

// TestCodeFlow runs authorize → token (with nonce challenge) → ID-token verification with go-oidc
// → userinfo, per proof algorithm.
func TestCodeFlow(t *testing.T) {
	tests := []struct {
		name          string
		opts          Options
		alg           string // "" = no DPoP
		wantType      string
		wantChallenge bool
	}{
		{name: "ES256 proof, nonce challenge, then a DPoP-bound token", opts: Options{DPoPAlgs: []string{"ES256", "EdDSA"}, RequireNonce: true},
			alg: "ES256", wantType: "DPoP", wantChallenge: true},
		{name: "Ed25519 proof labelled EdDSA", opts: Options{DPoPAlgs: []string{"EdDSA"}, RequireNonce: true},
			alg: "EdDSA", wantType: "DPoP", wantChallenge: true},
		{name: "Ed25519 proof labelled Ed25519", opts: Options{DPoPAlgs: []string{"Ed25519"}, RequireNonce: true},
			alg: "Ed25519", wantType: "DPoP", wantChallenge: true},
		{name: "DPoP without nonces: no challenge", opts: Options{DPoPAlgs: []string{"ES256"}},
			alg: "ES256", wantType: "DPoP"},
		{name: "AnswerBearer answers token_type Bearer to a valid proof", opts: Options{DPoPAlgs: []string{"ES256"}, AnswerBearer: true},
			alg: "ES256", wantType: "Bearer"},
		{name: "no DPoP upstream: Bearer", opts: Options{IssParameter: true}, wantType: "Bearer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := startProvider(t, tc.opts)
			ctx := context.Background()
			q := authorize(t, p, verifier, "n-0S6")
			if q.Get("state") != "st-1" || q.Get("code") == "" {
				t.Fatalf("redirect query %v", q)
			}
			if tc.opts.IssParameter != (q.Get("iss") == p.URL) {
				t.Errorf("iss on redirect (RFC 9207 §2) = %q", q.Get("iss"))
			}
			cfg := oauthConfig(p)
			var rt *dpopTransport
			hc := &http.Client{Timeout: 10 * time.Second}
			if tc.alg != "" {
				rt = &dpopTransport{t: t, key: newProofKey(t, tc.alg)}
				hc.Transport = rt
			}
			xctx := context.WithValue(ctx, oauth2.HTTPClient, hc)
			tok, err := cfg.Exchange(xctx, q.Get("code"), oauth2.VerifierOption(verifier))
			if tc.wantChallenge {
				var re *oauth2.RetrieveError
				if !errors.As(err, &re) || re.ErrorCode != "use_dpop_nonce" || re.Response.StatusCode != 400 ||
					re.Response.Header.Get("DPoP-Nonce") == "" ||
					re.ErrorDescription != "Authorization server requires nonce in DPoP proof" {
					t.Fatalf("want a use_dpop_nonce challenge (RFC 9449 §8), got %v", err)
				}
				// The challenge must not burn the code: retry with the nonce.
				tok, err = cfg.Exchange(xctx, q.Get("code"), oauth2.VerifierOption(verifier))
			}
			if err != nil {
				t.Fatalf("exchange: %v", err)
			}
			if tok.TokenType != tc.wantType {
				t.Errorf("token_type = %q, want %q", tok.TokenType, tc.wantType)
			}
			if got := p.Stats.NonceChallenges.Load(); (got == 1) != tc.wantChallenge {
				t.Errorf("NonceChallenges = %d", got)
			}
			if tc.alg != "" && p.Stats.ProofsAccepted.Load() != 1 {
				t.Errorf("ProofsAccepted = %d", p.Stats.ProofsAccepted.Load())
			}
			if tok.Extra("scope") != "openid profile email" || tok.Expiry.IsZero() {
				t.Errorf("scope %v expiry %v", tok.Extra("scope"), tok.Expiry)
			}

			// The ID token passes go-oidc's checks (OpenID Connect Core 1.0 §3.1.3.7) against
			// discovery and JWKS, and its at_hash matches the access token (§3.1.3.8).
			prov, err := oidc.NewProvider(ctx, p.URL)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := tok.Extra("id_token").(string)
			idt, err := prov.Verifier(&oidc.Config{ClientID: "broker"}).Verify(ctx, raw)
			if err != nil {
				t.Fatalf("verify id_token: %v", err)
			}
			if idt.Nonce != "n-0S6" || idt.Subject != "alice" {
				t.Errorf("nonce %q sub %q", idt.Nonce, idt.Subject)
			}
			if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
				t.Errorf("at_hash: %v", err)
			}
			var cl map[string]any
			if err := idt.Claims(&cl); err != nil {
				t.Fatal(err)
			}
			if cl["azp"] != "broker" || cl["name"] != "Alice Example" || cl["email"] != "alice@example.com" ||
				cl["email_verified"] != true || cl["auth_time"] == nil {
				t.Errorf("claims %v", cl)
			}

			// Userinfo: the DPoP scheme and a proof with ath for bound tokens (RFC 9449 §7.1),
			// Bearer otherwise.
			req, _ := http.NewRequest(http.MethodGet, p.URL+"/userinfo", nil)
			req.Header.Set("Authorization", tok.Type()+" "+tok.AccessToken)
			if tc.wantType == "DPoP" {
				nonce := ""
				if tc.opts.RequireNonce {
					nonce = rt.nonce
				}
				req.Header.Set("DPoP", rt.key.sign(t, proofSpec{htm: "GET", htu: p.URL + "/userinfo", nonce: nonce, ath: ath(tok.AccessToken)}))
			}
			ui := do(t, req)
			if ui.status != 200 || ui.str("sub") != "alice" || ui.str("email") != "alice@example.com" {
				t.Fatalf("userinfo %d %v", ui.status, ui.body)
			}
			if p.Stats.UserinfoCalls.Load() != 1 {
				t.Errorf("UserinfoCalls = %d", p.Stats.UserinfoCalls.Load())
			}
		})
	}
}

// freshCode returns a fresh code for p.
func freshCode(t *testing.T, p *Provider, extra ...oauth2.AuthCodeOption) string {
	t.Helper()
	return authorize(t, p, verifier, "n-1", extra...).Get("code")
}

func TestTokenEndpointDPoP(t *testing.T) {
	p := startProvider(t, Options{DPoPAlgs: []string{"ES256", "EdDSA"}})
	es := newProofKey(t, "ES256")
	htu := p.URL + "/token"
	now := time.Now()

	t.Run("replayed jti rejected", func(t *testing.T) { // RFC 9449 §11.1
		pr := es.sign(t, proofSpec{htm: "POST", htu: htu})
		if r := postToken(t, p, codeForm(freshCode(t, p), verifier), pr); r.status != 200 || r.str("token_type") != "DPoP" {
			t.Fatalf("first use: %d %v", r.status, r.body)
		}
		r := postToken(t, p, codeForm(freshCode(t, p), verifier), pr)
		if r.status != 400 || r.str("error") != "invalid_dpop_proof" {
			t.Fatalf("replay: %d %v", r.status, r.body)
		}
	})

	bad := []struct {
		name  string
		desc  string // substring of error_description
		proof func() []string
	}{
		// The checks of RFC 9449 §4.3, by step.
		{name: "wrong htu", desc: "htu", proof: func() []string { // step 9
			return []string{es.sign(t, proofSpec{htm: "POST", htu: p.URL + "/userinfo"})}
		}},
		{name: "wrong htm", desc: "htm", proof: func() []string { // step 8
			return []string{es.sign(t, proofSpec{htm: "GET", htu: htu})}
		}},
		{name: "iat too old", desc: "iat", proof: func() []string { // step 11
			return []string{es.sign(t, proofSpec{htm: "POST", htu: htu, iat: now.Add(-5 * time.Minute)})}
		}},
		{name: "iat in the future", desc: "iat", proof: func() []string { // step 11
			return []string{es.sign(t, proofSpec{htm: "POST", htu: htu, iat: now.Add(5 * time.Minute)})}
		}},
		{name: "two DPoP headers", desc: "exactly one", proof: func() []string { // step 1
			return []string{es.sign(t, proofSpec{htm: "POST", htu: htu}), es.sign(t, proofSpec{htm: "POST", htu: htu})}
		}},
		{name: "not a JWT", desc: "compact JWS", proof: func() []string { return []string{"not.a-jwt"} }}, // step 2
		{name: "alg not in allow-list (ES384)", desc: "alg not allowed", proof: func() []string { // step 5
			return []string{newProofKey(t, "ES384").sign(t, proofSpec{htm: "POST", htu: htu})}
		}},
		{name: "wrong typ", desc: "typ", proof: func() []string { // step 4
			s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: mustEC(t)}, (&jose.SignerOptions{EmbedJWK: true}).WithType("JWT"))
			if err != nil {
				t.Fatal(err)
			}
			k := &proofKey{alg: jose.ES256, signer: s}
			return []string{k.sign(t, proofSpec{htm: "POST", htu: htu})}
		}},
		{name: "signature by another key", desc: "signature invalid", proof: func() []string { // step 6
			pr := es.sign(t, proofSpec{htm: "POST", htu: htu})
			other := newProofKey(t, "ES256").sign(t, proofSpec{htm: "POST", htu: htu})
			parts, oparts := strings.Split(pr, "."), strings.Split(other, ".")
			return []string{parts[0] + "." + parts[1] + "." + oparts[2]}
		}},
		{name: "private key in jwk", desc: "private key", proof: func() []string { // step 7
			k := mustEC(t)
			priv := jose.JSONWebKey{Key: k}
			s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k},
				(&jose.SignerOptions{}).WithType("dpop+jwt").WithHeader("jwk", &priv))
			if err != nil {
				t.Fatal(err)
			}
			return []string{(&proofKey{signer: s}).sign(t, proofSpec{htm: "POST", htu: htu})}
		}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			code := freshCode(t, p)
			r := postToken(t, p, codeForm(code, verifier), tc.proof()...)
			if r.status != 400 || r.str("error") != "invalid_dpop_proof" || !strings.Contains(r.str("error_description"), tc.desc) {
				t.Fatalf("got %d %v", r.status, r.body)
			}
			// A rejected proof does not consume the code.
			if r := postToken(t, p, codeForm(code, verifier), es.sign(t, proofSpec{htm: "POST", htu: htu})); r.status != 200 {
				t.Fatalf("code consumed by rejected proof: %d %v", r.status, r.body)
			}
		})
	}

	// RFC 9449 §4.3: htu is compared after RFC 3986 normalisation, without query and fragment.
	t.Run("htu query ignored and scheme case normalised", func(t *testing.T) {
		u := "HTTP" + strings.TrimPrefix(htu, "http") + "?x=1"
		r := postToken(t, p, codeForm(freshCode(t, p), verifier), es.sign(t, proofSpec{htm: "POST", htu: u}))
		if r.status != 200 {
			t.Fatalf("got %d %v", r.status, r.body)
		}
	})

	t.Run("dpop_jkt binds the code to the proof key", func(t *testing.T) { // RFC 9449 §10
		code := freshCode(t, p, oauth2.SetAuthURLParam("dpop_jkt", es.jkt))
		other := newProofKey(t, "EdDSA")
		r := postToken(t, p, codeForm(code, verifier), other.sign(t, proofSpec{htm: "POST", htu: htu}))
		if r.status != 400 || r.str("error") != "invalid_grant" {
			t.Fatalf("other key: %d %v", r.status, r.body)
		}
		code = freshCode(t, p, oauth2.SetAuthURLParam("dpop_jkt", es.jkt))
		if r := postToken(t, p, codeForm(code, verifier)); r.status != 400 || r.str("error") != "invalid_grant" {
			t.Fatalf("no proof: %d %v", r.status, r.body)
		}
		code = freshCode(t, p, oauth2.SetAuthURLParam("dpop_jkt", es.jkt))
		if r := postToken(t, p, codeForm(code, verifier), es.sign(t, proofSpec{htm: "POST", htu: htu})); r.status != 200 {
			t.Fatalf("same key: %d %v", r.status, r.body)
		}
	})
}

func mustEC(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestRequireDPoP(t *testing.T) {
	p := startProvider(t, Options{DPoPAlgs: []string{"ES256"}, RequireDPoP: true})
	r := postToken(t, p, codeForm(freshCode(t, p), verifier))
	if r.status != 400 || r.str("error") != "invalid_dpop_proof" {
		t.Fatalf("token request without a proof: %d %v", r.status, r.body)
	}
	if p.Stats.TokenRequests.Load() != 1 || p.Stats.ProofsRejected.Load() != 1 {
		t.Errorf("stats: %d requests, %d rejected", p.Stats.TokenRequests.Load(), p.Stats.ProofsRejected.Load())
	}
}

func TestAlwaysNonce(t *testing.T) {
	p := startProvider(t, Options{DPoPAlgs: []string{"ES256"}, RequireNonce: true, AlwaysNonce: true})
	k := newProofKey(t, "ES256")
	code := freshCode(t, p)
	nonce := ""
	seen := map[string]bool{}
	for i := range 4 {
		r := postToken(t, p, codeForm(code, verifier), k.sign(t, proofSpec{htm: "POST", htu: p.URL + "/token", nonce: nonce}))
		if r.status != 400 || r.str("error") != "use_dpop_nonce" {
			t.Fatalf("try %d: %d %v", i, r.status, r.body)
		}
		nonce = r.header.Get("DPoP-Nonce")
		if nonce == "" || seen[nonce] {
			t.Fatalf("try %d: nonce %q not fresh", i, nonce)
		}
		seen[nonce] = true
	}
	if p.Stats.NonceChallenges.Load() != 4 {
		t.Errorf("NonceChallenges = %d", p.Stats.NonceChallenges.Load())
	}
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func TestNonceRotation(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	p := startProvider(t, Options{DPoPAlgs: []string{"ES256"}, RequireNonce: true, Now: clk.Now})
	k := newProofKey(t, "ES256")
	try := func(nonce string) tokenResp {
		return postToken(t, p, codeForm(freshCode(t, p), verifier),
			k.sign(t, proofSpec{htm: "POST", htu: p.URL + "/token", nonce: nonce, iat: clk.Now()}))
	}
	r := try("")
	n1 := r.header.Get("DPoP-Nonce")
	if r.str("error") != "use_dpop_nonce" || n1 == "" {
		t.Fatalf("proof without a nonce not challenged (RFC 9449 §8): %d %v", r.status, r.body)
	}
	if r := try("made-up"); r.str("error") != "use_dpop_nonce" {
		t.Fatalf("unknown nonce accepted (RFC 9449 §4.3 step 10): %v", r.body)
	}
	r = try(n1)
	if r.status != 200 || r.header.Get("DPoP-Nonce") == "" {
		t.Fatalf("current nonce: %d %v (nonce on success %q)", r.status, r.body, r.header.Get("DPoP-Nonce"))
	}
	clk.Add(nonceRotate + time.Second)
	if r := try(n1); r.status != 200 {
		t.Fatalf("previous nonce must stay accepted after one rotation: %d %v", r.status, r.body)
	}
	clk.Add(nonceRotate + time.Second)
	if r := try(n1); r.str("error") != "use_dpop_nonce" {
		t.Fatalf("stale nonce accepted: %d %v", r.status, r.body)
	}
}

func TestProviderSwitchesNonceModeWhileRunning(t *testing.T) {
	p := startProvider(t, Options{DPoPAlgs: []string{"ES256"}, RequireNonce: true})
	k := newProofKey(t, "ES256")
	try := func(nonce string) tokenResp {
		return postToken(t, p, codeForm(freshCode(t, p), verifier), k.sign(t, proofSpec{htm: "POST", htu: p.URL + "/token", nonce: nonce}))
	}
	n1 := try("").header.Get("DPoP-Nonce")
	if r := try(n1); r.status != 200 || n1 == "" {
		t.Fatalf("nonce mode: %d %v", r.status, r.body)
	}

	p.SetRequireNonce(false)
	r := try(n1)
	if r.status != 400 || r.str("error") != "invalid_dpop_proof" || r.str("error_description") != "DPoP nonces are not supported" || r.header.Get("DPoP-Nonce") != "" {
		t.Fatalf("no-nonce mode, proof with the old nonce: %d %v DPoP-Nonce %q, want invalid_dpop_proof without a new nonce", r.status, r.body, r.header.Get("DPoP-Nonce"))
	}
	if r := try(""); r.status != 200 || r.header.Get("DPoP-Nonce") != "" {
		t.Fatalf("no-nonce mode, proof without a nonce: %d %v DPoP-Nonce %q, want 200 and no nonce", r.status, r.body, r.header.Get("DPoP-Nonce"))
	}

	p.SetRequireNonce(true)
	r = try(n1)
	n2 := r.header.Get("DPoP-Nonce")
	if r.str("error") != "use_dpop_nonce" || n2 == "" || n2 == n1 {
		t.Fatalf("nonce mode again, nonce from before the switch: %d %v, want use_dpop_nonce with a new nonce", r.status, r.body)
	}
	if r := try(n2); r.status != 200 {
		t.Fatalf("nonce mode again, new nonce: %d %v", r.status, r.body)
	}
}

func TestCodeAndClientChecks(t *testing.T) {
	p := startProvider(t, Options{})
	t.Run("code single use", func(t *testing.T) {
		code := freshCode(t, p)
		if r := postToken(t, p, codeForm(code, verifier)); r.status != 200 || r.str("token_type") != "Bearer" {
			t.Fatalf("first: %d %v", r.status, r.body)
		}
		if r := postToken(t, p, codeForm(code, verifier)); r.status != 400 || r.str("error") != "invalid_grant" {
			t.Fatalf("second: %d %v", r.status, r.body)
		}
	})
	t.Run("wrong code_verifier", func(t *testing.T) { // RFC 7636 §4.6
		r := postToken(t, p, codeForm(freshCode(t, p), strings.Repeat("a", 43)))
		if r.status != 400 || r.str("error") != "invalid_grant" {
			t.Fatalf("%d %v", r.status, r.body)
		}
	})
	t.Run("redirect_uri mismatch", func(t *testing.T) {
		f := codeForm(freshCode(t, p), verifier)
		f.Set("redirect_uri", "http://127.0.0.1:9/other")
		if r := postToken(t, p, f); r.status != 400 || r.str("error") != "invalid_grant" {
			t.Fatalf("%d %v", r.status, r.body)
		}
	})
	t.Run("wrong client secret", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, p.URL+"/token", strings.NewReader(codeForm(freshCode(t, p), verifier).Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("broker", "nope")
		if r := do(t, req); r.status != 401 || r.str("error") != "invalid_client" {
			t.Fatalf("%d %v", r.status, r.body)
		}
	})
	t.Run("client_secret_post via x/oauth2", func(t *testing.T) {
		cfg := oauthConfig(p)
		cfg.Endpoint.AuthStyle = oauth2.AuthStyleInParams
		tok, err := cfg.Exchange(context.Background(), freshCode(t, p), oauth2.VerifierOption(verifier))
		if err != nil || tok.AccessToken == "" {
			t.Fatalf("%v", err)
		}
	})
}

func TestAuthorizeValidation(t *testing.T) {
	p := startProvider(t, Options{})
	base := url.Values{
		"client_id": {"broker"}, "response_type": {"code"}, "redirect_uri": {testRedirect}, "scope": {"openid"},
		"state": {"s"}, "nonce": {"n"}, "code_challenge": {b64sha256(verifier)}, "code_challenge_method": {"S256"},
	}
	tests := []struct {
		name      string
		mod       func(v url.Values)
		status    int
		wantError string
	}{
		{name: "valid", mod: func(url.Values) {}, status: 302},
		{name: "unknown client", mod: func(v url.Values) { v.Set("client_id", "x") }, status: 400},
		{name: "non-loopback redirect", mod: func(v url.Values) { v.Set("redirect_uri", "https://evil.example/cb") }, status: 400},
		{name: "localhost redirect ok", mod: func(v url.Values) { v.Set("redirect_uri", "http://localhost:3000/cb") }, status: 302},
		{name: "plain code_challenge_method refused", mod: func(v url.Values) { v.Set("code_challenge_method", "plain") },
			status: 302, wantError: "invalid_request"},
		{name: "PKCE required", mod: func(v url.Values) { v.Del("code_challenge") }, status: 302, wantError: "invalid_request"},
		{name: "nonce required", mod: func(v url.Values) { v.Del("nonce") }, status: 302, wantError: "invalid_request"},
		{name: "response_type other than code refused", mod: func(v url.Values) { v.Set("response_type", "token") },
			status: 302, wantError: "unsupported_response_type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := url.Values{}
			for k, vs := range base {
				v[k] = slices.Clone(vs)
			}
			tc.mod(v)
			resp, err := noRedirect.Get(p.URL + "/authorize?" + v.Encode())
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if tc.status == 302 {
				loc, _ := url.Parse(resp.Header.Get("Location"))
				if got := loc.Query().Get("error"); got != tc.wantError {
					t.Fatalf("error = %q, want %q", got, tc.wantError)
				}
				if loc.Query().Get("state") != "s" {
					t.Error("state not echoed")
				}
			}
		})
	}
}

func TestAuthorizeError(t *testing.T) {
	p := startProvider(t, Options{AuthorizeError: "access_denied", IssParameter: true})
	resp, err := noRedirect.Get(oauthConfig(p).AuthCodeURL("st-9", oauth2.SetAuthURLParam("nonce", "n"), oauth2.S256ChallengeOption(verifier)))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	q := loc.Query()
	if resp.StatusCode != 302 || q.Get("error") != "access_denied" || q.Get("state") != "st-9" || q.Get("iss") != p.URL || q.Has("code") {
		t.Fatalf("error redirect without the error, state and iss (RFC 9207 §2): %d %v", resp.StatusCode, q)
	}
}

func TestInteractive(t *testing.T) {
	p := startProvider(t, Options{Interactive: true})
	resp, err := noRedirect.Get(oauthConfig(p).AuthCodeURL("st-i", oauth2.SetAuthURLParam("nonce", "n"), oauth2.S256ChallengeOption(verifier)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	page := string(b)
	for _, want := range []string{"<title>Upstream IdP (demo)</title>", `<button id="signin" type="submit">Sign in</button>`, "Alice Example", `action="/authorize/approve"`} {
		if !strings.Contains(page, want) {
			t.Fatalf("page lacks %q:\n%s", want, page)
		}
	}
	_, rest, _ := strings.Cut(page, `name="request" value="`)
	id, _, _ := strings.Cut(rest, `"`)
	resp, err = noRedirect.PostForm(p.URL+"/authorize/approve", url.Values{"request": {id}})
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusSeeOther || loc.Query().Get("code") == "" || loc.Query().Get("state") != "st-i" {
		t.Fatalf("approve: %d %v", resp.StatusCode, loc)
	}
	if r := postToken(t, p, codeForm(loc.Query().Get("code"), verifier)); r.status != 200 {
		t.Fatalf("exchange: %d %v", r.status, r.body)
	}
	// The request id is single use.
	resp, err = noRedirect.PostForm(p.URL+"/authorize/approve", url.Values{"request": {id}})
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("second approve: %d", resp.StatusCode)
	}
}

func TestUserinfoDPoP(t *testing.T) {
	p := startProvider(t, Options{DPoPAlgs: []string{"ES256"}, RequireNonce: true})
	k := newProofKey(t, "ES256")
	code := freshCode(t, p)
	r := postToken(t, p, codeForm(code, verifier), k.sign(t, proofSpec{htm: "POST", htu: p.URL + "/token"}))
	nonce := r.header.Get("DPoP-Nonce")
	r = postToken(t, p, codeForm(code, verifier), k.sign(t, proofSpec{htm: "POST", htu: p.URL + "/token", nonce: nonce}))
	if r.status != 200 || r.str("token_type") != "DPoP" {
		t.Fatalf("token: %d %v", r.status, r.body)
	}
	at := r.str("access_token")
	uinfo := func(method, scheme, proof string) tokenResp {
		req, _ := http.NewRequest(method, p.URL+"/userinfo", nil)
		req.Header.Set("Authorization", scheme+" "+at)
		if proof != "" {
			req.Header.Set("DPoP", proof)
		}
		return do(t, req)
	}
	ui := p.URL + "/userinfo"
	tests := []struct {
		name, method, scheme string
		proof                func() string
		status               int
		wwwAuth              string
	}{
		// RFC 9449 §7.2: a DPoP-bound token is refused under the Bearer scheme.
		{name: "bound token as Bearer", method: "GET", scheme: "Bearer", proof: func() string { return "" },
			status: 401, wwwAuth: `error="invalid_token"`},
		// RFC 9449 §7.1: the DPoP scheme needs a proof.
		{name: "DPoP scheme without a proof", method: "GET", scheme: "DPoP", proof: func() string { return "" },
			status: 401, wwwAuth: `error="invalid_dpop_proof"`},
		// RFC 9449 §4.3 step 12: ath is the token's hash and the proof key is the token's key.
		{name: "ath of another token", method: "GET", scheme: "DPoP", proof: func() string {
			return k.sign(t, proofSpec{htm: "GET", htu: ui, nonce: nonce, ath: ath("other")})
		}, status: 401, wwwAuth: `error="invalid_dpop_proof"`},
		{name: "proof by another key than the token's", method: "GET", scheme: "DPoP", proof: func() string {
			return newProofKey(t, "ES256").sign(t, proofSpec{htm: "GET", htu: ui, nonce: nonce, ath: ath(at)})
		}, status: 401, wwwAuth: `error="invalid_dpop_proof"`},
		// RFC 9449 §9: the resource server's nonce challenge.
		{name: "proof without a nonce is challenged", method: "GET", scheme: "DPoP", proof: func() string {
			return k.sign(t, proofSpec{htm: "GET", htu: ui, ath: ath(at)})
		}, status: 401, wwwAuth: `error="use_dpop_nonce"`},
		{name: "GET with ath and nonce", method: "GET", scheme: "DPoP", proof: func() string {
			return k.sign(t, proofSpec{htm: "GET", htu: ui, nonce: nonce, ath: ath(at)})
		}, status: 200},
		{name: "POST with ath and nonce", method: "POST", scheme: "DPoP", proof: func() string {
			return k.sign(t, proofSpec{htm: "POST", htu: ui, nonce: nonce, ath: ath(at)})
		}, status: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := uinfo(tc.method, tc.scheme, tc.proof())
			if r.status != tc.status {
				t.Fatalf("status %d %v", r.status, r.body)
			}
			if tc.wwwAuth != "" {
				h := r.header.Get("WWW-Authenticate")
				if !strings.HasPrefix(h, "DPoP") || !strings.Contains(h, tc.wwwAuth) {
					t.Fatalf("WWW-Authenticate %q", h)
				}
				if tc.wwwAuth == `error="use_dpop_nonce"` && r.header.Get("DPoP-Nonce") == "" {
					t.Fatal("no DPoP-Nonce on RS challenge")
				}
			}
			if tc.status == 200 && (r.str("sub") != "alice" || r.str("name") != "Alice Example") {
				t.Fatalf("claims %v", r.body)
			}
		})
	}
}

func TestIDTokenFaults(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		// The faults a relying party must catch (OpenID Connect Core 1.0 §3.1.3.7 steps 2, 3,
		// 9 and 11); go-oidc leaves the nonce to its caller.
		{name: "wrong aud", opts: Options{IDTokenAud: "someone-else"}, wantErr: "audience"},
		{name: "wrong iss", opts: Options{IDTokenIssuer: "http://evil.example"}, wantErr: "different provider"},
		{name: "expired", opts: Options{IDTokenTTL: -time.Minute}, wantErr: "expired"},
		{name: "wrong nonce", opts: Options{IDTokenNonce: "other"}},
		{name: "custom subject and claims", opts: Options{Subject: "bob", Claims: map[string]any{"name": "Bob"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := startProvider(t, tc.opts)
			ctx := context.Background()
			tok, err := oauthConfig(p).Exchange(ctx, freshCode(t, p), oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatal(err)
			}
			prov, err := oidc.NewProvider(ctx, p.URL)
			if err != nil {
				t.Fatal(err)
			}
			idt, err := prov.Verifier(&oidc.Config{ClientID: "broker"}).Verify(ctx, tok.Extra("id_token").(string))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want %q error, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.opts.IDTokenNonce != "" && idt.Nonce != tc.opts.IDTokenNonce {
				t.Errorf("nonce %q", idt.Nonce)
			}
			if tc.opts.Subject != "" {
				var cl map[string]any
				_ = idt.Claims(&cl)
				if idt.Subject != "bob" || cl["name"] != "Bob" || cl["email"] != nil {
					t.Errorf("sub %q claims %v", idt.Subject, cl)
				}
			}
		})
	}
}

func BenchmarkTokenExchangeDPoP(b *testing.B) {
	p := startProvider(b, Options{DPoPAlgs: []string{"ES256"}})
	k := newProofKey(b, "ES256")
	for b.Loop() {
		code := authorize(b, p, verifier, "n").Get("code")
		if r := postToken(b, p, codeForm(code, verifier), k.sign(b, proofSpec{htm: "POST", htu: p.URL + "/token"})); r.status != 200 {
			b.Fatalf("%d %v", r.status, r.body)
		}
	}
}
