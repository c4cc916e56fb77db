package broker

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// Refresh tokens and their families.
//
// A refresh token is "FAMILY.SECRET": FAMILY is the 22-character grant tag of the code the
// family was minted from (codereuse.go; one family per code), SECRET 43
// characters of base64url over 32 bytes:
//
//	gen (4 bytes, big endian) || nonce (12 random bytes) || MAC (16 bytes)
//	MAC = HMAC-SHA256(family key, label || FAMILY || gen || nonce)[:16]
//
// A family is one record whatever the number of rotations, KindRefresh "FAMILY.family"
// (refreshFamily): the random family key, the owning client, the generation of the live
// token, the SHA-256 of its secret and its grant. A rotation replaces that record in one
// conditional write (Store.Swap), so the store holds the same number of records however
// often a family is refreshed. Whether a presented token is one the family minted is a MAC
// check with the family key (constant space): a MAC-valid token of an earlier generation is
// a retired token of the family (reuse, RFC 9700 §4.14.2); a live token must also match the
// stored hash, so the key in the store alone does not give the live token (its nonce is
// unknown). A secret the family never minted (someone who knows only the 22-character
// prefix) fails the MAC and changes nothing.
//
// Families stored before this format ("legacy": no key) keep working: the live token has its
// own record "FAMILY.<hash of SECRET>" and every token the family minted an issued marker
// "FAMILY.issued.<hash>". Their live token's next rotation converts the family (one Swap that
// writes the new family record and deletes the legacy live record); the converted family
// still consults the issued markers, which expire with the family, for tokens that fail the
// MAC, so reuse of a token minted before the upgrade is still detected.

// refreshRecord is the grant of a family's live token.
type refreshRecord struct {
	ClientID string `json:"client_id"`
	UserID   string `json:"user_id"`
	SID      string `json:"sid"`
	Scope    string `json:"scope"`
	Audience string `json:"audience,omitempty"`
	JKT      string `json:"jkt,omitempty"` // public clients: bound proof key (RFC 9449 §5)
	AuthTime int64  `json:"auth_time"`
	Expires  int64  `json:"exp"` // unix ms, absolute for the whole family
}

// refreshFamily is the record of one refresh-token family.
type refreshFamily struct {
	// Current is the base64url SHA-256 of the live token's secret.
	Current string `json:"current"`
	// ClientID owns the family; empty in families stored before it existed (never revoked
	// by reuse).
	ClientID string `json:"client_id,omitempty"`
	// Key (base64url, 32 random bytes) MACs every token the family mints; empty in a
	// legacy family.
	Key string `json:"key,omitempty"`
	// Gen is the generation of the live token; tokens of lower generations are retired.
	Gen uint32 `json:"gen,omitempty"`
	// Token is the live token's grant (a legacy family keeps it in its own record).
	Token *refreshRecord `json:"token,omitempty"`
	// Legacy marks a family converted from the legacy format: the tokens it minted before
	// have issued markers.
	Legacy bool `json:"legacy,omitempty"`
}

const (
	familySuffix = ".family"
	issuedInfix  = ".issued." // legacy: FAMILY.issued.<hash>, a token the family minted

	refreshSecretLen = 32 // bytes: gen 4, nonce 12, MAC 16
	refreshMACLabel  = "dpop-broker refresh token\x00"
)

// splitRefreshToken returns the family and secret of a well-formed token.
func splitRefreshToken(tok string) (fam, secret string, ok bool) {
	fam, secret, found := strings.Cut(tok, ".")
	if !found || len(fam) != 22 || len(secret) != 43 || !b64url(fam) || !b64url(secret) {
		return "", "", false
	}
	return fam, secret, true
}

func b64url(s string) bool {
	return !strings.ContainsFunc(s, func(c rune) bool {
		return !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_')
	})
}

// refreshMAC is the MAC of a secret's gen||nonce under the family key.
func refreshMAC(key []byte, fam string, head []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(refreshMACLabel))
	m.Write([]byte(fam))
	m.Write(head)
	return m.Sum(nil)[:refreshSecretLen-16]
}

// mint makes the live token of generation f.Gen for family fam and records its hash.
func (f *refreshFamily) mint(fam string) (string, error) {
	key, err := base64.RawURLEncoding.DecodeString(f.Key)
	if err != nil || len(key) != 32 {
		return "", errors.New("refresh token family has no valid key")
	}
	b := make([]byte, refreshSecretLen)
	binary.BigEndian.PutUint32(b, f.Gen)
	_, _ = rand.Read(b[4:16]) // never fails (crypto/rand panics on failure)
	copy(b[16:], refreshMAC(key, fam, b[:16]))
	secret := base64.RawURLEncoding.EncodeToString(b)
	f.Current = hashString(secret)
	return fam + "." + secret, nil
}

// minted reports whether secret is a token family fam minted, and its generation.
func (f *refreshFamily) minted(fam, secret string) (uint32, bool) {
	key, err1 := base64.RawURLEncoding.DecodeString(f.Key)
	b, err2 := base64.RawURLEncoding.DecodeString(secret)
	if err1 != nil || err2 != nil || len(key) != 32 || len(b) != refreshSecretLen {
		return 0, false
	}
	if !hmac.Equal(b[16:], refreshMAC(key, fam, b[:16])) {
		return 0, false
	}
	return binary.BigEndian.Uint32(b), true
}

// refreshState is what a presented refresh token is to its family.
type refreshState uint8

