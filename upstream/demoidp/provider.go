package demoidp

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Options shape the provider's behaviour. The zero value is a plain OIDC provider without DPoP.
type Options struct {
	ClientID     string // default "broker"
	ClientSecret string // default "broker-secret"
	// DPoPAlgs is advertised as dpop_signing_alg_values_supported; nil = member absent (no DPoP).
	DPoPAlgs    []string
	RequireDPoP bool // token endpoint refuses requests without a valid proof (invalid_dpop_proof)
	// RequireNonce: every proof must carry the current server nonce (use_dpop_nonce +
	// DPoP-Nonce). Without it the provider issues no nonces and refuses a proof that carries
	// one (invalid_dpop_proof "DPoP nonces are not supported", as oidc-provider does without a
	// nonce secret). Provider.SetRequireNonce switches it while the provider runs.
	RequireNonce bool
	// AlwaysNonce makes the server answer use_dpop_nonce forever (to exhaust retries).
	AlwaysNonce  bool
	AnswerBearer bool     // token_type "Bearer" even when a valid proof came (no binding)
	NoPKCE       bool     // do not advertise code_challenge_methods_supported
	AuthMethods  []string // token_endpoint_auth_methods_supported; default client_secret_basic, client_secret_post
	IssParameter bool     // send RFC 9207 iss on the redirect and advertise it
	// Interactive shows a login page with a "Sign in" button instead of redirecting at once.
	Interactive bool
	// Subject and claims of the user that signs in; defaults: sub "alice", name "Alice Example",
	// email "alice@example.com".
	Subject string
	Claims  map[string]any
	// Faults for negative tests.
	AuthorizeError string        // redirect back with error=<this> (e.g. access_denied)
	IDTokenAud     string        // override aud
	IDTokenNonce   string        // override nonce
	IDTokenIssuer  string        // override iss
	IDTokenTTL     time.Duration // default 5 minutes; negative = already expired
	// SessionAge is how long ago the user signed in at this IdP (an SSO session): auth_time is
	// that old unless the request has prompt=login or a smaller max_age, which make the user
	// authenticate again (auth_time now). IgnoreMaxAge makes the IdP disregard both.
	SessionAge   time.Duration
	IgnoreMaxAge bool
	// OmitAuthTime leaves auth_time out of ID tokens (it is optional in OIDC Core §2 unless
	// max_age was requested, when the IdP is in the wrong).
	OmitAuthTime bool
	// NoEndSession leaves end_session_endpoint out of discovery (no RP-initiated logout).
	NoEndSession bool
	// SessionID is the sid of every login (its ID tokens carry it; one session at this IdP
	// shared by every browser); "" gives each login a fresh random sid. SetSessionID
	// changes it while the provider runs; LastSID reads the sid of the last ID token.
	SessionID string
	Now       func() time.Time
	// RedirectURIs are accepted exactly, in addition to any http(s) loopback redirect URI
	// (127.0.0.1, localhost, [::1], any port and path).
	RedirectURIs []string
	// FreshKey signs ID tokens with a key generated for this provider. By default every
	// provider in the process signs with the same RSA key (RSAKey), generated once; a test
	// that needs two providers with different keys (key rotation) sets it.
	FreshKey bool
	// Observe, when set, sees every request before it is answered (tests read its headers,
	// such as traceparent). It must not keep or change the request.
	Observe func(*http.Request)
}

// Stats counts what the provider saw.
type Stats struct {
	TokenRequests   atomic.Int64
	NonceChallenges atomic.Int64
	ProofsAccepted  atomic.Int64
	UserinfoCalls   atomic.Int64
	// AuthorizeRequests counts GET /authorize; ProofsRejected counts invalid_dpop_proof answers.
	AuthorizeRequests atomic.Int64
	ProofsRejected    atomic.Int64
	// NonceProofs counts valid proofs (token endpoint and userinfo) that carried a nonce.
	NonceProofs atomic.Int64
	// EndSessions counts RP-initiated logouts (GET /logout) whose id_token_hint this provider
	// issued and whose post_logout_redirect_uri it accepted.
	EndSessions atomic.Int64
	// JWKSRequests counts GET /jwks.
	JWKSRequests atomic.Int64
	// DiscoveryRequests counts GET /.well-known/openid-configuration.
	DiscoveryRequests atomic.Int64
}

// Provider is the running IdP.
type Provider struct {
	URL   string // issuer, e.g. http://127.0.0.1:PORT
	Stats *Stats

	p         *provider
	srv       *http.Server
	closeOnce sync.Once
}

