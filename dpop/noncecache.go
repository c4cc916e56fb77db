package dpop

import (
	"sync"
	"time"
)

// Bounds of the in-memory NonceCache (NewNonceCache).
const (
	// DefaultNonceMaxAge is how long a remembered DPoP-Nonce is sent: a nonce that no response
	// has repeated or replaced for this long is forgotten, so the next proof goes without one
	// (a server that still wants nonces answers use_dpop_nonce with a fresh one). Servers
	// rotate nonces within minutes (RFC 9449 §8), so an older one is stale anyway.
	DefaultNonceMaxAge = 5 * time.Minute
	// DefaultNonceMaxEntries bounds the servers remembered. Keys come from request URLs (origin
	// and role), so the bound holds whatever URLs the caller uses; the oldest entry goes first.
	DefaultNonceMaxEntries = 1024
	// MaxNonceLength is the longest DPoP-Nonce the Transport remembers and sends; a longer one
	// (or one with characters outside RFC 9449 §8.1 NQCHAR) is ignored as if absent.
	MaxNonceLength = 1024
)

// NonceCacheOptions bound an in-memory NonceCache; zero values take the defaults.
type NonceCacheOptions struct {
	MaxAge     time.Duration    // default DefaultNonceMaxAge
	MaxEntries int              // default DefaultNonceMaxEntries
	Now        func() time.Time // default time.Now
}

// NonceDropper is implemented by a NonceCache that can forget a nonce atomically: DropNonce
// removes key only while it still holds nonce, so a newer nonce stored meanwhile (by a
// concurrent request) survives. The Transport uses it when a server rejects a proof that
// carried a remembered nonce; without it the Transport compares and clears with Nonce/SetNonce.
type NonceDropper interface {
	DropNonce(key, nonce string)
}

// NewNonceCache returns an in-memory, concurrency-safe NonceCache with the default bounds.
func NewNonceCache() NonceCache { return NewNonceCacheWith(NonceCacheOptions{}) }

// NewNonceCacheWith returns an in-memory, concurrency-safe NonceCache: a nonce is returned for
// at most MaxAge after it was last stored, and at most MaxEntries keys are kept.
func NewNonceCacheWith(o NonceCacheOptions) NonceCache {
	if o.MaxAge <= 0 {
		o.MaxAge = DefaultNonceMaxAge
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultNonceMaxEntries
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &memNonces{o: o, m: make(map[string]nonceEntry)}
}

type memNonces struct {
	o  NonceCacheOptions
	mu sync.Mutex
	m  map[string]nonceEntry
}

type nonceEntry struct {
	nonce  string
	stored time.Time
}

// expired reports whether e is older than MaxAge at now. A stored time in the future (the
// clock went back) counts as fresh: the entry is replaced by the next response anyway.
func (c *memNonces) expired(e nonceEntry, now time.Time) bool {
	return now.Sub(e.stored) > c.o.MaxAge
}

func (c *memNonces) Nonce(key string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok {
		return ""
	}
	if c.expired(e, c.o.Now()) {
		delete(c.m, key)
		return ""
	}
	return e.nonce
}

func (c *memNonces) SetNonce(key, nonce string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if nonce == "" {
		delete(c.m, key)
		return
	}
	now := c.o.Now()
	if _, ok := c.m[key]; !ok && len(c.m) >= c.o.MaxEntries {
		c.evictLocked(now)
	}
	c.m[key] = nonceEntry{nonce: nonce, stored: now}
}

func (c *memNonces) DropNonce(key, nonce string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[key]; ok && e.nonce == nonce {
		delete(c.m, key)
	}
}

// evictLocked makes room for one entry: expired entries go, else the least recently stored.
func (c *memNonces) evictLocked(now time.Time) {
	oldest, first := "", true
	var oldestAt time.Time
	for k, e := range c.m {
		if c.expired(e, now) {
			delete(c.m, k)
			continue
		}
		if first || e.stored.Before(oldestAt) {
			oldest, oldestAt, first = k, e.stored, false
		}
	}
	if len(c.m) >= c.o.MaxEntries && !first {
		delete(c.m, oldest)
	}
}

// dropNonce forgets nonce under key unless the cache meanwhile holds another one.
func dropNonce(c NonceCache, key, nonce string) {
	if d, ok := c.(NonceDropper); ok {
		d.DropNonce(key, nonce)
		return
	}
	if c.Nonce(key) == nonce {
		c.SetNonce(key, "")
	}
}

// validNonce reports whether n can be sent as a proof's nonce: 1 to MaxNonceLength NQCHARs
// (%x21 / %x23-5B / %x5D-7E, RFC 9449 §8.1).
func validNonce(n string) bool {
	if n == "" || len(n) > MaxNonceLength {
		return false
	}
	for i := 0; i < len(n); i++ {
		if b := n[i]; b < 0x21 || b > 0x7e || b == '"' || b == '\\' {
			return false
		}
	}
	return true
}
