package broker

import (
	"fmt"
	"net/http"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/upstream"
)

// The console's issuer pins (docs: README "Operators' console", SECURITY.md). console.admins
// trust a user of a connection (user_id STRATEGY|CONNECTION|SUB, email and group rules scoped
// to a connection); a connection is only a name, and the management API can point it at
// another upstream, where an attacker may hold the same sub or claims. So:
//   - validation requires the connections that admit administrators (those of the rules and
//     console.connection) to be connections of the configuration file;
//   - the console pins each one's issuer and discovery_url from the configuration the broker
//     started with, and admits an operator only when the upstream ID token of their broker
//     session was verified as that issuer, through that discovery_url (sessionRecord's
//     UpstreamIssuer, UpstreamDiscovery); a broker session from before the pin is refused;
//   - the management API refuses to create, or change, a connection of that name with another
//     issuer or discovery_url (400), so a deleted and recreated connection does not help either.

// consolePin is a pinned connection's upstream.
type consolePin struct {
	issuer, discoveryURL string
}

// consolePins are the pins of the connections that admit console administrators, from the
// configuration the broker started with (computed once: it never changes while it runs).
func (s *Server) consolePins() map[string]consolePin {
	s.console.pinOnce.Do(func() { s.console.pins = consolePinsOf(s.cfg) })
	return s.console.pins
}

// consolePinsOf pins the connections of cfg named by console.connection and console.admins.
func consolePinsOf(cfg *config.Config) map[string]consolePin {
	names := map[string]bool{}
	if c := cfg.Console.Connection; c != "" {
		names[c] = true
	}
	for _, a := range cfg.Console.Admins {
		if a.UserID != "" {
			names[config.UserIDConnection(a.UserID)] = true
		} else if c := cfg.Console.ConnectionOf(a); c != "" {
			names[c] = true
		}
	}
	pins := map[string]consolePin{}
	for i := range cfg.Connections {
		cc := &cfg.Connections[i]
		if names[cc.Name] {
			pins[cc.Name] = consolePin{issuer: resolvedIssuer(cc), discoveryURL: cc.Options.DiscoveryURL}
		}
	}
	return pins
}

// resolvedIssuer is the issuer of cc as its upstream client uses it (an okta connection's may
// come from its domain).
func resolvedIssuer(cc *config.Connection) string {
	o := &cc.Options
	if cc.Strategy == "okta" && o.Issuer == "" && o.Domain != "" {
		if iss, err := upstream.OktaIssuer(o.Domain, o.AuthorizationServerID); err == nil {
			return iss
		}
	}
	return o.Issuer
}

// consolePinProblem says why the broker session sess cannot make its user a console
// administrator through its upstream ("" = it can): its connection is not pinned, or its
// upstream ID token was not verified as the pinned issuer through the pinned discovery_url.
func (s *Server) consolePinProblem(sess *sessionRecord) string {
	pin, ok := s.consolePins()[sess.Connection]
	switch {
	case !ok:
		return fmt.Sprintf("the connection %q of the sign-in is not one console.admins names in the configuration file", clip(sess.Connection, 128))
	case sess.UpstreamIssuer == "":
		return "the broker session of the sign-in does not record its upstream issuer; sign in again"
	case sess.UpstreamIssuer != pin.issuer:
		return fmt.Sprintf("the sign-in's upstream issuer %q is not the issuer %q the configuration file sets for the connection %q (was the connection changed through the management API?)",
			clip(sess.UpstreamIssuer, 256), pin.issuer, sess.Connection)
	case sess.UpstreamDiscovery != pin.discoveryURL:
		return fmt.Sprintf("the sign-in's upstream keys came through the discovery_url %q, not the %q the configuration file sets for the connection %q (was the connection changed through the management API?)",
			clip(sess.UpstreamDiscovery, 256), pin.discoveryURL, sess.Connection)
	}
	return ""
}

// consolePinnedConnectionProblem refuses a management write that would give the connection
// uc (resolved) another issuer or discovery_url than the pin of its name: such a connection
// admits console administrators.
func (s *Server) consolePinnedConnectionProblem(uc *upstream.Config) *apiError {
	pin, ok := s.consolePins()[uc.Name]
	if !ok || (uc.Issuer == pin.issuer && uc.DiscoveryURL == pin.discoveryURL) {
		return nil
	}
	return &apiError{http.StatusBadRequest, "invalid_body", fmt.Sprintf(
		"Payload validation error: the connection %s admits console administrators (console.admins, console.connection): its issuer (%s) and discovery_url (%q) are the configuration file's and cannot be changed through the management API",
		uc.Name, pin.issuer, pin.discoveryURL)}
}
