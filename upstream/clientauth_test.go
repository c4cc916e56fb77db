package upstream

import (
	"context"
	"crypto"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// assertionKeys returns the client-authentication keys of the tests (the package's test keys)
// and registers their public keys at f.
func assertionKeys(t testing.TB, f *fakeIdP) map[string]AssertionKey {
	t.Helper()
	signers(t) // generates testKeys
	out := map[string]AssertionKey{}
	f.assertionKeys = map[string]crypto.PublicKey{}
	for _, alg := range ClientAuthAlgs {
		k := testKeys[alg]
		tp, err := (&jose.JSONWebKey{Key: k.Public()}).Thumbprint(crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		kid := alg + "-" + base64.RawURLEncoding.EncodeToString(tp)
		out[alg] = AssertionKey{Key: k, KID: kid}
		f.assertionKeys[kid] = k.Public()
	}
	return out
}

func TestClientAuthenticationMethods(t *testing.T) {
	tests := []struct {
		name          string
		advertised    []string // token_endpoint_auth_methods_supported
		signingAlgs   []string // token_endpoint_auth_signing_alg_values_supported
		method, alg   string
		dpopNonce     bool
		wantCode      string // Begin refuses with this code, nothing sent to the token endpoint
		wantMethod    string
		wantBasic     bool
		wantPostedSec bool
		wantAssertAlg string
	}{
		{name: "discovery default picks client_secret_basic", advertised: []string{"client_secret_basic", "client_secret_post"}, wantMethod: "client_secret_basic", wantBasic: true},
		{name: "client_secret_post when configured although basic is listed", advertised: []string{"client_secret_basic", "client_secret_post"}, method: "client_secret_post", wantMethod: "client_secret_post", wantPostedSec: true},
		{name: "private_key_jwt RS256 by default", advertised: []string{"private_key_jwt"}, method: "private_key_jwt", wantMethod: "private_key_jwt", wantAssertAlg: "RS256"},
		{name: "private_key_jwt ES256 with DPoP nonce retry signs a fresh assertion per attempt", advertised: []string{"private_key_jwt"}, signingAlgs: []string{"ES256"}, method: "private_key_jwt", alg: "ES256", dpopNonce: true, wantMethod: "private_key_jwt", wantAssertAlg: "ES256"},
		{name: "private_key_jwt PS256", advertised: []string{"private_key_jwt", "client_secret_basic"}, method: "private_key_jwt", alg: "PS256", wantMethod: "private_key_jwt", wantAssertAlg: "PS256"},
		{name: "configured method not listed is refused", advertised: []string{"client_secret_basic"}, method: "client_secret_post", wantCode: CodeClientAuthUnsupported},
		{name: "private_key_jwt refused when the list is absent (basic only by default)", method: "private_key_jwt", wantCode: CodeClientAuthUnsupported},
		{name: "private_key_jwt alg not listed is refused", advertised: []string{"private_key_jwt"}, signingAlgs: []string{"ES256"}, method: "private_key_jwt", alg: "PS256", wantCode: CodeClientAuthUnsupported},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeIdP(t, func(f *fakeIdP) {
				f.authMethods, f.authSigningAlgs, f.requireNonce = tc.advertised, tc.signingAlgs, tc.dpopNonce
			})
			keys := assertionKeys(t, f)
			c := newConn(t, f, func(c *Config) {
				c.TokenEndpointAuthMethod, c.TokenEndpointAuthSigningAlg = tc.method, tc.alg
			}, func(o *Options) { o.ClientAuthKeys = keys })
			st, err := c.Begin(context.Background(), redirectURI)
			if tc.wantCode != "" {
				if CodeOf(err) != tc.wantCode {
					t.Fatalf("Begin error %v, want code %s", err, tc.wantCode)
				}
				if f.tokenHits.Load() != 0 {
					t.Fatal("the token endpoint was called although the method is refused")
				}
				return
			}
			if err != nil {
				t.Fatalf("Begin: %v", err)
			}
			res, err := c.Finish(context.Background(), st, redirectURI, f.authorize(t, st.AuthURL))
			if err != nil {
				t.Fatalf("Finish: %v", err)
			}
			if res.ClientAuthMethod != tc.wantMethod {
				t.Errorf("ClientAuthMethod %q, want %q", res.ClientAuthMethod, tc.wantMethod)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.lastBasicOK != tc.wantBasic {
				t.Errorf("Basic authentication used: %t, want %t", f.lastBasicOK, tc.wantBasic)
			}
			if got := f.lastForm.Get("client_secret") != ""; got != tc.wantPostedSec {
				t.Errorf("client_secret in the body: %t, want %t", got, tc.wantPostedSec)
			}
			if tc.wantAssertAlg == "" {
				if len(f.assertions) != 0 {
					t.Errorf("%d client assertions sent, want none", len(f.assertions))
				}
				return
			}
			wantN := 1
			if tc.dpopNonce {
				wantN = 2 // the use_dpop_nonce challenge and the retry
			}
			if len(f.assertions) != wantN {
				t.Fatalf("%d client assertions verified, want %d (each attempt with its own)", len(f.assertions), wantN)
			}
			for _, a := range f.assertions {
				if a.alg != tc.wantAssertAlg || !strings.HasPrefix(a.kid, tc.wantAssertAlg+"-") {
					t.Errorf("assertion alg %s kid %s, want alg %s", a.alg, a.kid, tc.wantAssertAlg)
				}
				if a.claims["aud"] != f.issuer+"/token" {
					t.Errorf("assertion aud %v, want the token endpoint", a.claims["aud"])
				}
				iat, _ := a.claims["iat"].(float64)
				exp, _ := a.claims["exp"].(float64)
				if exp <= iat || exp-iat > 60 {
					t.Errorf("assertion lifetime %v s, want at most 60", exp-iat)
				}
			}
			if tc.dpopNonce && len(f.proofs) != 2 {
				t.Errorf("%d DPoP proofs at the token endpoint, want 2", len(f.proofs))
			}
		})
	}
}

func TestPrivateKeyJWTNeedsAKeyForItsAlg(t *testing.T) {
	_, err := New(Config{Issuer: "https://idp.example", ClientID: "c", TokenEndpointAuthMethod: "private_key_jwt", TokenEndpointAuthSigningAlg: "ES256"}, Options{})
	if err == nil || !strings.Contains(err.Error(), "no client-authentication key configured for ES256") {
		t.Fatalf("New error %v, want a missing key", err)
	}
	for _, cfg := range []Config{
		{Issuer: "https://idp.example", ClientID: "c", TokenEndpointAuthMethod: "client_secret_jwt"},
		{Issuer: "https://idp.example", ClientID: "c", TokenEndpointAuthMethod: "private_key_jwt", TokenEndpointAuthSigningAlg: "HS256"},
		{Issuer: "https://idp.example", ClientID: "c", TokenEndpointAuthSigningAlg: "RS256"},
	} {
		if _, err := New(cfg, Options{}); err == nil {
			t.Errorf("New(%s/%s) accepted", cfg.TokenEndpointAuthMethod, cfg.TokenEndpointAuthSigningAlg)
		}
	}
}

func TestPushedAuthorizationRequests(t *testing.T) {
	tests := []struct {
		name         string
		usePAR       bool
		par, require bool
		method       string
		dpopNonce    bool
		parError     string
		wantCode     string
		wantOAuth    string
	}{
		{name: "use_par pushes with client_secret_basic and a DPoP proof", usePAR: true, par: true},
		{name: "discovery requiring PAR pushes without use_par", par: true, require: true},
		{name: "private_key_jwt and DPoP nonce at the PAR endpoint", usePAR: true, par: true, method: "private_key_jwt", dpopNonce: true},
		{name: "use_par without a PAR endpoint is refused", usePAR: true, wantCode: CodePARNotSupported},
		{name: "an error answer from the PAR endpoint fails the login start", usePAR: true, par: true, parError: "invalid_request", wantCode: CodeUpstreamError, wantOAuth: "invalid_request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeIdP(t, func(f *fakeIdP) {
				f.par, f.requirePAR, f.requireNonce, f.parError = tc.par, tc.require, tc.dpopNonce, tc.parError
				f.authMethods = []string{"client_secret_basic", "private_key_jwt"}
			})
			keys := assertionKeys(t, f)
			c := newConn(t, f, func(c *Config) {
				c.UsePAR, c.TokenEndpointAuthMethod = tc.usePAR, tc.method
			}, func(o *Options) { o.ClientAuthKeys = keys })
			st, err := c.Begin(context.Background(), redirectURI)
			if tc.wantCode != "" {
				var ue *Error
				if !errors.As(err, &ue) || ue.Code != tc.wantCode || ue.OAuthError != tc.wantOAuth {
					t.Fatalf("Begin error %#v, want code %s oauth error %q", err, tc.wantCode, tc.wantOAuth)
				}
				return
			}
			if err != nil {
				t.Fatalf("Begin: %v", err)
			}
			u, _ := url.Parse(st.AuthURL)
			if q := u.Query(); !st.PAR || len(q) != 2 || q.Get("client_id") != f.clientID || q.Get("request_uri") == "" {
				t.Fatalf("authorization URL %s (PAR %t), want only client_id and request_uri", st.AuthURL, st.PAR)
			}
			f.mu.Lock()
			form := f.parForms[len(f.parForms)-1]
			for _, k := range []string{"response_type", "redirect_uri", "scope", "state", "nonce", "code_challenge", "login_hint"} {
				if form.Get(k) == "" {
					t.Errorf("pushed request lacks %s", k)
				}
			}
			wantProofs := 1
			if tc.dpopNonce {
				wantProofs = 2
			}
			if len(f.parProofs) != wantProofs {
				t.Errorf("%d DPoP proofs at the PAR endpoint, want %d", len(f.parProofs), wantProofs)
			}
			if tc.method == "private_key_jwt" {
				if len(f.assertions) != wantProofs || f.assertions[0].claims["aud"] != f.issuer+"/par" {
					t.Errorf("PAR assertions %+v, want %d with aud the PAR endpoint (RFC 9126 §2)", f.assertions, wantProofs)
				}
			}
			parJKT := f.parProofs[0].jkt
			f.mu.Unlock()
			res, err := c.Finish(context.Background(), st, redirectURI, f.authorize(t, st.AuthURL))
			if err != nil {
				t.Fatalf("Finish: %v", err)
			}
			if !res.PAR || !res.DPoPBound {
				t.Errorf("Result PAR %t DPoPBound %t, want both", res.PAR, res.DPoPBound)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if tokenJKT := f.proofs[len(f.proofs)-1].jkt; tokenJKT != parJKT {
				t.Errorf("token request proof key %s differs from the PAR proof key %s (RFC 9449 §10.1)", tokenJKT, parJKT)
			}
		})
	}
}

