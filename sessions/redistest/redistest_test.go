package redistest

import (
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// holdPort listens on a free loopback port until the test ends (or close is called) and
// returns the port: a port that some other process took.
func holdPort(t *testing.T) (port int, close func()) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l.Addr().(*net.TCPAddr).Port, func() { _ = l.Close() }
}

// takenFirst picks taken for the first n picks, then free ports.
func takenFirst(n int, taken int, next func() (int, error)) func() (int, error) {
	picks := 0
	return func() (int, error) {
		picks++
		if picks <= n {
			return taken, nil
		}
		return next()
	}
}

// TestStartMovesToAnotherPortWhenTaken: another process binds the chosen port before
// redis-server does; the server starts on another port instead of failing.
func TestStartMovesToAnotherPortWhenTaken(t *testing.T) {
	taken, _ := holdPort(t)
	s := run(t, &Server{pickPort: takenFirst(2, taken, freePort)})
	if s.port == taken || s.Addr != "127.0.0.1:"+strconv.Itoa(s.port) {
		t.Fatalf("server at %s (port %d), want a port other than the taken %d", s.Addr, s.port, taken)
	}
	if err := ping(s.Addr, nil, ""); err != nil {
		t.Fatalf("PING %s: %v", s.Addr, err)
	}
}

// TestClusterNodeMovesWhenBusPortTaken: a cluster node whose bus port (port+10000) is taken
// starts again on another port pair.
func TestClusterNodeMovesWhenBusPortTaken(t *testing.T) {
	var first int
	for {
		p, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		if p+10000 <= 65535 {
			first = p
			break
		}
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(first+10000)))
	if err != nil {
		t.Skipf("bus port %d not free for the test: %v", first+10000, err)
	}
	t.Cleanup(func() { _ = l.Close() })
	s := run(t, &Server{cluster: true, pickPort: takenFirst(1, first, clusterPort),
		args: []string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"}})
	if s.port == first {
		t.Fatalf("node started on %d although its bus port %d is taken", first, first+10000)
	}
}

// fatalRecorder is a testing.TB whose Fatal ends the calling goroutine and keeps the message.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (f *fatalRecorder) Fatal(args ...any) {
	f.msg = fmt.Sprint(args...)
	runtime.Goexit()
}

// TestStartGivesUpWithRedisOutput: when every chosen port is taken, the start fails after
// portAttempts tries, saying so and showing redis-server's own message.
func TestStartGivesUpWithRedisOutput(t *testing.T) {
	taken, _ := holdPort(t)
	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		run(rec, &Server{pickPort: takenFirst(portAttempts, taken, freePort)})
		rec.msg = "run returned"
	}()
	<-done
	for _, want := range []string{"port already in use", fmt.Sprintf("start %d of at most %d", portAttempts, portAttempts),
		"Could not create server TCP listening socket 127.0.0.1:" + strconv.Itoa(taken)} {
		if !strings.Contains(rec.msg, want) {
			t.Errorf("failure %q lacks %q", rec.msg, want)
		}
	}
}

// TestRestartWaitsForItsPort: Restart keeps the address; when another process holds the port
// at that moment, it tries again once the port is free.
func TestRestartWaitsForItsPort(t *testing.T) {
	s := StartServer(t)
	addr := s.Addr
	s.Stop()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port of the stopped server taken by someone else: %v", err)
	}
	released := false
	s.onPortTaken = func() { released = true; _ = l.Close() }
	s.Restart()
	if !released || s.Addr != addr {
		t.Fatalf("restart at %s (port released for a retry: %v), want %s after a retry", s.Addr, released, addr)
	}
	if err := ping(s.Addr, nil, ""); err != nil {
		t.Fatalf("PING after restart: %v", err)
	}
}
