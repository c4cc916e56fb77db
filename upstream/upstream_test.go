package upstream

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/dpop-broker/dpop-broker/discovery"
	"github.com/dpop-broker/dpop-broker/dpop"
)

const redirectURI = "http://127.0.0.1:9999/login/callback"

var (
	keysOnce sync.Once
	testKeys map[string]crypto.Signer
)

// signers returns one DPoP signer per configuration alg (keys generated once per test binary).
func signers(t testing.TB) map[string]*dpop.Signer {
	t.Helper()
	keysOnce.Do(func() {
		ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		_, ed, _ := ed25519.GenerateKey(rand.Reader)
		rk, _ := rsa.GenerateKey(rand.Reader, 2048)
		testKeys = map[string]crypto.Signer{"ES256": ec, "Ed25519": ed, "RS256": rk, "PS256": rk}
	})
	out := map[string]*dpop.Signer{}
	for alg, k := range testKeys {
		s, err := dpop.NewSigner(k, alg)
		if err != nil {
			t.Fatalf("NewSigner %s: %v", alg, err)
		}
		out[alg] = s
	}
	return out
}

func newConn(t testing.TB, f *fakeIdP, mutCfg func(*Config), mutOpts func(*Options)) *Connection {
	t.Helper()
	cfg := Config{
		ID: "con_test", Name: "test", Strategy: "oidc", Issuer: f.issuer,
		ClientID: f.clientID, ClientSecret: f.secret, DPoPSigningAlg: "ES256",
		UpstreamParams: map[string]string{"prompt": "login", "login_hint": "alice"},
	}
	if mutCfg != nil {
		mutCfg(&cfg)
	}
	opts := Options{Discovery: &discovery.Client{}}
	if cfg.DPoPSigningAlg != "" {
		opts.Signers = signers(t)
	}
	if mutOpts != nil {
		mutOpts(&opts)
	}
	c, err := New(cfg, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func login(t testing.TB, c *Connection, f *fakeIdP) (*Result, error) {
	t.Helper()
	st, err := c.Begin(context.Background(), redirectURI)
	if err != nil {
		t.Fatalf("Begin: %v", err)
	}
	code := f.authorize(t, st.AuthURL)
	return c.Finish(context.Background(), st, redirectURI, code)
}

func TestNew(t *testing.T) {
	sig := func(o *Options) { o.Signers = signers(t) }
	tests := []struct {
		name       string
		cfg        Config
		opts       func(*Options)
		wantErr    string
		wantIssuer string
	}{
		{name: "defaults", cfg: Config{Issuer: "https://idp.example", ClientID: "c"}, wantIssuer: "https://idp.example"},
		{name: "okta custom authorization server", cfg: Config{Strategy: "okta", Domain: "dev-1.okta.com", AuthorizationServerID: "default", ClientID: "c"}, wantIssuer: "https://dev-1.okta.com/oauth2/default"},
		{name: "okta org authorization server", cfg: Config{Strategy: "okta", Domain: "dev-1.okta.com", ClientID: "c"}, wantIssuer: "https://dev-1.okta.com"},
		{name: "okta explicit issuer wins", cfg: Config{Strategy: "okta", Issuer: "https://login.example.com", Domain: "dev-1.okta.com", ClientID: "c"}, wantIssuer: "https://login.example.com"},
		{name: "loopback http issuer allowed", cfg: Config{Issuer: "http://127.0.0.1:8080", ClientID: "c"}, wantIssuer: "http://127.0.0.1:8080"},
		{name: "missing issuer", cfg: Config{ClientID: "c"}, wantErr: "issuer is required"},
		{name: "http issuer refused off loopback", cfg: Config{Issuer: "http://idp.example", ClientID: "c"}, wantErr: "must use https"},
		{name: "issuer with query refused", cfg: Config{Issuer: "https://idp.example?x=1", ClientID: "c"}, wantErr: "without query"},
		{name: "missing client_id", cfg: Config{Issuer: "https://idp.example"}, wantErr: "client_id is required"},
		{name: "unknown strategy", cfg: Config{Strategy: "saml", Issuer: "https://idp.example", ClientID: "c"}, wantErr: "unknown strategy"},
		{name: "front_channel refused", cfg: Config{Issuer: "https://idp.example", ClientID: "c", Type: "front_channel"}, wantErr: "only back_channel"},
		{name: "unsupported DPoP alg", cfg: Config{Issuer: "https://idp.example", ClientID: "c", DPoPSigningAlg: "ES384"}, opts: sig, wantErr: "is not supported"},
		{name: "DPoP alg without signer", cfg: Config{Issuer: "https://idp.example", ClientID: "c", DPoPSigningAlg: "ES256"}, wantErr: "no DPoP key"},
		{name: "reserved upstream param", cfg: Config{Issuer: "https://idp.example", ClientID: "c", UpstreamParams: map[string]string{"nonce": "x"}}, wantErr: "upstream_params.nonce: is set by the broker"},
		{name: "alg none refused", cfg: Config{Issuer: "https://idp.example", ClientID: "c", IDTokenAlgs: []string{"none"}}, wantErr: "not allowed"},
		{name: "HS256 refused", cfg: Config{Issuer: "https://idp.example", ClientID: "c", IDTokenAlgs: []string{"HS256"}}, wantErr: "not allowed"},
		{name: "DPoP ES256 with signer", cfg: Config{Issuer: "https://idp.example", ClientID: "c", DPoPSigningAlg: "ES256"}, opts: sig, wantIssuer: "https://idp.example"},
		{name: "DPoP Ed25519 with signer", cfg: Config{Issuer: "https://idp.example", ClientID: "c", DPoPSigningAlg: "Ed25519"}, opts: sig, wantIssuer: "https://idp.example"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var o Options
			if tc.opts != nil {
				tc.opts(&o)
			}
			c, err := New(tc.cfg, o)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := c.Config()
			if got.Issuer != tc.wantIssuer {
				t.Fatalf("issuer %q, want %q", got.Issuer, tc.wantIssuer)
			}
			if strings.Join(got.Scopes, " ") != "openid profile email" || len(got.IDTokenAlgs) != 0 {
				t.Fatalf("defaults: scopes %v algs %v", got.Scopes, got.IDTokenAlgs)
			}
		})
	}
}

var verifierRE = regexp.MustCompile(`^[A-Za-z0-9._~-]{43,128}$`)

func TestBeginAuthURL(t *testing.T) {
	for _, tc := range []struct {
		name     string
		noPKCE   bool
		issParam bool
	}{
		{name: "S256 challenge, state, nonce, upstream params"},
		{name: "no PKCE when upstream lacks S256", noPKCE: true},
		{name: "iss support recorded", issParam: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeIdP(t, func(f *fakeIdP) { f.noPKCE, f.issParam = tc.noPKCE, tc.issParam })
			c := newConn(t, f, func(c *Config) { c.DPoPSigningAlg = "" }, nil)
			st, err := c.Begin(context.Background(), redirectURI)
			if err != nil {
				t.Fatal(err)
			}
			u, err := url.Parse(st.AuthURL)
			if err != nil {
				t.Fatal(err)
			}
			q := u.Query()
			if u.Scheme+"://"+u.Host+u.Path != f.issuer+"/authorize" {
				t.Errorf("auth endpoint %s", u)
			}
			want := map[string]string{
				"response_type": "code", "client_id": "broker", "redirect_uri": redirectURI,
				"scope": "openid profile email", "state": st.State, "nonce": st.Nonce,
				"prompt": "login", "login_hint": "alice",
			}
			for k, v := range want {
				if q.Get(k) != v {
					t.Errorf("%s = %q, want %q", k, q.Get(k), v)
				}
			}
			for name, v := range map[string]string{"state": st.State, "nonce": st.Nonce} {
				b, err := base64.RawURLEncoding.DecodeString(v)
				if err != nil || len(b) < 16 {
					t.Errorf("%s %q is not ≥128-bit base64url", name, v)
				}
			}
			if st.Issuer != f.issuer || st.IssSupported != tc.issParam {
				t.Errorf("issuer %q iss_supported %v", st.Issuer, st.IssSupported)
			}
			if tc.noPKCE {
				if st.Verifier != "" || q.Has("code_challenge") || q.Has("code_challenge_method") {
					t.Errorf("PKCE sent although upstream lacks S256: %v", q)
				}
				return
			}
			if !verifierRE.MatchString(st.Verifier) || len(st.Verifier) != 43 {
				t.Errorf("verifier %q", st.Verifier)
			}
			sum := sha256.Sum256([]byte(st.Verifier))
			if q.Get("code_challenge") != base64.RawURLEncoding.EncodeToString(sum[:]) || q.Get("code_challenge_method") != "S256" {
				t.Errorf("challenge %q method %q", q.Get("code_challenge"), q.Get("code_challenge_method"))
			}
			st2, err := c.Begin(context.Background(), redirectURI)
			if err != nil {
				t.Fatal(err)
			}
			if st2.State == st.State || st2.Nonce == st.Nonce || st2.Verifier == st.Verifier {
				t.Error("state, nonce and verifier must be fresh per login")
			}
		})
	}
}

