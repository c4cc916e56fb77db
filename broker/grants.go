package broker

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/dpop-broker/dpop-broker/config"
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

// grantedScope is the scope a token carries (RFC 6749 §3.3): of the requested values (in
// their order, without repeats), the OpenID Connect scopes, and, when api is set (an API
// audience), those api defines and grant allows. dropped lists the other requested values.
// A nil grant allows no API scope.
func grantedScope(requested string, api *config.API, grant *config.APIGrant) (granted string, dropped []string) {
	var keep []string
	for _, sc := range strings.Fields(requested) {
		if slices.Contains(keep, sc) || slices.Contains(dropped, sc) {
			continue
		}
		if config.IsOIDCScope(sc) ||
			api != nil && grant != nil && api.DefinesScope(sc) && slices.Contains(grant.Scopes, sc) {
			keep = append(keep, sc)
		} else {
			dropped = append(dropped, sc)
		}
	}
	return strings.Join(keep, " "), dropped
}

// grantProblem refuses an API audience the client has no grant for (403 access_denied, as
// the identity SaaS answers a missing client grant); userinfo-only tokens need no grant.
func grantProblem(client *config.Client, t target) *oauthError {
	if t.kind != audAPI || client.GrantFor(t.audience) != nil {
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
func (s *Server) applyGrant(client *config.Client, x *exchange, requested string) string {
	var api *config.API
	var grant *config.APIGrant
	if x.target.kind == audAPI {
		api, grant = s.apis[x.target.audience], client.GrantFor(x.target.audience)
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
func (s *Server) refuseUngranted(w http.ResponseWriter, r *http.Request, app *appRequest, client *config.Client, t target, ev *logs.Event) bool {
	oerr := grantProblem(client, t)
	if oerr == nil {
		return false
	}
	ev.Details["audience"] = t.audience
	s.failLogin(w, r, ev, loginFailure{App: app, Code: oerr.Code, Description: oerr.Description})
	return true
}
