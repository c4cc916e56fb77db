package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/sessions/redistest"
)

// The failover tests run logins without pause through two broker replicas (two Servers, each
// with its own store client, as two processes would) while a Redis node is SIGKILLed, and
// check what the issue of slow Cluster failovers asked for:
//   - logins succeed again on every replica soon after the promotion (failoverRecoveryBound,
//     generous: the broker re-reads the slot map within about a second);
//   - no answer of a replica is a 500 (an outage is a 503, or an OAuth error redirect
//     temporarily_unavailable);
//   - no login is left half-written: every authorization code in the store has its session
//     (the two are written in one atomic batch), and every session record decodes;
//   - /readyz of every replica answers 503 between the kill and the promotion and 200 after.
//
// The measured outage (kill → first success, promotion → first success) is logged.

const (
	// failoverRecoveryBound is how long after the promotion every replica must have served
	// a login: generous for a loaded machine (the broker re-reads the slot map on the first
	// failure after the promotion and every 5 s; the unfixed client took 30 to 60 s).
	failoverRecoveryBound = 20 * time.Second
	// failoverPromotionBound bounds the wait for Redis to promote a replica.
	failoverPromotionBound = 90 * time.Second
	// failoverLoginsPerWorker and failoverRunBound bound each login worker in count and time;
	// it runs until the test stops it, long after a slow promotion (warm-up, promotion,
	// recovery), whatever the machine's speed.
	failoverLoginsPerWorker = 1_000_000
	failoverRunBound        = 2*time.Minute + failoverPromotionBound + failoverRecoveryBound + time.Minute
	// failoverWorkers is the number of logins in flight (half on each replica).
	failoverWorkers = 4
)

// failoverRig is two broker replicas on one Redis deployment and the record of a run.
type failoverRig struct {
	t      *testing.T
	h      *harness
	bases  []string // each replica's base URL
	stores []sessions.Store

	start time.Time
	mu    sync.Mutex
	// per replica: completion times (since start) of logins that succeeded, and of those
	// that failed, with what they saw
	ok, failed [][]time.Duration
	failures   []string
	server5xx  []string // answers ≥ 500 other than 503
	ready      [][]readySample
}

type readySample struct {
	at     time.Duration
	status int
}

// newFailoverRig starts two brokers, each with its own client on the Redis at addrs
// (Sentinels when master is set, else Cluster nodes), the event log in that store too.
func newFailoverRig(t *testing.T, addrs []string, master string) *failoverRig {
	open := func() sessions.Store {
		st, err := sessions.NewRedis(sessions.RedisConfig{Addrs: addrs, MasterName: master})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	}
	st1, st2 := open(), open()
	h := newHarness(t, harnessOpts{up: dpopUp, store: st1, eventStore: st1, mutate: func(c *config.Config) {
		c.Store.Type = "redis" // settle for several writers, as serve configures it
		c.Store.Redis.Addrs, c.Store.Redis.MasterName = addrs, master
	}})
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	b2, err := New(h.cfg, Deps{Store: st2, Events: &logs.Writer{Logger: quiet, Store: st2, Now: h.clock.Now}, Logger: quiet,
		Now: h.clock.Now, Keys: testKeys(t, h.cfg.Keys.Signing.Alg)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b2.Close)
	srv2 := httptest.NewServer(b2.Handler())
	t.Cleanup(srv2.Close)
	return &failoverRig{t: t, h: h, bases: []string{h.srv.URL, srv2.URL}, stores: []sessions.Store{st1, st2},
		start: time.Now(), ok: make([][]time.Duration, 2), failed: make([][]time.Duration, 2), ready: make([][]readySample, 2)}
}

// since is the time since the rig started.
func (f *failoverRig) since() time.Duration { return time.Since(f.start) }

// pinned sends every request for the broker's issuer to replica i (a load balancer that
// keeps a client on one replica) and records every answer of a replica that is a 5xx other
// than 503.
type pinned struct {
	f    *failoverRig
	from string // the issuer's host
	to   *url.URL
}

func (p pinned) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host != p.from {
		return http.DefaultTransport.RoundTrip(r)
	}
	r2 := r.Clone(r.Context())
	r2.URL.Host = p.to.Host
	r2.Host = p.from
	resp, err := http.DefaultTransport.RoundTrip(r2)
	if err == nil && resp.StatusCode >= 500 && resp.StatusCode != http.StatusServiceUnavailable {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
		_ = resp.Body.Close()
		resp.Body = io.NopCloser(strings.NewReader(string(body)))
		p.f.mu.Lock()
		p.f.server5xx = append(p.f.server5xx, fmt.Sprintf("%s %s → %d %s", r.Method, r.URL.Path, resp.StatusCode, body))
		p.f.mu.Unlock()
	}
	return resp, err
}

