package sessions

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dpop-broker/dpop-broker/logs/logtest"
	"github.com/dpop-broker/dpop-broker/sessions/redistest"
)

// lineLog is a slog JSON log in memory that tests read line by line.
type lineLog struct{ logtest.Buffer }

func (l *lineLog) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// lines returns the decoded lines whose msg is msg.
func (l *lineLog) lines(t *testing.T, msg string) []map[string]any { return l.Lines(t, msg) }

// A Redis outage is two lines however many commands fail: "store unavailable" (with the
// failure's class and address, at the first failed command) and "store recovered" (with the
// number of failed commands) once Redis answers again; nothing while it stays down.
func TestRedisOutageIsLoggedOnceWhenItBeginsAndOnceWhenItEnds(t *testing.T) {
	srv := redistest.StartServer(t)
	var log lineLog
	st, err := NewRedis(RedisConfig{Addrs: []string{srv.Addr}, Logger: log.logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	ctx := context.Background()
	if err := st.Put(ctx, KindSession, "s1", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	const attempts = 20
	for i := range attempts {
		if _, err := st.Get(ctx, KindSession, fmt.Sprint("s", i)); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Get with Redis stopped: %v, want ErrUnavailable", err)
		}
	}
	down := log.lines(t, "store unavailable")
	if len(down) != 1 {
		t.Fatalf("%d store unavailable lines after %d failed commands, want 1:\n%s", len(down), attempts, log.String())
	}
	// Killed, Redis refuses new connections; a pooled one it left dead is connection_lost
	// (which need not name the address).
	if c := down[0]["class"]; down[0]["level"] != "ERROR" || (c != "connection_refused" && c != "connection_lost") ||
		(c == "connection_refused" && down[0]["addr"] != srv.Addr) || down[0]["command"] == "" {
		t.Errorf("store unavailable line = %v, want level ERROR, class connection_refused (addr %s) or connection_lost, a command", down[0], srv.Addr)
	}
	if n := len(log.lines(t, "store recovered")); n != 0 {
		t.Fatalf("%d store recovered lines while Redis is down:\n%s", n, log.String())
	}

	srv.Restart()
	// Commands succeed again once go-redis's pool dials again (it retries a failing dial in
	// the background, about once a second); the recovery is declared once they kept
	// succeeding for recoverySettle. A generous bound: only the machine's load delays it.
	failed := attempts
	for deadline := time.Now().Add(2 * time.Minute); len(log.lines(t, "store recovered")) == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("no store recovered line within 2 minutes of the restart:\n%s", log.String())
		}
		if err := st.Ping(ctx); err != nil {
			failed++
		}
		time.Sleep(50 * time.Millisecond)
	}
	up := log.lines(t, "store recovered")
	if len(up) != 1 {
		t.Fatalf("%d store recovered lines, want 1:\n%s", len(up), log.String())
	}
	// Each Get and Ping is one command: the outage counts every one that failed (go-redis's
	// second dial attempt is not a second command).
	if n, _ := up[0]["failed_commands"].(float64); n != float64(failed) {
		t.Errorf("store recovered failed_commands = %v, want %d:\n%s", up[0]["failed_commands"], failed, log.String())
	}
	if s, ok := up[0]["outage_seconds"].(float64); !ok || s < 0 {
		t.Errorf("store recovered outage_seconds = %v, want a duration in seconds", up[0]["outage_seconds"])
	}
	if n := len(log.lines(t, "store unavailable")); n != 1 {
		t.Errorf("%d store unavailable lines in all, want 1:\n%s", n, log.String())
	}
}

// An answer during an outage that is followed by another failure before recoverySettle ends
// does not end the outage: a partial outage (one Cluster master down) is one outage, not a
// pair of lines per request.
func TestRedisOutageWithAnswersBetweenFailuresStaysOneOutage(t *testing.T) {
	var log lineLog
	h := newRedisHealth(log.logger())
	h.settle = time.Hour // no recovery is declared in this test
	t.Cleanup(h.close)
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	for range 50 {
		h.observe(refused, redis.NewStringCmd(t.Context(), "get", "k"))
		h.observe(nil, redis.NewStringCmd(t.Context(), "get", "k"))
		h.observe(redis.Nil, nil)
	}
	if n := len(log.lines(t, "store unavailable")); n != 1 {
		t.Errorf("%d store unavailable lines, want 1:\n%s", n, log.String())
	}
	if n := len(log.lines(t, "store recovered")); n != 0 {
		t.Errorf("%d store recovered lines, want 0:\n%s", n, log.String())
	}
	h.mu.Lock()
	failed := h.failed
	h.mu.Unlock()
	if failed != 50 {
		t.Errorf("failed commands = %d, want 50", failed)
	}
}