// NewHandler returns the provider's handler for issuer (the URL it will be served at). Routes:
// /.well-known/openid-configuration, /authorize, /token, /userinfo, /jwks, all below the issuer's
// path (the handler expects full request paths, e.g. /tenant/token for issuer http://h/tenant).
// The interactive page posts to /authorize/approve.
func NewHandler(issuer string, opts Options) (http.Handler, *Stats, error) {
	p, err := newProvider(issuer, opts)
	if err != nil {
		return nil, nil, err
	}
	return p.mux, p.stats, nil
}

// Start serves a provider on a fresh 127.0.0.1 port; Close stops it.
func Start(opts Options) (*Provider, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demoidp: listen: %w", err)
	}
	issuer := "http://" + ln.Addr().String()
	p, err := newProvider(issuer, opts)
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	var h http.Handler = p.mux
	if opts.Observe != nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			opts.Observe(r)
			p.mux.ServeHTTP(w, r)
		})
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return &Provider{URL: issuer, Stats: p.stats, p: p, srv: srv}, nil
}

// SetRequireNonce switches server nonces on or off while the provider runs (Options.RequireNonce),
// like an IdP reconfigured or redeployed behind the same issuer. Switching on starts from a
// fresh nonce, so no nonce issued before is accepted.
func (p *Provider) SetRequireNonce(on bool) {
	p.p.mu.Lock()
	defer p.p.mu.Unlock()
	if on && !p.p.requireNonce.Load() {
		p.p.nonce = nonceState{}
	}
	p.p.requireNonce.Store(on)
}

// SetSubject makes every later login sign in the user with subject sub (another user at
// the same IdP).
func (p *Provider) SetSubject(sub string) { p.p.sub.Store(&sub) }

// subject is the subject of the user who signs in now.
func (p *provider) subject() string { return *p.sub.Load() }

// Close stops the provider.
func (p *Provider) Close() {
	if p == nil || p.srv == nil {
		return
	}
	p.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := p.srv.Shutdown(ctx); err != nil {
			_ = p.srv.Close()
		}
	})
}

const (
	codeTTL        = 60 * time.Second
	pendingTTL     = 10 * time.Minute
	accessTokenTTL = 300 * time.Second
	proofWindow    = 60 * time.Second // iat must be within ±proofWindow
	nonceRotate    = 60 * time.Second // current nonce lifetime; previous stays accepted one more period
	maxEntries     = 1 << 20          // hard cap per in-memory table (fail closed beyond)
	minSweep       = 1024
	maxJTILen      = 256
)

var errFull = errors.New("demoidp: in-memory table full")

type codeEntry struct {
	clientID, redirectURI, nonce, challenge, jkt, scope string
	sid                                                 string // the login's session at this IdP
	authTime                                            time.Time
	exp                                                 time.Time
	reauth                                              bool // prompt=login or max_age below SessionAge
}

type pendingEntry struct {
	code  codeEntry // authTime and exp are set when the user approves
	state string
}

type tokenEntry struct {
	sub, clientID, scope, jkt string
	exp                       time.Time
}

// table is a TTL map with amortised sweeping and a hard size cap.
type table[V any] struct {
	m         map[string]tableItem[V]
	nextSweep int
}

type tableItem[V any] struct {
	v   V
	exp time.Time
}

func newTable[V any]() table[V] {
	return table[V]{m: make(map[string]tableItem[V]), nextSweep: minSweep}
}

// put stores v under k; it fails when the table is full of live entries.
func (t *table[V]) put(now time.Time, k string, v V, exp time.Time) error {
	if len(t.m) >= t.nextSweep {
		for key, it := range t.m {
			if !now.Before(it.exp) {
				delete(t.m, key)
			}
		}
		t.nextSweep = max(minSweep, 2*len(t.m))
	}
	if len(t.m) >= maxEntries {
		return errFull
	}
	t.m[k] = tableItem[V]{v: v, exp: exp}
	return nil
}

// take removes and returns the live entry under k.
func (t *table[V]) take(now time.Time, k string) (V, bool) {
	it, ok := t.m[k]
	if ok {
		delete(t.m, k)
	}
	if !ok || !now.Before(it.exp) {
		var zero V
		return zero, false
	}
	return it.v, true
}

