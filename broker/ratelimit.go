package broker

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/dpop-broker/dpop-broker/logs"
)

// RateLimitsConfig are token-bucket limits per client IP on /authorize, /login/callback,
// /oauth/token (with /oauth/revoke), /userinfo, the logout endpoints and the management API,
// per client_id on /authorize and /oauth/token, per refresh-token family at /oauth/token, per
// session at /userinfo, per management token, and a bound on the live login transactions of
// one client IP. They are on by default (Default) and off in the demo. They are kept in
// memory by each replica: with N replicas behind a load balancer the effective limit is up to
// N times the configured one.
type RateLimitsConfig struct {
	Enabled bool `yaml:"enabled"`
	// MaxKeys caps the keys (IPs or client ids) each limiter table remembers; the least
	// recently seen key is forgotten first, so spoofed keys cannot grow memory.
	MaxKeys   int                `yaml:"max_keys"`
	Authorize EndpointRateLimits `yaml:"authorize"`
	// LiveTransactionsPerIP bounds the login transactions one client IP (IPv6: its /64) may
	// hold on this replica at once: started at /authorize and neither finished at
	// /login/callback nor expired (lifetimes.transaction). 0 = unbounded (bounded.go).
	LiveTransactionsPerIP int             `yaml:"live_transactions_per_ip"`
	Callback              IPRateLimits    `yaml:"callback"`
	Token                 TokenRateLimits `yaml:"token"`
	Logout                IPRateLimits    `yaml:"logout"`
	// Userinfo limits /userinfo per client IP and per session (userinfolimit.go).
	Userinfo UserinfoRateLimits `yaml:"userinfo"`
	// Management limits the management API per token and per client IP (mgmtlimit.go).
	Management ManagementRateLimits `yaml:"management"`
}

// EndpointRateLimits are the limits of one endpoint.
type EndpointRateLimits struct {
	PerIP     RateLimit `yaml:"per_ip"`
	PerClient RateLimit `yaml:"per_client"`
}

// IPRateLimits are the limits of an endpoint that names no authenticated client.
type IPRateLimits struct {
	PerIP RateLimit `yaml:"per_ip"`
}

// RateLimit is a sustained rate ("20/s", "600/m", "1000/h"; "" or "0" = unlimited) and the
// burst of requests allowed at once.
type RateLimit struct {
	Rate  string `yaml:"rate"`
	Burst int    `yaml:"burst"`
}

// defaultRateLimits are the limits of a configuration that sets no other values: on, as
// `serve` runs (the demo turns them off).
func defaultRateLimits() RateLimitsConfig {
	return RateLimitsConfig{
		Enabled: true,
		MaxKeys: 10000,
		Authorize: EndpointRateLimits{
			PerIP: RateLimit{Rate: "20/s", Burst: 40},
			// Off: /authorize has no client authentication, so anyone naming an app with one
			// of its public redirect_uris would spend its bucket and lock its users out.
			PerClient: RateLimit{Rate: "0"},
		},
		LiveTransactionsPerIP: 50,
		// Every login comes back once through the callback, from the same browser.
		Callback: IPRateLimits{PerIP: RateLimit{Rate: "20/s", Burst: 40}},
		Token: TokenRateLimits{
			EndpointRateLimits: EndpointRateLimits{
				// A confidential app's back end redeems every user's code from one address.
				PerIP:     RateLimit{Rate: "100/s", Burst: 200},
				PerClient: RateLimit{Rate: "200/s", Burst: 400},
			},
			// An app refreshes every few minutes; the tabs of one SPA share a family.
			PerRefreshFamily: RateLimit{Rate: "1/s", Burst: 10},
		},
		Logout:     IPRateLimits{PerIP: RateLimit{Rate: "10/s", Burst: 20}},
		Userinfo:   defaultUserinfoRateLimits(),
		Management: defaultManagementRateLimits(),
	}
}

