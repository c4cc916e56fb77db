package interop

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// The waits below are bounds, never expectations: each wait ends as soon as its condition
// holds, and they are generous because `make test` runs many race-instrumented packages at
// once, on machines that may be running another `make test` (load average 16 on two cores).
// A child that exits while being waited for fails the test at once, with its output.
const (
	readyTimeout   = 3 * time.Minute // a child (node peer, broker, example-api) ready: READY line or /healthz 200
	flowTimeout    = 2 * time.Minute // one whole login through the HTTP "browser"
	eventTimeout   = time.Minute     // login event visible on the broker's stdout
	commandTimeout = 2 * time.Minute // one CLI call (keys generate, discovery check, logs)
	browserBudget  = 3 * time.Minute // one headless-Chromium script (browser.mjs, spa-browser.mjs), --timeout-ms
	buildTimeout   = 15 * time.Minute
	pollInterval   = 25 * time.Millisecond
	npmHint        = "run `npm ci --prefix interop` first"
	chromiumPath   = "/usr/bin/chromium"
	stderrPrefix   = "[stderr] "
)

var (
	repoRoot       string // the module root (where go.mod lives)
	interopDir     string // this directory (node scripts, node_modules)
	brokerBin      string // built once by TestMain
	brokerBuildErr error
	exampleAPIBin  string // cmd/example-api, built once by TestMain
	exampleAPIErr  error
	skipReason     string // set when the npm peers are missing and INTEROP_REQUIRED is not 1
	required       = os.Getenv("INTEROP_REQUIRED") == "1"
)

// upstreamKeyFile holds the RS256 signing key of every upstream.mjs, written once by TestMain.
var (
	upstreamKeyFile string
	upstreamKeyErr  error
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "interop: getwd:", err)
		return 1
	}
	interopDir = wd
	repoRoot = findRepoRoot(wd)

	if reason := missingPeers(); reason != "" {
		if required {
			fmt.Fprintf(os.Stderr, "interop: %s: %s (INTEROP_REQUIRED=1)\n", reason, npmHint)
			return 1
		}
		skipReason = reason + ": " + npmHint
		return m.Run()
	}

	tmp, err := os.MkdirTemp("", "dpop-broker-interop-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "interop: temp dir:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	var wg sync.WaitGroup
	if bin := os.Getenv("INTEROP_BROKER_BIN"); bin != "" { // a prebuilt binary (e.g. from make build)
		if brokerBin, err = filepath.Abs(bin); err != nil {
			brokerBuildErr = fmt.Errorf("INTEROP_BROKER_BIN: %w", err)
		}
	} else {
		brokerBin = filepath.Join(tmp, "broker")
		wg.Go(func() { brokerBuildErr = goBuild(ctx, brokerBin, "./cmd/broker") })
	}
	exampleAPIBin = filepath.Join(tmp, "example-api")
	wg.Go(func() { exampleAPIErr = goBuild(ctx, exampleAPIBin, "./cmd/example-api") })
	upstreamKeyFile = filepath.Join(tmp, "upstream-signing-key.json")
	wg.Go(func() { upstreamKeyErr = writeUpstreamKey(upstreamKeyFile) })
	wg.Wait()
	return m.Run()
}

// writeUpstreamKey writes a new RSA key as a private JWK to path: the ID-token signing key of
// every upstream.mjs of this run (its --signing-key). A peer generating its own would spend
// about half of its start-up on RSA generation, and the tests start dozens of peers.
func writeUpstreamKey(path string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("upstream signing key: %w", err)
	}
	jwk, err := jose.JSONWebKey{Key: key}.MarshalJSON()
	if err != nil {
		return fmt.Errorf("upstream signing key as a JWK: %w", err)
	}
	if err := os.WriteFile(path, jwk, 0o600); err != nil {
		return fmt.Errorf("upstream signing key: %w", err)
	}
	return nil
}

// goBuild builds the package pkg of this module into out.
func goBuild(ctx context.Context, out, pkg string) error {
	build := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	build.Dir = repoRoot
	if msg, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s in %s: %w\n%s", pkg, repoRoot, err, msg)
	}
	return nil
}

// findRepoRoot asks `go env GOMOD` and falls back to the parent directory.
func findRepoRoot(wd string) string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if gomod := strings.TrimSpace(string(out)); err == nil && gomod != "" && gomod != os.DevNull {
		return filepath.Dir(gomod)
	}
	return filepath.Dir(wd)
}

