package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// Config is the broker configuration file (config.example.yaml documents every key).
type Config struct {
	Issuer      string       `yaml:"issuer"`
	Listen      string       `yaml:"listen"`
	AdminListen string       `yaml:"admin_listen"` // optional listener for /console, /metrics, /api/v2 (broker.Server.AdminHandler)
	PublicURL   string       `yaml:"public_url"`
	Store       Store        `yaml:"store"`
	Keys        Keys         `yaml:"keys"`
	Lifetimes   Lifetimes    `yaml:"lifetimes"`
	Sessions    Sessions     `yaml:"sessions"`
	DPoP        DPoP         `yaml:"dpop"`
	DPoPServer  DPoPServer   `yaml:"dpop_server"`
	Logs        Logs         `yaml:"logs"`
	Log         Log          `yaml:"log"` // the application log and the events' lines (log.go)
	Clients     []Client     `yaml:"clients"`
	APIs        []API        `yaml:"apis"`
	Connections []Connection `yaml:"connections"`
	Management  Management   `yaml:"management"`
	Console     Console      `yaml:"console"`
	// TrustedProxies are the proxies (CIDRs or addresses) whose X-Forwarded-For names the
	// client (the broker's rate limits); RateLimits limit /authorize and /oauth/token per IP and client.
	TrustedProxies []string   `yaml:"trusted_proxies"`
	RateLimits     RateLimits `yaml:"rate_limits"`
	// LogStreams send the event log to HTTP endpoints (logstreams.go).
	LogStreams []LogStream `yaml:"log_streams"`

	// UpstreamTimeout bounds every call to an upstream IdP (discovery, JWKS, token, userinfo),
	// at most LoginExchangeBudget.
	UpstreamTimeout time.Duration `yaml:"upstream_timeout"`
	// UpstreamAllowedNetworks (CIDRs or addresses) are the internal networks upstream calls
	// may connect to; other loopback, private, link-local, … addresses are refused when
	// dialled (the broker's upstream address policy). Default none: public addresses only.
	UpstreamAllowedNetworks []string `yaml:"upstream_allowed_networks"`

	// AllowInsecureHTTP is the development switch that accepts plain http on non-loopback
	// hosts for issuer, public_url, redirect URIs and allowed origins (urlrules.go). It is
	// logged as a warning at every start and never admits other schemes.
	AllowInsecureHTTP bool `yaml:"allow_insecure_http"`

	// GenerateMissingKeys makes broker.New generate any key the configuration does not provide
	// (the demo). Serve leaves it false: a missing key is then a validation error.
	GenerateMissingKeys bool `yaml:"-"`
}

// Store selects the session store (OpenStore).
type Store struct {
	Type   string      `yaml:"type"` // memory | redis
	Redis  Redis       `yaml:"redis"`
	Memory MemoryStore `yaml:"memory"`
}

// MemoryStore bounds the memory store: at most MaxRecords live records (transactions,
// sessions, codes, refresh tokens, proof jtis); a write beyond it fails closed (503,
// details.error store_full). Redis is bounded by its own maxmemory (README).
type MemoryStore struct {
	MaxRecords int `yaml:"max_records"`
	// MaxReplayRecords is the share of MaxRecords the DPoP proof replay cache may hold
	// (0: half of MaxRecords; store.go), so proofs cannot take the room of logins.
	MaxReplayRecords int `yaml:"max_replay_records"`
}