func TestBeginDPoPCapability(t *testing.T) {
	tests := []struct {
		name     string
		offered  []string
		alg      string
		wantCode string
		wantIs   error
		wantWire string
	}{
		{name: "dpop_not_supported", offered: nil, alg: "ES256", wantCode: CodeDPoPNotSupported, wantIs: discovery.ErrDPoPNotSupported},
		{name: "dpop_alg_mismatch", offered: []string{"RS256", "PS256"}, alg: "ES256", wantCode: CodeDPoPAlgMismatch, wantIs: discovery.ErrDPoPAlgMismatch},
		{name: "empty list is a mismatch", offered: []string{}, alg: "ES256", wantCode: CodeDPoPAlgMismatch, wantIs: discovery.ErrDPoPAlgMismatch},
		{name: "Ed25519 labelled EdDSA", offered: []string{"ES256", "EdDSA"}, alg: "Ed25519", wantWire: "EdDSA"},
		{name: "Ed25519 labelled Ed25519", offered: []string{"EdDSA", "Ed25519"}, alg: "Ed25519", wantWire: "Ed25519"},
		{name: "RSA-only upstream with RS256", offered: []string{"RS256"}, alg: "RS256", wantWire: "RS256"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeIdP(t, func(f *fakeIdP) { f.dpopAlgs = tc.offered })
			c := newConn(t, f, func(c *Config) { c.DPoPSigningAlg = tc.alg }, nil)
			st, err := c.Begin(context.Background(), redirectURI)
			if tc.wantCode == "" {
				if err != nil || st.DPoPAlg != tc.wantWire {
					t.Fatalf("Begin = %+v, %v; want wire alg %s", st, err, tc.wantWire)
				}
				return
			}
			var ue *Error
			if !errors.As(err, &ue) || ue.Code != tc.wantCode || CodeOf(err) != tc.wantCode || !errors.Is(err, tc.wantIs) {
				t.Fatalf("err = %v, want code %s", err, tc.wantCode)
			}
			if !strings.Contains(ue.Description, "dpop_signing_alg_values_supported") {
				t.Errorf("description not precise: %q", ue.Description)
			}
			if st != nil || f.tokenHits.Load() != 0 {
				t.Fatalf("nothing may be sent upstream: start %v, token hits %d", st, f.tokenHits.Load())
			}
		})
	}
}

