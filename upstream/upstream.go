package upstream

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/oauth2"

	"github.com/dpop-broker/dpop-broker/discovery"
	"github.com/dpop-broker/dpop-broker/dpop"
)

// Config is one connection as the broker configures it.
type Config struct {
	ID           string // con_…
	Name         string
	Strategy     string // "oidc" or "okta"
	Issuer       string
	DiscoveryURL string // optional
	// Okta: Domain and optional AuthorizationServerID derive Issuer when Issuer is empty.
	Domain                string
	AuthorizationServerID string
	ClientID              string
	ClientSecret          string
	Scopes                []string // default openid profile email
	Type                  string   // "back_channel"
	DPoPSigningAlg        string   // "" = DPoP off; ES256, Ed25519, RS256, PS256
	IDTokenAlgs           []string // default: the upstream's advertised asymmetric algs, else RS256 (OIDC Core §3.1.3.7 step 7)
	FetchUserinfo         bool
	// UpstreamParams are extra authorization parameters with fixed values; UpstreamAliases
	// name, per extra parameter, the app's parameter whose value it takes (params.go).
	UpstreamParams  map[string]string
	UpstreamAliases map[string]string
	// MappingMode and Attributes are the claim mapping of the user profile (attributes.go);
	// MappingMode "" is basic_profile without attributes. A mapping that reads userinfo makes
	// the connection fetch it.
	MappingMode string
	Attributes  map[string]string
	claims      *ClaimMapping // compiled by normalize
	// TokenEndpointAuthMethod is how the broker authenticates at the token endpoint (and the
	// pushed authorization request endpoint): client_secret_basic, client_secret_post or
	// private_key_jwt (RFC 7523 §2.2). "" picks by discovery: client_secret_basic when listed
	// (or the list is absent), else client_secret_post.
	TokenEndpointAuthMethod string
	// TokenEndpointAuthSigningAlg is the private_key_jwt assertion alg: RS256 (default),
	// ES256 or PS256.
	TokenEndpointAuthSigningAlg string
	// UsePAR pushes every authorization request (RFC 9126); it is also pushed when the
	// upstream's discovery sets require_pushed_authorization_requests.
	UsePAR bool
}

// Options are the DPoP timing and collaborators shared by all connections.
type Options struct {
	HTTP       *http.Client // base client (timeouts); default 10 s timeout, no redirects
	Discovery  *discovery.Client
	Signers    map[string]*dpop.Signer // by configuration alg name (ES256, Ed25519, RS256, PS256)
	Nonces     dpop.NonceCache
	MaxRetries int
	RetryDelay time.Duration
	Jitter     time.Duration
	ClockSkew  time.Duration // leeway for exp/iat on upstream ID tokens
	Now        func() time.Time
	// ClientAuthKeys sign private_key_jwt client assertions, by alg (RS256, ES256, PS256).
	ClientAuthKeys map[string]AssertionKey
	// MaxPushesInFlight bounds the pushed authorization requests one connection has open at
	// once (par.go); 0 means DefaultMaxPushesInFlight.
	MaxPushesInFlight int
	// APIClaims are the profile claims APIs' access tokens carry (apis[].claims): a bind_all
	// mapping does not copy those that are not standard from the upstream, so only an
	// attribute sets them (ClaimMapping.Profile).
	APIClaims []string
	// TracerProvider, when set, gives the login's steps spans (tracing.go); nil: none.
	TracerProvider trace.TracerProvider
}

// Stable error codes for login events (details.error).
const (
	CodeDPoPNotSupported = discovery.CodeDPoPNotSupported
	CodeDPoPAlgMismatch  = discovery.CodeDPoPAlgMismatch
	CodeUseDPoPNonce     = "use_dpop_nonce"     // nonce retries exhausted
	CodeInvalidDPoPProof = "invalid_dpop_proof" // upstream rejected our proof
	// CodeUpstreamRequiresDPoP: the connection sends no DPoP proof (dpop_signing_alg off) and
	// the upstream answered with a DPoP error (invalid_dpop_proof, use_dpop_nonce): it
	// requires DPoP of this client.
	CodeUpstreamRequiresDPoP = "upstream_requires_dpop"
	CodeUpstreamError        = "upstream_error" // token endpoint error / unreachable / malformed
	CodeIDTokenInvalid       = "id_token_invalid"
	CodeDiscovery            = "discovery_failed"
	CodeUserinfo             = "userinfo_failed"
	// CodeLogoutUnsupported: a federated logout found no usable end_session_endpoint.
	CodeLogoutUnsupported = "federated_logout_unsupported"
)

// Error is a failed upstream step with a stable Code.
type Error struct {
	Code        string
	Description string
	// Public, when set, is what an unauthenticated caller may be told instead of Description:
	// the same rule, without the configured values (issuer, client_id, algorithms) that
	// Description may name for the event.
	Public     string
	OAuthError string // the upstream's "error" member, when it sent one
	// RetryAfter, when above zero, is how long until the step may succeed if tried again.
	RetryAfter time.Duration
	Err        error
}

func (e *Error) Error() string { return fmt.Sprintf("upstream: %s: %s", e.Code, e.Description) }
func (e *Error) Unwrap() error { return e.Err }

// CodeOf returns the stable code of err (an *Error), or CodeUpstreamError.
func CodeOf(err error) string {
	var ue *Error
	if errors.As(err, &ue) {
		return ue.Code
	}
	return CodeUpstreamError
}

