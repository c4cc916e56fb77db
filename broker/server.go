package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"go.opentelemetry.io/otel/trace"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/discovery"
	"github.com/dpop-broker/dpop-broker/dpop"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/upstream"
)

// Deps are the collaborators New wires in; zero fields get defaults.
type Deps struct {
	Store      sessions.Store // default: config.OpenStore(cfg)
	Events     *logs.Writer   // default: a Writer on Store and Logger
	Logger     *slog.Logger   // default: discard
	Now        func() time.Time
	HTTPClient *http.Client    // base of upstream calls, default: upstream_timeout (upstreamClient: its transport must be nil or an *http.Transport)
	Keys       *config.KeyRing // default: config.LoadKeys(cfg, cfg.GenerateMissingKeys)
	// Resolver looks up upstream host names (default: the system's; tests inject one). The
	// upstream address policy checks the addresses it returns when they are dialled.
	Resolver *net.Resolver
	// TracerProvider, when set, traces logins (tracing.go); nil: tracing off.
	TracerProvider trace.TracerProvider
}

// Server is the broker's HTTP face. A Server is one view of the configuration: Reload
// (reload.go) builds the next view as a copy that shares every piece of state and swaps it in
// atomically; a request is served entirely by the view it started on.
type Server struct {
	cfg    *config.Config
	store  sessions.Store
	events *logs.Writer
	log    *slog.Logger
	now    func() time.Time
	keys   *config.KeyRing

	issuer      string // exact issuer string
	base        string // public URL without trailing slash
	callbackURL string // base + /login/callback, registered at the upstreams
	secure      bool   // public URL is https: cookies get Secure
	// consoleURL is the URL browsers use for the console (config.Config.ConsoleURL), parsed
	// once per view; nil when it does not parse (the console then answers nowhere:
	// consoleHostProblem).
	consoleURL *url.URL
	// consolePins are the issuer pins of the connections that admit console administrators
	// (consolepin.go), made from this view's configuration file.
	consolePins map[string]consolePin

	idSigner jose.Signer
	atSigner jose.Signer
	opaque   *opaqueTokens        // userinfo-only access tokens (opaque.go); nil: JWTs
	logBatch sessions.LogBatcher  // the events' store, when it can batch records and an event
	multiGet sessions.MultiGetter // the store, when it reads several records in one round trip

	// consoleSeal seals the console's sign-ins through the broker in flight (consolesignin.go).
	consoleSeal *consoleSealer

	apis     map[string]*config.API
	verifier *dpop.Verifier // proofs at /oauth/token and /userinfo
	reg      *registry      // connections and clients from the store (registry.go, clientregistry.go)
	// maxClients bounds the clients POST /api/v2/clients creates (defaultMaxClients).
	maxClients int
	mgmt       *mgmtAuth // management API tokens (mgmt.go)
	// discoveryHTTP fetches discovery documents for management checks (uncached).
	discoveryHTTP *http.Client
	upstreamHTTP  *http.Client // every upstream call (upstreamhttp.go)
	mux           *http.ServeMux
	handler       http.Handler     // mux with request metrics (without the admin paths when admin_listen is set)
	adminHandler  http.Handler     // admin_listen's: the admin paths only (nil: no admin_listen)
	metrics       *metrics         // private Prometheus registry (metrics.go)
	guard         *guard           // rate limits and trusted proxies (ratelimit.go, limits.go)
	ready         *readiness       // /readyz answers, reused for a second
	readier       sessions.Readier // the store, when it tells whether it can serve a login (storeReady)

	// logoutSigner signs back-channel logout tokens: the ID-token key, typ logout+jwt.
	logoutSigner jose.Signer
	bcl          *backchannel   // back-channel logout deliveries to the apps (backchannel.go)
	streams      *logStreams    // log_streams (logstreams.go), shared by every view
	console      *consoleCaches // the console's caches and bounds (consolecost.go)
	tracer       trace.Tracer   // the broker's spans (tracing.go); nil: tracing off
	// views holds the view requests are served by (reload.go); every view shares it.
	views *views
}

// connection is one configured upstream with its driver (up is nil and err set when the
// stored configuration cannot be used).
type connection struct {
	cfg *config.Connection
	id  string
	up  *upstream.Connection
	err error
	raw []byte // the stored document it was built from
	// opts are the registry's options it was built with (registry.options): a reload that
	// changes them builds it again.
	opts *upstream.Options
}

// Request body limit for form and JSON bodies.
const maxBodyBytes = 64 << 10