// missingPeers names what is missing to run node peers, or "".
func missingPeers() string {
	if _, err := exec.LookPath("node"); err != nil {
		return "node is not on PATH"
	}
	for _, pkg := range []string{"oidc-provider", "openid-client", "playwright-core", "express",
		"express-oauth2-jwt-bearer", "@auth0/auth0-spa-js", "express-openid-connect", "auth0"} {
		if _, err := os.Stat(filepath.Join(interopDir, "node_modules", pkg, "package.json")); err != nil {
			return fmt.Sprintf("interop/node_modules/%s is missing", pkg)
		}
	}
	return ""
}

// needPeers skips (or fails under INTEROP_REQUIRED=1) when the npm peers are not installed, and
// fails when the broker binary did not build.
func needPeers(t *testing.T) {
	t.Helper()
	needNode(t)
	if brokerBuildErr != nil {
		t.Fatal(brokerBuildErr)
	}
}

// needNode skips when the npm peers are not installed (see TestMain).
func needNode(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

// socket is a listening loopback TCP socket that the test opens and a child process inherits
// as file descriptor 3 (`broker serve` by socket activation, rp.mjs by --listen-fd 3). The
// port is known before the child starts (issuers and redirect URIs contain it) and no other
// process can take it in between: there is no "find a free port, close it, let the child bind
// it" race. A socket that is never handed over reserves its port until the test ends.
type socket struct {
	Port int
	URL  string // http://127.0.0.1:PORT (no trailing slash)
	file *os.File
	once sync.Once
}

// listenSocket opens a socket on 127.0.0.1 with a port chosen by the kernel; it is closed at
// cleanup unless handed over first.
func listenSocket(t *testing.T) *socket {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen on 127.0.0.1: %v", err)
	}
	defer ln.Close() // the file below keeps the socket open
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatalf("listening socket as a file: %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	s := &socket{Port: port, URL: fmt.Sprintf("http://127.0.0.1:%d", port), file: f}
	t.Cleanup(s.close)
	return s
}

// close closes the test's copy of the socket (idempotent). Once a child has it, the socket
// lives as long as the child: when the child exits, connections are refused.
func (s *socket) close() { s.once.Do(func() { _ = s.file.Close() }) }

// startWithSocket runs cmd like start, with s as its file descriptor 3, and then closes the
// test's copy of s.
func startWithSocket(t *testing.T, name string, cmd *exec.Cmd, s *socket, onLine func(string)) *proc {
	t.Helper()
	cmd.ExtraFiles = []*os.File{s.file}
	p := start(t, name, cmd, onLine)
	s.close()
	return p
}

// randomHex returns n random bytes, hex encoded (test secrets; never committed).
func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random: %v", err)
	}
	return hex.EncodeToString(b)
}

// output collects a child process's stdout and stderr line by line.
type output struct {
	mu     sync.Mutex
	lines  []string
	onLine func(line string) // called for every complete stdout line (under no lock)
}

func (o *output) add(line string) {
	o.mu.Lock()
	o.lines = append(o.lines, line)
	o.mu.Unlock()
}

// Lines returns a copy of the lines seen so far.
func (o *output) Lines() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.lines...)
}

func (o *output) String() string { return strings.Join(o.Lines(), "\n") }

// lineWriter splits one stream into lines for output.
type lineWriter struct {
	out     *output
	prefix  string
	partial []byte
	stdout  bool
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := string(w.partial[:i])
		w.partial = w.partial[i+1:]
		w.out.add(w.prefix + line)
		if w.stdout && w.out.onLine != nil {
			w.out.onLine(line)
		}
	}
	return len(p), nil
}

// proc is a child process killed at test cleanup; its output is logged when the test failed.
type proc struct {
	name   string
	cmd    *exec.Cmd
	out    *output
	exited chan struct{}
	err    error // valid after exited is closed
}

// start runs cmd, logging its output on failure and killing it at cleanup.
func start(t *testing.T, name string, cmd *exec.Cmd, onLine func(string)) *proc {
	t.Helper()
	p := &proc{name: name, cmd: cmd, out: &output{onLine: onLine}, exited: make(chan struct{})}
	cmd.Stdout = &lineWriter{out: p.out, stdout: true}
	cmd.Stderr = &lineWriter{out: p.out, prefix: stderrPrefix}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.exited:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				<-p.exited
			}
		}
		if t.Failed() {
			t.Logf("---- %s output ----\n%s\n---- end %s ----", name, p.out, name)
		}
	})
	return p
}

