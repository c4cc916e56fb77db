package sessions_test

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/sessions/redistest"
)

// replyDropper is a loopback proxy to a Redis server that, once armed, forwards the request
// holding needle, withholds every reply on that connection, and closes it when lost() says
// the request ran: the client's write happened and its answer was lost.
type replyDropper struct {
	ln     net.Listener
	needle []byte
	armed  atomic.Bool
	fired  atomic.Bool
	lost   func() bool
}

func startReplyDropper(t *testing.T, target string, needle string, lost func() bool) *replyDropper {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &replyDropper{ln: ln, needle: []byte(needle), lost: lost}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			wg.Go(func() { d.relay(c, s) })
		}
	})
	return d
}

func (d *replyDropper) relay(c, s net.Conn) {
	defer func() { _ = c.Close(); _ = s.Close() }()
	var swallow atomic.Bool
	done := make(chan struct{})
	go func() { // replies
		defer close(done)
		buf := make([]byte, 32<<10)
		for {
			n, err := s.Read(buf)
			if n > 0 && !swallow.Load() {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				_ = c.Close()
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	var tail []byte // the end of the previous read, so a needle split between reads is seen
	for {
		n, err := c.Read(buf)
		if n > 0 {
			seen := append(tail, buf[:n]...)
			if bytes.Contains(seen, d.needle) && d.armed.CompareAndSwap(true, false) {
				swallow.Store(true)
				go func() {
					// Bounded: at most 10 s for the request to show its effect.
					for i := 0; i < 1000 && !d.lost(); i++ {
						time.Sleep(10 * time.Millisecond)
					}
					d.fired.Store(true)
					_ = c.Close()
				}()
			}
			tail = append([]byte(nil), seen[max(0, len(seen)-len(d.needle)):]...)
			if _, werr := s.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	_ = s.Close()
	<-done
}

// TestRedisTalliedWriteCountsOnceWhenItsReplyIsLost: go-redis sends a pipeline or MULTI
// again when the connection drops after it was sent. A tallied append (pipeline) and a
// tallied batch (MULTI/EXEC) whose reply is lost after they ran are not sent again with
// their increments: each login is counted once, its event is stored, and the call succeeds
// (the write sent again without the increments).
func TestRedisTalliedWriteCountsOnceWhenItsReplyIsLost(t *testing.T) {
	addr := redistest.Start(t)
	direct, err := sessions.NewRedis(sessions.RedisConfig{Addrs: []string{addr}, Prefix: "t"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = direct.Close() })
	now := time.Now()
	minute := now.Truncate(time.Minute)
	count := func(name string) int64 {
		bs, err := direct.(sessions.Tallier).Tallies(t.Context(), sessions.TallyMinute, minute, minute.Add(time.Second))
		if err != nil || len(bs) != 1 {
			return -1
		}
		return bs[0].Counts[name]
	}
	var counter atomic.Value
	d := startReplyDropper(t, addr, "HINCRBY", func() bool { return count(counter.Load().(string)) > 0 })
	st, err := sessions.NewRedis(sessions.RedisConfig{Addrs: []string{d.ln.Addr().String()}, Prefix: "t", Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	tl := st.(sessions.Tallier)
	tests := []struct {
		name  string
		write func(id string, tally sessions.Tally) error
	}{
		{name: "append, a pipeline", write: func(id string, tally sessions.Tally) error {
			return tl.AppendLogTallied(t.Context(), sessions.LogAudit, id, []byte(`{}`), 100, tally)
		}},
		{name: "batch and append, a MULTI", write: func(id string, tally sessions.Tally) error {
			return tl.PutAllAndLogTallied(t.Context(), id, []byte(`{}`), 100, tally,
				sessions.Item{Kind: sessions.KindCode, ID: "c" + id[:8], Value: []byte("v"), TTL: time.Minute})
		}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("login:%d", i)
			counter.Store(name)
			id := strings.Repeat(fmt.Sprint(i+1), sessions.LogIDLen)
			d.armed.Store(true)
			err := tc.write(id, sessions.Tally{At: now, Counts: map[string]int64{name: 1}})
			if !d.fired.Swap(false) {
				t.Fatalf("the proxy did not drop the reply (err %v)", err)
			}
			if err != nil {
				t.Fatalf("write whose reply was lost = %v, want success on the write sent again", err)
			}
			if got := count(name); got != 1 {
				t.Errorf("one login counted %d times", got)
			}
			if _, err := direct.Log(t.Context(), id); err != nil {
				t.Errorf("the event: %v", err)
			}
		})
	}
}
