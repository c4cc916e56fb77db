package upstream

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Claim mapping (a connection's options.attribute_map, in the identity SaaS's form): which
// claims of the upstream user become the broker's user profile, the claims the broker's own
// tokens and /userinfo carry. docs/claims.md describes the modes and the templates.

// Mapping modes (options.attribute_map.mapping_mode).
const (
	// MappingBasicProfile keeps the standard OIDC profile and email claims (OIDC Core §5.1,
	// §5.4), then applies the attributes. It is the mode of a connection without attribute_map.
	MappingBasicProfile = "basic_profile"
	// MappingUseMap keeps only the attributes.
	MappingUseMap = "use_map"
	// MappingBindAll keeps every upstream claim whose name is not reserved, then applies the
	// attributes.
	MappingBindAll = "bind_all"
)

// MappingModes lists the mapping modes.
var MappingModes = []string{MappingUseMap, MappingBindAll, MappingBasicProfile}

// ProfileClaims (scope profile) and EmailClaims (scope email) are the standard claims of the
// broker's user profile (OIDC Core §5.4): released in ID tokens and /userinfo by scope.
var (
	ProfileClaims = []string{
		"name", "given_name", "family_name", "middle_name", "nickname", "preferred_username",
		"profile", "picture", "website", "gender", "birthdate", "zoneinfo", "locale", "updated_at",
	}
	EmailClaims = []string{"email", "email_verified"}
)

// StandardClaim reports whether name is one of ProfileClaims or EmailClaims.
func StandardClaim(name string) bool {
	return slices.Contains(ProfileClaims, name) || slices.Contains(EmailClaims, name)
}

// reservedClaims may not be claims of the broker's user profile: the broker sets them in its
// tokens itself (RFC 7519 §4.1, OIDC Core §2, RFC 9068 §2.2, RFC 9449 §6), they are standard
// claims of scopes the broker does not offer (phone, address), or they are names the identity
// SaaS reserves for itself (groups, roles, permissions, …), which must be namespaced there too.
var reservedClaims = map[string]bool{
	"iss": true, "sub": true, "aud": true, "exp": true, "nbf": true, "iat": true, "jti": true,
	"nonce": true, "azp": true, "at_hash": true, "c_hash": true, "s_hash": true, "auth_time": true,
	"acr": true, "amr": true, "sid": true, "cnf": true, "scope": true, "client_id": true,
	"typ": true, "cty": true, "alg": true, "kid": true, "jku": true, "jwk": true, "x5t#S256": true,
	"events": true, "act": true, "may_act": true, "active": true, "ath": true, "htm": true,
	"htu": true, "authorization_details": true, "sub_jwk": true, "txn": true, "toe": true,
	"phone_number": true, "phone_number_verified": true, "address": true,
	"groups": true, "roles": true, "permissions": true, "entitlements": true, "org_id": true,
	"org_name": true, "gty": true, "uuid": true, "dest": true, "internalService": true,
	"object_id": true, "orig": true, "origid": true, "vot": true, "vtm": true, "attest": true,
	"jcard": true, "jwe": true, "mky": true, "rph": true,
	// OIDC Core §5.6.2: distributed and aggregated claims point at other sources (any URL);
	// the broker does not resolve them and never passes them on.
	"_claim_names": true, "_claim_sources": true,
}

// JSON types of the standard claims (OIDC Core §5.1). A profile claim of one of these names
// whose value has another type is left out of the profile (ClaimMapping.Profile).
const (
	claimString = iota
	claimBool
	claimNumber
	claimObject
)

var standardClaimTypes = map[string]int{
	"name": claimString, "given_name": claimString, "family_name": claimString,
	"middle_name": claimString, "nickname": claimString, "preferred_username": claimString,
	"profile": claimString, "picture": claimString, "website": claimString,
	"email": claimString, "email_verified": claimBool, "gender": claimString,
	"birthdate": claimString, "zoneinfo": claimString, "locale": claimString,
	"phone_number": claimString, "phone_number_verified": claimBool, "address": claimObject,
	"updated_at": claimNumber,
}

// wellTyped reports whether v has the JSON type OIDC Core §5.1 gives the standard claim name
// (any value for a claim that is not standard).
func wellTyped(name string, v any) bool {
	t, ok := standardClaimTypes[name]
	if !ok {
		return true
	}
	switch v.(type) {
	case string:
		return t == claimString
	case bool:
		return t == claimBool
	case float64, json.Number:
		return t == claimNumber
	case map[string]any:
		return t == claimObject
	}
	return false
}

// Bounds of a claim mapping: they keep the user's session record and tokens small.
const (
	MaxAttributes      = 64
	maxClaimNameBytes  = 256
	maxTemplateBytes   = 1024
	MaxProfileBytes    = 16 << 10 // the user profile, JSON-encoded
	maxTemplateVarRefs = 16
)

// CodeClaimsTooLarge is the login failure of a user profile larger than MaxProfileBytes.
const CodeClaimsTooLarge = "claims_too_large"