// client returns a browser (cookie jar, redirects followed) pinned to replica i.
func (f *failoverRig) client(i int) *http.Client {
	to, _ := url.Parse(f.bases[i])
	from, _ := url.Parse(f.h.srv.URL)
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 30 * time.Second, Transport: pinned{f: f, from: from.Host, to: to}}
}

// login runs one whole login and code exchange on replica i; it returns "" on success, else
// what went wrong.
func (f *failoverRig) login(i int) string {
	c := f.client(i)
	resp, err := c.Get(f.h.authorizeURL(nil))
	if err != nil {
		return "authorize: " + err.Error()
	}
	_ = resp.Body.Close()
	q := resp.Request.URL.Query()
	if !strings.HasPrefix(resp.Request.URL.String(), f.h.app.URL+"/cb") || q.Get("code") == "" {
		if e := q.Get("error"); e != "" {
			if e == "server_error" {
				f.mu.Lock()
				f.server5xx = append(f.server5xx, "login redirect error=server_error: "+q.Get("error_description"))
				f.mu.Unlock()
			}
			return "login: app got error=" + e
		}
		return fmt.Sprintf("login: ended at %s with %d", resp.Request.URL.Path, resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodPost, f.h.srv.URL+"/oauth/token", strings.NewReader(f.h.codeForm(q.Get("code")).Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(appClient, appSecret)
	resp, err = c.Do(req)
	if err != nil {
		return "token: " + err.Error()
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != http.StatusOK || body["id_token"] == nil {
		return fmt.Sprintf("token: %d %v", resp.StatusCode, body["error"])
	}
	return ""
}

// run runs logins on both replicas and polls their /readyz until stop is closed (or the
// bounds are reached).
func (f *failoverRig) run(stop <-chan struct{}) (wait func()) {
	var wg sync.WaitGroup
	deadline := time.Now().Add(failoverRunBound)
	for w := range failoverWorkers {
		i := w % 2
		wg.Go(func() {
			for range failoverLoginsPerWorker {
				select {
				case <-stop:
					return
				default:
				}
				if time.Now().After(deadline) {
					return
				}
				problem := f.login(i)
				at := f.since()
				f.mu.Lock()
				if problem == "" {
					f.ok[i] = append(f.ok[i], at)
				} else {
					f.failed[i] = append(f.failed[i], at)
					if len(f.failures) < 200 {
						f.failures = append(f.failures, fmt.Sprintf("replica %d at %v: %s", i+1, at.Round(time.Millisecond), problem))
					}
				}
				f.mu.Unlock()
				if problem != "" {
					time.Sleep(50 * time.Millisecond) // a failing store answers at once: do not spin
				}
			}
		})
	}
	probe := &http.Client{Timeout: 5 * time.Second}
	for i := range 2 {
		wg.Go(func() {
			for range 3000 {
				select {
				case <-stop:
					return
				case <-time.After(200 * time.Millisecond):
				}
				if time.Now().After(deadline) {
					return
				}
				status := 0
				if resp, err := probe.Get(f.bases[i] + "/readyz"); err == nil {
					status = resp.StatusCode
					_ = resp.Body.Close()
				}
				f.mu.Lock()
				f.ready[i] = append(f.ready[i], readySample{at: f.since(), status: status})
				f.mu.Unlock()
			}
		})
	}
	return wg.Wait
}

// okCount returns how many logins succeeded on replica i so far.
func (f *failoverRig) okCount(i int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.ok[i])
}

// firstOKAfter returns the completion time of replica i's first successful login after t.
func (f *failoverRig) firstOKAfter(i int, t time.Duration) (time.Duration, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, at := range f.ok[i] {
		if at > t {
			return at, true
		}
	}
	return 0, false
}

// readyAfter reports when replica i's /readyz first answered want after t.
func (f *failoverRig) readyAfter(i int, t time.Duration, want int) (time.Duration, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.ready[i] {
		if s.at > t && s.status == want {
			return s.at, true
		}
	}
	return 0, false
}

// readyBetween returns the statuses replica i's /readyz answered between from and to.
func (f *failoverRig) readyBetween(i int, from, to time.Duration) []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []int
	for _, s := range f.ready[i] {
		if s.at > from && s.at < to {
			out = append(out, s.status)
		}
	}
	return out
}

// poll calls cond every 100 ms until it holds or bound passed.
func poll(bound time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(bound)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// warmUp waits until both replicas served a few logins.
func (f *failoverRig) warmUp() {
	f.t.Helper()
	if !poll(2*time.Minute, func() bool { return f.okCount(0) >= 5 && f.okCount(1) >= 5 }) {
		f.t.Fatalf("warm-up: %d and %d logins succeeded within 2 min; failures: %v", f.okCount(0), f.okCount(1), f.failureList())
	}
}

func (f *failoverRig) failureList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.failures...)
}

// outage runs the part common to the master-kill tests: kill at killAt (since start),
// promoted at promotedAt. It waits for every replica to serve a login and to answer /readyz
// 200 after the promotion, logs the measured outage and checks readiness during it.
func (f *failoverRig) afterPromotion(killAt, promotedAt time.Duration) {
	f.t.Helper()
	for i := range 2 {
		recovered := poll(failoverRecoveryBound, func() bool {
			_, ok := f.firstOKAfter(i, promotedAt)
			_, ready := f.readyAfter(i, promotedAt, http.StatusOK)
			return ok && ready
		})
		first, _ := f.firstOKAfter(i, promotedAt)
		if !recovered {
			f.t.Errorf("replica %d: no login succeeded and /readyz 200 within %v of the promotion (first success at %v after the promotion); failures: %v",
				i+1, failoverRecoveryBound, first-promotedAt, f.failureList())
			continue
		}
		f.t.Logf("replica %d: first login success %v after the kill, %v after the promotion",
			i+1, (first - killAt).Round(10*time.Millisecond), (first - promotedAt).Round(10*time.Millisecond))
		// The outage lasts from the kill until /readyz answers 200 again after the promotion,
		// at least the promotion's wait (seconds): /readyz was polled five times a second
		// meanwhile, and must have told it at least once.
		readyAgain, _ := f.readyAfter(i, promotedAt, http.StatusOK)
		if got := f.readyBetween(i, killAt, readyAgain); !containsInt(got, http.StatusServiceUnavailable) {
			f.t.Errorf("replica %d: /readyz answered %v between the kill and its first 200 after the promotion, want a 503", i+1, got)
		}
	}
}

func containsInt(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// begin runs logins until stop is closed (finish closes it; so does the test's end, if it
// fails first) and returns once the warm-up succeeded.
func (f *failoverRig) begin() (stop chan struct{}, wait func()) {
	stop = make(chan struct{})
	wait = f.run(stop)
	f.t.Cleanup(func() {
		select {
		case <-stop:
		default:
			close(stop)
			wait()
		}
	})
	f.warmUp()
	return stop, wait
}

// finish stops the run, then checks that no answer was a 500 and that the store holds no
// half-written login.
func (f *failoverRig) finish(stop chan struct{}, wait func(), scan func(ctx context.Context, pattern string, each func(key string, val []byte)) error) {
	f.t.Helper()
	close(stop)
	wait()
	f.mu.Lock()
	f.t.Logf("logins: replica 1 %d ok %d failed, replica 2 %d ok %d failed", len(f.ok[0]), len(f.failed[0]), len(f.ok[1]), len(f.failed[1]))
	if len(f.server5xx) > 0 {
		f.t.Errorf("%d answers were a server error other than 503: %v", len(f.server5xx), f.server5xx)
	}
	f.mu.Unlock()
	f.checkNoHalfWrittenLogin(scan)
}

// checkNoHalfWrittenLogin: every authorization code not yet redeemed has its session in the
// store (a login writes the session and its code in one atomic batch under one hash tag, so a
// code without its session is a login written in part), and every session record decodes.
func (f *failoverRig) checkNoHalfWrittenLogin(scan func(ctx context.Context, pattern string, each func(key string, val []byte)) error) {
	f.t.Helper()
	ctx := f.t.Context()
	sessions := map[string]bool{}
	prefix := "dpop-broker"
	err := scan(ctx, prefix+":sess:*", func(key string, val []byte) {
		var rec sessionRecord
		if err := json.Unmarshal(val, &rec); err != nil || rec.UserID == "" {
			f.t.Errorf("session record %s does not decode (%v): %q", key, err, val)
		}
		sessions[tagOf(key)] = true
	})
	if err != nil {
		f.t.Fatalf("scan sessions: %v", err)
	}
	// Sessions the broker ended on purpose, each with an slo event: the user (one user signs
	// in throughout) has at most maxUserSessions, and a login beyond them ends the oldest,
	// whose code not yet redeemed stays behind (refused at the token endpoint, as the session
	// is gone) until it expires.
	ended := map[string]bool{}
	evs, err := f.stores[0].Logs(ctx, "", 1_000_000)
	if err != nil {
		f.t.Fatalf("read the event log: %v", err)
	}
	for _, raw := range evs {
		var ev logs.Event
		if json.Unmarshal(raw, &ev) == nil && ev.Type == logs.TypeSuccessLogout {
			if sid, _ := ev.Details["session_id"].(string); sid != "" {
				ended[sid] = true
			}
		}
	}
	codes := 0
	err = scan(ctx, prefix+":code:*", func(key string, _ []byte) {
		if strings.Contains(key, codeUseInfix) {
			return // the mark of a redeemed code (codereuse.go), not a code
		}
		codes++
		_, id, _ := strings.Cut(key, ":code:")
		id = strings.Replace(strings.Replace(id, "{", "", 1), "}", "", 1) // back to TAG.REST
		if sid := codeSessionHint(id); !sessions[sid] && !ended[sid] {
			f.t.Errorf("code %s has no session %s, and no slo event ended it: a login written in part", key, sid)
		}
	})
	if err != nil {
		f.t.Fatalf("scan codes: %v", err)
	}
	if len(sessions) == 0 {
		f.t.Errorf("no session in the store after the run")
	}
	f.t.Logf("store after the run: %d sessions, %d codes not redeemed, %d sessions ended (slo), %d events", len(sessions), codes, len(ended), len(evs))
}

// tagOf returns the hash tag of a record key (PREFIX:KIND:{TAG}REST).
func tagOf(key string) string {
	i, j := strings.IndexByte(key, '{'), strings.IndexByte(key, '}')
	if i < 0 || j < i {
		return ""
	}
	return key[i+1 : j]
}

// scanWith scans every key matching pattern on c (every master of a cluster).
func scanWith(c redis.UniversalClient) func(ctx context.Context, pattern string, each func(key string, val []byte)) error {
	return func(ctx context.Context, pattern string, each func(string, []byte)) error {
		one := func(ctx context.Context, n *redis.Client) error {
			var cursor uint64
			for range 10000 {
				keys, next, err := n.Scan(ctx, cursor, pattern, 500).Result()
				if err != nil {
					return err
				}
				for _, k := range keys {
					v, err := n.Get(ctx, k).Bytes()
					if err == redis.Nil {
						continue // expired meanwhile
					}
					if err != nil {
						return err
					}
					each(k, v)
				}
				if cursor = next; cursor == 0 {
					return nil
				}
			}
			return fmt.Errorf("scan %s: more than 10000 pages", pattern)
		}
		if cc, ok := c.(*redis.ClusterClient); ok {
			var mu sync.Mutex
			return cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
				mu.Lock() // each is not safe for concurrent use
				defer mu.Unlock()
				return one(ctx, n)
			})
		}
		return one(ctx, c.(*redis.Client))
	}
}