// Redis is the Redis connection: one address, several (Cluster), or Sentinel.
type Redis struct {
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

// SigningKey is the broker's ID-token and access-token signing key.
type SigningKey struct {
	Alg       string `yaml:"alg"` // RS256 | ES256
	KeySource `yaml:",inline"`
}

// DPoPKeys holds the broker's DPoP keys toward upstreams, by key type.
type DPoPKeys struct {
	ES256   KeySource `yaml:"es256"`
	Ed25519 KeySource `yaml:"ed25519"`
	RSA     KeySource `yaml:"rsa"`
}

// Keys names the broker's private keys (LoadKeys loads them into a KeyRing).
type Keys struct {
	Signing SigningKey `yaml:"signing"`
	// PreviousSigning are signing keys that keys.signing replaced (newest first), or the one
	// about to replace it during a rolling rotation: published in the JWKS and accepted for
	// the broker's own access tokens (JWT and opaque), never used to sign. Remove a replaced
	// one once the longest token lifetime has passed since the rotation.
	PreviousSigning []SigningKey `yaml:"previous_signing"`
	DPoP            DPoPKeys     `yaml:"dpop"`
	// ClientAuth are the keys private_key_jwt connections sign client assertions with toward
	// upstreams, at most one per alg (RS256, ES256, PS256); their public keys are published at
	// PUBLIC_URL/client-auth/jwks.json. PreviousClientAuth are published there too but never
	// sign: a key about to replace one (published first, so the upstream can fetch it before
	// the first assertion signed with it) or one just replaced.
	ClientAuth         []SigningKey `yaml:"client_auth"`
	PreviousClientAuth []SigningKey `yaml:"previous_client_auth"`
}

// Lifetimes are the TTLs of the broker's records and tokens.
type Lifetimes struct {
	Transaction time.Duration `yaml:"transaction"`
	Code        time.Duration `yaml:"code"`
	Session     time.Duration `yaml:"session"`
	IDToken     time.Duration `yaml:"id_token"`
	AccessToken time.Duration `yaml:"access_token"`
	// RefreshToken is the absolute lifetime of a refresh-token family (rotation keeps the
	// first expiry); a refresh also needs the broker session to be alive.
	RefreshToken time.Duration `yaml:"refresh_token"`
}

// Sessions are the lifetimes of the broker's single sign-on session (one per browser, see
// docs/sessions.md). A session ends when it has not been used for IdleTimeout (a login of an
// app through it, or a refresh of a token issued from it, is a use and slides the window) or
// when AbsoluteTimeout has passed since the upstream login that created it, whichever comes
// first; its record expires in the store at that moment.
type Sessions struct {
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// AbsoluteTimeout 0 takes lifetimes.session (its former name).
	AbsoluteTimeout time.Duration `yaml:"absolute_timeout"`
}

// SessionAbsolute returns the absolute session lifetime: sessions.absolute_timeout, or
// lifetimes.session when that is unset.
func (c *Config) SessionAbsolute() time.Duration {
	if c.Sessions.AbsoluteTimeout > 0 {
		return c.Sessions.AbsoluteTimeout
	}
	return c.Lifetimes.Session
}

// SessionIdle returns the idle session lifetime, never above the absolute one.
func (c *Config) SessionIdle() time.Duration {
	return min(c.Sessions.IdleTimeout, c.SessionAbsolute())
}

// DPoP is the DPoP timing toward upstreams.
type DPoP struct {
	ClockSkew      time.Duration `yaml:"clock_skew"`
	ClockTolerance time.Duration `yaml:"clock_tolerance"`
	RetryDelay     time.Duration `yaml:"retry_delay"`
	Jitter         time.Duration `yaml:"jitter"`
	MaxRetries     int           `yaml:"max_retries"`
}

// DPoPServer is how the broker checks DPoP proofs from its own apps at /oauth/token and
// /userinfo (RFC 9449 as a server).
type DPoPServer struct {
	RequireNonce bool          `yaml:"require_nonce"` // demand server nonces (RFC 9449 §8, §11.3)
	NonceSecret  string        `yaml:"nonce_secret"`  // ≥ 32 bytes, shared by all replicas
	NoncePeriod  time.Duration `yaml:"nonce_period"`  // nonce rotation step
	MaxAge       time.Duration `yaml:"max_age"`       // oldest accepted iat (RFC 9449 §11.1)
	MaxFuture    time.Duration `yaml:"max_future"`    // furthest-ahead accepted iat (RFC 9449 §11.1)
	Algs         []string      `yaml:"algs"`          // accepted proof algs (RFC 9449 §4.3 step 5), advertised (§5.1)
}

// Sender-constraining policies of an API (resource server).
const (
	PolicyNone     = "none"
	PolicyAllowed  = "allowed"
	PolicyRequired = "required"
)

// API is one resource server apps may request tokens for (audience parameter).
type API struct {
	Audience           string `yaml:"audience"`
	Name               string `yaml:"name"`
	SenderConstraining string `yaml:"sender_constraining"` // none (default) | allowed | required
	// RequiredFor narrows sender_constraining: required: all_clients (default) applies it to
	// every client; public_clients only to public clients (SPAs, native apps), confidential
	// clients being treated as allowed (the SaaS's proof_of_possession.required_for).
	RequiredFor string `yaml:"required_for"`
	// Scopes are the permissions the API defines. A token for the API carries only scopes it
	// defines and the client's grant (clients[].apis) allows (grants.go).
	Scopes []APIScope `yaml:"scopes"`
	// Claims are the user-profile claims (connections' options.attribute_map, docs/claims.md)
	// the API's access tokens carry, such as a namespaced groups claim; standard profile and
	// email claims only when the token's scope has profile or email.
	Claims []string `yaml:"claims"`
}

// APIScope is one permission an API defines: a scope name apps may request (RFC 6749 §3.3
// scope-token) and what it allows, for people reading the configuration.
type APIScope struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
}

