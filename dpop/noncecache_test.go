package dpop

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a settable clock for nonce ages.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestNonceCacheForgetsNonceOlderThanMaxAge(t *testing.T) {
	clock := newFakeClock()
	c := NewNonceCacheWith(NonceCacheOptions{MaxAge: time.Minute, Now: clock.Now})
	c.SetNonce("k", "n-1")
	clock.Advance(time.Minute)
	if got := c.Nonce("k"); got != "n-1" {
		t.Fatalf("at exactly MaxAge: Nonce = %q, want n-1", got)
	}
	clock.Advance(time.Second)
	if got := c.Nonce("k"); got != "" {
		t.Fatalf("past MaxAge: Nonce = %q, want none", got)
	}
}

func TestNonceCacheStoringAgainRenewsTheAge(t *testing.T) {
	clock := newFakeClock()
	c := NewNonceCacheWith(NonceCacheOptions{MaxAge: time.Minute, Now: clock.Now})
	c.SetNonce("k", "n-1")
	clock.Advance(50 * time.Second)
	c.SetNonce("k", "n-1") // a response repeated the same nonce: it is current
	clock.Advance(50 * time.Second)
	if got := c.Nonce("k"); got != "n-1" {
		t.Fatalf("Nonce = %q, want n-1 (renewed 50 s ago)", got)
	}
}

func TestNonceCacheDefaultMaxAge(t *testing.T) {
	clock := newFakeClock()
	c := NewNonceCacheWith(NonceCacheOptions{Now: clock.Now})
	c.SetNonce("k", "n-1")
	clock.Advance(DefaultNonceMaxAge)
	if c.Nonce("k") != "n-1" {
		t.Fatal("nonce forgotten before DefaultNonceMaxAge")
	}
	clock.Advance(time.Second)
	if c.Nonce("k") != "" {
		t.Fatal("nonce still sent after DefaultNonceMaxAge")
	}
}

func TestNonceCacheKeepsAtMostMaxEntries(t *testing.T) {
	clock := newFakeClock()
	c := NewNonceCacheWith(NonceCacheOptions{MaxEntries: 3, Now: clock.Now})
	for i := range 3 {
		c.SetNonce(fmt.Sprintf("k%d", i), fmt.Sprintf("n%d", i))
		clock.Advance(time.Second)
	}
	c.SetNonce("k0", "n0b") // refreshing an existing key evicts nothing
	clock.Advance(time.Second)
	c.SetNonce("k3", "n3") // a fourth key evicts the least recently stored: k1
	want := map[string]string{"k0": "n0b", "k1": "", "k2": "n2", "k3": "n3"}
	for k, v := range want {
		if got := c.Nonce(k); got != v {
			t.Errorf("Nonce(%s) = %q, want %q", k, got, v)
		}
	}
	mc := c.(*memNonces)
	if n := len(mc.m); n != 3 {
		t.Errorf("cache holds %d entries, want 3", n)
	}
}

func TestNonceCacheEvictsExpiredEntriesFirst(t *testing.T) {
	clock := newFakeClock()
	c := NewNonceCacheWith(NonceCacheOptions{MaxEntries: 2, MaxAge: time.Minute, Now: clock.Now})
	c.SetNonce("old", "n-old")
	clock.Advance(2 * time.Minute)
	c.SetNonce("a", "n-a")
	c.SetNonce("b", "n-b")
	if c.Nonce("a") != "n-a" || c.Nonce("b") != "n-b" {
		t.Fatalf("live entries evicted while an expired one was there: a=%q b=%q", c.Nonce("a"), c.Nonce("b"))
	}
}

func TestNonceCacheDropKeepsANewerNonce(t *testing.T) {
	c := NewNonceCache()
	c.SetNonce("k", "n-2")
	dropNonce(c, "k", "n-1") // the stale one was already replaced
	if got := c.Nonce("k"); got != "n-2" {
		t.Fatalf("Nonce = %q, want the newer n-2 kept", got)
	}
	dropNonce(c, "k", "n-2")
	if got := c.Nonce("k"); got != "" {
		t.Fatalf("Nonce = %q, want none after dropping it", got)
	}
}