// get returns the live entry under k without removing it.
func (t *table[V]) get(now time.Time, k string) (V, bool) {
	it, ok := t.m[k]
	if !ok || !now.Before(it.exp) {
		var zero V
		return zero, false
	}
	return it.v, true
}

type provider struct {
	issuer     string // exactly as given
	base       string // issuer without trailing slash
	prefix     string // issuer path without trailing slash
	opts       Options
	sub        atomic.Pointer[string] // the signing-in user's subject (Options.Subject, SetSubject)
	sessionID  atomic.Pointer[string] // Options.SessionID, SetSessionID
	lastSID    atomic.Pointer[string] // the sid of the last ID token
	key        *rsa.PrivateKey        // signs ID tokens and logout tokens
	kid        string
	now        func() time.Time
	claims     map[string]any
	stats      *Stats
	mux        *http.ServeMux
	signer     jose.Signer
	verifyKey  *rsa.PublicKey // checks id_token_hint at /logout
	tokenHTU   string
	userHTU    string
	dpopOn     bool
	dpopAlgs   []jose.SignatureAlgorithm // parse allow-list
	algsHeader string                    // for WWW-Authenticate algs=

	requireNonce atomic.Bool // Options.RequireNonce, switchable at run time (SetRequireNonce)

	mu      sync.Mutex
	codes   table[codeEntry]
	pending table[pendingEntry]
	tokens  table[tokenEntry]
	jtis    table[struct{}]
	nonce   nonceState
}

type nonceState struct {
	cur, prev string
	issued    time.Time
}

var asymmetricAlgs = map[string]bool{
	"ES256": true, "ES384": true, "ES512": true,
	"RS256": true, "RS384": true, "RS512": true,
	"PS256": true, "PS384": true, "PS512": true,
	"EdDSA": true, "Ed25519": true,
}

func newProvider(issuer string, opts Options) (*provider, error) {
	u, err := url.Parse(issuer)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("demoidp: issuer %q must be an absolute http(s) URL without query or fragment", issuer)
	}
	if opts.ClientID == "" {
		opts.ClientID = "broker"
	}
	if opts.ClientSecret == "" {
		opts.ClientSecret = "broker-secret"
	}
	if opts.Subject == "" {
		opts.Subject = "alice"
	}
	if len(opts.AuthMethods) == 0 {
		opts.AuthMethods = []string{"client_secret_basic", "client_secret_post"}
	} else {
		opts.AuthMethods = append([]string(nil), opts.AuthMethods...)
	}
	if opts.IDTokenTTL == 0 {
		opts.IDTokenTTL = 5 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	opts.RedirectURIs = append([]string(nil), opts.RedirectURIs...)
	claims := map[string]any{"name": "Alice Example", "email": "alice@example.com", "email_verified": true}
	if opts.Claims != nil {
		claims = make(map[string]any, len(opts.Claims))
		for k, v := range opts.Claims {
			claims[k] = v
		}
	}

	p := &provider{
		issuer:  issuer,
		base:    strings.TrimSuffix(issuer, "/"),
		prefix:  strings.TrimSuffix(u.Path, "/"),
		opts:    opts,
		now:     opts.Now,
		claims:  claims,
		stats:   &Stats{},
		codes:   newTable[codeEntry](),
		pending: newTable[pendingEntry](),
		tokens:  newTable[tokenEntry](),
		jtis:    newTable[struct{}](),
	}
	p.requireNonce.Store(opts.RequireNonce)
	p.sub.Store(&opts.Subject)
	p.sessionID.Store(&opts.SessionID)
	p.tokenHTU = normalizeHTU(p.base + "/token")
	p.userHTU = normalizeHTU(p.base + "/userinfo")

	if opts.DPoPAlgs != nil {
		p.dpopOn = true
		seen := map[jose.SignatureAlgorithm]bool{}
		for _, a := range opts.DPoPAlgs {
			if !asymmetricAlgs[a] {
				continue // never accept none or MAC algorithms, whatever is advertised
			}
			labels := []string{a}
			if a == "EdDSA" || a == "Ed25519" {
				labels = []string{"EdDSA", "Ed25519"}
			}
			for _, l := range labels {
				if !seen[jose.SignatureAlgorithm(l)] {
					seen[jose.SignatureAlgorithm(l)] = true
					p.dpopAlgs = append(p.dpopAlgs, jose.SignatureAlgorithm(l))
				}
			}
		}
		p.algsHeader = strings.Join(opts.DPoPAlgs, " ")
	}

	key, err := RSAKey(opts.FreshKey)
	if err != nil {
		return nil, fmt.Errorf("demoidp: generate signing key: %w", err)
	}
	p.verifyKey = &key.PublicKey
	sk, err := NewSigningKey(key, jose.RS256)
	if err != nil {
		return nil, fmt.Errorf("demoidp: %w", err)
	}
	p.signer, p.key, p.kid = sk.Signer, key, sk.KeyID
	discovery, err := json.Marshal(p.metadata().Document())
	if err != nil {
		return nil, fmt.Errorf("demoidp: discovery: %w", err)
	}

	mux := http.NewServeMux()
	serveDiscovery := ServeJSON(discovery)
	mux.HandleFunc("GET "+p.prefix+"/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		p.stats.DiscoveryRequests.Add(1)
		serveDiscovery(w, r)
	})
	serveJWKS := ServeJSON(sk.JWKS)
	mux.HandleFunc("GET "+p.prefix+"/jwks", func(w http.ResponseWriter, r *http.Request) {
		p.stats.JWKSRequests.Add(1)
		serveJWKS(w, r)
	})
	mux.HandleFunc("GET "+p.prefix+"/authorize", p.handleAuthorize)
	mux.HandleFunc("POST "+p.prefix+"/authorize/approve", p.handleApprove)
	mux.HandleFunc("POST "+p.prefix+"/token", p.handleToken)
	mux.HandleFunc("GET "+p.prefix+"/userinfo", p.handleUserinfo)
	mux.HandleFunc("POST "+p.prefix+"/userinfo", p.handleUserinfo)
	if !p.opts.NoEndSession {
		mux.HandleFunc("GET "+p.prefix+"/logout", p.handleEndSession)
	}
	p.mux = mux
	return p, nil
}

