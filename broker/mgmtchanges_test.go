package broker

import (
	"reflect"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
)

func TestFieldChangesListWhatChangedWithoutSecrets(t *testing.T) {
	conn := func(alg, secret string) config.Connection {
		return config.Connection{Name: "corp", Strategy: "oidc", Options: config.ConnectionOptions{
			Issuer: "https://idp.example", ClientID: "broker", ClientSecret: secret, DPoPSigningAlg: alg}}
	}
	tests := []struct {
		name          string
		before, after any
		want          []any
	}{
		{name: "nothing changed", before: conn("ES256", "s1"), after: conn("ES256", "s1")},
		{name: "DPoP turned off", before: conn("ES256", "s1"), after: conn("", "s1"),
			want: []any{map[string]any{"field": "options.dpop_signing_alg", "from": "ES256"}}},
		{name: "DPoP alg changed", before: conn("ES256", "s1"), after: conn("RS256", "s1"),
			want: []any{map[string]any{"field": "options.dpop_signing_alg", "from": "ES256", "to": "RS256"}}},
		{name: "a secret is only changed", before: conn("ES256", "old-secret-value"), after: conn("ES256", "new-secret-value"),
			want: []any{map[string]any{"field": "options.client_secret", "changed": true}}},
		{name: "nested maps and lists", before: map[string]any{"a": map[string]any{"b": []any{"x"}}}, after: map[string]any{"a": map[string]any{"b": []any{"x", "y"}}},
			want: []any{map[string]any{"field": "a.b", "from": `["x"]`, "to": `["x","y"]`}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fieldChanges(tt.before, tt.after)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("fieldChanges = %#v, want %#v", got, tt.want)
			}
		})
	}
	t.Run("bounded", func(t *testing.T) {
		before, after := map[string]any{}, map[string]any{}
		for i := range 100 {
			k := "f" + strings.Repeat("x", i)
			before[k], after[k] = "a", strings.Repeat("b", 1000)
		}
		got := fieldChanges(before, after)
		if len(got) != maxRecordedChanges+1 || got[maxRecordedChanges].(map[string]any)["more"] != 100-maxRecordedChanges {
			t.Fatalf("%d changes recorded, want %d and a count of the rest", len(got), maxRecordedChanges+1)
		}
		if to := got[0].(map[string]any)["to"].(string); len(to) > maxChangeValue+4 {
			t.Errorf("a value of %d bytes was recorded", len(to))
		}
	})
}