// CodeIssMismatch is the code of an RFC 9207 iss check failure on the authorization response.
const CodeIssMismatch = "iss_mismatch"

// Connection is one configured upstream, safe for concurrent use.
type Connection struct {
	cfg     Config
	opts    Options
	plain   *http.Client            // no DPoP
	clients map[string]*http.Client // DPoP clients by wire alg label; read-only after New
	// logoutKeys is the upstream's JWK Set as logout tokens are checked with it (backchannel.go).
	logoutKeys logoutKeys
	// pushes holds one token per pushed authorization request in flight (par.go).
	pushes chan struct{}
	// identityDigest is the Digest of cfg's Identity, which every login records (Result).
	identityDigest string
	tracer         trace.Tracer // nil: no spans (tracing.go)
}

// wireLabels returns the JOSE labels a configuration alg may be sent under (RFC 9449 §4.2;
// Ed25519 under its RFC 9864 name or as EdDSA).
func wireLabels(alg string) []string {
	switch alg {
	case dpop.AlgEd25519, dpop.AlgEdDSA:
		return []string{dpop.AlgEd25519, dpop.AlgEdDSA}
	case dpop.AlgES256, dpop.AlgRS256, dpop.AlgPS256:
		return []string{alg}
	}
	return nil
}

// New returns a connection. It does not contact the upstream.
func New(cfg Config, opts Options) (*Connection, error) {
	cfg, err := Normalized(cfg)
	if err != nil {
		return nil, err
	}
	opts.setDefaults()
	cfg.claims = cfg.claims.withAPIClaims(opts.APIClaims)
	c := &Connection{cfg: cfg, opts: opts, plain: opts.HTTP, pushes: make(chan struct{}, opts.MaxPushesInFlight),
		identityDigest: cfg.Identity().Digest()}
	if opts.TracerProvider != nil {
		c.tracer = opts.TracerProvider.Tracer(tracerName)
	}
	if err := c.setupClientAuth(); err != nil {
		return nil, fmt.Errorf("upstream: connection %q: %w", cfg.Name, err)
	}
	if err := c.setupDPoP(); err != nil {
		return nil, fmt.Errorf("upstream: connection %q: %w", cfg.Name, err)
	}
	return c, nil
}

// Normalized returns a copy of cfg checked and with its defaults applied, as New uses it: the
// issuer an okta connection derives from its domain (OktaIssuer), the default scopes, the
// compiled claim mapping; Identity of it is what a connection's logins record.
func Normalized(cfg Config) (Config, error) {
	cfg = cfg.clone()
	if err := cfg.normalize(); err != nil {
		return Config{}, fmt.Errorf("upstream: connection %q: %w", cfg.Name, err)
	}
	return cfg, nil
}

// clone is cfg with its own copies of the slices and maps.
func (cfg Config) clone() Config {
	cfg.Scopes = slices.Clone(cfg.Scopes)
	cfg.IDTokenAlgs = slices.Clone(cfg.IDTokenAlgs)
	cfg.UpstreamParams = maps.Clone(cfg.UpstreamParams)
	cfg.UpstreamAliases = maps.Clone(cfg.UpstreamAliases)
	cfg.Attributes = maps.Clone(cfg.Attributes)
	return cfg
}

// normalize checks cfg and applies its defaults, concern by concern: where the upstream is
// (issuer and discovery), the authorization request (client, type, scopes, extra parameters)
// and the ID token check.
func (cfg *Config) normalize() error {
	if err := cfg.resolveIssuer(); err != nil {
		return err
	}
	if err := cfg.normalizeClient(); err != nil {
		return err
	}
	if err := cfg.normalizeClientAuth(); err != nil {
		return err
	}
	if err := cfg.normalizeIDTokenAlgs(); err != nil {
		return err
	}
	if err := cfg.normalizeClaims(); err != nil {
		return err
	}
	return cfg.normalizeUpstreamParams()
}

// resolveIssuer applies the strategy (an okta connection may derive its issuer from its
// domain, OktaIssuer) and checks the issuer and discovery URLs.
func (cfg *Config) resolveIssuer() error {
	if cfg.Strategy == "" {
		cfg.Strategy = "oidc"
	}
	switch cfg.Strategy {
	case "oidc":
	case "okta":
		if cfg.Issuer == "" && cfg.Domain != "" {
			iss, err := OktaIssuer(cfg.Domain, cfg.AuthorizationServerID)
			if err != nil {
				return err
			}
			cfg.Issuer = iss
		}
	default:
		return fmt.Errorf("unknown strategy %q (want oidc or okta)", cfg.Strategy)
	}
	if cfg.Issuer == "" {
		return errors.New("issuer is required (or domain for okta)")
	}
	if err := checkURL(cfg.Issuer); err != nil {
		return fmt.Errorf("issuer: %w", err)
	}
	if cfg.DiscoveryURL != "" {
		if err := checkURL(cfg.DiscoveryURL); err != nil {
			return fmt.Errorf("discovery_url: %w", err)
		}
	}
	return nil
}

// normalizeClient checks the client the broker is at the upstream and its request type, and
// sets the scopes (default openid profile email; openid is always asked for).
func (cfg *Config) normalizeClient() error {
	if cfg.ClientID == "" {
		return errors.New("client_id is required")
	}
	if cfg.Type == "" {
		cfg.Type = "back_channel"
	}
	if cfg.Type != "back_channel" {
		return fmt.Errorf("type %q is not supported (only back_channel)", cfg.Type)
	}
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = []string{"openid", "profile", "email"}
	} else if !slices.Contains(cfg.Scopes, "openid") {
		cfg.Scopes = append([]string{"openid"}, cfg.Scopes...)
	} else {
		cfg.Scopes = slices.Clone(cfg.Scopes)
	}
	return nil
}