func TestPushesInFlightPerConnectionAreBounded(t *testing.T) {
	const limit = 3
	hold := make(chan struct{})
	f := newFakeIdP(t, func(f *fakeIdP) { f.par, f.parHold = true, hold })
	c := newConn(t, f, func(c *Config) { c.UsePAR = true }, func(o *Options) { o.MaxPushesInFlight = limit })
	released := false
	release := func() {
		if !released {
			released = true
			close(hold)
		}
	}
	t.Cleanup(release) // the fake's handlers must return before its server closes

	errs := make(chan error, limit)
	for range limit {
		go func() {
			_, err := c.Begin(context.Background(), redirectURI)
			errs <- err
		}()
	}
	pushed := func() int {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.parForms)
	}
	for i := 0; pushed() < limit; i++ {
		if i == 6000 { // a generous poll: 60 s
			t.Fatalf("%d of %d pushes reached the upstream", pushed(), limit)
		}
		time.Sleep(10 * time.Millisecond)
	}

	_, err := c.Begin(context.Background(), redirectURI)
	var ue *Error
	if !errors.As(err, &ue) || ue.Code != CodePARBusy || ue.RetryAfter <= 0 || !strings.Contains(ue.Description, "3 are already in flight") {
		t.Fatalf("Begin over the bound: %#v, want %s with a Retry-After", err, CodePARBusy)
	}
	if n := pushed(); n != limit {
		t.Fatalf("the refused login pushed anyway: %d pushes, want %d", n, limit)
	}

	release()
	for range limit {
		if err := <-errs; err != nil {
			t.Fatalf("a push within the bound failed: %v", err)
		}
	}
	if _, err := c.Begin(context.Background(), redirectURI); err != nil {
		t.Fatalf("Begin once the pushes finished: %v", err)
	}
}

