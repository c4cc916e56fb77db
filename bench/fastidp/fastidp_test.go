package fastidp

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/dpop-broker/dpop-broker/dpop"
)

const redirect = "http://127.0.0.1:9/cb"

func start(t *testing.T, opts Options) (*httptest.Server, *Stats) {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	h, stats, err := NewHandler("http://"+srv.Listener.Addr().String(), opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = h
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, stats
}

func s256(v string) string {
	sum := sha256.Sum256([]byte(v))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

const verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXkdBjftJeZ4CVP"

// code runs /authorize without following the redirect and returns the code.
func code(t *testing.T, srv *httptest.Server, nonce string) string {
	t.Helper()
	q := url.Values{"client_id": {"broker"}, "redirect_uri": {redirect}, "response_type": {"code"},
		"state": {"st"}, "nonce": {nonce}, "code_challenge": {s256(verifier)}, "code_challenge_method": {"S256"}}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(srv.URL + "/authorize?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	u, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusFound || !strings.HasPrefix(u.String(), redirect) || u.Query().Get("state") != "st" {
		t.Fatalf("authorize: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	return u.Query().Get("code")
}

type tokenResp struct {
	status int
	body   map[string]any
}

func token(t *testing.T, client *http.Client, srv *httptest.Server, form url.Values) tokenResp {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("broker", "broker-secret")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return tokenResp{resp.StatusCode, m}
}

func form(c, v string) url.Values {
	return url.Values{"grant_type": {"authorization_code"}, "code": {c}, "redirect_uri": {redirect}, "code_verifier": {v}}
}

func dpopClient(t *testing.T) (*http.Client, *dpop.Trace, context.Context) {
	t.Helper()
	key, err := dpop.GenerateKey(dpop.AlgES256)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := dpop.NewSigner(key, dpop.AlgES256)
	if err != nil {
		t.Fatal(err)
	}
	tr := &dpop.Trace{}
	return &http.Client{Transport: &dpop.Transport{Signer: signer, MaxRetries: 1}}, tr, dpop.WithTrace(context.Background(), tr)
}

func TestLoginFlow(t *testing.T) {
	for _, tc := range []struct {
		name, alg, mode string
		wantChallenges  int64 // after two logins
	}{
		// Server nonces (RFC 9449 §8): challenged once per client, or once per login.
		{name: "nonce demanded on the first request only (RS256 ID token)", alg: "RS256", mode: NonceFirst, wantChallenges: 1},
		{name: "nonce demanded on the first request only (ES256 ID token)", alg: "ES256", mode: NonceFirst, wantChallenges: 1},
		{name: "nonce round trip on every login", alg: "ES256", mode: NonceEvery, wantChallenges: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, stats := start(t, Options{IDTokenAlg: tc.alg, NonceMode: tc.mode})
			client, _, _ := dpopClient(t)
			ks := oidc.NewRemoteKeySet(context.Background(), srv.URL+"/jwks")
			v := oidc.NewVerifier(srv.URL, ks, &oidc.Config{ClientID: "broker", SupportedSigningAlgs: []string{tc.alg}})
			for i := range 2 {
				r := token(t, client, srv, form(code(t, srv, "n1"), verifier))
				if r.status != http.StatusOK || r.body["token_type"] != "DPoP" {
					t.Fatalf("login %d: %d %v", i, r.status, r.body)
				}
				idt, err := v.Verify(context.Background(), r.body["id_token"].(string))
				if err != nil || idt.Nonce != "n1" || idt.Subject != "alice" {
					t.Fatalf("ID token: %v %+v", err, idt)
				}
			}
			if got := stats.NonceChallenges.Load(); got != tc.wantChallenges {
				t.Errorf("nonce challenges = %d, want %d", got, tc.wantChallenges)
			}
		})
	}
}

func TestSubjectPerLoginOrShared(t *testing.T) {
	for _, tc := range []struct {
		name       string
		opts       Options
		wantPrefix string
		wantSame   bool // both logins name the same user
	}{
		{name: "one user for every login by default", opts: Options{}, wantPrefix: "alice", wantSame: true},
		{name: "a user of its own for each login", opts: Options{Subject: "user", UniqueSubjects: true}, wantPrefix: "user-", wantSame: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := start(t, tc.opts)
			client, _, _ := dpopClient(t)
			ks := oidc.NewRemoteKeySet(context.Background(), srv.URL+"/jwks")
			v := oidc.NewVerifier(srv.URL, ks, &oidc.Config{ClientID: "broker", SupportedSigningAlgs: []string{"RS256"}})
			var subs []string
			for i := range 2 {
				r := token(t, client, srv, form(code(t, srv, "n1"), verifier))
				if r.status != http.StatusOK {
					t.Fatalf("login %d: %d %v", i, r.status, r.body)
				}
				idt, err := v.Verify(context.Background(), r.body["id_token"].(string))
				if err != nil {
					t.Fatalf("login %d: ID token: %v", i, err)
				}
				if !strings.HasPrefix(idt.Subject, tc.wantPrefix) {
					t.Fatalf("login %d: subject %q, want prefix %q", i, idt.Subject, tc.wantPrefix)
				}
				subs = append(subs, idt.Subject)
			}
			if same := subs[0] == subs[1]; same != tc.wantSame {
				t.Errorf("subjects %q: same = %v, want %v", subs, same, tc.wantSame)
			}
		})
	}
}

func TestTokenRefusals(t *testing.T) {
	srv, _ := start(t, Options{})
	client, _, _ := dpopClient(t)
	// Prime the nonce so later answers are about the request itself.
	if r := token(t, client, srv, form(code(t, srv, ""), verifier)); r.status != http.StatusOK {
		t.Fatalf("prime: %d %v", r.status, r.body)
	}
	c := code(t, srv, "")
	for _, tc := range []struct {
		name   string
		client *http.Client
		form   url.Values
		want   string
	}{
		{name: "proof missing", client: http.DefaultClient, form: form(c, verifier), want: "invalid_dpop_proof"},
		{name: "wrong code_verifier", client: client, form: form(c, verifier+"x"), want: "invalid_grant"}, // RFC 7636 §4.6
		{name: "code is single use", client: client, form: form(c, verifier), want: "invalid_grant"},
		{name: "unknown code", client: client, form: form("nope", verifier), want: "invalid_grant"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := token(t, tc.client, srv, tc.form)
			if r.status != http.StatusBadRequest || r.body["error"] != tc.want {
				t.Fatalf("got %d %v, want 400 %s", r.status, r.body, tc.want)
			}
		})
	}
}

func TestAuthorizeRefusals(t *testing.T) {
	srv, _ := start(t, Options{})
	for _, tc := range []struct{ name, query string }{
		{name: "unknown client", query: "client_id=x&redirect_uri=" + url.QueryEscape(redirect) + "&response_type=code&code_challenge_method=S256&code_challenge=" + s256(verifier)},
		{name: "non-loopback redirect", query: "client_id=broker&redirect_uri=https%3A%2F%2Fevil.example%2Fcb&response_type=code&code_challenge_method=S256&code_challenge=" + s256(verifier)},
		{name: "PKCE missing", query: "client_id=broker&redirect_uri=" + url.QueryEscape(redirect) + "&response_type=code"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(srv.URL + "/authorize?" + tc.query)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400", resp.StatusCode)
			}
		})
	}
}

func TestOptionsValidated(t *testing.T) {
	for _, o := range []Options{{IDTokenAlg: "HS256"}, {NonceMode: "sometimes"}} {
		if _, _, err := NewHandler("http://127.0.0.1:1", o); err == nil {
			t.Errorf("NewHandler(%+v) succeeded", o)
		}
	}
	if _, _, err := NewHandler("http://127.0.0.1:1/path", Options{}); err == nil {
		t.Error("issuer with a path accepted")
	}
}
