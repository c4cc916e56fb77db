package interop

import (
	"fmt"
	"slices"
	"testing"
)

// TestGroupsMappedThroughAttributeMap: oidc-provider releases alice's groups (scope groups);
// the broker's connection asks for them with attribute_map.userinfo_scope and maps the ID
// token's groups, a name the broker reserves, to the namespaced claim
// https://example.com/groups, and the userinfo email into a display claim. openid-client sees
// both in the broker's ID token and userinfo, with the standard name and email, and nothing of
// the unmapped upstream claims.
func TestGroupsMappedThroughAttributeMap(t *testing.T) {
	t.Parallel()
	w := setup(t, scenario{mode: "dpop", alg: "ES256", connOptions: `      attribute_map:
        mapping_mode: basic_profile
        userinfo_scope: "groups"
        attributes:
          https://example.com/groups: ${context.tokenset.id_token.groups}
          https://example.com/display: "${context.tokenset.id_token.name} <${context.userinfo.email}>"
`})
	status, body, raw := w.login(t)
	wantSuccess(t, status, body, raw)
	claims, _ := body["claims"].(map[string]any)
	userinfo, _ := body["userinfo"].(map[string]any)
	for where, got := range map[string]map[string]any{"ID token": claims, "userinfo": userinfo} {
		groups, _ := got["https://example.com/groups"].([]any)
		if !slices.Equal(groups, []any{"engineering", "admins"}) {
			t.Errorf("%s https://example.com/groups = %v, want [engineering admins] (%s)", where, got["https://example.com/groups"], raw)
		}
		if d := got["https://example.com/display"]; d != "Alice Example <alice@example.com>" {
			t.Errorf("%s https://example.com/display = %v", where, d)
		}
		if got["name"] != "Alice Example" || got["email"] != "alice@example.com" {
			t.Errorf("%s lost the standard claims: %v", where, got)
		}
		if _, ok := got["groups"]; ok {
			t.Errorf("%s carries the upstream's unmapped groups claim: %v", where, got)
		}
	}
	ev := w.broker.waitEvent(t, 1)
	wantType(t, ev, "s")
	wantUserinfoFetch(t, ev, true) // userinfo_scope turns the userinfo fetch on
}

// TestUpstreamParamsReachOIDCProvider: the connection's upstream_params in the SaaS's form, a
// login_hint alias of the app's own login_hint and a fixed acr_values, arrive in the
// authorization request oidc-provider receives; the login completes.
func TestUpstreamParamsReachOIDCProvider(t *testing.T) {
	t.Parallel()
	w := setup(t, scenario{mode: "dpop", alg: "ES256", rpArgs: []string{"--login-hint", "alice@example.com"}, connOptions: `      upstream_params:
        login_hint: { alias: login_hint }
        acr_values: { value: "urn:example:loa:2" }
        ui_locales: { value: "de-CH" }
`})
	status, body, raw := w.login(t)
	wantSuccess(t, status, body, raw)
	got := getStats(t, w.upstreamURL).AuthorizationParams
	want := map[string]string{"login_hint": "alice@example.com", "acr_values": "urn:example:loa:2", "ui_locales": "de-CH"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("oidc-provider's authorization request had %v, want %v", got, want)
	}
	wantType(t, w.broker.waitEvent(t, 1), "s")
}