// TestLoginsRecoverSoonAfterClusterMasterFailover: on a Redis Cluster of 3 masters and 3
// replicas, the master that serves the {conn} slot is SIGKILLed while two replicas run
// logins. Logins no longer read the connections there (the registry's watch subscribes on
// another master), but that master holds a third of the slots of every login's records
// (transactions, sessions, codes), so most logins fail until its replica is promoted: the
// case measured in production. Logins succeed again on both replicas soon after the promotion,
// no answer is a 500, no login is half-written and /readyz tells the outage.
func TestLoginsRecoverSoonAfterClusterMasterFailover(t *testing.T) {
	cl := redistest.StartClusterWithReplicas(t)
	f := newFailoverRig(t, cl.Addrs, "")
	stop, wait := f.begin()

	ctx := t.Context()
	verKey := "dpop-broker:conn:{conn}:ver"
	victim, err := cl.MasterOf(ctx, verKey, "")
	if err != nil {
		t.Fatal(err)
	}
	killAt := f.since()
	cl.Kill(victim)
	var promoted string
	if !poll(failoverPromotionBound, func() bool {
		m, err := cl.MasterOf(ctx, verKey, victim)
		promoted = m
		return err == nil && m != victim
	}) {
		t.Fatalf("no replica of %s was promoted within %v", victim, failoverPromotionBound)
	}
	promotedAt := f.since()
	t.Logf("killed master %s (serves {conn}); %s promoted %v after the kill (cluster-node-timeout %v)",
		victim, promoted, (promotedAt - killAt).Round(10*time.Millisecond), redistest.FailoverNodeTimeout)
	f.afterPromotion(killAt, promotedAt)

	raw := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{promoted}})
	t.Cleanup(func() { _ = raw.Close() })
	f.finish(stop, wait, scanWith(raw))
}

