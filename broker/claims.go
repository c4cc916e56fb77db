package broker

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/upstream"
)

// The user's claims in the broker's tokens (docs/claims.md). A login's user profile is made
// by its connection's claim mapping (options.attribute_map, upstream.ClaimMapping) and kept in
// the session. The ID token and /userinfo release its standard claims by scope (OIDC Core
// §5.4) and its other claims (namespaced ones such as https://example.com/groups) always; an
// API's access tokens carry the profile claims its apis[].claims names.

// Standard claims by scope (OIDC Core §5.4).
var (
	profileClaims = upstream.ProfileClaims
	emailClaims   = upstream.EmailClaims
)

// claimMapping sets the connection's upstream_params and attribute_map: userinfo_scope's
// scopes join the authorization request's scope, and userinfo is fetched.
func claimMapping(uc *upstream.Config, o *config.ConnectionOptions) {
	uc.UpstreamParams, uc.UpstreamAliases = o.UpstreamParams.Values(), o.UpstreamParams.Aliases()
	am := o.AttributeMap
	if am == nil {
		return
	}
	uc.MappingMode, uc.Attributes = am.MappingMode, am.Attributes
	for _, sc := range strings.Fields(am.UserinfoScope) {
		if !slices.Contains(uc.Scopes, sc) {
			uc.Scopes = append(uc.Scopes, sc)
		}
	}
	if am.UserinfoScope != "" {
		uc.FetchUserinfo = true
	}
}

// scopedClaims returns the profile claims released for scope: the standard profile and email
// claims when scope has profile or email, and every claim that is not standard.
func scopedClaims(claims map[string]any, scope string) map[string]any {
	out := map[string]any{}
	fields := strings.Fields(scope)
	for k, v := range claims {
		switch {
		case slices.Contains(profileClaims, k):
			if slices.Contains(fields, "profile") {
				out[k] = v
			}
		case slices.Contains(emailClaims, k):
			if slices.Contains(fields, "email") {
				out[k] = v
			}
		default:
			out[k] = v
		}
	}
	return out
}

// apiClaims returns the profile claims an access token for audience carries (apis[].claims),
// of those released for scope (scopedClaims); nil when there are none.
func (s *Server) apiClaims(audience string, profile map[string]any, scope string) map[string]any {
	api := s.apis[audience]
	if api == nil || len(api.Claims) == 0 || len(profile) == 0 {
		return nil
	}
	released := scopedClaims(profile, scope)
	out := map[string]any{}
	for _, c := range api.Claims {
		if v, ok := released[c]; ok {
			out[c] = v
		}
	}
	return out
}

// apiClaimNames returns the profile claims of every API's access tokens (apis[].claims).
func apiClaimNames(apis []config.API) []string {
	var out []string
	for _, a := range apis {
		out = append(out, a.Claims...)
	}
	return out
}

// withClaims returns the access token's claims as a JSON object with extra added (the access
// token's own claims win; apis[].claims never names them, config.Validate).
func withClaims(at *atClaims, extra map[string]any) (any, error) {
	if len(extra) == 0 {
		return at, nil
	}
	b, err := json.Marshal(at)
	if err != nil {
		return nil, fmt.Errorf("access token claims: %w", err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("access token claims: %w", err)
	}
	for k, v := range extra {
		if _, own := out[k]; !own {
			out[k] = v
		}
	}
	return out, nil
}

// aliasSources returns the app's /authorize parameters an options.upstream_params alias may
// pass on (upstream.AliasSources), as sent: guardAuthorize has bounded their length and
// refused repeats (limits.go).
func aliasSources(q url.Values) map[string]string {
	out := map[string]string{}
	for _, k := range upstream.AliasSources {
		if v := q.Get(k); v != "" {
			out[k] = v
		}
	}
	return out
}