// startNode runs `node script args...` from interop/ and waits for its "READY <url>" line.
func startNode(t *testing.T, script string, args ...string) (*proc, string) {
	t.Helper()
	return startNodeOn(t, nil, script, args...)
}

// startUpstream runs upstream.mjs (oidc-provider) with args and the run's upstream signing key,
// and waits for its READY line.
func startUpstream(t *testing.T, args ...string) (*proc, string) {
	t.Helper()
	if upstreamKeyErr != nil {
		t.Fatal(upstreamKeyErr)
	}
	return startNode(t, "upstream.mjs", append([]string{"--signing-key", upstreamKeyFile}, args...)...)
}

// joinDashValues writes "--flag value" as "--flag=value" when value starts with '-': Node's
// parseArgs refuses such a value as ambiguous, and generated values (a base64url client
// secret from the management API, one time in 64) can start with '-'.
func joinDashValues(args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		if strings.HasPrefix(args[i], "--") && !strings.Contains(args[i], "=") && i+1 < len(args) && strings.HasPrefix(args[i+1], "-") && !strings.HasPrefix(args[i+1], "--") {
			out = append(out, args[i]+"="+args[i+1])
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}

// startNodeOn is startNode; with a socket s the script serves on it (--listen-fd 3).
func startNodeOn(t *testing.T, s *socket, script string, args ...string) (*proc, string) {
	t.Helper()
	cmd := exec.Command("node", append([]string{script}, joinDashValues(args)...)...)
	cmd.Dir = interopDir
	ready, onLine := readyLine()
	var p *proc
	if s != nil {
		cmd.Args = append(cmd.Args, "--listen-fd", "3")
		p = startWithSocket(t, script, cmd, s, onLine)
	} else {
		p = start(t, script, cmd, onLine)
	}
	return p, p.waitReady(t, ready)
}

// readyLine returns a channel that receives the URL of the child's first "READY <url>"
// stdout line, and the line callback for start that feeds it.
func readyLine() (<-chan string, func(string)) {
	ready := make(chan string, 1)
	var once sync.Once
	return ready, func(line string) {
		if u, ok := strings.CutPrefix(line, "READY "); ok {
			once.Do(func() { ready <- strings.TrimSpace(u) })
		}
	}
}

// waitReady waits (bounded) for the URL on ready. A child that exits first fails the test at
// once; either failure shows the child's output so far.
func (p *proc) waitReady(t *testing.T, ready <-chan string) string {
	t.Helper()
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case u := <-ready:
		return u
	case <-p.exited:
		t.Fatalf("%s exited before READY (%v); its output:\n%s", p.name, p.err, p.out)
	case <-timer.C:
		t.Fatalf("%s printed no READY line within %v (still running%s); its output:\n%s", p.name, readyTimeout, p.threads(), p.out)
	}
	return ""
}

// threads describes a running child's threads from /proc (Linux; "" elsewhere), e.g.
// "; 11 threads: 11 S, CPU 0.38s": all sleeping with little CPU time means stuck (a deadlock),
// not slow; threads in R are waiting for a CPU.
func (p *proc) threads() string {
	dir := fmt.Sprintf("/proc/%d/task", p.cmd.Process.Pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	states := map[string]int{}
	var ticks int64
	for _, task := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, task.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after "(comm)": state, then utime and stime as the 12th and 13th.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 13 {
			continue
		}
		states[f[0]]++
		for _, v := range f[11:13] {
			n, _ := strconv.ParseInt(v, 10, 64)
			ticks += n
		}
	}
	var parts []string
	for st, n := range states {
		parts = append(parts, fmt.Sprintf("%d %s", n, st))
	}
	slices.Sort(parts)
	// USER_HZ is 100 on Linux.
	return fmt.Sprintf("; %d threads: %s, CPU %.2fs", len(tasks), strings.Join(parts, ", "), float64(ticks)/100)
}

// brokerProc is a running `broker serve` (or `broker demo`).
type brokerProc struct {
	*proc
	URL string // http://127.0.0.1:PORT (no trailing slash)
}

