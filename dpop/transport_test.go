package dpop

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/oauth2"
)

type seenProof struct {
	path   string
	claims map[string]any
	body   string
}

// nonceServer is an in-process AS (/token: 400 challenges) and RS (/userinfo: 401
// challenges) that demands its current nonce in proofs.
type nonceServer struct {
	t *testing.T
	*httptest.Server

	mu          sync.Mutex
	seen        []seenProof
	nonces      map[string]string // role → nonce the server wants
	always      bool              // challenge every request with a fresh nonce
	rotateOnOK  bool              // send a new nonce on every 200
	counter     int
	omitNonceHd bool // challenge without a DPoP-Nonce header
}

func newNonceServer(t *testing.T) *nonceServer {
	s := &nonceServer{t: t, nonces: map[string]string{"as": "as-nonce-0", "rs": "rs-nonce-0"}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.handle))
	t.Cleanup(s.Close)
	return s
}

func (s *nonceServer) handle(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	proof := r.Header.Get("DPoP")
	if proof == "" {
		http.Error(w, "no proof", http.StatusBadRequest)
		return
	}
	d, err := parseProof(proof)
	if err != nil {
		s.t.Errorf("server: bad proof: %v", err)
		http.Error(w, "bad proof", http.StatusBadRequest)
		return
	}
	role := "as"
	if r.URL.Path == "/userinfo" {
		role = "rs"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = append(s.seen, seenProof{path: r.URL.Path, claims: d.claims, body: string(body)})
	got, _ := d.claims["nonce"].(string)
	if s.always || got != s.nonces[role] {
		if s.always {
			s.counter++
			s.nonces[role] = fmt.Sprintf("%s-nonce-%d", role, s.counter)
		}
		if !s.omitNonceHd {
			w.Header().Set("DPoP-Nonce", s.nonces[role])
		}
		if role == "as" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"error":"use_dpop_nonce","error_description":"Authorization server requires nonce in DPoP proof"}`)
			return
		}
		w.Header().Set("WWW-Authenticate", `DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof"`)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if s.rotateOnOK {
		s.counter++
		s.nonces[role] = fmt.Sprintf("%s-nonce-%d", role, s.counter)
	}
	w.Header().Set("DPoP-Nonce", s.nonces[role])
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"access_token":"at-1","token_type":"DPoP","expires_in":3600}`)
}

func (s *nonceServer) take() []seenProof {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.seen
	s.seen = nil
	return out
}

// closeTracker is a Base that records whether every response body was closed.
type closeTracker struct {
	base   http.RoundTripper
	mu     sync.Mutex
	bodies []*trackedBody
	after  func(*http.Response) // called after each response
}

type trackedBody struct {
	io.ReadCloser
	closed atomic.Bool
}

func (b *trackedBody) Close() error { b.closed.Store(true); return b.ReadCloser.Close() }

func (c *closeTracker) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	tb := &trackedBody{ReadCloser: resp.Body}
	resp.Body = tb
	c.mu.Lock()
	c.bodies = append(c.bodies, tb)
	c.mu.Unlock()
	if c.after != nil {
		c.after(resp)
	}
	return resp, nil
}

func (c *closeTracker) allClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range c.bodies {
		if !b.closed.Load() {
			return false
		}
	}
	return true
}

func postForm(t *testing.T, c *http.Client, ctx context.Context, u, body string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return c.Do(req)
}

func TestTransportNonceChallenges(t *testing.T) {
	bigBody := "grant_type=authorization_code&code=" + strings.Repeat("x", 100_000)
	tests := []struct {
		name   string
		path   string
		at     string // Authorization: DPoP <at> when set
		method string
		body   string
	}{
		{name: "AS 400 use_dpop_nonce retried once", path: "/token?q=1", at: "", method: http.MethodPost, body: "grant_type=authorization_code&code=c1&code_verifier=v"},
		{name: "AS retry resends large body intact", path: "/token", at: "", method: http.MethodPost, body: bigBody},
		{name: "RS 401 use_dpop_nonce retried once", path: "/userinfo", at: "at-123", method: http.MethodGet, body: ""},
	}
	for _, alg := range allAlgs {
		for _, tc := range tests {
			t.Run(alg+" "+tc.name, func(t *testing.T) {
				srv := newNonceServer(t)
				tr := &Transport{Signer: testSigner(t, alg), Base: &closeTracker{base: http.DefaultTransport}}
				client := &http.Client{Transport: tr}
				do := func() (*http.Response, *Trace) {
					trace := &Trace{}
					ctx := WithTrace(context.Background(), trace)
					var rd io.Reader
					if tc.body != "" {
						rd = strings.NewReader(tc.body)
					}
					req, err := http.NewRequestWithContext(ctx, tc.method, srv.URL+tc.path, rd)
					if err != nil {
						t.Fatal(err)
					}
					if tc.at != "" {
						req.Header.Set("Authorization", "DPoP "+tc.at)
					}
					resp, err := client.Do(req)
					if err != nil {
						t.Fatalf("request: %v", err)
					}
					if req.Header.Get("DPoP") != "" {
						t.Error("caller's request was modified")
					}
					return resp, trace
				}

				resp, trace := do()
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d: %s", resp.StatusCode, b)
				}
				seen := srv.take()
				if len(seen) != 2 {
					t.Fatalf("server saw %d proofs, want 2 (exactly one retry)", len(seen))
				}
				if _, ok := seen[0].claims["nonce"]; ok {
					t.Error("first proof carried a nonce before any was known")
				}
				role := "as"
				if tc.at != "" {
					role = "rs"
				}
				if seen[1].claims["nonce"] != role+"-nonce-0" {
					t.Errorf("retry nonce = %v", seen[1].claims["nonce"])
				}
				if seen[0].claims["jti"] == seen[1].claims["jti"] {
					t.Error("retry reused the jti")
				}
				for i, p := range seen {
					if p.body != tc.body {
						t.Errorf("attempt %d body differs (len %d, want %d)", i, len(p.body), len(tc.body))
					}
					if p.claims["htm"] != tc.method || p.claims["htu"] != srv.URL+strings.Split(tc.path, "?")[0] {
						t.Errorf("htm/htu = %v %v", p.claims["htm"], p.claims["htu"])
					}
					if ath, _ := p.claims["ath"].(string); (tc.at != "") != (ath == ATH(tc.at)) || (tc.at == "" && ath != "") {
						t.Errorf("ath = %q", ath)
					}
				}
				if *trace != (Trace{Requests: 2, NonceRetries: 1, NonceUsed: true, Alg: alg}) {
					t.Errorf("trace = %+v", *trace)
				}

				// RFC 9449 §8: the nonce is remembered, so the next request needs no retry.
				resp, trace = do()
				resp.Body.Close()
				if seen := srv.take(); resp.StatusCode != http.StatusOK || len(seen) != 1 || seen[0].claims["nonce"] != role+"-nonce-0" {
					t.Fatalf("second request: status %d, %d proofs", resp.StatusCode, len(seen))
				}
				if *trace != (Trace{Requests: 1, NonceRetries: 0, NonceUsed: true, Alg: alg}) {
					t.Errorf("second trace = %+v", *trace)
				}
				if !tr.Base.(*closeTracker).allClosed() {
					t.Error("a challenge response body was not closed")
				}
			})
		}
	}
}

func TestTransportNonceBookkeeping(t *testing.T) {
	srv := newNonceServer(t)
	nonces := NewNonceCache()
	tr := &Transport{Signer: testSigner(t, AlgES256), Nonces: nonces}
	client := &http.Client{Transport: tr}

	t.Run("AS and RS nonces kept apart", func(t *testing.T) {
		resp, err := postForm(t, client, context.Background(), srv.URL+"/token", "a=b")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		srv.take()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/userinfo", nil)
		req.Header.Set("Authorization", "DPoP at-1")
		resp, err = client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		seen := srv.take()
		if len(seen) != 2 {
			t.Fatalf("RS saw %d proofs, want 2 (AS nonce must not be reused at the RS)", len(seen))
		}
		if _, ok := seen[0].claims["nonce"]; ok {
			t.Errorf("first RS proof carried the AS nonce %v", seen[0].claims["nonce"])
		}
		origin := strings.ToLower(srv.URL)
		if nonces.Nonce(NonceKey(origin, "as")) != "as-nonce-0" || nonces.Nonce(NonceKey(origin, "rs")) != "rs-nonce-0" {
			t.Errorf("cache: as=%q rs=%q", nonces.Nonce(NonceKey(origin, "as")), nonces.Nonce(NonceKey(origin, "rs")))
		}
	})

	t.Run("nonce read from a 200 response", func(t *testing.T) {
		srv.mu.Lock()
		srv.rotateOnOK = true
		srv.mu.Unlock()
		for i := range 3 {
			resp, err := postForm(t, client, context.Background(), srv.URL+"/token", "a=b")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if seen := srv.take(); len(seen) != 1 {
				t.Fatalf("request %d: %d proofs, want 1 (nonce from the previous 200)", i, len(seen))
			}
		}
	})
}

func TestTransportRetryLimit(t *testing.T) {
	tests := []struct {
		name        string
		maxRetries  int
		wantProofs  int
		wantRetries int
	}{
		{name: "MaxRetries zero means one retry", maxRetries: 0, wantProofs: 2, wantRetries: 1},
		{name: "MaxRetries 3", maxRetries: 3, wantProofs: 4, wantRetries: 3},
		{name: "negative MaxRetries means no retry", maxRetries: -1, wantProofs: 1, wantRetries: 0},
	}
	for _, tc := range tests {
		for _, path := range []string{"/token?secret=1", "/userinfo"} {
			t.Run(tc.name+" "+path, func(t *testing.T) {
				srv := newNonceServer(t)
				srv.always = true
				ct := &closeTracker{base: http.DefaultTransport}
				tr := &Transport{Signer: testSigner(t, AlgES256), Base: ct, MaxRetries: tc.maxRetries}
				trace := &Trace{}
				req, _ := http.NewRequestWithContext(WithTrace(context.Background(), trace), http.MethodPost, srv.URL+path, strings.NewReader("x=y"))
				if path == "/userinfo" {
					req.Header.Set("Authorization", "DPoP at-9")
				}
				resp, err := (&http.Client{Transport: tr}).Do(req)
				if err == nil {
					resp.Body.Close()
					t.Fatalf("got status %d, want NonceRetryError", resp.StatusCode)
				}
				if !errors.Is(err, ErrNonceRetriesExhausted) {
					t.Fatalf("errors.Is(%v, ErrNonceRetriesExhausted) = false", err)
				}
				var nre *NonceRetryError
				if !errors.As(err, &nre) || nre.Retries != tc.wantRetries || strings.Contains(nre.URL, "?") {
					t.Fatalf("NonceRetryError = %+v", nre)
				}
				seen := srv.take()
				if len(seen) != tc.wantProofs {
					t.Fatalf("server saw %d proofs, want %d", len(seen), tc.wantProofs)
				}
				jtis := map[any]bool{}
				for _, p := range seen {
					jtis[p.claims["jti"]] = true
				}
				if len(jtis) != len(seen) {
					t.Error("a jti was reused across retries")
				}
				if trace.Requests != tc.wantProofs || trace.NonceRetries != tc.wantRetries {
					t.Errorf("trace = %+v", *trace)
				}
				if !ct.allClosed() {
					t.Error("challenge body left open")
				}
			})
		}
	}
}

func TestTransportNoRetry(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		header     http.Header
		body       string
		wantNonce  string
		wantStatus int
	}{
		{name: "400 other error returned with body intact", status: 400, header: http.Header{"Dpop-Nonce": {"n-7"}}, body: `{"error":"invalid_grant"}`, wantNonce: "n-7", wantStatus: 400},
		{name: "400 use_dpop_nonce without DPoP-Nonce returned", status: 400, header: nil, body: `{"error":"use_dpop_nonce"}`, wantNonce: "", wantStatus: 400},
		{name: "400 non-JSON body returned", status: 400, header: http.Header{"Dpop-Nonce": {"n-8"}}, body: `use_dpop_nonce`, wantNonce: "n-8", wantStatus: 400},
		{name: "401 Bearer use_dpop_nonce is not a DPoP challenge", status: 401, header: http.Header{"Dpop-Nonce": {"n-9"}, "Www-Authenticate": {`Bearer error="use_dpop_nonce"`}}, body: "", wantNonce: "n-9", wantStatus: 401},
		{name: "401 DPoP invalid_token returned", status: 401, header: http.Header{"Dpop-Nonce": {"n-10"}, "Www-Authenticate": {`DPoP error="invalid_token"`}}, body: "", wantNonce: "n-10", wantStatus: 401},
		{name: "200 nonce remembered", status: 200, header: http.Header{"Dpop-Nonce": {"n-11"}}, body: `{}`, wantNonce: "n-11", wantStatus: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var hits atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hits.Add(1)
				for k, v := range tc.header {
					w.Header()[k] = v
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			nonces := NewNonceCache()
			tr := &Transport{Signer: testSigner(t, AlgEdDSA), Nonces: nonces}
			resp, err := postForm(t, &http.Client{Transport: tr}, context.Background(), srv.URL+"/token", "a=b")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantStatus || string(got) != tc.body {
				t.Fatalf("status %d body %q", resp.StatusCode, got)
			}
			if hits.Load() != 1 {
				t.Fatalf("server hit %d times, want 1", hits.Load())
			}
			if n := nonces.Nonce(NonceKey(strings.ToLower(srv.URL), "as")); n != tc.wantNonce {
				t.Fatalf("remembered nonce %q, want %q", n, tc.wantNonce)
			}
		})
	}
}

func TestTransportContextCancelDuringDelay(t *testing.T) {
	srv := newNonceServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ct := &closeTracker{base: http.DefaultTransport, after: func(*http.Response) { cancel() }}
	tr := &Transport{Signer: testSigner(t, AlgES256), Base: ct, RetryDelay: 1 << 40, Jitter: 1 << 30}
	_, err := postForm(t, &http.Client{Transport: tr}, ctx, srv.URL+"/token", "a=b")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if n := len(srv.take()); n != 1 {
		t.Fatalf("server saw %d proofs, want 1", n)
	}
	if !ct.allClosed() {
		t.Error("challenge body left open")
	}
}

func TestTransportErrors(t *testing.T) {
	srv := newNonceServer(t)
	t.Run("no signer fails closed", func(t *testing.T) {
		_, err := postForm(t, &http.Client{Transport: &Transport{}}, context.Background(), srv.URL+"/token", "a=b")
		if err == nil || len(srv.take()) != 0 {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("retry without GetBody fails clearly", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/token", io.NopCloser(strings.NewReader("a=b")))
		req.GetBody = nil
		_, err := (&http.Client{Transport: &Transport{Signer: testSigner(t, AlgES256)}}).Do(req)
		if err == nil || !strings.Contains(err.Error(), "GetBody") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestTransportConcurrent(t *testing.T) {
	srv := newNonceServer(t)
	tr := &Transport{Signer: testSigner(t, AlgES256)}
	client := &http.Client{Transport: tr}
	trace := &Trace{}
	ctx := WithTrace(context.Background(), trace)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			resp, err := postForm(t, client, ctx, srv.URL+"/token", "a=b")
			if err != nil {
				errs <- err
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				errs <- fmt.Errorf("status %d", resp.StatusCode)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if trace.Requests < 8 || trace.Alg != AlgES256 {
		t.Errorf("trace = %+v", *trace)
	}
}

func TestParseChallenges(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want bool
	}{
		{name: "RFC 9449 §9 example", in: []string{`DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof"`}, want: true},
		{name: "DPoP after Bearer", in: []string{`Bearer realm="x", DPoP algs="ES256 PS256", error="use_dpop_nonce"`}, want: true},
		{name: "DPoP after token68", in: []string{`Basic abc==, DPoP error=use_dpop_nonce`}, want: true},
		{name: "case-insensitive scheme and param", in: []string{`dpop ERROR="use_dpop_nonce"`}, want: true},
		{name: "second header value", in: []string{`Bearer realm="x"`, `DPoP error="use_dpop_nonce"`}, want: true},
		{name: "escaped quotes", in: []string{`Newauth realm="a \"b\", c", DPoP error="use_dpop_nonce"`}, want: true},
		{name: "other DPoP error", in: []string{`DPoP error="invalid_token"`}, want: false},
		{name: "Bearer use_dpop_nonce", in: []string{`Bearer error="use_dpop_nonce"`}, want: false},
		{name: "value in another param", in: []string{`DPoP error_description="use_dpop_nonce"`}, want: false},
		{name: "garbage", in: []string{`,,, ="" DPoP`, `"`, `=`, ``}, want: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := &http.Response{StatusCode: 401, Header: http.Header{"Www-Authenticate": tc.in}}
			if got := proofRejection(resp) == ErrCodeUseNonce; got != tc.want {
				t.Fatalf("proofRejection(%q) is use_dpop_nonce = %v, want %v (parsed %+v)", tc.in, got, tc.want, parseChallenges(strings.Join(tc.in, ", ")))
			}
		})
	}
}

