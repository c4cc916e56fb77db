package config

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"

	"github.com/go-jose/go-jose/v4"

	"github.com/dpop-broker/dpop-broker/dpop"
)

// KeyRing holds the broker's private keys: the token-signing key, the signing keys it
// replaced, and the DPoP signers toward upstreams. They are never logged.
type KeyRing struct {
	Signing    crypto.Signer
	SigningAlg jose.SignatureAlgorithm // RS256 or ES256
	KID        string                  // RFC 7638 thumbprint of the public key
	// Previous are replaced signing keys (AddPrevious): published in the JWKS and accepted for
	// the broker's own access tokens, never used to sign.
	Previous []PreviousKey
	// DPoP holds one signer per connection alg name (ES256, Ed25519, RS256, PS256).
	DPoP map[string]*dpop.Signer
	// ClientAuth are the private_key_jwt keys toward upstreams (keys.client_auth), at most one
	// per alg; PreviousClientAuth (keys.previous_client_auth) are published, never used.
	ClientAuth         []ClientAuthKey
	PreviousClientAuth []ClientAuthKey
}

// ClientAuthKey is a client-authentication key: the private key, its alg (RS256, ES256,
// PS256) and key id (RFC 7638 thumbprint).
type ClientAuthKey struct {
	Key crypto.Signer
	Alg string
	KID string
}

// clientAuthKeyFits reports whether key can sign client assertions with alg: an RSA key of at
// least 2048 bits for RS256 and PS256, a P-256 key for ES256.
func clientAuthKeyFits(key crypto.Signer, alg string) bool {
	switch alg {
	case "RS256", "PS256":
		return signingKeyFits(key, "RS256")
	case "ES256":
		return signingKeyFits(key, "ES256")
	}
	return false
}

// AddClientAuthKey adds a client-authentication key for alg, current or (previous) only
// published. A key or a current alg already added is refused, and so is a key the ring holds
// for another use: the token-signing key, a replaced one, a DPoP key (add those first).
func (k *KeyRing) AddClientAuthKey(key crypto.Signer, alg string, previous bool) error {
	if !clientAuthKeyFits(key, alg) {
		return fmt.Errorf("key does not fit alg %s (RS256 and PS256 need RSA ≥ 2048 bits, ES256 a P-256 key)", alg)
	}
	kid, err := keyID(key)
	if err != nil {
		return err
	}
	if owner := k.otherUse(kid); owner != "" {
		return fmt.Errorf("it is %s; use a key of its own", owner)
	}
	for _, c := range append(slices.Clone(k.ClientAuth), k.PreviousClientAuth...) {
		if c.KID == kid {
			return errors.New("the same key is listed twice (one key per alg; RS256 and PS256 need keys of their own)")
		}
	}
	if !previous && slices.ContainsFunc(k.ClientAuth, func(c ClientAuthKey) bool { return c.Alg == alg }) {
		return fmt.Errorf("a client-authentication key for %s is already configured (one per alg; a replaced one goes to keys.previous_client_auth)", alg)
	}
	ck := ClientAuthKey{Key: key, Alg: alg, KID: kid}
	if previous {
		k.PreviousClientAuth = append(k.PreviousClientAuth, ck)
	} else {
		k.ClientAuth = append(k.ClientAuth, ck)
	}
	return nil
}

// otherUse names the key with id kid when the ring holds it as the token-signing key, a
// replaced signing key or a DPoP key (its keys.* entry), else "". A client-authentication key
// must be none of them: an upstream that accepts it would accept assertions signed by
// whatever else the key signs (the broker's tokens, DPoP proofs), and rotating one would
// rotate the other.
func (k *KeyRing) otherUse(kid string) string {
	if kid == k.KID {
		return "the token-signing key (keys.signing)"
	}
	for i, p := range k.Previous {
		if p.KID == kid {
			return fmt.Sprintf("a replaced token-signing key (keys.previous_signing[%d])", i)
		}
	}
	for _, alg := range slices.Sorted(maps.Keys(k.DPoP)) {
		if id, err := publicKeyID(k.DPoP[alg].PublicKey()); err == nil && id == kid {
			return fmt.Sprintf("the DPoP key keys.dpop.%s", DPoPKeyName(alg))
		}
	}
	return ""
}

// ClientAuthJWKS returns the public client-authentication keys (use sig, alg, kid): the
// current ones, then the previous ones.
func (k *KeyRing) ClientAuthJWKS() jose.JSONWebKeySet {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	for _, c := range append(slices.Clone(k.ClientAuth), k.PreviousClientAuth...) {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: c.Key.Public(), KeyID: c.KID, Algorithm: c.Alg, Use: "sig"})
	}
	return set
}

// clientAuthList is keys.client_auth (current) or keys.previous_client_auth.
type clientAuthList struct {
	name     string
	keys     []SigningKey
	previous bool
}

