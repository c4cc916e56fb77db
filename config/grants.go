package config

import (
	"fmt"
	"slices"
	"strings"

	"github.com/dpop-broker/dpop-broker/logs"
)

// The grants: apis[].scopes are the permissions an API defines; clients[].apis are the
// client's grants, the APIs it may obtain access tokens for and which of their scopes. The
// broker applies them at /authorize and /oauth/token (broker/grants.go); here they are
// checked for consistency.

// oidcScopes keep their OpenID Connect meaning whatever the audience (OIDC Core §3.1.2.1,
// §5.4, §11); no API may define them.
var oidcScopes = []string{"openid", "profile", "email", "offline_access"}

// IsOIDCScope reports whether scope is one of the OpenID Connect scopes (openid, profile,
// email, offline_access), which keep their meaning whatever the audience and which no API
// may define.
func IsOIDCScope(scope string) bool { return slices.Contains(oidcScopes, scope) }

// Bounds of the API scope definitions.
const (
	maxScopeName        = 256
	maxScopeDescription = 500
)

// GrantFor returns the client's grant for API audience aud, or nil.
func (c *Client) GrantFor(aud string) *APIGrant {
	for i := range c.APIs {
		if c.APIs[i].Audience == aud {
			return &c.APIs[i]
		}
	}
	return nil
}

// DefinesScope reports whether the API defines scope name.
func (a *API) DefinesScope(name string) bool {
	return slices.ContainsFunc(a.Scopes, func(s APIScope) bool { return s.Name == name })
}

// apiAudiences maps every audience a client_id must not take to where it is defined: each
// API's (apis[i]) and the broker's userinfo audience. An ID token's aud is the client_id, so
// a client named like an audience would get ID tokens carrying that audience.
func apiAudiences(c *Config) map[string]string {
	m := map[string]string{c.BaseURL() + "/userinfo": "the broker's userinfo audience"}
	for i, a := range c.APIs {
		if _, dup := m[a.Audience]; !dup && a.Audience != "" {
			m[a.Audience] = fmt.Sprintf("the audience of apis[%d]", i)
		}
	}
	return m
}

// validScopeToken reports whether s is an RFC 6749 §3.3 scope-token: 1*( %x21 / %x23-5B /
// %x5D-7E ), visible ASCII without '"' or '\'.
func validScopeToken(s string) bool {
	return s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return r < 0x21 || r > 0x7e || r == '"' || r == '\\'
	})
}

// grants checks apis[].scopes, the client grants (clients[].apis) and that no client_id is
// an audience.
func (v *validator) grants(c *Config) {
	for i := range c.APIs {
		a := &c.APIs[i]
		seen := map[string]int{}
		for j, sc := range a.Scopes {
			key := fmt.Sprintf("apis[%d].scopes[%d]", i, j)
			switch {
			case sc.Name == "":
				v.add(key+".name", "is required")
			case len(sc.Name) > maxScopeName || !validScopeToken(sc.Name):
				v.add(key+".name", "%q must be 1 to %d visible ASCII characters without spaces, '\"' or '\\' (RFC 6749 §3.3)", logs.Clip(sc.Name, 64), maxScopeName)
			case IsOIDCScope(sc.Name):
				v.add(key+".name", "%q is an OpenID Connect scope: it keeps its meaning for every token and cannot be defined by an API", sc.Name)
			default:
				if k, dup := seen[sc.Name]; dup {
					v.add(key+".name", "duplicate scope %q (also apis[%d].scopes[%d])", sc.Name, i, k)
				} else {
					seen[sc.Name] = j
				}
			}
			if len(sc.Description) > maxScopeDescription {
				v.add(key+".description", "must be at most %d characters", maxScopeDescription)
			}
		}
	}
	audiences, index := apiAudiences(c), apiIndex(c)
	for i := range c.Clients {
		v.clientGrants(fmt.Sprintf("clients[%d].", i), &c.Clients[i], c, index, audiences)
	}
}

// apiIndex maps each API audience to its first apis[i].
func apiIndex(c *Config) map[string]int {
	m := map[string]int{}
	for i := range c.APIs {
		if _, dup := m[c.APIs[i].Audience]; !dup && c.APIs[i].Audience != "" {
			m[c.APIs[i].Audience] = i
		}
	}
	return m
}

// clientGrants checks one client's grants (apis) and that its client_id is no audience: p
// is "clients[i]." for the YAML, "" for a management API body.
func (v *validator) clientGrants(p string, cl *Client, c *Config, apiIndex map[string]int, audiences map[string]string) {
	if where, taken := audiences[cl.ClientID]; taken && cl.ClientID != "" {
		v.add(p+"client_id", "%q is %s: a client_id must differ from every API audience (the client's ID tokens would carry that audience)", cl.ClientID, where)
	}
	seen := map[string]int{}
	for j, g := range cl.APIs {
		gp := fmt.Sprintf("%sapis[%d]", p, j)
		k, known := apiIndex[g.Audience]
		switch {
		case g.Audience == "":
			v.add(gp+".audience", "is required")
		case !known:
			v.add(gp+".audience", "API %q is not defined in apis", logs.Clip(g.Audience, 128))
		default:
			if m, dup := seen[g.Audience]; dup {
				v.add(gp+".audience", "duplicate grant for API %q (also %sapis[%d])", g.Audience, p, m)
			} else {
				seen[g.Audience] = j
			}
		}
		for m, name := range g.Scopes {
			switch {
			case IsOIDCScope(name):
				v.add(fmt.Sprintf("%s.scopes[%d]", gp, m), "%q is an OpenID Connect scope, which every client may request: grant only scopes the API defines", name)
			case known && !c.APIs[k].DefinesScope(name):
				v.add(fmt.Sprintf("%s.scopes[%d]", gp, m), "scope %q is not defined by API %q (apis[%d].scopes)", logs.Clip(name, 64), g.Audience, k)
			}
		}
	}
}