// TestLoginsRecoverAfterSentinelFailover: the same on a master, its replica and a Sentinel:
// the master is SIGKILLed, the Sentinel promotes the replica, and go-redis's failover client
// follows.
func TestLoginsRecoverAfterSentinelFailover(t *testing.T) {
	master := redistest.StartServer(t)
	replica := redistest.StartReplica(t, master.Addr)
	redistest.WaitInSync(t, replica.Addr) // else the promoted replica is empty
	sentinel := redistest.StartSentinel(t, master.Addr, "mymaster", "")
	f := newFailoverRig(t, []string{sentinel}, "mymaster")
	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinel})
	t.Cleanup(func() { _ = sc.Close() })
	stop, wait := f.begin()

	ctx := t.Context()
	killAt := f.since()
	master.Stop() // SIGKILL
	if !poll(failoverPromotionBound, func() bool {
		a, err := sc.GetMasterAddrByName(ctx, "mymaster").Result()
		return err == nil && len(a) == 2 && a[0]+":"+a[1] == replica.Addr
	}) {
		t.Fatalf("the Sentinel did not promote %s within %v", replica.Addr, failoverPromotionBound)
	}
	promotedAt := f.since()
	t.Logf("killed master %s; Sentinel promoted %s %v after the kill", master.Addr, replica.Addr, (promotedAt - killAt).Round(10*time.Millisecond))
	f.afterPromotion(killAt, promotedAt)

	raw := redis.NewClient(&redis.Options{Addr: replica.Addr})
	t.Cleanup(func() { _ = raw.Close() })
	f.finish(stop, wait, scanWith(raw))
}

