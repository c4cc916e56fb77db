package broker

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// Config is the broker configuration file (config.example.yaml documents every key).
type Config struct {
	Issuer      string             `yaml:"issuer"`
	Listen      string             `yaml:"listen"`
	PublicURL   string             `yaml:"public_url"`
	Store       StoreConfig        `yaml:"store"`
	Keys        KeysConfig         `yaml:"keys"`
	Lifetimes   LifetimesConfig    `yaml:"lifetimes"`
	DPoP        DPoPConfig         `yaml:"dpop"`
	DPoPServer  DPoPServerConfig   `yaml:"dpop_server"`
	Logs        LogsConfig         `yaml:"logs"`
	Clients     []ClientConfig     `yaml:"clients"`
	APIs        []APIConfig        `yaml:"apis"`
	Connections []ConnectionConfig `yaml:"connections"`
	Management  ManagementConfig   `yaml:"management"`
	// TrustedProxies are the proxies (CIDRs or addresses) whose X-Forwarded-For names the
	// client (ratelimit.go); RateLimits limit /authorize and /oauth/token per IP and client.
	TrustedProxies []string         `yaml:"trusted_proxies"`
	RateLimits     RateLimitsConfig `yaml:"rate_limits"`

	// UpstreamTimeout bounds every call to an upstream IdP (discovery, JWKS, token, userinfo).
	UpstreamTimeout time.Duration `yaml:"upstream_timeout"`
	// UpstreamAllowedNetworks (CIDRs or addresses) are the internal networks upstream calls
	// may connect to; other loopback, private, link-local, … addresses are refused when
	// dialled (egress.go). Default none: public addresses only.
	UpstreamAllowedNetworks []string `yaml:"upstream_allowed_networks"`

	// AllowInsecureHTTP is the development switch that accepts plain http on non-loopback
	// hosts for issuer, public_url, redirect URIs and allowed origins (urlrules.go). It is
	// logged as a warning at every start and never admits other schemes.
	AllowInsecureHTTP bool `yaml:"allow_insecure_http"`

	// GenerateMissingKeys makes New generate any key the configuration does not provide
	// (the demo). Serve leaves it false: a missing key is then a validation error.
	GenerateMissingKeys bool `yaml:"-"`
}

// StoreConfig selects the session store.
type StoreConfig struct {
	Type   string            `yaml:"type"` // memory | redis
	Redis  RedisConfig       `yaml:"redis"`
	Memory MemoryStoreConfig `yaml:"memory"`
}

// MemoryStoreConfig bounds the memory store: at most MaxRecords live records (transactions,
// sessions, codes, refresh tokens, proof jtis); a write beyond it fails closed (503,
// details.error store_full). Redis is bounded by its own maxmemory (README).
type MemoryStoreConfig struct {
	MaxRecords int `yaml:"max_records"`
	// MaxReplayRecords is the share of MaxRecords the DPoP proof replay cache may hold
	// (0: half of MaxRecords; replaylimit.go), so proofs cannot take the room of logins.
	MaxReplayRecords int `yaml:"max_replay_records"`
}

// RedisConfig is the Redis connection: one address, several (Cluster), or Sentinel.
type RedisConfig struct {
	Addrs      []string `yaml:"addrs"`
	MasterName string   `yaml:"master_name"`
	Username   string   `yaml:"username"`
	Password   string   `yaml:"password"`
	// SentinelUsername and SentinelPassword authenticate to the Sentinels (master_name set).
	SentinelUsername string        `yaml:"sentinel_username"`
	SentinelPassword string        `yaml:"sentinel_password"`
	DB               int           `yaml:"db"`
	Prefix           string        `yaml:"prefix"`
	Timeout          time.Duration `yaml:"timeout"`
	TLS              RedisTLS      `yaml:"tls"`
}

// RedisTLS is TLS toward Redis (managed services with in-transit encryption). The server
// certificate is always verified: against ca_file when set, else the system roots.
type RedisTLS struct {
	Enabled    bool   `yaml:"enabled"`
	CAFile     string `yaml:"ca_file"`     // PEM CA bundle; default: the system roots
	ServerName string `yaml:"server_name"` // default: the host of each address
	CertFile   string `yaml:"cert_file"`   // client certificate (tls-auth-clients), with key_file
	KeyFile    string `yaml:"key_file"`
}