// New validates cfg and builds the server. It does not contact the store or the upstreams.
func New(cfg *config.Config, deps Deps) (*Server, error) {
	validate := cfg.Validate
	if deps.Keys != nil {
		validate = cfg.ValidateExceptKeys // the keys given are used, not the configured ones
	}
	if errs := validate(); len(errs) > 0 {
		return nil, fmt.Errorf("invalid configuration:\n%w", config.FieldErrors(errs))
	}
	s := &Server{
		cfg: cfg, store: deps.Store, events: deps.Events, log: deps.Logger, now: deps.Now, keys: deps.Keys,
		issuer: cfg.Issuer, base: cfg.BaseURL(),
		apis: map[string]*config.API{}, maxClients: defaultMaxClients,
		ready: &readiness{}, console: &consoleCaches{},
	}
	s.callbackURL = s.base + "/login/callback"
	if u, err := url.Parse(cfg.ConsoleURL()); err == nil {
		s.consoleURL = u
	}
	s.secure = strings.HasPrefix(s.base, "https://")
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	for _, w := range cfg.Warnings() { // allow_insecure_http: loud at every start
		s.log.Warn("insecure configuration", "key", w.Key, "warning", w.Reason)
	}
	if s.now == nil {
		s.now = time.Now
	}
	var err error
	if s.keys == nil {
		if s.keys, err = config.LoadKeys(cfg, cfg.GenerateMissingKeys); err != nil {
			return nil, err
		}
	}
	if s.store == nil {
		if s.store, err = config.OpenStore(cfg); err != nil {
			return nil, err
		}
	}
	if deps.TracerProvider != nil {
		s.tracer = deps.TracerProvider.Tracer(tracerName)
	}
	s.metrics = newMetrics()
	if s.guard, err = newGuard(cfg, s.metrics.reg); err != nil {
		return nil, err
	}
	raw := s.store
	s.readier, _ = raw.(sessions.Readier)
	s.store = s.metrics.instrumentStore(raw) // counts store failures by op
	if s.tracer != nil {
		traceStoreWrites(s.store) // and traces the writes of traced requests (tracing.go)
	}
	// The event log lives in the store when New builds the writer on it, or when the caller's
	// writer holds the same store (cmd/broker opens one store for both).
	eventsInStore := s.events == nil || sameStore(s.events.Store, raw)
	if s.events == nil {
		s.events = NewEventWriter(cfg, s.store, s.log, "")
		s.events.Now = s.now
	} else {
		configureEventWriter(cfg, s.events)
	}
	s.logBatch, s.multiGet = storeCapabilities(raw, eventsInStore)
	if s.verifier, err = newVerifier(&cfg.DPoPServer, s.store, s.now); err != nil {
		return nil, err
	}
	s.apis = apisByAudience(cfg)
	if s.idSigner, err = s.keys.Signer("JWT"); err != nil {
		return nil, fmt.Errorf("id token signer: %w", err)
	}
	if s.atSigner, err = s.keys.Signer("at+jwt"); err != nil {
		return nil, fmt.Errorf("access token signer: %w", err)
	}
	if s.logoutSigner, err = s.keys.Signer(logoutTokenTyp); err != nil {
		return nil, fmt.Errorf("logout token signer: %w", err)
	}
	s.bcl = newBackchannel()
	if s.opaque, err = newOpaqueTokens(s.keys); err != nil {
		return nil, err
	}
	if s.consoleSeal, err = newConsoleSealer(s.keys); err != nil {
		return nil, err
	}
	policy, err := newEgressPolicy(cfg.UpstreamAllowedNetworks)
	if err != nil {
		return nil, err
	}
	httpClient, err := upstreamClient(deps.HTTPClient, upstreamHTTPOptions{timeout: cfg.UpstreamTimeout, policy: policy, resolver: deps.Resolver, tracing: deps.TracerProvider})
	if err != nil {
		return nil, err
	}
	s.upstreamHTTP = httpClient
	opts := withConfigOptions(cfg, upstream.Options{
		HTTP:      httpClient,
		Discovery: &discovery.Client{HTTP: httpClient, Now: s.now},
		Signers:   s.keys.DPoP,
		Nonces:    dpop.NewNonceCacheWith(dpop.NonceCacheOptions{Now: s.now}), // stale upstream nonces expire
		Now:       s.now,

		ClientAuthKeys: clientAuthKeys(s.keys),
		TracerProvider: deps.TracerProvider, // for the process, as the HTTP client
	})
	if err := checkConnections(cfg, opts); err != nil {
		return nil, err
	}
	if s.consolePins, err = consolePinsOf(cfg); err != nil {
		return nil, err
	}
	if s.reg, err = newRegistry(s, opts, cfg.Connections, cfg.Clients); err != nil {
		return nil, err
	}
	s.mgmt = newMgmtAuth(cfg.Management)
	s.discoveryHTTP = httpClient
	if s.streams, err = s.newLogStreams(cfg, deps, raw); err != nil {
		return nil, err
	}
	s.routes()
	s.views = newViews(s, deps.Keys != nil)
	return s, nil
}

