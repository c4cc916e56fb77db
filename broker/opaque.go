package broker

import (
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/go-jose/go-jose/v4"
)

// Access tokens for /userinfo only (no audience requested) are opaque to apps, as the SaaS
// issues them: a compact JWE (alg dir, enc A256GCM) whose plaintext is the same claims set a
// JWT access token carries (cnf.jkt included for DPoP-bound tokens). Sealing costs an AES-GCM
// pass instead of a signature (an RSA-2048 signature is most of a login's CPU), and nothing is
// stored: /userinfo opens the token and then reads the session, as for a JWT access token.
// The key is derived with HKDF from the broker's signing key, so every replica (same
// keys.signing) opens every replica's tokens, and rotating the signing key ends them, as it
// ends JWT access tokens. Access tokens for an API audience stay signed JWTs (RFC 9068).

// opaqueInfo separates the derived key from every other use of the signing key.
const opaqueInfo = "dpop-broker userinfo access token A256GCM v1"

// opaqueTokens seals and opens userinfo-only access tokens.
type opaqueTokens struct {
	key []byte
	enc jose.Encrypter
}

// newOpaqueTokens derives the token key from the signing key. A signing key whose private
// part cannot be exported (an external signer) gets nil: access tokens are then all JWTs.
func newOpaqueTokens(k *Keys) (*opaqueTokens, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.Signing)
	if err != nil {
		return nil, nil // not an exportable key: access tokens stay JWTs
	}
	key, err := hkdf.Key(sha256.New, der, []byte("dpop-broker"), opaqueInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("derive access token key: %w", err)
	}
	opts := (&jose.EncrypterOptions{}).WithHeader("kid", k.KID)
	enc, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: jose.DIRECT, Key: key}, opts)
	if err != nil {
		return nil, fmt.Errorf("access token encrypter: %w", err)
	}
	return &opaqueTokens{key: key, enc: enc}, nil
}

// seal returns claims as an opaque access token.
func (o *opaqueTokens) seal(claims any) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("marshal claims: %w", err)
	}
	obj, err := o.enc.Encrypt(payload)
	if err != nil {
		return "", fmt.Errorf("seal: %w", err)
	}
	return obj.CompactSerialize()
}

// isOpaque reports whether tok has the shape of a compact JWE (five segments).
func isOpaque(tok string) bool { return strings.Count(tok, ".") == 4 }

// open authenticates and decrypts an opaque access token into out. Any failure (other key,
// other algorithms, tampering) is one error: the caller answers invalid_token.
func (o *opaqueTokens) open(raw string, out *accessClaims) error {
	payload, err := o.decrypt(raw)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(payload, out); err != nil {
		return errors.New("malformed access token")
	}
	return nil
}

// decrypt returns the authenticated plaintext of an opaque access token.
func (o *opaqueTokens) decrypt(raw string) ([]byte, error) {
	if o == nil {
		return nil, errors.New("malformed access token")
	}
	obj, err := jose.ParseEncryptedCompact(raw, []jose.KeyAlgorithm{jose.DIRECT}, []jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		return nil, errors.New("malformed access token")
	}
	payload, err := obj.Decrypt(o.key)
	if err != nil {
		return nil, errors.New("access token is invalid")
	}
	return payload, nil
}