// handleEndSession is RP-initiated logout: the id_token_hint must be an ID token this provider
// signed for client_id, and post_logout_redirect_uri a redirect URI it accepts; the browser
// goes back there with state.
func (p *provider) handleEndSession(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	jws, err := jose.ParseSignedCompact(q.Get("id_token_hint"), []jose.SignatureAlgorithm{jose.RS256})
	var claims struct {
		Aud string `json:"aud"`
	}
	if err == nil {
		var payload []byte
		if payload, err = jws.Verify(p.verifyKey); err == nil {
			err = json.Unmarshal(payload, &claims)
		}
	}
	target := q.Get("post_logout_redirect_uri")
	if err != nil || claims.Aud != q.Get("client_id") || !p.redirectAllowed(target) {
		http.Error(w, "invalid logout request", http.StatusBadRequest)
		return
	}
	p.stats.EndSessions.Add(1)
	u, _ := url.Parse(target)
	v := u.Query()
	if st := q.Get("state"); st != "" {
		v.Set("state", st)
	}
	u.RawQuery = v.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

// metadata is what the provider advertises in its discovery document.
func (p *provider) metadata() Metadata {
	return Metadata{
		Issuer:        p.issuer,
		IDTokenAlgs:   []string{"RS256"},
		AuthMethods:   p.opts.AuthMethods,
		DPoPAlgs:      p.opts.DPoPAlgs, // nil: no DPoP
		GrantTypes:    []string{"authorization_code"},
		ResponseModes: []string{"query"},
		Scopes:        []string{"openid", "profile", "email"},
		Claims:        []string{"sub", "iss", "aud", "exp", "iat", "nonce", "auth_time", "sid", "name", "email", "email_verified"},
		PKCE:          !p.opts.NoPKCE,
		Userinfo:      true,
		EndSession:    !p.opts.NoEndSession,
		IssParameter:  p.opts.IssParameter,
		Backchannel:   true,
	}
}

// writeJSON writes v with status and no-store caching.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

func b64sha256(s string) string {
	h := sha256.Sum256([]byte(s))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

func randomToken() string { return rand.Text() + rand.Text() } // 256 bits, base32

// nonceLocked returns the current nonce, rotating it when due (or when fresh is set).
// Caller holds p.mu.
func (p *provider) nonceLocked(now time.Time, fresh bool) string {
	if fresh || p.nonce.cur == "" || now.Sub(p.nonce.issued) >= nonceRotate || now.Before(p.nonce.issued) {
		p.nonce.prev = p.nonce.cur
		p.nonce.cur = rand.Text()
		p.nonce.issued = now
	}
	return p.nonce.cur
}

func (p *provider) currentNonce() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nonceLocked(p.now(), false)
}
