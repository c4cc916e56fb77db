package dpop

import (
	"context"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// FuzzVerify feeds arbitrary DPoP header values to Verify. It must never panic, must answer
// every rejection with a *ProofError, and may accept only proofs whose signature go-jose (or
// crypto/ed25519 for the "Ed25519" label) verifies with the embedded jwk.
func FuzzVerify(f *testing.F) {
	c := Check{Method: "GET", URL: vtURL}
	for _, alg := range allAlgs {
		s := testSigner(f, alg)
		p, err := s.Proof("GET", vtURL, "", "", vtNow)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p)
		parts := strings.Split(p, ".")
		f.Add(parts[0] + "." + parts[1] + ".")
		f.Add(parts[0] + ".." + parts[2])
		f.Add(p + "," + p)
	}
	f.Add("")
	f.Add("a.b.c")
	f.Add("eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6Im5vbmUifQ.e30.")
	f.Add(vtCraft(f, AlgES256, with(vtHeader(f, AlgES256), "typ", "JWT"), vtClaims()))
	f.Add(vtCraft(f, AlgES256, with(vtHeader(f, AlgES256), "crit", []string{"b64"}, "b64", false), vtClaims()))
	f.Add(vtCraft(f, AlgES256, vtHeader(f, AlgES256), with(vtClaims(), "iat", 1e300)))

	f.Fuzz(func(t *testing.T, proof string) {
		v := vtVerifier()
		res, err := v.Verify(context.Background(), []string{proof}, c)
		if err != nil {
			var pe *ProofError
			if !errors.As(err, &pe) || res != nil {
				t.Fatalf("rejection is not a *ProofError: %v %v", res, err)
			}
			if pe.Code != ErrCodeInvalidProof || !strings.HasPrefix(pe.Check, "dpop-proof-") {
				t.Fatalf("unexpected rejection %+v", pe)
			}
			return
		}
		// Accepted: check independently.
		var algs []jose.SignatureAlgorithm
		for _, a := range DefaultAlgs {
			algs = append(algs, jose.SignatureAlgorithm(a))
		}
		obj, perr := jose.ParseSignedCompact(proof, algs)
		if perr != nil {
			t.Fatalf("accepted a proof go-jose cannot parse: %v", perr)
		}
		sig := obj.Signatures[0]
		jwk := sig.Header.JSONWebKey
		if jwk == nil || !jwk.IsPublic() {
			t.Fatal("accepted a proof without a public jwk")
		}
		if sig.Header.Algorithm == AlgEd25519 {
			dot := strings.LastIndexByte(proof, '.')
			pub, ok := jwk.Key.(ed25519.PublicKey)
			if !ok || !ed25519.Verify(pub, []byte(proof[:dot]), sig.Signature) {
				t.Fatal("accepted an Ed25519 proof that does not verify")
			}
		} else if _, verr := obj.Verify(jwk); verr != nil {
			t.Fatalf("accepted a proof go-jose does not verify: %v", verr)
		}
		if tp, _ := Thumbprint(jwk.Key); tp != res.JKT {
			t.Fatalf("JKT %s != thumbprint %s", res.JKT, tp)
		}
		if sig.Header.Algorithm != res.Alg || sig.Header.ExtraHeaders["typ"] != "dpop+jwt" {
			t.Fatalf("alg/typ mismatch: %+v", sig.Header)
		}
	})
}
