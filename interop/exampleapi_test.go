package interop

import (
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/dpop-broker/dpop-broker/dpop"
	"github.com/dpop-broker/dpop-broker/sessions/redistest"
)

// exampleAPIPath is the protected route of cmd/example-api.
const exampleAPIPath = "/api/private"

type exampleAPIOptions struct {
	required   bool   // --required: only DPoP-bound tokens with the DPoP scheme
	nonce      bool   // --nonce-secret-env: demand server nonces (401 use_dpop_nonce + DPoP-Nonce)
	nonceKey   string // the nonce secret (replicas share it); "" = a random one
	redisAddr  string // --redis: shared jti replay cache
	corsOrigin string // --cors-origin
	publicURL  string // --public-url (replicas share it); "" = its own address
}

// startExampleAPI runs cmd/example-api trusting the world's broker and returns its base URL. When
// the binary did not build it fails under INTEROP_REQUIRED=1 and otherwise returns "".
func startExampleAPI(t *testing.T, w *asWorld, o exampleAPIOptions) string {
	t.Helper()
	if exampleAPIErr != nil {
		if required {
			t.Fatalf("cmd/example-api: %v", exampleAPIErr)
		}
		t.Logf("cmd/example-api not available, skipping it: %v", exampleAPIErr)
		return ""
	}
	// Port 0: the API binds a port of its own and reports it on its READY line.
	args := []string{"--issuer", w.issuer, "--audience", apiAudience, "--jwks-url", w.base() + "/.well-known/jwks.json",
		"--listen", "127.0.0.1:0"}
	if o.publicURL != "" {
		args = append(args, "--public-url", o.publicURL)
	}
	if o.required {
		args = append(args, "--required")
	}
	if o.redisAddr != "" {
		args = append(args, "--redis", o.redisAddr)
	}
	if o.corsOrigin != "" {
		args = append(args, "--cors-origin", o.corsOrigin)
	}
	cmd := exec.Command(exampleAPIBin, args...)
	if o.nonce {
		secret := o.nonceKey
		if secret == "" {
			secret = randomHex(t, 32)
		}
		cmd.Args = append(cmd.Args, "--nonce-secret-env", "INTEROP_API_NONCE_SECRET")
		cmd.Env = append(cmd.Environ(), "INTEROP_API_NONCE_SECRET="+secret)
	}
	ready, onLine := readyLine()
	return start(t, "example-api", cmd, onLine).waitReady(t, ready)
}

// TestExampleAPI: cmd/example-api (dpop.ResourceServer, required DPoP, server nonces, jti replay
// cache) accepts the broker's DPoP-bound access token only with a fresh proof from the bound key
// carrying its current nonce, and refuses a replayed proof.
func TestExampleAPI(t *testing.T) {
	t.Parallel()
	w := setupAS(t, 1, asOptions{})
	base := startExampleAPI(t, w, exampleAPIOptions{required: true, nonce: true})
	if base == "" {
		t.Skip("cmd/example-api is not available")
	}
	target := base + exampleAPIPath
	s, other := newSigner(t, dpop.AlgES256), newSigner(t, dpop.AlgES256)
	at := boundToken(t, w, s, apiAudience)

	// RFC 9449 §9, resource-server nonces: a proof without a nonce → 401 DPoP error="use_dpop_nonce" + DPoP-Nonce.
	status, body, hdr := callAPI(t, target, "DPoP", at, proof(t, s, http.MethodGet, target, "", at))
	challenge := strings.Join(hdr.Values("WWW-Authenticate"), ", ")
	nonce := hdr.Get("DPoP-Nonce")
	if status != http.StatusUnauthorized || !strings.Contains(challenge, `error="use_dpop_nonce"`) || nonce == "" {
		t.Fatalf("proof without nonce: %d WWW-Authenticate %q DPoP-Nonce %q (%v), want 401 use_dpop_nonce with a DPoP-Nonce", status, challenge, nonce, body)
	}
	withNonce := func(sg *dpop.Signer) func(string) string {
		return func(target string) string { return proof(t, sg, http.MethodGet, target, nonce, at) }
	}
	runRSCases(t, target, at, []rsCase{
		{name: "bound AT + fresh proof with the nonce (htm GET, htu, ath) → 200", scheme: "DPoP", proof: withNonce(s), wantStatus: http.StatusOK, wantError: ""},
		{name: "bound AT as Bearer without proof → 401 invalid_token", scheme: "Bearer", proof: nil, wantStatus: http.StatusUnauthorized, wantError: "invalid_token"},
		{name: "no credentials → 401 without error info", scheme: "", proof: nil, wantStatus: http.StatusUnauthorized, wantError: ""},
		{name: "proof from another key → 401 invalid_token", scheme: "DPoP", proof: withNonce(other), wantStatus: http.StatusUnauthorized, wantError: "invalid_token"},
		{name: "proof for another htu → 401 invalid_dpop_proof", scheme: "DPoP",
			proof: func(target string) string { return proof(t, s, http.MethodGet, target+"/other", nonce, at) }, wantStatus: http.StatusUnauthorized, wantError: "invalid_dpop_proof"},
		{name: "proof with a nonce the API never issued → 401 use_dpop_nonce", scheme: "DPoP",
			proof: func(target string) string { return proof(t, s, http.MethodGet, target, "not-a-nonce-"+nonce, at) }, wantStatus: http.StatusUnauthorized, wantError: "use_dpop_nonce"},
	})

	t.Run("replay: the same proof twice → second 401 invalid_dpop_proof", func(t *testing.T) {
		p := proof(t, s, http.MethodGet, target, nonce, at)
		if status, body, _ := callAPI(t, target, "DPoP", at, p); status != http.StatusOK {
			t.Fatalf("first use: %d %v, want 200", status, body)
		}
		status, body, hdr := callAPI(t, target, "DPoP", at, p)
		challenge := strings.Join(hdr.Values("WWW-Authenticate"), ", ")
		if status != http.StatusUnauthorized || !strings.Contains(challenge, `error="invalid_dpop_proof"`) {
			t.Fatalf("replay: %d WWW-Authenticate %q (%v), want 401 invalid_dpop_proof", status, challenge, body)
		}
		t.Logf("replay refused: %s", challenge)
	})
}

