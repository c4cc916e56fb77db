package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// Stable error codes, used as details.error in login events.
const (
	CodeDPoPNotSupported = "dpop_not_supported"
	CodeDPoPAlgMismatch  = "dpop_alg_mismatch"
)

// Sentinels matched by *CapabilityError through errors.Is.
var (
	ErrDPoPNotSupported = errors.New("discovery: upstream does not support DPoP")
	ErrDPoPAlgMismatch  = errors.New("discovery: upstream does not offer the DPoP algorithm")
)

// CapabilityError says why an upstream cannot do the configured DPoP.
type CapabilityError struct {
	Issuer  string
	Alg     string   // configured algorithm
	Offered []string // dpop_signing_alg_values_supported (nil when absent)
}

// Code returns CodeDPoPNotSupported or CodeDPoPAlgMismatch.
func (e *CapabilityError) Code() string {
	if e.Offered == nil {
		return CodeDPoPNotSupported
	}
	return CodeDPoPAlgMismatch
}

func (e *CapabilityError) Error() string {
	if e.Offered == nil {
		return fmt.Sprintf("upstream %s does not support DPoP: its discovery document has no dpop_signing_alg_values_supported", e.Issuer)
	}
	return fmt.Sprintf("upstream %s does not offer DPoP algorithm %s: dpop_signing_alg_values_supported is [%s]", e.Issuer, e.Alg, strings.Join(e.Offered, ", "))
}

// Is matches ErrDPoPNotSupported or ErrDPoPAlgMismatch.
func (e *CapabilityError) Is(target error) bool {
	if e.Offered == nil {
		return target == ErrDPoPNotSupported
	}
	return target == ErrDPoPAlgMismatch
}

// Document is the part of a discovery document the broker uses. Provider is go-oidc's view
// of the same document (for ID-token verification and userinfo).
type Document struct {
	Issuer                            string   `json:"issuer"`
	AuthorizationEndpoint             string   `json:"authorization_endpoint"`
	TokenEndpoint                     string   `json:"token_endpoint"`
	UserinfoEndpoint                  string   `json:"userinfo_endpoint"`
	EndSessionEndpoint                string   `json:"end_session_endpoint"` // RP-Initiated Logout; "" when absent
	JWKSURI                           string   `json:"jwks_uri"`
	ScopesSupported                   []string `json:"scopes_supported"`
	ResponseTypesSupported            []string `json:"response_types_supported"`
	CodeChallengeMethodsSupported     []string `json:"code_challenge_methods_supported"`
	TokenEndpointAuthMethodsSupported []string `json:"token_endpoint_auth_methods_supported"`
	// TokenEndpointAuthSigningAlgValuesSupported are the JWS algs the token endpoint accepts
	// for private_key_jwt assertions (OpenID Connect Discovery 1.0 §3); nil when absent.
	TokenEndpointAuthSigningAlgValuesSupported []string `json:"token_endpoint_auth_signing_alg_values_supported"`
	IDTokenSigningAlgValuesSupported           []string `json:"id_token_signing_alg_values_supported"`
	SubjectTypesSupported                      []string `json:"subject_types_supported"`
	// DPoPSigningAlgValuesSupported is nil when the member is absent.
	DPoPSigningAlgValuesSupported              []string `json:"dpop_signing_alg_values_supported"`
	AuthorizationResponseIssParameterSupported bool     `json:"authorization_response_iss_parameter_supported"`
	// PushedAuthorizationRequestEndpoint and RequirePushedAuthorizationRequests are the
	// RFC 9126 §5 members ("" and false when absent).
	PushedAuthorizationRequestEndpoint string `json:"pushed_authorization_request_endpoint"`
	RequirePushedAuthorizationRequests bool   `json:"require_pushed_authorization_requests"`

	Provider *oidc.Provider `json:"-"`
	// FetchedAt is when this copy was fetched (by the Client's clock).
	FetchedAt time.Time `json:"-"`
}