// KeySource names a PEM private key in a file or an environment variable.
type KeySource struct {
	PrivateKeyFile string `yaml:"private_key_file"`
	PrivateKeyEnv  string `yaml:"private_key_env"`
}

// given reports whether a source is configured.
func (k KeySource) given() bool { return k.PrivateKeyFile != "" || k.PrivateKeyEnv != "" }

// SigningKeyConfig is the broker's ID-token and access-token signing key.
type SigningKeyConfig struct {
	Alg       string `yaml:"alg"` // RS256 | ES256
	KeySource `yaml:",inline"`
}

// DPoPKeysConfig holds the broker's DPoP keys toward upstreams, by key type.
type DPoPKeysConfig struct {
	ES256   KeySource `yaml:"es256"`
	Ed25519 KeySource `yaml:"ed25519"`
	RSA     KeySource `yaml:"rsa"`
}

// KeysConfig groups the broker's private keys.
type KeysConfig struct {
	Signing SigningKeyConfig `yaml:"signing"`
	// PreviousSigning are signing keys that keys.signing replaced (newest first), or the one
	// about to replace it during a rolling rotation: published in the JWKS and accepted for
	// the broker's own access tokens (JWT and opaque), never used to sign. Remove a replaced
	// one once the longest token lifetime has passed since the rotation.
	PreviousSigning []SigningKeyConfig `yaml:"previous_signing"`
	DPoP            DPoPKeysConfig     `yaml:"dpop"`
}

// LifetimesConfig are the TTLs of the broker's records and tokens.
type LifetimesConfig struct {
	Transaction time.Duration `yaml:"transaction"`
	Code        time.Duration `yaml:"code"`
	Session     time.Duration `yaml:"session"`
	IDToken     time.Duration `yaml:"id_token"`
	AccessToken time.Duration `yaml:"access_token"`
	// RefreshToken is the absolute lifetime of a refresh-token family (rotation keeps the
	// first expiry); a refresh also needs the broker session to be alive.
	RefreshToken time.Duration `yaml:"refresh_token"`
}

// DPoPConfig is the DPoP timing toward upstreams.
type DPoPConfig struct {
	ClockSkew      time.Duration `yaml:"clock_skew"`
	ClockTolerance time.Duration `yaml:"clock_tolerance"`
	RetryDelay     time.Duration `yaml:"retry_delay"`
	Jitter         time.Duration `yaml:"jitter"`
	MaxRetries     int           `yaml:"max_retries"`
}

// DPoPServerConfig is how the broker checks DPoP proofs from its own apps at /oauth/token and
// /userinfo (RFC 9449 as a server).
type DPoPServerConfig struct {
	RequireNonce bool          `yaml:"require_nonce"` // demand server nonces (DS-10, DS-16)
	NonceSecret  string        `yaml:"nonce_secret"`  // ≥ 32 bytes, shared by all replicas
	NoncePeriod  time.Duration `yaml:"nonce_period"`  // nonce rotation step
	MaxAge       time.Duration `yaml:"max_age"`       // oldest accepted iat (DS-14)
	MaxFuture    time.Duration `yaml:"max_future"`    // furthest-ahead accepted iat (DS-14)
	Algs         []string      `yaml:"algs"`          // accepted proof algs, advertised (DS-5, DS-25)
}

// Sender-constraining policies of an API (resource server).
const (
	PolicyNone     = "none"
	PolicyAllowed  = "allowed"
	PolicyRequired = "required"
)

// APIConfig is one resource server apps may request tokens for (audience parameter).
type APIConfig struct {
	Audience           string `yaml:"audience"`
	Name               string `yaml:"name"`
	SenderConstraining string `yaml:"sender_constraining"` // none (default) | allowed | required
	// RequiredFor narrows sender_constraining: required: all_clients (default) applies it to
	// every client; public_clients only to public clients (SPAs, native apps), confidential
	// clients being treated as allowed (reference.md §D, required_for).
	RequiredFor string `yaml:"required_for"`
	// Scopes are the permissions the API defines. A token for the API carries only scopes it
	// defines and the client's grant (clients[].apis) allows (grants.go).
	Scopes []APIScope `yaml:"scopes"`
}

