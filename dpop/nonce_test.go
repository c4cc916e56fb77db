package dpop

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestNonceSource(t *testing.T) {
	secret := []byte(strings.Repeat("s", 32))
	var clock atomic.Int64
	clock.Store(vtNow.UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	n, err := NewNonceSource(secret, time.Minute, now)
	if err != nil {
		t.Fatal(err)
	}
	first := n.Nonce()

	t.Run("nonce is stable within a step and valid", func(t *testing.T) {
		if n.Nonce() != first || !n.Valid(first) {
			t.Fatalf("nonce %q unstable or invalid", first)
		}
		if len(first) != 32 {
			t.Fatalf("nonce length %d", len(first))
		}
	})
	t.Run("previous step accepted after rotation", func(t *testing.T) {
		clock.Add(int64(time.Minute))
		if n.Nonce() == first {
			t.Fatal("nonce did not rotate")
		}
		if !n.Valid(first) || !n.Valid(n.Nonce()) {
			t.Fatal("current or previous nonce refused")
		}
	})
	t.Run("two steps old refused", func(t *testing.T) {
		clock.Add(int64(time.Minute))
		if n.Valid(first) {
			t.Fatal("stale nonce accepted")
		}
	})
	t.Run("future step refused", func(t *testing.T) {
		ahead, _ := NewNonceSource(secret, time.Minute, func() time.Time { return now().Add(time.Minute) })
		if n.Valid(ahead.Nonce()) {
			t.Fatal("nonce from the next step accepted")
		}
	})
	t.Run("other secret refused", func(t *testing.T) {
		o, _ := NewNonceSource([]byte(strings.Repeat("o", 32)), time.Minute, now)
		if n.Valid(o.Nonce()) {
			t.Fatal("nonce MACed with another secret accepted")
		}
	})
	t.Run("replicas sharing the secret agree", func(t *testing.T) {
		r, _ := NewNonceSource(secret, time.Minute, now)
		if !r.Valid(n.Nonce()) || r.Nonce() != n.Nonce() {
			t.Fatal("replica disagrees")
		}
	})
	t.Run("malformed nonces refused", func(t *testing.T) {
		cur := n.Nonce()
		flipped := []byte(cur)
		flipped[len(flipped)-1] ^= 1
		for _, bad := range []string{"", "x", cur + "A", cur[:31], string(flipped), strings.Repeat("=", 32)} {
			if n.Valid(bad) {
				t.Errorf("accepted %q", bad)
			}
		}
		var nilSource *NonceSource
		if nilSource.Valid(cur) {
			t.Error("nil source accepted a nonce")
		}
	})
	t.Run("constructor refuses weak settings", func(t *testing.T) {
		if _, err := NewNonceSource(make([]byte, 31), time.Minute, nil); err == nil {
			t.Error("31-byte secret accepted")
		}
		if _, err := NewNonceSource(secret, 0, nil); err == nil {
			t.Error("zero period accepted")
		}
		if s, err := NewNonceSource(secret, time.Minute, nil); err != nil || s.Period() != time.Minute || !s.Valid(s.Nonce()) {
			t.Errorf("default clock: %v", err)
		}
	})
}