func TestBeginDiscoveryFailure(t *testing.T) {
	srv := httptest.NewServer(nil) // 404 for everything
	defer srv.Close()
	c, err := New(Config{Issuer: srv.URL, ClientID: "c"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Begin(context.Background(), redirectURI); CodeOf(err) != CodeDiscovery {
		t.Fatalf("err = %v, want %s", err, CodeDiscovery)
	}
}

func TestCheckIss(t *testing.T) {
	const iss = "https://idp.example/"
	tests := []struct {
		name      string
		supported bool
		got       string
		ok        bool
	}{
		{name: "absent, not advertised", supported: false, got: "", ok: true},
		{name: "equal", supported: true, got: iss, ok: true},
		{name: "equal, not advertised", supported: false, got: iss, ok: true},
		{name: "mismatch", supported: false, got: "https://evil.example/", ok: false},
		{name: "trailing slash differs", supported: true, got: "https://idp.example", ok: false},
		{name: "missing but advertised", supported: true, got: "", ok: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := (&Start{Issuer: iss, IssSupported: tc.supported}).CheckIss(tc.got)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, ok want %v", err, tc.ok)
			}
			if err != nil && CodeOf(err) != CodeIssMismatch {
				t.Fatalf("code %s", CodeOf(err))
			}
		})
	}
}