// APIScope is one permission an API defines: a scope name apps may request (RFC 6749 §3.3
// scope-token) and what it allows, for people reading the configuration.
type APIScope struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
}

// required_for values (reference.md §D).
const (
	RequiredForAll    = "all_clients"
	RequiredForPublic = "public_clients"
)

// LogsConfig is the store-backed event log retention (by count and by age) of the audit
// class, the retention and limits of the unauthenticated class, and the retention of the
// admin class (eventlog.go).
type LogsConfig struct {
	MaxEvents       int                       `yaml:"max_events"`
	MaxAge          time.Duration             `yaml:"max_age"`
	Unauthenticated UnauthenticatedLogsConfig `yaml:"unauthenticated"`
	Admin           AdminLogsConfig           `yaml:"admin"`
}

// ManagementConfig guards the management API under /api/v2 (mgmt.go). Without tokens every
// call is answered 401.
type ManagementConfig struct {
	Tokens []ManagementToken `yaml:"tokens"`
}

// ManagementToken is one static bearer token and the scopes it grants.
type ManagementToken struct {
	Name   string   `yaml:"name"` // shown in sapi/fapi events; default "tokens[i]"
	Token  string   `yaml:"token"`
	Scopes []string `yaml:"scopes"`
}

// ClientConfig is one downstream application.
type ClientConfig struct {
	ClientID                string   `yaml:"client_id"`
	Name                    string   `yaml:"name"`
	ClientSecret            string   `yaml:"client_secret"`
	TokenEndpointAuthMethod string   `yaml:"token_endpoint_auth_method"`
	RedirectURIs            []string `yaml:"redirect_uris"`
	// PostLogoutRedirectURIs are where /oidc/logout may send the browser
	// (post_logout_redirect_uri, exact match; OpenID Connect RP-Initiated Logout 1.0).
	PostLogoutRedirectURIs []string `yaml:"post_logout_redirect_uris"`
	AllowedOrigins         []string `yaml:"allowed_origins"`
	Connections            []string `yaml:"connections"`
	// RequireSenderConstraining refuses tokens that would not be DPoP-bound (the SaaS's
	// require_proof_of_possession); DPoPBoundAccessTokens is the RFC 9449 §5.2 metadata with
	// the same effect on token requests (DS-22).
	RequireSenderConstraining bool `yaml:"require_sender_constraining"`
	DPoPBoundAccessTokens     bool `yaml:"dpop_bound_access_tokens"`
	// APIs are the client's grants: the APIs (apis[].audience) it may obtain access tokens
	// for, each with the API scopes it may receive. No grant: no token for that API.
	APIs []APIGrant `yaml:"apis"`
}

// APIGrant lets a client obtain access tokens for one API, carrying at most Scopes (names
// the API defines in apis[].scopes).
type APIGrant struct {
	Audience string   `yaml:"audience"`
	Scopes   []string `yaml:"scopes"`
}

// requiresPoP reports whether the client must receive sender-constrained tokens.
func (c *ClientConfig) requiresPoP() bool {
	return c.RequireSenderConstraining || c.DPoPBoundAccessTokens
}

// Public reports whether the client authenticates with PKCE only.
func (c *ClientConfig) Public() bool { return c.authMethod() == AuthNone }

// authMethod returns the configured method, defaulting on the presence of a secret.
func (c *ClientConfig) authMethod() string {
	switch {
	case c.TokenEndpointAuthMethod != "":
		return c.TokenEndpointAuthMethod
	case c.ClientSecret != "":
		return AuthSecretBasic
	default:
		return AuthNone
	}
}

// Client authentication methods at /oauth/token.
const (
	AuthSecretBasic = "client_secret_basic"
	AuthSecretPost  = "client_secret_post"
	AuthNone        = "none"
)

// ConnectionConfig is one upstream connection. The YAML seeds the store (registry.go); the
// JSON form is the stored document and the management API's connection object.
type ConnectionConfig struct {
	ID          string            `yaml:"id" json:"id"`
	Name        string            `yaml:"name" json:"name"`
	DisplayName string            `yaml:"display_name" json:"display_name,omitempty"`
	Strategy    string            `yaml:"strategy" json:"strategy"` // oidc | okta
	Options     ConnectionOptions `yaml:"options" json:"options"`
	// EnabledClients are client ids that may use the connection, in addition to the clients
	// whose own connections list names it.
	EnabledClients []string `yaml:"enabled_clients" json:"enabled_clients,omitempty"`
}