// parseRate reads "N/s", "N/m" or "N/h" (N ≥ 0, decimals allowed); "" and "0" mean
// unlimited (0, nil).
func parseRate(s string) (rate.Limit, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return 0, nil
	}
	num, unit, ok := strings.Cut(s, "/")
	var per time.Duration
	switch unit {
	case "s":
		per = time.Second
	case "m":
		per = time.Minute
	case "h":
		per = time.Hour
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if !ok || per == 0 || err != nil || n < 0 || math.IsInf(n, 0) || math.IsNaN(n) {
		return 0, fmt.Errorf("%q is not a rate (use N/s, N/m or N/h, e.g. 20/s; 0 = unlimited)", s)
	}
	return rate.Limit(n / per.Seconds()), nil
}

// rateLimits validates rate_limits (also when disabled, so a typo is caught before it is
// switched on) and trusted_proxies.
func (v *validator) rateLimits(c *Config) {
	rl := &c.RateLimits
	if rl.MaxKeys < 1 || rl.MaxKeys > 10_000_000 {
		v.add("rate_limits.max_keys", "must be between 1 and 10000000")
	}
	if n := rl.LiveTransactionsPerIP; n < 0 || n > maxLiveTransactionsPerIP {
		v.add("rate_limits.live_transactions_per_ip", "must be between 0 (unbounded) and %d", maxLiveTransactionsPerIP)
	}
	v.rateLimit("rate_limits.authorize.per_ip", rl.Authorize.PerIP)
	v.rateLimit("rate_limits.authorize.per_client", rl.Authorize.PerClient)
	v.rateLimit("rate_limits.callback.per_ip", rl.Callback.PerIP)
	v.rateLimit("rate_limits.token.per_ip", rl.Token.PerIP)
	v.rateLimit("rate_limits.token.per_client", rl.Token.PerClient)
	v.rateLimit("rate_limits.logout.per_ip", rl.Logout.PerIP)
	v.rateLimit("rate_limits.token.per_refresh_family", rl.Token.PerRefreshFamily)
	v.rateLimit("rate_limits.userinfo.per_ip", rl.Userinfo.PerIP)
	v.rateLimit("rate_limits.userinfo.per_session", rl.Userinfo.PerSession)
	v.rateLimit("rate_limits.management.per_ip", rl.Management.PerIP)
	v.rateLimit("rate_limits.management.per_token", rl.Management.PerToken)
	for i, p := range c.TrustedProxies {
		if _, err := parsePrefix(p); err != nil {
			v.add(fmt.Sprintf("trusted_proxies[%d]", i), "%v", err)
		}
	}
}

// rateLimit validates the rate limit l under key: a rate, and a burst when the rate is set.
func (v *validator) rateLimit(key string, l RateLimit) {
	lim, err := parseRate(l.Rate)
	if err != nil {
		v.add(key+".rate", "%v", err)
		return
	}
	if lim > 0 && (l.Burst < 1 || l.Burst > 1_000_000) {
		v.add(key+".burst", "must be between 1 and 1000000 when a rate is set")
	}
}

// parsePrefix reads a CIDR ("10.0.0.0/8") or a single address ("192.0.2.10", "::1").
func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil {
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
		}
		return p.Masked(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR (e.g. 10.0.0.0/8 or 192.0.2.10)", s)
}

// Rate-limit refusal: the OAuth error code and the details.error of its event.
const codeTooManyRequests = "too_many_requests"

// guard holds the per-replica rate limiters and the trusted proxies (limits.go uses both).
type guard struct {
	authorizeIP, authorizeClient *limiterTable // nil = unlimited or disabled
	callbackIP, logoutIP         *limiterTable
	tokenIP, tokenClient         *limiterTable
	refreshFamily                *limiterTable // per refresh-token family (refreshlimit.go)
	userinfoIP, userinfoSession  *limiterTable // userinfolimit.go
	mgmtIP, mgmtToken            *limiterTable // mgmtlimit.go
	liveTx                       *liveTxTable  // live login transactions per IP (bounded.go)
	proxies                      []netip.Prefix
	refused                      *prometheus.CounterVec
}