// normalizeIDTokenAlgs refuses ID token algs that are not asymmetric signatures.
func (cfg *Config) normalizeIDTokenAlgs() error {
	cfg.IDTokenAlgs = slices.Clone(cfg.IDTokenAlgs) // empty: what the upstream advertises (idTokenAlgs)
	for _, a := range cfg.IDTokenAlgs {
		if a == "" || strings.EqualFold(a, "none") || strings.HasPrefix(strings.ToUpper(a), "HS") {
			return fmt.Errorf("ID token alg %q is not allowed (asymmetric algorithms only)", a)
		}
	}
	return nil
}

// setDefaults fills the collaborators and timing a caller left zero: a 10-second HTTP client
// that follows no redirects, a discovery client on it, the system clock, one nonce retry,
// DefaultMaxPushesInFlight pushes at once.
func (opts *Options) setDefaults() {
	if opts.HTTP == nil {
		opts.HTTP = &http.Client{Timeout: 10 * time.Second, CheckRedirect: discovery.RefuseRedirect}
	}
	if opts.Discovery == nil {
		opts.Discovery = &discovery.Client{HTTP: opts.HTTP, Now: opts.Now}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxRetries == 0 {
		opts.MaxRetries = 1
	}
	if opts.MaxPushesInFlight <= 0 {
		opts.MaxPushesInFlight = DefaultMaxPushesInFlight
	}
}

// setupDPoP builds, when the connection uses DPoP, one HTTP client per wire label of its alg
// (Ed25519 is also sent as EdDSA): the base client with a dpop.Transport signing with the
// configured key and sharing one nonce cache.
func (c *Connection) setupDPoP() error {
	alg := c.cfg.DPoPSigningAlg
	if alg == "" {
		return nil
	}
	labels := wireLabels(alg)
	if labels == nil {
		return fmt.Errorf("dpop_signing_alg %q is not supported (ES256, Ed25519, RS256, PS256)", alg)
	}
	signer := c.opts.Signers[alg]
	if signer == nil && len(labels) > 1 {
		for _, l := range labels {
			if signer = c.opts.Signers[l]; signer != nil {
				break
			}
		}
	}
	if signer == nil {
		return fmt.Errorf("no DPoP key configured for %s", alg)
	}
	if c.opts.Nonces == nil {
		// Shared by every label so nonces survive relabelling; ages on the injected clock.
		c.opts.Nonces = dpop.NewNonceCacheWith(dpop.NonceCacheOptions{Now: c.opts.Now})
	}
	c.clients = make(map[string]*http.Client, len(labels))
	for _, l := range labels {
		s, err := signer.WithAlg(l)
		if err != nil {
			return fmt.Errorf("DPoP key cannot sign %s: %w", l, err)
		}
		hc := *c.plain
		hc.Transport = &dpop.Transport{
			Base:       c.plain.Transport, // beneath the proofs: each retry gets a fresh client assertion
			Signer:     s,
			Nonces:     c.opts.Nonces,
			MaxRetries: c.opts.MaxRetries,
			RetryDelay: c.opts.RetryDelay,
			Jitter:     c.opts.Jitter,
			Now:        c.opts.Now,
		}
		c.clients[l] = &hc
	}
	return nil
}

// OktaIssuer derives an Okta issuer from options.domain and options.authorization_server_id:
// https://DOMAIN for the org authorization server, https://DOMAIN/oauth2/ID for a custom one
// (such as "default"). domain is a host name with an optional port ("dev-1.okta.com"), or an
// origin with an explicit scheme: https://HOST, or http://HOST only for loopback hosts
// (127.0.0.1, localhost, ::1; tests). Paths, queries, fragments and user info are refused.
func OktaIssuer(domain, authorizationServerID string) (string, error) {
	d := strings.TrimSuffix(strings.TrimSpace(domain), "/")
	if d == "" {
		return "", errors.New("okta domain is empty")
	}
	raw := d
	if !strings.Contains(d, "://") {
		raw = "https://" + d
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil ||
		strings.ContainsAny(raw, "?#@ ") {
		return "", fmt.Errorf("okta domain %q must be a host name such as example.okta.com", domain)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !discovery.LoopbackHost(u.Hostname()) {
			return "", fmt.Errorf("okta domain %q: http is allowed only for loopback hosts (use https)", domain)
		}
	default:
		return "", fmt.Errorf("okta domain %q: scheme must be https", domain)
	}
	base := u.Scheme + "://" + u.Host
	id := authorizationServerID
	if id == "" {
		return base, nil
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') || len(id) > 128 {
			return "", fmt.Errorf("okta authorization_server_id %q must be letters, digits, '-' or '_'", id)
		}
	}
	return base + "/oauth2/" + id, nil
}

// checkURL applies discovery.CheckURL to an issuer or discovery URL, which also has no query
// (an issuer never has one, OpenID Connect Discovery 1.0 §2).
func checkURL(raw string) error {
	u, err := discovery.CheckURL(raw)
	if err != nil {
		return err
	}
	if u.RawQuery != "" {
		return fmt.Errorf("%q must be a URL without query", raw)
	}
	return nil
}

// Config returns the connection's configuration (with defaults applied).
func (c *Connection) Config() Config { return c.cfg.clone() }

// Start is what the broker must keep (in the login transaction) between Begin and Finish.
type Start struct {
	AuthURL      string `json:"-"`
	State        string `json:"state"`
	Nonce        string `json:"nonce"`
	Verifier     string `json:"verifier,omitempty"` // PKCE; empty when upstream lacks S256
	DPoPAlg      string `json:"dpop_alg,omitempty"` // wire alg label when DPoP is on
	Issuer       string `json:"issuer"`
	IssSupported bool   `json:"iss_supported,omitempty"` // RFC 9207 advertised upstream
	// PAR: the authorization request was pushed (RFC 9126); AuthURL carries only client_id
	// and request_uri.
	PAR bool `json:"par,omitempty"`
	// MaxAge is the max_age sent upstream (seconds; nil when none): the ID token must then
	// carry an auth_time no older than it (OIDC Core §3.1.3.7 step 13).
	MaxAge *int `json:"max_age,omitempty"`
}

// BeginOption adjusts the upstream authorization request.
type BeginOption func(*beginOptions)

type beginOptions struct {
	maxAge      *int
	promptLogin bool
	appParams   map[string]string // WithAppParams
}

// WithMaxAge sends max_age upstream (the app's max_age, OIDC Core §3.1.2.1) and makes Finish
// check the ID token's auth_time against it (OIDC Core §3.1.3.7 step 13).
func WithMaxAge(seconds int) BeginOption {
	return func(o *beginOptions) { o.maxAge = &seconds }
}

// WithPromptLogin sends prompt=login upstream: the user must authenticate again there.
func WithPromptLogin() BeginOption {
	return func(o *beginOptions) { o.promptLogin = true }
}

// CheckIss applies RFC 9207 §2.4 to the iss parameter of the authorization response: when
// present it must equal the issuer exactly; when the upstream advertises support it must be
// present.
func (s *Start) CheckIss(iss string) error {
	switch {
	case iss != "" && iss != s.Issuer:
		return &Error{Code: CodeIssMismatch, Description: fmt.Sprintf("authorization response iss %q does not equal the upstream issuer %q", iss, s.Issuer)}
	case iss == "" && s.IssSupported:
		return &Error{Code: CodeIssMismatch, Description: fmt.Sprintf("upstream %s advertises authorization_response_iss_parameter_supported but the response has no iss", s.Issuer)}
	}
	return nil
}

// randomString returns 32 random bytes, base64url without padding (256 bits).
func randomString() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("upstream: random: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// staleCapability is how old a cached discovery document must be before a failed DPoP
// capability check fetches it again.
const staleCapability = 30 * time.Second

func (c *Connection) discover(ctx context.Context) (*discovery.Document, error) {
	ctx, span := c.startSpan(ctx, "upstream discovery")
	doc, err := c.opts.Discovery.Get(ctx, c.cfg.Issuer, c.cfg.DiscoveryURL)
	if err != nil {
		ue := &Error{Code: CodeDiscovery, Description: fmt.Sprintf("discovery for %s failed: %v", c.cfg.Issuer, err), Err: err}
		endSpan(span, ue)
		return nil, ue
	}
	endSpan(span, nil)
	return doc, nil
}

// checkDPoP returns the wire label for the connection's DPoP alg ("" when DPoP is off).
func (c *Connection) checkDPoP(doc *discovery.Document) (string, error) {
	if c.cfg.DPoPSigningAlg == "" {
		return "", nil
	}
	wire, err := doc.CheckDPoP(c.cfg.DPoPSigningAlg)
	if err != nil {
		var ce *discovery.CapabilityError
		if errors.As(err, &ce) {
			return "", &Error{Code: ce.Code(), Description: ce.Error(), Err: err}
		}
		return "", &Error{Code: CodeDiscovery, Description: err.Error(), Err: err}
	}
	if c.clients[wire] == nil {
		return "", &Error{Code: CodeDPoPAlgMismatch, Description: fmt.Sprintf("no DPoP signer for wire alg %s", wire)}
	}
	return wire, nil
}

// oauth2Config returns the x/oauth2 configuration for doc and the client authentication
// method it uses (authMethod).
func (c *Connection) oauth2Config(doc *discovery.Document, redirectURI string) (*oauth2.Config, string, error) {
	method, err := c.authMethod(doc)
	if err != nil {
		return nil, "", err
	}
	style, secret := c.authStyle(method)
	return &oauth2.Config{
		ClientID:     c.cfg.ClientID,
		ClientSecret: secret,
		Endpoint: oauth2.Endpoint{
			AuthURL:   doc.AuthorizationEndpoint,
			TokenURL:  doc.TokenEndpoint,
			AuthStyle: style,
		},
		RedirectURL: redirectURI,
		Scopes:      c.cfg.Scopes,
	}, method, nil
}

// Begin fetches discovery, checks DPoP capability (a *discovery.CapabilityError wrapped in
// *Error with code dpop_not_supported / dpop_alg_mismatch — nothing is sent upstream), and
// builds the authorization URL with state, nonce and PKCE S256 for redirectURI.
func (c *Connection) Begin(ctx context.Context, redirectURI string, options ...BeginOption) (*Start, error) {
	var bo beginOptions
	for _, o := range options {
		o(&bo)
	}
	doc, err := c.discover(ctx)
	if err != nil {
		return nil, err
	}
	wire, err := c.checkDPoP(doc)
	if err != nil && c.opts.Now().Sub(doc.FetchedAt) > staleCapability {
		// The cached document may predate the upstream enabling DPoP (or the algorithm):
		// look once more before refusing the login. Rate-limited by staleCapability.
		if doc, err = c.opts.Discovery.Refresh(ctx, c.cfg.Issuer, c.cfg.DiscoveryURL); err != nil {
			return nil, &Error{Code: CodeDiscovery, Description: fmt.Sprintf("discovery for %s failed: %v", c.cfg.Issuer, err), Err: err}
		}
		wire, err = c.checkDPoP(doc)
	}
	if err != nil {
		return nil, err
	}
	oc, method, err := c.oauth2Config(doc, redirectURI)
	if err != nil {
		return nil, err
	}
	st := &Start{DPoPAlg: wire, Issuer: doc.Issuer, IssSupported: doc.AuthorizationResponseIssParameterSupported}
	if st.State, err = randomString(); err != nil {
		return nil, &Error{Code: CodeUpstreamError, Description: "cannot generate state", Err: err}
	}
	if st.Nonce, err = randomString(); err != nil {
		return nil, &Error{Code: CodeUpstreamError, Description: "cannot generate nonce", Err: err}
	}
	opts := []oauth2.AuthCodeOption{oidc.Nonce(st.Nonce)}
	if doc.SupportsS256() { // RFC 7636 §4.2: S256 whenever the upstream offers it
		st.Verifier = oauth2.GenerateVerifier() // RFC 7636 §4.1: 32 random octets, 43 chars
		opts = append(opts, oauth2.S256ChallengeOption(st.Verifier))
	}
	for _, p := range c.extraParams(bo.appParams) {
		opts = append(opts, oauth2.SetAuthURLParam(p[0], p[1]))
	}
	// The app's own requirements come last, so they win over configured upstream_params.
	if bo.maxAge != nil {
		st.MaxAge = bo.maxAge
		opts = append(opts, oauth2.SetAuthURLParam("max_age", strconv.Itoa(*bo.maxAge)))
	}
	if bo.promptLogin {
		opts = append(opts, oauth2.SetAuthURLParam("prompt", "login"))
	}
	st.AuthURL = oc.AuthCodeURL(st.State, opts...)
	if c.usePAR(doc) {
		if err := c.push(ctx, doc, st, method); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// LogoutURL returns the upstream's end_session_endpoint (OpenID Connect RP-Initiated Logout)
// with id_token_hint (the upstream ID token of the login, when known), the broker's client_id,
// post_logout_redirect_uri and state: where a federated logout sends the browser. An upstream
// without end_session_endpoint gives an *Error with code federated_logout_unsupported.
func (c *Connection) LogoutURL(ctx context.Context, idTokenHint, postLogoutRedirectURI, state string) (string, error) {
	doc, err := c.discover(ctx)
	if err != nil {
		return "", err
	}
	if doc.EndSessionEndpoint == "" {
		return "", &Error{Code: CodeLogoutUnsupported, Description: "the upstream's discovery document has no end_session_endpoint"}
	}
	u, err := discovery.CheckURL(doc.EndSessionEndpoint)
	if err != nil {
		return "", &Error{Code: CodeLogoutUnsupported, Description: "the upstream's end_session_endpoint is not an https URL"}
	}
	q := u.Query()
	if idTokenHint != "" {
		q.Set("id_token_hint", idTokenHint)
	}
	q.Set("client_id", c.cfg.ClientID)
	q.Set("post_logout_redirect_uri", postLogoutRedirectURI)
	q.Set("state", state)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// Result is the outcome of a code exchange.
type Result struct {
	Subject string
	// Issuer is the verified ID token's iss, and DiscoveryURL the connection's discovery_url
	// ("" = the issuer's well-known document) its keys were found through.
	Issuer, DiscoveryURL string
	// IdentityDigest is the Digest of the connection's Identity options at this login.
	IdentityDigest string
	Claims         map[string]any // ID-token claims, merged with userinfo when fetched
	// Profile is the user profile the connection's claim mapping made of the ID token and
	// userinfo (ClaimMapping.Profile): the claims of the broker's tokens.
	Profile    map[string]any
	IDTokenAlg string
	TokenType  string // as the upstream sent it
	DPoPBound  bool   // token_type == DPoP (RFC 9449 §5)
	DPoPAlg    string // "" when DPoP is off
	// ClientAuthMethod is how the broker authenticated at the token endpoint
	// (client_secret_basic, client_secret_post, private_key_jwt; "none" for a public client).
	ClientAuthMethod string
	// PAR: the authorization request was pushed (RFC 9126).
	PAR          bool
	NonceRetries int  // use_dpop_nonce retries during the token exchange
	NonceUsed    bool // a token-request proof carried a server nonce
	// NonceDropped: the upstream rejected a proof carrying a remembered nonce (token endpoint
	// or userinfo), so the broker forgot that nonce and retried once without it.
	NonceDropped    bool
	UserinfoStatus  string // "", "SUCCESS", "FAILURE"
	UserinfoBound   bool
	ExchangeLatency time.Duration
	AuthTime        time.Time // the ID token's auth_time (zero when absent)
	// IDToken is the upstream's raw ID token: the id_token_hint of a federated logout
	// (LogoutURL). A credential: never log it.
	IDToken string
}

// Userinfo status values.
const (
	UserinfoSuccess = "SUCCESS"
	UserinfoFailure = "FAILURE"
)

// Finish exchanges code (client authentication per discovery, PKCE verifier, DPoP proof with
// nonce retry), verifies the ID token with go-oidc (iss, aud, azp, exp, iat, nonce, alg), and
// fetches userinfo when configured. On failure it returns a partial Result (DPoP facts known so
// far) and an *Error.
func (c *Connection) Finish(ctx context.Context, st *Start, redirectURI, code string) (*Result, error) {
	res := &Result{}
	if st == nil || st.Nonce == "" || st.State == "" {
		return res, &Error{Code: CodeUpstreamError, Description: "login transaction is missing its state or nonce"}
	}
	doc, err := c.discover(ctx)
	if err != nil {
		return res, err
	}
	if st.Issuer != doc.Issuer {
		return res, &Error{Code: CodeUpstreamError, Description: fmt.Sprintf("login transaction issuer %q is not the connection's issuer %q", st.Issuer, doc.Issuer)}
	}
	hc := c.plain
	if c.cfg.DPoPSigningAlg != "" {
		wire := st.DPoPAlg
		if wire == "" { // transaction started before DPoP was enabled: check capability now
			if wire, err = c.checkDPoP(doc); err != nil {
				return res, err
			}
		}
		if hc = c.clients[wire]; hc == nil {
			return res, &Error{Code: CodeDPoPAlgMismatch, Description: fmt.Sprintf("login transaction DPoP alg %q does not fit the connection's %s", wire, c.cfg.DPoPSigningAlg)}
		}
		res.DPoPAlg = wire
	}
	oc, method, err := c.oauth2Config(doc, redirectURI)
	if err != nil {
		return res, err
	}
	res.ClientAuthMethod, res.PAR = method, st.PAR

	var dtrace dpop.Trace
	tctx := ctx
	if res.DPoPAlg != "" {
		tctx = dpop.WithTrace(ctx, &dtrace)
	}
	if method == discovery.AuthPrivateKeyJWT {
		tctx = withAssertion(tctx, doc.TokenEndpoint) // RFC 7523 §3: aud the token endpoint
	}
	dctx := context.WithValue(tctx, oauth2.HTTPClient, jsonOnly(hc))
	var xopts []oauth2.AuthCodeOption
	if st.Verifier != "" {
		xopts = append(xopts, oauth2.VerifierOption(st.Verifier))
	}
	dctx, xspan := c.startSpan(dctx, "upstream token exchange")
	started := time.Now()
	tok, err := oc.Exchange(dctx, code, xopts...)
	res.ExchangeLatency = time.Since(started)
	res.NonceRetries, res.NonceUsed, res.NonceDropped = dtrace.NonceRetries, dtrace.NonceUsed, dtrace.NonceDropped
	if err != nil {
		xe := exchangeError(err, c.opts.HTTP.Timeout)
		if res.DPoPAlg == "" {
			noProofSent(xe)
		}
		if xspan.IsRecording() {
			xspan.SetAttributes(resultAttrs(res)...)
		}
		endSpan(xspan, xe)
		return res, xe
	}
	res.TokenType = tok.TokenType
	res.DPoPBound = strings.EqualFold(tok.TokenType, "DPoP") // RFC 9449 §5: anything else is unbound
	if xspan.IsRecording() {
		xspan.SetAttributes(resultAttrs(res)...)
	}
	endSpan(xspan, nil)

	vctx, vspan := c.startSpan(ctx, "upstream id_token check")
	idt, claims, err := c.verifyIDToken(vctx, doc, st, tok)
	if idt != nil && vspan.IsRecording() {
		vspan.SetAttributes(attribute.String("oidc.id_token.alg", idAlg(tok)))
	}
	endSpan(vspan, err)
	if err != nil {
		return res, err
	}
	res.Subject, res.Issuer, res.DiscoveryURL = idt.Subject, idt.Issuer, c.cfg.DiscoveryURL
	res.IdentityDigest = c.identityDigest
	res.Claims = claims
	idClaims := maps.Clone(claims) // before userinfo is merged in: ${context.tokenset.id_token.…}
	var userinfo map[string]any
	if at, ok := numericDate(claims["auth_time"]); ok {
		res.AuthTime = at
	}
	res.IDTokenAlg = idAlg(tok)
	res.IDToken, _ = tok.Extra("id_token").(string)

	if c.cfg.FetchUserinfo {
		ucl := c.plain
		tt := "Bearer"
		if res.DPoPBound && c.cfg.DPoPSigningAlg != "" {
			ucl, tt, res.UserinfoBound = hc, "DPoP", true // RFC 9449 §7.1: DPoP <at> + proof with ath
		}
		// NonceRetries/NonceUsed describe the token exchange only; of userinfo only a dropped
		// stale nonce is reported.
		var utrace dpop.Trace
		sctx, uspan := c.startSpan(ctx, "upstream userinfo")
		if uspan.IsRecording() {
			uspan.SetAttributes(attribute.Bool("dpop.bound", res.UserinfoBound))
		}
		uctx := context.WithValue(dpop.WithTrace(sctx, &utrace), oauth2.HTTPClient, ucl)
		ui, err := doc.Provider.UserInfo(uctx, oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok.AccessToken, TokenType: tt}))
		res.NonceDropped = res.NonceDropped || utrace.NonceDropped
		if err == nil {
			userinfo, err = mergeUserinfo(ui, idt.Subject, claims)
		}
		if err != nil {
			res.UserinfoStatus = UserinfoFailure
			code := CodeUserinfo
			var nre *dpop.NonceRetryError
			if errors.As(err, &nre) {
				code = CodeUseDPoPNonce
			}
			ue := &Error{Code: code, Description: fmt.Sprintf("userinfo: %v", err), Err: err}
			endSpan(uspan, ue)
			return res, ue
		}
		endSpan(uspan, nil)
		res.UserinfoStatus = UserinfoSuccess
	}
	if res.Profile, err = c.cfg.claims.Profile(idClaims, userinfo); err != nil {
		return res, err
	}
	return res, nil
}

// jsonOnly returns a copy of hc that refuses a successful token response whose media type is
// not application/json (RFC 6749 §5.1; x/oauth2 would also parse form bodies, and a JSON body
// under any other type, such as an HTML page from a proxy).
func jsonOnly(hc *http.Client) *http.Client {
	c := *hc
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	c.Transport = jsonTokenTransport{base}
	return &c
}

type jsonTokenTransport struct{ base http.RoundTripper }

func (t jsonTokenTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil || resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp, err
	}
	ct := resp.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		_ = resp.Body.Close()
		return nil, fmt.Errorf("token endpoint answered HTTP %d with Content-Type %q, want application/json", resp.StatusCode, ct)
	}
	return resp, nil
}

// exchangeError maps a token-endpoint failure to a stable code; timeout is the HTTP client's.
func exchangeError(err error, timeout time.Duration) *Error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		desc := fmt.Sprintf("token endpoint answered HTTP %d error=%q", status, re.ErrorCode)
		if re.ErrorDescription != "" {
			desc += fmt.Sprintf(" error_description=%q", re.ErrorDescription)
		}
		return &Error{Code: oauthErrorCode(re.ErrorCode), OAuthError: re.ErrorCode, Description: desc, Err: err}
	}
	return requestError("token", err, timeout)
}