// apisByAudience returns cfg's APIs by audience.
func apisByAudience(cfg *config.Config) map[string]*config.API {
	m := make(map[string]*config.API, len(cfg.APIs))
	for i := range cfg.APIs {
		m[cfg.APIs[i].Audience] = &cfg.APIs[i]
	}
	return m
}

// withConfigOptions returns base (the HTTP client, discovery cache, keys and nonce cache, which
// last for the process) with the settings cfg gives: the nonce retries (dpop) and the claims
// the APIs put in access tokens.
func withConfigOptions(cfg *config.Config, base upstream.Options) upstream.Options {
	opts := base
	opts.MaxRetries = cfg.DPoP.MaxRetries
	opts.RetryDelay = cfg.DPoP.RetryDelay
	opts.Jitter = cfg.DPoP.Jitter
	opts.ClockSkew = cfg.DPoP.ClockSkew
	opts.APIClaims = apiClaimNames(cfg.APIs)
	if opts.MaxRetries == 0 {
		opts.MaxRetries = -1 // dpop.Transport: zero means the default (1), negative means none
	}
	return opts
}

// checkConnections builds the upstream driver of every configured connection once, so a
// connection the driver refuses stops startup (or a reload) naming it.
func checkConnections(cfg *config.Config, opts upstream.Options) error {
	for i := range cfg.Connections {
		cc := &cfg.Connections[i]
		if _, err := upstream.New(upstreamConfig(cc), opts); err != nil {
			return fmt.Errorf("connections[%d] (%s): %w", i, cc.Name, err)
		}
	}
	return nil
}

func upstreamConfig(cc *config.Connection) upstream.Config {
	o := cc.Options
	uc := upstream.Config{
		ID: cc.ConnectionID(), Name: cc.Name, Strategy: cc.Strategy,
		Issuer: o.Issuer, DiscoveryURL: o.DiscoveryURL,
		Domain: o.Domain, AuthorizationServerID: o.AuthorizationServerID,
		ClientID: o.ClientID, ClientSecret: o.ClientSecret,
		Scopes: strings.Fields(o.Scope), Type: o.Type,
		DPoPSigningAlg: o.DPoPSigningAlg, FetchUserinfo: o.FetchUserinfo,
		TokenEndpointAuthMethod:     o.TokenEndpointAuthMethod,
		TokenEndpointAuthSigningAlg: o.TokenEndpointAuthSigningAlg,
		UsePAR:                      o.UsePAR,
	}
	claimMapping(&uc, &o)
	return uc
}

// clientAuthKeys are the keys' current client-authentication keys by alg, as the upstream
// connections sign private_key_jwt assertions with them.
func clientAuthKeys(k *config.KeyRing) map[string]upstream.AssertionKey {
	m := make(map[string]upstream.AssertionKey, len(k.ClientAuth))
	for _, c := range k.ClientAuth {
		m[c.Alg] = upstream.AssertionKey{Key: c.Key, KID: c.KID}
	}
	return m
}

// NewEventWriter returns the event writer for cfg: retention logs.max_events and
// logs.max_age, retention and limits logs.unauthenticated, retention logs.admin, and with a Redis store (several
// replicas) a one-second Settle so that checkpoint paging and follow never pass an event
// another replica is still storing.
func NewEventWriter(cfg *config.Config, store sessions.Store, logger *slog.Logger, hostname string) *logs.Writer {
	w := &logs.Writer{Logger: logger, Store: store, Hostname: hostname}
	configureEventWriter(cfg, w)
	return w
}