// newGuard builds the limiters from a validated configuration and registers the
// dpop_broker_rate_limited_total counter on reg.
func newGuard(cfg *Config, reg *prometheus.Registry) (*guard, error) {
	g := &guard{
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dpop_broker_rate_limited_total",
			Help: "Requests refused with 429 by the per-replica rate limits, by endpoint and key (ip, client, refresh_family, session, token, or live_transactions).",
		}, []string{"endpoint", "key"}),
	}
	if reg != nil {
		if err := reg.Register(g.refused); err != nil {
			return nil, fmt.Errorf("rate limit metric: %w", err)
		}
	}
	for i, p := range cfg.TrustedProxies {
		pfx, err := parsePrefix(p)
		if err != nil {
			return nil, fmt.Errorf("trusted_proxies[%d]: %w", i, err)
		}
		g.proxies = append(g.proxies, pfx)
	}
	rl := &cfg.RateLimits
	if !rl.Enabled {
		return g, nil
	}
	for _, t := range []struct {
		dst                *(*limiterTable)
		endpoint, key, cfg string
		l                  RateLimit
	}{
		{&g.authorizeIP, "authorize", "ip", "rate_limits.authorize.per_ip", rl.Authorize.PerIP},
		{&g.authorizeClient, "authorize", "client", "rate_limits.authorize.per_client", rl.Authorize.PerClient},
		{&g.callbackIP, "callback", "ip", "rate_limits.callback.per_ip", rl.Callback.PerIP},
		{&g.tokenIP, "token", "ip", "rate_limits.token.per_ip", rl.Token.PerIP},
		{&g.tokenClient, "token", "client", "rate_limits.token.per_client", rl.Token.PerClient},
		{&g.logoutIP, "logout", "ip", "rate_limits.logout.per_ip", rl.Logout.PerIP},
		{&g.refreshFamily, "token", byRefreshFamily, "rate_limits.token.per_refresh_family", rl.Token.PerRefreshFamily},
		{&g.userinfoIP, "userinfo", "ip", "rate_limits.userinfo.per_ip", rl.Userinfo.PerIP},
		{&g.userinfoSession, "userinfo", bySession, "rate_limits.userinfo.per_session", rl.Userinfo.PerSession},
		{&g.mgmtIP, "management", "ip", "rate_limits.management.per_ip", rl.Management.PerIP},
		{&g.mgmtToken, "management", byToken, "rate_limits.management.per_token", rl.Management.PerToken},
	} {
		lim, err := parseRate(t.l.Rate)
		if err != nil {
			return nil, fmt.Errorf("%s.rate: %w", t.cfg, err)
		}
		if lim > 0 {
			*t.dst = newLimiterTable(t.endpoint, t.key, t.l, lim, max(rl.MaxKeys, 1))
		}
	}
	if rl.LiveTransactionsPerIP > 0 {
		g.liveTx = newLiveTxTable(rl.LiveTransactionsPerIP, max(rl.MaxKeys, 1))
	}
	return g, nil
}

// limiterTable is one set of per-key token buckets, bounded to max keys (least recently used
// evicted). Forgetting a key is harmless once its bucket has refilled, and under a flood of
// distinct keys it only resets the forgotten keys' buckets.
type limiterTable struct {
	endpoint, key string // "authorize"|"token", "ip"|"client"
	spec          string // configured rate, for messages and events
	limit         rate.Limit
	burst         int

	mu   sync.Mutex
	keys *logs.LRU[*rate.Limiter]
}

func newLimiterTable(endpoint, key string, l RateLimit, lim rate.Limit, maxKeys int) *limiterTable {
	return &limiterTable{
		endpoint: endpoint, key: key, spec: strings.TrimSpace(l.Rate), limit: lim, burst: l.Burst,
		keys: logs.NewLRU(maxKeys, func() *rate.Limiter { return rate.NewLimiter(lim, l.Burst) }),
	}
}

// refusal describes a request a limiter refused. Its event is an unauthenticated one,
// limited like every such event (logs.unauthenticated), so an attack cannot flood the log.
type refusal struct {
	endpoint   string        // authorize, callback, token, logout, userinfo, management
	by         string        // ip, client, refresh_family, session, token, or live_transactions (bounded.go)
	limit      string        // the configured rate, or the live-transaction bound
	burst      int           // of a rate; 0 for the live-transaction bound
	retryAfter time.Duration // until one request is allowed again
}