// TestExampleAPIReplicas: two cmd/example-api processes behind one public URL share a private
// redis-server (jti replay cache) and a nonce secret: a nonce from one is good at the other
// (stateless nonces, no shared nonce state), and a proof accepted by one is refused by the other.
func TestExampleAPIReplicas(t *testing.T) {
	t.Parallel()
	w := setupAS(t, 1, asOptions{})
	if exampleAPIErr != nil && !required {
		t.Skipf("cmd/example-api is not available: %v", exampleAPIErr)
	}
	// The public URL is the (here imaginary) load balancer's: a port this test holds so that
	// nothing else can answer there. Each replica binds a port of its own and reports it.
	public := listenSocket(t).URL
	o := exampleAPIOptions{required: true, nonce: true, nonceKey: randomHex(t, 32), redisAddr: redistest.Start(t), publicURL: public}
	first := startExampleAPI(t, w, o)
	second := startExampleAPI(t, w, o)
	s := newSigner(t, dpop.AlgES256)
	at := boundToken(t, w, s, apiAudience)
	htu := public + exampleAPIPath // the proof names the public URL, whichever replica gets it

	_, _, hdr := callAPI(t, first+exampleAPIPath, "DPoP", at, proof(t, s, http.MethodGet, htu, "", at))
	nonce := hdr.Get("DPoP-Nonce")
	if nonce == "" {
		t.Fatalf("replica 1 gave no DPoP-Nonce on a proof without nonce (WWW-Authenticate %q)", hdr.Get("WWW-Authenticate"))
	}
	// RFC 9449 §9: replica 2 accepts replica 1's nonce.
	if status, body, hdr := callAPI(t, second+exampleAPIPath, "DPoP", at, proof(t, s, http.MethodGet, htu, nonce, at)); status != http.StatusOK {
		t.Fatalf("replica 2 with replica 1's nonce: %d %v (WWW-Authenticate %q), want 200", status, body, hdr.Get("WWW-Authenticate"))
	}
	// RFC 9449 §11.1: one proof, both replicas at once: exactly one 200.
	p := proof(t, s, http.MethodGet, htu, nonce, at)
	statuses := make([]int, 2)
	challenges := make([]string, 2)
	var wg sync.WaitGroup
	for i, base := range []string{first, second} {
		wg.Go(func() {
			req, err := http.NewRequest(http.MethodGet, base+exampleAPIPath, nil)
			if err != nil {
				return
			}
			req.Header.Set("Authorization", "DPoP "+at)
			req.Header.Set("DPoP", p)
			resp, err := (&http.Client{Timeout: flowTimeout}).Do(req)
			if err != nil {
				return
			}
			resp.Body.Close()
			statuses[i], challenges[i] = resp.StatusCode, resp.Header.Get("WWW-Authenticate")
		})
	}
	wg.Wait()
	ok := 0
	for i, st := range statuses {
		switch {
		case st == http.StatusOK:
			ok++
		case st != http.StatusUnauthorized || !strings.Contains(challenges[i], `error="invalid_dpop_proof"`):
			t.Errorf("replica %d: %d %q, want 200 or 401 invalid_dpop_proof", i+1, st, challenges[i])
		}
	}
	if ok != 1 {
		t.Errorf("one proof at two replicas sharing redis: statuses %v, want exactly one 200", statuses)
	}
}
