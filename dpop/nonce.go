package dpop

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"time"
)

// MinNonceSecret is the shortest secret NewNonceSource accepts.
const MinNonceSecret = 32

const (
	nonceMACLen = 16
	nonceRawLen = 8 + nonceMACLen
)

// NonceSource issues and checks server nonces (RFC 9449 §8, §9) without shared state: a nonce is
// the current time step MACed with a secret all replicas share, so any replica can check it.
// Nonces rotate every Period; the current and the previous step are accepted.
//
// nonce = base64url(step as 8 big-endian bytes || HMAC-SHA256(secret, step)[:16]).
type NonceSource struct {
	secret []byte
	period time.Duration
	now    func() time.Time
}

// NewNonceSource returns a source for secret (≥ 32 bytes) rotating every period.
func NewNonceSource(secret []byte, period time.Duration, now func() time.Time) (*NonceSource, error) {
	if len(secret) < MinNonceSecret {
		return nil, errors.New("dpop: nonce secret must be at least 32 bytes")
	}
	if period <= 0 {
		return nil, errors.New("dpop: nonce period must be positive")
	}
	if now == nil {
		now = time.Now
	}
	return &NonceSource{secret: append([]byte(nil), secret...), period: period, now: now}, nil
}

// Period returns the rotation period.
func (n *NonceSource) Period() time.Duration { return n.period }

func (n *NonceSource) step() uint64 {
	return uint64(n.now().UnixNano() / int64(n.period))
}

func (n *NonceSource) mac(step uint64, out []byte) []byte {
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], step)
	m := hmac.New(sha256.New, n.secret)
	m.Write(s[:])
	return m.Sum(out)
}

func (n *NonceSource) nonceAt(step uint64) string {
	buf := make([]byte, 8, 8+sha256.Size)
	binary.BigEndian.PutUint64(buf, step)
	buf = n.mac(step, buf)
	return b64.EncodeToString(buf[:nonceRawLen])
}

// Nonce returns the current nonce.
func (n *NonceSource) Nonce() string { return n.nonceAt(n.step()) }

// Valid reports whether nonce is the current or the previous step's nonce.
func (n *NonceSource) Valid(nonce string) bool {
	if n == nil || len(nonce) != b64.EncodedLen(nonceRawLen) {
		return false
	}
	raw, err := b64.Strict().DecodeString(nonce)
	if err != nil || len(raw) != nonceRawLen {
		return false
	}
	step := binary.BigEndian.Uint64(raw[:8])
	cur := n.step()
	if step != cur && step+1 != cur {
		return false
	}
	want := n.mac(step, make([]byte, 0, sha256.Size))
	return subtle.ConstantTimeCompare(raw[8:], want[:nonceMACLen]) == 1
}