// startBroker writes configYAML to a temp file and runs `broker serve --config FILE` with the
// extra environment on the socket s (socket activation: the config's listen is ignored),
// waiting until /healthz answers 200.
func startBroker(t *testing.T, s *socket, configYAML string, env map[string]string) *brokerProc {
	t.Helper()
	if !strings.Contains(configYAML, "\nupstream_allowed_networks:") {
		// The peers (oidc-provider, the fault proxies) listen on loopback, which the upstream
		// address policy refuses unless allowed.
		configYAML += "\nupstream_allowed_networks: [\"127.0.0.0/8\"]\n"
	}
	cfgFile := filepath.Join(t.TempDir(), "broker.yaml")
	if err := os.WriteFile(cfgFile, []byte(configYAML), 0o600); err != nil {
		t.Fatalf("write config: %v", err)
	}
	// Socket activation wants LISTEN_PID to be the broker's own process id, known only after
	// the fork: a shell sets it and execs the broker in its place (same process, same id).
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, brokerBin, "serve", "--config", cfgFile)
	cmd.Env = append(os.Environ(), "LISTEN_FDS=1")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := startWithSocket(t, "broker serve", cmd, s, nil)
	b := &brokerProc{proc: p, URL: s.URL}
	deadline := time.Now().Add(readyTimeout)
	// Requests queue on the socket until the broker serves; a slow start is only a slow answer.
	hc := &http.Client{Timeout: 30 * time.Second}
	for {
		resp, err := hc.Get(b.URL + "/healthz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return b
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("broker exited before /healthz answered (%v)\nconfig:\n%s\nits output:\n%s", p.err, configYAML, p.out)
		case <-time.After(pollInterval):
		}
		if time.Now().After(deadline) {
			t.Fatalf("broker /healthz not 200 within %v (still running%s; last error %v); its output:\n%s", readyTimeout, p.threads(), err, p.out)
		}
	}
}

// loginEvent is one msg "login_event" line of the broker's stdout.
type loginEvent struct {
	Type    string
	Details map[string]any
	Raw     map[string]any
}

// parseLoginEvent reads a slog JSON line; the event may be flattened or nested under "event".
func parseLoginEvent(line string) (loginEvent, bool) {
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil || m["msg"] != "login_event" {
		return loginEvent{}, false
	}
	ev := m
	for _, k := range []string{"event", "log", "login_event"} {
		if nested, ok := m[k].(map[string]any); ok {
			ev = nested
			break
		}
	}
	typ, _ := ev["type"].(string)
	details, _ := ev["details"].(map[string]any)
	if details == nil {
		details = map[string]any{}
	}
	return loginEvent{Type: typ, Details: details, Raw: ev}, true
}

// Events returns the login events written so far.
func (p *proc) Events() []loginEvent {
	var evs []loginEvent
	for _, line := range p.out.Lines() {
		// serve logs to stdout; demo may log to stderr (its stdout carries the "Open ..." line).
		if ev, ok := parseLoginEvent(strings.TrimPrefix(line, stderrPrefix)); ok {
			evs = append(evs, ev)
		}
	}
	return evs
}

// waitEvent waits (bounded) for the n-th login event (1-based) and returns it.
func (p *proc) waitEvent(t *testing.T, n int) loginEvent {
	t.Helper()
	deadline := time.Now().Add(eventTimeout)
	for {
		if evs := p.Events(); len(evs) >= n {
			return evs[n-1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no login_event #%d on the broker's stdout within %v", n, eventTimeout)
		}
		time.Sleep(pollInterval)
	}
}

// browserClient is an HTTP "browser": cookie jar, follows redirects (bounded).
func browserClient(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatalf("cookie jar: %v", err)
	}
	return &http.Client{
		Jar:     jar,
		Timeout: flowTimeout,
		CheckRedirect: func(_ *http.Request, via []*http.Request) error {
			if len(via) >= 20 {
				return errors.New("stopped after 20 redirects")
			}
			return nil
		},
	}
}

// getJSON GETs url with c and decodes a JSON object body (nil when the body is not JSON).
func getJSON(t *testing.T, c *http.Client, url string) (int, map[string]any, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	var m map[string]any
	if json.Unmarshal(body, &m) != nil {
		m = nil
	}
	return resp.StatusCode, m, fmt.Sprintf("%s (final URL %s)", body, resp.Request.URL.Redacted())
}

