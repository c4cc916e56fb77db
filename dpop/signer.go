package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
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

// MinRSABits is the smallest RSA modulus accepted for RS256/PS256.
const MinRSABits = 2048

var b64 = base64.RawURLEncoding

// Signer makes DPoP proofs with one private key. It is safe for concurrent use.
//
// The compact JWS is assembled here: the protected header (typ, alg, public jwk) is encoded
// once in NewSigner, so a proof costs one small claims JSON and one signature. go-jose
// serialises the JWK and computes the RFC 7638 thumbprint.
type Signer struct {
	key        crypto.Signer
	alg        string
	header     string // base64url(protected header JSON), ends without '.'
	thumbprint string
	signOpts   crypto.SignerOpts
}

type proofHeader struct {
	Typ string          `json:"typ"`
	Alg string          `json:"alg"`
	JWK json.RawMessage `json:"jwk"`
}

type proofClaims struct {
	JTI   string `json:"jti"`
	HTM   string `json:"htm"`
	HTU   string `json:"htu"`
	IAT   int64  `json:"iat"`
	Nonce string `json:"nonce,omitempty"`
	ATH   string `json:"ath,omitempty"`
}

// NewSigner returns a signer for key under the JOSE alg label alg ("ES256", "EdDSA",
// "Ed25519", "RS256", "PS256"). The key type must fit the alg (P-256 for ES256, Ed25519 for
// EdDSA/Ed25519, RSA ≥ 2048 bits for RS256/PS256).
func NewSigner(key crypto.Signer, alg string) (*Signer, error) {
	if key == nil {
		return nil, errors.New("dpop: nil key")
	}
	var opts crypto.SignerOpts
	switch alg {
	case AlgES256, AlgRS256:
		opts = crypto.SHA256
	case AlgPS256:
		opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
	case AlgEdDSA, AlgEd25519:
		opts = crypto.Hash(0)
	default:
		return nil, fmt.Errorf("dpop: unsupported alg %q", alg)
	}
	if !KeyAlgFits(key, alg) {
		return nil, fmt.Errorf("dpop: key type %T does not fit alg %s", key.Public(), alg)
	}
	pub := key.Public()
	jwk, err := json.Marshal(jose.JSONWebKey{Key: pub})
	if err != nil {
		return nil, fmt.Errorf("dpop: encode jwk: %w", err)
	}
	hdr, err := json.Marshal(proofHeader{Typ: "dpop+jwt", Alg: alg, JWK: jwk})
	if err != nil {
		return nil, fmt.Errorf("dpop: encode header: %w", err)
	}
	tp, err := Thumbprint(pub)
	if err != nil {
		return nil, err
	}
	return &Signer{key: key, alg: alg, header: b64.EncodeToString(hdr), thumbprint: tp, signOpts: opts}, nil
}

// WithAlg returns a signer sharing the key but labelled alg on the wire (EdDSA ↔ Ed25519).
func (s *Signer) WithAlg(alg string) (*Signer, error) {
	if alg == s.alg {
		return s, nil
	}
	return NewSigner(s.key, alg)
}

// Alg returns the JOSE alg label of the proofs.
func (s *Signer) Alg() string { return s.alg }

// Thumbprint returns the RFC 7638 SHA-256 thumbprint (base64url, unpadded) of the public key.
func (s *Signer) Thumbprint() string { return s.thumbprint }

// PublicKey returns the signer's public key.
func (s *Signer) PublicKey() crypto.PublicKey { return s.key.Public() }

// Thumbprint returns the RFC 7638 SHA-256 JWK thumbprint (base64url, unpadded) of pub, a
// public key (*ecdsa.PublicKey, ed25519.PublicKey, *rsa.PublicKey). This is the value of
// dpop_jkt and of an access token's cnf.jkt.
func Thumbprint(pub crypto.PublicKey) (string, error) {
	k := jose.JSONWebKey{Key: pub}
	sum, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("dpop: jwk thumbprint: %w", err)
	}
	return b64.EncodeToString(sum), nil
}

// HTU returns the htu claim value for rawURL: the absolute URL without query and fragment
// (RFC 9449 §4.2).
func HTU(rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("dpop: htu: %w", err)
	}
	return htuOf(u)
}

func htuOf(u *url.URL) (string, error) {
	if u.Scheme == "" || u.Host == "" {
		return "", errors.New("dpop: htu: URL must be absolute")
	}
	c := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	return c.String(), nil
}

// ATH returns the ath claim for an access token: base64url(SHA-256(token)).
func ATH(accessToken string) string {
	sum := sha256.Sum256([]byte(accessToken))
	return b64.EncodeToString(sum[:])
}

// Proof returns a signed proof JWT for one request: header typ dpop+jwt, alg, public jwk;
// claims jti (random, 128 bits), htm=method, htu=url without query and fragment, iat=now,
// nonce when non-empty, ath=base64url(SHA-256(accessToken)) when accessToken is non-empty.
// A zero now means time.Now().
func (s *Signer) Proof(method, url, nonce, accessToken string, now time.Time) (string, error) {
	htu, err := HTU(url)
	if err != nil {
		return "", err
	}
	return s.proof(method, htu, nonce, accessToken, now)
}

