package broker

import (
	"crypto"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/go-jose/go-jose/v4"

	"github.com/dpop-broker/dpop-broker/config"
)

// Access tokens for /userinfo only (no audience requested) are opaque to apps, as the SaaS
// issues them: a compact JWE (alg dir, enc A256GCM) whose plaintext is the same claims set a
// JWT access token carries (cnf.jkt included for DPoP-bound tokens). Sealing costs an AES-GCM
// pass instead of a signature (an RSA-2048 signature is most of a login's CPU), and nothing is
// stored: /userinfo opens the token and then reads the session, as for a JWT access token.
// The key is derived with HKDF from the broker's signing key, so every replica (same
// keys.signing) opens every replica's tokens. After a rotation the keys derived from
// keys.previous_signing still open the tokens sealed before it (chosen by the JWE kid), as
// the previous keys still verify JWT access tokens. Access tokens for an API audience stay
// signed JWTs (RFC 9068).

// opaqueInfo separates the derived key from every other use of the signing key.
const opaqueInfo = "dpop-broker userinfo access token A256GCM v1"

// opaqueTokens seals and opens userinfo-only access tokens.
type opaqueTokens struct {
	keys map[string][]byte // by the kid of the signing key they derive from
	enc  jose.Encrypter    // with the current signing key's
}

// newOpaqueTokens derives the token keys from the signing keys (current and previous). A
// current signing key whose private part cannot be exported (an external signer) gets nil:
// access tokens are then all JWTs.
func newOpaqueTokens(k *config.KeyRing) (*opaqueTokens, error) {
	key, err := opaqueKey(k.Signing, opaqueInfo)
	if err != nil || key == nil {
		return nil, err // nil: not an exportable key, access tokens stay JWTs
	}
	opts := (&jose.EncrypterOptions{}).WithHeader("kid", k.KID)
	enc, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: jose.DIRECT, Key: key}, opts)
	if err != nil {
		return nil, fmt.Errorf("access token encrypter: %w", err)
	}
	o := &opaqueTokens{keys: map[string][]byte{k.KID: key}, enc: enc}
	for _, p := range k.Previous {
		pk, err := opaqueKey(p.Key, opaqueInfo)
		if err != nil {
			return nil, err
		}
		if pk != nil {
			o.keys[p.KID] = pk
		}
	}
	return o, nil
}

// opaqueKey derives the AES-256 key of one use (info: opaqueInfo, consoleLoginInfo) from a
// signing key, or returns nil for a key whose private part cannot be exported.
func opaqueKey(signing crypto.Signer, info string) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(signing)
	if err != nil {
		return nil, nil
	}
	key, err := hkdf.Key(sha256.New, der, []byte("dpop-broker"), info, 32)
	if err != nil {
		return nil, fmt.Errorf("derive %s key: %w", info, err)
	}
	return key, nil
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
	key, ok := o.keys[obj.Header.KeyID]
	if !ok {
		return nil, errors.New("access token is invalid")
	}
	payload, err := obj.Decrypt(key)
	if err != nil {
		return nil, errors.New("access token is invalid")
	}
	return payload, nil
}