// required_for values (as the SaaS's proof_of_possession.required_for).
const (
	RequiredForAll    = "all_clients"
	RequiredForPublic = "public_clients"
)

// Logs is the store-backed event log retention (by count and by age) of the audit
// class, the retention and limits of the unauthenticated class, and the retention of the
// admin class (the broker's event log).
type Logs struct {
	MaxEvents       int                 `yaml:"max_events"`
	MaxAge          time.Duration       `yaml:"max_age"`
	Unauthenticated UnauthenticatedLogs `yaml:"unauthenticated"`
	Admin           AdminLogs           `yaml:"admin"`
}

// Management guards the management API under /api/v2. Without tokens every
// call is answered 401.
type Management struct {
	Tokens []ManagementToken `yaml:"tokens"`
}

// ManagementToken is one static bearer token and the scopes it grants.
type ManagementToken struct {
	Name   string   `yaml:"name"` // shown in sapi/fapi events; default "tokens[i]"
	Token  string   `yaml:"token"`
	Scopes []string `yaml:"scopes"`
}

// Client is one downstream application. The YAML seeds the broker's store; the JSON form
// is the stored document (without the secret, which is stored hashed).
type Client struct {
	ClientID                string   `yaml:"client_id" json:"client_id"`
	Name                    string   `yaml:"name" json:"name,omitempty"`
	ClientSecret            string   `yaml:"client_secret" json:"-"`
	TokenEndpointAuthMethod string   `yaml:"token_endpoint_auth_method" json:"token_endpoint_auth_method,omitempty"`
	RedirectURIs            []string `yaml:"redirect_uris" json:"redirect_uris,omitempty"`
	// PostLogoutRedirectURIs are where /oidc/logout may send the browser
	// (post_logout_redirect_uri, exact match; OpenID Connect RP-Initiated Logout 1.0).
	PostLogoutRedirectURIs []string `yaml:"post_logout_redirect_uris" json:"post_logout_redirect_uris,omitempty"`
	AllowedOrigins         []string `yaml:"allowed_origins" json:"allowed_origins,omitempty"`
	Connections            []string `yaml:"connections" json:"connections,omitempty"`
	// BackchannelLogoutURI is where the broker POSTs a logout token when a session in which
	// the app received a code ends (OpenID Connect Back-Channel Logout 1.0 §2.2, §2.5); ""
	// = the app is not notified. Absolute http(s) URL, no fragment, no user information.
	BackchannelLogoutURI string `yaml:"backchannel_logout_uri" json:"backchannel_logout_uri,omitempty"`
	// BackchannelLogoutSessionRequired is the app's registration metadata of §2.2 (it needs
	// sid in the logout token). The broker always sends sid, so it changes nothing here.
	BackchannelLogoutSessionRequired bool `yaml:"backchannel_logout_session_required" json:"backchannel_logout_session_required,omitempty"`
	// RequireSenderConstraining refuses tokens that would not be DPoP-bound (the SaaS's
	// require_proof_of_possession); DPoPBoundAccessTokens is the RFC 9449 §5.2 metadata with
	// the same effect on token requests.
	RequireSenderConstraining bool `yaml:"require_sender_constraining" json:"require_sender_constraining,omitempty"`
	DPoPBoundAccessTokens     bool `yaml:"dpop_bound_access_tokens" json:"dpop_bound_access_tokens,omitempty"`
	// APIs are the client's grants: the APIs (apis[].audience) it may obtain access tokens
	// for, each with the API scopes it may receive. No grant: no token for that API.
	APIs []APIGrant `yaml:"apis" json:"apis,omitempty"`
}

// APIGrant lets a client obtain access tokens for one API, carrying at most Scopes (names
// the API defines in apis[].scopes).
type APIGrant struct {
	Audience string   `yaml:"audience" json:"audience"`
	Scopes   []string `yaml:"scopes" json:"scopes,omitempty"`
}