func TestPushedAuthorizationResponseChecks(t *testing.T) {
	tests := []struct {
		name   string
		status int
		ctype  string
		body   string
		want   string // "" = accepted
	}{
		{name: "201 with request_uri and expires_in", status: 201, ctype: "application/json", body: `{"request_uri":"urn:x:1","expires_in":60}`},
		{name: "200 is accepted too", status: 200, ctype: "application/json; charset=utf-8", body: `{"request_uri":"urn:x:1","expires_in":60}`},
		{name: "missing request_uri", status: 201, ctype: "application/json", body: `{"expires_in":60}`, want: "no usable request_uri"},
		{name: "request_uri with a space", status: 201, ctype: "application/json", body: `{"request_uri":"urn:x 1","expires_in":60}`, want: "no usable request_uri"},
		{name: "request_uri too long", status: 201, ctype: "application/json", body: `{"request_uri":"` + strings.Repeat("a", maxRequestURI+1) + `","expires_in":60}`, want: "no usable request_uri"},
		{name: "no expires_in", status: 201, ctype: "application/json", body: `{"request_uri":"urn:x:1"}`, want: "expires_in"},
		{name: "not JSON", status: 201, ctype: "text/html", body: `<html>`, want: "without a JSON object"},
		{name: "error without JSON", status: 502, ctype: "text/html", body: `bad gateway`, want: "HTTP 502"},
		{name: "invalid_dpop_proof", status: 400, ctype: "application/json", body: `{"error":"invalid_dpop_proof"}`, want: `error="invalid_dpop_proof"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			rec.Header().Set("Content-Type", tc.ctype)
			rec.WriteHeader(tc.status)
			resp := rec.Result()
			ru, err := parResponse(resp, []byte(tc.body))
			switch {
			case tc.want == "" && (err != nil || ru != "urn:x:1"):
				t.Fatalf("parResponse = %q, %v; want urn:x:1", ru, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("parResponse error %v, want %q", err, tc.want)
			}
			if tc.status == http.StatusBadRequest && CodeOf(err) != CodeInvalidDPoPProof {
				t.Errorf("code %s, want %s", CodeOf(err), CodeInvalidDPoPProof)
			}
		})
	}
}
