package upstream

import (
	"slices"
	"testing"
)

func TestIdentityDigestChangesWithEveryOptionThatDecidesTheUser(t *testing.T) {
	base := Config{Name: "corp", Strategy: "oidc", Issuer: "https://idp.example", ClientID: "broker", ClientSecret: "s",
		Scopes: []string{"openid", "email", "profile"}, MappingMode: "bind_all", Attributes: map[string]string{"a": "x", "b": "y"}}
	id, err := identityOf(base)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		change func(*Config)
		want   []string // the options Differences names; none = the same digest
	}{
		{name: "the scopes in another order", change: func(c *Config) { c.Scopes = []string{"profile", "openid", "email"} }},
		{name: "another client secret", change: func(c *Config) { c.ClientSecret = "other" }},
		{name: "another client", change: func(c *Config) { c.ClientID = "attackers-app" }, want: []string{"options.client_id"}},
		{name: "another scope", change: func(c *Config) { c.Scopes = append(c.Scopes, "groups") }, want: []string{"options.scope"}},
		{name: "userinfo fetched", change: func(c *Config) { c.FetchUserinfo = true }, want: []string{"options.fetch_userinfo"}},
		{name: "an upstream parameter", change: func(c *Config) { c.UpstreamParams = map[string]string{"acr_values": "low"} }, want: []string{"options.upstream_params"}},
		{name: "an attribute filled otherwise", change: func(c *Config) { c.Attributes = map[string]string{"a": "x", "b": "z"} }, want: []string{"options.attribute_map"}},
		{name: "another mapping mode", change: func(c *Config) { c.MappingMode = "use_map" }, want: []string{"options.attribute_map"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			c.Scopes, c.Attributes = slices.Clone(base.Scopes), map[string]string{"b": "y", "a": "x"}
			tt.change(&c)
			got, err := identityOf(c)
			if err != nil {
				t.Fatal(err)
			}
			if d := id.Differences(got); !slices.Equal(d, tt.want) {
				t.Errorf("Differences = %v, want %v", d, tt.want)
			}
			if same := got.Digest() == id.Digest(); same != (len(tt.want) == 0) {
				t.Errorf("the digest unchanged: %v, want %v", same, len(tt.want) == 0)
			}
		})
	}
}

// identityOf is the Identity of cfg normalized as New normalizes it.
func identityOf(cfg Config) (Identity, error) {
	n, err := Normalized(cfg)
	return n.Identity(), err
}

// TestALoginRecordsTheDigestOfItsConnectionsIdentity: every login of a connection records the
// digest of the identity options it was built with (made once, by New), and a connection built
// with other options records another.
func TestALoginRecordsTheDigestOfItsConnectionsIdentity(t *testing.T) {
	f := newFakeIdP(t, nil)
	c := newConn(t, f, nil, nil)
	want, err := identityOf(c.Config())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		res, err := login(t, c, f)
		if err != nil {
			t.Fatalf("login %d: %v", i, err)
		}
		if res.IdentityDigest == "" || res.IdentityDigest != want.Digest() {
			t.Fatalf("login %d recorded the identity digest %q, want %q", i, res.IdentityDigest, want.Digest())
		}
	}
	other := newConn(t, f, func(cfg *Config) { cfg.FetchUserinfo = true }, nil)
	res, err := login(t, other, f)
	if err != nil {
		t.Fatal(err)
	}
	if res.IdentityDigest == want.Digest() {
		t.Errorf("a connection that fetches userinfo records the same identity digest %q", res.IdentityDigest)
	}
}
