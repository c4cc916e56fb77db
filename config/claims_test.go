package config

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/config/configtest"
)

// claimsYAML is configtest.ValidYAML with an attribute_map, upstream_params in both forms and
// an API whose access tokens carry the mapped groups claim.
func claimsYAML(attributes, params string) string {
	y := strings.Replace(configtest.ValidYAML, "      dpop_signing_alg: ES256\n", "      dpop_signing_alg: ES256\n"+
		"      attribute_map:\n        mapping_mode: use_map\n        userinfo_scope: openid groups\n        attributes:\n"+attributes+
		"      upstream_params:\n"+params, 1)
	return y + "apis:\n  - audience: https://api.example.com\n    claims: [\"https://example.com/groups\", email]\n"
}

func TestAttributeMapAndUpstreamParamsFromYAML(t *testing.T) {
	configtest.SetEnv(t)
	t.Setenv("TEST_ACR", "urn:mfa")
	cfg, err := Parse([]byte(claimsYAML(
		"          https://example.com/groups: ${context.tokenset.id_token.groups}\n"+
			"          name: \"${context.userinfo.given_name} ${context.userinfo.family_name}\"\n"+
			"          https://example.com/tenant: acme\n",
		"        login_hint: { alias: login_hint }\n        acr_values: { value: \"${TEST_ACR}\" }\n        prompt: login\n")))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if errs := cfg.Validate(); len(errs) != 0 {
		t.Fatalf("Validate: %v", FieldErrors(errs))
	}
	o := cfg.Connections[0].Options
	wantAttrs := ClaimTemplates{
		"https://example.com/groups": "${context.tokenset.id_token.groups}",
		"name":                       "${context.userinfo.given_name} ${context.userinfo.family_name}",
		"https://example.com/tenant": "acme",
	}
	if o.AttributeMap == nil || o.AttributeMap.MappingMode != "use_map" || o.AttributeMap.UserinfoScope != "openid groups" || !reflect.DeepEqual(o.AttributeMap.Attributes, wantAttrs) {
		t.Errorf("attribute_map %+v: templates must stay templates (not environment references)", o.AttributeMap)
	}
	wantParams := ParamMap{"login_hint": {Alias: "login_hint"}, "acr_values": {Value: "urn:mfa"}, "prompt": {Value: "login"}}
	if !reflect.DeepEqual(o.UpstreamParams, wantParams) {
		t.Errorf("upstream_params %+v, want %+v", o.UpstreamParams, wantParams)
	}
	if got := cfg.APIs[0].Claims; !slices.Equal(got, []string{"https://example.com/groups", "email"}) {
		t.Errorf("apis[0].claims %v", got)
	}
	// The management API's JSON form is the SaaS's, and reads back the same.
	b, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"upstream_params":{"acr_values":{"value":"urn:mfa"},"login_hint":{"alias":"login_hint"},"prompt":{"value":"login"}}`,
		`"attribute_map":{"mapping_mode":"use_map","userinfo_scope":"openid groups","attributes":{`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON %s\nlacks %s", b, want)
		}
	}
	var back ConnectionOptions
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back.UpstreamParams, o.UpstreamParams) || !reflect.DeepEqual(back.AttributeMap, o.AttributeMap) {
		t.Errorf("JSON round trip: %v %+v", err, back)
	}
	// A null entry is no parameter; bare scalars are values.
	var sdk ConnectionOptions
	err = json.Unmarshal([]byte(`{"upstream_params":{"prompt":null,"max_age_hint":3,"offline_access":false,"login_hint":{"alias":"login_hint"}}}`), &sdk)
	want := ParamMap{"max_age_hint": {Value: "3"}, "offline_access": {Value: "false"}, "login_hint": {Alias: "login_hint"}}
	if err != nil || !reflect.DeepEqual(sdk.UpstreamParams, want) {
		t.Errorf("upstream_params from JSON: %v %+v, want %+v", err, sdk.UpstreamParams, want)
	}
}

func TestClaimMappingAndUpstreamParamProblemsNameTheKey(t *testing.T) {
	configtest.SetEnv(t)
	const okAttr = "          https://example.com/groups: ${context.tokenset.id_token.groups}\n"
	const okParam = "        login_hint: { alias: login_hint }\n"
	const p = "connections[0].options."
	tests := []struct {
		name       string
		attributes string
		params     string
		mut        func(c *Config)
		want       FieldError
	}{
		{name: "unknown template variable", attributes: "          nickname: ${context.user.nickname}\n", params: okParam,
			want: FieldError{Key: p + "attribute_map.attributes.nickname", Reason: "unknown template variable ${context.user.nickname} (use ${context.tokenset.id_token.CLAIM} or ${context.userinfo.CLAIM})"}},
		{name: "reserved claim name", attributes: "          groups: ${context.tokenset.id_token.groups}\n", params: okParam,
			want: FieldError{Key: p + "attribute_map.attributes.groups", Reason: `"groups" is a reserved claim name: use a namespaced name such as https://example.com/groups`}},
		{name: "template that is not a string", attributes: "          nickname: [a, b]\n", params: okParam,
			want: FieldError{Key: p + "attribute_map.attributes.nickname", Reason: "must be a string"}},
		{name: "template that is null", attributes: "          nickname: ~\n", params: okParam,
			want: FieldError{Key: p + "attribute_map.attributes.nickname", Reason: "must be a string"}},
		{name: "unknown mapping mode", attributes: okAttr, params: okParam, mut: func(c *Config) { c.Connections[0].Options.AttributeMap.MappingMode = "all" },
			want: FieldError{Key: p + "attribute_map.mapping_mode", Reason: `"all" is not supported (use use_map, bind_all or basic_profile)`}},
		{name: "mapping mode missing", attributes: okAttr, params: okParam, mut: func(c *Config) { c.Connections[0].Options.AttributeMap.MappingMode = "" },
			want: FieldError{Key: p + "attribute_map.mapping_mode", Reason: "is required (use use_map, bind_all or basic_profile)"}},
		{name: "use_map without attributes", attributes: okAttr, params: okParam, mut: func(c *Config) { c.Connections[0].Options.AttributeMap.Attributes = nil },
			want: FieldError{Key: p + "attribute_map.attributes", Reason: "mapping_mode use_map needs at least one attribute"}},
		{name: "userinfo scope that is no scope list", attributes: okAttr, params: okParam, mut: func(c *Config) { c.Connections[0].Options.AttributeMap.UserinfoScope = "groups\"x" },
			want: FieldError{Key: p + "attribute_map.userinfo_scope", Reason: "must be at most 255 characters of space-separated scope names (RFC 6749 §3.3)"}},
		{name: "parameter outside the safe list", attributes: okAttr, params: "        redirect_uri: https://evil.example/cb\n",
			want: FieldError{Key: p + "upstream_params.redirect_uri", Reason: "is set by the broker and cannot be overridden"}},
		{name: "unknown parameter", attributes: okAttr, params: "        blog: myblog\n",
			want: FieldError{Key: p + "upstream_params.blog", Reason: "is not a parameter the broker sends upstream (use access_type, acr_values, claims_locales, connection, display, domain_hint, hd, idp, include_granted_scopes, login_hint, offline_access, organization, prompt, screen_hint or ui_locales)"}},
		{name: "alias of a parameter the broker keeps", attributes: okAttr, params: "        login_hint: { alias: nonce }\n",
			want: FieldError{Key: p + "upstream_params.login_hint", Reason: `alias "nonce" is not an authorization parameter the broker passes on (use acr_values, display, login_hint or ui_locales)`}},
		{name: "a list where a parameter value goes names the accepted forms", attributes: okAttr, params: "        ui_locales: [de, fr]\n",
			want: FieldError{Key: p + "upstream_params.ui_locales", Reason: `must be a value (prompt: login) or a mapping {value: …} or {alias: …}; several values go in one space-separated string (ui_locales: "de fr")`}},
		{name: "value and alias", attributes: okAttr, params: "        login_hint: { alias: login_hint, value: x }\n",
			want: FieldError{Key: p + "upstream_params.login_hint", Reason: "set value or alias, not both"}},
		{name: "offline_access alias with DPoP", attributes: okAttr, params: "        offline_access: { alias: login_hint }\n",
			want: FieldError{Key: p + "upstream_params.offline_access", Reason: "alias login_hint enables Token Vault (offline access at the upstream), which is not compatible with DPoP: remove it or remove dpop_signing_alg"}},
		{name: "API claim that is reserved", attributes: okAttr, params: okParam, mut: func(c *Config) { c.APIs[0].Claims = []string{"scope"} },
			want: FieldError{Key: "apis[0].claims[0]", Reason: `"scope" is a reserved claim name: use a namespaced name such as https://example.com/scope`}},
		{name: "API claim twice", attributes: okAttr, params: okParam, mut: func(c *Config) { c.APIs[0].Claims = []string{"email", "email"} },
			want: FieldError{Key: "apis[0].claims[1]", Reason: `duplicate claim "email"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(claimsYAML(tt.attributes, tt.params)))
			var errs []FieldError
			if fe, ok := err.(FieldErrors); ok {
				errs = fe
			} else if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if tt.mut != nil {
				tt.mut(cfg)
			}
			errs = append(errs, cfg.Validate()...)
			if !slices.Contains(errs, tt.want) {
				t.Fatalf("got %v\nwant %v", FieldErrors(errs), tt.want)
			}
		})
	}
}