func TestFinish(t *testing.T) {
	past := func(d time.Duration) int64 { return time.Now().Add(-d).Unix() }
	tests := []struct {
		name     string
		plain    bool // DPoP off on both sides (checks unrelated to DPoP)
		fake     func(*fakeIdP)
		cfg      func(*Config)
		opts     func(*Options)
		wantCode string
		wantDesc string
		check    func(t *testing.T, r *Result, f *fakeIdP)
	}{
		{
			name: "DPoP-bound success with userinfo: ath, DPoP scheme, one key per login",
			cfg:  func(c *Config) { c.FetchUserinfo = true },
			check: func(t *testing.T, r *Result, f *fakeIdP) {
				if !r.DPoPBound || r.TokenType != "DPoP" || r.DPoPAlg != "ES256" || r.Subject != "alice" || r.IDTokenAlg != "RS256" {
					t.Errorf("result %+v", r)
				}
				if r.UserinfoStatus != UserinfoSuccess || !r.UserinfoBound || f.uiAuthz != "DPoP" || len(f.uiProofs) != 1 {
					t.Errorf("userinfo status %q bound %v scheme %q proofs %d", r.UserinfoStatus, r.UserinfoBound, f.uiAuthz, len(f.uiProofs))
				}
				if r.Claims["picture"] != "https://example.com/a.png" || r.Claims["iss"] != f.issuer || r.Claims["email"] != "alice@example.com" {
					t.Errorf("claims merge %v", r.Claims)
				}
				if len(f.proofs) != 1 || f.proofs[0].alg != "ES256" || r.NonceRetries != 0 || r.NonceUsed {
					t.Errorf("proofs %v retries %d used %v", f.proofs, r.NonceRetries, r.NonceUsed)
				}
				if _, ok := f.proofs[0].claims["ath"]; ok {
					t.Error("token request proof must not carry ath")
				}
				if len(f.uiProofs) == 1 && (f.proofs[0].jkt == "" || f.uiProofs[0].jkt != f.proofs[0].jkt) {
					t.Errorf("token proof key %s, userinfo proof key %s: want one key per login", f.proofs[0].jkt, f.uiProofs[0].jkt)
				}
			},
		},
		{
			name: "Bearer answer is a success, not bound",
			fake: func(f *fakeIdP) { f.answerBearer = true },
			cfg:  func(c *Config) { c.FetchUserinfo = true },
			check: func(t *testing.T, r *Result, f *fakeIdP) {
				if r.DPoPBound || r.TokenType != "Bearer" || r.DPoPAlg != "ES256" {
					t.Errorf("result %+v", r)
				}
				if r.UserinfoStatus != UserinfoSuccess || r.UserinfoBound || f.uiAuthz != "Bearer" || len(f.uiProofs) != 0 {
					t.Errorf("userinfo status %q bound %v scheme %q", r.UserinfoStatus, r.UserinfoBound, f.uiAuthz)
				}
			},
		},
		{
			name: "one nonce retry",
			fake: func(f *fakeIdP) { f.requireNonce = true },
			check: func(t *testing.T, r *Result, f *fakeIdP) {
				if r.NonceRetries != 1 || !r.NonceUsed || !r.DPoPBound || f.tokenHits.Load() != 2 {
					t.Errorf("retries %d used %v hits %d", r.NonceRetries, r.NonceUsed, f.tokenHits.Load())
				}
				if len(f.proofs) != 2 || f.proofs[1].claims["nonce"] != "n-1" || f.proofs[0].claims["jti"] == f.proofs[1].claims["jti"] {
					t.Errorf("proofs %v", f.proofs)
				}
			},
		},
		{
			name:     "retries exhausted",
			fake:     func(f *fakeIdP) { f.alwaysNonce = true },
			wantCode: CodeUseDPoPNonce,
			check: func(t *testing.T, r *Result, f *fakeIdP) {
				if f.tokenHits.Load() != 2 || r.NonceRetries != 1 || r.DPoPAlg != "ES256" || r.TokenType != "" {
					t.Errorf("hits %d result %+v", f.tokenHits.Load(), r)
				}
			},
		},
		{
			name:     "retry limit from options",
			fake:     func(f *fakeIdP) { f.alwaysNonce = true },
			opts:     func(o *Options) { o.MaxRetries = 3 },
			wantCode: CodeUseDPoPNonce,
			check: func(t *testing.T, r *Result, f *fakeIdP) {
				if f.tokenHits.Load() != 4 || r.NonceRetries != 3 {
					t.Errorf("hits %d retries %d", f.tokenHits.Load(), r.NonceRetries)
				}
			},
		},
		{name: "invalid_dpop_proof", fake: func(f *fakeIdP) { f.rejectProof = true }, wantCode: CodeInvalidDPoPProof, wantDesc: "invalid_dpop_proof"},
		{name: "token error invalid_grant", plain: true, fake: func(f *fakeIdP) { f.tokenError = "invalid_grant" }, wantCode: CodeUpstreamError, wantDesc: "invalid_grant"},
		{name: "wrong aud", plain: true, fake: func(f *fakeIdP) { f.mutate = func(c map[string]any) { c["aud"] = "someone-else" } }, wantCode: CodeIDTokenInvalid, wantDesc: "ID token aud check failed"},
		{name: "wrong nonce", plain: true, fake: func(f *fakeIdP) { f.mutate = func(c map[string]any) { c["nonce"] = "other" } }, wantCode: CodeIDTokenInvalid, wantDesc: "ID token nonce check failed"},
		{name: "missing nonce", plain: true, fake: func(f *fakeIdP) { f.mutate = func(c map[string]any) { delete(c, "nonce") } }, wantCode: CodeIDTokenInvalid, wantDesc: "ID token nonce check failed"},
		{name: "wrong iss", plain: true, fake: func(f *fakeIdP) { f.mutate = func(c map[string]any) { c["iss"] = "https://evil.example" } }, wantCode: CodeIDTokenInvalid, wantDesc: "ID token iss check failed"},
		{name: "iss trailing slash", plain: true, fake: func(f *fakeIdP) { f.mutate = func(c map[string]any) { c["iss"] = c["iss"].(string) + "/" } }, wantCode: CodeIDTokenInvalid, wantDesc: "ID token iss check failed"},
		{name: "expired", plain: true, fake: func(f *fakeIdP) { f.mutate = func(c map[string]any) { c["exp"] = past(10 * time.Minute) } }, wantCode: CodeIDTokenInvalid, wantDesc: "ID token exp check failed"},
		{
			name: "expired within clock skew accepted", plain: true,
			fake: func(f *fakeIdP) { f.mutate = func(c map[string]any) { c["exp"] = past(10 * time.Second) } },
			opts: func(o *Options) { o.ClockSkew = 5 * time.Minute },
		},
		{name: "iat in the future", plain: true, fake: func(f *fakeIdP) { f.mutate = func(c map[string]any) { c["iat"] = past(-10 * time.Minute) } }, wantCode: CodeIDTokenInvalid, wantDesc: "ID token iat check failed"},
		{name: "iat missing", plain: true, fake: func(f *fakeIdP) { f.mutate = func(c map[string]any) { delete(c, "iat") } }, wantCode: CodeIDTokenInvalid, wantDesc: "ID token iat check failed"},
		{name: "alg not advertised", plain: true, fake: func(f *fakeIdP) { f.idAlg = jose.PS256 }, wantCode: CodeIDTokenInvalid, wantDesc: "ID token alg/format check failed"},
		{name: "advertised PS256 accepted without configuration", plain: true, fake: func(f *fakeIdP) { f.idAlg = jose.PS256; f.idAlgs = []string{"RS256", "PS256"} }},
		{name: "advertised none and HS256 are ignored (falls back to RS256)", plain: true, fake: func(f *fakeIdP) { f.idAlgs = []string{"none", "HS256"} }},
		{name: "advertised none and HS256 only: a PS256 token is refused", plain: true, fake: func(f *fakeIdP) { f.idAlg = jose.PS256; f.idAlgs = []string{"none", "HS256"} }, wantCode: CodeIDTokenInvalid, wantDesc: "ID token alg/format check failed"},
		{name: "configured algs override advertised", plain: true, fake: func(f *fakeIdP) { f.idAlg = jose.PS256; f.idAlgs = []string{"PS256"} }, cfg: func(c *Config) { c.IDTokenAlgs = []string{"RS256"} }, wantCode: CodeIDTokenInvalid, wantDesc: "ID token alg/format check failed"},
		{
			name: "configured alg accepted", plain: true,
			fake: func(f *fakeIdP) { f.idAlg = jose.PS256 },
			cfg:  func(c *Config) { c.IDTokenAlgs = []string{"PS256"} },
			check: func(t *testing.T, r *Result, _ *fakeIdP) {
				if r.IDTokenAlg != "PS256" {
					t.Errorf("IDTokenAlg %q", r.IDTokenAlg)
				}
			},
		},
		{name: "multiple aud without azp", plain: true, fake: func(f *fakeIdP) { f.mutate = func(c map[string]any) { c["aud"] = []string{"broker", "api"} } }, wantCode: CodeIDTokenInvalid, wantDesc: "ID token azp check failed"},
		{name: "azp not client_id", plain: true, fake: func(f *fakeIdP) { f.mutate = func(c map[string]any) { c["azp"] = "api" } }, wantCode: CodeIDTokenInvalid, wantDesc: "ID token azp check failed"},
		{name: "multiple aud with azp", plain: true, fake: func(f *fakeIdP) {
			f.mutate = func(c map[string]any) { c["aud"] = []string{"broker", "api"}; c["azp"] = "broker" }
		}},
		{name: "at_hash mismatch", plain: true, fake: func(f *fakeIdP) { f.badHash = true }, wantCode: CodeIDTokenInvalid, wantDesc: "ID token at_hash check failed"},
		{name: "at_hash absent is fine", plain: true, fake: func(f *fakeIdP) { f.mutate = func(c map[string]any) { delete(c, "at_hash") } }},
		{
			name:     "userinfo sub mismatch fails",
			fake:     func(f *fakeIdP) { f.userinfoSub = "mallory" },
			cfg:      func(c *Config) { c.FetchUserinfo = true },
			wantCode: CodeUserinfo,
			check: func(t *testing.T, r *Result, _ *fakeIdP) {
				if r.UserinfoStatus != UserinfoFailure || !r.DPoPBound {
					t.Errorf("result %+v", r)
				}
			},
		},
		{
			name: "no DPoP configured: plain exchange",
			fake: func(f *fakeIdP) { f.dpopAlgs = nil },
			cfg:  func(c *Config) { c.DPoPSigningAlg = "" },
			check: func(t *testing.T, r *Result, _ *fakeIdP) {
				if r.DPoPAlg != "" || r.DPoPBound || r.TokenType != "Bearer" {
					t.Errorf("result %+v", r)
				}
			},
		},
		{
			name: "Ed25519 key labelled EdDSA",
			fake: func(f *fakeIdP) { f.dpopAlgs = []string{"EdDSA"} },
			cfg:  func(c *Config) { c.DPoPSigningAlg = "Ed25519"; c.FetchUserinfo = true },
			check: func(t *testing.T, r *Result, f *fakeIdP) {
				if r.DPoPAlg != "EdDSA" || f.proofs[0].alg != "EdDSA" || f.uiProofs[0].alg != "EdDSA" {
					t.Errorf("alg %q proofs %v", r.DPoPAlg, f.proofs)
				}
			},
		},
		{
			name: "Ed25519 key labelled Ed25519",
			fake: func(f *fakeIdP) { f.dpopAlgs = []string{"Ed25519", "EdDSA"} },
			cfg:  func(c *Config) { c.DPoPSigningAlg = "Ed25519" },
			check: func(t *testing.T, r *Result, f *fakeIdP) {
				if r.DPoPAlg != "Ed25519" || f.proofs[0].alg != "Ed25519" {
					t.Errorf("alg %q proofs %v", r.DPoPAlg, f.proofs)
				}
			},
		},
		{
			name: "RS256 proof for RSA-only upstream",
			fake: func(f *fakeIdP) { f.dpopAlgs = []string{"RS256"} },
			cfg:  func(c *Config) { c.DPoPSigningAlg = "RS256" },
			check: func(t *testing.T, r *Result, f *fakeIdP) {
				if r.DPoPAlg != "RS256" || f.proofs[0].alg != "RS256" {
					t.Errorf("alg %q", r.DPoPAlg)
				}
			},
		},
		{
			name: "PS256 proof",
			fake: func(f *fakeIdP) { f.dpopAlgs = []string{"PS256"} },
			cfg:  func(c *Config) { c.DPoPSigningAlg = "PS256" },
			check: func(t *testing.T, r *Result, f *fakeIdP) {
				if r.DPoPAlg != "PS256" || f.proofs[0].alg != "PS256" {
					t.Errorf("alg %q", r.DPoPAlg)
				}
			},
		},
		{
			name: "client_secret_post when basic not offered", plain: true,
			fake: func(f *fakeIdP) { f.authMethods = []string{"client_secret_post"} },
			check: func(t *testing.T, _ *Result, f *fakeIdP) {
				if f.lastBasicOK || f.lastForm.Get("client_secret") != f.secret {
					t.Error("expected client_secret_post")
				}
			},
		},
		{
			name: "verifier sent, client_secret_basic by default", plain: true,
			check: func(t *testing.T, _ *Result, f *fakeIdP) {
				if !f.lastBasicOK || f.lastForm.Has("client_secret") || !verifierRE.MatchString(f.lastForm.Get("code_verifier")) {
					t.Errorf("form %v basic %v", f.lastForm, f.lastBasicOK)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeIdP(t, func(f *fakeIdP) {
				if tc.plain {
					f.dpopAlgs = nil
				}
				if tc.fake != nil {
					tc.fake(f)
				}
			})
			c := newConn(t, f, func(c *Config) {
				if tc.plain {
					c.DPoPSigningAlg = ""
				}
				if tc.cfg != nil {
					tc.cfg(c)
				}
			}, tc.opts)
			res, err := login(t, c, f)
			if res == nil {
				t.Fatalf("Finish returned no Result (err %v)", err)
			}
			if tc.wantCode == "" {
				if err != nil {
					t.Fatalf("Finish: %v", err)
				}
			} else {
				t.Logf("error: %v", err)
				var ue *Error
				if !errors.As(err, &ue) || ue.Code != tc.wantCode {
					t.Fatalf("err = %v, want code %s", err, tc.wantCode)
				}
				if tc.wantDesc != "" && !strings.Contains(ue.Description, tc.wantDesc) {
					t.Fatalf("description %q lacks %q", ue.Description, tc.wantDesc)
				}
			}
			if tc.check != nil {
				f.mu.Lock()
				defer f.mu.Unlock()
				tc.check(t, res, f)
			}
		})
	}
}

func TestFinishOAuthErrorField(t *testing.T) {
	f := newFakeIdP(t, func(f *fakeIdP) { f.rejectProof = true })
	_, err := login(t, newConn(t, f, nil, nil), f)
	var ue *Error
	if !errors.As(err, &ue) || ue.OAuthError != "invalid_dpop_proof" || CodeOf(err) != CodeInvalidDPoPProof {
		t.Fatalf("err = %#v", err)
	}
}

func TestFinishRejectsIncompleteStart(t *testing.T) {
	f := newFakeIdP(t, nil)
	c := newConn(t, f, nil, nil)
	if _, err := c.Finish(context.Background(), &Start{Issuer: f.issuer}, redirectURI, "code"); err == nil {
		t.Fatal("want error for a start without state/nonce")
	}
	if f.tokenHits.Load() != 0 {
		t.Fatal("token endpoint contacted")
	}
}

func BenchmarkFinish(b *testing.B) {
	f := newFakeIdP(b, nil)
	c := newConn(b, f, nil, nil)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		st, err := c.Begin(ctx, redirectURI)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Finish(ctx, st, redirectURI, f.authorize(b, st.AuthURL)); err != nil {
			b.Fatal(err)
		}
	}
}