// clientAuthLists returns keys.client_auth and keys.previous_client_auth, in that order.
func (k *Keys) clientAuthLists() []clientAuthList {
	return []clientAuthList{{"keys.client_auth", k.ClientAuth, false}, {"keys.previous_client_auth", k.PreviousClientAuth, true}}
}

// loadClientAuthKeys loads keys.client_auth and keys.previous_client_auth into k; with
// generate, a key is generated for every private_key_jwt alg a connection uses without one.
func loadClientAuthKeys(cfg *Config, k *KeyRing, generate bool) error {
	for _, list := range cfg.Keys.clientAuthLists() {
		for i, e := range list.keys {
			key, err := loadKey(e.KeySource, e.Alg)
			if err == nil {
				err = k.AddClientAuthKey(key, e.Alg, list.previous)
			}
			if err != nil {
				return fmt.Errorf("%s[%d]: %w", list.name, i, err)
			}
		}
	}
	for _, cc := range cfg.Connections {
		alg := cc.Options.ClientAuthAlg()
		if alg == "" || !generate || slices.ContainsFunc(k.ClientAuth, func(c ClientAuthKey) bool { return c.Alg == alg }) {
			continue
		}
		key, err := dpop.GenerateKey(alg)
		if err == nil {
			err = k.AddClientAuthKey(key, alg, false)
		}
		if err != nil {
			return fmt.Errorf("keys.client_auth (generated for %s): %w", alg, err)
		}
	}
	return nil
}

// PreviousKey is a signing key that was replaced.
type PreviousKey struct {
	Key crypto.Signer
	Alg jose.SignatureAlgorithm
	KID string
}

// AddPrevious adds a replaced signing key (alg RS256 or ES256). The current key and a key
// already added are refused.
func (k *KeyRing) AddPrevious(key crypto.Signer, alg string) error {
	if !signingKeyFits(key, alg) {
		return fmt.Errorf("key does not fit signing alg %s (RS256 needs RSA ≥ 2048 bits, ES256 a P-256 key)", alg)
	}
	kid, err := keyID(key)
	if err != nil {
		return err
	}
	if kid == k.KID {
		return errors.New("it is the current signing key (keys.signing)")
	}
	for _, p := range k.Previous {
		if p.KID == kid {
			return errors.New("the same key is listed twice")
		}
	}
	k.Previous = append(k.Previous, PreviousKey{Key: key, Alg: jose.SignatureAlgorithm(alg), KID: kid})
	return nil
}

// VerificationKey returns the public key and alg of the signing key (current or previous)
// with key id kid.
func (k *KeyRing) VerificationKey(kid string) (crypto.PublicKey, jose.SignatureAlgorithm, bool) {
	if kid == k.KID {
		return k.Signing.Public(), k.SigningAlg, true
	}
	for _, p := range k.Previous {
		if p.KID == kid {
			return p.Key.Public(), p.Alg, true
		}
	}
	return nil, "", false
}

// VerificationAlgs are the algs of the current and previous signing keys.
func (k *KeyRing) VerificationAlgs() []jose.SignatureAlgorithm {
	algs := []jose.SignatureAlgorithm{k.SigningAlg}
	for _, p := range k.Previous {
		if !slices.Contains(algs, p.Alg) {
			algs = append(algs, p.Alg)
		}
	}
	return algs
}

// keyID is the RFC 7638 thumbprint of key's public part, base64url.
func keyID(key crypto.Signer) (string, error) { return publicKeyID(key.Public()) }

