package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// demoRun is `broker demo` running in-process, with what it printed.
type demoRun struct {
	out, errOut *syncBuffer
	done        chan int
}

// startDemoCommand runs `broker demo args...` until the test ends (then it must exit 0).
func startDemoCommand(t *testing.T, args ...string) *demoRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &demoRun{out: &syncBuffer{}, errOut: &syncBuffer{}, done: make(chan int, 1)}
	go func() { r.done <- run(ctx, append([]string{"demo"}, args...), r.out, r.errOut) }()
	t.Cleanup(func() {
		cancel()
		if code := <-r.done; code != 0 {
			t.Errorf("demo exited %d after Ctrl-C\n%s%s", code, r.out.String(), r.errOut.String())
		}
	})
	return r
}

// waitPrinted waits (generously: a loaded machine) until the demo printed want, and fails
// with its output when it exits or never prints it.
func (r *demoRun) waitPrinted(t *testing.T, want string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if out := r.out.String(); strings.Contains(out, want) {
			return out
		}
		select {
		case code := <-r.done:
			r.done <- code
			t.Fatalf("demo exited %d before printing %q\n%s%s", code, want, r.out.String(), r.errOut.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("demo did not print %q within 60s\n%s%s", want, r.out.String(), r.errOut.String())
	return ""
}

var (
	demoAppLine    = regexp.MustCompile(`(?m)^  sample app    (http://\S+)/$`)
	demoBrokerLine = regexp.MustCompile(`(?m)^  broker        (http://\S+)/  \(issuer; discovery at `)
	demoIdPLine    = regexp.MustCompile(`(?m)^  upstream IdP  (http://\S+)$`)
	demoLogsLine   = regexp.MustCompile(`(?m)^  BROKER_URL=(\S+) BROKER_MGMT_TOKEN=(\S+) (.+) logs --follow$`)
)

func TestDemoFallsBackToFreePortsWhenItsPortsAreTaken(t *testing.T) {
	// Take the demo's default ports. One that something else holds right now (another test run
	// on the same machine) may be free again by the time the demo starts, so only the ports
	// this test holds are asserted on.
	held := map[string]bool{}
	for _, port := range []string{"8080", "8081", "8082"} {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
		if err == nil {
			t.Cleanup(func() { _ = ln.Close() })
			held[port] = true
		}
	}
	d := startDemoCommand(t)
	out := d.waitPrinted(t, "Stop the demo with Ctrl-C.\n")

	app, brk, idp, logsCmd := demoAppLine.FindStringSubmatch(out), demoBrokerLine.FindStringSubmatch(out),
		demoIdPLine.FindStringSubmatch(out), demoLogsLine.FindStringSubmatch(out)
	if app == nil || brk == nil || idp == nil || logsCmd == nil || !strings.Contains(out, "\nOpen "+app[1]+"/ in your browser\n") {
		t.Fatalf("the demo must print the app, broker and IdP URLs, a broker logs command and what to open:\n%s", out)
	}
	for _, u := range []string{app[1], brk[1], idp[1]} {
		pu, err := url.Parse(u)
		if err != nil || pu.Hostname() != "127.0.0.1" || held[pu.Port()] {
			t.Fatalf("URL %s is not on a free loopback port:\n%s", u, out)
		}
	}
	for p := range held {
		if !strings.Contains(out, "  note: port "+p+" is not available (") {
			t.Errorf("no note that port %s was taken:\n%s", p, out)
		}
	}
	if logsCmd[1] != brk[1] || len(logsCmd[2]) < 32 || logsCmd[3] != selfCommand() {
		t.Fatalf("logs command %q: want BROKER_URL %s, a token of at least 32 characters, and %q", logsCmd[0], brk[1], selfCommand())
	}

	// The printed URLs work: the broker is up, a login goes through app → broker → IdP → app.
	resp, err := http.Get(brk[1] + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s/healthz: %s", brk[1], resp.Status)
	}
	demoLogin(t, app[1], idp[1])

	// The printed token reads the login log through the management API …
	req, _ := http.NewRequest(http.MethodGet, brk[1]+"/api/v2/logs?q=type:s", nil)
	req.Header.Set("Authorization", "Bearer "+logsCmd[2])
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	var events []struct {
		Type       string `json:"type"`
		Connection string `json:"connection"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &events) != nil || len(events) != 1 ||
		events[0].Type != "s" || events[0].Connection != demoConnection {
		t.Fatalf("GET /api/v2/logs with the printed token: %s %s", resp.Status, body)
	}
	// … and so does the printed command, which takes both from the environment.
	t.Setenv("BROKER_URL", logsCmd[1])
	t.Setenv("BROKER_MGMT_TOKEN", logsCmd[2])
	code, logsOut, logsErr := runCmd(t, "logs", "--type", "s")
	if code != 0 || !strings.Contains(logsOut, demoConnection) || !strings.Contains(logsOut, "dpop ES256") {
		t.Fatalf("broker logs with the printed environment: exit %d\n%s%s", code, logsOut, logsErr)
	}
}

func TestDemoRefusesATakenPortItWasToldToUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	code, out, errOut := runCmd(t, "demo", "--broker-port", port, "--idp-port", "0", "--app-port", "0")
	if code != 1 || out != "" || !strings.Contains(errOut, "broker demo: broker: listen on 127.0.0.1:"+port+" (--broker-port): ") ||
		!strings.Contains(errOut, "; --broker-port 0 picks a free port") {
		t.Fatalf("exit %d\nstdout %q\nstderr %q", code, out, errOut)
	}
}

func TestDemoStaysOnLoopback(t *testing.T) {
	code, _, errOut := runCmd(t, "demo", "--listen-host", "192.0.2.1", "--broker-port", "0", "--idp-port", "0", "--app-port", "0")
	if code != 1 || !strings.Contains(errOut, `--listen-host "192.0.2.1": the demo serves plain http, so it runs on loopback`) {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}
