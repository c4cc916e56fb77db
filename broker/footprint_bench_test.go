package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/sessions/redistest"
)

// browserUA is a desktop browser's User-Agent: events record it, so a Go client's short one
// would make the event log look cheaper than it is.
const browserUA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"

// uaTransport sets browserUA on every request.
type uaTransport struct{ next http.RoundTripper }

func (t uaTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("User-Agent", browserUA)
	return t.next.RoundTrip(r)
}

// BenchmarkRedisFootprint measures what live logins leave in Redis, for sizing maxmemory
// (README "Running in production"): b.N full brokered logins, each by a user of its own
// with a fresh upstream sid, scope offline_access (a refresh-token family) and the code
// redeemed at /oauth/token, on a private redis-server (no persistence) holding the records
// and the event log as `broker serve` does. Afterwards it reads MEMORY USAGE (SAMPLES 0:
// every element) of every key the logins added, by kind, and INFO used_memory before and
// after. Run it with a fixed count so the figures do not depend on the machine's speed:
//
//	go test -run '^$' -bench RedisFootprint -benchtime 2000x ./broker/
//
// The metrics are bytes per login (used_memory growth; the sum of MEMORY USAGE of the keys a
// live session keeps) and per stored event; the log adds the figures by kind of record.
func BenchmarkRedisFootprint(b *testing.B) {
	rs := redistest.StartServer(b)
	st, err := sessions.NewRedis(sessions.RedisConfig{Addrs: []string{rs.Addr}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	h := newHarness(b, harnessOpts{up: dpopUp, store: st, eventStore: st})
	h.events.Hostname = "dpop-broker-7d9f8c6b5-x2k4q" // as serve sets it (os.Hostname), a pod's name here
	h.events.MaxLen = 1 << 20                         // keep every event of the run (logs.max_events is the bound in production)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	b.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()

	login := func(i int) {
		h.up.SetSubject(fmt.Sprintf("user-%08d", i))
		c := h.browser()
		c.Transport = uaTransport{next: http.DefaultTransport}
		resp, _ := get(b, c, h.authorizeURL(func(q url.Values) { q.Set("scope", "openid profile email offline_access") }))
		code := resp.Request.URL.Query().Get("code")
		if code == "" {
			b.Fatalf("login %d failed at %s", i, resp.Request.URL)
		}
		status, body, _ := h.token(h.codeForm(code), true)
		if _, ok := body["refresh_token"]; status != http.StatusOK || !ok {
			b.Fatalf("token: %d %v", status, body)
		}
	}
	// Warm up: connections seeded, go-redis's pool and Redis's client buffers in place, a
	// first minute and hour tally hash, so the counted logins add only their own state.
	for i := range 5 {
		login(-1 - i)
	}
	before := footprintSizes(ctx, b, rdb)
	eventsBefore := logEvents(ctx, b, rdb, before)
	memBefore := usedMemory(ctx, b, rdb)
	n := 0
	for b.Loop() {
		login(n)
		n++
	}
	b.StopTimer()
	memAfter := usedMemory(ctx, b, rdb)
	// One login left at the upstream: its login transaction is what a flood of unfinished
	// logins stores (for lifetimes.transaction).
	c := h.browser()
	c.Transport = uaTransport{next: http.DefaultTransport}
	h.toCallback(c, h.authorizeURL(func(q url.Values) { q.Set("scope", "openid profile email offline_access") }))
	after := footprintSizes(ctx, b, rdb)

	// The records the logins added, by kind; the event log and the tally hashes, which every
	// login adds to, by their growth.
	type group struct{ keys, bytes, value int64 }
	groups := map[string]*group{}
	var records, events, logBytes, memberBytes, tallyMinute, tallyHour, tallyMinuteKeys, tallyHourKeys int64
	var idToken, userAgent int // lengths in one session record
	for k, size := range after {
		switch kind := footprintKind(k); kind {
		case "log":
			members, err := rdb.ZRange(ctx, k, 0, -1).Result()
			if err != nil {
				b.Fatalf("ZRANGE %s: %v", k, err)
			}
			for _, m := range members {
				memberBytes += int64(len(m))
			}
			events += int64(len(members))
			logBytes += size - before[k]
		case "tally minute":
			tallyMinute = max(tallyMinute, size)
			tallyMinuteKeys++
		case "tally hour":
			tallyHour = max(tallyHour, size)
			tallyHourKeys++
		default:
			if _, old := before[k]; old {
				continue
			}
			value, err := rdb.StrLen(ctx, k).Result()
			if err != nil {
				b.Fatalf("STRLEN %s: %v", k, err)
			}
			if kind == "session (sess)" && idToken == 0 {
				var sess sessionRecord
				raw, err := rdb.Get(ctx, k).Bytes()
				if err == nil {
					err = json.Unmarshal(raw, &sess)
				}
				if err != nil {
					b.Fatalf("session record %s: %v", k, err)
				}
				idToken, userAgent = len(sess.UpstreamIDToken), len(sess.InitialUserAgent)+len(sess.LastUserAgent)
			}
			g := groups[kind]
			if g == nil {
				g = &group{}
				groups[kind] = g
			}
			g.keys++
			g.bytes += size
			g.value += value
			records += size
		}
	}
	loginEvents := events - eventsBefore
	grown := memAfter - memBefore
	perLogin := func(v int64) int64 { return v / int64(n) }
	var tx int64
	if g := groups["login transaction (tx)"]; g != nil {
		tx = g.bytes
		delete(groups, "login transaction (tx)")
		records -= tx
	}

	// At most 10 lines: the testing package cuts a benchmark's log after that.
	var r strings.Builder
	fmt.Fprintf(&r, "%d logins (each its own user and upstream sid, offline_access, code redeemed); Redis %s\n",
		n, infoField(ctx, b, rdb, "server", "redis_version"))
	kinds := make([]string, 0, len(groups))
	for k := range groups {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		g := groups[k]
		fmt.Fprintf(&r, "%-28s %.2f keys/login, value %d bytes, MEMORY USAGE %d bytes/key, %d bytes/login\n",
			k+":", float64(g.keys)/float64(n), g.value/g.keys, g.bytes/g.keys, perLogin(g.bytes))
	}
	fmt.Fprintf(&r, "login transaction (tx), until the callback: MEMORY USAGE %d bytes\n", tx)
	fmt.Fprintf(&r, "records: %d bytes per login (MEMORY USAGE); used_memory grew %d bytes per login, %d without the event log\n",
		perLogin(records), perLogin(grown), perLogin(grown-logBytes))
	fmt.Fprintf(&r, "a session record holds the upstream ID token (%d bytes here) and the first and last User-Agent (%d bytes)\n", idToken, userAgent)
	fmt.Fprintf(&r, "event log: %.2f events per login, %d bytes per event in the sorted set (JSON member %d bytes on average); "+
		"tally hashes (one connection, successes only; per tally shard five minutes, six hours): %d minute groups, the largest %d bytes, %d hour groups, the largest %d bytes",
		float64(loginEvents)/float64(n), logBytes/max(loginEvents, 1), memberBytes/max(events, 1), tallyMinuteKeys, tallyMinute, tallyHourKeys, tallyHour)
	b.Log(r.String())

	b.ReportMetric(float64(grown)/float64(n), "used_memory-B/login")
	b.ReportMetric(float64(records)/float64(n), "records-B/login")
	b.ReportMetric(float64(logBytes)/float64(max(loginEvents, 1)), "B/event")
	b.ReportMetric(0, "ns/op") // how long a login takes is bench/run.sh's measure, not this one's
}

// footprintSizes returns MEMORY USAGE (every element counted) of every key of the private
// Redis (SCAN: the benchmark's own server).
func footprintSizes(ctx context.Context, b *testing.B, rdb *redis.Client) map[string]int64 {
	b.Helper()
	sizes := map[string]int64{}
	iter := rdb.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		size, err := rdb.MemoryUsage(ctx, k, 0).Result()
		if err != nil {
			b.Fatalf("MEMORY USAGE %s: %v", k, err)
		}
		sizes[k] = size
	}
	if err := iter.Err(); err != nil {
		b.Fatalf("SCAN: %v", err)
	}
	return sizes
}

// logEvents counts the events of the log sets among keys.
func logEvents(ctx context.Context, b *testing.B, rdb *redis.Client, keys map[string]int64) int64 {
	b.Helper()
	var n int64
	for k := range keys {
		if footprintKind(k) != "log" {
			continue
		}
		c, err := rdb.ZCard(ctx, k).Result()
		if err != nil {
			b.Fatalf("ZCARD %s: %v", k, err)
		}
		n += c
	}
	return n
}

// footprintKind names a key by its kind (sessions.Key: PREFIX:KIND:{TAG}REST) and, where
// one kind holds several records of a login, by the record.
func footprintKind(key string) string {
	_, rest, _ := strings.Cut(key, ":")
	kind, id, _ := strings.Cut(rest, ":")
	switch kind {
	case "log":
		return "log"
	case "tally":
		// PREFIX:tally:{TAG}:h:N holds six hours, PREFIX:tally:{TAG}:m:N five minutes, each
		// per tally shard (sessions/tally.go).
		if strings.Contains(id, "}:h:") {
			return "tally hour"
		}
		return "tally minute"
	case string(sessions.KindTransaction):
		return "login transaction (tx)"
	case string(sessions.KindSession):
		return "session (sess)"
	case string(sessions.KindIndex):
		return "session index (idx)"
	case string(sessions.KindCode):
		if strings.Contains(id, codeUseInfix) {
			return "redeemed-code marker (code)"
		}
		return "code (code)"
	case string(sessions.KindRefresh):
		if strings.HasSuffix(id, familySuffix) {
			return "refresh family (rt)"
		}
		return "refresh token (rt)"
	}
	return kind
}

// usedMemory reads INFO memory's used_memory.
func usedMemory(ctx context.Context, b *testing.B, rdb *redis.Client) int64 {
	b.Helper()
	n, err := strconv.ParseInt(infoField(ctx, b, rdb, "memory", "used_memory"), 10, 64)
	if err != nil {
		b.Fatalf("used_memory: %v", err)
	}
	return n
}

// infoField returns field of INFO section.
func infoField(ctx context.Context, b *testing.B, rdb *redis.Client, section, field string) string {
	b.Helper()
	info, err := rdb.Info(ctx, section).Result()
	if err != nil {
		b.Fatalf("INFO %s: %v", section, err)
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	b.Fatalf("INFO %s has no %s", section, field)
	return ""
}
