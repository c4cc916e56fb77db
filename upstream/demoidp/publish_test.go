package demoidp

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"maps"
	"slices"
	"testing"

	"github.com/go-jose/go-jose/v4"
)

func TestMetadataLeavesUnsetOptionalMembersOut(t *testing.T) {
	d := Metadata{Issuer: "http://127.0.0.1:1/tenant/", IDTokenAlgs: []string{"RS256"}}.Document()
	want := map[string]any{
		"issuer":                                "http://127.0.0.1:1/tenant/",
		"authorization_endpoint":                "http://127.0.0.1:1/tenant/authorize",
		"token_endpoint":                        "http://127.0.0.1:1/tenant/token",
		"jwks_uri":                              "http://127.0.0.1:1/tenant/jwks",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
	}
	if got, wantKeys := slices.Sorted(maps.Keys(d)), slices.Sorted(maps.Keys(want)); !slices.Equal(got, wantKeys) {
		t.Fatalf("members %v, want %v", got, wantKeys)
	}
	gotJSON, _ := json.Marshal(d)
	wantJSON, _ := json.Marshal(want)
	if string(gotJSON) != string(wantJSON) {
		t.Errorf("document %s, want %s", gotJSON, wantJSON)
	}
}

func TestMetadataAdvertisesWhatIsSet(t *testing.T) {
	m := Metadata{
		Issuer: "http://h", IDTokenAlgs: []string{"ES256"}, AuthMethods: []string{"client_secret_post"},
		DPoPAlgs: []string{}, GrantTypes: []string{"authorization_code"}, ResponseModes: []string{"query"},
		Scopes: []string{"openid"}, Claims: []string{"sub"},
		PKCE: true, Userinfo: true, EndSession: true, IssParameter: true,
	}
	d := m.Document()
	for member, want := range map[string]any{
		"token_endpoint_auth_methods_supported":          []string{"client_secret_post"},
		"dpop_signing_alg_values_supported":              []string{}, // set but empty: present
		"grant_types_supported":                          []string{"authorization_code"},
		"response_modes_supported":                       []string{"query"},
		"scopes_supported":                               []string{"openid"},
		"claims_supported":                               []string{"sub"},
		"code_challenge_methods_supported":               []string{"S256"},
		"userinfo_endpoint":                              "http://h/userinfo",
		"end_session_endpoint":                           "http://h/logout",
		"authorization_response_iss_parameter_supported": true,
	} {
		got, _ := json.Marshal(d[member])
		w, _ := json.Marshal(want)
		if string(got) != string(w) {
			t.Errorf("%s = %s, want %s", member, got, w)
		}
	}
	m.Scopes[0] = "changed"
	if d["scopes_supported"].([]string)[0] != "openid" {
		t.Error("the document shares its slices with the Metadata")
	}
}

func TestSigningKeyJWKSVerifiesWhatItSigns(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := NewSigningKey(ec, jose.ES256)
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(sk.JWKS, &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 || !set.Keys[0].IsPublic() || set.Keys[0].KeyID != sk.KeyID ||
		set.Keys[0].Algorithm != "ES256" || set.Keys[0].Use != "sig" {
		t.Fatalf("JWK Set %s", sk.JWKS)
	}
	jws, err := sk.Signer.Sign([]byte(`{"sub":"alice"}`))
	if err != nil {
		t.Fatal(err)
	}
	compact, _ := jws.CompactSerialize()
	parsed, err := jose.ParseSignedCompact(compact, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	if h := parsed.Signatures[0].Header; h.KeyID != sk.KeyID || h.ExtraHeaders["typ"] != "JWT" {
		t.Errorf("header kid %q typ %v", h.KeyID, h.ExtraHeaders["typ"])
	}
	if _, err := parsed.Verify(&set.Keys[0]); err != nil {
		t.Errorf("the published key does not verify: %v", err)
	}
}

func TestRSAKeyIsSharedUnlessFresh(t *testing.T) {
	a, err := RSAKey(false)
	if err != nil {
		t.Fatal(err)
	}
	b, err := RSAKey(false)
	if err != nil {
		t.Fatal(err)
	}
	if a != b || a.N.BitLen() != 2048 {
		t.Fatalf("process key: same %v, %d bits", a == b, a.N.BitLen())
	}
	fresh, err := RSAKey(true)
	if err != nil {
		t.Fatal(err)
	}
	if fresh.Equal(a) {
		t.Error("a fresh key equals the process key")
	}
}

func TestFreshKeyProvidersPublishDifferentKeys(t *testing.T) {
	shared1, shared2 := startProvider(t, Options{}), startProvider(t, Options{})
	fresh := startProvider(t, Options{FreshKey: true})
	kid := func(p *Provider) any {
		keys, _ := getJSON(t, p.URL+"/jwks")["keys"].([]any)
		if len(keys) != 1 {
			t.Fatalf("jwks keys %v", keys)
		}
		return keys[0].(map[string]any)["kid"]
	}
	if kid(shared1) != kid(shared2) {
		t.Error("two providers of one process publish different keys")
	}
	if kid(fresh) == kid(shared1) {
		t.Error("a FreshKey provider publishes the process key")
	}
}
