package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dpop-broker/dpop-broker/bench/fastidp"
)

func main() {
	os.Exit(run())
}

func run() int {
	var cfg config
	flag.StringVar(&cfg.broker, "broker", "", "broker base URL (public_url), e.g. http://127.0.0.1:8080")
	flag.StringVar(&cfg.clientID, "client-id", "bench-app", "app client_id")
	flag.StringVar(&cfg.clientSecret, "client-secret", "", "app client_secret (client_secret_basic); empty = public client")
	flag.StringVar(&cfg.redirectURI, "redirect-uri", "", "app redirect_uri registered at the broker (never fetched)")
	flag.StringVar(&cfg.connection, "connection", "", "optional connection= parameter at /authorize")
	flag.StringVar(&cfg.scope, "scope", "openid profile email", "scope at /authorize")
	flag.StringVar(&cfg.mode, "mode", modeFull, "full: brokered logins, each in a fresh browser; sso: each worker's browser signs in once (not measured), then every login is answered from its broker session (single sign-on)")
	flag.IntVar(&cfg.n, "n", 2000, "measured logins")
	flag.IntVar(&cfg.c, "c", 8, "concurrent logins")
	flag.DurationVar(&cfg.duration, "duration", 2*time.Minute, "stop starting logins after this long (measured phase)")
	flag.IntVar(&cfg.warmup, "warmup", 200, "logins before measuring (not counted)")
	flag.IntVar(&cfg.pid, "pid", 0, "broker process id: report its CPU ms per login and RSS from /proc")
	flag.IntVar(&cfg.redisPID, "redis-pid", 0, "redis-server process id: also report its CPU ms per login")
	flag.IntVar(&cfg.idpPID, "idp-pid", 0, "upstream IdP process id (loadgen -serve-idp): also report its CPU ms per login")
	flag.StringVar(&cfg.label, "label", "", "label for the result row (e.g. ES256)")
	flag.StringVar(&cfg.out, "out", "", "append the result as one JSON line to this file")
	flag.DurationVar(&cfg.rssEvery, "rss-every", 0, "with -pid: print the broker's RSS to stderr at this interval")
	flag.DurationVar(&cfg.timeout, "timeout", 10*time.Second, "per-request timeout")

	serveIDP := flag.String("serve-idp", "", "serve the fast upstream IdP on this loopback address until SIGINT/SIGTERM")
	idpURLFile := flag.String("idp-url-file", "", "with -serve-idp: write the issuer URL to this file once listening")
	idpAlg := flag.String("idp-id-token-alg", "RS256", "with -serve-idp: upstream ID-token alg (RS256 | ES256)")
	idpNonce := flag.String("idp-nonce", fastidp.NonceFirst, "with -serve-idp: nonce mode (first | every)")
	idpClientID := flag.String("idp-client-id", "broker", "with -serve-idp: the broker's client_id at the IdP")
	idpSecret := flag.String("idp-client-secret", "broker-secret", "with -serve-idp: the broker's client_secret at the IdP")
	idpSubjects := flag.String("idp-subjects", "shared", "with -serve-idp: shared (one user, alice, for every login) | unique (a user of its own per login)")
	summarize := flag.String("summarize", "", "print a median table of the JSON lines in this file")
	freePorts := flag.Int("free-ports", 0, "print this many free loopback ports and exit")
	probePaths := flag.String("probe", "", "comma-separated broker paths (e.g. /healthz,/readyz): report the broker CPU per bare request instead of running logins")
	flag.Parse()

	switch {
	case *freePorts > 0:
		return printFreePorts(*freePorts)
	case *summarize != "":
		if err := printSummary(os.Stdout, *summarize); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			return 1
		}
		return 0
	case *serveIDP != "":
		if *idpSubjects != "shared" && *idpSubjects != "unique" {
			fmt.Fprintf(os.Stderr, "loadgen: -idp-subjects %q (want shared or unique)\n", *idpSubjects)
			return 2
		}
		return serveIdP(*serveIDP, *idpURLFile, fastidp.Options{ClientID: *idpClientID, ClientSecret: *idpSecret,
			IDTokenAlg: *idpAlg, NonceMode: *idpNonce, UniqueSubjects: *idpSubjects == "unique"})
	}
	if *probePaths != "" && cfg.broker != "" {
		if cfg.n < 1 || cfg.c < 1 || cfg.c > 4096 || cfg.warmup < 0 {
			fmt.Fprintln(os.Stderr, "loadgen: need -n ≥ 1, 1 ≤ -c ≤ 4096, -warmup ≥ 0")
			return 2
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := probe(ctx, cfg, strings.Split(*probePaths, ",")); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			return 1
		}
		return 0
	}
	if cfg.broker == "" || cfg.redirectURI == "" {
		fmt.Fprintln(os.Stderr, "loadgen: -broker and -redirect-uri are required")
		flag.Usage()
		return 2
	}
	if cfg.n < 1 || cfg.c < 1 || cfg.c > 4096 || cfg.warmup < 0 || cfg.duration <= 0 {
		fmt.Fprintln(os.Stderr, "loadgen: need -n ≥ 1, 1 ≤ -c ≤ 4096, -warmup ≥ 0, -duration > 0")
		return 2
	}
	if cfg.mode != modeFull && cfg.mode != modeSSO {
		fmt.Fprintf(os.Stderr, "loadgen: -mode %q (want %s or %s)\n", cfg.mode, modeFull, modeSSO)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := runLoad(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 1
	}
	res.print(os.Stdout)
	if cfg.out != "" {
		if err := res.appendJSON(cfg.out); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			return 1
		}
	}
	if res.Errors > 0 {
		return 3
	}
	return 0
}

func serveIdP(addr, urlFile string, opts fastidp.Options) int {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || net.ParseIP(host) == nil || !net.ParseIP(host).IsLoopback() {
		fmt.Fprintf(os.Stderr, "loadgen: -serve-idp %q must be a loopback IP:port\n", addr)
		return 2
	}
	p, err := fastidp.Start(addr, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 1
	}
	if urlFile != "" {
		if err := os.WriteFile(urlFile, []byte(p.URL+"\n"), 0o600); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			return 1
		}
	}
	fmt.Printf("fastidp listening %s id_token_alg=%s nonce=%s unique_subjects=%v\n", p.URL, opts.IDTokenAlg, opts.NonceMode, opts.UniqueSubjects)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	_ = p.Close()
	fmt.Printf("fastidp stopped: authorize=%d tokens=%d nonce_challenges=%d rejected=%d\n",
		p.Stats.Authorize.Load(), p.Stats.Tokens.Load(), p.Stats.NonceChallenges.Load(), p.Stats.Rejected.Load())
	return 0
}

func printFreePorts(k int) int {
	if k > 64 {
		k = 64
	}
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range k {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			return 1
		}
		ls = append(ls, l)
		fmt.Println(strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	}
	return 0
}
