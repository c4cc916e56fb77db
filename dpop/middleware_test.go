package dpop

import (
	"context"
	"crypto"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
)

const (
	rsIssuer   = "https://broker.example.com/"
	rsAudience = "https://api.example.com"
)

type rsEnv struct {
	srv   *httptest.Server
	rs    *ResourceServer
	atKey crypto.Signer
}

// newRSEnv serves GET /api/private behind a ResourceServer on 127.0.0.1.
func newRSEnv(t *testing.T, mod func(*ResourceServer)) *rsEnv {
	t.Helper()
	atKey := testKey(t, AlgRS256)
	rs := &ResourceServer{
		Issuer:   rsIssuer,
		Audience: rsAudience,
		KeySet:   &oidc.StaticKeySet{PublicKeys: []crypto.PublicKey{atKey.Public()}},
		Verifier: &Verifier{Replay: NewMemoryReplayCache(1000)},
	}
	if mod != nil {
		mod(rs)
	}
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims := TokenClaims(r.Context())
		jkt, _ := TokenJKT(claims)
		out := map[string]any{"sub": claims["sub"], "jkt": jkt}
		if p := ProofResult(r.Context()); p != nil {
			out["proof_jkt"] = p.JKT
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
	srv := httptest.NewUnstartedServer(nil)
	rs.PublicURL = "http://" + srv.Listener.Addr().String()
	srv.Config.Handler = rs.Wrap(api)
	srv.Start()
	t.Cleanup(srv.Close)
	return &rsEnv{srv: srv, rs: rs, atKey: atKey}
}

// token signs an RS256 access token; extra claims override the defaults (nil deletes).
func (e *rsEnv) token(t *testing.T, kv ...any) string {
	t.Helper()
	now := time.Now()
	claims := with(map[string]any{
		"iss": rsIssuer, "aud": []string{rsAudience, rsIssuer + "userinfo"}, "sub": "user-1",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "scope": "openid read:data",
	}, kv...)
	return signCompact(t, jose.RS256, e.atKey, (&jose.SignerOptions{}).WithType("at+jwt"), claims)
}

func (e *rsEnv) url() string { return e.srv.URL + "/api/private" }

type rsResp struct {
	status    int
	challenge map[string]map[string]string // scheme (lower-case) → params
	nonce     string
	cache     string
	body      map[string]any
}

func (e *rsEnv) do(t *testing.T, authz []string, proofs []string, query string) rsResp {
	t.Helper()
	req, _ := http.NewRequest("GET", e.url()+query, nil)
	for _, a := range authz {
		req.Header.Add("Authorization", a)
	}
	for _, p := range proofs {
		req.Header.Add("DPoP", p)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := rsResp{status: resp.StatusCode, challenge: map[string]map[string]string{},
		nonce: resp.Header.Get("DPoP-Nonce"), cache: resp.Header.Get("Cache-Control")}
	for _, v := range resp.Header.Values("WWW-Authenticate") {
		for _, c := range parseChallenges(v) {
			out.challenge[strings.ToLower(c.scheme)] = c.params
		}
	}
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &out.body)
	return out
}

func proofFor(t *testing.T, s *Signer, url, nonce, at string) string {
	t.Helper()
	p, err := s.Proof("GET", url, nonce, at, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestResourceServer(t *testing.T) {
	client := testSigner(t, AlgES256)
	other := testSigner(t, AlgEdDSA)
	required := func(rs *ResourceServer) { rs.Required = true }

	type tc struct {
		name       string
		mod        func(*ResourceServer)
		req        func(t *testing.T, e *rsEnv) ([]string, []string, string) // authz, proofs, query
		wantStatus int
		wantScheme string // challenge carrying the error
		wantError  string
	}
	bound := func(t *testing.T, e *rsEnv) string {
		return e.token(t, "cnf", map[string]string{"jkt": client.Thumbprint()})
	}
	tests := []tc{
		{name: "bound token with a good proof → 200",
			req: func(t *testing.T, e *rsEnv) ([]string, []string, string) {
				at := bound(t, e)
				return []string{"DPoP " + at}, []string{proofFor(t, client, e.url(), "", at)}, ""
			}, wantStatus: 200},
		{name: "scheme name is case-insensitive", mod: required,
			req: func(t *testing.T, e *rsEnv) ([]string, []string, string) {
				at := bound(t, e)
				return []string{"dpop " + at}, []string{proofFor(t, client, e.url(), "", at)}, ""
			}, wantStatus: 200},
		{name: "proof htu with query and default-port-free URL accepted",
			req: func(t *testing.T, e *rsEnv) ([]string, []string, string) {
				at := bound(t, e)
				return []string{"DPoP " + at}, []string{proofFor(t, client, e.url()+"?page=2", "", at)}, "?page=2"
			}, wantStatus: 200},
		{name: "unbound Bearer token accepted when DPoP is not required",
			req: func(t *testing.T, e *rsEnv) ([]string, []string, string) {
				return []string{"Bearer " + e.token(t)}, nil, ""
			}, wantStatus: 200},
		{name: "bound token presented as Bearer → 401 invalid_token",
			req: func(t *testing.T, e *rsEnv) ([]string, []string, string) {
				return []string{"Bearer " + bound(t, e)}, nil, ""
			}, wantStatus: 401, wantScheme: "dpop", wantError: "invalid_token"},
		{name: "proof from another key → 401 invalid_token",
			req: func(t *testing.T, e *rsEnv) ([]string, []string, string) {
				at := bound(t, e)
				return []string{"DPoP " + at}, []string{proofFor(t, other, e.url(), "", at)}, ""
			}, wantStatus: 401, wantScheme: "dpop", wantError: "invalid_token"},
		{name: "proof ath for another token → 401 invalid_dpop_proof",
			req: func(t *testing.T, e *rsEnv) ([]string, []string, string) {
				return []string{"DPoP " + bound(t, e)}, []string{proofFor(t, client, e.url(), "", "other-token")}, ""
			}, wantStatus: 401, wantScheme: "dpop", wantError: "invalid_dpop_proof"},
		{name: "proof for another path → 401 invalid_dpop_proof",
			req: func(t *testing.T, e *rsEnv) ([]string, []string, string) {
				at := bound(t, e)
				return []string{"DPoP " + at}, []string{proofFor(t, client, e.srv.URL+"/api/other", "", at)}, ""
			}, wantStatus: 401, wantScheme: "dpop", wantError: "invalid_dpop_proof"},
		{name: "DPoP scheme without a proof → 401 invalid_dpop_proof", mod: required,
			req: func(t *testing.T, e *rsEnv) ([]string, []string, string) {
				return []string{"DPoP " + bound(t, e)}, nil, ""
			}, wantStatus: 401, wantScheme: "dpop", wantError: "invalid_dpop_proof"},
		{name: "Required: unbound Bearer token → 401 invalid_token", mod: required,
			req: func(t *testing.T, e *rsEnv) ([]string, []string, string) {
				return []string{"Bearer " + e.token(t)}, nil, ""
			}, wantStatus: 401, wantScheme: "dpop", wantError: "invalid_token"},
		{name: "unbound token with the DPoP scheme → 401 invalid_token",
			req: func(t *testing.T, e *rsEnv) ([]string, []string, string) {
				at := e.token(t)
				return []string{"DPoP " + at}, []string{proofFor(t, client, e.url(), "", at)}, ""
			}, wantStatus: 401, wantScheme: "dpop", wantError: "invalid_token"},
		{name: "malformed cnf → 401 invalid_token",
			req: func(t *testing.T, e *rsEnv) ([]string, []string, string) {
				at := e.token(t, "cnf", map[string]any{"jkt": 5})
				return []string{"DPoP " + at}, []string{proofFor(t, client, e.url(), "", at)}, ""
			}, wantStatus: 401, wantScheme: "dpop", wantError: "invalid_token"},
		{name: "no credentials → 401 without error info",
			req:        func(t *testing.T, e *rsEnv) ([]string, []string, string) { return nil, nil, "" },
			wantStatus: 401},
		{name: "unsupported scheme counts as no credentials",
			req: func(t *testing.T, e *rsEnv) ([]string, []string, string) {
				return []string{"Basic dXNlcjpwYXNz"}, nil, ""
			}, wantStatus: 401},
		{name: "two Authorization headers → 400 invalid_request",
			req: func(t *testing.T, e *rsEnv) ([]string, []string, string) {
				at := e.token(t)
				return []string{"Bearer " + at, "Bearer " + at}, nil, ""
			}, wantStatus: 400, wantScheme: "dpop", wantError: "invalid_request"},
		{name: "header and query token → 400 invalid_request",
			req: func(t *testing.T, e *rsEnv) ([]string, []string, string) {
				at := e.token(t)
				return []string{"Bearer " + at}, nil, "?access_token=" + at
			}, wantStatus: 400, wantScheme: "dpop", wantError: "invalid_request"},
		{name: "Bearer scheme with a DPoP proof → 400 invalid_request",
			req: func(t *testing.T, e *rsEnv) ([]string, []string, string) {
				at := e.token(t)
				return []string{"Bearer " + at}, []string{proofFor(t, client, e.url(), "", at)}, ""
			}, wantStatus: 400, wantScheme: "dpop", wantError: "invalid_request"},
		{name: "malformed Authorization → 400 invalid_request",
			req: func(t *testing.T, e *rsEnv) ([]string, []string, string) {
				return []string{"Bearer a b"}, nil, ""
			}, wantStatus: 400, wantScheme: "dpop", wantError: "invalid_request"},
		{name: "AT expired → 401 invalid_token on the Bearer challenge",
			req: func(t *testing.T, e *rsEnv) ([]string, []string, string) {
				return []string{"Bearer " + e.token(t, "exp", time.Now().Add(-time.Minute).Unix())}, nil, ""
			}, wantStatus: 401, wantScheme: "bearer", wantError: "invalid_token"},
		{name: "AT for another audience → 401 invalid_token",
			req: func(t *testing.T, e *rsEnv) ([]string, []string, string) {
				return []string{"Bearer " + e.token(t, "aud", "https://other.example.com")}, nil, ""
			}, wantStatus: 401, wantScheme: "bearer", wantError: "invalid_token"},
		{name: "AT from another issuer → 401 invalid_token",
			req: func(t *testing.T, e *rsEnv) ([]string, []string, string) {
				return []string{"Bearer " + e.token(t, "iss", "https://evil.example.com/")}, nil, ""
			}, wantStatus: 401, wantScheme: "bearer", wantError: "invalid_token"},
		{name: "AT signed by another key → 401 invalid_token",
			mod: func(rs *ResourceServer) {
				rs.KeySet = &oidc.StaticKeySet{PublicKeys: []crypto.PublicKey{testKey(t, AlgES256).Public()}}
			},
			req: func(t *testing.T, e *rsEnv) ([]string, []string, string) {
				return []string{"Bearer " + e.token(t)}, nil, ""
			}, wantStatus: 401, wantScheme: "bearer", wantError: "invalid_token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newRSEnv(t, tc.mod)
			authz, proofs, q := tc.req(t, e)
			r := e.do(t, authz, proofs, q)
			if r.status != tc.wantStatus {
				t.Fatalf("status %d, want %d (body %v, challenges %v)", r.status, tc.wantStatus, r.body, r.challenge)
			}
			if tc.wantStatus == 200 {
				if r.body["sub"] != "user-1" {
					t.Errorf("body %v", r.body)
				}
				if jkt, _ := r.body["jkt"].(string); jkt != "" && r.body["proof_jkt"] != jkt {
					t.Errorf("proof jkt %v != token jkt %v", r.body["proof_jkt"], jkt)
				}
				return
			}
			dp, ok := r.challenge["dpop"]
			if !ok || dp["algs"] != strings.Join(e.rs.Verifier.AllowedAlgs(), " ") {
				t.Errorf("DPoP challenge with algs missing: %v", r.challenge)
			}
			if _, hasBearer := r.challenge["bearer"]; hasBearer == e.rs.Required {
				t.Errorf("Bearer challenge present=%v with Required=%v", hasBearer, e.rs.Required)
			}
			if tc.wantError == "" {
				for s, p := range r.challenge {
					if _, has := p["error"]; has {
						t.Errorf("%s challenge carries error info without credentials: %v", s, p)
					}
				}
				return
			}
			if got := r.challenge[tc.wantScheme]["error"]; got != tc.wantError {
				t.Errorf("%s error = %q, want %q (%v)", tc.wantScheme, got, tc.wantError, r.challenge)
			}
			if r.challenge[tc.wantScheme]["error_description"] == "" || r.body["error"] != tc.wantError {
				t.Errorf("description/body missing: %v %v", r.challenge, r.body)
			}
		})
	}
}

func TestResourceServerNonce(t *testing.T) {
	client := testSigner(t, AlgES256)
	nonces, err := NewNonceSource([]byte(strings.Repeat("n", 32)), time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := newRSEnv(t, func(rs *ResourceServer) {
		rs.Required = true
		rs.Verifier.Nonces, rs.Verifier.RequireNonce = nonces, true
	})
	at := e.token(t, "cnf", map[string]string{"jkt": client.Thumbprint()})

	t.Run("proof without nonce → 401 use_dpop_nonce with DPoP-Nonce", func(t *testing.T) {
		r := e.do(t, []string{"DPoP " + at}, []string{proofFor(t, client, e.url(), "", at)}, "")
		if r.status != 401 || r.challenge["dpop"]["error"] != "use_dpop_nonce" {
			t.Fatalf("status %d challenges %v", r.status, r.challenge)
		}
		if r.nonce == "" || !nonces.Valid(r.nonce) || r.cache != "no-store" {
			t.Fatalf("DPoP-Nonce %q Cache-Control %q", r.nonce, r.cache)
		}
		r = e.do(t, []string{"DPoP " + at}, []string{proofFor(t, client, e.url(), r.nonce, at)}, "")
		if r.status != 200 {
			t.Fatalf("retry with the nonce: status %d %v", r.status, r.challenge)
		}
	})
	t.Run("forged nonce → 401 use_dpop_nonce", func(t *testing.T) {
		r := e.do(t, []string{"DPoP " + at}, []string{proofFor(t, client, e.url(), "bm90LWEtbm9uY2U", at)}, "")
		if r.status != 401 || r.challenge["dpop"]["error"] != "use_dpop_nonce" || r.nonce == "" {
			t.Fatalf("status %d %v nonce %q", r.status, r.challenge, r.nonce)
		}
	})
	t.Run("Transport answers the RS challenge by itself", func(t *testing.T) {
		trace := &Trace{}
		ctx := WithTrace(context.Background(), trace)
		hc := &http.Client{Transport: &Transport{Signer: client, Base: e.srv.Client().Transport}}
		req, _ := http.NewRequestWithContext(ctx, "GET", e.url(), nil)
		req.Header.Set("Authorization", "DPoP "+at)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != 200 || trace.NonceRetries != 1 || trace.Requests != 2 {
			t.Fatalf("status %d trace %+v", resp.StatusCode, trace)
		}
	})
}

func TestResourceServerReplay(t *testing.T) {
	client := testSigner(t, AlgES256)
	e := newRSEnv(t, func(rs *ResourceServer) { rs.Required = true })
	at := e.token(t, "cnf", map[string]string{"jkt": client.Thumbprint()})
	proof := proofFor(t, client, e.url(), "", at)
	if r := e.do(t, []string{"DPoP " + at}, []string{proof}, ""); r.status != 200 {
		t.Fatalf("first use: %d %v", r.status, r.challenge)
	}
	r := e.do(t, []string{"DPoP " + at}, []string{proof}, "")
	if r.status != 401 || r.challenge["dpop"]["error"] != "invalid_dpop_proof" || r.challenge["dpop"]["error_description"] != "proof replayed" {
		t.Fatalf("replay: %d %v", r.status, r.challenge)
	}
}

func TestResourceServerFailClosed(t *testing.T) {
	client := testSigner(t, AlgES256)
	e := newRSEnv(t, func(rs *ResourceServer) { rs.Verifier.Replay = failingReplay{} })
	at := e.token(t, "cnf", map[string]string{"jkt": client.Thumbprint()})
	r := e.do(t, []string{"DPoP " + at}, []string{proofFor(t, client, e.url(), "", at)}, "")
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("replay cache down: status %d, want 503", r.status)
	}
}

func TestResourceServerRemoteJWKS(t *testing.T) {
	client := testSigner(t, AlgES256)
	atKey := testKey(t, AlgRS256)
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: atKey.Public(), Algorithm: "RS256", Use: "sig"}}})
	}))
	defer jwks.Close()
	ctx := oidc.ClientContext(context.Background(), jwks.Client())
	e := newRSEnv(t, func(rs *ResourceServer) {
		rs.Required = true
		rs.KeySet = oidc.NewRemoteKeySet(ctx, jwks.URL)
	})
	at := e.token(t, "cnf", map[string]string{"jkt": client.Thumbprint()})
	if r := e.do(t, []string{"DPoP " + at}, []string{proofFor(t, client, e.url(), "", at)}, ""); r.status != 200 {
		t.Fatalf("with a remote JWKS: %d %v", r.status, r.challenge)
	}
}

