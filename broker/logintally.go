package broker

import (
	"strconv"
	"strings"

	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/upstream"
)

// The counters a login event adds to the store's per-minute and per-hour buckets
// (sessions.Tallier, through logs.Writer.Tally): written with the event in the same round
// trip, read by the console's overview (overview.go). Names are short, because every bucket
// holds them:
//
//	login:s, login:f        logins by result (s and f events)
//	err:CODE                failures by details.error (metricCode: a bounded set, else "other")
//	retries                 DPoP nonce retries of the upstream exchange
//	c:NAME:s, c:NAME:f      per connection (only a connection the broker resolved), by result
//	c:NAME:tok              upstream token answers with a token_type
//	c:NAME:dpop             of those, DPoP-bound (dpop_returned_from_upstream)
//	c:NAME:down             Bearer although the connection has dpop_signing_alg (a downgrade)
//	c:NAME:nodpop           failures upstream_requires_dpop (DPoP off, the upstream requires it)
//	c:NAME:r                nonce retries
//	c:NAME:lI               exchange latency in bucket I of latencyBounds
//
// Connection names are at most 128 letters, digits, '-' or '_', so a name holds no ':'.
const (
	tallySuccess = "login:s"
	tallyFailure = "login:f"
	tallyErr     = "err:"
	tallyRetries = "retries"
	tallyConn    = "c:"
)

// latencyBounds are the upper bounds, in milliseconds, of the exchange-latency buckets; the
// last bucket (index len(latencyBounds)) holds everything slower.
var latencyBounds = [...]int64{25, 50, 100, 250, 500, 1000, 2500, 5000, 10000}

// latencyBucket is the index of the bucket of an exchange that took ms milliseconds.
func latencyBucket(ms int64) int {
	for i, b := range latencyBounds {
		if ms <= b {
			return i
		}
	}
	return len(latencyBounds)
}

// loginTally returns the counters ev adds to: nothing but for an s or f event.
func loginTally(ev *logs.Event) map[string]int64 {
	var result string
	switch ev.Type {
	case logs.TypeSuccessLogin:
		result = "s"
	case logs.TypeFailedLogin:
		result = "f"
	default:
		return nil
	}
	c := map[string]int64{"login:" + result: 1}
	if result == "f" {
		code, _ := ev.Details["error"].(string)
		c[tallyErr+metricCode(code)] = 1
	}
	retries := detailInt(ev.Details["dpop_nonce_retries"])
	if retries > 0 {
		c[tallyRetries] = retries
	}
	if ev.ConnectionID == "" || ev.Connection == "" || len(ev.Connection) > 128 || strings.ContainsRune(ev.Connection, ':') {
		return c // no connection the broker resolved
	}
	p := tallyConn + ev.Connection + ":"
	c[p+result] = 1
	if code, _ := ev.Details["error"].(string); result == "f" && code == upstream.CodeUpstreamRequiresDPoP {
		c[p+"nodpop"] = 1
	}
	if retries > 0 {
		c[p+"r"] = retries
	}
	if bound, ok := ev.Details["dpop_returned_from_upstream"].(bool); ok {
		c[p+"tok"] = 1
		_, dpop := ev.Details["dpop_signing_alg"]
		switch {
		case bound:
			c[p+"dpop"] = 1
		case dpop:
			c[p+"down"] = 1
		}
	}
	if ms, ok := ev.Details["code_exchange_ms"]; ok {
		c[p+"l"+strconv.Itoa(latencyBucket(detailInt(ms)))] = 1
	}
	return c
}

// detailInt reads an integer detail as the broker sets it (int or int64), 0 otherwise.
func detailInt(v any) int64 {
	switch n := v.(type) {
	case int:
		return int64(n)
	case int64:
		return n
	}
	return 0
}