// CheckDPoP returns the JOSE alg label to put in proofs for the configuration alg, or a
// *CapabilityError (RFC 9449 §5.1: no dpop_signing_alg_values_supported means no DPoP, an
// alg it does not list is refused). Ed25519 is accepted when the upstream lists "Ed25519" (label
// Ed25519) or "EdDSA" (label EdDSA).
func (d *Document) CheckDPoP(alg string) (wireAlg string, err error) {
	offered := d.DPoPSigningAlgValuesSupported
	if offered == nil {
		return "", &CapabilityError{Issuer: d.Issuer, Alg: alg}
	}
	candidates := []string{alg}
	if alg == "Ed25519" || alg == "EdDSA" {
		// Prefer the fully-specified name (RFC 9864), fall back to the legacy label.
		candidates = []string{"Ed25519", "EdDSA"}
	}
	for _, c := range candidates {
		if slices.Contains(offered, c) {
			return c, nil
		}
	}
	return "", &CapabilityError{Issuer: d.Issuer, Alg: alg, Offered: append([]string{}, offered...)}
}

// SupportsS256 reports whether code_challenge_methods_supported lists S256 (RFC 8414 §2), so
// PKCE S256 is used upstream (RFC 7636 §4.2).
func (d *Document) SupportsS256() bool {
	return slices.Contains(d.CodeChallengeMethodsSupported, "S256")
}

// Token-endpoint client authentication methods (AuthStyle, SupportsAuthMethod).
const (
	AuthClientSecretBasic = "client_secret_basic"
	AuthClientSecretPost  = "client_secret_post"
	AuthPrivateKeyJWT     = "private_key_jwt" // RFC 7523 §2.2, OpenID Connect Core §9
)

// SupportsAuthMethod reports whether the token endpoint accepts client authentication method
// m: token_endpoint_auth_methods_supported lists it, or, when the member is absent, m is its
// default client_secret_basic (OpenID Connect Discovery 1.0 §3).
func (d *Document) SupportsAuthMethod(m string) bool {
	if d.TokenEndpointAuthMethodsSupported == nil {
		return m == AuthClientSecretBasic
	}
	return slices.Contains(d.TokenEndpointAuthMethodsSupported, m)
}

// SupportsAuthSigningAlg reports whether the token endpoint accepts private_key_jwt
// assertions signed with alg: token_endpoint_auth_signing_alg_values_supported lists it, or
// the member is absent (it has no default; the upstream's answer then decides).
func (d *Document) SupportsAuthSigningAlg(alg string) bool {
	return d.TokenEndpointAuthSigningAlgValuesSupported == nil || slices.Contains(d.TokenEndpointAuthSigningAlgValuesSupported, alg)
}

// AuthStyle returns the token-endpoint client authentication to use: "client_secret_basic"
// when listed or when the list is absent, else "client_secret_post" when listed, else "" (the
// upstream offers neither).
func (d *Document) AuthStyle() string {
	m := d.TokenEndpointAuthMethodsSupported
	switch {
	case m == nil || slices.Contains(m, AuthClientSecretBasic):
		return AuthClientSecretBasic
	case slices.Contains(m, AuthClientSecretPost):
		return AuthClientSecretPost
	}
	return ""
}

// MaxDocumentSize bounds the discovery response body; larger documents are refused.
const MaxDocumentSize = 1 << 20

// WellKnownPath is appended to the issuer to find its discovery document (OIDC Discovery §4.1).
const WellKnownPath = "/.well-known/openid-configuration"

// defaultHTTP serves a Client without HTTP. Like the broker's upstream client it follows no
// redirects: a real IdP answers discovery and JWKS requests directly.
var defaultHTTP = &http.Client{Timeout: 10 * time.Second, CheckRedirect: RefuseRedirect}

// RedirectRefusedError says that an upstream answered a redirect, which upstream calls never
// follow: discovery, JWKS, token and userinfo endpoints of a real IdP answer directly, and a
// followed redirect would let a discovery document (or whoever can answer for the upstream)
// send the broker, with its client secret, to any URL.
type RedirectRefusedError struct {
	To string // the redirect target (user info redacted)
}

func (e *RedirectRefusedError) Error() string {
	return fmt.Sprintf("upstream redirect to %s refused: the broker follows no redirects on upstream calls", e.To)
}

// RefuseRedirect is the CheckRedirect of every upstream client: it refuses every redirect
// with a *RedirectRefusedError.
func RefuseRedirect(req *http.Request, _ []*http.Request) error {
	return &RedirectRefusedError{To: req.URL.Redacted()}
}

// Client fetches documents over HTTP and caches each for TTL (errors are not cached).
// The zero value is ready to use. Returned documents are shared: do not modify them.
type Client struct {
	HTTP *http.Client  // default: a client with a 10 s timeout that follows no redirects
	TTL  time.Duration // default 15 minutes
	Now  func() time.Time

	mu       sync.Mutex
	cache    map[string]cacheEntry
	inflight map[string]*call
}