func TestResourceServerMisconfigured(t *testing.T) {
	for _, rs := range []*ResourceServer{
		{},
		{Issuer: rsIssuer, Audience: rsAudience, KeySet: &oidc.StaticKeySet{}, Verifier: &Verifier{}},
		{Issuer: rsIssuer, Audience: rsAudience, KeySet: &oidc.StaticKeySet{}, Verifier: &Verifier{}, PublicURL: "not a url"},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Wrap accepted %+v", rs)
				}
			}()
			rs.Wrap(http.NotFoundHandler())
		}()
	}
}

func TestTokenJKT(t *testing.T) {
	tests := []struct {
		name   string
		claims map[string]any
		want   string
		ok     bool
	}{
		{name: "no cnf", claims: map[string]any{}, want: "", ok: true},
		{name: "cnf.jkt", claims: map[string]any{"cnf": map[string]any{"jkt": "abc"}}, want: "abc", ok: true},
		{name: "cnf without jkt", claims: map[string]any{"cnf": map[string]any{"x5t#S256": "abc"}}, want: "", ok: true},
		{name: "cnf not an object", claims: map[string]any{"cnf": "abc"}, want: "", ok: false},
		{name: "jkt not a string", claims: map[string]any{"cnf": map[string]any{"jkt": 1}}, want: "", ok: false},
		{name: "jkt empty", claims: map[string]any{"cnf": map[string]any{"jkt": ""}}, want: "", ok: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := TokenJKT(tc.claims)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("TokenJKT = %q %v", got, ok)
			}
		})
	}
	if TokenClaims(context.Background()) != nil || ProofResult(context.Background()) != nil {
		t.Fatal("empty context has claims")
	}

}