// take spends one request of key at now. It returns nil when allowed.
func (t *limiterTable) take(key string, now time.Time) *refusal {
	t.mu.Lock()
	defer t.mu.Unlock()
	lim := t.keys.GetOrCreate(key)
	if lim.AllowN(now, 1) {
		return nil
	}
	wait := time.Duration((1 - lim.TokensAt(now)) / float64(t.limit) * float64(time.Second))
	return &refusal{endpoint: t.endpoint, by: t.key, limit: t.spec, burst: t.burst, retryAfter: max(wait, 0)}
}

// len reports how many keys the table remembers (tests).
func (t *limiterTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.keys.Len()
}

// check spends one request of key in table t (nil = unlimited) and counts a refusal.
func (g *guard) check(t *limiterTable, key string, now time.Time) *refusal {
	if t == nil {
		return nil
	}
	ref := t.take(key, now)
	g.count(ref)
	return ref
}

// count adds a refusal (nil: none) to dpop_broker_rate_limited_total.
func (g *guard) count(ref *refusal) {
	if ref != nil {
		g.refused.WithLabelValues(ref.endpoint, ref.by).Inc()
	}
}

// retryAfterSeconds is the Retry-After value: whole seconds, at least 1.
func (ref *refusal) retryAfterSeconds() int64 {
	return max(int64(math.Ceil(ref.retryAfter.Seconds())), 1)
}

// setRetryAfter adds the Retry-After header.
func (ref *refusal) setRetryAfter(w http.ResponseWriter) {
	w.Header().Set("Retry-After", strconv.FormatInt(ref.retryAfterSeconds(), 10))
}

// description is the error_description of a refusal.
func (ref *refusal) description() string {
	switch ref.by {
	case byLiveTransactions:
		return fmt.Sprintf("too many sign-ins in progress from this address (limit %s); retry after %d s",
			ref.limit, ref.retryAfterSeconds())
	case "client":
		return fmt.Sprintf("too many requests from this application (limit %s, burst %d); retry after %d s",
			ref.limit, ref.burst, ref.retryAfterSeconds())
	case byRefreshFamily, bySession, byToken:
		what := map[string]string{
			byRefreshFamily: "refreshes of this refresh token", bySession: "requests for this session",
			byToken: "requests with this management token",
		}[ref.by]
		return fmt.Sprintf("too many %s (limit %s, burst %d); retry after %d s",
			what, ref.limit, ref.burst, ref.retryAfterSeconds())
	}
	return fmt.Sprintf("too many requests from this address (limit %s, burst %d); retry after %d s",
		ref.limit, ref.burst, ref.retryAfterSeconds())
}

// details is details.rate_limit of a refusal event (burst only for a rate).
func (ref *refusal) details() map[string]any {
	d := map[string]any{
		"endpoint": ref.endpoint, "by": ref.by, "limit": ref.limit, "retry_after": ref.retryAfterSeconds(),
	}
	if ref.burst > 0 {
		d["burst"] = ref.burst
	}
	return d
}

// maxForwardedHops bounds the X-Forwarded-For entries examined.
const maxForwardedHops = 32

// clientAddr returns the client's address: the TCP peer, or, when the peer is a trusted
// proxy, the right-most X-Forwarded-For entry that is not a trusted proxy (entries left of it
// may be forged by the client and are ignored).
func (g *guard) clientAddr(r *http.Request) string {
	host := r.RemoteAddr
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	peer, err := netip.ParseAddr(host)
	if err != nil || len(g.proxies) == 0 {
		return host
	}
	peer = peer.Unmap().WithZone("")
	if !g.trusted(peer) {
		return peer.String()
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	ip := peer
	for i, n := len(hops)-1, 0; i >= 0 && n < maxForwardedHops; i, n = i-1, n+1 {
		a, ok := parseHop(hops[i])
		if !ok {
			break // a trusted proxy wrote garbage: fall back to that proxy
		}
		ip = a
		if !g.trusted(a) {
			break
		}
	}
	return ip.String()
}

func (g *guard) trusted(a netip.Addr) bool {
	for _, p := range g.proxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// parseHop reads one X-Forwarded-For entry: an address, optionally with a port or brackets.
func parseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone(""), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err == nil {
		return a.Unmap().WithZone(""), true
	}
	return netip.Addr{}, false
}
