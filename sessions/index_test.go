package sessions

import (
	"crypto/sha256"
	"encoding/base64"
	"testing"
	"time"
)

// The index operations themselves are checked on every backend by the conformance suite
// (sessions/storetest); this file checks the index id and the expiry rounding.

func TestIndexIDIsAHashTagOfItsOwn(t *testing.T) {
	sum := sha256.Sum256([]byte("user\x00alice"))
	for _, tc := range []struct {
		name  string
		parts []string
		want  string
	}{
		{name: "parts joined by NUL", parts: []string{"user", "alice"}, want: base64.RawURLEncoding.EncodeToString(sum[:])},
		{name: "no parts", parts: nil, want: "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := IndexID(tc.parts...)
			if id != tc.want {
				t.Fatalf("IndexID(%q) = %q, want %q", tc.parts, id, tc.want)
			}
			if len(id) != 43 {
				t.Fatalf("IndexID length %d, want 43", len(id))
			}
			if err := checkID(id); err != nil {
				t.Fatalf("IndexID %q is not a valid id: %v", id, err)
			}
			if tag, rest := splitTag(id); tag != id || rest != "" {
				t.Fatalf("IndexID %q splits into tag %q and %q, want the whole id as its tag", id, tag, rest)
			}
		})
	}
	// The separator keeps the parts apart.
	seen := map[string][]string{}
	for _, parts := range [][]string{{"user", "alice"}, {"useralice"}, {"user", "alice", ""}, {"alice", "user"}, {"user", "alic", "e"}} {
		id := IndexID(parts...)
		if other, dup := seen[id]; dup {
			t.Fatalf("IndexID(%q) = IndexID(%q)", parts, other)
		}
		seen[id] = parts
	}
}

func TestIndexExpiryRoundsUpToTheMillisecond(t *testing.T) {
	base := time.UnixMilli(1_700_000_000_000)
	for _, tc := range []struct {
		name string
		t    time.Time
		want int64
	}{
		{name: "whole millisecond", t: base, want: base.UnixMilli()},
		{name: "one nanosecond past", t: base.Add(time.Nanosecond), want: base.UnixMilli() + 1},
		{name: "just below the next", t: base.Add(time.Millisecond - time.Nanosecond), want: base.UnixMilli() + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ceilMilli(tc.t); got != tc.want {
				t.Fatalf("ceilMilli = %d, want %d", got, tc.want)
			}
		})
	}
}