// proof signs with an htu that is already stripped.
func (s *Signer) proof(method, htu, nonce, accessToken string, now time.Time) (string, error) {
	if method == "" {
		return "", errors.New("dpop: empty method")
	}
	if now.IsZero() {
		now = time.Now()
	}
	var jti [16]byte
	_, _ = rand.Read(jti[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	c := proofClaims{JTI: b64.EncodeToString(jti[:]), HTM: method, HTU: htu, IAT: now.Unix(), Nonce: nonce}
	if accessToken != "" {
		c.ATH = ATH(accessToken)
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("dpop: encode claims: %w", err)
	}
	hl := len(s.header)
	pl := b64.EncodedLen(len(payload))
	buf := make([]byte, 0, hl+1+pl+1+b64.EncodedLen(512))
	buf = append(buf, s.header...)
	buf = append(buf, '.')
	buf = b64.AppendEncode(buf, payload)
	sig, err := s.sign(buf)
	if err != nil {
		return "", err
	}
	buf = append(buf, '.')
	buf = b64.AppendEncode(buf, sig)
	return string(buf), nil
}

// sign returns the JWS signature over the signing input.
func (s *Signer) sign(input []byte) ([]byte, error) {
	if s.signOpts.HashFunc() == 0 { // Ed25519 signs the message itself
		sig, err := s.key.Sign(rand.Reader, input, s.signOpts)
		if err != nil {
			return nil, fmt.Errorf("dpop: sign %s: %w", s.alg, err)
		}
		return sig, nil
	}
	digest := sha256.Sum256(input)
	sig, err := s.key.Sign(rand.Reader, digest[:], s.signOpts)
	if err != nil {
		return nil, fmt.Errorf("dpop: sign %s: %w", s.alg, err)
	}
	if s.alg != AlgES256 {
		return sig, nil
	}
	// crypto.Signer gives ASN.1 DER; JWS wants the fixed-size R || S (RFC 7518 §3.4).
	var rs struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(sig, &rs)
	if err != nil || len(rest) != 0 || rs.R == nil || rs.S == nil || rs.R.Sign() <= 0 || rs.S.Sign() <= 0 {
		return nil, fmt.Errorf("dpop: sign ES256: malformed ECDSA signature")
	}
	if rs.R.BitLen() > 256 || rs.S.BitLen() > 256 {
		return nil, fmt.Errorf("dpop: sign ES256: signature out of range")
	}
	out := make([]byte, 64)
	rs.R.FillBytes(out[:32])
	rs.S.FillBytes(out[32:])
	return out, nil
}

// GenerateKey returns a fresh private key for a configuration alg name (ES256, Ed25519/EdDSA,
// RS256/PS256 → RSA-2048).
func GenerateKey(alg string) (crypto.Signer, error) {
	switch alg {
	case AlgES256:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("dpop: generate P-256 key: %w", err)
		}
		return k, nil
	case AlgEd25519, AlgEdDSA:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("dpop: generate Ed25519 key: %w", err)
		}
		return k, nil
	case AlgRS256, AlgPS256:
		k, err := rsa.GenerateKey(rand.Reader, MinRSABits)
		if err != nil {
			return nil, fmt.Errorf("dpop: generate RSA key: %w", err)
		}
		return k, nil
	default:
		return nil, fmt.Errorf("dpop: unsupported alg %q", alg)
	}
}

// ParsePrivateKeyPEM parses a PKCS#8, SEC1 ("EC PRIVATE KEY") or PKCS#1 PEM private key.
// Blocks that are not private keys (e.g. "EC PARAMETERS") are skipped; the first private key
// is returned. Encrypted keys are rejected.
func ParsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	for rest := data; len(rest) > 0; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if !strings.HasSuffix(block.Type, "PRIVATE KEY") {
			continue
		}
		if _, enc := block.Headers["Proc-Type"]; enc || block.Type == "ENCRYPTED PRIVATE KEY" {
			return nil, errors.New("dpop: encrypted PEM private keys are not supported")
		}
		var (
			k   any
			err error
		)
		switch block.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			return nil, fmt.Errorf("dpop: unsupported PEM block %q", block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("dpop: parse %s: %w", block.Type, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("dpop: %T cannot sign", k)
		}
		return s, nil
	}
	return nil, errors.New("dpop: no PEM private key found")
}

// MarshalPrivateKeyPEM encodes key as PKCS#8 PEM.
func MarshalPrivateKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("dpop: marshal PKCS#8: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// KeyAlgFits reports whether key can sign for the configuration alg name.
func KeyAlgFits(key crypto.Signer, alg string) bool {
	if key == nil {
		return false
	}
	switch pub := key.Public().(type) {
	case *ecdsa.PublicKey:
		return alg == AlgES256 && pub.Curve == elliptic.P256()
	case ed25519.PublicKey:
		return (alg == AlgEdDSA || alg == AlgEd25519) && len(pub) == ed25519.PublicKeySize
	case *rsa.PublicKey:
		return (alg == AlgRS256 || alg == AlgPS256) && pub.N.BitLen() >= MinRSABits
	default:
		return false
	}
}
