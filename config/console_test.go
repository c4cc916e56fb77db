package config

import (
	"strings"
	"testing"
	"time"
)

func TestConsoleSettingsAreValidated(t *testing.T) {
	tests := []struct {
		name    string
		mut     func(c *Config)
		wantKey string // "" = valid
		want    string
	}{
		{name: "defaults", mut: func(*Config) {}},
		{name: "admin rules of each kind", mut: func(c *Config) {
			c.Console.Admins = []ConsoleAdmin{{UserID: "oidc|corp|a"}, {Email: "ops@example.com"}, {Group: "admins", Claim: "roles"}}
		}},
		{name: "a rule with two matches", mut: func(c *Config) { c.Console.Admins = []ConsoleAdmin{{UserID: "u", Email: "e@example.com"}} },
			wantKey: "console.admins[0]", want: "exactly one"},
		{name: "an empty rule", mut: func(c *Config) { c.Console.Admins = []ConsoleAdmin{{}} }, wantKey: "console.admins[0]", want: "exactly one"},
		{name: "a group without its claim", mut: func(c *Config) { c.Console.Admins = []ConsoleAdmin{{Group: "admins"}} },
			wantKey: "console.admins[0].claim", want: "is required with group"},
		{name: "a claim without a group", mut: func(c *Config) { c.Console.Admins = []ConsoleAdmin{{UserID: "u", Claim: "roles"}} },
			wantKey: "console.admins[0].claim", want: "set group too"},
		{name: "admin_listen equal to listen", mut: func(c *Config) { c.AdminListen = c.Listen }, wantKey: "admin_listen", want: "must differ"},
		{name: "both on port 0 (each gets its own)", mut: func(c *Config) { c.Listen, c.AdminListen = "127.0.0.1:0", "127.0.0.1:0" }},
		{name: "admin_listen without a port", mut: func(c *Config) { c.AdminListen = "9090" }, wantKey: "admin_listen", want: "HOST:PORT"},
		{name: "admins behind admin_listen need the console's URL", mut: func(c *Config) {
			c.AdminListen = "127.0.0.1:9090"
			c.Console.Admins = []ConsoleAdmin{{UserID: "u"}}
		}, wantKey: "console.url", want: "required"},
		{name: "console URL not ending in /console", mut: func(c *Config) { c.Console.URL = "https://admin.example/ops" }, wantKey: "console.url", want: "/console"},
		{name: "console URL over plain http off loopback", mut: func(c *Config) { c.Console.URL = "http://admin.example/console" }, wantKey: "console.url", want: "https"},
		{name: "session lifetime beyond 12h", mut: func(c *Config) { c.Console.SessionLifetime = 13 * time.Hour }, wantKey: "console.session_lifetime", want: "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.Issuer = "https://broker.example/"
			tt.mut(c)
			v := &validator{}
			v.console(c)
			if tt.wantKey == "" {
				if len(v.errs) > 0 {
					t.Fatalf("errors %v, want none", v.errs)
				}
				return
			}
			if len(v.errs) != 1 || v.errs[0].Key != tt.wantKey || !strings.Contains(v.errs[0].Reason, tt.want) {
				t.Fatalf("errors %v, want one for %s containing %q", v.errs, tt.wantKey, tt.want)
			}
		})
	}
}

func TestConsoleURLDefaultsToThePublicURL(t *testing.T) {
	c := Default()
	c.Issuer = "https://broker.example/tenant/"
	if got, want := c.ConsoleURL(), "https://broker.example/tenant/console"; got != want {
		t.Errorf("ConsoleURL() = %q, want %q", got, want)
	}
	c.Console.URL = "https://admin.example/console/"
	if got, want := c.ConsoleURL(), "https://admin.example/console"; got != want {
		t.Errorf("ConsoleURL() = %q, want %q", got, want)
	}
}

func TestConsoleClientIDIsReserved(t *testing.T) {
	c := Default()
	c.Issuer = "https://broker.example/"
	c.Clients = []Client{{ClientID: ConsoleClientID, RedirectURIs: []string{"https://app.example/cb"}}}
	v := &validator{}
	v.clients(c)
	for _, e := range v.errs {
		if e.Key == "clients[0].client_id" && strings.Contains(e.Reason, "reserved") {
			return
		}
	}
	t.Errorf("a YAML client named %s passes: %v", ConsoleClientID, v.errs)
}
