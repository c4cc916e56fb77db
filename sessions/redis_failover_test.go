package sessions

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeRedis is a loopback server that speaks enough RESP for a go-redis client: the handshake
// is accepted (HELLO refused, so the client falls back to RESP2), and every other command is
// answered by reply, which sees the command's name (lower case) and how many times that name
// was received so far (1 for the first). A reply of "" closes the connection without answering:
// the command was received, it may have run, and its answer was lost.
type fakeRedis struct {
	addr  string
	reply func(name string, n int) string

	mu     sync.Mutex
	counts map[string]int
}

func startFakeRedis(t *testing.T, reply func(name string, n int) string) *fakeRedis {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRedis{addr: l.Addr().String(), reply: reply, counts: map[string]int{}}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { f.serve(c) })
		}
	})
	return f
}

func (f *fakeRedis) count(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[name]
}

func (f *fakeRedis) serve(c net.Conn) {
	defer c.Close()
	rd := bufio.NewReader(c)
	for range 1000 {
		_ = c.SetDeadline(time.Now().Add(time.Minute))
		args, err := readCommand(rd)
		if err != nil {
			return
		}
		name := strings.ToLower(args[0])
		var out string
		switch name {
		case "hello":
			out = "-ERR unknown command 'HELLO'\r\n"
		case "client", "select", "ping":
			out = "+OK\r\n"
		default:
			f.mu.Lock()
			f.counts[name]++
			n := f.counts[name]
			f.mu.Unlock()
			if out = f.reply(name, n); out == "" {
				return
			}
		}
		if _, err := io.WriteString(c, out); err != nil {
			return
		}
	}
}

// readCommand reads one RESP array of bulk strings.
func readCommand(rd *bufio.Reader) ([]string, error) {
	line, err := rd.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(line, "*") {
		return nil, fmt.Errorf("not an array: %q", line)
	}
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil || n < 1 || n > 64 {
		return nil, fmt.Errorf("array length %q", line)
	}
	args := make([]string, n)
	for i := range args {
		line, err := rd.ReadString('\n')
		if err != nil {
			return nil, err
		}
		size, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "$")))
		if err != nil || size < 0 || size > 1<<20 {
			return nil, fmt.Errorf("bulk length %q", line)
		}
		buf := make([]byte, size+2)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return nil, err
		}
		args[i] = string(buf[:size])
	}
	return args, nil
}

// TestRedisRunsAgainOnlyWhatCannotRunTwice: a command the server refused (it did not run) is
// run once more, whatever it is; after a connection lost mid-command (it may have run) only a
// read runs again, never GETDEL (Take) or SET NX (Create); and MOVED, ASK, CLUSTERDOWN,
// TRYAGAIN or LOADING left over after that are ErrUnavailable (a 503), a reply about the
// content is not.
func TestRedisRunsAgainOnlyWhatCannotRunTwice(t *testing.T) {
	const value = "$1\r\nv\r\n"
	for _, tc := range []struct {
		name      string
		reply     func(n int) string // answer to the n-th command
		cmd       string             // the command's name
		wantRuns  int
		wantErr   error // nil: success
		wantOther bool  // an error that is neither ErrUnavailable nor ErrNotFound
	}{
		{name: "take refused while loading runs again", cmd: "getdel", wantRuns: 2,
			reply: func(n int) string {
				if n == 1 {
					return "-LOADING Redis is loading the dataset in memory\r\n"
				}
				return value
			}},
		{name: "take whose answer was lost does not run again", cmd: "getdel", wantRuns: 1, wantErr: ErrUnavailable,
			reply: func(int) string { return "" }},
		{name: "create refused by a cluster down runs again", cmd: "set", wantRuns: 2,
			reply: func(n int) string {
				if n == 1 {
					return "-CLUSTERDOWN The cluster is down\r\n"
				}
				return "+OK\r\n"
			}},
		{name: "create whose answer was lost does not run again", cmd: "set", wantRuns: 1, wantErr: ErrUnavailable,
			reply: func(int) string { return "" }},
		{name: "get whose answer was lost runs again", cmd: "get", wantRuns: 2,
			reply: func(n int) string {
				if n == 1 {
					return ""
				}
				return value
			}},
		{name: "take still moved after a second run is unavailable", cmd: "getdel", wantRuns: 2, wantErr: ErrUnavailable,
			reply: func(int) string { return "-MOVED 3999 127.0.0.1:1\r\n" }},
		{name: "take asked elsewhere after a second run is unavailable", cmd: "getdel", wantRuns: 2, wantErr: ErrUnavailable,
			reply: func(int) string { return "-ASK 3999 127.0.0.1:1\r\n" }},
		{name: "create told to try again twice is unavailable", cmd: "set", wantRuns: 2, wantErr: ErrUnavailable,
			reply: func(int) string { return "-TRYAGAIN Multiple keys request during rehashing of slot\r\n" }},
		{name: "a reply about the content is not an outage", cmd: "getdel", wantRuns: 1, wantOther: true,
			reply: func(int) string { return "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFakeRedis(t, func(name string, n int) string {
				if name != tc.cmd {
					return "-ERR unexpected command\r\n"
				}
				return tc.reply(n)
			})
			st, err := NewRedis(RedisConfig{Addrs: []string{f.addr}, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = st.Close() })
			ctx := t.Context()
			switch tc.cmd {
			case "getdel":
				_, err = st.Take(ctx, KindCode, "t.c")
			case "set":
				err = st.Create(ctx, KindTransaction, "t.x", []byte("v"), time.Minute)
			case "get":
				_, err = st.Get(ctx, KindSession, "t.s")
			}
			switch {
			case tc.wantOther:
				if err == nil || errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNotFound) {
					t.Errorf("error %v, want one that is not ErrUnavailable", err)
				}
			case tc.wantErr == nil && err != nil, tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Errorf("error %v, want %v", err, tc.wantErr)
			}
			if got := f.count(tc.cmd); got != tc.wantRuns {
				t.Errorf("the server received %s %d times, want %d", strings.ToUpper(tc.cmd), got, tc.wantRuns)
			}
		})
	}
}