// ConnectionOptions mirror the SaaS connection options.
type ConnectionOptions struct {
	Issuer                string    `yaml:"issuer" json:"issuer,omitempty"`
	DiscoveryURL          string    `yaml:"discovery_url" json:"discovery_url,omitempty"`
	Domain                string    `yaml:"domain" json:"domain,omitempty"`
	AuthorizationServerID string    `yaml:"authorization_server_id" json:"authorization_server_id,omitempty"`
	ClientID              string    `yaml:"client_id" json:"client_id"`
	ClientSecret          string    `yaml:"client_secret" json:"client_secret,omitempty"` // write-only in the API
	Scope                 string    `yaml:"scope" json:"scope"`
	Type                  string    `yaml:"type" json:"type"`
	DPoPSigningAlg        string    `yaml:"dpop_signing_alg" json:"dpop_signing_alg,omitempty"`
	FetchUserinfo         bool      `yaml:"fetch_userinfo" json:"fetch_userinfo"`
	UpstreamParams        ParamMap  `yaml:"upstream_params" json:"upstream_params,omitempty"`
	TokenVault            *Activity `yaml:"federated_connections_access_tokens" json:"federated_connections_access_tokens,omitempty"`
	// CallbackPath is shared (default: PUBLIC_URL/login/callback) or dedicated
	// (PUBLIC_URL/login/callback/{connection id}, the mix-up defence of RFC 9700 §4.4.2 for
	// upstreams without RFC 9207 iss; callbackpath.go).
	CallbackPath string `yaml:"callback_path" json:"callback_path,omitempty"`
}

// Activity is an {active: bool} setting. federated_connections_access_tokens (Token Vault) is
// recorded only so that DPoP can be refused with it, as the SaaS does: the broker has no
// token vault.
type Activity struct {
	Active bool `yaml:"active" json:"active"`
}

// ParamMap holds extra /authorize parameters for the upstream. In JSON a value may be a
// string, number or boolean, or the SaaS form {"value": ...}; it is stored as a string.
type ParamMap map[string]string

// UnmarshalJSON accepts the value forms listed on ParamMap.
func (p *ParamMap) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return errors.New("upstream_params must be an object")
	}
	if raw == nil {
		*p = nil
		return nil
	}
	out := make(ParamMap, len(raw))
	for k, v := range raw {
		var obj struct {
			Value json.RawMessage `json:"value"`
		}
		if len(v) > 0 && v[0] == '{' {
			dec := json.NewDecoder(bytes.NewReader(v))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&obj); err != nil || obj.Value == nil {
				return fmt.Errorf("upstream_params.%s: only the {\"value\": ...} object form is supported", k)
			}
			v = obj.Value
		}
		var x any
		if err := json.Unmarshal(v, &x); err != nil {
			return fmt.Errorf("upstream_params.%s: %w", k, err)
		}
		switch x := x.(type) {
		case string:
			out[k] = x
		case bool:
			out[k] = strconv.FormatBool(x)
		case float64:
			out[k] = strconv.FormatFloat(x, 'f', -1, 64)
		default:
			return fmt.Errorf("upstream_params.%s must be a string, number or boolean", k)
		}
	}
	*p = out
	return nil
}

// ConnectionID returns the configured id or "con_" + 16 characters derived from the name.
func (c *ConnectionConfig) ConnectionID() string {
	if c.ID != "" {
		return c.ID
	}
	return DeriveConnectionID(c.Name)
}

// DeriveConnectionID returns "con_" + 16 alphanumeric characters hashed from name.
func DeriveConnectionID(name string) string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	h := sha256.Sum256([]byte("dpop-broker connection\x00" + name))
	var b [16]byte
	for i := range b {
		b[i] = alphabet[int(h[i])%len(alphabet)]
	}
	return "con_" + string(b[:])
}