func TestOktaDomainYieldsItsAuthorizationServerURL(t *testing.T) {
	for _, tc := range []struct {
		name, domain, asID, want, wantErr string
	}{
		{name: "org authorization server", domain: "dev-1.okta.com", want: "https://dev-1.okta.com"},
		{name: "custom authorization server", domain: "dev-1.okta.com", asID: "aus1abc_2-x", want: "https://dev-1.okta.com/oauth2/aus1abc_2-x"},
		{name: "default authorization server, trailing slash", domain: "dev-1.okta.com/", asID: "default", want: "https://dev-1.okta.com/oauth2/default"},
		{name: "explicit https", domain: "https://login.corp.example", want: "https://login.corp.example"},
		{name: "loopback http for tests", domain: "http://127.0.0.1:8443", asID: "default", want: "http://127.0.0.1:8443/oauth2/default"},
		{name: "loopback http localhost", domain: "http://localhost:9000", want: "http://localhost:9000"},
		{name: "loopback http ::1", domain: "http://[::1]:9000", want: "http://[::1]:9000"},
		{name: "http refused off loopback", domain: "http://dev-1.okta.com", wantErr: "only for loopback"},
		{name: "path refused", domain: "dev-1.okta.com/oauth2/default", wantErr: "must be a host name"},
		{name: "query refused", domain: "dev-1.okta.com?x=1", wantErr: "must be a host name"},
		{name: "user info refused", domain: "user@dev-1.okta.com", wantErr: "must be a host name"},
		{name: "other scheme refused", domain: "ftp://dev-1.okta.com", wantErr: "scheme must be https"},
		{name: "empty", domain: "", wantErr: "empty"},
		{name: "authorization server id with slash refused", domain: "dev-1.okta.com", asID: "a/../b", wantErr: "authorization_server_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := OktaIssuer(tc.domain, tc.asID)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("OktaIssuer(%q, %q) = %q, %v; want error %q", tc.domain, tc.asID, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("OktaIssuer(%q, %q) = %q, %v; want %q", tc.domain, tc.asID, got, err, tc.want)
			}
		})
	}
	if _, err := New(Config{Strategy: "okta", Domain: "http://idp.example", ClientID: "c"}, Options{}); err == nil {
		t.Error("New accepted an okta domain with http off loopback")
	}
}