// configureEventWriter fills the retention, limits, secrets and settle settings a caller
// left zero, and sets the configuration's secrets.
func configureEventWriter(cfg *config.Config, w *logs.Writer) {
	if w.MaxLen == 0 {
		w.MaxLen = cfg.Logs.MaxEvents
	}
	if w.MaxAge == 0 {
		w.MaxAge = cfg.Logs.MaxAge
	}
	u := &cfg.Logs.Unauthenticated
	if w.UnauthenticatedMaxLen == 0 {
		w.UnauthenticatedMaxLen = u.MaxEvents
	}
	if w.UnauthenticatedMaxAge == 0 {
		w.UnauthenticatedMaxAge = u.MaxAge
	}
	if w.Limits == nil {
		w.Limits = eventLimiter(u)
	}
	if w.AdminMaxLen == 0 {
		w.AdminMaxLen = cfg.Logs.Admin.MaxEvents
	}
	if w.AdminMaxAge == 0 {
		w.AdminMaxAge = cfg.Logs.Admin.MaxAge
	}
	if w.Secrets == nil {
		w.Secrets = &logs.Secrets{}
	}
	w.Secrets.Set(secretsConfig, configSecrets(cfg)...)
	if w.Settle == 0 && cfg.Store.Type == "redis" {
		w.Settle = time.Second
	}
	if w.Tally == nil {
		w.Tally = loginTally // the console overview's counters (logintally.go)
	}
}

// Store returns the session store (for the demo and tests).
func (s *Server) Store() sessions.Store { return s.store }

// Events returns the event writer (for the demo's event view).
func (s *Server) Events() *logs.Writer { return s.events }

// Handler returns the broker's HTTP handler (for listen): each request is served by the
// view current when it arrives (Reload).
func (s *Server) Handler() http.Handler { return s.views.handler }

// AdminHandler returns the handler for admin_listen (/console, /metrics, /api/v2, and
// /healthz and /readyz, which Handler serves too), or nil when admin_listen is not set and
// Handler serves everything. admin_listen cannot change by Reload.
func (s *Server) AdminHandler() http.Handler { return s.views.adminHandler }

func (s *Server) routes() {
	prefix := ""
	if u, err := url.Parse(s.base); err == nil {
		prefix = strings.TrimSuffix(u.Path, "/")
	}
	m := http.NewServeMux()
	h := func(pattern string, f http.HandlerFunc) {
		method, path, _ := strings.Cut(pattern, " ")
		m.HandleFunc(method+" "+prefix+path, f)
	}
	h("GET /.well-known/openid-configuration", s.handleDiscovery)
	h("GET /.well-known/oauth-authorization-server", s.handleDiscovery) // the same document under its RFC 8414 §3 name
	h("GET /.well-known/jwks.json", s.handleJWKS)
	h("GET "+clientAuthJWKSPath, s.handleClientAuthJWKS)
	h("GET /authorize", s.traced(false, s.guardAuthorize(s.handleAuthorize)))
	h("GET /login/callback", s.traced(true, s.guardCallback(s.handleCallback)))
	h("GET /login/callback/{connection}", s.traced(true, s.guardCallback(s.handleCallback))) // options.callback_path: dedicated
	h("POST /oauth/token", s.traced(true, s.cors(s.guardToken(s.handleToken, ""))))
	h("OPTIONS /oauth/token", s.cors(nil))
	h("POST /oauth/revoke", s.cors(s.guardToken(s.handleRevoke, logs.TypeFailedRevocation)))
	h("OPTIONS /oauth/revoke", s.cors(nil))
	h("GET /userinfo", s.cors(s.guardUserinfo(s.handleUserinfo)))
	h("POST /userinfo", s.cors(s.guardUserinfo(s.handleUserinfo)))
	h("OPTIONS /userinfo", s.cors(nil))
	h("GET /v2/logout", s.guardLogout(s.handleLogout))
	h("POST /v2/logout", s.guardLogout(s.handleLogout)) // the confirmation of a federated logout
	h("GET /oidc/logout", s.guardLogout(s.handleOIDCLogout))
	h("POST /oidc/logout", s.guardLogout(s.handleOIDCLogout))
	h("GET /logout/federated", s.guardLogout(s.handleFederatedReturn))
	// Upstream back-channel logout: every method reaches the handler, which answers 405 to
	// all but POST with an flo event.
	m.HandleFunc(prefix+upstreamLogoutPath+"{connection}", s.guardLogout(s.handleUpstreamLogout))
	h("GET /{$}", s.handleRoot)
	h("GET /favicon.ico", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	h("GET /healthz", s.handleHealthz)
	h("GET /readyz", s.handleReadyz)
	s.mgmtRoutes(h)
	m.HandleFunc(prefix+"/api/v2/", s.mgmtNotFound())
	m.Handle("GET "+prefix+"/metrics", s.metrics.handler())
	s.consoleRoutes(h)
	s.mux = m
	if s.cfg.AdminListen == "" {
		s.handler = s.metrics.instrument(m)
		return
	}
	// admin_listen: the admin paths are served there only, everything else on listen only,
	// but for the health checks, served on both.
	s.handler = s.metrics.instrument(onlyPaths(m, prefix, false))
	s.adminHandler = s.metrics.instrument(onlyPaths(m, prefix, true))
}

// adminPaths are the paths only admin_listen carries when it is set. /healthz and /readyz
// are not among them: both listeners serve those (onlyPaths), so a load balancer probing
// listen keeps working.
var adminPaths = []string{"/console", "/metrics", "/api/v2"}

// isAdminPath reports whether p (below the public URL's path prefix) is /console, /metrics or
// /api/v2, or below one of them.
func isAdminPath(prefix, p string) bool {
	rest, ok := strings.CutPrefix(p, prefix)
	if !ok {
		return false
	}
	for _, a := range adminPaths {
		if rest == a || strings.HasPrefix(rest, a+"/") {
			return true
		}
	}
	return false
}

// onlyPaths serves next for the admin paths when admin, else for every other path; the rest
// is 404 (health checks are served on both).
func onlyPaths(next http.Handler, prefix string, admin bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		health := p == prefix+"/healthz" || p == prefix+"/readyz"
		if !health && isAdminPath(prefix, p) != admin {
			http.NotFound(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// cors answers preflights and adds CORS headers for configured origins; next nil = preflight only.
func (s *Server) cors(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		w.Header().Add("Vary", "Origin")
		if origin != "" && s.allowedOrigin(r.Context(), origin) {
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Expose-Headers", "DPoP-Nonce, WWW-Authenticate, Retry-After")
			if r.Method == http.MethodOptions {
				h.Set("Access-Control-Allow-Methods", "GET, POST")
				h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, DPoP, Auth0-Client")
				h.Set("Access-Control-Max-Age", "600")
			}
		}
		if next == nil {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next(w, r)
	}
}

// handleRoot tells a person who opens the broker's base URL what it is and where apps start.
func (s *Server) handleRoot(w http.ResponseWriter, _ *http.Request) {
	renderPage(w, http.StatusOK, page{
		Title:   "dpop-broker",
		Message: "This is an OpenID Connect provider: applications send you here to sign in. There is nothing to do on this page.",
		Links:   []pageLink{{URL: s.base + "/.well-known/openid-configuration", Text: "OpenID Connect discovery document"}},
	})
}

func (s *Server) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "ok\n")
}

func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := s.ready.check(r.Context(), s.now(), s.storeReady); err != nil {
		s.log.Warn("readiness check failed", "err", err)
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "store unavailable\n")
		return
	}
	_, _ = io.WriteString(w, "ok\n")
}

