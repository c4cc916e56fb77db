package config

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Console is the operators' console under /console (broker/console.go): who may enter by
// signing in through the broker, and how long a console session lasts. A management token
// (management.tokens) is the break-glass way in and needs no entry here.
type Console struct {
	// Admins decide who may enter after signing in through the broker; none: only a
	// management token opens the console.
	Admins []ConsoleAdmin `yaml:"admins"`
	// URL is where operators' browsers reach the console (default: public_url + "/console";
	// required with admins when admin_listen is set). Its "/callback" is the redirect URI of
	// the console's built-in client.
	URL string `yaml:"url"`
	// Connection is the connection the console's sign-in uses (default: the broker's
	// choice as for any app: home realm discovery or the sign-in page).
	Connection string `yaml:"connection"`
	// SessionLifetime is the absolute lifetime of a console session (default 30m, at most 12h).
	SessionLifetime time.Duration `yaml:"session_lifetime"`
	// MaxAge is the max_age of the console's sign-in through the broker (default 10m, 1m to
	// 12h): a broker or upstream session whose authentication is older asks the user again,
	// and the ID token's auth_time is checked against it.
	MaxAge time.Duration `yaml:"max_age"`
}

// ConsoleAdmin is one rule of console.admins: exactly one of UserID (the broker's user id,
// "oidc|CONNECTION|SUB"), Email (ASCII; matched only when the upstream says email_verified),
// or Group, a value of the claim Claim of the broker's ID token (the upstream's groups mapped
// to a namespaced claim with options.attribute_map: docs/claims.md). An email or group rule
// admits only users of the connection Connection (default console.connection): another
// upstream's user may carry the same address or claim.
type ConsoleAdmin struct {
	UserID     string `yaml:"user_id"`
	Email      string `yaml:"email"`
	Group      string `yaml:"group"`
	Claim      string `yaml:"claim"`
	Connection string `yaml:"connection"`
}

// ConnectionOf is the connection whose users an email or group rule admits: its own
// connection, else console.connection ("" when neither is set; validation refuses that).
func (c *Console) ConnectionOf(a ConsoleAdmin) string {
	if a.Connection != "" {
		return a.Connection
	}
	return c.Connection
}

// UserIDConnection is the connection of a broker user id "STRATEGY|CONNECTION|SUB" ("" when
// id has not that shape).
func UserIDConnection(id string) string {
	parts := strings.SplitN(id, "|", 3)
	if len(parts) != 3 || parts[0] == "" || parts[2] == "" {
		return ""
	}
	return parts[1]
}

// configuredConnection reports whether name is a connection of this file.
func (c *Config) configuredConnection(name string) bool {
	return slices.ContainsFunc(c.Connections, func(k Connection) bool { return k.Name == name })
}

// ConsoleClientID is the client id of the console's built-in client.
const ConsoleClientID = "dpop-broker-console"

// Console session lifetime bounds.
const (
	defaultConsoleSession = 30 * time.Minute
	maxConsoleSession     = 12 * time.Hour
	defaultConsoleMaxAge  = 10 * time.Minute
	minConsoleMaxAge      = time.Minute
)

// ConsoleURL is the console's external URL without a trailing slash.
func (c *Config) ConsoleURL() string {
	if c.Console.URL != "" {
		return strings.TrimSuffix(c.Console.URL, "/")
	}
	return c.BaseURL() + "/console"
}

// ConsoleSignIn reports whether operators can sign in through the broker (console.admins set).
func (c *Config) ConsoleSignIn() bool { return len(c.Console.Admins) > 0 }