// Default returns a configuration holding every default; Load decodes the file over it.
func Default() *Config {
	return &Config{
		Listen: "127.0.0.1:8080", UpstreamTimeout: 10 * time.Second,
		Store: StoreConfig{Type: "memory", Redis: RedisConfig{
			Prefix: "dpop-broker", Timeout: 2 * time.Second,
		}, Memory: MemoryStoreConfig{MaxRecords: sessions.DefaultMaxRecords}},
		Keys: KeysConfig{Signing: SigningKeyConfig{Alg: "RS256"}},
		Lifetimes: LifetimesConfig{
			Transaction: 10 * time.Minute, Code: 60 * time.Second, Session: 8 * time.Hour,
			IDToken: time.Hour, AccessToken: time.Hour, RefreshToken: 24 * time.Hour,
		},
		DPoP: DPoPConfig{
			ClockSkew: 30 * time.Second, ClockTolerance: 30 * time.Second,
			RetryDelay: 100 * time.Millisecond, Jitter: 100 * time.Millisecond, MaxRetries: 1,
		},
		DPoPServer: DPoPServerConfig{
			NoncePeriod: 5 * time.Minute, MaxAge: 300 * time.Second, MaxFuture: 30 * time.Second,
			// Ed25519 under both names: EdDSA, and Ed25519, which RFC 9864 defines in its place
			// and which openid-client sends.
			Algs: []string{"ES256", "EdDSA", "Ed25519", "RS256", "PS256"},
		},
		Logs:       LogsConfig{MaxEvents: 10000, MaxAge: 720 * time.Hour, Unauthenticated: defaultUnauthenticatedLogs(), Admin: defaultAdminLogs()},
		RateLimits: defaultRateLimits(),
	}
}

// applyDefaults fills per-entry defaults that depend on other values.
func (c *Config) applyDefaults() {
	for i := range c.APIs {
		if c.APIs[i].SenderConstraining == "" {
			c.APIs[i].SenderConstraining = PolicyNone
		}
		if c.APIs[i].RequiredFor == "" {
			c.APIs[i].RequiredFor = RequiredForAll
		}
	}
	for i := range c.Connections {
		o := &c.Connections[i].Options
		if o.Scope == "" {
			o.Scope = "openid profile email"
		}
		if o.Type == "" {
			o.Type = "back_channel"
		}
	}
}

// BaseURL returns public_url (default: the issuer) without a trailing slash.
func (c *Config) BaseURL() string {
	if c.PublicURL != "" {
		return strings.TrimSuffix(c.PublicURL, "/")
	}
	return strings.TrimSuffix(c.Issuer, "/")
}

// FieldError is one configuration problem: the exact key and the reason.
type FieldError struct {
	Key    string
	Reason string
}

func (e FieldError) Error() string { return e.Key + ": " + e.Reason }

// FieldErrors is a list of configuration problems; it is an error.
type FieldErrors []FieldError

func (es FieldErrors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Load reads a YAML configuration file. It expands ${VAR} (and ${VAR:-default}) in every
// scalar value, refuses unknown keys and malformed values, and applies defaults. When the
// file parses but has such problems it returns the decoded configuration together with a
// FieldErrors naming each key; a file that cannot be read or parsed gives (nil, error).
// Load does not run Validate.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data)
}

