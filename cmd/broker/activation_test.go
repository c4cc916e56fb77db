package main

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/logs/logtest"
)

// childMainEnv makes the test binary run the broker's main() instead of the tests, so a test
// can start `broker serve` as a child process (with an inherited socket) without building it.
const childMainEnv = "DPOP_BROKER_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(childMainEnv) == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// fakeEnv is an environment for inheritedListener.
type fakeEnv map[string]string

func (e fakeEnv) activation(pid int, file func(uintptr, string) *os.File) activation {
	return activation{
		getenv:   func(k string) string { return e[k] },
		unsetenv: func(k string) error { delete(e, k); return nil },
		pid:      pid,
		file:     file,
	}
}

// tcpListenerFile is a listening loopback socket as a file (what a supervisor passes as fd 3)
// and its address.
func tcpListenerFile(t *testing.T) (*os.File, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f, ln.Addr().String()
}

// TestSocketActivationRules: LISTEN_FDS/LISTEN_PID are honoured only when meant for this
// process, malformed or unsupported values fail instead of falling back to `listen`, and the
// variables are removed once taken.
func TestSocketActivationRules(t *testing.T) {
	const pid = 4242
	regular, err := os.CreateTemp(t.TempDir(), "not-a-socket")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = regular.Close() })
	for _, tc := range []struct {
		name        string
		env         fakeEnv
		fd          *os.File // what descriptor 3 is; nil = the test's listening socket
		wantErr     string
		wantIgnored string
		wantSocket  bool
		wantEnvLeft bool // the variables stay (not meant for this process)
	}{
		{name: "no variables: listen as configured", env: fakeEnv{}},
		{name: "LISTEN_FDS without LISTEN_PID: not for this process", env: fakeEnv{envListenFDs: "1"},
			wantIgnored: "LISTEN_FDS is set without LISTEN_PID", wantEnvLeft: true},
		{name: "another process's LISTEN_PID: not for this process", env: fakeEnv{envListenFDs: "1", envListenPID: "7"},
			wantIgnored: "LISTEN_PID=7 is another process (this is 4242)", wantEnvLeft: true},
		{name: "LISTEN_PID not a number", env: fakeEnv{envListenFDs: "1", envListenPID: "me"},
			wantErr: `LISTEN_PID="me" is not a process id`, wantEnvLeft: true},
		{name: "LISTEN_FDS not a number", env: fakeEnv{envListenFDs: "one", envListenPID: "4242"},
			wantErr: `LISTEN_FDS="one" is not a number of file descriptors`},
		{name: "two sockets: the broker serves exactly one", env: fakeEnv{envListenFDs: "2", envListenPID: "4242", envListenFDNames: "a:b"},
			wantErr: "LISTEN_FDS=2, but broker serve serves exactly one socket"},
		{name: "zero sockets: listen as configured", env: fakeEnv{envListenFDs: "0", envListenPID: "4242"}},
		{name: "descriptor 3 is a regular file", env: fakeEnv{envListenFDs: "1", envListenPID: "4242"}, fd: regular,
			wantErr: "file descriptor 3 is not a listening stream socket"},
		{name: "one listening socket for this process", env: fakeEnv{envListenFDs: "1", envListenPID: "4242", envListenFDNames: "http"},
			wantSocket: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock, addr := tcpListenerFile(t)
			fd := sock
			if tc.fd != nil {
				fd = tc.fd
			}
			before := len(tc.env)
			var asked []uintptr
			ln, ignored, err := inheritedListener(tc.env.activation(pid, func(n uintptr, name string) *os.File {
				asked = append(asked, n)
				return fd
			}))
			if ln != nil {
				defer ln.Close()
			}
			switch {
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			case tc.wantErr == "" && err != nil:
				t.Fatalf("err = %v", err)
			case ignored != tc.wantIgnored:
				t.Fatalf("ignored = %q, want %q", ignored, tc.wantIgnored)
			case (ln != nil) != tc.wantSocket:
				t.Fatalf("listener = %v, want one: %v", ln, tc.wantSocket)
			}
			if left := len(tc.env); tc.wantEnvLeft && left != before || !tc.wantEnvLeft && left != 0 {
				t.Errorf("environment after: %v (had %d variables), want them kept: %v", tc.env, before, tc.wantEnvLeft)
			}
			if len(asked) > 0 && (len(asked) != 1 || asked[0] != listenFDsStart) {
				t.Errorf("descriptors opened: %v, want only 3", asked)
			}
			if !tc.wantSocket {
				return
			}
			if ln.Addr().String() != addr {
				t.Errorf("listener address %s, want the inherited socket's %s", ln.Addr(), addr)
			}
			go func() {
				if c, err := ln.Accept(); err == nil {
					_, _ = c.Write([]byte("hello"))
					_ = c.Close()
				}
			}()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got, err := io.ReadAll(c); err != nil || string(got) != "hello" {
				t.Fatalf("read through the inherited socket: %q %v", got, err)
			}
		})
	}
}