func (v *validator) console(c *Config) {
	if c.AdminListen != "" {
		v.listen("admin_listen", c.AdminListen)
		if _, port, _ := net.SplitHostPort(c.AdminListen); c.AdminListen == c.Listen && port != "0" { // port 0: each its own
			v.add("admin_listen", "must differ from listen (%q)", c.Listen)
		}
	}
	cs := &c.Console
	if cs.SessionLifetime < 0 || cs.SessionLifetime > maxConsoleSession {
		v.add("console.session_lifetime", "must be a positive duration of at most %s", maxConsoleSession)
	}
	if cs.URL != "" {
		n := len(v.errs)
		v.issuer("console.url", cs.URL, false)
		if len(v.errs) == n {
			if u, _ := url.Parse(cs.URL); !strings.HasSuffix(strings.TrimSuffix(u.Path, "/"), "/console") {
				v.add("console.url", "%q must end with /console (the path the broker serves it on)", redactURL(cs.URL))
			} else if insecureHTTP(u) && !c.AllowInsecureHTTP {
				v.add("console.url", "%q must use https (plain http only on a loopback host; allow_insecure_http accepts it elsewhere, for development only)", redactURL(cs.URL))
			}
		}
	} else if c.AdminListen != "" && len(cs.Admins) > 0 {
		v.add("console.url", "is required with console.admins when admin_listen is set: the URL operators' browsers reach the admin listener's /console at")
	}
	if cs.MaxAge != 0 && (cs.MaxAge < minConsoleMaxAge || cs.MaxAge > maxConsoleSession) {
		v.add("console.max_age", "must be between %s and %s", minConsoleMaxAge, maxConsoleSession)
	}
	// The connections that admit console administrators are this file's: the console pins
	// their issuer and discovery URL from it (a connection the management API changed or
	// created cannot turn another upstream's user into an administrator).
	if cs.Connection != "" && !c.configuredConnection(cs.Connection) {
		v.add("console.connection", "%q is not a configured connection (connections of this file): the console's sign-in uses one, whose issuer it pins", cs.Connection)
	}
	for i, a := range cs.Admins {
		p := fmt.Sprintf("console.admins[%d]", i)
		n := 0
		for _, s := range []string{a.UserID, a.Email, a.Group} {
			if s != "" {
				n++
			}
		}
		if n != 1 {
			v.add(p, "set exactly one of user_id, email or group")
		} else {
			v.consoleAdminScope(c, p, a)
		}
		switch {
		case a.Claim != "" && a.Group == "":
			v.add(p+".claim", "names the claim of a group rule: set group too")
		case a.Group != "" && a.Claim == "":
			v.add(p+".claim", "is required with group: the ID token claim carrying the user's groups (map the upstream's groups to a namespaced claim such as https://example.com/groups with options.attribute_map)")
		}
	}
}

// consoleGroupClaimsRefused are claim names a group rule may not read: the standard claims
// (OIDC Core §5.1, RFC 7519 §4.1, the broker's own), which a user can often edit at the
// upstream (name, nickname, preferred_username, email, ...) or which name no group at all.
var consoleGroupClaimsRefused = []string{
	"sub", "name", "given_name", "family_name", "middle_name", "nickname", "preferred_username",
	"profile", "picture", "website", "email", "email_verified", "gender", "birthdate", "zoneinfo",
	"locale", "phone_number", "phone_number_verified", "address", "updated_at",
	"iss", "aud", "exp", "nbf", "iat", "jti", "azp", "nonce", "auth_time", "acr", "amr", "sid",
	"at_hash", "c_hash", "cnf", "scope", "client_id", "user_id", "username",
}

// consoleAdminScope checks what an admin rule matches on: an email or group rule names the
// connection whose users it admits (its own, or console.connection), an email rule is ASCII,
// and a group rule's claim is not one a user can set.
func (v *validator) consoleAdminScope(c *Config, p string, a ConsoleAdmin) {
	cs := &c.Console
	if a.Email == "" && a.Group == "" {
		if a.Connection != "" {
			v.add(p+".connection", "scopes an email or group rule only (a user_id names its connection)")
		}
		switch conn := UserIDConnection(a.UserID); {
		case conn == "":
			v.add(p+".user_id", "%q is not a broker user id STRATEGY|CONNECTION|SUB (such as oidc|corp|alice)", a.UserID)
		case !c.configuredConnection(conn):
			v.add(p+".user_id", "names the connection %q, which is not a configured connection (connections of this file): an administrator's connection must be configured here, so the console can pin its issuer", conn)
		}
		return
	}
	conn := cs.ConnectionOf(a)
	switch {
	case conn == "":
		v.add(p+".connection", "is required for an email or group rule (or set console.connection): without it a user of any connection with the same email or claim would be an administrator")
	case cs.Connection != "" && conn != cs.Connection:
		v.add(p+".connection", "%q differs from console.connection %q, the only connection the console's sign-in uses", conn, cs.Connection)
	case !c.configuredConnection(conn):
		v.add(p+".connection", "%q is not a configured connection (connections of this file): the console pins its issuer", conn)
	}
	if a.Email != "" {
		if !isASCII(a.Email) || !strings.Contains(a.Email, "@") {
			v.add(p+".email", "must be an ASCII email address (non-ASCII addresses are never matched)")
		}
	}
	if a.Claim != "" && slices.Contains(consoleGroupClaimsRefused, strings.ToLower(a.Claim)) {
		v.add(p+".claim", "%q is a standard claim a user may be able to set: use a namespaced claim such as https://example.com/groups (options.attribute_map)", a.Claim)
	}
}

// isASCII reports whether s is printable ASCII only.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// ConsoleMaxAge is the console sign-in's max_age with its default.
func (c *Config) ConsoleMaxAge() time.Duration {
	if c.Console.MaxAge == 0 {
		return defaultConsoleMaxAge
	}
	return c.Console.MaxAge
}

// ConsoleSession is the console session lifetime with its default.
func (c *Config) ConsoleSession() time.Duration {
	if c.Console.SessionLifetime == 0 {
		return defaultConsoleSession
	}
	return c.Console.SessionLifetime
}
