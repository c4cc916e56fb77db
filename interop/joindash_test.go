package interop

import (
	"slices"
	"testing"
)

// TestNodeArgsWithValuesStartingWithADashAreJoined: a flag's value that starts with '-' (a
// generated secret) reaches the Node peer as --flag=value, which parseArgs accepts.
func TestNodeArgsWithValuesStartingWithADashAreJoined(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []string
		want []string
	}{
		{name: "dash value joined", in: []string{"--client-secret", "-abc", "--port", "0"}, want: []string{"--client-secret=-abc", "--port", "0"}},
		{name: "plain values kept", in: []string{"--client-id", "x", "--client-secret", "y"}, want: []string{"--client-id", "x", "--client-secret", "y"}},
		{name: "next flag not taken as a value", in: []string{"--require-par", "--port", "0"}, want: []string{"--require-par", "--port", "0"}},
	} {
		if got := joinDashValues(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
