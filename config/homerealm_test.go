package config

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestDomainAliasesAndIconURLAreValidated(t *testing.T) {
	second := func(c *Config) {
		cc := c.Connections[0]
		cc.Name = "second"
		c.Connections = append(c.Connections, cc)
	}
	for _, tc := range []struct {
		name string
		mut  func(*Config)
		want FieldError
	}{
		{name: "wildcard alias", mut: func(c *Config) { c.Connections[0].Options.DomainAliases = []string{"*.corp.example"} },
			want: FieldError{Key: "connections[0].options.domain_aliases[0]", Reason: `"*.corp.example" must be a domain name: labels of letters, digits and '-' (an internationalized domain in its xn-- form), no wildcards`}},
		{name: "single-label alias", mut: func(c *Config) { c.Connections[0].Options.DomainAliases = []string{"corp"} },
			want: FieldError{Key: "connections[0].options.domain_aliases[0]", Reason: `"corp" must be a domain name with at least two labels, such as example.com`}},
		{name: "address as alias", mut: func(c *Config) { c.Connections[0].Options.DomainAliases = []string{"10.0.0.1"} },
			want: FieldError{Key: "connections[0].options.domain_aliases[0]", Reason: `"10.0.0.1" must be a domain name, not an IP address`}},
		{name: "alias listed twice", mut: func(c *Config) { c.Connections[0].Options.DomainAliases = []string{"corp.example", "CORP.example"} },
			want: FieldError{Key: "connections[0].options.domain_aliases[1]", Reason: `"CORP.example" is listed twice (also domain_aliases[0])`}},
		{name: "alias of two connections", mut: func(c *Config) {
			c.Connections[0].Options.DomainAliases = []string{"corp.example"}
			second(c)
			c.Connections[1].Options.DomainAliases = []string{"a.example", "Corp.Example"}
		}, want: FieldError{Key: "connections[1].options.domain_aliases[1]", Reason: `"Corp.Example" is also a domain alias of connections[0] (corp-oidc): an email domain must lead to one connection`}},
		{name: "too many aliases", mut: func(c *Config) {
			c.Connections[0].Options.DomainAliases = make([]string, MaxDomainAliases+1)
		}, want: FieldError{Key: "connections[0].options.domain_aliases", Reason: "must list at most 1000 domains"}},
		{name: "icon over plain http", mut: func(c *Config) { c.Connections[0].Options.IconURL = "http://cdn.example/i.png" },
			want: FieldError{Key: "connections[0].options.icon_url", Reason: `"http://cdn.example/i.png" must use https (plain http only on a loopback host: 127.0.0.1, [::1] or localhost)`}},
		{name: "icon as script", mut: func(c *Config) { c.Connections[0].Options.IconURL = "javascript:alert(1)" },
			want: FieldError{Key: "connections[0].options.icon_url", Reason: `"javascript:alert(1)" must be an absolute https URL`}},
		{name: "icon as data", mut: func(c *Config) { c.Connections[0].Options.IconURL = "data://x/png" },
			want: FieldError{Key: "connections[0].options.icon_url", Reason: `"data://x/png" must be an https URL`}},
		{name: "icon with credentials", mut: func(c *Config) { c.Connections[0].Options.IconURL = "https://u:p@cdn.example/i.png" },
			want: FieldError{Key: "connections[0].options.icon_url", Reason: `"https://u:p@cdn.example/i.png" must not contain user information`}},
		{name: "icon host that would break the page policy", mut: func(c *Config) { c.Connections[0].Options.IconURL = "https://cdn.example;script-src=x/i.png" },
			want: FieldError{Key: "connections[0].options.icon_url", Reason: `"https://cdn.example;script-src=x/i.png" must name a host: a domain name or an IP address, with an optional port`}},
	} {
		t.Run(tc.name, func(t *testing.T) { wantOnlyError(t, tc.mut, tc.want) })
	}
}

func TestHomeRealmKeysDecodeFromYAML(t *testing.T) {
	var cc Connection
	src := "name: acme\nshow_as_button: false\noptions:\n  domain_aliases: [acme.example, acme.test]\n  icon_url: https://cdn.example/acme.svg\n"
	if err := yaml.Unmarshal([]byte(src), &cc); err != nil {
		t.Fatal(err)
	}
	if cc.ButtonShown() || len(cc.Options.DomainAliases) != 2 || IconOrigin(cc.Options.IconURL) != "https://cdn.example" {
		t.Fatalf("decoded %+v", cc)
	}
	if !(&Connection{}).ButtonShown() {
		t.Fatal("show_as_button absent must show the button")
	}
}

func TestEmailDomain(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{in: "alice@Corp.Example", want: "corp.example"},
		{in: "alice@corp.example.", want: "corp.example"},
		{in: `"a@b"@corp.example`, want: "corp.example"},
		{in: "xn--bcher-kva.example@xn--bcher-kva.example", want: "xn--bcher-kva.example"},
		{in: "corp.example"},
		{in: "@corp.example"},
		{in: "alice@"},
		{in: "alice@corp"},
		{in: "alice@bücher.example"},
		{in: "alice@corp.example>"},
		{in: "al ice@corp.example"},
		{in: "alice@[127.0.0.1]"},
		{in: "a@" + strings.Repeat("a", 320) + ".example"},
	} {
		if got := EmailDomain(tc.in); got != tc.want {
			t.Errorf("EmailDomain(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