// TestServeOnInheritedSocket: `broker serve` started the way systemd (or a test harness) starts
// it, with a listening socket as descriptor 3, serves on that socket, ignores `listen` (whose
// address is taken, so binding it would fail) and logs that it does. On SIGTERM it closes the
// socket and exits 0.
func TestServeOnInheritedSocket(t *testing.T) {
	sock, addr := tcpListenerFile(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()

	dir := t.TempDir()
	pem := testKeyPEM(t, "RS256")
	keyFile := filepath.Join(dir, "signing.pem")
	cfgFile := filepath.Join(dir, "broker.yaml")
	if err := os.WriteFile(keyFile, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgFile, []byte(fmt.Sprintf(`
issuer: "http://%s/"
listen: %q
store: { type: memory }
keys: { signing: { private_key_file: %q } }
clients:
  - { client_id: a, client_secret: s, redirect_uris: ["http://127.0.0.1:8082/callback"], connections: [c] }
connections:
  - { name: c, strategy: oidc, options: { issuer: "https://idp.example.com", client_id: b, client_secret: s } }
`, addr, taken.Addr().String(), keyFile)), 0o600); err != nil {
		t.Fatal(err)
	}

	// LISTEN_PID must be the child's own id, known only after the fork: a shell sets it and
	// execs the broker (here: this test binary running main()) in its place.
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, os.Args[0], "serve", "--config", cfgFile)
	cmd.Env = append(os.Environ(), childMainEnv+"=1", envListenFDs+"=1")
	cmd.ExtraFiles = []*os.File{sock}
	out, exited := startChild(t, cmd)
	_ = sock.Close() // the child owns the socket now

	hc := &http.Client{Timeout: time.Minute}
	var resp *http.Response
	done := make(chan error, 1)
	go func() {
		var err error
		resp, err = hc.Get("http://" + addr + "/healthz") // queued on the socket until the broker serves
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("GET /healthz on the inherited socket: %v\n%s", err, out.String())
		}
	case err := <-exited:
		t.Fatalf("broker serve exited before answering: %v\n%s", err, out.String())
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz on the inherited socket: %d\n%s", resp.StatusCode, out.String())
	}
	stopChild(t, cmd, out, exited)
	// The output is complete once the process has exited (Wait copied all of it).
	logged := out.String()
	if !strings.Contains(logged, `"msg":"socket activation: serving on the inherited socket; listen is ignored"`) ||
		!strings.Contains(logged, `"addr":"`+addr+`"`) || !strings.Contains(logged, `"listen":"`+taken.Addr().String()+`"`) ||
		!strings.Contains(logged, `"listen_from":"socket activation"`) {
		t.Errorf("no log line saying the inherited socket is used and listen ignored:\n%s", logged)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Error("the inherited socket still accepts connections after the broker exited")
	}
}

// TestListenWithoutActivation: without the variables, `broker serve` binds the configured
// address itself.
func TestListenWithoutActivation(t *testing.T) {
	var logged bytes.Buffer
	ln, inherited, err := openListener("127.0.0.1:0", fakeEnv{}.activation(1, func(uintptr, string) *os.File {
		t.Fatal("descriptor 3 opened without socket activation")
		return nil
	}), slog.New(slog.NewJSONHandler(&logged, nil)))
	if err != nil || inherited {
		t.Fatalf("listener: inherited %v, err %v", inherited, err)
	}
	defer ln.Close()
	if !strings.HasPrefix(ln.Addr().String(), "127.0.0.1:") || logged.Len() != 0 {
		t.Fatalf("listener %s, log %q", ln.Addr(), logged.String())
	}
}

// startChild starts cmd (a broker serve: this test binary running main()) with its output
// collected; the child is killed at the end of the test if it still runs.
func startChild(t *testing.T, cmd *exec.Cmd) (*logtest.Buffer, <-chan error) {
	t.Helper()
	out := &logtest.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-exited:
		default:
		}
	})
	return out, exited
}

// stopChild sends SIGTERM and waits (bounded) for exit status 0.
func stopChild(t *testing.T, cmd *exec.Cmd, out *logtest.Buffer, exited <-chan error) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("broker serve after SIGTERM: %v, want exit 0\n%s", err, out.String())
		}
	case <-time.After(2 * time.Minute): // a bound only: shutdown is immediate when idle
		t.Fatalf("broker serve still running 2 minutes after SIGTERM\n%s", out.String())
	}
}