// Parse is Load on bytes.
func Parse(data []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	cfg := Default()
	if root.Kind == 0 { // empty document
		cfg.applyDefaults()
		return cfg, nil
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	var errs []FieldError
	walk(doc, reflect.TypeFor[Config](), "", &errs)
	if len(errs) > 0 {
		// Decode what we can so that Validate can report further problems; values that
		// failed were blanked by walk.
		_ = doc.Decode(cfg)
		cfg.applyDefaults()
		return cfg, FieldErrors(errs)
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("config: re-encode: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(out))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		return nil, fmt.Errorf("decode config: %w", err)
	}
	cfg.applyDefaults()
	return cfg, nil
}

var durationType = reflect.TypeFor[time.Duration]()

// walk checks node against type t: unknown keys, scalar shapes (durations, integers,
// booleans), and expands ${VAR} in scalars. Problems are appended to errs under their key.
func walk(n *yaml.Node, t reflect.Type, path string, errs *[]FieldError) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return
	}
	key := path
	if key == "" {
		key = "(top level)"
	}
	bad := func(reason string) { *errs = append(*errs, FieldError{Key: key, Reason: reason}) }
	switch {
	case t == durationType:
		if !scalar(n, path, errs) {
			bad("must be a duration such as 30s, 10m or 1h")
			return
		}
		if _, err := time.ParseDuration(n.Value); err != nil {
			bad(fmt.Sprintf("%q is not a duration (use Go syntax such as 30s, 10m or 1h)", n.Value))
			n.Value, n.Tag, n.Style = "0s", "", 0
		}
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			bad("must be a mapping")
			return
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			child := joinKey(path, k.Value)
			ft, ok := fields[k.Value]
			if !ok {
				*errs = append(*errs, FieldError{Key: child, Reason: unknownKey(k.Value, fields)})
				continue
			}
			walk(v, ft, child, errs)
		}
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			bad("must be a list")
			return
		}
		for i, v := range n.Content {
			walk(v, t.Elem(), fmt.Sprintf("%s[%d]", path, i), errs)
		}
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			bad("must be a mapping")
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			walk(n.Content[i+1], t.Elem(), joinKey(path, n.Content[i].Value), errs)
		}
	case t.Kind() == reflect.Int:
		if !scalar(n, path, errs) {
			bad("must be an integer")
			return
		}
		if _, err := strconv.Atoi(n.Value); err != nil {
			bad(fmt.Sprintf("%q is not an integer", n.Value))
			n.Value, n.Tag, n.Style = "0", "", 0
		}
	case t.Kind() == reflect.Bool:
		if !scalar(n, path, errs) {
			bad("must be true or false")
			return
		}
		if _, err := strconv.ParseBool(n.Value); err != nil {
			bad(fmt.Sprintf("%q is not a boolean (use true or false)", n.Value))
			n.Value, n.Tag, n.Style = "false", "", 0
		}
	case t.Kind() == reflect.String:
		if !scalar(n, path, errs) {
			bad("must be a string")
		}
	}
}

// scalar expands ${VAR} in a scalar node; it reports false when n is not a scalar.
func scalar(n *yaml.Node, path string, errs *[]FieldError) bool {
	if n.Kind != yaml.ScalarNode {
		return false
	}
	if !strings.Contains(n.Value, "${") {
		return true
	}
	v, err := expandEnv(n.Value)
	if err != nil {
		*errs = append(*errs, FieldError{Key: path, Reason: err.Error()})
		v = ""
	}
	n.Value = v
	if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
		n.Style = yaml.DoubleQuotedStyle // stays a string whatever the text
	} else {
		n.Tag, n.Style = "", 0 // let the expanded text resolve (an int from ${PORT}, …)
	}
	return true
}

// expandEnv replaces ${VAR} and ${VAR:-default}. An unset VAR without default is an error.
func expandEnv(s string) (string, error) {
	var b strings.Builder
	var missing []string
	for i := 0; i < len(s); {
		j := strings.Index(s[i:], "${")
		if j < 0 {
			b.WriteString(s[i:])
			break
		}
		b.WriteString(s[i : i+j])
		i += j
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", errors.New("unterminated ${ in value")
		}
		expr := s[i+2 : i+end]
		i += end + 1
		name, def, hasDef := strings.Cut(expr, ":-")
		if !validEnvName(name) {
			return "", fmt.Errorf("${%s} is not a valid environment variable reference", expr)
		}
		v, ok := os.LookupEnv(name)
		switch {
		case ok && (v != "" || !hasDef):
			b.WriteString(v)
		case hasDef:
			b.WriteString(def)
		default:
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return "", errors.New(unsetEnvReason(missing...))
	}
	return b.String(), nil
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// yamlFields maps yaml keys to field types, flattening ",inline" structs.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			for k, v := range yamlFields(f.Type) {
				m[k] = v
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = f.Type
	}
	return m
}

func joinKey(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// unknownKey is the reason for a key the configuration does not know: "unknown key", with the
// known key it most likely misspells (at most two edits away).
func unknownKey(k string, known map[string]reflect.Type) string {
	best, bestDist := "", 3
	for name := range known {
		if d := editDistance(k, name); d < bestDist || d == bestDist && name < best {
			best, bestDist = name, d
		}
	}
	if best == "" {
		return "unknown key"
	}
	return "unknown key (did you mean " + best + "?)"
}

// editDistance is the Levenshtein distance between a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
