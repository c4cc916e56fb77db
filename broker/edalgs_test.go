package broker

import (
	"net/http"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/config/configtest"
	"github.com/dpop-broker/dpop-broker/dpop"
)

// With the default dpop_server.algs the broker accepts proofs from Ed25519 keys under both
// JOSE names, EdDSA and the fully specified Ed25519 (RFC 9864) that openid-client sends, and
// advertises both in its discovery document.
func TestDefaultProofAlgsAcceptBothEd25519Names(t *testing.T) {
	h := dpopHarness(t, nil)
	_, body := get(t, http.DefaultClient, h.srv.URL+"/.well-known/openid-configuration")
	if !strings.Contains(body, `"dpop_signing_alg_values_supported":["ES256","EdDSA","Ed25519","RS256","PS256"]`) {
		t.Fatalf("discovery does not list both Ed25519 names: %s", body)
	}
	key, err := dpop.GenerateKey(dpop.AlgEd25519)
	if err != nil {
		t.Fatal(err)
	}
	for _, label := range []string{dpop.AlgEdDSA, dpop.AlgEd25519} {
		t.Run(label, func(t *testing.T) {
			s, err := dpop.NewSigner(key, label)
			if err != nil {
				t.Fatal(err)
			}
			r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, h.codeFor(spaClient, nil)), proof: h.tokenProof(s)})
			wantBound(t, r, s)
			ev := h.lastEventOf("seacft")
			if dp, _ := ev.Details["dpop"].(map[string]any); dp["alg"] != label || dp["jkt"] != s.Thumbprint() {
				t.Errorf("seacft details.dpop = %v, want alg %s and the key's thumbprint", dp, label)
			}
		})
	}
}

// dpop_server.algs may list Ed25519 under either name or both; the default passes validation.
func TestProofAlgsConfigAcceptsBothEd25519Names(t *testing.T) {
	configtest.SetEnv(t)
	for _, algs := range [][]string{config.Default().DPoPServer.Algs, {"EdDSA"}, {"Ed25519"}, {"ES256", "EdDSA", "Ed25519"}} {
		cfg, err := config.Parse([]byte(configtest.ValidYAML))
		if err != nil {
			t.Fatal(err)
		}
		cfg.DPoPServer.Algs = algs
		if errs := cfg.Validate(); len(errs) != 0 {
			t.Errorf("algs %v: %v", algs, config.FieldErrors(errs))
		}
	}
}