// publicKeyID is the RFC 7638 thumbprint of pub, base64url.
func publicKeyID(pub crypto.PublicKey) (string, error) {
	jwk := jose.JSONWebKey{Key: pub}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// LoadKeys loads the keys the configuration names. When generate is true a key that is not
// configured is generated (demo); otherwise it is an error.
func LoadKeys(cfg *Config, generate bool) (*KeyRing, error) {
	s := cfg.Keys.Signing
	var signing crypto.Signer
	var err error
	switch {
	case s.given():
		signing, err = loadKey(s.KeySource, s.Alg)
	case generate:
		signing, err = dpop.GenerateKey(s.Alg)
	default:
		err = errors.New("no private key configured")
	}
	if err != nil {
		return nil, fmt.Errorf("keys.signing: %w", err)
	}
	k, err := NewKeyRing(signing, s.Alg)
	if err != nil {
		return nil, fmt.Errorf("keys.signing: %w", err)
	}
	for i, p := range cfg.Keys.PreviousSigning {
		key, err := loadKey(p.KeySource, p.Alg)
		if err == nil {
			err = k.AddPrevious(key, p.Alg)
		}
		if err != nil {
			return nil, fmt.Errorf("keys.previous_signing[%d]: %w", i, err)
		}
	}
	// Every configured DPoP key is loaded, used or not, so that the management API can turn
	// DPoP on for any alg it has a key for; generate adds the fast key types (ES256,
	// Ed25519) and RSA only when a configured connection needs it.
	algs := []string{"ES256", "Ed25519", "RS256"}
	for _, cc := range cfg.Connections {
		algs = append(algs, cc.Options.DPoPSigningAlg)
	}
	used := map[string]bool{}
	for _, cc := range cfg.Connections {
		used[cc.Options.DPoPSigningAlg] = true
	}
	for _, alg := range algs {
		if alg == "" || k.DPoP[alg] != nil {
			continue
		}
		name := DPoPKeyName(alg)
		src := cfg.Keys.DPoP.byName(name)
		var key crypto.Signer
		switch {
		case src.given():
			key, err = loadKey(src, alg)
		case generate && (used[alg] || name != "rsa"):
			key, err = dpop.GenerateKey(alg)
		case !used[alg]:
			continue
		default:
			err = errors.New("no private key configured")
		}
		if err != nil {
			return nil, fmt.Errorf("keys.dpop.%s: %w", name, err)
		}
		if err := k.AddDPoPKey(key); err != nil {
			return nil, fmt.Errorf("keys.dpop.%s: %w", name, err)
		}
	}
	if err := loadClientAuthKeys(cfg, k, generate); err != nil {
		return nil, err
	}
	return k, nil
}

// NewKeyRing returns a KeyRing with the given signing key (alg RS256 or ES256) and no DPoP keys.
func NewKeyRing(signing crypto.Signer, alg string) (*KeyRing, error) {
	if !signingKeyFits(signing, alg) {
		return nil, fmt.Errorf("key does not fit signing alg %s (RS256 needs RSA ≥ 2048 bits, ES256 a P-256 key)", alg)
	}
	kid, err := keyID(signing)
	if err != nil {
		return nil, err
	}
	return &KeyRing{
		Signing: signing, SigningAlg: jose.SignatureAlgorithm(alg), KID: kid,
		DPoP: map[string]*dpop.Signer{},
	}, nil
}

// AddDPoPKey adds DPoP signers for every connection alg the key can serve: ES256 for P-256,
// Ed25519 (wire label EdDSA) for Ed25519, RS256 and PS256 for RSA.
func (k *KeyRing) AddDPoPKey(key crypto.Signer) error {
	labels := map[string]string{"ES256": "ES256", "Ed25519": "EdDSA", "RS256": "RS256", "PS256": "PS256"}
	added := false
	for _, alg := range connectionDPoPAlgs {
		if !dpop.KeyAlgFits(key, alg) {
			continue
		}
		s, err := dpop.NewSigner(key, labels[alg])
		if err != nil {
			return fmt.Errorf("dpop signer %s: %w", alg, err)
		}
		k.DPoP[alg] = s
		added = true
	}
	if !added {
		return errors.New("key type fits no DPoP algorithm")
	}
	return nil
}

// JWKS returns the public signing keys (use sig, alg, kid): the current one first, then the
// previous ones.
func (k *KeyRing) JWKS() jose.JSONWebKeySet {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key: k.Signing.Public(), KeyID: k.KID, Algorithm: string(k.SigningAlg), Use: "sig",
	}}}
	for _, p := range k.Previous {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: p.Key.Public(), KeyID: p.KID, Algorithm: string(p.Alg), Use: "sig"})
	}
	return set
}

// Signer returns a go-jose signer for tokens of type typ.
func (k *KeyRing) Signer(typ string) (jose.Signer, error) {
	opts := (&jose.SignerOptions{}).WithType(jose.ContentType(typ)).WithHeader("kid", k.KID)
	return jose.NewSigner(jose.SigningKey{Algorithm: k.SigningAlg, Key: k.Signing}, opts)
}

func signingKeyFits(key crypto.Signer, alg string) bool {
	switch alg {
	case "RS256":
		pub, ok := key.Public().(*rsa.PublicKey)
		return ok && pub.N.BitLen() >= 2048
	case "ES256":
		pub, ok := key.Public().(*ecdsa.PublicKey)
		return ok && pub.Curve == elliptic.P256()
	}
	return false
}

// loadKey reads a PEM private key from a file or an environment variable and checks that it
// fits alg (a signing alg RS256/ES256 or a connection DPoP alg).
func loadKey(src KeySource, alg string) (crypto.Signer, error) {
	var data []byte
	switch {
	case src.PrivateKeyFile != "" && src.PrivateKeyEnv != "":
		return nil, errors.New("set only one of private_key_file and private_key_env")
	case src.PrivateKeyFile != "":
		b, err := os.ReadFile(src.PrivateKeyFile)
		if err != nil {
			return nil, fmt.Errorf("cannot read %s: %w", src.PrivateKeyFile, errors.Unwrap(err))
		}
		data = b
	default:
		v := os.Getenv(src.PrivateKeyEnv)
		if v == "" {
			return nil, errors.New(unsetEnvReason(src.PrivateKeyEnv))
		}
		data = []byte(v)
	}
	key, err := dpop.ParsePrivateKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("not a PEM private key: %w", err)
	}
	if !signingKeyFits(key, alg) && !dpop.KeyAlgFits(key, alg) {
		return nil, fmt.Errorf("the key does not fit alg %s", alg)
	}
	return key, nil
}
