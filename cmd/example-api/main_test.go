package main

import (
	"bufio"
	"context"
	"crypto"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/dpop"
	"github.com/dpop-broker/dpop-broker/sessions/redistest"
	jose "github.com/go-jose/go-jose/v4"
)

const (
	testIssuer   = "https://broker.example.com/"
	testAudience = "https://api.example.com"
)

var (
	atKeyOnce sync.Once
	atKey     crypto.Signer
)

// issuer serves a JWKS on 127.0.0.1 and signs RS256 access tokens.
func issuer(t *testing.T) (jwksURL string, sign func(claims map[string]any) string) {
	t.Helper()
	atKeyOnce.Do(func() {
		k, err := dpop.GenerateKey(dpop.AlgRS256)
		if err != nil {
			panic(err)
		}
		atKey = k
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: atKey.Public(), KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	}))
	t.Cleanup(srv.Close)
	sg, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: atKey}, (&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	return srv.URL, func(extra map[string]any) string {
		now := time.Now()
		claims := map[string]any{"iss": testIssuer, "aud": testAudience, "sub": "user-1", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		for k, v := range extra {
			claims[k] = v
		}
		b, _ := json.Marshal(claims)
		obj, err := sg.Sign(b)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := obj.CompactSerialize()
		return s
	}
}

// startAPI runs the command in-process and returns its base URL once it printed READY.
func startAPI(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, args, pw, io.Discard)
		_ = pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("no READY line: %v", err)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	base, ok := strings.CutPrefix(strings.TrimSpace(line), "READY ")
	if !ok || !strings.HasPrefix(base, "http://127.0.0.1:") {
		t.Fatalf("READY line %q", line)
	}
	return base
}

func get(t *testing.T, url string, hdr map[string]string) (*http.Response, map[string]string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp, body
}

