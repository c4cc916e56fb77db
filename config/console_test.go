package config

import (
	"strings"
	"testing"
	"time"
)

// wantConsoleValidation validates the console settings of a default configuration with the
// connections corp and partner, changed by mut: no error when wantKey is "", else exactly one
// for wantKey whose reason contains want.
func wantConsoleValidation(t *testing.T, mut func(c *Config), wantKey, want string) {
	t.Helper()
	c := Default()
	c.Issuer = "https://broker.example/"
	c.Connections = []Connection{{Name: "corp"}, {Name: "partner"}}
	mut(c)
	v := &validator{}
	v.console(c)
	if wantKey == "" {
		if len(v.errs) > 0 {
			t.Fatalf("errors %v, want none", v.errs)
		}
		return
	}
	if len(v.errs) != 1 || v.errs[0].Key != wantKey || !strings.Contains(v.errs[0].Reason, want) {
		t.Fatalf("errors %v, want one for %s containing %q", v.errs, wantKey, want)
	}
}

func TestConsoleSettingsAreValidated(t *testing.T) {
	tests := []struct {
		name    string
		mut     func(c *Config)
		wantKey string // "" = valid
		want    string
	}{
		{name: "defaults", mut: func(*Config) {}},
		{name: "admin rules of each kind", mut: func(c *Config) {
			c.Console.Admins = []ConsoleAdmin{{UserID: "oidc|corp|a"}, {Email: "ops@example.com", Connection: "corp"}, {Group: "admins", Claim: "roles", Connection: "corp"}}
		}},
		{name: "email and group rules scoped by console.connection", mut: func(c *Config) {
			c.Console.Connection = "corp"
			c.Console.Admins = []ConsoleAdmin{{Email: "ops@example.com"}, {Group: "admins", Claim: "https://example.com/groups"}}
		}},
		{name: "a rule with two matches", mut: func(c *Config) { c.Console.Admins = []ConsoleAdmin{{UserID: "oidc|corp|u", Email: "e@example.com"}} },
			wantKey: "console.admins[0]", want: "exactly one"},
		{name: "an empty rule", mut: func(c *Config) { c.Console.Admins = []ConsoleAdmin{{}} }, wantKey: "console.admins[0]", want: "exactly one"},
		{name: "a group without its claim", mut: func(c *Config) { c.Console.Admins = []ConsoleAdmin{{Group: "admins", Connection: "corp"}} },
			wantKey: "console.admins[0].claim", want: "is required with group"},
		{name: "a claim without a group", mut: func(c *Config) { c.Console.Admins = []ConsoleAdmin{{UserID: "oidc|corp|u", Claim: "roles"}} },
			wantKey: "console.admins[0].claim", want: "set group too"},
		{name: "console max_age below a minute", mut: func(c *Config) { c.Console.MaxAge = time.Second }, wantKey: "console.max_age", want: "between"},
		{name: "console max_age beyond 12h", mut: func(c *Config) { c.Console.MaxAge = 13 * time.Hour }, wantKey: "console.max_age", want: "between"},
		{name: "admin_listen equal to listen", mut: func(c *Config) { c.AdminListen = c.Listen }, wantKey: "admin_listen", want: "must differ"},
		{name: "both on port 0 (each gets its own)", mut: func(c *Config) { c.Listen, c.AdminListen = "127.0.0.1:0", "127.0.0.1:0" }},
		{name: "admin_listen without a port", mut: func(c *Config) { c.AdminListen = "9090" }, wantKey: "admin_listen", want: "HOST:PORT"},
		{name: "admins behind admin_listen need the console's URL", mut: func(c *Config) {
			c.AdminListen = "127.0.0.1:9090"
			c.Console.Admins = []ConsoleAdmin{{UserID: "oidc|corp|u"}}
		}, wantKey: "console.url", want: "required"},
		{name: "console URL not ending in /console", mut: func(c *Config) { c.Console.URL = "https://admin.example/ops" }, wantKey: "console.url", want: "/console"},
		{name: "console URL over plain http off loopback", mut: func(c *Config) { c.Console.URL = "http://admin.example/console" }, wantKey: "console.url", want: "https"},
		{name: "session lifetime beyond 12h", mut: func(c *Config) { c.Console.SessionLifetime = 13 * time.Hour }, wantKey: "console.session_lifetime", want: "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantConsoleValidation(t, tt.mut, tt.wantKey, tt.want)
		})
	}
}