type cacheEntry struct {
	doc     *Document
	expires time.Time
}

type call struct {
	done chan struct{}
	doc  *Document
	err  error
}

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return defaultHTTP
}

func (c *Client) ttl() time.Duration {
	if c.TTL > 0 {
		return c.TTL
	}
	return 15 * time.Minute
}

// Get returns the document for issuer, fetched from discoveryURL (default:
// issuer + "/.well-known/openid-configuration", OIDC Discovery §4.1). It enforces that the
// document's issuer equals issuer exactly (OIDC Discovery §4.3, RFC 8414 §3.3) and that the
// required members are present (OIDC Discovery §3).
// Concurrent calls for the same document share one fetch.
func (c *Client) Get(ctx context.Context, issuer, discoveryURL string) (*Document, error) {
	if issuer == "" {
		return nil, errors.New("discovery: issuer is empty")
	}
	if discoveryURL == "" {
		discoveryURL = strings.TrimSuffix(issuer, "/") + WellKnownPath
	}
	key := issuer + "\x00" + discoveryURL
	// A shared fetch that failed only because its starter's context ended is retried by
	// callers whose own context is still alive; bounded to a few rounds.
	var lastErr error
	for range 3 {
		c.mu.Lock()
		if c.cache == nil {
			c.cache = make(map[string]cacheEntry)
			c.inflight = make(map[string]*call)
		}
		if e, ok := c.cache[key]; ok {
			if c.now().Before(e.expires) {
				c.mu.Unlock()
				return e.doc, nil
			}
			delete(c.cache, key)
		}
		cl, running := c.inflight[key]
		if !running {
			cl = &call{done: make(chan struct{})}
			c.inflight[key] = cl
		}
		c.mu.Unlock()

		if !running {
			cl.doc, cl.err = c.fetch(ctx, issuer, discoveryURL)
			c.mu.Lock()
			delete(c.inflight, key)
			if cl.err == nil {
				c.cache[key] = cacheEntry{doc: cl.doc, expires: c.now().Add(c.ttl())}
			}
			c.mu.Unlock()
			close(cl.done)
			return cl.doc, cl.err
		}

		select {
		case <-cl.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("discovery: waiting for %s: %w", discoveryURL, ctx.Err())
		}
		if cl.err == nil {
			return cl.doc, nil
		}
		lastErr = cl.err
		if ctx.Err() == nil && (errors.Is(cl.err, context.Canceled) || errors.Is(cl.err, context.DeadlineExceeded)) {
			continue
		}
		return nil, cl.err
	}
	return nil, lastErr
}

// Refresh drops the cached copy of the document and fetches it again. Use it when a cached
// document may be stale in a way that matters (an upstream that has just enabled DPoP).
func (c *Client) Refresh(ctx context.Context, issuer, discoveryURL string) (*Document, error) {
	if discoveryURL == "" {
		discoveryURL = strings.TrimSuffix(issuer, "/") + WellKnownPath
	}
	c.mu.Lock()
	delete(c.cache, issuer+"\x00"+discoveryURL)
	c.mu.Unlock()
	return c.Get(ctx, issuer, discoveryURL)
}

// required lists the members OIDC Discovery §3 makes mandatory, in check order.
var required = []string{
	"issuer",
	"authorization_endpoint",
	"token_endpoint",
	"jwks_uri",
	"response_types_supported",
	"subject_types_supported",
	"id_token_signing_alg_values_supported",
}

func (c *Client) fetch(ctx context.Context, issuer, discoveryURL string) (*Document, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, discoveryURL, nil)
	if err != nil {
		return nil, fmt.Errorf("discovery: bad discovery URL %q: %w", discoveryURL, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("discovery: fetching %s: %w", discoveryURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxDocumentSize+1))
	if err != nil {
		return nil, fmt.Errorf("discovery: reading %s: %w", discoveryURL, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("discovery: %s answered HTTP %d, want 200", discoveryURL, resp.StatusCode)
	}
	if len(body) > MaxDocumentSize {
		return nil, fmt.Errorf("discovery: %s: document larger than %d bytes", discoveryURL, MaxDocumentSize)
	}
	ct := resp.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		return nil, fmt.Errorf("discovery: %s: content type %q is not JSON", discoveryURL, ct)
	}
	doc, err := Parse(body, issuer)
	if err != nil {
		return nil, fmt.Errorf("discovery: %s: %w", discoveryURL, err)
	}
	cfg := &oidc.ProviderConfig{
		IssuerURL:   doc.Issuer,
		AuthURL:     doc.AuthorizationEndpoint,
		TokenURL:    doc.TokenEndpoint,
		UserInfoURL: doc.UserinfoEndpoint,
		JWKSURL:     doc.JWKSURI,
		Algorithms:  doc.IDTokenSigningAlgValuesSupported,
	}
	// The provider's key set keeps using this context for JWKS fetches, so it must outlive
	// the request: a background context carrying our HTTP client.
	doc.Provider = cfg.NewProvider(oidc.ClientContext(context.Background(), c.httpClient()))
	doc.FetchedAt = c.now()
	return doc, nil
}