// plainCache is a NonceCache without DropNonce (the Transport's fallback path).
type plainCache struct {
	mu sync.Mutex
	m  map[string]string
}

func (c *plainCache) Nonce(k string) string { c.mu.Lock(); defer c.mu.Unlock(); return c.m[k] }
func (c *plainCache) SetNonce(k, n string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n == "" {
		delete(c.m, k)
		return
	}
	c.m[k] = n
}

func TestNonceCacheWithoutDropperIsComparedAndCleared(t *testing.T) {
	c := &plainCache{m: map[string]string{"k": "n-2"}}
	dropNonce(c, "k", "n-1")
	if c.Nonce("k") != "n-2" {
		t.Fatal("a newer nonce was dropped")
	}
	dropNonce(c, "k", "n-2")
	if c.Nonce("k") != "" {
		t.Fatal("the stale nonce was kept")
	}
}

// switchServer is an AS (/token, 400 JSON errors) and RS (/userinfo, 401 DPoP challenges)
// whose nonce behaviour a test changes between requests, like a server reconfigured or
// redeployed behind the same URL.
type switchServer struct {
	t *testing.T
	*httptest.Server

	mu     sync.Mutex
	mode   string // see handle
	nonce  string // the nonce it issues and accepts
	nonces []string
}

// Modes of switchServer:
//
//	nonce          wants s.nonce: none or another → use_dpop_nonce + DPoP-Nonce
//	no-nonce       issues no nonces; a proof carrying one → invalid_dpop_proof (as oidc-provider
//	               without a nonce secret answers "DPoP nonces are not supported")
//	strict-nonce   wants s.nonce, but reports a nonce it did not issue as invalid_dpop_proof
//	               (without DPoP-Nonce); no nonce → use_dpop_nonce + DPoP-Nonce
//	reject         every proof → invalid_dpop_proof
//	reject-renew   every proof → invalid_dpop_proof with a DPoP-Nonce header
const (
	modeNonce       = "nonce"
	modeNoNonce     = "no-nonce"
	modeStrictNonce = "strict-nonce"
	modeReject      = "reject"
	modeRejectRenew = "reject-renew"
)

func newSwitchServer(t *testing.T, mode string) *switchServer {
	s := &switchServer{t: t, mode: mode, nonce: "nonce-A"}
	s.Server = httptest.NewServer(http.HandlerFunc(s.handle))
	t.Cleanup(s.Close)
	return s
}

func (s *switchServer) set(mode, nonce string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mode, s.nonce = mode, nonce
}

// sent returns the nonces of the proofs seen so far ("" = none) and forgets them.
func (s *switchServer) sent() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.nonces
	s.nonces = nil
	return out
}