// outageClass tells Redis's answers (no outage), what counts neither way (the caller gave up,
// the client is closed) and the failures apart, and names the class of a failure without
// echoing its text.
func TestOutageClassNamesTheFailureNotItsText(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		class  string
		outage bool
	}{
		{name: "success", err: nil},
		{name: "missing key is an answer", err: redis.Nil},
		{name: "wrong type is an answer", err: redisError("WRONGTYPE Operation against a key holding the wrong kind of value")},
		{name: "script not loaded is an answer", err: redisError("NOSCRIPT No matching script")},
		{name: "out of memory is an answer (a full store)", err: redisError("OOM command not allowed when used memory > 'maxmemory'.")},
		{name: "caller gave up", err: context.Canceled, class: "ignored"},
		{name: "client closed", err: redis.ErrClosed, class: "ignored"},
		{name: "connection refused", err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, class: "connection_refused", outage: true},
		{name: "connection reset", err: &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, class: "connection_lost", outage: true},
		{name: "closed by the server", err: io.EOF, class: "connection_lost", outage: true},
		{name: "deadline", err: context.DeadlineExceeded, class: "timeout", outage: true},
		{name: "pool timeout", err: redis.ErrPoolTimeout, class: "pool_timeout", outage: true},
		{name: "unknown host", err: &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "redis.internal"}}, class: "dns", outage: true},
		{name: "loading", err: redisError("LOADING Redis is loading the dataset in memory"), class: "loading", outage: true},
		{name: "cluster down", err: redisError("CLUSTERDOWN The cluster is down"), class: "cluster_down", outage: true},
		{name: "replica", err: redisError("READONLY You can't write against a read only replica."), class: "readonly", outage: true},
		{name: "wrong password", err: redisError("WRONGPASS invalid username-password pair or user is disabled."), class: "auth", outage: true},
		{name: "permission", err: redisError("NOPERM this user has no permissions to run the 'get' command"), class: "no_permission", outage: true},
		{name: "busy script", err: redisError("BUSY Redis is busy running a script."), class: "busy", outage: true},
		{name: "slot moving", err: redisError("MOVED 3999 127.0.0.1:6381"), class: "slot_moving", outage: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			class, outage := outageClass(tt.err)
			if class != tt.class || outage != tt.outage {
				t.Errorf("outageClass(%v) = %q, %v; want %q, %v", tt.err, class, outage, tt.class, tt.outage)
			}
		})
	}
}

// redisError is a reply error of the server, as go-redis returns it.
type redisError string

func (e redisError) Error() string { return string(e) }
func (redisError) RedisError()     {}

// go-redis's messages about failing to reach a server are DEBUG (the outage lines report
// them once); its other messages stay warnings.
func TestRedisClientMessagesAboutUnreachableServersAreDebug(t *testing.T) {
	tests := []struct {
		name string
		msg  string
		want string
	}{
		{name: "dial", msg: "redis: connection pool: failed to dial after 2 attempts: dial tcp 127.0.0.1:1: connect: connection refused", want: "DEBUG"},
		{name: "cluster nodes", msg: "redis: all nodes are marked as failed, picking the temporarily failing node with lowest latency", want: "DEBUG"},
		{name: "sentinel query", msg: `sentinel: GetMasterAddrByName name="mymaster" failed: dial tcp: connection refused`, want: "DEBUG"},
		{name: "new master", msg: `sentinel: new master="mymaster" addr="10.0.0.2:6379"`, want: "WARN"},
		{name: "slots migrated", msg: "cluster: slots [[0 100]] migrated to 10.0.0.3:6379, reloading cluster state", want: "WARN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log lineLog
			redisLogger{log.logger()}.Printf(context.Background(), "%s", tt.msg)
			got := log.lines(t, "redis client")
			if len(got) != 1 || got[0]["level"] != tt.want || got[0]["message"] != tt.msg {
				t.Errorf("lines = %v, want one %s line with the message", got, tt.want)
			}
		})
	}
}

// An outage whose recovery was interrupted by a failure ends once Redis has answered for
// settle since its last failure: one line each way, counting every failure.
func TestRedisOutageRecoveryAfterAnInterruptedRecovery(t *testing.T) {
	var log lineLog
	h := newRedisHealth(log.logger())
	// An hour while the calls run: however slowly the machine runs them, the first recovery
	// cannot be declared before the failure that interrupts it (the test asserts on no speed).
	h.settle = time.Hour
	t.Cleanup(h.close)
	get := redis.NewStringCmd(t.Context(), "get", "k")
	timeout := &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	h.observe(timeout, get)
	h.observe(nil, get)     // the recovery begins
	h.observe(timeout, get) // and is interrupted
	h.observe(nil, get)     // begins again
	// Then the settle time has passed: the pending timer fires at once.
	h.mu.Lock()
	h.settle = 0
	h.timer.Reset(0)
	h.mu.Unlock()
	for deadline := time.Now().Add(time.Minute); len(log.lines(t, "store recovered")) == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("no store recovered line within a minute:\n%s", log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	down, up := log.lines(t, "store unavailable"), log.lines(t, "store recovered")
	if len(down) != 1 || down[0]["class"] != "timeout" || down[0]["command"] != "get" {
		t.Errorf("store unavailable lines = %v, want one, class timeout, command get", down)
	}
	if len(up) != 1 || up[0]["failed_commands"] != float64(2) {
		t.Errorf("store recovered lines = %v, want one with failed_commands 2", up)
	}
}
