package upstream

import (
	"reflect"
	"strings"
	"testing"
)

func TestClaimMappingProfile(t *testing.T) {
	idToken := map[string]any{
		"sub": "alice", "iss": "https://idp.example", "name": "Alice", "email": "alice@example.com",
		"groups": []any{"eng", "admins"}, "department": "R&D", "level": float64(3), "acr": "mfa",
	}
	userinfo := map[string]any{"sub": "alice", "email": "alice@corp.example", "picture": "https://example.com/a.png", "nickname": nil}
	tests := []struct {
		name       string
		mode       string
		attributes map[string]string
		userinfo   map[string]any
		want       map[string]any
	}{
		{name: "no mapping keeps the standard profile and email claims", want: map[string]any{"name": "Alice", "email": "alice@example.com"}},
		{name: "basic_profile prefers userinfo and adds attributes", mode: MappingBasicProfile, userinfo: userinfo,
			attributes: map[string]string{"https://example.com/groups": "${context.tokenset.id_token.groups}"},
			want:       map[string]any{"name": "Alice", "email": "alice@corp.example", "picture": "https://example.com/a.png", "https://example.com/groups": []any{"eng", "admins"}}},
		{name: "use_map keeps only the attributes", mode: MappingUseMap, userinfo: userinfo,
			attributes: map[string]string{
				"email":                      "${context.userinfo.email}",
				"https://example.com/groups": "${context.tokenset.id_token.groups}",
				"https://example.com/tenant": "acme",
			},
			want: map[string]any{"email": "alice@corp.example", "https://example.com/groups": []any{"eng", "admins"}, "https://example.com/tenant": "acme"}},
		{name: "text around references takes scalars and leaves out the rest", mode: MappingUseMap,
			attributes: map[string]string{
				"name":                "${context.tokenset.id_token.name} (${context.tokenset.id_token.department}, level ${context.tokenset.id_token.level})",
				"https://x.example/g": "groups: ${context.tokenset.id_token.groups}",
				"https://x.example/m": "${context.tokenset.id_token.missing}",
				"https://x.example/u": "${context.userinfo.email}",
			},
			want: map[string]any{"name": "Alice (R&D, level 3)"}},
		{name: "bind_all copies every claim that is not reserved", mode: MappingBindAll, userinfo: userinfo,
			want: map[string]any{"name": "Alice", "email": "alice@corp.example", "picture": "https://example.com/a.png", "department": "R&D", "level": float64(3)}},
		{name: "bind_all with an attribute maps a reserved claim to a namespaced one", mode: MappingBindAll,
			attributes: map[string]string{"https://example.com/groups": "${context.tokenset.id_token.groups}"},
			want:       map[string]any{"name": "Alice", "email": "alice@example.com", "department": "R&D", "level": float64(3), "https://example.com/groups": []any{"eng", "admins"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m *ClaimMapping
			if tt.mode != "" {
				var err error
				if m, err = NewClaimMapping(tt.mode, tt.attributes); err != nil {
					t.Fatalf("NewClaimMapping: %v", err)
				}
			}
			got, err := m.Profile(idToken, tt.userinfo)
			if err != nil {
				t.Fatalf("Profile: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("profile\n got %v\nwant %v", got, tt.want)
			}
		})
	}
}

func TestUpstreamCannotSetClaimsTheMappingOwns(t *testing.T) {
	const groups, team = "https://example.com/groups", "https://example.com/team"
	tests := []struct {
		name       string
		mode       string
		attributes map[string]string
		apiClaims  []string
		idToken    map[string]any
		userinfo   map[string]any
		want       map[string]any
	}{
		{name: "bind_all: an attribute whose claim is missing removes the upstream's claim of its name", mode: MappingBindAll,
			attributes: map[string]string{groups: "${context.userinfo.groups}"},
			idToken:    map[string]any{groups: []any{"admins"}, "department": "R&D"},
			want:       map[string]any{"department": "R&D"}},
		{name: "basic_profile: an attribute whose claim is missing removes the standard claim of its name", mode: MappingBasicProfile,
			attributes: map[string]string{"name": "${context.userinfo.display_name}"},
			idToken:    map[string]any{"name": "Mallory", "email": "m@example.com"},
			want:       map[string]any{"email": "m@example.com"}},
		{name: "bind_all: an attribute that cannot be rendered in text removes the upstream's claim", mode: MappingBindAll,
			attributes: map[string]string{team: "team ${context.tokenset.id_token.teams}"},
			idToken:    map[string]any{team: "root", "teams": []any{"a"}},
			want:       map[string]any{"teams": []any{"a"}}},
		{name: "bind_all does not copy the claims of API access tokens that are not standard", mode: MappingBindAll,
			apiClaims: []string{team, "email"},
			idToken:   map[string]any{team: "root", "email": "a@example.com", "department": "R&D"},
			want:      map[string]any{"email": "a@example.com", "department": "R&D"}},
		{name: "bind_all: an attribute still sets a claim of API access tokens", mode: MappingBindAll,
			apiClaims: []string{team}, attributes: map[string]string{team: "${context.tokenset.id_token.dept}"},
			idToken: map[string]any{team: "root", "dept": "R&D"},
			want:    map[string]any{team: "R&D", "dept": "R&D"}},
		{name: "distributed and aggregated claims are never copied", mode: MappingBindAll,
			idToken: map[string]any{"_claim_names": map[string]any{"groups": "src1"}, "_claim_sources": map[string]any{"src1": map[string]any{"endpoint": "https://evil.example/"}}, "department": "R&D"},
			want:    map[string]any{"department": "R&D"}},
		{name: "wrongly typed standard claims are left out", mode: MappingBindAll,
			idToken:  map[string]any{"email_verified": "yes", "updated_at": "2024-01-01", "name": []any{"A"}, "email": "a@example.com", "locale": float64(1)},
			userinfo: map[string]any{"picture": map[string]any{"url": "x"}},
			want:     map[string]any{"email": "a@example.com"}},
		{name: "well typed standard claims are kept", mode: MappingBasicProfile,
			idToken: map[string]any{"email_verified": true, "updated_at": float64(1700000000), "name": "A", "email": "a@example.com"},
			want:    map[string]any{"email_verified": true, "updated_at": float64(1700000000), "name": "A", "email": "a@example.com"}},
		{name: "a mapped standard claim of the wrong type is left out", mode: MappingUseMap,
			attributes: map[string]string{"email_verified": "${context.tokenset.id_token.ev}", "https://example.com/x": "x"},
			idToken:    map[string]any{"ev": "yes"},
			want:       map[string]any{"https://example.com/x": "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := NewClaimMapping(tt.mode, tt.attributes)
			if err != nil {
				t.Fatalf("NewClaimMapping: %v", err)
			}
			got, err := m.withAPIClaims(tt.apiClaims).Profile(tt.idToken, tt.userinfo)
			if err != nil {
				t.Fatalf("Profile: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("profile\n got %v\nwant %v", got, tt.want)
			}
		})
	}
}

func TestClaimMappingRefusesWhatItCannotMap(t *testing.T) {
	tests := []struct {
		name       string
		mode       string
		attributes map[string]string
		wantErr    string
	}{
		{name: "mode required", attributes: map[string]string{"name": "x"}, wantErr: `mapping_mode "" is not supported`},
		{name: "unknown mode", mode: "map_all", wantErr: `mapping_mode "map_all" is not supported`},
		{name: "use_map without attributes", mode: MappingUseMap, wantErr: "needs at least one attribute"},
		{name: "unknown template variable named", mode: MappingUseMap, attributes: map[string]string{"https://example.com/groups": "${context.tokenset.groups}"},
			wantErr: "attribute_map.attributes.https://example.com/groups: unknown template variable ${context.tokenset.groups}"},
		{name: "access token is no template variable", mode: MappingUseMap, attributes: map[string]string{"nickname": "${context.tokenset.access_token}"},
			wantErr: "unknown template variable ${context.tokenset.access_token}"},
		{name: "empty claim in a variable", mode: MappingUseMap, attributes: map[string]string{"nickname": "${context.userinfo.}"},
			wantErr: "unknown template variable ${context.userinfo.}"},
		{name: "unterminated reference", mode: MappingUseMap, attributes: map[string]string{"nickname": "${context.userinfo.nick"},
			wantErr: "unterminated ${"},
		{name: "reserved claim name needs a namespace", mode: MappingUseMap, attributes: map[string]string{"groups": "${context.tokenset.id_token.groups}"},
			wantErr: `attribute_map.attributes.groups: "groups" is a reserved claim name: use a namespaced name such as https://example.com/groups`},
		{name: "protocol claim cannot be mapped", mode: MappingBindAll, attributes: map[string]string{"sub": "${context.userinfo.email}"},
			wantErr: `"sub" is a reserved claim name`},
		{name: "control character in a claim name", mode: MappingUseMap, attributes: map[string]string{"nick\nname": "x"},
			wantErr: "without control characters"},
		{name: "distributed claim names are reserved", mode: MappingUseMap, attributes: map[string]string{"_claim_sources": "x"},
			wantErr: `"_claim_sources" is a reserved claim name`},
		{name: "a boolean standard claim cannot be text", mode: MappingUseMap, attributes: map[string]string{"email_verified": "true"},
			wantErr: "attribute_map.attributes.email_verified: email_verified is not a string (OIDC Core §5.1)"},
		{name: "template too long", mode: MappingUseMap, attributes: map[string]string{"nickname": strings.Repeat("x", 1025)},
			wantErr: "at most 1024 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewClaimMapping(tt.mode, tt.attributes)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestLoginMapsIDTokenAndUserinfoClaimsIntoTheProfile(t *testing.T) {
	f := newFakeIdP(t, func(f *fakeIdP) {
		f.mutate = func(c map[string]any) { c["groups"] = []any{"eng"} }
	})
	c := newConn(t, f, func(cfg *Config) {
		cfg.MappingMode = MappingUseMap
		cfg.Attributes = map[string]string{
			"https://example.com/groups": "${context.tokenset.id_token.groups}",
			"picture":                    "${context.userinfo.picture}",
			"name":                       "${context.tokenset.id_token.name}",
		}
	}, nil)
	if !c.Config().FetchUserinfo {
		t.Fatal("a mapping that reads userinfo must turn the userinfo fetch on")
	}
	res, err := login(t, c, f)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	want := map[string]any{"https://example.com/groups": []any{"eng"}, "picture": "https://example.com/a.png", "name": "Alice"}
	if !reflect.DeepEqual(res.Profile, want) {
		t.Errorf("profile %v, want %v", res.Profile, want)
	}
	if f.userinfoHits.Load() != 1 {
		t.Errorf("userinfo called %d times, want 1", f.userinfoHits.Load())
	}
}

func TestOversizedProfileFailsTheLoginWithItsCode(t *testing.T) {
	f := newFakeIdP(t, func(f *fakeIdP) {
		f.mutate = func(c map[string]any) { c["blob"] = strings.Repeat("x", MaxProfileBytes) }
	})
	c := newConn(t, f, func(cfg *Config) { cfg.MappingMode = MappingBindAll }, nil)
	res, err := login(t, c, f)
	if CodeOf(err) != CodeClaimsTooLarge || res.Profile != nil {
		t.Fatalf("err = %v (code %s), profile %v; want %s and no profile", err, CodeOf(err), res.Profile, CodeClaimsTooLarge)
	}
}
