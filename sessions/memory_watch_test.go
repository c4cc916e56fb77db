package sessions_test

import (
	"errors"
	"testing"

	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/sessions/storetest"
)

// TestMemoryWatchEndsWhenTheStoreCloses: a watch of the memory store reports every write
// before the write returns, and closing the store ends it.
func TestMemoryWatchEndsWhenTheStoreCloses(t *testing.T) {
	s := sessions.NewMemory()
	w := storetest.StartWatch(t, s)
	w.Next(t, "the first change", storetest.Changed)
	if err := s.(sessions.Connections).CreateConnection(t.Context(), "con_m", "m", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	v, err := s.(sessions.Connections).ConnectionsVersion(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if e := w.Next(t, "the write", storetest.Changed); e.Version != v || v == 0 || !e.Through.Equal(sessions.Forever) {
		t.Fatalf("write reported as %+v, want version %d vouched for ever", e, v)
	}
	_ = s.Close()
	if err := w.Wait(t); !errors.Is(err, sessions.ErrUnavailable) {
		t.Errorf("watch of a closed store ended with %v, want ErrUnavailable", err)
	}
}
