package dpop

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"math/big"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

const benchURL = "https://api.example.com/api/private"

// benchBatch is how many distinct proofs are signed up front; the replay cache is replaced
// (timer stopped) each time the batch is reused so every verified proof has a fresh jti.
const benchBatch = 512

func benchProofs(b *testing.B, alg string, n int) []string {
	b.Helper()
	s := testSigner(b, alg)
	out := make([]string, n)
	for i := range out {
		p, err := s.Proof("GET", benchURL, "", "", vtNow)
		if err != nil {
			b.Fatal(err)
		}
		out[i] = p
	}
	return out
}

// BenchmarkVerify measures full proof validation (every §4.3 check, thumbprint, memory replay
// claim) per algorithm. Compare with BenchmarkBareVerify of the same alg.
func BenchmarkVerify(b *testing.B) {
	for _, alg := range benchAlgs {
		b.Run(alg, func(b *testing.B) {
			proofs := benchProofs(b, alg, benchBatch)
			c := Check{Method: "GET", URL: benchURL}
			ctx := context.Background()
			v := vtVerifier()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i%benchBatch == 0 && i > 0 {
					b.StopTimer()
					v.Replay = NewMemoryReplayCache(benchBatch)
					b.StartTimer()
				}
				if _, err := v.Verify(ctx, proofs[i%benchBatch:i%benchBatch+1], c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBareVerify measures only the signature check of the same proofs with the standard
// library primitive (hash of the signing input + verify), the floor Verify cannot go below.
func BenchmarkBareVerify(b *testing.B) {
	for _, alg := range benchAlgs {
		b.Run(alg, func(b *testing.B) {
			proof := benchProofs(b, alg, 1)[0]
			dot := strings.LastIndexByte(proof, '.')
			input := []byte(proof[:dot])
			sig, err := b64.DecodeString(proof[dot+1:])
			if err != nil {
				b.Fatal(err)
			}
			pub := testKey(b, alg).Public()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var ok bool
				switch k := pub.(type) {
				case *ecdsa.PublicKey:
					d := sha256.Sum256(input)
					r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
					ok = ecdsa.Verify(k, d[:], r, s)
				case ed25519.PublicKey:
					ok = ed25519.Verify(k, input, sig)
				case *rsa.PublicKey:
					d := sha256.Sum256(input)
					if alg == AlgPS256 {
						ok = rsa.VerifyPSS(k, crypto.SHA256, d[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
					} else {
						ok = rsa.VerifyPKCS1v15(k, crypto.SHA256, d[:], sig) == nil
					}
				}
				if !ok {
					b.Fatal("signature did not verify")
				}
			}
		})
	}
}

// BenchmarkBareVerifyGoJose is the library route for the same signature: go-jose
// ParseSignedCompact (header and embedded jwk parsed) and Verify with the embedded key. It
// does none of the DPoP checks; kept to justify Verify's own header handling.
func BenchmarkBareVerifyGoJose(b *testing.B) {
	for _, alg := range []string{AlgES256, AlgEdDSA, AlgRS256, AlgPS256} {
		b.Run(alg, func(b *testing.B) {
			proof := benchProofs(b, alg, 1)[0]
			algs := []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				obj, err := jose.ParseSignedCompact(proof, algs)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := obj.Verify(obj.Signatures[0].Header.JSONWebKey); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVerifyColdHeader is BenchmarkVerify with the header cache emptied before every
// proof: the cost for a client whose key the verifier has not seen (JSON, JWK, thumbprint).
func BenchmarkVerifyColdHeader(b *testing.B) {
	for _, alg := range benchAlgs {
		b.Run(alg, func(b *testing.B) {
			proofs := benchProofs(b, alg, benchBatch)
			hdr := proofs[0][:strings.IndexByte(proofs[0], '.')]
			c := Check{Method: "GET", URL: benchURL}
			ctx := context.Background()
			v := vtVerifier()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i%benchBatch == 0 && i > 0 {
					b.StopTimer()
					v.Replay = NewMemoryReplayCache(benchBatch)
					b.StartTimer()
				}
				proofHeaders.mu.Lock()
				delete(proofHeaders.m, hdr)
				proofHeaders.mu.Unlock()
				if _, err := v.Verify(ctx, proofs[i%benchBatch:i%benchBatch+1], c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
