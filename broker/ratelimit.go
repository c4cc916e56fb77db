package broker

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
)

// Rate-limit refusal: the OAuth error code and the details.error of its event.
const codeTooManyRequests = "too_many_requests"

// guard holds the per-replica rate limiters and the trusted proxies (limits.go uses both).
// A guard is immutable once built: Reload builds the next one (newGuard with prev), which
// keeps every table whose limit did not change, so those buckets survive a reload.
type guard struct {
	authorizeIP, authorizeClient *limiterTable // nil = unlimited or disabled
	authorizeSession             *limiterTable // logins answered from a session (ssolimit.go)
	callbackIP, logoutIP         *limiterTable
	tokenIP, tokenClient         *limiterTable
	refreshFamily                *limiterTable // per refresh-token family (refreshlimit.go)
	userinfoIP, userinfoSession  *limiterTable // userinfolimit.go
	// mgmtIP also holds the console's requests before sign-in and its failed break-glass
	// sign-ins (consolesession.go).
	mgmtIP, mgmtToken *limiterTable // mgmtlimit.go
	// tables are the tables above by their name in the configuration and endpoint (a reload
	// finds the one to keep by it).
	tables map[string]*limiterTable
	// liveTx is the live login transactions per IP (bounded.go), at most liveTxLimit each. The
	// table outlives a reload that keeps the bound on (slots taken before it are given back to
	// it); the limit is the guard's.
	liveTx      *liveTxTable
	liveTxLimit int
	proxies     []netip.Prefix
	refused     *prometheus.CounterVec
}

// newGuard builds the limiters from a validated configuration and registers the
// dpop_broker_rate_limited_total counter on reg.
func newGuard(cfg *config.Config, reg *prometheus.Registry) (*guard, error) {
	return buildGuard(cfg, reg, nil)
}

// nextGuard builds the limiters of a reloaded configuration: it shares prev's counter and
// keeps prev's tables whose rate, burst and max_keys are unchanged.
func nextGuard(cfg *config.Config, prev *guard) (*guard, error) {
	return buildGuard(cfg, nil, prev)
}

func buildGuard(cfg *config.Config, reg *prometheus.Registry, prev *guard) (*guard, error) {
	g := &guard{tables: map[string]*limiterTable{}}
	if prev != nil {
		g.refused = prev.refused
	} else {
		g.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dpop_broker_rate_limited_total",
			Help: "Requests refused with 429 by the per-replica rate limits, by endpoint and key (ip, client, refresh_family, session, token, or live_transactions).",
		}, []string{"endpoint", "key"})
		if reg != nil {
			if err := reg.Register(g.refused); err != nil {
				return nil, fmt.Errorf("rate limit metric: %w", err)
			}
		}
	}
	for i, p := range cfg.TrustedProxies {
		pfx, err := config.ParsePrefix(p)
		if err != nil {
			return nil, fmt.Errorf("trusted_proxies[%d]: %w", i, err)
		}
		g.proxies = append(g.proxies, pfx)
	}
	rl := &cfg.RateLimits
	if !rl.Enabled {
		return g, nil
	}
	maxKeys := max(rl.MaxKeys, 1)
	for _, t := range []struct {
		dst                *(*limiterTable)
		endpoint, key, cfg string
		l                  config.RateLimit
	}{
		{&g.authorizeIP, "authorize", "ip", "rate_limits.authorize.per_ip", rl.Authorize.PerIP},
		{&g.authorizeClient, "authorize", "client", "rate_limits.authorize.per_client", rl.Authorize.PerClient},
		{&g.authorizeSession, "authorize", bySession, "rate_limits.authorize.per_session", rl.Authorize.PerSession},
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
		lim, err := config.ParseRate(t.l.Rate)
		if err != nil {
			return nil, fmt.Errorf("%s.rate: %w", t.cfg, err)
		}
		if lim <= 0 {
			continue
		}
		name := t.cfg + " " + t.endpoint
		next := newLimiterTable(t.endpoint, t.key, t.l, lim, maxKeys)
		if prev != nil {
			if old := prev.tables[name]; old != nil && old.sameLimit(next) {
				next = old
			}
		}
		*t.dst, g.tables[name] = next, next
	}
	if rl.LiveTransactionsPerIP > 0 {
		g.liveTxLimit = rl.LiveTransactionsPerIP
		if prev != nil && prev.liveTx != nil && prev.liveTx.maxKeys == maxKeys {
			g.liveTx = prev.liveTx
		} else {
			g.liveTx = newLiveTxTable(rl.LiveTransactionsPerIP, maxKeys)
		}
	}
	return g, nil
}

// changedLimits names the rate limits (configuration keys) whose tables prev has and g built
// anew, or that one of them has and the other not (turned on or off); rate_limits.max_keys
// changes every one. The live-transaction bound is named when it changed.
func (g *guard) changedLimits(prev *guard) []string {
	var out []string
	for name, t := range g.tables {
		if prev.tables[name] != t {
			out = append(out, strings.Fields(name)[0])
		}
	}
	for name := range prev.tables {
		if g.tables[name] == nil {
			out = append(out, strings.Fields(name)[0])
		}
	}
	if g.liveTxLimit != prev.liveTxLimit || g.liveTx != prev.liveTx {
		out = append(out, "rate_limits.live_transactions_per_ip")
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// limiterTable is one set of per-key token buckets, bounded to max keys (least recently used
// evicted). Forgetting a key is harmless once its bucket has refilled, and under a flood of
// distinct keys it only resets the forgotten keys' buckets.
type limiterTable struct {
	endpoint, key string // "authorize"|"token", "ip"|"client"
	spec          string // configured rate, for messages and events
	limit         rate.Limit
	burst         int
	maxKeys       int

	mu   sync.Mutex
	keys *logs.LRU[*rate.Limiter]
}

func newLimiterTable(endpoint, key string, l config.RateLimit, lim rate.Limit, maxKeys int) *limiterTable {
	return &limiterTable{
		endpoint: endpoint, key: key, spec: strings.TrimSpace(l.Rate), limit: lim, burst: l.Burst, maxKeys: maxKeys,
		keys: logs.NewLRU(maxKeys, func() *rate.Limiter { return rate.NewLimiter(lim, l.Burst) }),
	}
}

// sameLimit reports whether o limits as t does (rate as written, burst and max keys): a
// reload then keeps t and its buckets.
func (t *limiterTable) sameLimit(o *limiterTable) bool {
	return t.endpoint == o.endpoint && t.key == o.key && t.spec == o.spec && t.limit == o.limit &&
		t.burst == o.burst && t.maxKeys == o.maxKeys
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
		if ref.by == bySession && ref.endpoint == "authorize" {
			what = "sign-ins through this session"
		}
		if ref.by == byToken && ref.endpoint == "console" {
			what = "console requests by this operator"
		}
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
