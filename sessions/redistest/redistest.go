// Package redistest starts a private, throw-away redis-server on a free loopback port for
// tests; it never touches a shared Redis.
package redistest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Server is one redis-server process owned by a test.
type Server struct {
	Addr string // 127.0.0.1:PORT, stable across Restart

	t    testing.TB
	port int
	dir  string
	args []string    // extra redis-server arguments (cluster mode, TLS)
	tls  *tls.Config // readiness PING over TLS (StartTLS)
	conf string      // configuration file given first (Sentinel)
	auth string      // password for the readiness PING (Sentinel requirepass)

	mu   sync.Mutex
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done chan struct{}
}

// Start starts a redis-server for t and returns its address. It is stopped at cleanup.
func Start(t testing.TB) (addr string) {
	t.Helper()
	return StartServer(t).Addr
}

// StartServer starts a redis-server on a free 127.0.0.1 port with no persistence and
// registers its shutdown with t.Cleanup. It fails the test if redis-server is missing or does
// not answer PING within 10s.
func StartServer(t testing.TB) *Server {
	t.Helper()
	return run(t, &Server{})
}

// run gives s a free 127.0.0.1 port (and a temporary directory when it has none), starts it
// and stops it at t's cleanup.
func run(t testing.TB, s *Server) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server not found in PATH: install Debian package redis-server")
	}
	port, err := freePort()
	if err != nil {
		t.Fatalf("redistest: free port: %v", err)
	}
	s.t, s.port, s.Addr = t, port, net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if s.dir == "" {
		s.dir = t.TempDir()
	}
	t.Cleanup(s.Stop)
	s.start()
	return s
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
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

func (s *Server) start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := &bytes.Buffer{}
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
		s.t.Fatalf("redistest: start redis-server: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.out, s.done = cmd, out, done

	deadline := time.Now().Add(10 * time.Second)
	for attempt := 0; attempt < 400; attempt++ {
		select {
		case <-done:
			s.cmd = nil
			s.t.Fatalf("redistest: redis-server on port %d exited early:\n%s", s.port, out.String())
		default:
		}
		if ping(s.Addr, s.tls, s.auth) == nil {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	<-done
	s.cmd = nil
	s.t.Fatalf("redistest: redis-server on %s did not answer PING in time:\n%s", s.Addr, out.String())
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
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return run(t, &Server{dir: dir, conf: path, auth: password, args: []string{"--sentinel"}}).Addr
}