// TestLoginsUnaffectedByClusterReplicaKill: SIGKILLing a replica (of the {conn} master)
// changes nothing for logins: every login succeeds and /readyz stays 200.
func TestLoginsUnaffectedByClusterReplicaKill(t *testing.T) {
	cl := redistest.StartClusterWithReplicas(t)
	f := newFailoverRig(t, cl.Addrs, "")
	stop, wait := f.begin()

	ctx := t.Context()
	replicas := cl.Replicas(ctx)
	if len(replicas) != 3 {
		t.Fatalf("replicas %v, want 3", replicas)
	}
	victim := replicas[0]
	killAt := f.since()
	cl.Kill(victim)
	var before [2]int
	for i := range 2 {
		before[i] = f.okCount(i)
	}
	// Run on for at least the cluster's failure detection (the replica is marked failed
	// after cluster-node-timeout) and a few logins on each replica.
	var settled atomic.Bool
	poll(failoverPromotionBound, func() bool {
		done := f.since() > killAt+2*redistest.FailoverNodeTimeout && f.okCount(0) >= before[0]+5 && f.okCount(1) >= before[1]+5
		settled.Store(done)
		return done
	})
	if !settled.Load() {
		t.Errorf("after killing replica %s: %d and %d more logins within %v", victim, f.okCount(0)-before[0], f.okCount(1)-before[1], failoverPromotionBound)
	}
	t.Logf("killed replica %s at %v", victim, killAt.Round(10*time.Millisecond))
	if fl := f.failureList(); len(fl) > 0 {
		t.Errorf("%d logins failed with a replica down: %v", len(fl), fl)
	}
	for i := range 2 {
		if got := f.readyBetween(i, killAt, f.since()); containsInt(got, http.StatusServiceUnavailable) || len(got) == 0 {
			t.Errorf("replica %d: /readyz answered %v with a Redis replica down, want only 200", i+1, got)
		}
	}
	masters, err := cl.Masters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	raw := redis.NewClusterClient(&redis.ClusterOptions{Addrs: masters})
	t.Cleanup(func() { _ = raw.Close() })
	f.finish(stop, wait, scanWith(raw))
}