func TestConsoleEmailAndGroupRulesNeedAConnectionAndSafeValues(t *testing.T) {
	tests := []struct {
		name    string
		conn    string // console.connection
		rule    ConsoleAdmin
		wantKey string // "" = valid
		want    string
	}{
		{name: "email rule without any connection", rule: ConsoleAdmin{Email: "ops@example.com"},
			wantKey: "console.admins[0].connection", want: "any connection"},
		{name: "group rule without any connection", rule: ConsoleAdmin{Group: "admins", Claim: "https://example.com/groups"},
			wantKey: "console.admins[0].connection", want: "any connection"},
		{name: "rule on a connection the sign-in never uses", conn: "corp", rule: ConsoleAdmin{Email: "ops@example.com", Connection: "partner"},
			wantKey: "console.admins[0].connection", want: "differs from console.connection"},
		{name: "rule on an unknown connection", rule: ConsoleAdmin{Email: "ops@example.com", Connection: "nope"},
			wantKey: "console.admins[0].connection", want: "not a configured connection"},
		{name: "connection on a user_id rule", rule: ConsoleAdmin{UserID: "oidc|corp|a", Connection: "corp"},
			wantKey: "console.admins[0].connection", want: "email or group rule only"},
		{name: "user_id rule needs no connection", rule: ConsoleAdmin{UserID: "oidc|partner|a"}},
		{name: "user_id rule on a connection not in this file", rule: ConsoleAdmin{UserID: "oidc|api-made|a"},
			wantKey: "console.admins[0].user_id", want: "not a configured connection"},
		{name: "user_id rule that is no broker user id", rule: ConsoleAdmin{UserID: "alice"},
			wantKey: "console.admins[0].user_id", want: "STRATEGY|CONNECTION|SUB"},
		{name: "console.connection not in this file", conn: "api-made", rule: ConsoleAdmin{UserID: "oidc|corp|a"},
			wantKey: "console.connection", want: "not a configured connection"},
		{name: "non-ASCII email", rule: ConsoleAdmin{Email: "\u017fam@example.com", Connection: "corp"},
			wantKey: "console.admins[0].email", want: "ASCII"},
		{name: "Kelvin sign in an email", rule: ConsoleAdmin{Email: "sam@\u212aexample.com", Connection: "corp"},
			wantKey: "console.admins[0].email", want: "ASCII"},
		{name: "group claim a user can edit: nickname", rule: ConsoleAdmin{Group: "admins", Claim: "nickname", Connection: "corp"},
			wantKey: "console.admins[0].claim", want: "standard claim"},
		{name: "group claim a user can edit: preferred_username", rule: ConsoleAdmin{Group: "admins", Claim: "preferred_username", Connection: "corp"},
			wantKey: "console.admins[0].claim", want: "standard claim"},
		{name: "group claim email, any case", rule: ConsoleAdmin{Group: "ops@example.com", Claim: "Email", Connection: "corp"},
			wantKey: "console.admins[0].claim", want: "standard claim"},
		{name: "namespaced group claim", rule: ConsoleAdmin{Group: "admins", Claim: "https://example.com/groups", Connection: "corp"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantConsoleValidation(t, func(c *Config) {
				c.Console.Connection = tt.conn
				c.Console.Admins = []ConsoleAdmin{tt.rule}
			}, tt.wantKey, tt.want)
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
