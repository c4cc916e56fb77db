package sessions

import (
	"fmt"
	"testing"
	"time"
)

// The conformance suite runs from package sessions_test (suite_test.go); this file checks the
// memory backend's internals.

func TestKey(t *testing.T) {
	tests := []struct {
		name, prefix string
		kind         Kind
		id, want     string
	}{
		{"whole id is the tag", "p", KindSession, "abc", "p:sess:{abc}"},
		{"tag before first dot", "dpop-broker", KindCode, "abc.def", "dpop-broker:code:{abc}.def"},
		{"only first dot splits", "p", KindTransaction, "a.b.c", "p:tx:{a}.b.c"},
		{"trailing dot kept", "p", KindJTI, "a.", "p:jti:{a}."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Key(tc.prefix, tc.kind, tc.id); got != tc.want {
				t.Fatalf("Key(%q, %q, %q) = %q, want %q", tc.prefix, tc.kind, tc.id, got, tc.want)
			}
		})
	}
}

func TestMemorySweep(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	m := NewMemory().(*memory)
	m.now = func() time.Time { return now }
	ctx := t.Context()
	for i := range 100 {
		if err := m.Put(ctx, KindJTI, fmt.Sprint("old", i), []byte("v"), time.Second); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(2 * time.Second)
	for i := range 2 * minSweep {
		if err := m.Put(ctx, KindJTI, fmt.Sprint("new", i), []byte("v"), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	m.mu.Lock()
	n := len(m.recs)
	m.mu.Unlock()
	if n != 2*minSweep {
		t.Fatalf("after sweep %d records held, want %d live ones", n, 2*minSweep)
	}
}

func TestMemoryClosed(t *testing.T) {
	m := NewMemory()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := m.Ping(t.Context()); err == nil {
		t.Fatal("Ping after Close succeeded")
	}
}
