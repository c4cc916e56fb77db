package interop

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
)

// TestOpenIDClientEd25519KeyGetsBoundToken: openid-client with an Ed25519 DPoP key (a WebCrypto
// Ed25519 pair like its randomDPoPKeyPair makes; openid-client labels every Ed25519 proof with the
// fully specified "Ed25519", RFC 9864) logs in through a broker with the default dpop_server.algs and gets a DPoP-bound
// access token that /userinfo accepts.
func TestOpenIDClientEd25519KeyGetsBoundToken(t *testing.T) {
	t.Parallel()
	w := setup(t, scenario{mode: "dpop", alg: "ES256", rpDPoP: true, rpDPoPAlg: "Ed25519"})

	resp, err := http.Get(w.broker.URL + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var disco struct {
		Algs []string `json:"dpop_signing_alg_values_supported"`
	}
	err = json.NewDecoder(resp.Body).Decode(&disco)
	resp.Body.Close()
	if err != nil || !slices.Contains(disco.Algs, "EdDSA") || !slices.Contains(disco.Algs, "Ed25519") {
		t.Fatalf("discovery dpop_signing_alg_values_supported = %v (%v), want EdDSA and Ed25519", disco.Algs, err)
	}

	status, body, raw := w.login(t) // wantSuccess: userinfo answered DPoP <at> + the RP's proof
	wantSuccess(t, status, body, raw)
	if got := body["token_type"]; got != "dpop" {
		t.Errorf("token_type = %v, want DPoP (openid-client lower-cases it): %s", got, raw)
	}
	ev := waitEventType(t, w.broker.proc, "seacft")
	dp, _ := ev.Details["dpop"].(map[string]any)
	if dp["bound"] != true || dp["alg"] != "Ed25519" || dp["jkt"] != body["dpop_jkt"] {
		t.Errorf("seacft details.dpop = %v, want bound with alg Ed25519 and the RP key's thumbprint %v (event %s)", dp, body["dpop_jkt"], eventJSON(ev))
	}
}