// oauthErrorCode is the stable code of an upstream's OAuth error answer: its DPoP errors
// keep their names, anything else is upstream_error.
func oauthErrorCode(oauthError string) string {
	switch oauthError {
	case CodeInvalidDPoPProof, CodeUseDPoPNonce:
		return oauthError
	}
	return CodeUpstreamError
}

// noProofSent turns e, an upstream's DPoP error answering a request that carried no DPoP
// proof, into CodeUpstreamRequiresDPoP: the proof was not wrong, there was none (RFC 9449
// §7.1: an authorization server requiring DPoP answers invalid_dpop_proof, or use_dpop_nonce,
// to a request without one). Other errors are left as they are.
func noProofSent(e *Error) {
	if e != nil && (e.Code == CodeInvalidDPoPProof || e.Code == CodeUseDPoPNonce) {
		e.Code = CodeUpstreamRequiresDPoP
		e.Description = "the upstream requires DPoP, and the connection sends no proof (dpop_signing_alg is off): " + e.Description
	}
}

// requestError maps the failure of a request (kind "token", "pushed authorization") that got
// no OAuth answer to a stable code: DPoP nonce retries exhausted, a timeout (timeout is the
// HTTP client's), or anything else.
func requestError(kind string, err error, timeout time.Duration) *Error {
	var nre *dpop.NonceRetryError
	if errors.As(err, &nre) {
		return &Error{Code: CodeUseDPoPNonce, OAuthError: "use_dpop_nonce", Description: fmt.Sprintf("%s endpoint still demanded a new DPoP nonce after %d retries", kind, nre.Retries), Err: err}
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		limit := "in time"
		if timeout > 0 {
			limit = "within " + timeout.String()
		}
		return &Error{Code: CodeUpstreamError, Description: fmt.Sprintf("%s endpoint did not answer %s (upstream timeout): %v", kind, limit, err), Err: err}
	}
	return &Error{Code: CodeUpstreamError, Description: fmt.Sprintf("%s request failed: %v", kind, err), Err: err}
}