// storeReady reports whether the store can serve a login now: sessions.Readier's Ready when
// the store has it (Redis: the connections version read, and every Cluster master that owns
// slots answers), else Ping. A failure is counted in dpop_broker_store_errors_total under
// op ping either way (the readiness check's op, which alerts use).
func (s *Server) storeReady(ctx context.Context) error {
	if s.readier != nil {
		return s.metrics.storeError("ping", s.readier.Ready(ctx))
	}
	return s.store.Ping(ctx)
}

// readiness asks the store for /readyz at most once per readinessReuse: the endpoint needs
// no token, so a flood of probes must not become a flood of store round trips.
type readiness struct {
	mu   sync.Mutex
	at   time.Time // when err was found; zero: never checked
	err  error
	busy chan struct{} // closed when the check in flight ends; nil: none in flight
}

// readinessReuse is how long a readiness answer is reused.
const readinessReuse = time.Second

// check returns the store's readiness at now: the last answer when it is younger than
// readinessReuse, else the answer of one ping (concurrent callers wait for the same ping).
func (rd *readiness) check(ctx context.Context, now time.Time, ping func(context.Context) error) error {
	rd.mu.Lock()
	if !rd.at.IsZero() && now.Sub(rd.at) < readinessReuse && now.Sub(rd.at) >= 0 {
		err := rd.err
		rd.mu.Unlock()
		return err
	}
	if busy := rd.busy; busy != nil {
		rd.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return ctx.Err()
		}
		rd.mu.Lock()
		err := rd.err
		rd.mu.Unlock()
		return err
	}
	done := make(chan struct{})
	rd.busy = done
	rd.mu.Unlock()
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	err := ping(pctx)
	cancel()
	rd.mu.Lock()
	rd.at, rd.err, rd.busy = now, err, nil
	rd.mu.Unlock()
	close(done)
	return err
}

// storeDown reports whether err means the store could not serve the request: unreachable
// (sessions.ErrUnavailable, which a full store's ErrFull wraps), or any other failure of an
// operation on the server's store (*storeOpError). Callers answer 503.
func storeDown(err error) bool {
	var op *storeOpError
	return errors.Is(err, sessions.ErrUnavailable) || errors.As(err, &op)
}