// RequiresPoP reports whether the client must receive sender-constrained tokens.
func (c *Client) RequiresPoP() bool {
	return c.RequireSenderConstraining || c.DPoPBoundAccessTokens
}

// Public reports whether the client authenticates with PKCE only.
func (c *Client) Public() bool { return c.AuthMethod() == AuthNone }

// AuthMethod returns the configured method, defaulting on the presence of a secret.
func (c *Client) AuthMethod() string {
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
	// AuthPrivateKeyJWT is for connections only: the broker toward an upstream (RFC 7523).
	AuthPrivateKeyJWT = "private_key_jwt"
)

// Connection is one upstream connection. The YAML seeds the broker's store; the
// JSON form is the stored document and the management API's connection object.
type Connection struct {
	ID          string            `yaml:"id" json:"id"`
	Name        string            `yaml:"name" json:"name"`
	DisplayName string            `yaml:"display_name" json:"display_name,omitempty"`
	Strategy    string            `yaml:"strategy" json:"strategy"` // oidc | okta
	Options     ConnectionOptions `yaml:"options" json:"options"`
	// EnabledClients are client ids that may use the connection, in addition to the clients
	// whose own connections list names it.
	EnabledClients []string `yaml:"enabled_clients" json:"enabled_clients,omitempty"`
	// ShowAsButton puts the connection on the sign-in pages as a button (absent: true);
	// false leaves it to home-realm discovery by options.domain_aliases (homerealm.go).
	ShowAsButton *bool `yaml:"show_as_button" json:"show_as_button,omitempty"`
	// Realms, IsDomainConnection and Metadata are the SaaS's connection members of those
	// names. The broker keeps them and answers them in the management API, so that tools that
	// read a connection and write it back keep them, but no login depends on them: the broker
	// has no realm (password) grant and no third-party apps. Realms default to [name].
	Realms             []string          `yaml:"realms" json:"realms,omitempty"`
	IsDomainConnection bool              `yaml:"is_domain_connection" json:"is_domain_connection,omitempty"`
	Metadata           map[string]string `yaml:"metadata" json:"metadata,omitempty"`
}

// Limits of the connection members kept for the SaaS's tools (Connection.Realms, .Metadata).
const (
	MaxConnectionRealms      = 50
	MaxConnectionMetadata    = 10  // members, as the SaaS allows
	MaxConnectionMetadataLen = 255 // characters of a metadata key or value, as the SaaS allows
)

// ConnectionOptions mirror the SaaS connection options.
type ConnectionOptions struct {
	Issuer                string   `yaml:"issuer" json:"issuer,omitempty"`
	DiscoveryURL          string   `yaml:"discovery_url" json:"discovery_url,omitempty"`
	Domain                string   `yaml:"domain" json:"domain,omitempty"`
	AuthorizationServerID string   `yaml:"authorization_server_id" json:"authorization_server_id,omitempty"`
	ClientID              string   `yaml:"client_id" json:"client_id"`
	ClientSecret          string   `yaml:"client_secret" json:"client_secret,omitempty"` // write-only in the API
	Scope                 string   `yaml:"scope" json:"scope"`
	Type                  string   `yaml:"type" json:"type"`
	DPoPSigningAlg        string   `yaml:"dpop_signing_alg" json:"dpop_signing_alg,omitempty"`
	FetchUserinfo         bool     `yaml:"fetch_userinfo" json:"fetch_userinfo"`
	UpstreamParams        ParamMap `yaml:"upstream_params" json:"upstream_params,omitempty"`
	// AttributeMap maps the upstream's claims to the user profile (docs/claims.md); nil:
	// basic_profile, the standard profile and email claims.
	AttributeMap *AttributeMap `yaml:"attribute_map" json:"attribute_map,omitempty"`
	TokenVault   *Activity     `yaml:"federated_connections_access_tokens" json:"federated_connections_access_tokens,omitempty"`
	// TokenEndpointAuthMethod is how the broker authenticates at the upstream's token (and PAR)
	// endpoint: client_secret_basic, client_secret_post or private_key_jwt (RFC 7523, with
	// the keys.client_auth key of TokenEndpointAuthSigningAlg). "" picks by discovery:
	// client_secret_basic when listed, else client_secret_post.
	TokenEndpointAuthMethod     string `yaml:"token_endpoint_auth_method" json:"token_endpoint_auth_method,omitempty"`
	TokenEndpointAuthSigningAlg string `yaml:"token_endpoint_auth_signing_alg" json:"token_endpoint_auth_signing_alg,omitempty"`
	// UsePAR pushes authorization requests to the upstream (RFC 9126); they are pushed anyway
	// when its discovery says require_pushed_authorization_requests.
	UsePAR bool `yaml:"use_par" json:"use_par,omitempty"`
	// CallbackPath is shared (default: PUBLIC_URL/login/callback) or dedicated
	// (PUBLIC_URL/login/callback/{connection id}, the mix-up defence of RFC 9700 §4.4.2 for
	// upstreams without RFC 9207 iss).
	CallbackPath string `yaml:"callback_path" json:"callback_path,omitempty"`
	// DomainAliases are the email domains whose users sign in through this connection
	// (home-realm discovery, homerealm.go); IconURL is the image on its sign-in button.
	DomainAliases []string `yaml:"domain_aliases" json:"domain_aliases,omitempty"`
	IconURL       string   `yaml:"icon_url" json:"icon_url,omitempty"`
}