// CheckClaimName checks the name of a profile claim (an attributes key, or a claim an API's
// access tokens carry): not empty, at most 256 bytes, no control characters, not reserved
// (reservedClaims).
func CheckClaimName(name string) error {
	switch {
	case name == "":
		return errors.New("a claim name must not be empty")
	case len(name) > maxClaimNameBytes:
		return fmt.Errorf("a claim name must be at most %d bytes", maxClaimNameBytes)
	case strings.ContainsFunc(name, unicode.IsControl) || !utf8.ValidString(name):
		return errors.New("a claim name must be UTF-8 text without control characters")
	case reservedClaims[name]:
		return fmt.Errorf("%q is a reserved claim name: use a namespaced name such as https://example.com/%s", name, name)
	}
	return nil
}

// Template variable prefixes: ${context.tokenset.id_token.CLAIM} and ${context.userinfo.CLAIM}.
const (
	varIDToken  = "context.tokenset.id_token."
	varUserinfo = "context.userinfo."
)

// templatePart is a literal, or a reference to a claim of the ID token or of userinfo.
type templatePart struct {
	literal  string
	userinfo bool   // the claim comes from userinfo (else from the ID token)
	claim    string // "" for a literal
}

// CheckTemplate checks an attribute value: literal text with ${context.tokenset.id_token.CLAIM}
// and ${context.userinfo.CLAIM} references. Any other ${…} is refused, naming the variable.
func CheckTemplate(s string) error {
	_, err := parseTemplate(s)
	return err
}

// parseTemplate is CheckTemplate returning the template's parts.
func parseTemplate(s string) ([]templatePart, error) {
	if len(s) > maxTemplateBytes {
		return nil, fmt.Errorf("the template must be at most %d bytes", maxTemplateBytes)
	}
	var parts []templatePart
	refs := 0
	for rest := s; rest != ""; {
		i := strings.Index(rest, "${")
		if i < 0 {
			parts = append(parts, templatePart{literal: rest})
			break
		}
		if i > 0 {
			parts = append(parts, templatePart{literal: rest[:i]})
		}
		end := strings.IndexByte(rest[i:], '}')
		if end < 0 {
			return nil, fmt.Errorf("unterminated ${ in template %q", s)
		}
		name := rest[i+2 : i+end]
		rest = rest[i+end+1:]
		p := templatePart{}
		switch {
		case strings.HasPrefix(name, varIDToken) && len(name) > len(varIDToken):
			p.claim = name[len(varIDToken):]
		case strings.HasPrefix(name, varUserinfo) && len(name) > len(varUserinfo):
			p.claim, p.userinfo = name[len(varUserinfo):], true
		default:
			return nil, fmt.Errorf("unknown template variable ${%s} (use ${%sCLAIM} or ${%sCLAIM})", name, varIDToken, varUserinfo)
		}
		if refs++; refs > maxTemplateVarRefs {
			return nil, fmt.Errorf("a template may reference at most %d claims", maxTemplateVarRefs)
		}
		parts = append(parts, p)
	}
	return parts, nil
}

// ClaimMapping is a checked options.attribute_map. The nil mapping is basic_profile without
// attributes (a connection without attribute_map).
type ClaimMapping struct {
	mode  string
	names []string // attribute names, sorted
	attrs map[string][]templatePart
	// apiOwned are the claims APIs' access tokens carry (apis[].claims, Options.APIClaims):
	// bind_all does not copy those that are not standard from the upstream.
	apiOwned map[string]bool
}

// NewClaimMapping checks and compiles a mapping: mode (MappingModes; "" is refused), the
// attributes (claim name → template; use_map needs at least one). The first problem is
// returned naming its attribute; config validation reports every one.
func NewClaimMapping(mode string, attributes map[string]string) (*ClaimMapping, error) {
	if !slices.Contains(MappingModes, mode) {
		return nil, fmt.Errorf("attribute_map.mapping_mode %q is not supported (use use_map, bind_all or basic_profile)", mode)
	}
	if mode == MappingUseMap && len(attributes) == 0 {
		return nil, errors.New("attribute_map.attributes: mapping_mode use_map needs at least one attribute")
	}
	if len(attributes) > MaxAttributes {
		return nil, fmt.Errorf("attribute_map.attributes: at most %d attributes", MaxAttributes)
	}
	m := &ClaimMapping{mode: mode, names: slices.Sorted(maps.Keys(attributes)), attrs: map[string][]templatePart{}}
	for _, name := range m.names {
		if err := CheckClaimName(name); err != nil {
			return nil, fmt.Errorf("attribute_map.attributes.%s: %w", name, err)
		}
		parts, err := parseTemplate(attributes[name])
		if err != nil {
			return nil, fmt.Errorf("attribute_map.attributes.%s: %w", name, err)
		}
		if t, std := standardClaimTypes[name]; std && t != claimString && (len(parts) != 1 || parts[0].claim == "") {
			return nil, fmt.Errorf("attribute_map.attributes.%s: %s is not a string (OIDC Core §5.1): its template must be one ${…} reference alone", name, name)
		}
		m.attrs[name] = parts
	}
	return m, nil
}

