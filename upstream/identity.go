package upstream

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"maps"
	"slices"
)

// Identity is what, besides the issuer and discovery_url, decides the user a connection's
// login yields (docs/claims.md): the client the upstream answers (an IdP may map claims per
// client), the scopes asked, whether userinfo is merged in, the extra authorization
// parameters (an alias lets the app's request send, say, a claims request, OIDC Core §5.5),
// and the claim mapping that makes the user profile (attributes.go). The console pins it for
// the connections that admit administrators (broker/consolepin.go).
type Identity struct {
	Strategy        string            `json:"strategy"`
	ClientID        string            `json:"client_id"`
	Scopes          []string          `json:"scope"` // sorted
	FetchUserinfo   bool              `json:"fetch_userinfo"`
	UpstreamParams  map[string]string `json:"upstream_params,omitempty"`
	UpstreamAliases map[string]string `json:"upstream_aliases,omitempty"`
	MappingMode     string            `json:"mapping_mode"`
	Attributes      map[string]string `json:"attributes,omitempty"`
}

// Identity returns the identity options of cfg as a connection uses them (cfg normalized:
// Normalized, or a Connection's Config).
func (cfg *Config) Identity() Identity {
	sc := slices.Clone(cfg.Scopes)
	slices.Sort(sc)
	return Identity{
		Strategy: cfg.Strategy, ClientID: cfg.ClientID, Scopes: sc, FetchUserinfo: cfg.FetchUserinfo,
		UpstreamParams: maps.Clone(cfg.UpstreamParams), UpstreamAliases: maps.Clone(cfg.UpstreamAliases),
		MappingMode: cfg.MappingMode, Attributes: maps.Clone(cfg.Attributes),
	}
}

// Digest is a SHA-256 of id's canonical JSON (map keys sorted), base64url: what a broker
// session records of the connection that made it.
func (id Identity) Digest() string {
	raw, _ := json.Marshal(id) // strings, bools and string maps: never fails
	sum := sha256.Sum256(raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Differences names the options (configuration names) in which id and o differ.
func (id Identity) Differences(o Identity) []string {
	var d []string
	add := func(differ bool, name string) {
		if differ {
			d = append(d, name)
		}
	}
	add(id.Strategy != o.Strategy, "strategy")
	add(id.ClientID != o.ClientID, "options.client_id")
	add(!slices.Equal(id.Scopes, o.Scopes), "options.scope")
	add(id.FetchUserinfo != o.FetchUserinfo, "options.fetch_userinfo")
	add(!maps.Equal(id.UpstreamParams, o.UpstreamParams) || !maps.Equal(id.UpstreamAliases, o.UpstreamAliases), "options.upstream_params")
	add(id.MappingMode != o.MappingMode || !maps.Equal(id.Attributes, o.Attributes), "options.attribute_map")
	return d
}