// options.callback_path values.
const (
	CallbackShared    = "shared"    // PUBLIC_URL/login/callback (default)
	CallbackDedicated = "dedicated" // PUBLIC_URL/login/callback/{connection id}
)

// LoginExchangeBudget bounds the upstream part of one login callback, and so
// upstream_timeout. It stays below the write timeout of the broker's HTTP server (30 s,
// cmd/broker) so the user always gets an answer.
const LoginExchangeBudget = 25 * time.Second

// Activity is an {active: bool} setting. federated_connections_access_tokens (Token Vault) is
// recorded only so that DPoP can be refused with it, as the SaaS does: the broker has no
// token vault.
type Activity struct {
	Active bool `yaml:"active" json:"active"`
}

// AttributeMap is options.attribute_map in the identity SaaS's form: the mapping mode
// (use_map, bind_all or basic_profile), the scopes userinfo needs, and the attributes, each a
// claim of the user profile with its template (${context.tokenset.id_token.CLAIM},
// ${context.userinfo.CLAIM} or literal text). docs/claims.md describes them.
type AttributeMap struct {
	MappingMode string `yaml:"mapping_mode" json:"mapping_mode"`
	// UserinfoScope are scopes the upstream's userinfo needs to answer the mapped claims
	// (such as groups): asked for in the authorization request besides options.scope, and
	// userinfo is fetched.
	UserinfoScope string         `yaml:"userinfo_scope" json:"userinfo_scope,omitempty"`
	Attributes    ClaimTemplates `yaml:"attributes" json:"attributes,omitempty"`
}

// ClaimTemplates are the attributes of an attribute_map: claim name → template. In the YAML
// their ${…} are templates, not environment variables.
type ClaimTemplates map[string]string

// UpstreamParam is one options.upstream_params entry: a fixed Value, or Alias, the app's
// /authorize parameter whose value is sent (the identity SaaS's {"value": …} and
// {"alias": …}). In the YAML a plain scalar is a value.
type UpstreamParam struct {
	Value string `yaml:"value" json:"value,omitempty"`
	Alias string `yaml:"alias" json:"alias,omitempty"`
}

// MarshalJSON writes the SaaS form: {"alias": …} or {"value": …}.
func (u UpstreamParam) MarshalJSON() ([]byte, error) {
	if u.Alias != "" {
		return json.Marshal(map[string]string{"alias": u.Alias})
	}
	return json.Marshal(map[string]string{"value": u.Value})
}

// UnmarshalYAML accepts a scalar (a value) or a mapping with value or alias.
func (u *UpstreamParam) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*u = UpstreamParam{Value: n.Value}
		return nil
	}
	type plain UpstreamParam
	return n.Decode((*plain)(u))
}

// ParamMap holds extra /authorize parameters for the upstream. In JSON a value is the SaaS
// form {"value": …} or {"alias": …}, or a bare string, number or boolean (a value).
type ParamMap map[string]UpstreamParam

// Values returns the entries with a fixed value, by name.
func (p ParamMap) Values() map[string]string {
	out := map[string]string{}
	for k, v := range p {
		if v.Alias == "" {
			out[k] = v.Value
		}
	}
	return out
}

