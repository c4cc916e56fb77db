package sessions_test

import (
	"testing"

	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/sessions/storetest"
)

func TestMemoryConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) sessions.Store {
		s := sessions.NewMemory()
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}
