// Package dpop implements RFC 9449 both ways: a proof signer and an http.RoundTripper that
// adds proofs and answers use_dpop_nonce challenges, plus JWK thumbprints and key loading.
package dpop

import (
	"crypto"
	"time"
)

// Algorithm names accepted in configuration. AlgEd25519 signs with an Ed25519 key; its JOSE
// label on the wire is "EdDSA" unless the upstream lists the fully-specified "Ed25519".
const (
	AlgES256   = "ES256"
	AlgEd25519 = "Ed25519"
	AlgEdDSA   = "EdDSA"
	AlgRS256   = "RS256"
	AlgPS256   = "PS256"
)

// Signer makes DPoP proofs with one private key. It is safe for concurrent use.
type Signer struct {
	// unexported: key, alg label, precomputed header, thumbprint
}

// NewSigner returns a signer for key under the JOSE alg label alg ("ES256", "EdDSA",
// "Ed25519", "RS256", "PS256"). The key type must fit the alg (P-256 for ES256, Ed25519 for
// EdDSA/Ed25519, RSA ≥ 2048 bits for RS256/PS256).
func NewSigner(key crypto.Signer, alg string) (*Signer, error) { panic("not implemented") }

// WithAlg returns a signer sharing the key but labelled alg on the wire (EdDSA ↔ Ed25519).
func (s *Signer) WithAlg(alg string) (*Signer, error) { panic("not implemented") }

// Alg returns the JOSE alg label of the proofs.
func (s *Signer) Alg() string { panic("not implemented") }

// Thumbprint returns the RFC 7638 SHA-256 thumbprint (base64url, unpadded) of the public key.
func (s *Signer) Thumbprint() string { panic("not implemented") }

// Proof returns a signed proof JWT for one request: header typ dpop+jwt, alg, public jwk;
// claims jti (random, 128 bits), htm=method, htu=url without query and fragment, iat=now,
// nonce when non-empty, ath=base64url(SHA-256(accessToken)) when accessToken is non-empty.
func (s *Signer) Proof(method, url, nonce, accessToken string, now time.Time) (string, error) {
	panic("not implemented")
}

// GenerateKey returns a fresh private key for a configuration alg name (ES256, Ed25519/EdDSA,
// RS256/PS256 → RSA-2048).
func GenerateKey(alg string) (crypto.Signer, error) { panic("not implemented") }

// ParsePrivateKeyPEM parses a PKCS#8, SEC1 ("EC PRIVATE KEY") or PKCS#1 PEM private key.
func ParsePrivateKeyPEM(data []byte) (crypto.Signer, error) { panic("not implemented") }

// MarshalPrivateKeyPEM encodes key as PKCS#8 PEM.
func MarshalPrivateKeyPEM(key crypto.Signer) ([]byte, error) { panic("not implemented") }

// KeyAlgFits reports whether key can sign for the configuration alg name.
func KeyAlgFits(key crypto.Signer, alg string) bool { panic("not implemented") }