// Aliases returns the entries with an alias, by name.
func (p ParamMap) Aliases() map[string]string {
	out := map[string]string{}
	for k, v := range p {
		if v.Alias != "" {
			out[k] = v.Alias
		}
	}
	return out
}

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
		if string(v) == "null" { // no parameter (the SaaS's SDK types allow null)
			continue
		}
		var obj struct {
			Value json.RawMessage `json:"value"`
			Alias *string         `json:"alias"`
		}
		var param UpstreamParam
		if len(v) > 0 && v[0] == '{' {
			dec := json.NewDecoder(bytes.NewReader(v))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&obj); err != nil || obj.Value == nil && obj.Alias == nil {
				return fmt.Errorf("upstream_params.%s: use the object form {\"value\": ...} or {\"alias\": ...}", k)
			}
			if obj.Alias != nil {
				param.Alias = *obj.Alias
			}
			if v = obj.Value; v == nil {
				out[k] = param
				continue
			}
		}
		var x any
		if err := json.Unmarshal(v, &x); err != nil {
			return fmt.Errorf("upstream_params.%s: %w", k, err)
		}
		switch x := x.(type) {
		case string:
			param.Value = x
		case bool:
			param.Value = strconv.FormatBool(x)
		case float64:
			param.Value = strconv.FormatFloat(x, 'f', -1, 64)
		default:
			return fmt.Errorf("upstream_params.%s must be a string, number or boolean", k)
		}
		out[k] = param
	}
	*p = out
	return nil
}

// ConnectionID returns the configured id or "con_" + 16 characters derived from the name.
func (c *Connection) ConnectionID() string {
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
		Store: Store{Type: "memory", Redis: Redis{
			Prefix: "dpop-broker", Timeout: 2 * time.Second,
		}, Memory: MemoryStore{MaxRecords: sessions.DefaultMaxRecords}},
		Keys: Keys{Signing: SigningKey{Alg: "RS256"}},
		Lifetimes: Lifetimes{
			Transaction: 10 * time.Minute, Code: 60 * time.Second, Session: 8 * time.Hour,
			IDToken: time.Hour, AccessToken: time.Hour, RefreshToken: 24 * time.Hour,
		},
		Sessions: Sessions{IdleTimeout: 2 * time.Hour},
		DPoP: DPoP{
			ClockSkew: 30 * time.Second, ClockTolerance: 30 * time.Second,
			RetryDelay: 100 * time.Millisecond, Jitter: 100 * time.Millisecond, MaxRetries: 1,
		},
		DPoPServer: DPoPServer{
			NoncePeriod: 5 * time.Minute, MaxAge: 300 * time.Second, MaxFuture: 30 * time.Second,
			// Ed25519 under both names: EdDSA, and Ed25519, which RFC 9864 defines in its place
			// and which openid-client sends.
			Algs: []string{"ES256", "EdDSA", "Ed25519", "RS256", "PS256"},
		},
		Logs:       Logs{MaxEvents: 10000, MaxAge: 720 * time.Hour, Unauthenticated: defaultUnauthenticatedLogs(), Admin: defaultAdminLogs()},
		Log:        Log{Level: "info", Format: LogFormatJSON, Output: LogStdout, Events: LogEventsInLog},
		RateLimits: defaultRateLimits(),
	}
}

// ApplyDefaults fills the per-entry defaults of apis, connections and log_streams
// (sender_constraining, required_for, scope, type, batch_size, …). Parse applies them; a
// configuration built in code applies them once its entries are added.
func (c *Config) ApplyDefaults() {
	for i := range c.APIs {
		if c.APIs[i].SenderConstraining == "" {
			c.APIs[i].SenderConstraining = PolicyNone
		}
		if c.APIs[i].RequiredFor == "" {
			c.APIs[i].RequiredFor = RequiredForAll
		}
	}
	for i := range c.Connections {
		c.Connections[i].Options.ApplyDefaults()
	}
	for i := range c.LogStreams {
		c.LogStreams[i].applyDefaults()
	}
}

// ApplyDefaults fills the option defaults of a connection, from the YAML or from the
// management API: scope "openid profile email" and type "back_channel".
func (o *ConnectionOptions) ApplyDefaults() {
	if o.Scope == "" {
		o.Scope = "openid profile email"
	}
	if o.Type == "" {
		o.Type = "back_channel"
	}
}

// BaseURL returns public_url (default: the issuer) without a trailing slash.
func (c *Config) BaseURL() string {
	if c.PublicURL != "" {
		return strings.TrimSuffix(c.PublicURL, "/")
	}
	return strings.TrimSuffix(c.Issuer, "/")
}
