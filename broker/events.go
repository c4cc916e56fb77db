package broker

import (
	"net/http"
	"strings"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/upstream"
)

// Stable details.error codes the broker itself adds (upstream codes come from upstream.Code*).
const (
	codeInvalidClient      = "invalid_client"
	codeInvalidRedirectURI = "invalid_redirect_uri"
	codeInvalidRequest     = "invalid_request"
	codeInvalidState       = "invalid_state"
	codeInvalidIss         = "invalid_iss"
	codeStoreUnavailable   = "store_unavailable"
	codeStoreBusy          = "store_busy"          // a compare-and-swap kept losing to concurrent writers
	codeConnectionUnusable = "connection_unusable" // stored connection the driver refuses
)

// newEvent starts a login event for request r: ip (the peer address, or X-Forwarded-For's
// client when the peer is one of trusted_proxies: clientIP), user agent, empty details.
func (s *Server) newEvent(r *http.Request) *logs.Event {
	ev := newBackgroundEvent()
	ev.IP, ev.UserAgent = s.clientIP(r), s.clipEvent(r.UserAgent(), 256)
	return ev
}

// newBackgroundEvent starts an event of work the broker does on its own, after the request
// that caused it (a back-channel logout delivery): no ip or user agent, empty details.
func newBackgroundEvent() *logs.Event {
	return &logs.Event{Details: map[string]any{}}
}

// clipEvent is clip for request-derived text bound for an event: the whole value is scrubbed
// of credential-like parameters and configured secrets first (logs.Writer.Scrub), so that a
// secret the cut would split, or that is percent-encoded, is still recognised.
func (s *Server) clipEvent(v string, n int) string {
	v = s.events.Scrub(v)
	if len(v) > n {
		// Never cut a "[redacted]" in half: keep it whole (at most 9 bytes more).
		if i := strings.LastIndexByte(v[:n], '['); i >= 0 && i+len(logs.Redacted) > n && strings.HasPrefix(v[i:], logs.Redacted) {
			n = i + len(logs.Redacted)
		}
	}
	return clip(v, n)
}

// withClient adds the app's identity to ev.
func withClient(ev *logs.Event, c *config.Client) {
	ev.ClientID = c.ClientID
	ev.ClientName = c.Name
	if ev.ClientName == "" {
		ev.ClientName = c.ClientID
	}
}

// withConnection adds the connection's identity (and its DPoP alg when configured) to ev.
func withConnection(ev *logs.Event, c *connection) {
	ev.Connection = c.cfg.Name
	ev.ConnectionID = c.id
	ev.Strategy = c.cfg.Strategy
	ev.StrategyType = "enterprise"
	if alg := c.cfg.Options.DPoPSigningAlg; alg != "" {
		ev.Details["dpop_signing_alg"] = alg
	}
	if m := c.cfg.Options.TokenEndpointAuthMethod; m != "" {
		ev.Details["token_endpoint_auth_method"] = m // the configured one; withResult: the one used
	}
}

// withResult adds what the upstream exchange did: DPoP facts, token type, timings, userinfo.
// res may be nil or partial.
func withResult(ev *logs.Event, res *upstream.Result) {
	if res == nil {
		return
	}
	d := ev.Details // dpop_signing_alg stays the configured name (ES256, Ed25519, …)
	if res.ClientAuthMethod != "" {
		d["token_endpoint_auth_method"] = res.ClientAuthMethod
	}
	if res.PAR {
		d["upstream_par"] = true // the authorization request was pushed (RFC 9126)
	}
	if res.TokenType != "" {
		d["dpop_returned_from_upstream"] = res.DPoPBound
		d["idp_token_type"] = strings.ToLower(res.TokenType)
	}
	if _, on := d["dpop_signing_alg"]; on {
		d["dpop_nonce_used"] = res.NonceUsed
		d["dpop_nonce_retries"] = res.NonceRetries
		if res.NonceDropped {
			d["dpop_nonce_dropped"] = true // a stale upstream nonce was forgotten and the request retried
		}
	}
	if res.IDTokenAlg != "" {
		d["id_token_signing_alg"] = res.IDTokenAlg
	}
	if res.ExchangeLatency > 0 {
		d["code_exchange_ms"] = exchangeMillis(res.ExchangeLatency)
	}
	if res.UserinfoStatus != "" {
		f := map[string]any{"status": res.UserinfoStatus}
		if res.UserinfoBound {
			f["dpop_bound"] = true
		}
		d["upstream_userinfo_fetch"] = f
	}
}

// exchangeMillis is a code exchange's duration in whole milliseconds, rounded up: an exchange
// that called the upstream (an answer on loopback can take well under a millisecond) is never
// recorded as 0 ms, which would read as "not called".
func exchangeMillis(d time.Duration) int64 {
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// withUser adds the broker's user id and display name.
func withUser(ev *logs.Event, userID string, claims map[string]any) {
	ev.UserID = userID
	ev.UserName = userName(claims)
}

func userName(claims map[string]any) string {
	for _, k := range []string{"email", "name", "preferred_username"} {
		if v, ok := claims[k].(string); ok && v != "" {
			return clip(v, 256)
		}
	}
	return ""
}

// succeed records ev as a successful login (s, or ssa when ev is already typed so).
func (s *Server) succeed(r *http.Request, ev *logs.Event) {
	if ev.Type != logs.TypeSuccessSilentAuth {
		ev.Type = logs.TypeSuccessLogin
	}
	s.metrics.login(ev)
	s.write(r, ev)
}