func (s *switchServer) handle(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	d, err := parseProof(r.Header.Get("DPoP"))
	if err != nil {
		s.t.Errorf("server: bad proof: %v", err)
		http.Error(w, "bad proof", http.StatusBadRequest)
		return
	}
	got, _ := d.claims["nonce"].(string)
	s.mu.Lock()
	s.nonces = append(s.nonces, got)
	mode, want := s.mode, s.nonce
	s.mu.Unlock()

	rs := r.URL.Path == "/userinfo"
	fail := func(code, desc, newNonce string) {
		if newNonce != "" {
			w.Header().Set("DPoP-Nonce", newNonce)
		}
		if rs {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`DPoP algs="ES256", error=%q, error_description=%q`, code, desc))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = fmt.Fprintf(w, `{"error":%q,"error_description":%q}`, code, desc)
	}
	switch {
	case mode == modeReject:
		fail(ErrCodeInvalidProof, "invalid DPoP key binding", "")
		return
	case mode == modeRejectRenew:
		fail(ErrCodeInvalidProof, "DPoP proof htu mismatch", "nonce-renewed")
		return
	case mode == modeNoNonce && got != "":
		fail(ErrCodeInvalidProof, "DPoP nonces are not supported", "")
		return
	case mode == modeStrictNonce && got != "" && got != want:
		fail(ErrCodeInvalidProof, "DPoP proof nonce unknown", "")
		return
	case (mode == modeNonce || mode == modeStrictNonce) && got != want:
		fail(ErrCodeUseNonce, "nonce required", want)
		return
	}
	if mode != modeNoNonce {
		w.Header().Set("DPoP-Nonce", want)
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"access_token":"at-1","token_type":"DPoP","expires_in":3600}`)
}

// send makes one request through tr to path ("/token" as AS, "/userinfo" as RS).
func (s *switchServer) send(t *testing.T, tr *Transport, path string) (*http.Response, *Trace, error) {
	t.Helper()
	trace := &Trace{}
	ctx := WithTrace(context.Background(), trace)
	var req *http.Request
	if path == "/userinfo" {
		req, _ = http.NewRequestWithContext(ctx, http.MethodGet, s.URL+path, nil)
		req.Header.Set("Authorization", "DPoP at-1")
	} else {
		req, _ = http.NewRequestWithContext(ctx, http.MethodPost, s.URL+path, strings.NewReader("grant_type=authorization_code&code=c"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	return resp, trace, err
}

func TestTransportDropsAStaleNonceAndRetriesWithoutIt(t *testing.T) {
	tests := []struct {
		name       string
		switchTo   string // server mode once the Transport remembers its nonce-A
		newNonce   string // the nonce the server then wants
		maxRetries int
		wantNonces []string // nonces of the proofs of the second request
		wantStatus int      // 0: a *NonceRetryError is expected; -1: the rejection (400 at /token, 401 at /userinfo)
		wantBody   string   // error member of a returned 400/401
		wantTrace  Trace    // of the request (Alg filled in below)
		wantCached string   // nonce remembered afterwards
	}{
		{
			name: "server stopped using nonces: one retry without a nonce succeeds", switchTo: modeNoNonce,
			wantNonces: []string{"nonce-A", ""}, wantStatus: http.StatusOK,
			wantTrace: Trace{Requests: 2, NonceDropped: true},
		},
		{
			name: "new deployment with other nonces: drop, then the nonce challenge is answered", switchTo: modeStrictNonce, newNonce: "nonce-B",
			wantNonces: []string{"nonce-A", "", "nonce-B"}, wantStatus: http.StatusOK,
			wantTrace: Trace{Requests: 3, NonceRetries: 1, NonceUsed: true, NonceDropped: true}, wantCached: "nonce-B",
		},
		{
			name: "new deployment with other nonces and nonce retries off: the challenge after the drop ends it", switchTo: modeStrictNonce, newNonce: "nonce-B", maxRetries: -1,
			wantNonces: []string{"nonce-A", ""}, wantTrace: Trace{Requests: 2, NonceDropped: true}, wantCached: "nonce-B",
		},
		{
			name: "server rejects every proof: one retry, then its answer is returned", switchTo: modeReject,
			wantNonces: []string{"nonce-A", ""}, wantStatus: -1, wantBody: ErrCodeInvalidProof,
			wantTrace: Trace{Requests: 2, NonceDropped: true},
		},
		{
			name: "rejection carrying a new nonce is not about staleness: no retry", switchTo: modeRejectRenew,
			wantNonces: []string{"nonce-A"}, wantStatus: -1, wantBody: ErrCodeInvalidProof,
			wantTrace: Trace{Requests: 1, NonceUsed: true}, wantCached: "nonce-renewed",
		},
	}
	for _, path := range []string{"/token", "/userinfo"} {
		for _, tc := range tests {
			t.Run(path+" "+tc.name, func(t *testing.T) {
				srv := newSwitchServer(t, modeNonce)
				nonces := NewNonceCache()
				ct := &closeTracker{base: http.DefaultTransport}
				tr := &Transport{Signer: testSigner(t, AlgES256), Base: ct, Nonces: nonces, MaxRetries: tc.maxRetries}
				role := "as"
				if path == "/userinfo" {
					role = "rs"
				}
				key := NonceKey(strings.ToLower(srv.URL), role)
				nonces.SetNonce(key, "nonce-A") // learnt from the server before it changed

				srv.set(tc.switchTo, tc.newNonce)
				resp, trace, err := srv.send(t, tr, path)
				switch {
				case tc.wantStatus == 0:
					if !errors.Is(err, ErrNonceRetriesExhausted) {
						t.Fatalf("err = %v, want the nonce retries exhausted", err)
					}
				case err != nil:
					t.Fatalf("second request: %v", err)
				default:
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					wantStatus := tc.wantStatus
					if wantStatus == -1 {
						wantStatus = http.StatusBadRequest
						if path == "/userinfo" {
							wantStatus = http.StatusUnauthorized
						}
					}
					if resp.StatusCode != wantStatus {
						t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, wantStatus)
					}
					if tc.wantBody != "" && path == "/token" && !strings.Contains(string(body), `"error":"`+tc.wantBody+`"`) {
						t.Errorf("body %s, want the server's %s error intact", body, tc.wantBody)
					}
				}
				if got := srv.sent(); strings.Join(got, ",") != strings.Join(tc.wantNonces, ",") {
					t.Errorf("proof nonces %q, want %q", got, tc.wantNonces)
				}
				want := tc.wantTrace
				want.Alg = AlgES256
				if *trace != want {
					t.Errorf("trace = %+v, want %+v", *trace, want)
				}
				if got := nonces.Nonce(key); got != tc.wantCached {
					t.Errorf("remembered nonce %q, want %q", got, tc.wantCached)
				}
				if !ct.allClosed() {
					t.Error("a rejected response body was not closed")
				}
			})
		}
	}
}

func TestTransportNeverRetriesARejectedProofThatCarriedNoNonce(t *testing.T) {
	srv := newSwitchServer(t, modeReject)
	tr := &Transport{Signer: testSigner(t, AlgES256)}
	resp, trace, err := srv.send(t, tr, "/token")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || len(srv.sent()) != 1 || trace.NonceDropped {
		t.Fatalf("status %d trace %+v, want the rejection returned after one proof", resp.StatusCode, *trace)
	}
}

func TestTransportDoesNotSendANonceOlderThanMaxAge(t *testing.T) {
	clock := newFakeClock()
	srv := newSwitchServer(t, modeNonce)
	tr := &Transport{Signer: testSigner(t, AlgES256), Nonces: NewNonceCacheWith(NonceCacheOptions{MaxAge: time.Minute, Now: clock.Now})}
	for i, step := range []struct {
		advance    time.Duration
		wantNonces []string
	}{
		{advance: 0, wantNonces: []string{"", "nonce-A"}},            // learns the nonce
		{advance: 59 * time.Second, wantNonces: []string{"nonce-A"}}, // still fresh (renewed by the 200)
		{advance: 61 * time.Second, wantNonces: []string{"", "nonce-A"}},
	} {
		clock.Advance(step.advance)
		resp, _, err := srv.send(t, tr, "/token")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		resp.Body.Close()
		if got := srv.sent(); strings.Join(got, ",") != strings.Join(step.wantNonces, ",") {
			t.Errorf("request %d: proof nonces %q, want %q", i, got, step.wantNonces)
		}
	}
}

func TestTransportIgnoresUnusableNonces(t *testing.T) {
	tests := []struct {
		name  string
		nonce string
	}{
		{name: "longer than MaxNonceLength", nonce: strings.Repeat("n", MaxNonceLength+1)},
		{name: "a quote in it", nonce: `abc"def`},
		{name: "a space in it", nonce: "abc def"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var hits atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				hits.Add(1)
				w.Header().Set("DPoP-Nonce", tc.nonce)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusBadRequest)
				_, _ = io.WriteString(w, `{"error":"use_dpop_nonce"}`)
			}))
			defer srv.Close()
			nonces := NewNonceCache()
			tr := &Transport{Signer: testSigner(t, AlgES256), Nonces: nonces}
			resp, err := postForm(t, &http.Client{Transport: tr}, context.Background(), srv.URL+"/token", "a=b")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if hits.Load() != 1 || resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("server hit %d times, status %d: want the challenge returned without a retry", hits.Load(), resp.StatusCode)
			}
			if n := nonces.Nonce(NonceKey(strings.ToLower(srv.URL), "as")); n != "" {
				t.Fatalf("remembered an unusable nonce (%d bytes)", len(n))
			}
		})
	}
}
