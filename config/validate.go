package config

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/dpop-broker/dpop-broker/discovery"
	"github.com/dpop-broker/dpop-broker/dpop"
	"github.com/dpop-broker/dpop-broker/upstream"
)

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

// DPoP algorithms a connection may configure.
var connectionDPoPAlgs = []string{"ES256", "Ed25519", "RS256", "PS256"}

var connectionNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`)
var connectionIDRE = regexp.MustCompile(`^con_[A-Za-z0-9]{1,64}$`)

// ValidConnectionID reports whether id has the form of a connection id: con_ followed by 1 to
// 64 letters and digits.
func ValidConnectionID(id string) bool { return connectionIDRE.MatchString(id) }

// Validate returns every problem in the configuration, each naming the exact key. Keys
// needed by a connection or by token signing must be configured (and loadable) unless
// GenerateMissingKeys is set.
func (c *Config) Validate() []FieldError {
	return c.validate(!c.GenerateMissingKeys)
}

// ValidateExceptKeys is Validate for a caller that brings its own keys (broker.Deps.Keys): the
// keys the configuration names are neither required nor loaded, only their algs checked.
func (c *Config) ValidateExceptKeys() []FieldError {
	return c.validate(false)
}

type validator struct{ errs []FieldError }

func (v *validator) add(key, format string, args ...any) {
	v.errs = append(v.errs, FieldError{Key: key, Reason: fmt.Sprintf(format, args...)})
}

func (c *Config) validate(checkKeys bool) []FieldError {
	v := &validator{}
	v.issuer("issuer", c.Issuer, true)
	if c.PublicURL != "" {
		v.issuer("public_url", c.PublicURL, false)
	}
	c.brokerURLs(v)
	v.listen("listen", c.Listen)
	if c.UpstreamTimeout <= 0 {
		v.add("upstream_timeout", "must be a positive duration such as 10s")
	} else if c.UpstreamTimeout > LoginExchangeBudget {
		v.add("upstream_timeout", "must be at most %s, the budget for one login's whole upstream exchange", LoginExchangeBudget)
	}
	v.upstreamNetworks(c.UpstreamAllowedNetworks)
	v.store(&c.Store)
	c.validateLifetimes(v)
	v.clients(c)
	v.apis(c)
	v.grants(c)
	v.dpopServer(&c.DPoPServer, checkKeys)
	v.connections(c)
	if c.Logs.MaxEvents < 1 {
		v.add("logs.max_events", "must be at least 1")
	}
	if c.Logs.MaxAge <= 0 {
		v.add("logs.max_age", "must be a positive duration such as 720h")
	}
	v.unauthenticatedLogs(&c.Logs.Unauthenticated)
	v.adminLogs(&c.Logs.Admin)
	v.log(&c.Log)
	v.management(&c.Management)
	v.console(c)
	v.rateLimits(c)
	v.logStreams(c)
	c.validateClientAuthKeys(v, checkKeys)
	if checkKeys {
		c.validateKeys(v)
	} else {
		if a := c.Keys.Signing.Alg; a != "RS256" && a != "ES256" {
			v.add("keys.signing.alg", "%q is not supported (use RS256 or ES256)", a)
		}
		for i, p := range c.Keys.PreviousSigning {
			if p.Alg != "RS256" && p.Alg != "ES256" {
				v.add(fmt.Sprintf("keys.previous_signing[%d].alg", i), "%q is not supported (use RS256 or ES256)", p.Alg)
			}
		}
	}
	return v.errs
}

// issuer checks an absolute http(s) URL without query, fragment or user info.
func (v *validator) issuer(key, raw string, required bool) {
	if raw == "" {
		if required {
			v.add(key, "is required")
		}
		return
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		// Not err itself: a *url.Error quotes the whole URL.
		reason := err
		if ue, ok := err.(*url.Error); ok {
			reason = ue.Err
		}
		v.add(key, "%q is not a URL: %v", redactURL(raw), reason)
	case u.Scheme != "http" && u.Scheme != "https":
		v.add(key, "%q must be an absolute http or https URL", redactURL(raw))
	case u.Host == "":
		v.add(key, "%q has no host", redactURL(raw))
	case u.User != nil:
		v.add(key, "%q must not contain user information", redactURL(raw))
	case u.RawQuery != "" || u.ForceQuery:
		v.add(key, "%q must not contain a query", redactURL(raw))
	case u.Fragment != "" || strings.Contains(raw, "#"):
		v.add(key, "%q must not contain a fragment", redactURL(raw))
	}
}

// upstreamURL checks an upstream issuer or discovery URL: the issuer's shape, then the rule
// every upstream URL follows when the broker uses it (https; http only on a loopback host), so
// that config validate refuses what serve would.
func (v *validator) upstreamURL(key, raw string) {
	n := len(v.errs)
	v.issuer(key, raw, false)
	if len(v.errs) > n {
		return
	}
	if _, err := discovery.CheckURL(raw); err != nil {
		v.add(key, "%v", err)
	}
}

func (v *validator) listen(key, addr string) {
	if addr == "" {
		v.add(key, "is required")
		return
	}
	if err := CheckListenAddr(addr); err != nil {
		v.add(key, "%v", err)
	}
}

// CheckListenAddr checks a HOST:PORT listen address (HOST may be empty: every interface).
func CheckListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q must be HOST:PORT (%v)", addr, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%q has an invalid port", addr)
	}
	return nil
}

func (v *validator) store(s *Store) {
	if n := s.Memory.MaxRecords; n < minMemoryRecords || n > maxMemoryRecords {
		v.add("store.memory.max_records", "must be between %d and %d", minMemoryRecords, maxMemoryRecords)
	}
	v.replayRecords(&s.Memory)
	switch s.Type {
	case "memory":
	case "redis":
		r := s.Redis
		if len(r.Addrs) == 0 {
			v.add("store.redis.addrs", "at least one address is required for store type redis")
		}
		for i, a := range r.Addrs {
			key := fmt.Sprintf("store.redis.addrs[%d]", i)
			host, port, err := net.SplitHostPort(a)
			if err != nil || host == "" {
				v.add(key, "%q must be HOST:PORT", a)
				continue
			}
			if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
				v.add(key, "%q has an invalid port", a)
			}
		}
		if r.DB < 0 {
			v.add("store.redis.db", "must not be negative")
		}
		if r.DB != 0 && len(r.Addrs) > 1 && r.MasterName == "" {
			v.add("store.redis.db", "Redis Cluster has only database 0")
		}
		if strings.ContainsAny(r.Prefix, "{}") {
			v.add("store.redis.prefix", "must not contain '{' or '}'")
		}
		if r.MasterName == "" && (r.SentinelUsername != "" || r.SentinelPassword != "") {
			v.add("store.redis.sentinel_password", "only applies with master_name (Sentinel)")
		}
		if r.Timeout <= 0 {
			v.add("store.redis.timeout", "must be a positive duration")
		}
		if _, err := redisTLSConfig(r.TLS); err != nil {
			var fe FieldError
			if errors.As(err, &fe) {
				v.add(fe.Key, "%s", fe.Reason)
			} else {
				v.add("store.redis.tls", "%v", err)
			}
		}
	default:
		v.add("store.type", "%q is not supported (use memory or redis)", s.Type)
	}
}

func (c *Config) validateLifetimes(v *validator) {
	for _, d := range []struct {
		key    string
		val    time.Duration
		zeroOK bool // timing knobs may be 0; lifetimes must be positive
	}{
		{"lifetimes.transaction", c.Lifetimes.Transaction, false},
		{"lifetimes.code", c.Lifetimes.Code, false},
		{"lifetimes.session", c.Lifetimes.Session, false},
		{"lifetimes.id_token", c.Lifetimes.IDToken, false},
		{"lifetimes.access_token", c.Lifetimes.AccessToken, false},
		{"lifetimes.refresh_token", c.Lifetimes.RefreshToken, false},
		{"sessions.idle_timeout", c.Sessions.IdleTimeout, false},
		{"sessions.absolute_timeout", c.Sessions.AbsoluteTimeout, true},
		{"dpop.clock_skew", c.DPoP.ClockSkew, true},
		{"dpop.clock_tolerance", c.DPoP.ClockTolerance, true},
		{"dpop.retry_delay", c.DPoP.RetryDelay, true},
		{"dpop.jitter", c.DPoP.Jitter, true},
	} {
		switch {
		case d.zeroOK && d.val < 0:
			v.add(d.key, "must not be negative")
		case !d.zeroOK && d.val <= 0:
			v.add(d.key, "must be a positive duration")
		}
	}
	switch abs := c.SessionAbsolute(); {
	case abs <= 0 || c.Sessions.IdleTimeout <= c.SessionAbsolute():
	case c.Sessions.AbsoluteTimeout > 0:
		v.add("sessions.idle_timeout", "%v is longer than sessions.absolute_timeout (%v)", c.Sessions.IdleTimeout, abs)
	default:
		v.add("sessions.idle_timeout", "%v is longer than the absolute session lifetime (%v, from lifetimes.session: sessions.absolute_timeout is unset)", c.Sessions.IdleTimeout, abs)
	}
	if c.DPoP.MaxRetries < 0 || c.DPoP.MaxRetries > 5 {
		v.add("dpop.max_retries", "%d is out of range (0 to 5)", c.DPoP.MaxRetries)
	}
}

func (v *validator) clients(c *Config) {
	if len(c.Clients) == 0 {
		v.add("clients", "at least one client is required")
	}
	seen := map[string]int{}
	known := func(name string) bool {
		return slices.ContainsFunc(c.Connections, func(cc Connection) bool { return cc.Name == name })
	}
	for i := range c.Clients {
		cl := &c.Clients[i]
		p := fmt.Sprintf("clients[%d].", i)
		if j, dup := seen[cl.ClientID]; dup && validClientID(cl.ClientID) {
			v.add(p+"client_id", "duplicate client_id %q (also clients[%d])", cl.ClientID, j)
		} else if !dup {
			seen[cl.ClientID] = i
		}
		if cl.ClientID == ConsoleClientID {
			v.add(p+"client_id", "%q is reserved for the operators' console's built-in client", cl.ClientID)
		}
		v.client(p, cl, c.AllowInsecureHTTP, known)
		if len(cl.Connections) == 0 {
			v.add(p+"connections", "at least one connection is required")
		}
	}
}

// validClientID reports whether id is 1 to 128 visible ASCII characters.
func validClientID(id string) bool {
	return id != "" && len(id) <= 128 && !strings.ContainsFunc(id, func(r rune) bool { return r < 0x21 || r > 0x7e })
}

// client checks one client: the YAML entry (p = "clients[i].") or a management API body
// (p = ""). known reports whether a connection name exists. The id's uniqueness and the
// YAML-only rule that a client names a connection are the caller's.
func (v *validator) client(p string, cl *Client, allowHTTP bool, known func(string) bool) {
	switch {
	case cl.ClientID == "":
		v.add(p+"client_id", "is required")
	case !validClientID(cl.ClientID):
		v.add(p+"client_id", "must be 1 to 128 visible ASCII characters")
	}
	switch m := cl.AuthMethod(); m {
	case AuthSecretBasic, AuthSecretPost:
		if cl.ClientSecret == "" {
			v.add(p+"client_secret", "is required for token_endpoint_auth_method %s", m)
		}
	case AuthNone:
		if cl.ClientSecret != "" {
			v.add(p+"client_secret", "must be empty for a public client (token_endpoint_auth_method none)")
		}
	default:
		v.add(p+"token_endpoint_auth_method", "%q is not supported (use client_secret_basic, client_secret_post or none)", m)
	}
	if len(cl.RedirectURIs) == 0 {
		v.add(p+"redirect_uris", "at least one redirect URI is required")
	}
	for j, ru := range cl.RedirectURIs {
		if reason := redirectURIProblem(ru, allowHTTP); reason != "" {
			v.add(fmt.Sprintf("%sredirect_uris[%d]", p, j), "%s", reason)
		}
	}
	for j, ru := range cl.PostLogoutRedirectURIs {
		if reason := redirectURIProblem(ru, allowHTTP); reason != "" {
			v.add(fmt.Sprintf("%spost_logout_redirect_uris[%d]", p, j), "%s", reason)
		}
	}
	for j, o := range cl.AllowedOrigins {
		if reason := originProblem(o, allowHTTP); reason != "" {
			v.add(fmt.Sprintf("%sallowed_origins[%d]", p, j), "%s", reason)
		}
	}
	if cl.BackchannelLogoutURI != "" {
		if reason := backchannelLogoutURIProblem(cl.BackchannelLogoutURI, allowHTTP); reason != "" {
			v.add(p+"backchannel_logout_uri", "%s", reason)
		}
	}
	for j, name := range cl.Connections {
		if !known(name) {
			v.add(fmt.Sprintf("%sconnections[%d]", p, j), "connection %q is not defined in connections", name)
		}
	}
}

// ValidateClient checks a client given to the management API (keys without the clients[i].
// prefix) with the rules and messages of the YAML's clients: known reports whether a
// connection name exists (the store's connections). Unlike a YAML entry, the client may name
// no connection yet (a connection's enabled_clients can enable it later). The id's
// uniqueness is the caller's.
func (c *Config) ValidateClient(cl *Client, known func(name string) bool) []FieldError {
	v := &validator{}
	v.client("", cl, c.AllowInsecureHTTP, known)
	v.clientGrants("", cl, c, apiIndex(c), apiAudiences(c))
	return v.errs
}

// proofAlgs are the DPoP proof algorithms the verifier implements (asymmetric only, RFC 9449
// §4.3 step 5).
var proofAlgs = []string{"ES256", "ES384", "ES512", "EdDSA", "Ed25519", "RS256", "PS256"}

// minNonceSecret is the smallest dpop_server.nonce_secret in bytes.
const minNonceSecret = 32

// dpopServer checks the proof-verification settings. A missing nonce secret is an error only
// when keys are checked (serve); otherwise broker.New generates one (demo).
func (v *validator) dpopServer(d *DPoPServer, checkKeys bool) {
	switch n := len(d.NonceSecret); {
	case n == 0 && d.RequireNonce && checkKeys:
		v.add("dpop_server.nonce_secret", "is required when require_nonce is true (at least %d bytes, the same on every replica)", minNonceSecret)
	case n > 0 && n < minNonceSecret:
		v.add("dpop_server.nonce_secret", "must be at least %d bytes (got %d)", minNonceSecret, n)
	}
	if d.NoncePeriod <= 0 {
		v.add("dpop_server.nonce_period", "must be a positive duration")
	}
	if d.MaxAge <= 0 || d.MaxAge > time.Hour {
		v.add("dpop_server.max_age", "%v is out of range (more than 0s, at most 1h)", d.MaxAge)
	}
	if d.MaxFuture < 0 || d.MaxFuture > 5*time.Minute {
		v.add("dpop_server.max_future", "%v is out of range (0s to 5m)", d.MaxFuture)
	}
	if len(d.Algs) == 0 {
		v.add("dpop_server.algs", "at least one algorithm is required")
	}
	seen := map[string]bool{}
	for i, a := range d.Algs {
		key := fmt.Sprintf("dpop_server.algs[%d]", i)
		switch {
		case !slices.Contains(proofAlgs, a):
			v.add(key, "%q is not supported (use %s)", a, joinOr(proofAlgs))
		case seen[a]:
			v.add(key, "duplicate algorithm %q", a)
		}
		seen[a] = true
	}
}

// apis checks the resource servers: unique audiences and a known policy.
func (v *validator) apis(c *Config) {
	seen := map[string]int{}
	userinfo := c.BaseURL() + "/userinfo"
	for i, a := range c.APIs {
		p := fmt.Sprintf("apis[%d]", i)
		switch {
		case a.Audience == "":
			v.add(p+".audience", "is required")
		case len(a.Audience) > 600 || strings.ContainsFunc(a.Audience, func(r rune) bool { return r < 0x21 || r > 0x7e }):
			v.add(p+".audience", "must be 1 to 600 visible ASCII characters")
		case a.Audience == userinfo:
			v.add(p+".audience", "%q is the broker's userinfo audience and cannot be configured as an API", a.Audience)
		default:
			if j, dup := seen[a.Audience]; dup {
				v.add(p+".audience", "duplicate audience %q (also apis[%d])", a.Audience, j)
			} else {
				seen[a.Audience] = i
			}
		}
		switch a.SenderConstraining {
		case "", PolicyNone, PolicyAllowed, PolicyRequired:
		default:
			v.add(p+".sender_constraining", "%q is not supported (use none, allowed or required)", a.SenderConstraining)
		}
		v.apiClaims(p+".claims", a.Claims)
		switch a.RequiredFor {
		case "", RequiredForAll:
		case RequiredForPublic:
			if a.SenderConstraining != PolicyRequired {
				v.add(p+".required_for", "public_clients only applies with sender_constraining: required (it is %q)", a.SenderConstraining)
			}
		default:
			v.add(p+".required_for", "%q is not supported (use all_clients or public_clients)", a.RequiredFor)
		}
	}
}

// apiClaims checks apis[].claims: profile claim names (upstream.CheckClaimName), each once.
func (v *validator) apiClaims(key string, claims []string) {
	seen := map[string]bool{}
	for j, c := range claims {
		ck := fmt.Sprintf("%s[%d]", key, j)
		if err := upstream.CheckClaimName(c); err != nil {
			v.add(ck, "%v", err)
		} else if seen[c] {
			v.add(ck, "duplicate claim %q", c)
		}
		seen[c] = true
	}
}

// joinOr lists names as "a, b or c".
func joinOr(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

func (v *validator) connections(c *Config) {
	if len(c.Connections) == 0 {
		v.add("connections", "at least one connection is required")
	}
	names, ids := map[string]int{}, map[string]int{}
	clients, audiences := clientIDs(c), apiAudiences(c)
	for i := range c.Connections {
		cc := &c.Connections[i]
		p := fmt.Sprintf("connections[%d]", i)
		if cc.ID != "" && !connectionIDRE.MatchString(cc.ID) {
			v.add(p+".id", "%q must be con_ followed by letters and digits", cc.ID)
		} else if cc.Name != "" || cc.ID != "" {
			id := cc.ConnectionID()
			if j, dup := ids[id]; dup {
				v.add(p+".id", "duplicate connection id %q (also connections[%d])", id, j)
			} else {
				ids[id] = i
			}
		}
		if cc.Name != "" && connectionNameRE.MatchString(cc.Name) {
			if j, dup := names[cc.Name]; dup {
				v.add(p+".name", "duplicate connection name %q (also connections[%d])", cc.Name, j)
			} else {
				names[cc.Name] = i
			}
		}
		v.connection(p+".", cc, clients, audiences)
	}
	v.sharedDomainAliases(c.Connections)
}

// clientIDs returns the configured client ids.
func clientIDs(c *Config) map[string]bool {
	m := make(map[string]bool, len(c.Clients))
	for _, cl := range c.Clients {
		m[cl.ClientID] = true
	}
	return m
}

// ValidateConnection checks a connection given to the management API (keys without the
// connections[i]. prefix) against the rest of the configuration: its clients (the
// configured ones and storeClients, the ids of the clients in the broker's store), and the
// API audiences enabled_clients must not name. The id and name uniqueness are the caller's.
func (c *Config) ValidateConnection(cc *Connection, storeClients ...string) []FieldError {
	v := &validator{}
	clients := clientIDs(c)
	for _, id := range storeClients {
		clients[id] = true
	}
	v.connection("", cc, clients, apiAudiences(c))
	return v.errs
}

// connection checks one connection: the YAML entry (p = "connections[i].") or a management
// API body (p = ""). Name uniqueness and the id are checked by the caller. audiences
// (apiAudiences) are refused in enabled_clients: they name APIs, never clients.
func (v *validator) connection(p string, cc *Connection, clients map[string]bool, audiences map[string]string) {
	o := cc.Options
	switch {
	case cc.Name == "":
		v.add(p+"name", "is required")
	case !connectionNameRE.MatchString(cc.Name):
		v.add(p+"name", "%q must be 1 to 128 letters, digits, '-' or '_', starting with a letter or digit", cc.Name)
	}
	if len(cc.DisplayName) > 128 {
		v.add(p+"display_name", "must be at most 128 characters")
	}
	v.homeRealm(p, cc)
	switch cc.Strategy {
	case "oidc":
		if o.Issuer == "" && o.DiscoveryURL == "" {
			v.add(p+"options.issuer", "issuer or discovery_url is required")
		}
		if o.Domain != "" || o.AuthorizationServerID != "" {
			v.add(p+"options.domain", "domain and authorization_server_id apply to strategy okta only")
		}
	case "okta":
		if o.Issuer == "" && o.DiscoveryURL == "" && o.Domain == "" {
			v.add(p+"options.domain", "domain, issuer or discovery_url is required")
		}
		if o.Domain != "" {
			if _, err := upstream.OktaIssuer(o.Domain, ""); err != nil { // http:// only for loopback
				// The error quotes the domain: redact it as a URL.
				v.add(p+"options.domain", "%s", strings.ReplaceAll(err.Error(), strconv.Quote(o.Domain), strconv.Quote(redactURL(o.Domain))))
			}
		}
		if id := o.AuthorizationServerID; id != "" && !oktaServerIDRE.MatchString(id) {
			v.add(p+"options.authorization_server_id", "%q must be an Okta authorization server id such as default or aus1a2b3c4", id)
		}
		if o.AuthorizationServerID != "" && o.Domain == "" {
			v.add(p+"options.authorization_server_id", "needs options.domain")
		}
	case "":
		v.add(p+"strategy", "is required (oidc or okta)")
	default:
		v.add(p+"strategy", "%q is not supported (use oidc or okta)", cc.Strategy)
	}
	if o.Issuer != "" {
		v.upstreamURL(p+"options.issuer", o.Issuer)
	}
	if o.DiscoveryURL != "" {
		v.upstreamURL(p+"options.discovery_url", o.DiscoveryURL)
	}
	if o.ClientID == "" {
		v.add(p+"options.client_id", "is required")
	}
	v.clientAuth(p, &o)
	if !slices.Contains(strings.Fields(o.Scope), "openid") {
		v.add(p+"options.scope", "%q must include openid", o.Scope)
	}
	dpopOn := o.DPoPSigningAlg != ""
	switch {
	case o.Type != "back_channel" && dpopOn:
		v.add(p+"options.type", "%q is not supported (only back_channel, which DPoP requires: dpop_signing_alg is set)", o.Type)
	case o.Type != "back_channel":
		v.add(p+"options.type", "%q is not supported (only back_channel)", o.Type)
	}
	if cp := o.CallbackPath; cp != "" && cp != CallbackShared && cp != CallbackDedicated {
		v.add(p+"options.callback_path", "%q is not supported (use %s or %s)", cp, CallbackShared, CallbackDedicated)
	}
	if dpopOn && !slices.Contains(connectionDPoPAlgs, o.DPoPSigningAlg) {
		v.add(p+"options.dpop_signing_alg", "%q is not supported (use ES256, Ed25519, RS256 or PS256)", o.DPoPSigningAlg)
	}
	if dpopOn && o.TokenVault != nil && o.TokenVault.Active {
		v.add(p+"options.federated_connections_access_tokens.active", "Token Vault is not compatible with DPoP: set active to false or remove dpop_signing_alg")
	}
	if oa, ok := o.UpstreamParams["offline_access"]; dpopOn && ok && (oa.Alias != "" || truthy(oa.Value)) {
		what := strconv.Quote(oa.Value)
		if oa.Alias != "" {
			what = "alias " + oa.Alias
		}
		v.add(p+"options.upstream_params.offline_access", "%s enables Token Vault (offline access at the upstream), which is not compatible with DPoP: remove it or remove dpop_signing_alg", what)
	}
	v.upstreamParams(p+"options.upstream_params", o.UpstreamParams)
	v.attributeMap(p+"options.attribute_map", o.AttributeMap)
	v.connectionExtras(p, cc)
	for j, id := range cc.EnabledClients {
		if where, isAud := audiences[id]; isAud {
			v.add(fmt.Sprintf("%senabled_clients[%d]", p, j), "%q is %s, not a client id", id, where)
		} else if !clients[id] {
			v.add(fmt.Sprintf("%senabled_clients[%d]", p, j), "client %q is not defined in clients", id)
		}
	}
}

// clientAuth checks how the broker authenticates at the upstream's token endpoint: a
// client_secret for the secret methods (and the discovery default), an assertion alg and no
// client_secret with private_key_jwt.
func (v *validator) clientAuth(p string, o *ConnectionOptions) {
	m, alg := o.TokenEndpointAuthMethod, o.TokenEndpointAuthSigningAlg
	switch m {
	case "", AuthSecretBasic, AuthSecretPost:
		if o.ClientSecret == "" {
			v.add(p+"options.client_secret", "is required (back-channel code exchange with token_endpoint_auth_method %s)", cmp.Or(m, "client_secret_basic or client_secret_post"))
		}
		if alg != "" {
			v.add(p+"options.token_endpoint_auth_signing_alg", "applies to token_endpoint_auth_method private_key_jwt only")
		}
	case AuthPrivateKeyJWT:
		if o.ClientSecret != "" {
			v.add(p+"options.client_secret", "must not be set with token_endpoint_auth_method private_key_jwt: the broker authenticates with a signed assertion (RFC 7523 §2.2) and never sends the secret; remove it")
		}
		if alg != "" && !slices.Contains(upstream.ClientAuthAlgs, alg) {
			v.add(p+"options.token_endpoint_auth_signing_alg", "%q is not supported (use RS256, ES256 or PS256)", alg)
		}
	default:
		v.add(p+"options.token_endpoint_auth_method", "%q is not supported (use client_secret_basic, client_secret_post or private_key_jwt)", m)
	}
}

// ClientAuthAlg returns the private_key_jwt assertion alg of o (default RS256), or "" when o
// does not use private_key_jwt.
func (o *ConnectionOptions) ClientAuthAlg() string {
	if o.TokenEndpointAuthMethod != AuthPrivateKeyJWT {
		return ""
	}
	return cmp.Or(o.TokenEndpointAuthSigningAlg, "RS256")
}

// connectionExtras checks the members kept for the SaaS's tools: realms and metadata.
func (v *validator) connectionExtras(p string, cc *Connection) {
	if len(cc.Realms) > MaxConnectionRealms {
		v.add(p+"realms", "must have at most %d entries", MaxConnectionRealms)
	}
	for j, r := range cc.Realms {
		switch {
		case r == "" || utf8.RuneCountInString(r) > MaxConnectionMetadataLen:
			v.add(fmt.Sprintf("%srealms[%d]", p, j), "must be 1 to %d characters", MaxConnectionMetadataLen)
		case slices.Contains(cc.Realms[:j], r):
			v.add(fmt.Sprintf("%srealms[%d]", p, j), "%q is listed twice", r)
		}
	}
	if len(cc.Metadata) > MaxConnectionMetadata {
		v.add(p+"metadata", "must have at most %d members", MaxConnectionMetadata)
		return
	}
	for _, k := range slices.Sorted(maps.Keys(cc.Metadata)) {
		if k == "" || utf8.RuneCountInString(k) > MaxConnectionMetadataLen {
			v.add(p+"metadata", "member names must be 1 to %d characters", MaxConnectionMetadataLen)
		} else if utf8.RuneCountInString(cc.Metadata[k]) > MaxConnectionMetadataLen {
			v.add(p+"metadata."+k, "must be at most %d characters", MaxConnectionMetadataLen)
		}
	}
}

var oktaServerIDRE = regexp.MustCompile(`^[A-Za-z0-9]{1,64}$`)

// truthy reports whether an upstream parameter value switches something on.
func truthy(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "", "false", "0", "no", "off":
		return false
	}
	return true
}

// upstreamParams checks options.upstream_params against the broker's safe list
// (upstream.CheckUpstreamParam), each problem under its parameter's key.
func (v *validator) upstreamParams(key string, params ParamMap) {
	for _, k := range slices.Sorted(maps.Keys(params)) {
		if err := upstream.CheckUpstreamParam(k, params[k].Value, params[k].Alias); err != nil {
			v.add(key+"."+k, "%v", err)
		}
	}
}

// attributeMap checks options.attribute_map (docs/claims.md): the mode, the userinfo scopes
// and every attribute's claim name and template, each problem under the attribute's key.
func (v *validator) attributeMap(key string, am *AttributeMap) {
	if am == nil {
		return
	}
	switch m := am.MappingMode; {
	case m == "":
		v.add(key+".mapping_mode", "is required (use %s)", joinOr(upstream.MappingModes))
	case !slices.Contains(upstream.MappingModes, m):
		v.add(key+".mapping_mode", "%q is not supported (use %s)", m, joinOr(upstream.MappingModes))
	case m == upstream.MappingUseMap && len(am.Attributes) == 0:
		v.add(key+".attributes", "mapping_mode use_map needs at least one attribute")
	}
	if len(am.UserinfoScope) > 255 || strings.ContainsFunc(am.UserinfoScope, func(r rune) bool { return r != ' ' && (r < 0x21 || r > 0x7e) || r == '"' || r == '\\' }) {
		v.add(key+".userinfo_scope", "must be at most 255 characters of space-separated scope names (RFC 6749 §3.3)")
	}
	if len(am.Attributes) > upstream.MaxAttributes {
		v.add(key+".attributes", "has %d attributes, more than the %d allowed", len(am.Attributes), upstream.MaxAttributes)
	}
	for _, name := range slices.Sorted(maps.Keys(am.Attributes)) {
		ak := key + ".attributes." + name
		if err := upstream.CheckClaimName(name); err != nil {
			v.add(ak, "%v", err)
		}
		if err := upstream.CheckTemplate(am.Attributes[name]); err != nil {
			v.add(ak, "%v", err)
		}
	}
}

// DPoPKeyName maps a connection alg to the keys.dpop entry that holds its key.
func DPoPKeyName(alg string) (key string) {
	switch alg {
	case "ES256":
		return "es256"
	case "Ed25519":
		return "ed25519"
	case "RS256", "PS256":
		return "rsa"
	}
	return ""
}

// dpopKeyEntries are the keys.dpop entries with the alg their key is loaded for.
var dpopKeyEntries = [][2]string{{"es256", "ES256"}, {"ed25519", "Ed25519"}, {"rsa", "RS256"}}

func (k *DPoPKeys) byName(name string) KeySource {
	switch name {
	case "es256":
		return k.ES256
	case "ed25519":
		return k.Ed25519
	default:
		return k.RSA
	}
}

// validateKeys checks that every needed key is configured and loads.
func (c *Config) validateKeys(v *validator) {
	kids := map[string]string{} // signing key id → where it is configured
	signingKey := func(path string, s SigningKey) {
		switch s.Alg {
		case "RS256", "ES256":
			if !s.given() {
				v.add(path, "a private key is required (private_key_file or private_key_env)")
				return
			}
			key, err := loadKey(s.KeySource, s.Alg)
			if err == nil && !signingKeyFits(key, s.Alg) {
				err = fmt.Errorf("the key does not fit signing alg %s (RS256 needs RSA ≥ 2048 bits, ES256 a P-256 key)", s.Alg)
			}
			if err != nil {
				v.add(keySourceKey(path, s.KeySource), "%v", err)
				return
			}
			if kid, err := keyID(key); err == nil {
				if other, dup := kids[kid]; dup {
					v.add(path, "the same key as %s", other)
				}
				kids[kid] = path
			}
		default:
			v.add(path+".alg", "%q is not supported (use RS256 or ES256)", s.Alg)
		}
	}
	signingKey("keys.signing", c.Keys.Signing)
	for i, p := range c.Keys.PreviousSigning {
		signingKey(fmt.Sprintf("keys.previous_signing[%d]", i), p)
	}
	done := map[string]bool{}
	for i, cc := range c.Connections {
		alg := cc.Options.DPoPSigningAlg
		name := DPoPKeyName(alg)
		if name == "" || done[name] {
			continue
		}
		done[name] = true
		src := c.Keys.DPoP.byName(name)
		key := "keys.dpop." + name
		if !src.given() {
			v.add(key, "a private key is required because connections[%d] (%s) uses dpop_signing_alg %s", i, cc.Name, alg)
			continue
		}
		if _, err := loadKey(src, alg); err != nil {
			v.add(keySourceKey(key, src), "%v", err)
		}
	}
	// Keys configured for no connection are loaded too (the management API may use them).
	for _, k := range dpopKeyEntries {
		name, alg := k[0], k[1]
		src := c.Keys.DPoP.byName(name)
		if done[name] || !src.given() {
			continue
		}
		if _, err := loadKey(src, alg); err != nil {
			v.add(keySourceKey("keys.dpop."+name, src), "%v", err)
		}
	}
}

// validateClientAuthKeys checks keys.client_auth and keys.previous_client_auth: known algs,
// one current key per alg, and a current key for the alg of every private_key_jwt connection.
// With checkKeys the keys are loaded (each must fit its alg, and no key may appear twice or
// be a token-signing key, current or replaced, or a DPoP key).
func (c *Config) validateClientAuthKeys(v *validator, checkKeys bool) {
	ring := &KeyRing{}
	if checkKeys {
		ring = c.Keys.otherKeys()
	}
	current := map[string]int{}
	for _, list := range c.Keys.clientAuthLists() {
		for i, e := range list.keys {
			p := fmt.Sprintf("%s[%d]", list.name, i)
			if !slices.Contains(upstream.ClientAuthAlgs, e.Alg) {
				v.add(p+".alg", "%q is not supported (use RS256, ES256 or PS256)", e.Alg)
				continue
			}
			if !list.previous {
				if j, dup := current[e.Alg]; dup {
					v.add(p+".alg", "a key for %s is already configured (keys.client_auth[%d]); one per alg, a replaced one goes to keys.previous_client_auth", e.Alg, j)
					continue
				}
				current[e.Alg] = i
			}
			if !e.given() {
				v.add(p, "a private key is required (private_key_file or private_key_env)")
				continue
			}
			if !checkKeys {
				continue
			}
			key, err := loadKey(e.KeySource, e.Alg)
			if err == nil {
				err = ring.AddClientAuthKey(key, e.Alg, list.previous)
			}
			if err != nil {
				v.add(keySourceKey(p, e.KeySource), "%v", err)
			}
		}
	}
	if !checkKeys {
		return // the caller's keys are used, or missing ones are generated
	}
	for i, cc := range c.Connections {
		if alg := cc.Options.ClientAuthAlg(); alg != "" {
			if _, ok := current[alg]; !ok && slices.Contains(upstream.ClientAuthAlgs, alg) {
				v.add("keys.client_auth", "a key with alg %s is required because connections[%d] (%s) uses token_endpoint_auth_method private_key_jwt with %s", alg, i, cc.Name, alg)
			}
		}
	}
}

// otherKeys loads, as far as they load, the keys that are not client-authentication keys: the
// token-signing key, the replaced ones (at their keys.previous_signing index; one that does
// not load holds its place without a kid) and the DPoP keys. Their own errors are reported by
// validateKeys.
func (k *Keys) otherKeys() *KeyRing {
	ring := &KeyRing{DPoP: map[string]*dpop.Signer{}}
	if k.Signing.given() {
		if key, err := loadKey(k.Signing.KeySource, k.Signing.Alg); err == nil {
			ring.KID, _ = keyID(key)
		}
	}
	for _, p := range k.PreviousSigning {
		var prev PreviousKey
		if p.given() {
			if key, err := loadKey(p.KeySource, p.Alg); err == nil {
				prev.KID, _ = keyID(key)
			}
		}
		ring.Previous = append(ring.Previous, prev)
	}
	for _, d := range dpopKeyEntries {
		if src := k.DPoP.byName(d[0]); src.given() {
			if key, err := loadKey(src, d[1]); err == nil {
				_ = ring.AddDPoPKey(key)
			}
		}
	}
	return ring
}

// keySourceKey names the sub-key a KeySource was read from.
func keySourceKey(prefix string, s KeySource) string {
	if s.PrivateKeyFile != "" && s.PrivateKeyEnv != "" {
		return prefix
	}
	if s.PrivateKeyFile != "" {
		return prefix + ".private_key_file"
	}
	return prefix + ".private_key_env"
}

// Management API scopes (management.tokens[].scopes).
const (
	ScopeReadConnections   = "read:connections"
	ScopeCreateConnections = "create:connections"
	ScopeUpdateConnections = "update:connections"
	ScopeDeleteConnections = "delete:connections"
	ScopeReadClients       = "read:clients"
	ScopeCreateClients     = "create:clients"
	ScopeUpdateClients     = "update:clients"
	ScopeDeleteClients     = "delete:clients"
	ScopeReadLogs          = "read:logs"
	ScopeReadSessions      = "read:sessions"
	ScopeDeleteSessions    = "delete:sessions"
)

var managementScopes = []string{ScopeReadConnections, ScopeCreateConnections, ScopeUpdateConnections, ScopeDeleteConnections,
	ScopeReadClients, ScopeCreateClients, ScopeUpdateClients, ScopeDeleteClients, ScopeReadLogs, ScopeReadSessions, ScopeDeleteSessions}

// minManagementToken is the shortest accepted management token.
const minManagementToken = 32

func (v *validator) management(m *Management) {
	seen, names := map[string]int{}, map[string]int{}
	for i, t := range m.Tokens {
		p := fmt.Sprintf("management.tokens[%d]", i)
		if j, dup := names[t.Name]; dup && t.Name != "" { // events and the per-token rate limit name it
			v.add(p+".name", "duplicate name (also management.tokens[%d])", j)
		}
		names[t.Name] = i
		switch {
		case len(t.Token) < minManagementToken:
			v.add(p+".token", "must be at least %d characters (got %d); generate one with: openssl rand -base64 32", minManagementToken, len(t.Token))
		case strings.ContainsFunc(t.Token, func(r rune) bool { return r < 0x21 || r > 0x7e }):
			v.add(p+".token", "must be visible ASCII characters without spaces")
		default:
			if j, dup := seen[t.Token]; dup {
				v.add(p+".token", "duplicate token (also management.tokens[%d])", j)
			}
			seen[t.Token] = i
		}
		if len(t.Scopes) == 0 {
			v.add(p+".scopes", "at least one scope is required (%s)", joinOr(managementScopes))
		}
		for j, sc := range t.Scopes {
			if !slices.Contains(managementScopes, sc) {
				v.add(fmt.Sprintf("%s.scopes[%d]", p, j), "%q is not a known scope (use %s)", sc, joinOr(managementScopes))
			}
		}
	}
}

// upstreamNetworks validates upstream_allowed_networks.
func (v *validator) upstreamNetworks(networks []string) {
	for i, n := range networks {
		if _, err := ParsePrefix(n); err != nil {
			v.add(fmt.Sprintf("upstream_allowed_networks[%d]", i), "%v", err)
		}
	}
}