const (
	refreshUnknown refreshState = iota // no such family, or a secret it never minted
	refreshLive                        // the family's live token
	refreshRetired                     // a token the family minted and rotated out since
)

// presentedRefresh is a presented refresh token and its family as read from the store.
type presentedRefresh struct {
	fam, secret string
	state       refreshState
	raw         []byte // the family record as read: what a rotation swaps out
	f           refreshFamily
	rec         *refreshRecord // the live token's grant (state refreshLive)
	legacyLive  []byte         // legacy family: the live token's own record as read
}

// lookupRefresh reads the family of tok and tells whether tok is its live token, a retired
// one or neither. A malformed token is refreshUnknown without a store access; err is a store
// failure or a malformed record.
func (s *Server) lookupRefresh(ctx context.Context, tok string) (*presentedRefresh, error) {
	p := &presentedRefresh{}
	fam, secret, ok := splitRefreshToken(tok)
	if !ok {
		return p, nil
	}
	p.fam, p.secret = fam, secret
	raw, err := s.store.Get(ctx, sessions.KindRefresh, fam+familySuffix)
	if errors.Is(err, sessions.ErrNotFound) {
		return p, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(raw, &p.f); err != nil {
		return nil, fmt.Errorf("malformed refresh token family: %w", err)
	}
	p.raw = raw
	hash := hashString(secret)
	if p.f.Key == "" {
		return p, s.lookupLegacyRefresh(ctx, p, hash)
	}
	gen, ok := p.f.minted(fam, secret)
	switch {
	case ok && gen == p.f.Gen && p.f.Token != nil && subtle.ConstantTimeCompare([]byte(hash), []byte(p.f.Current)) == 1:
		p.state, p.rec = refreshLive, p.f.Token
	case ok && gen < p.f.Gen:
		p.state = refreshRetired
	case !ok && p.f.Legacy:
		return p, s.lookupIssued(ctx, p, hash)
	}
	return p, nil
}

// lookupLegacyRefresh places a token of a legacy family: its live record, else its issued
// marker.
func (s *Server) lookupLegacyRefresh(ctx context.Context, p *presentedRefresh, hash string) error {
	if subtle.ConstantTimeCompare([]byte(hash), []byte(p.f.Current)) != 1 {
		return s.lookupIssued(ctx, p, hash)
	}
	raw, err := s.store.Get(ctx, sessions.KindRefresh, p.fam+"."+hash)
	if errors.Is(err, sessions.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	var rec refreshRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return fmt.Errorf("malformed refresh record: %w", err)
	}
	p.state, p.rec, p.legacyLive = refreshLive, &rec, raw
	return nil
}

// lookupIssued marks the token retired when the legacy family minted it (issued marker).
func (s *Server) lookupIssued(ctx context.Context, p *presentedRefresh, hash string) error {
	_, err := s.store.Get(ctx, sessions.KindRefresh, p.fam+issuedInfix+hash)
	switch {
	case err == nil:
		p.state = refreshRetired
	case !errors.Is(err, sessions.ErrNotFound):
		return err
	}
	return nil
}

// newFamily starts the refresh-token family named sid (the grant tag of its code) for rec (a fresh absolute
// expiry) and returns its record, for the code claim to write, and its first token.
func (s *Server) newFamily(sid string, rec refreshRecord) (sessions.Item, string, error) {
	now := s.now()
	rec.Expires = now.Add(s.cfg.Lifetimes.RefreshToken).UnixMilli()
	f := refreshFamily{ClientID: rec.ClientID, Key: randomString(32), Token: &rec}
	tok, err := f.mint(sid)
	if err != nil {
		return sessions.Item{}, "", err
	}
	v, err := json.Marshal(f)
	if err != nil {
		return sessions.Item{}, "", fmt.Errorf("encode refresh token family: %w", err)
	}
	return sessions.Item{Kind: sessions.KindRefresh, ID: sid + familySuffix, Value: v, TTL: time.UnixMilli(rec.Expires).Sub(now)}, tok, nil
}

// next is the family record of p's next generation, with its live token; a legacy family
// gets its key here.
func (p *presentedRefresh) next() ([]byte, string, error) {
	f := p.f
	switch {
	case f.Key == "":
		f.Key, f.Gen, f.Legacy = randomString(32), 0, true
	case f.Gen == math.MaxUint32:
		return nil, "", errors.New("refresh token family has no generation left")
	default:
		f.Gen++
	}
	rec := *p.rec
	f.Token = &rec
	if f.ClientID == "" {
		f.ClientID = rec.ClientID
	}
	tok, err := f.mint(p.fam)
	if err != nil {
		return nil, "", err
	}
	v, err := json.Marshal(f)
	if err != nil {
		return nil, "", fmt.Errorf("encode refresh token family: %w", err)
	}
	return v, tok, nil
}

// revokeFamily deletes a family (and a legacy family's live record); false when the family
// does not exist. Deleting the record makes every rotation in flight fail (its Swap finds
// the record gone).
func (s *Server) revokeFamily(ctx context.Context, fam string) (bool, error) {
	raw, err := s.store.Take(ctx, sessions.KindRefresh, fam+familySuffix)
	if errors.Is(err, sessions.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var f refreshFamily
	if json.Unmarshal(raw, &f) == nil && f.Key == "" && f.Current != "" {
		if err := s.store.Delete(ctx, sessions.KindRefresh, fam+"."+f.Current); err != nil {
			return true, err
		}
	}
	return true, nil
}
