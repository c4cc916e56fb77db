package dpop_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/dpop-broker/dpop-broker/dpop"
	"golang.org/x/oauth2"
)

// A token endpoint that demands a DPoP nonce is answered by one transparent retry when the
// Transport sits under golang.org/x/oauth2's Exchange.
func ExampleTransport_oauth2Exchange() {
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("DPoP-Nonce", "server-nonce-1")
		w.Header().Set("Content-Type", "application/json")
		if proofNonce(r.Header.Get("DPoP")) != "server-nonce-1" {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"error":"use_dpop_nonce"}`)
			return
		}
		_, _ = io.WriteString(w, `{"access_token":"example-at","token_type":"DPoP","expires_in":300}`)
	}))
	defer idp.Close()

	key, _ := dpop.GenerateKey(dpop.AlgES256) // in production: dpop.ParsePrivateKeyPEM
	signer, _ := dpop.NewSigner(key, dpop.AlgES256)

	trace := &dpop.Trace{}
	ctx := dpop.WithTrace(context.Background(), trace)
	ctx = context.WithValue(ctx, oauth2.HTTPClient, &http.Client{
		Transport: &dpop.Transport{Signer: signer, MaxRetries: 1},
	})
	cfg := oauth2.Config{
		ClientID:     "broker",
		ClientSecret: "secret",
		Endpoint:     oauth2.Endpoint{TokenURL: idp.URL + "/token", AuthStyle: oauth2.AuthStyleInHeader},
	}
	tok, err := cfg.Exchange(ctx, "upstream-code", oauth2.VerifierOption("pkce-verifier"))
	if err != nil {
		fmt.Println("exchange:", err)
		return
	}
	fmt.Println("token_type:", tok.Type())
	fmt.Printf("proofs sent: %d, nonce retries: %d, nonce used: %v, alg: %s\n",
		trace.Requests, trace.NonceRetries, trace.NonceUsed, trace.Alg)
	// Output:
	// token_type: DPoP
	// proofs sent: 2, nonce retries: 1, nonce used: true, alg: ES256
}

// proofNonce returns the nonce claim of a proof without verifying it; a real server
// verifies the proof first (RFC 9449 §4.3).
func proofNonce(proof string) string {
	parts := strings.Split(proof, ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct {
		Nonce string `json:"nonce"`
	}
	_ = json.Unmarshal(payload, &c)
	return c.Nonce
}
