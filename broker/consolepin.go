package broker

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/upstream"
)

// The console's issuer pins (docs: README "Operators' console", SECURITY.md). console.admins
// trust a user of a connection (user_id STRATEGY|CONNECTION|SUB, email and group rules scoped
// to a connection); a connection is only a name, and the management API can point it at
// another upstream, where an attacker may hold the same sub or claims. So:
//   - validation requires the connections that admit administrators (those of the rules and
//     console.connection) to be connections of the configuration file;
//   - the console pins each one's issuer and discovery_url from the configuration file (the
//     one the broker started with, or reloaded: Reload pins the new file's), and admits an operator only when the upstream ID token of their broker
//     session was verified as that issuer, through that discovery_url (sessionRecord's
//     UpstreamIssuer, UpstreamDiscovery); a broker session from before the pin is refused;
//   - the management API refuses to create, or change, a connection of that name with another
//     issuer or discovery_url (400), so a deleted and recreated connection does not help either.
//   - the same holds for the options that decide which upstream claims become the user's
//     email, email_verified and groups, and so what email and group rules match
//     (upstream.Identity: strategy, client_id, scope, fetch_userinfo, upstream_params,
//     attribute_map): an attribute_map of {"email": "${context.tokenset.id_token.nickname}",
//     "email_verified": "true"} would otherwise let update:connections make any user an
//     administrator. The API refuses to change them (400), and a broker session records the
//     digest of those its login used (sessionRecord's UpstreamIdentity): the console admits
//     an operator only when it is the digest of the configuration file's.

// consolePin is a pinned connection's upstream. Only consolePinsOf makes one, and it always
// sets digest (a SHA-256, never ""): a connection that does not normalize is an error there,
// which New returns.
type consolePin struct {
	issuer, discoveryURL string
	// identity is the connection's identity options and digest their Digest.
	identity upstream.Identity
	digest   string
}

// consolePinsOf pins the connections of cfg named by console.connection and console.admins
// (New pins those of the configuration the broker starts with, Reload those of the file it
// reloads: a view's pins are always its own file's), each normalized as its upstream client uses it (upstream.Normalized: an okta
// connection's issuer may come from its domain).
func consolePinsOf(cfg *config.Config) (map[string]consolePin, error) {
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
		if !names[cc.Name] {
			continue
		}
		uc, err := upstream.Normalized(upstreamConfig(cc))
		if err != nil {
			return nil, fmt.Errorf("console pin: %w", err)
		}
		id := uc.Identity()
		pins[cc.Name] = consolePin{issuer: uc.Issuer, discoveryURL: uc.DiscoveryURL, identity: id, digest: id.Digest()}
	}
	return pins, nil
}

// consolePinProblem says why the broker session sess cannot make its user a console
// administrator through its upstream ("" = it can): its connection is not pinned, or its
// upstream ID token was not verified as the pinned issuer through the pinned discovery_url.
func (s *Server) consolePinProblem(sess *sessionRecord) string {
	pin, ok := s.consolePins[sess.Connection]
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
	case sess.UpstreamIdentity == "":
		return "the broker session of the sign-in does not record its connection's identity options; sign in again"
	case sess.UpstreamIdentity != pin.digest:
		return fmt.Sprintf("the sign-in's connection %q mapped the user with other identity options (%s) than the configuration file sets (was the connection changed through the management API?)",
			sess.Connection, identityOptionNames)
	}
	return ""
}

// identityOptionNames are the options upstream.Identity holds, for messages.
const identityOptionNames = "strategy, options.client_id, options.scope, options.fetch_userinfo, options.upstream_params, options.attribute_map"

// consolePinnedDeleteProblem refuses to delete the connection name when it admits console
// administrators (409): deleting it would lock every administrator who signs in through it
// out of the console, and only the configuration file decides that.
func (s *Server) consolePinnedDeleteProblem(name string) *apiError {
	if _, ok := s.consolePins[name]; !ok {
		return nil
	}
	return &apiError{http.StatusConflict, "connection_conflict", fmt.Sprintf(
		"The connection %s admits console administrators (console.admins, console.connection): it cannot be deleted through the management API; remove it from console.admins and console.connection in the configuration file first",
		name)}
}

// consolePinnedConnectionProblem refuses a management write that would give the connection
// uc (resolved) another issuer or discovery_url, or other identity options, than the pin of
// its name: such a connection admits console administrators.
func (s *Server) consolePinnedConnectionProblem(uc *upstream.Config) *apiError {
	pin, ok := s.consolePins[uc.Name]
	if !ok {
		return nil
	}
	if uc.Issuer != pin.issuer || uc.DiscoveryURL != pin.discoveryURL {
		return &apiError{http.StatusBadRequest, "invalid_body", fmt.Sprintf(
			"Payload validation error: the connection %s admits console administrators (console.admins, console.connection): its issuer (%s) and discovery_url (%q) are the configuration file's and cannot be changed through the management API",
			uc.Name, pin.issuer, pin.discoveryURL)}
	}
	diff := pin.identity.Differences(uc.Identity())
	if len(diff) == 0 {
		return nil
	}
	return &apiError{http.StatusBadRequest, "invalid_body", fmt.Sprintf(
		"Payload validation error: the connection %s admits console administrators (console.admins, console.connection): its %s decide the user's email and groups the admin rules match; they are the configuration file's and cannot be changed through the management API",
		uc.Name, strings.Join(diff, ", "))}
}