// Parse decodes a discovery document and checks it against the expected issuer (OIDC Discovery
// §4.3: exact string equality, trailing slash significant) and the required members (§3). The
// returned document has no Provider.
func Parse(body []byte, issuer string) (*Document, error) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(body, &members); err != nil {
		return nil, fmt.Errorf("document is not a JSON object: %w", err)
	}
	var doc Document
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("decoding document: %w", err)
	}
	empty := map[string]bool{
		"issuer":                                doc.Issuer == "",
		"authorization_endpoint":                doc.AuthorizationEndpoint == "",
		"token_endpoint":                        doc.TokenEndpoint == "",
		"jwks_uri":                              doc.JWKSURI == "",
		"response_types_supported":              len(doc.ResponseTypesSupported) == 0,
		"subject_types_supported":               len(doc.SubjectTypesSupported) == 0,
		"id_token_signing_alg_values_supported": len(doc.IDTokenSigningAlgValuesSupported) == 0,
	}
	for _, name := range required {
		if raw, ok := members[name]; !ok || string(raw) == "null" {
			return nil, fmt.Errorf("required member %s is missing", name)
		}
		if empty[name] {
			return nil, fmt.Errorf("required member %s is empty", name)
		}
	}
	if doc.Issuer != issuer {
		return nil, fmt.Errorf("issuer mismatch: document says %q, expected exactly %q", doc.Issuer, issuer)
	}
	// The broker sends the browser to authorization_endpoint and end_session_endpoint, POSTs
	// the client secret, code and PKCE verifier to token_endpoint (and the authorization request
	// with the client secret to pushed_authorization_request_endpoint), and fetches jwks_uri and
	// userinfo_endpoint: each must obey the issuer's URL rules (OIDC Discovery §3 requires
	// https URLs), so a document cannot point them at plain-http internal services.
	for _, ep := range []struct {
		member, value string
	}{
		{"authorization_endpoint", doc.AuthorizationEndpoint},
		{"token_endpoint", doc.TokenEndpoint},
		{"jwks_uri", doc.JWKSURI},
		{"userinfo_endpoint", doc.UserinfoEndpoint},
		{"end_session_endpoint", doc.EndSessionEndpoint},
		{"pushed_authorization_request_endpoint", doc.PushedAuthorizationRequestEndpoint},
	} {
		if ep.value == "" {
			continue // optional members; the required ones were checked above
		}
		if _, err := CheckURL(ep.value); err != nil {
			return nil, fmt.Errorf("member %s: %w", ep.member, err)
		}
	}
	return &doc, nil
}

// CheckURL parses raw and applies the URL rule of every upstream URL (an issuer, a discovery
// URL, each endpoint of a discovery document): absolute with a host, https (plain http only on
// a loopback host, for tests and the demo), no user info, no fragment. A query is allowed
// (RFC 6749 §3.1, §3.2).
func CheckURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL", raw)
	}
	switch {
	case !u.IsAbs() || u.Opaque != "" || u.Host == "" || u.Hostname() == "":
		return nil, fmt.Errorf("%q must be an absolute URL with a host", raw)
	case u.User != nil:
		return nil, fmt.Errorf("%q must not carry user info", raw)
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return nil, fmt.Errorf("%q must not have a fragment", raw)
	case u.Scheme == "https", u.Scheme == "http" && LoopbackHost(u.Hostname()):
		return u, nil
	}
	return nil, fmt.Errorf("%q must use https (http only for loopback hosts)", raw)
}

// LoopbackHost reports whether host (url.URL.Hostname) is localhost or a loopback IP literal,
// where plain http is accepted (RFC 8252 §7.3; §8.3 recommends the IP literal). Other names,
// even ones that resolve to a loopback address, are not: DNS can change.
func LoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