// idAlg returns the JWS alg of the token response's ID token (already verified).
func idAlg(tok *oauth2.Token) string {
	raw, _ := tok.Extra("id_token").(string)
	h, _, _ := strings.Cut(raw, ".")
	b, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		return ""
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(b, &hdr) != nil {
		return ""
	}
	return hdr.Alg
}

func idTokenError(check string, err error) *Error {
	d := "ID token " + check + " check failed"
	if err != nil {
		d += ": " + err.Error()
	}
	return &Error{Code: CodeIDTokenInvalid, Description: d, Err: err}
}

// verifiableAlgs are the asymmetric JWS algorithms go-oidc verifies ID tokens with (OIDC Core
// §3.1.3.7 steps 6–8).
var verifiableAlgs = []string{
	oidc.RS256, oidc.RS384, oidc.RS512, oidc.ES256, oidc.ES384, oidc.ES512,
	oidc.PS256, oidc.PS384, oidc.PS512, oidc.EdDSA,
}

// idTokenAlgs returns the ID-token algorithms to accept: the configured ones, else the
// asymmetric ones the upstream advertises in id_token_signing_alg_values_supported (never
// none or HS*), else RS256, the OIDC default (OIDC Core §3.1.3.7 step 7).
func (c *Connection) idTokenAlgs(doc *discovery.Document) []string {
	if len(c.cfg.IDTokenAlgs) > 0 {
		return c.cfg.IDTokenAlgs
	}
	var algs []string
	for _, a := range doc.IDTokenSigningAlgValuesSupported {
		if slices.Contains(verifiableAlgs, a) {
			algs = append(algs, a)
		}
	}
	if len(algs) == 0 {
		return []string{oidc.RS256}
	}
	return algs
}