// runBroker runs a broker CLI command and returns its exit code, stdout and stderr.
func runBroker(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, brokerBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &exitErr):
		return exitErr.ExitCode(), stdout.String(), stderr.String()
	default:
		t.Fatalf("broker %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		return -1, "", ""
	}
}

var (
	keyMu    sync.Mutex
	keyCache = map[string]string{}
)

// generateKey returns a PEM private key from `broker keys generate --alg alg`, once per alg per run.
func generateKey(t *testing.T, alg string) string {
	t.Helper()
	keyMu.Lock()
	defer keyMu.Unlock()
	if pem, ok := keyCache[alg]; ok {
		return pem
	}
	code, stdout, stderr := runBroker(t, "keys", "generate", "--alg", alg)
	if code != 0 || !isPKCS8PEM(stdout) {
		t.Fatalf("broker keys generate --alg %s: exit %d, no PKCS#8 PEM on stdout\nstderr: %s", alg, code, stderr)
	}
	keyCache[alg] = stdout
	return stdout
}

// upstreamStats reads oidc-provider's GET /__stats.
type upstreamStats struct {
	TokenRequests         int            `json:"token_requests"`
	NonceChallenges       int            `json:"nonce_challenges"`
	DPoPProofs            int            `json:"dpop_proofs"`
	NonceProofs           int            `json:"nonce_proofs"`
	TokenTypes            []string       `json:"token_types"`
	AuthorizationRequests int            `json:"authorization_requests"`
	UserinfoRequests      int            `json:"userinfo_requests"`
	BackchannelLogouts    map[string]int `json:"backchannel_logouts"`
	// AuthorizationParams are login_hint, acr_values, ui_locales, display and prompt of the
	// last authorization request.
	AuthorizationParams map[string]string `json:"authorization_params"`
	// Pushed authorization requests (RFC 9126): POSTs to the PAR endpoint, those with a DPoP
	// proof, those answered use_dpop_nonce, and authorization requests carrying a request_uri.
	PARRequests              int `json:"par_requests"`
	PARDPoPProofs            int `json:"par_dpop_proofs"`
	PARNonceChallenges       int `json:"par_nonce_challenges"`
	RequestURIAuthorizations int `json:"request_uri_authorizations"`
}

func getStats(t *testing.T, upstreamURL string) upstreamStats {
	t.Helper()
	resp, err := http.Get(upstreamURL + "/__stats")
	if err != nil {
		t.Fatalf("upstream stats: %v", err)
	}
	defer resp.Body.Close()
	var s upstreamStats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatalf("upstream stats: decode: %v", err)
	}
	return s
}

var openLine = regexp.MustCompile(`Open (http://\S+) in your browser`)

// waitEventType waits (bounded) for the first login event of type typ.
func waitEventType(t *testing.T, p *proc, typ string) loginEvent {
	t.Helper()
	deadline := time.Now().Add(eventTimeout)
	for {
		for _, ev := range p.Events() {
			if ev.Type == typ {
				return ev
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q event on the broker's stdout within %v (events so far: %d)", typ, eventTimeout, len(p.Events()))
		}
		time.Sleep(pollInterval)
	}
}

// redisStoreYAML is the body of a broker config's store section: the redis at addr, keys
// under prefix, and a store timeout generous enough for loaded test machines.
func redisStoreYAML(addr, prefix string) string {
	return fmt.Sprintf("  type: redis\n  redis:\n    addrs: [%q]\n    prefix: %q\n    timeout: 10s", addr, prefix)
}

// keysYAML is the keys and dpop sections every interop broker config shares: RS256 signing
// and ES256 upstream DPoP keys from the environment, and one quick use_dpop_nonce retry.
const keysYAML = `keys:
  signing:
    alg: RS256
    private_key_env: "INTEROP_SIGNING_KEY"
  dpop:
    es256: { private_key_env: "INTEROP_DPOP_ES256_KEY" }
dpop:
  retry_delay: 10ms
  jitter: 10ms
  max_retries: 1
`

// isPKCS8PEM reports whether s is exactly one PEM block of type PRIVATE KEY (PKCS#8).
func isPKCS8PEM(s string) bool {
	block, rest := pem.Decode([]byte(s))
	return block != nil && block.Type == "PRIVATE KEY" && len(strings.TrimSpace(string(rest))) == 0
}
