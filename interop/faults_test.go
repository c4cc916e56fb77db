package interop

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// Graceful shutdown: `broker serve` gets SIGTERM while a login's upstream code
// exchange is in flight. The process stops accepting connections at once, the in-flight
// callback still completes (the app gets its code), and the process exits 0.

// heldIdP is an in-process upstream (demoidp, DPoP ES256) whose token endpoint holds each
// request until the test releases it.
type heldIdP struct {
	URL     string
	arrived chan struct{} // one value per held token request
	release chan struct{} // closed by open
	once    sync.Once
}

func startHeldIdP(t *testing.T, secret string) *heldIdP {
	t.Helper()
	p := &heldIdP{arrived: make(chan struct{}, 4), release: make(chan struct{})}
	srv := httptest.NewUnstartedServer(nil)
	p.URL = "http://" + srv.Listener.Addr().String()
	h, _, err := demoidp.NewHandler(p.URL, demoidp.Options{
		ClientID: "broker", ClientSecret: secret, DPoPAlgs: []string{"ES256"}, RequireDPoP: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/token" {
			select {
			case p.arrived <- struct{}{}:
			default:
			}
			select {
			case <-p.release:
			case <-r.Context().Done():
				return
			}
		}
		h.ServeHTTP(w, r)
	})
	srv.Start()
	t.Cleanup(func() {
		p.open()
		srv.Close()
	})
	return p
}

// open releases every held and future token request (idempotent).
func (p *heldIdP) open() { p.once.Do(func() { close(p.release) }) }

// TestSIGTERMDuringUpstreamExchangeLetsTheLoginFinish: SIGTERM during the upstream exchange
// of a login.
func TestSIGTERMDuringUpstreamExchangeLetsTheLoginFinish(t *testing.T) {
	t.Parallel()
	needPeers(t)
	sock := listenSocket(t)
	port, base := sock.Port, sock.URL
	upstreamSecret := randomHex(t, 16)
	idp := startHeldIdP(t, upstreamSecret)
	b := startBroker(t, sock, asConfig(asOptions{issuerPort: port, listenPort: port, upstreamURL: idp.URL}),
		asEnv(t, upstreamSecret, randomHex(t, 32)))

	l, cb := toCallback(t, base)
	type result struct {
		code authCode
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, err := l.finish(cb)
		done <- result{code: code, err: err}
	}()
	select {
	case <-idp.arrived:
	case r := <-done:
		t.Fatalf("callback returned before the token request: %+v", r)
	case <-time.After(flowTimeout):
		t.Fatal("the broker never called the token endpoint")
	}

	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Shutdown closes the listener first: wait (bounded) until new connections are refused.
	refused := false
	for deadline := time.Now().Add(eventTimeout); !refused && time.Now().Before(deadline); {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), flowTimeout)
		if errors.Is(err, syscall.ECONNREFUSED) {
			refused = true
			break
		}
		if err == nil {
			c.Close()
		}
		time.Sleep(pollInterval)
	}
	if !refused {
		t.Fatalf("the broker still accepts connections %v after SIGTERM", eventTimeout)
	}
	select {
	case <-b.exited:
		t.Fatalf("the broker exited with a request in flight: %v\n%s", b.err, b.out)
	default:
	}

	idp.open() // the upstream answers now; the broker must still finish the login
	var r result
	select {
	case r = <-done:
	case <-time.After(flowTimeout):
		t.Fatal("the in-flight callback never completed")
	}
	if r.err != nil {
		t.Fatalf("in-flight login during shutdown: %v\n%s", r.err, b.out)
	}
	select {
	case <-b.exited:
	case <-time.After(readyTimeout): // a bound only: the broker exits as soon as the drained request is done
		t.Fatalf("the broker did not exit within %v after draining its last request", readyTimeout)
	}
	if b.err != nil {
		t.Fatalf("broker exit: %v, want status 0\n%s", b.err, b.out)
	}
	ev := waitEventType(t, b.proc, "s")
	wantDetail(t, ev, "dpop_returned_from_upstream", true)
	if out := b.out.String(); !strings.Contains(out, `"msg":"stopped"`) {
		t.Errorf("no \"stopped\" line on stdout:\n%s", out)
	}
}