// verifyIDToken applies OIDC Core §3.1.3.7 (the id-token-* rows of docs/conformance.md, from
// docs/conformance.md#id-token-iss on): go-oidc checks the signature with the issuer's JWKS
// and allowed algs, iss, aud and exp with ClockSkew; the checks it leaves to callers follow:
// nonce, sub, azp, iat, at_hash, auth_time.
func (c *Connection) verifyIDToken(ctx context.Context, doc *discovery.Document, st *Start, tok *oauth2.Token) (*oidc.IDToken, map[string]any, error) {
	raw, ok := tok.Extra("id_token").(string)
	if !ok || raw == "" {
		return nil, nil, idTokenError("presence", errors.New("token response has no id_token"))
	}
	skew := c.opts.ClockSkew
	now := c.opts.Now
	v := doc.Provider.Verifier(&oidc.Config{
		ClientID:             c.cfg.ClientID,
		SupportedSigningAlgs: c.idTokenAlgs(doc),
		Now:                  func() time.Time { return now().Add(-skew) }, // exp leeway
	})
	idt, err := v.Verify(ctx, raw)
	if err != nil {
		var te *oidc.TokenExpiredError
		msg := err.Error()
		switch {
		case errors.As(err, &te):
			return nil, nil, idTokenError("exp", err)
		case strings.Contains(msg, "different provider"):
			return nil, nil, idTokenError("iss", err)
		case strings.Contains(msg, "expected audience"):
			return nil, nil, idTokenError("aud", err)
		case strings.Contains(msg, "malformed jwt"):
			return nil, nil, idTokenError("alg/format", err)
		case strings.Contains(msg, "verify signature"):
			return nil, nil, idTokenError("signature", err)
		case strings.Contains(msg, "nbf"):
			return nil, nil, idTokenError("nbf", err)
		}
		return nil, nil, idTokenError("verification", err)
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(st.Nonce)) != 1 {
		return nil, nil, idTokenError("nonce", fmt.Errorf("nonce does not match the one sent (present: %t)", idt.Nonce != ""))
	}
	if idt.Subject == "" {
		return nil, nil, idTokenError("sub", errors.New("sub is empty"))
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return nil, nil, idTokenError("claims", err)
	}
	azp, hasAzp := claims["azp"]
	switch s, _ := azp.(string); {
	case !hasAzp && len(idt.Audience) > 1:
		return nil, nil, idTokenError("azp", fmt.Errorf("azp is missing although aud has %d members", len(idt.Audience)))
	case hasAzp && s != c.cfg.ClientID:
		return nil, nil, idTokenError("azp", fmt.Errorf("azp %q is not client_id %q", fmt.Sprint(azp), c.cfg.ClientID))
	}
	if idt.IssuedAt.IsZero() {
		return nil, nil, idTokenError("iat", errors.New("iat is missing"))
	}
	if idt.IssuedAt.After(now().Add(skew)) {
		return nil, nil, idTokenError("iat", fmt.Errorf("iat %s is in the future", idt.IssuedAt.UTC().Format(time.RFC3339)))
	}
	if idt.AccessTokenHash != "" {
		if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
			return nil, nil, idTokenError("at_hash", err)
		}
	}
	if st.MaxAge != nil { // step 13: max_age was sent, so auth_time is required and recent enough
		at, ok := numericDate(claims["auth_time"])
		switch {
		case !ok:
			return nil, nil, idTokenError("auth_time", errors.New("auth_time is missing although max_age was sent"))
		case now().Sub(at) > time.Duration(*st.MaxAge)*time.Second+skew:
			return nil, nil, idTokenError("auth_time", fmt.Errorf("auth_time %s is older than max_age %d s", at.UTC().Format(time.RFC3339), *st.MaxAge))
		}
	}
	return idt, claims, nil
}

