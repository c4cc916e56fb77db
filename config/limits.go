package config

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

// RateLimits are token-bucket limits per client IP on /authorize, /login/callback,
// /oauth/token (with /oauth/revoke), /userinfo, the logout endpoints and the management API,
// per client_id on /authorize and /oauth/token, per refresh-token family at /oauth/token, per
// session at /authorize (logins answered from the session) and /userinfo, per management
// token, and a bound on the live login transactions of one client IP. They are on by default (Default) and off in the demo. They are kept in
// memory by each replica: with N replicas behind a load balancer the effective limit is up to
// N times the configured one.
type RateLimits struct {
	Enabled bool `yaml:"enabled"`
	// MaxKeys caps the keys (IPs or client ids) each limiter table remembers; the least
	// recently seen key is forgotten first, so spoofed keys cannot grow memory.
	MaxKeys   int                 `yaml:"max_keys"`
	Authorize AuthorizeRateLimits `yaml:"authorize"`
	// LiveTransactionsPerIP bounds the login transactions one client IP (IPv6: its /64) may
	// hold on this replica at once: started at /authorize and neither finished at
	// /login/callback nor expired (lifetimes.transaction). 0 = unbounded.
	LiveTransactionsPerIP int             `yaml:"live_transactions_per_ip"`
	Callback              IPRateLimits    `yaml:"callback"`
	Token                 TokenRateLimits `yaml:"token"`
	Logout                IPRateLimits    `yaml:"logout"`
	// Userinfo limits /userinfo per client IP and per session.
	Userinfo UserinfoRateLimits `yaml:"userinfo"`
	// Management limits the management API per token and per client IP.
	Management ManagementRateLimits `yaml:"management"`
}

// EndpointRateLimits are the limits of one endpoint.
type EndpointRateLimits struct {
	PerIP     RateLimit `yaml:"per_ip"`
	PerClient RateLimit `yaml:"per_client"`
}

// AuthorizeRateLimits are the limits of /authorize: per client IP and per client_id, and per
// broker session for the logins the session answers.
type AuthorizeRateLimits struct {
	EndpointRateLimits `yaml:",inline"`
	// PerSession limits the logins one broker session answers (single sign-on and silent
	// authentication, docs/sessions.md), keyed by the session's sid. Each writes a code and an
	// s or ssa event in the audit trail, which only authenticated parties can fill: without
	// it, one signed-in browser could rewrite the whole audit trail at the per-IP rate. It is
	// charged only once the cookie's secret and every single sign-on check passed, before
	// anything is written, so a request that only names the session (its sid is in every ID
	// token) spends nothing.
	PerSession RateLimit `yaml:"per_session"`
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
func defaultRateLimits() RateLimits {
	return RateLimits{
		Enabled: true,
		MaxKeys: 10000,
		Authorize: AuthorizeRateLimits{
			EndpointRateLimits: EndpointRateLimits{
				PerIP: RateLimit{Rate: "20/s", Burst: 40},
				// Off: /authorize has no client authentication, so anyone naming an app with one
				// of its public redirect_uris would spend its bucket and lock its users out.
				PerClient: RateLimit{Rate: "0"},
			},
			// A user opens a few apps at once (a restored window of tabs, a portal of apps); an
			// SPA without refresh tokens checks silently on each page load, which a person does
			// not sustain at once a second. At 1/s a session writes no more audit events than
			// one refresh-token family already may (per_refresh_family).
			PerSession: RateLimit{Rate: "1/s", Burst: 20},
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

// ParseRate reads "N/s", "N/m" or "N/h" (N ≥ 0, decimals allowed); "" and "0" mean
// unlimited (0, nil).
func ParseRate(s string) (rate.Limit, error) {
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

// maxLiveTransactionsPerIP bounds rate_limits.live_transactions_per_ip, so the broker's table
// of live transactions stays bounded: at most max_keys × this many expiries.
const maxLiveTransactionsPerIP = 10_000

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
	v.rateLimit("rate_limits.authorize.per_session", rl.Authorize.PerSession)
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
		if _, err := ParsePrefix(p); err != nil {
			v.add(fmt.Sprintf("trusted_proxies[%d]", i), "%v", err)
		}
	}
}

// rateLimit validates the rate limit l under key: a rate, and a burst when the rate is set.
func (v *validator) rateLimit(key string, l RateLimit) {
	lim, err := ParseRate(l.Rate)
	if err != nil {
		v.add(key+".rate", "%v", err)
		return
	}
	if lim > 0 && (l.Burst < 1 || l.Burst > 1_000_000) {
		v.add(key+".burst", "must be between 1 and 1000000 when a rate is set")
	}
}

// ParsePrefix reads a CIDR ("10.0.0.0/8") or a single address ("192.0.2.10", "::1").
func ParsePrefix(s string) (netip.Prefix, error) {
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

// TokenRateLimits are the limits of /oauth/token and /oauth/revoke: per client IP, per
// authenticated confidential client, and per refresh-token family.
type TokenRateLimits struct {
	EndpointRateLimits `yaml:",inline"`
	// PerRefreshFamily limits the refreshes of one refresh-token family (one login's chain of
	// rotated refresh tokens, shared by all the tabs of an SPA). It is charged only once the
	// presented token is known to be the family's live token, so a made-up or rotated-out
	// token spends nothing; and before the request's DPoP proof is stored in the replay
	// cache, so a refused refresh stores nothing. A public client has no secret: without it
	// one login could refresh at the per-IP rate, storing a proof jti and writing an event
	// each time.
	PerRefreshFamily RateLimit `yaml:"per_refresh_family"`
}

// UserinfoRateLimits are the limits of /userinfo (GET and POST share them). Every accepted
// DPoP proof there stores its jti in the replay cache for dpop_server.max_age + max_future,
// so without them one user with one DPoP-bound token could fill the store.
type UserinfoRateLimits struct {
	// PerIP is charged first, by every request.
	PerIP RateLimit `yaml:"per_ip"`
	// PerSession is charged by requests whose access token (and DPoP proof, for a bound
	// token) passed every check, keyed by the token's broker session (sid): made-up or
	// stolen tokens without their key cannot spend a user's bucket, and nothing is stored
	// for a refused request.
	PerSession RateLimit `yaml:"per_session"`
}

func defaultUserinfoRateLimits() UserinfoRateLimits {
	return UserinfoRateLimits{
		PerIP: RateLimit{Rate: "20/s", Burst: 40},
		// An app reads userinfo after a login and now and then; SPAs on page loads.
		PerSession: RateLimit{Rate: "5/s", Burst: 20},
	}
}

// ManagementRateLimits are the limits of the management API (/api/v2/*, every method and
// path, known or not).
type ManagementRateLimits struct {
	// PerIP limits the calls without a valid management token (none, malformed, or unknown)
	// per client IP. An address whose bucket is empty is refused before its token is
	// compared, also when the token is valid: so the answers tell someone guessing tokens
	// nothing, and guessing is as slow as this limit. Calls with a valid token do not spend it.
	PerIP RateLimit `yaml:"per_ip"`
	// PerToken limits the calls of each management token (by its name), charged once the
	// token is recognised and before its scopes are checked, so calls it is not allowed to
	// make count too.
	PerToken RateLimit `yaml:"per_token"`
}

func defaultManagementRateLimits() ManagementRateLimits {
	return ManagementRateLimits{
		PerIP: RateLimit{Rate: "10/s", Burst: 20},
		// `broker logs --follow` polls every 250 ms (4/s) and reads a backlog page after page
		// without waiting; a query reads up to 10 pages at once.
		PerToken: RateLimit{Rate: "20/s", Burst: 100},
	}
}
