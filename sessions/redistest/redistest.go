package redistest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	// portAttempts bounds the starts of one server on fresh ports after redis-server found
	// its port taken (and of a Restart on its fixed port).
	portAttempts = 5
	// readyTimeout bounds the wait for a started redis-server to answer PING: a bound for
	// loaded machines, not an expectation (a server answers within milliseconds when idle).
	readyTimeout = 2 * time.Minute
)

// errPortTaken is a start that failed because redis-server could not bind its port.
var errPortTaken = errors.New("port already in use")

// Server is one redis-server process owned by a test.
type Server struct {
	Addr string // 127.0.0.1:PORT, stable across Restart

	t        testing.TB
	port     int
	dir      string
	args     []string    // extra redis-server arguments (cluster mode, TLS)
	tls      *tls.Config // readiness PING over TLS (StartTLS)
	conf     string      // configuration file given first (Sentinel)
	confText string      // its initial content, written before each start on a new port (Sentinel rewrites the file)
	auth     string      // password for the readiness PING (Sentinel requirepass)
	cluster  bool        // cluster mode: the bus port (port+10000) must be free too

	pickPort    func() (int, error) // chooses the port (tests); default freePort or clusterPort
	onPortTaken func()              // called before Restart tries its port again (tests)

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts a redis-server for t and returns its address. It is stopped at cleanup.
func Start(t testing.TB) (addr string) {
	t.Helper()
	return StartServer(t).Addr
}

// StartServer starts a redis-server on a free 127.0.0.1 port with no persistence and
// registers its shutdown with t.Cleanup. It fails the test, with redis-server's output, if
// redis-server is missing, exits, or does not answer PING within readyTimeout.
func StartServer(t testing.TB) *Server {
	t.Helper()
	return run(t, &Server{})
}

// run gives s a free 127.0.0.1 port (and a temporary directory when it has none), starts it
// and stops it at t's cleanup. When redis-server finds the port taken, it starts again on a
// new port (and in a new directory, when the directory is its own), up to portAttempts times.
func run(t testing.TB, s *Server) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server not found in PATH: install Debian package redis-server")
	}
	s.t = t
	t.Cleanup(s.Stop)
	ownDir := s.dir == ""
	for attempt := 1; ; attempt++ {
		pick := freePort
		switch {
		case s.pickPort != nil:
			pick = s.pickPort
		case s.cluster:
			pick = clusterPort
		}
		port, err := pick()
		if err != nil {
			t.Fatalf("redistest: free port: %v", err)
		}
		s.port, s.Addr = port, net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if ownDir {
			s.dir = t.TempDir()
		}
		if s.conf != "" {
			if err := os.WriteFile(s.conf, []byte(s.confText), 0o600); err != nil {
				t.Fatalf("redistest: write %s: %v", s.conf, err)
			}
		}
		err = s.launch()
		if err == nil {
			return s
		}
		if !errors.Is(err, errPortTaken) || attempt == portAttempts {
			t.Fatalf("redistest: %v (start %d of at most %d)", err, attempt, portAttempts)
		}
		what := fmt.Sprintf("port %d", port)
		if s.cluster {
			what = fmt.Sprintf("port %d or its cluster bus port %d", port, port+10000)
		}
		t.Logf("redistest: %s was taken before redis-server bound it; starting again on another port", what)
	}
}

// splitMaster returns the host and port of a master address.
func splitMaster(t testing.TB, master string) (host, port string) {
	t.Helper()
	host, port, err := net.SplitHostPort(master)
	if err != nil {
		t.Fatalf("redistest: master address %q: %v", master, err)
	}
	return host, port
}

// Stop kills the server and waits for it to exit; stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart stops the server if running and starts a fresh one (empty data) on the same port.
// Addr must not change, so when another process took the port meanwhile, Restart waits and
// tries again (portAttempts times) and then fails with redis-server's output.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	for attempt := 1; ; attempt++ {
		err := s.launch()
		if err == nil {
			return
		}
		if !errors.Is(err, errPortTaken) || attempt == portAttempts {
			s.t.Fatalf("redistest: restart: %v (start %d of at most %d)", err, attempt, portAttempts)
		}
		if s.onPortTaken != nil {
			s.onPortTaken()
		}
		time.Sleep(time.Duration(attempt) * time.Second)
	}
}

// launch starts redis-server on s.port and waits (bounded by readyTimeout) until it answers
// PING. A server that exits is an error carrying its output, wrapping errPortTaken when it
// could not bind its port.
func (s *Server) launch() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := &bytes.Buffer{} // read only after the process exited (Wait has copied everything)
	args := []string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--daemonize", "no", "--protected-mode", "yes"}
	if s.tls != nil {
		args[1] = "0" // plain TCP off: the port serves TLS only
		args = append(args, "--tls-port", strconv.Itoa(s.port))
	}
	if s.conf != "" {
		args = append([]string{s.conf}, args...)
	}
	cmd := exec.Command("redis-server", append(args, s.args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done

	deadline := time.Now().Add(readyTimeout)
	var pingErr error
	for {
		select {
		case <-done:
			s.cmd = nil
			if strings.Contains(out.String(), "Address already in use") {
				return fmt.Errorf("redis-server on port %d exited (%v): %w; its output:\n%s", s.port, waitErr, errPortTaken, out.String())
			}
			return fmt.Errorf("redis-server on port %d exited (%v); its output:\n%s", s.port, waitErr, out.String())
		default:
		}
		if pingErr = ping(s.Addr, s.tls, s.auth); pingErr == nil {
			return nil
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	<-done
	s.cmd = nil
	return fmt.Errorf("redis-server on %s did not answer PING within %v (last: %v); its output:\n%s", s.Addr, readyTimeout, pingErr, out.String())
}

// ping sends one inline PING (over TLS when tc is set; after AUTH when password is set) and
// expects +PONG.
func ping(addr string, tc *tls.Config, password string) error {
	d := &net.Dialer{Timeout: 250 * time.Millisecond}
	var c net.Conn
	var err error
	if tc != nil {
		c, err = tls.DialWithDialer(d, "tcp", addr, tc)
	} else {
		c, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	rd := bufio.NewReader(c)
	if password != "" {
		if _, err := fmt.Fprintf(c, "AUTH %s\r\n", password); err != nil {
			return err
		}
		if line, err := rd.ReadString('\n'); err != nil || line != "+OK\r\n" {
			return fmt.Errorf("AUTH: %q %v", line, err)
		}
	}
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := rd.ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("unexpected reply %q", line)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StartReplica starts a redis-server like StartServer that replicates master.
func StartReplica(t testing.TB, master string) *Server {
	t.Helper()
	host, port := splitMaster(t, master)
	return run(t, &Server{args: []string{"--replicaof", host, port}})
}

// StartSentinel starts a Redis Sentinel on a free 127.0.0.1 port that monitors master (an
// address from StartServer) under name, with password as its requirepass ("" = none), and
// fails over after one second without the master. It returns the Sentinel's address; it is
// stopped at cleanup.
func StartSentinel(t testing.TB, master, name, password string) string {
	t.Helper()
	host, port := splitMaster(t, master)
	dir := t.TempDir()
	conf := fmt.Sprintf("sentinel monitor %[1]s %[2]s %[3]s 1\nsentinel down-after-milliseconds %[1]s 1000\nsentinel failover-timeout %[1]s 5000\n",
		name, host, port)
	if password != "" {
		conf += "requirepass " + password + "\n"
	}
	path := filepath.Join(dir, "sentinel.conf")
	return run(t, &Server{dir: dir, conf: path, confText: conf, auth: password, args: []string{"--sentinel"}}).Addr
}