func TestExampleAPI(t *testing.T) {
	jwksURL, sign := issuer(t)
	key, _ := dpop.GenerateKey(dpop.AlgES256)
	signer, _ := dpop.NewSigner(key, dpop.AlgES256)
	otherKey, _ := dpop.GenerateKey(dpop.AlgEdDSA)
	other, _ := dpop.NewSigner(otherKey, dpop.AlgEdDSA)
	at := sign(map[string]any{"cnf": map[string]string{"jkt": signer.Thumbprint()}})

	base := startAPI(t, "--issuer", testIssuer, "--audience", testAudience, "--jwks-url", jwksURL,
		"--required", "--cors-origin", "http://app.example.com")
	u := base + "/api/private"

	t.Run("bound token with a fresh proof → 200 {message, sub, jkt}", func(t *testing.T) {
		proof, _ := signer.Proof("GET", u, "", at, time.Time{})
		resp, body := get(t, u, map[string]string{"Authorization": "DPoP " + at, "DPoP": proof})
		if resp.StatusCode != 200 || body["sub"] != "user-1" || body["jkt"] != signer.Thumbprint() || body["message"] == "" {
			t.Fatalf("%d %v", resp.StatusCode, body)
		}
	})
	t.Run("no proof → 401", func(t *testing.T) {
		resp, _ := get(t, u, map[string]string{"Authorization": "DPoP " + at})
		if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_dpop_proof"`) {
			t.Fatalf("%d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	})
	t.Run("another key's proof → 401 invalid_token", func(t *testing.T) {
		proof, _ := other.Proof("GET", u, "", at, time.Time{})
		resp, _ := get(t, u, map[string]string{"Authorization": "DPoP " + at, "DPoP": proof})
		if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Fatalf("%d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	})
	t.Run("bound token as Bearer → 401 invalid_token", func(t *testing.T) {
		resp, _ := get(t, u, map[string]string{"Authorization": "Bearer " + at})
		if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Fatalf("%d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	})
	t.Run("replayed proof → 401", func(t *testing.T) {
		proof, _ := signer.Proof("GET", u, "", at, time.Time{})
		h := map[string]string{"Authorization": "DPoP " + at, "DPoP": proof}
		if resp, _ := get(t, u, h); resp.StatusCode != 200 {
			t.Fatalf("first: %d", resp.StatusCode)
		}
		if resp, _ := get(t, u, h); resp.StatusCode != 401 {
			t.Fatalf("replay: %d", resp.StatusCode)
		}
	})
	t.Run("CORS preflight allows DPoP and exposes DPoP-Nonce", func(t *testing.T) {
		req, _ := http.NewRequest("OPTIONS", u, nil)
		req.Header.Set("Origin", "http://app.example.com")
		req.Header.Set("Access-Control-Request-Method", "GET")
		req.Header.Set("Access-Control-Request-Headers", "authorization, dpop")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "http://app.example.com" ||
			!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "DPoP") {
			t.Fatalf("preflight %d %v", resp.StatusCode, resp.Header)
		}
		r2, _ := get(t, u, map[string]string{"Origin": "http://app.example.com"})
		exp := r2.Header.Get("Access-Control-Expose-Headers")
		if r2.StatusCode != 401 || !strings.Contains(exp, "DPoP-Nonce") || !strings.Contains(exp, "WWW-Authenticate") {
			t.Fatalf("expose %q", exp)
		}
		r3, _ := get(t, u, map[string]string{"Origin": "http://evil.example.com"})
		if r3.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatal("unlisted origin allowed")
		}
	})
}

func TestExampleAPINonce(t *testing.T) {
	jwksURL, sign := issuer(t)
	key, _ := dpop.GenerateKey(dpop.AlgES256)
	signer, _ := dpop.NewSigner(key, dpop.AlgES256)
	at := sign(map[string]any{"cnf": map[string]string{"jkt": signer.Thumbprint()}})
	t.Setenv("EXAMPLE_API_NONCE_SECRET", strings.Repeat("s", 32))
	base := startAPI(t, "--issuer", testIssuer, "--audience", testAudience, "--jwks-url", jwksURL,
		"--required", "--nonce-secret-env", "EXAMPLE_API_NONCE_SECRET")
	u := base + "/api/private"

	proof, _ := signer.Proof("GET", u, "", at, time.Time{})
	resp, _ := get(t, u, map[string]string{"Authorization": "DPoP " + at, "DPoP": proof})
	nonce := resp.Header.Get("DPoP-Nonce")
	if resp.StatusCode != 401 || nonce == "" || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="use_dpop_nonce"`) {
		t.Fatalf("nonce challenge: %d nonce %q %q", resp.StatusCode, nonce, resp.Header.Get("WWW-Authenticate"))
	}
	proof, _ = signer.Proof("GET", u, nonce, at, time.Time{})
	if resp, body := get(t, u, map[string]string{"Authorization": "DPoP " + at, "DPoP": proof}); resp.StatusCode != 200 {
		t.Fatalf("with nonce: %d %v", resp.StatusCode, body)
	}
}

// Two API processes sharing one Redis accept a proof exactly once between them.
func TestExampleAPISharedReplayCache(t *testing.T) {
	addr := redistest.Start(t)
	jwksURL, sign := issuer(t)
	key, _ := dpop.GenerateKey(dpop.AlgES256)
	signer, _ := dpop.NewSigner(key, dpop.AlgES256)
	at := sign(map[string]any{"cnf": map[string]string{"jkt": signer.Thumbprint()}})
	const public = "https://api.example.com"
	args := []string{"--issuer", testIssuer, "--audience", testAudience, "--jwks-url", jwksURL, "--required",
		"--redis", addr, "--public-url", public}
	a, b := startAPI(t, args...), startAPI(t, args...)

	proof, _ := signer.Proof("GET", public+"/api/private", "", at, time.Time{})
	h := map[string]string{"Authorization": "DPoP " + at, "DPoP": proof}
	r1, _ := get(t, a+"/api/private", h)
	r2, _ := get(t, b+"/api/private", h)
	if r1.StatusCode != 200 || r2.StatusCode != 401 {
		t.Fatalf("replay across replicas: first %d, second %d", r1.StatusCode, r2.StatusCode)
	}
	if !strings.Contains(r2.Header.Get("WWW-Authenticate"), "proof replayed") {
		t.Fatalf("second answer %q", r2.Header.Get("WWW-Authenticate"))
	}
}

func TestFlags(t *testing.T) {
	if code := run(context.Background(), []string{"--audience", "x"}, io.Discard, io.Discard); code != 2 {
		t.Fatalf("missing --issuer: exit %d", code)
	}
	t.Setenv("EMPTY_SECRET", "")
	if code := run(context.Background(), []string{"--issuer", "https://i/", "--audience", "a", "--nonce-secret-env", "EMPTY_SECRET"}, io.Discard, io.Discard); code != 1 {
		t.Fatalf("empty nonce secret: exit %d", code)
	}
}
