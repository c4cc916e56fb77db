package broker

import (
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
)

func TestConsoleEmailAndGroupRulesAdmitOnlyUsersOfTheirConnection(t *testing.T) {
	admins := []config.ConsoleAdmin{
		{Email: "sam@kexample.com", Connection: "corp"},
		{Group: "broker-admins", Claim: "https://example.com/groups"}, // console.connection: corp
		{UserID: "oidc|partner|carol"},
	}
	s := &Server{cfg: &config.Config{Console: config.Console{Connection: "corp", Admins: admins}}}
	verified := func(email string) map[string]any { return map[string]any{"email": email, "email_verified": true} }
	tests := []struct {
		name   string
		conn   string
		claims map[string]any
		admit  bool
	}{
		{name: "verified email on the rule's connection", conn: "corp", claims: verified("sam@kexample.com"), admit: true},
		{name: "ASCII case differences match", conn: "corp", claims: verified("Sam@KExample.COM"), admit: true},
		{name: "the same verified email from another connection", conn: "partner", claims: verified("sam@kexample.com")},
		{name: "long s does not fold to s", conn: "corp", claims: verified("\u017fam@kexample.com")},
		{name: "Kelvin sign does not fold to k", conn: "corp", claims: verified("sam@\u212aexample.com")},
		{name: "group on console.connection", conn: "corp", claims: map[string]any{"https://example.com/groups": []any{"broker-admins"}}, admit: true},
		{name: "the same group from another connection", conn: "partner", claims: map[string]any{"https://example.com/groups": []any{"broker-admins"}}},
		{name: "a user id rule names its own connection", conn: "partner", claims: map[string]any{"sub": "oidc|partner|carol"}, admit: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := s.consoleAdmin(tt.conn, tt.claims); got != tt.admit {
				t.Errorf("consoleAdmin(%q, %v) = %v, want %v", tt.conn, tt.claims, got, tt.admit)
			}
		})
	}
	unscoped := &Server{cfg: &config.Config{Console: config.Console{Admins: []config.ConsoleAdmin{{Email: "sam@kexample.com"}}}}}
	if unscoped.consoleAdmin("corp", verified("sam@kexample.com")) {
		t.Error("an email rule without any connection admits a user")
	}
}
