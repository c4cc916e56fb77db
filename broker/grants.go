package broker

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/dpop-broker/dpop-broker/logs"
)

// Scopes and audiences are decided by policy, never copied from the request:
//   - apis[].scopes are the permissions an API defines;
//   - clients[].apis are the client's grants: the APIs it may obtain access tokens for, and
//     which of their scopes. Without a grant a client gets no token for an API (/authorize
//     answers access_denied, /oauth/token 403 access_denied), checked again against the
//     current configuration at every code redemption and refresh;
//   - the granted scope is the requested OpenID Connect scopes, plus, for an API audience,
//     the requested scopes the API defines and the grant allows. Anything else requested is
//     dropped, not refused (RFC 6749 §3.3); the token response always carries the result.

// oidcScopes keep their OpenID Connect meaning whatever the audience (OIDC Core §3.1.2.1,
// §5.4, §11); no API may define them.
var oidcScopes = []string{"openid", "profile", "email", "offline_access"}

// Bounds of the API scope definitions.
const (
	maxScopeName        = 256
	maxScopeDescription = 500
)

// grantFor returns the client's grant for API audience aud, or nil.
func (c *ClientConfig) grantFor(aud string) *APIGrant {
	for i := range c.APIs {
		if c.APIs[i].Audience == aud {
			return &c.APIs[i]
		}
	}
	return nil
}

// definesScope reports whether the API defines scope name.
func (a *APIConfig) definesScope(name string) bool {
	return slices.ContainsFunc(a.Scopes, func(s APIScope) bool { return s.Name == name })
}

// grantedScope is the scope a token carries (RFC 6749 §3.3): of the requested values (in
// their order, without repeats), the OpenID Connect scopes, and, when api is set (an API
// audience), those api defines and grant allows. dropped lists the other requested values.
// A nil grant allows no API scope.
func grantedScope(requested string, api *APIConfig, grant *APIGrant) (granted string, dropped []string) {
	var keep []string
	for _, sc := range strings.Fields(requested) {
		if slices.Contains(keep, sc) || slices.Contains(dropped, sc) {
			continue
		}
		if slices.Contains(oidcScopes, sc) ||
			api != nil && grant != nil && api.definesScope(sc) && slices.Contains(grant.Scopes, sc) {
			keep = append(keep, sc)
		} else {
			dropped = append(dropped, sc)
		}
	}
	return strings.Join(keep, " "), dropped
}

// grantProblem refuses an API audience the client has no grant for (403 access_denied, as
// the identity SaaS answers a missing client grant); userinfo-only tokens need no grant.
func grantProblem(client *ClientConfig, t target) *oauthError {
	if t.kind != audAPI || client.grantFor(t.audience) != nil {
		return nil
	}
	return &oauthError{Status: http.StatusForbidden, Code: "access_denied",
		Description: fmt.Sprintf("client %s is not authorized to access API %s", clip(client.ClientID, 128), clip(t.audience, 128))}
}

// scopeDecision is what policy made of a token request's scope, for its event.
type scopeDecision struct {
	granted string
	dropped []string
}

// applyGrant returns the scope to issue for requested, against the target x resolved and the
// client's current grant, and records the decision in x.
func (s *Server) applyGrant(client *ClientConfig, x *exchange, requested string) string {
	var api *APIConfig
	var grant *APIGrant
	if x.target.kind == audAPI {
		api, grant = s.apis[x.target.audience], client.grantFor(x.target.audience)
	}
	granted, dropped := grantedScope(requested, api, grant)
	x.scope = &scopeDecision{granted: granted, dropped: dropped}
	return granted
}

// withScope adds the scope decision to a token event: the granted scope, whether the
// request was narrowed, and what was dropped (bounded: the request chose those values).
func withScope(d map[string]any, sd *scopeDecision) {
	if sd == nil {
		return
	}
	d["scope"] = sd.granted
	d["scope_narrowed"] = len(sd.dropped) > 0
	if len(sd.dropped) > 0 {
		d["scope_dropped"] = clip(strings.Join(sd.dropped, " "), 256)
	}
}

// refuseUngranted answers /authorize for an API audience the client has no grant for: an
// access_denied redirect to the app (with state and iss) and an f event naming the audience.
// It reports whether it answered.
func (s *Server) refuseUngranted(w http.ResponseWriter, r *http.Request, app *appRequest, client *ClientConfig, t target, ev *logs.Event) bool {
	oerr := grantProblem(client, t)
	if oerr == nil {
		return false
	}
	ev.Details["audience"] = t.audience
	s.failLogin(w, r, ev, loginFailure{App: app, Code: oerr.Code, Description: oerr.Description})
	return true
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
	apiIndex := map[string]int{} // audience → first apis[i]
	for i := range c.APIs {
		a := &c.APIs[i]
		if _, dup := apiIndex[a.Audience]; !dup && a.Audience != "" {
			apiIndex[a.Audience] = i
		}
		seen := map[string]int{}
		for j, sc := range a.Scopes {
			key := fmt.Sprintf("apis[%d].scopes[%d]", i, j)
			switch {
			case sc.Name == "":
				v.add(key+".name", "is required")
			case len(sc.Name) > maxScopeName || !validScopeToken(sc.Name):
				v.add(key+".name", "%q must be 1 to %d visible ASCII characters without spaces, '\"' or '\\' (RFC 6749 §3.3)", clip(sc.Name, 64), maxScopeName)
			case slices.Contains(oidcScopes, sc.Name):
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
	audiences := apiAudiences(c)
	for i, cl := range c.Clients {
		p := fmt.Sprintf("clients[%d]", i)
		if where, taken := audiences[cl.ClientID]; taken && cl.ClientID != "" {
			v.add(p+".client_id", "%q is %s: a client_id must differ from every API audience (the client's ID tokens would carry that audience)", cl.ClientID, where)
		}
		seen := map[string]int{}
		for j, g := range cl.APIs {
			gp := fmt.Sprintf("%s.apis[%d]", p, j)
			k, known := apiIndex[g.Audience]
			switch {
			case g.Audience == "":
				v.add(gp+".audience", "is required")
			case !known:
				v.add(gp+".audience", "API %q is not defined in apis", clip(g.Audience, 128))
			default:
				if m, dup := seen[g.Audience]; dup {
					v.add(gp+".audience", "duplicate grant for API %q (also %s.apis[%d])", g.Audience, p, m)
				} else {
					seen[g.Audience] = j
				}
			}
			for m, name := range g.Scopes {
				switch {
				case slices.Contains(oidcScopes, name):
					v.add(fmt.Sprintf("%s.scopes[%d]", gp, m), "%q is an OpenID Connect scope, which every client may request: grant only scopes the API defines", name)
				case known && !c.APIs[k].definesScope(name):
					v.add(fmt.Sprintf("%s.scopes[%d]", gp, m), "scope %q is not defined by API %q (apis[%d].scopes)", clip(name, 64), g.Audience, k)
				}
			}
		}
	}
}
