package dpop

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

var benchAlgs = []string{AlgES256, AlgEdDSA, AlgRS256, AlgPS256}

// BenchmarkProof measures one full proof: claims JSON, jti, signature, compact encoding.
func BenchmarkProof(b *testing.B) {
	for _, alg := range benchAlgs {
		b.Run(alg, func(b *testing.B) {
			s := testSigner(b, alg)
			now := time.Now()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Proof("POST", "https://idp.example.com/oauth2/v1/token", "nonce-abc", "", now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSignOnly measures the bare signature over a typical proof signing input, the
// floor Proof cannot go below.
func BenchmarkSignOnly(b *testing.B) {
	for _, alg := range benchAlgs {
		b.Run(alg, func(b *testing.B) {
			s := testSigner(b, alg)
			tok, err := s.Proof("POST", "https://idp.example.com/oauth2/v1/token", "nonce-abc", "", time.Now())
			if err != nil {
				b.Fatal(err)
			}
			input := []byte(tok[:len(tok)-len(tok[lastDot(tok):])])
			key := testKey(b, alg)
			var opts crypto.SignerOpts = crypto.SHA256
			if alg == AlgPS256 {
				opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
			}
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if alg == AlgEdDSA {
					_, err = key.Sign(rand.Reader, input, crypto.Hash(0))
				} else {
					d := sha256.Sum256(input)
					_, err = key.Sign(rand.Reader, d[:], opts)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkProofGoJoseSigner is the same proof built with go-jose's Signer (EmbedJWK),
// which re-encodes header and jwk per call; kept to justify the precomputed header.
func BenchmarkProofGoJoseSigner(b *testing.B) {
	for _, alg := range []string{AlgES256, AlgEdDSA} {
		b.Run(alg, func(b *testing.B) {
			opts := (&jose.SignerOptions{EmbedJWK: true}).WithType("dpop+jwt")
			sg, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(alg), Key: testKey(b, alg)}, opts)
			if err != nil {
				b.Fatal(err)
			}
			payload := []byte(`{"jti":"0123456789abcdefghijkl","htm":"POST","htu":"https://idp.example.com/oauth2/v1/token","iat":1700000000,"nonce":"nonce-abc"}`)
			b.ReportAllocs()
			for b.Loop() {
				obj, err := sg.Sign(payload)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := obj.CompactSerialize(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func lastDot(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '.' {
			return i
		}
	}
	return len(s)
}
