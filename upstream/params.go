package upstream

import (
	"errors"
	"fmt"
	"maps"
	"slices"
)

// Extra authorization parameters toward the upstream (a connection's options.upstream_params,
// in the identity SaaS's form): a fixed value, or an alias naming the app's /authorize
// parameter whose value is passed on. Only parameters of SafeUpstreamParams may be set: the
// broker's own (state, nonce, PKCE, redirect_uri, client_id, …) carry the flow's security.

// SafeUpstreamParams are the parameters options.upstream_params may set: the OpenID Connect
// authentication request's optional parameters that only shape the upstream's login page
// (OIDC Core §3.1.2.1), and the routing hints of common IdPs (Okta idp, Entra ID domain_hint,
// Google hd, access_type and include_granted_scopes, the identity SaaS's connection,
// organization and screen_hint). offline_access is accepted so that it can be refused
// together with DPoP (Token Vault).
var SafeUpstreamParams = []string{
	"access_type", "acr_values", "claims_locales", "connection", "display", "domain_hint", "hd",
	"idp", "include_granted_scopes", "login_hint", "offline_access", "organization", "prompt",
	"screen_hint", "ui_locales",
}

// AliasSources are the app's /authorize parameters an upstream parameter may take its value
// from ({"alias": NAME}); the broker bounds their length (broker/limits.go).
var AliasSources = []string{"acr_values", "display", "login_hint", "ui_locales"}

// reservedParams are the parameters the broker sets itself; SafeUpstreamParams names none.
var reservedParams = map[string]bool{
	"response_type": true, "client_id": true, "redirect_uri": true, "scope": true, "state": true,
	"nonce": true, "code_challenge": true, "code_challenge_method": true, "client_secret": true,
	"code_verifier": true, "dpop_jkt": true, "request": true, "request_uri": true,
	"response_mode": true, "max_age": true, "id_token_hint": true, "claims": true,
	"client_assertion": true, "client_assertion_type": true, "registration": true,
}

// ReservedParam reports whether name is an authorization parameter the broker sets itself.
func ReservedParam(name string) bool { return reservedParams[name] }

// CheckUpstreamParam checks one options.upstream_params entry: a safe parameter name with
// either a value or an alias naming one of AliasSources. The error does not repeat name.
func CheckUpstreamParam(name, value, alias string) error {
	switch {
	case ReservedParam(name):
		return errors.New("is set by the broker and cannot be overridden")
	case !slices.Contains(SafeUpstreamParams, name):
		return fmt.Errorf("is not a parameter the broker sends upstream (use %s)", joinNames(SafeUpstreamParams))
	case value != "" && alias != "":
		return errors.New("set value or alias, not both")
	case alias != "" && !slices.Contains(AliasSources, alias):
		return fmt.Errorf("alias %q is not an authorization parameter the broker passes on (use %s)", alias, joinNames(AliasSources))
	}
	return nil
}

// joinNames lists names as "a, b or c".
func joinNames(names []string) string {
	out := ""
	for i, n := range names {
		switch {
		case i == 0:
		case i == len(names)-1:
			out += " or "
		default:
			out += ", "
		}
		out += n
	}
	return out
}

// normalizeUpstreamParams checks the extra authorization parameters (CheckUpstreamParam) and
// keeps copies of them.
func (cfg *Config) normalizeUpstreamParams() error {
	for k, v := range cfg.UpstreamParams {
		if err := CheckUpstreamParam(k, v, ""); err != nil {
			return fmt.Errorf("upstream_params.%s: %w", k, err)
		}
	}
	for k, a := range cfg.UpstreamAliases {
		if _, dup := cfg.UpstreamParams[k]; dup {
			return fmt.Errorf("upstream_params.%s: set value or alias, not both", k)
		}
		if err := CheckUpstreamParam(k, "", a); err != nil {
			return fmt.Errorf("upstream_params.%s: %w", k, err)
		}
	}
	cfg.UpstreamParams = maps.Clone(cfg.UpstreamParams)
	cfg.UpstreamAliases = maps.Clone(cfg.UpstreamAliases)
	return nil
}

// WithAppParams hands Begin the app's /authorize parameters that options.upstream_params
// aliases may pass on (AliasSources; absent or empty ones are left out).
func WithAppParams(params map[string]string) BeginOption {
	return func(o *beginOptions) { o.appParams = params }
}

// extraParams returns the connection's extra authorization parameters, by name: the fixed
// values, and each alias's app parameter when the app sent it.
func (c *Connection) extraParams(app map[string]string) [][2]string {
	out := make([][2]string, 0, len(c.cfg.UpstreamParams)+len(c.cfg.UpstreamAliases))
	for _, k := range slices.Sorted(maps.Keys(c.cfg.UpstreamParams)) {
		out = append(out, [2]string{k, c.cfg.UpstreamParams[k]})
	}
	for _, k := range slices.Sorted(maps.Keys(c.cfg.UpstreamAliases)) {
		if v := app[c.cfg.UpstreamAliases[k]]; v != "" {
			out = append(out, [2]string{k, v})
		}
	}
	return out
}