func TestOAuth2Exchange(t *testing.T) {
	for _, alg := range allAlgs {
		t.Run("oauth2 Exchange through Transport "+alg, func(t *testing.T) {
			srv := newNonceServer(t)
			signer := testSigner(t, alg)
			trace := &Trace{}
			ctx := context.WithValue(WithTrace(context.Background(), trace), oauth2.HTTPClient,
				&http.Client{Transport: &Transport{Signer: signer}})
			cfg := oauth2.Config{
				ClientID:     "client-1",
				ClientSecret: "secret-1",
				RedirectURL:  "https://broker.example/login/callback",
				Endpoint:     oauth2.Endpoint{TokenURL: srv.URL + "/token", AuthStyle: oauth2.AuthStyleInHeader},
			}
			tok, err := cfg.Exchange(ctx, "code-1", oauth2.VerifierOption("verifier-1"))
			if err != nil {
				t.Fatal(err)
			}
			if tok.AccessToken != "at-1" || tok.Type() != "DPoP" {
				t.Fatalf("token = %q %q", tok.AccessToken, tok.Type())
			}
			seen := srv.take()
			if len(seen) != 2 {
				t.Fatalf("server saw %d proofs, want 2", len(seen))
			}
			form, _ := url.ParseQuery(seen[1].body)
			if seen[0].body != seen[1].body || form.Get("code") != "code-1" || form.Get("code_verifier") != "verifier-1" {
				t.Errorf("retry body = %q", seen[1].body)
			}
			if seen[1].claims["nonce"] != "as-nonce-0" || seen[1].claims["htu"] != srv.URL+"/token" {
				t.Errorf("claims = %v", seen[1].claims)
			}
			if *trace != (Trace{Requests: 2, NonceRetries: 1, NonceUsed: true, Alg: alg}) {
				t.Errorf("trace = %+v", *trace)
			}
		})
	}
}

// Compile-time check that the Transport is a RoundTripper.
var _ http.RoundTripper = (*Transport)(nil)