// normalizeClaims compiles the claim mapping (none when MappingMode is empty) and turns the
// userinfo fetch on when the mapping reads userinfo.
func (cfg *Config) normalizeClaims() error {
	cfg.claims = nil
	if cfg.MappingMode == "" && len(cfg.Attributes) == 0 {
		return nil
	}
	m, err := NewClaimMapping(cfg.MappingMode, cfg.Attributes)
	if err != nil {
		return err
	}
	cfg.claims, cfg.Attributes = m, maps.Clone(cfg.Attributes)
	if m.NeedsUserinfo() {
		cfg.FetchUserinfo = true
	}
	return nil
}

// withAPIClaims returns m (basic_profile without attributes when nil) knowing the claims the
// APIs' access tokens carry.
func (m *ClaimMapping) withAPIClaims(names []string) *ClaimMapping {
	if len(names) == 0 {
		return m
	}
	c := &ClaimMapping{mode: MappingBasicProfile}
	if m != nil {
		c = &ClaimMapping{mode: m.mode, names: m.names, attrs: m.attrs}
	}
	c.apiOwned = map[string]bool{}
	for _, n := range names {
		c.apiOwned[n] = true
	}
	return c
}

// NeedsUserinfo reports whether an attribute reads ${context.userinfo.…}.
func (m *ClaimMapping) NeedsUserinfo() bool {
	if m == nil {
		return false
	}
	for _, parts := range m.attrs {
		if slices.ContainsFunc(parts, func(p templatePart) bool { return p.userinfo }) {
			return true
		}
	}
	return false
}

// Profile returns the user profile of an upstream login: the claims the mode keeps, of the ID
// token and of userinfo (userinfo, when fetched, wins over the ID token for the same claim, as
// OIDC Core §5.3.2 treats it as the fresher source), then the attributes. A name an attribute
// owns is always the attribute's result: an attribute whose template names a claim the
// upstream did not send is left out, whatever the mode copied; a template with text around its
// references takes only strings, numbers and booleans (anything else leaves it out), while a
// template that is one reference alone copies the claim's value as it is (a list of groups).
// bind_all copies neither the attributes' names nor the claims the APIs' access tokens carry
// that are not standard (those come from attributes only). A standard claim whose value has
// not the type OIDC Core §5.1 gives it (email_verified "yes") is left out.
// A profile larger than MaxProfileBytes is an error with code claims_too_large.
func (m *ClaimMapping) Profile(idToken, userinfo map[string]any) (map[string]any, error) {
	mode := MappingBasicProfile
	if m != nil {
		mode = m.mode
	}
	out := map[string]any{}
	keep := func(k string) bool { return false }
	switch mode {
	case MappingBasicProfile:
		keep = StandardClaim
	case MappingBindAll:
		keep = func(k string) bool {
			return CheckClaimName(k) == nil && (StandardClaim(k) || !m.apiOwned[k])
		}
	}
	for _, src := range []map[string]any{idToken, userinfo} {
		for k, v := range src {
			if v != nil && keep(k) {
				out[k] = v
			}
		}
	}
	if m != nil {
		for _, name := range m.names {
			if v, ok := render(m.attrs[name], idToken, userinfo); ok {
				out[name] = v
			} else {
				delete(out, name)
			}
		}
	}
	for k, v := range out {
		if !wellTyped(k, v) {
			delete(out, k)
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, &Error{Code: CodeClaimsTooLarge, Description: fmt.Sprintf("the mapped user profile cannot be encoded: %v", err), Err: err}
	}
	if len(b) > MaxProfileBytes {
		return nil, &Error{Code: CodeClaimsTooLarge, Description: fmt.Sprintf(
			"the mapped user profile has %d bytes, more than the %d allowed: narrow options.attribute_map (mapping_mode use_map, fewer attributes)", len(b), MaxProfileBytes)}
	}
	return out, nil
}

// render evaluates one attribute template; ok is false when it is to be left out.
func render(parts []templatePart, idToken, userinfo map[string]any) (any, bool) {
	lookup := func(p templatePart) (any, bool) {
		src := idToken
		if p.userinfo {
			src = userinfo
		}
		v, ok := src[p.claim]
		return v, ok && v != nil
	}
	if len(parts) == 1 && parts[0].claim != "" {
		return lookup(parts[0])
	}
	var b strings.Builder
	for _, p := range parts {
		if p.claim == "" {
			b.WriteString(p.literal)
			continue
		}
		v, ok := lookup(p)
		if !ok {
			return nil, false
		}
		switch v := v.(type) {
		case string:
			b.WriteString(v)
		case bool:
			b.WriteString(strconv.FormatBool(v))
		case float64:
			b.WriteString(strconv.FormatFloat(v, 'f', -1, 64))
		case json.Number:
			b.WriteString(v.String())
		default:
			return nil, false
		}
	}
	return b.String(), true
}