// A connection with DPoP off sends no proof; an upstream that requires DPoP answers
// invalid_dpop_proof (or use_dpop_nonce) at its token or PAR endpoint. That is not a proof it
// rejected: the login fails with upstream_requires_dpop, the upstream's error kept.
func TestAnUpstreamRequiringDPoPOfAConnectionWithDPoPOffIsUpstreamRequiresDPoP(t *testing.T) {
	tests := []struct {
		name     string
		fake     func(*fakeIdP)
		cfg      func(*Config)
		wantCode string
	}{
		{name: "token endpoint answers invalid_dpop_proof to a request without a proof", wantCode: CodeUpstreamRequiresDPoP},
		{name: "token endpoint answers use_dpop_nonce to a request without a proof", fake: func(f *fakeIdP) { f.tokenError = "use_dpop_nonce" }, wantCode: CodeUpstreamRequiresDPoP},
		{name: "PAR endpoint answers invalid_dpop_proof to a request without a proof", fake: func(f *fakeIdP) { f.par, f.parError = true, "invalid_dpop_proof" },
			cfg: func(c *Config) { c.UsePAR = true }, wantCode: CodeUpstreamRequiresDPoP},
		{name: "with DPoP on, a rejected proof stays invalid_dpop_proof", fake: func(f *fakeIdP) { f.rejectProof = true },
			cfg: func(c *Config) { c.DPoPSigningAlg = "ES256" }, wantCode: CodeInvalidDPoPProof},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeIdP(t, tc.fake)
			c := newConn(t, f, func(c *Config) {
				c.DPoPSigningAlg = ""
				if tc.cfg != nil {
					tc.cfg(c)
				}
			}, nil)
			st, err := c.Begin(context.Background(), redirectURI)
			if err == nil {
				_, err = c.Finish(context.Background(), st, redirectURI, f.authorize(t, st.AuthURL))
			}
			var ue *Error
			if !errors.As(err, &ue) || ue.Code != tc.wantCode {
				t.Fatalf("err = %v, want code %s", err, tc.wantCode)
			}
			if ue.OAuthError == "" {
				t.Errorf("the upstream's error is lost: %+v", ue)
			}
		})
	}
}