// numericDate reads a JWT NumericDate claim (seconds since the epoch, JSON number).
func numericDate(v any) (time.Time, bool) {
	f, ok := v.(float64)
	if !ok || f <= 0 || f > 1e11 {
		return time.Time{}, false
	}
	return time.Unix(int64(f), 0), true
}

// idTokenOnly are ID-token claims userinfo may not overwrite.
var idTokenOnly = map[string]bool{
	"iss": true, "sub": true, "aud": true, "exp": true, "iat": true, "nbf": true, "nonce": true,
	"azp": true, "at_hash": true, "c_hash": true, "auth_time": true, "acr": true, "amr": true,
	"sid": true, "jti": true,
}

// mergeUserinfo adds userinfo claims to claims and returns them; the userinfo sub must equal
// the ID token's (OIDC Core §5.3.2).
func mergeUserinfo(ui *oidc.UserInfo, sub string, claims map[string]any) (map[string]any, error) {
	if ui.Subject != sub {
		return nil, fmt.Errorf("userinfo sub %q does not match the ID token sub %q", ui.Subject, sub)
	}
	var extra map[string]any
	if err := ui.Claims(&extra); err != nil {
		return nil, fmt.Errorf("decoding userinfo claims: %w", err)
	}
	for k, v := range extra {
		if !idTokenOnly[k] {
			claims[k] = v
		}
	}
	return extra, nil
}
