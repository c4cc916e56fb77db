package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

const usage = `usage: broker <command> [flags]

commands:
  serve --config FILE [--listen HOST:PORT] run the broker (config also from $BROKER_CONFIG,
                                           listen address also from $BROKER_LISTEN)
  demo [--listen-host H] [--broker-port P] [--idp-port P] [--app-port P]
                                           broker + built-in upstream IdP + sample app
  config validate [--require-env] FILE     check a configuration file
  discovery check ISSUER [--alg ES256] [--discovery-url URL] [--allow-network CIDR]...
                                           show what an upstream supports for DPoP
  keys generate [--alg ES256|Ed25519|RS256|PS256]
                                           print a new PKCS#8 PEM private key
  healthcheck [--url URL | --listen HOST:PORT | --config FILE] [--ready] [--timeout 5s]
                                           probe a running broker's /healthz (/readyz): exit 0 or 1
  logs [--type f] [--connection NAME] [--client ID] [--error CODE] [--q QUERY]
       [--limit N] [--json] [--follow] [--url URL] [--token TOKEN]
                                           show or tail login events (management API)
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	sub := func(want string) bool { return len(args) > 1 && args[1] == want }
	switch {
	case args[0] == "serve":
		return cmdServe(ctx, args[1:], stdout, stderr)
	case args[0] == "demo":
		return cmdDemo(ctx, args[1:], stdout, stderr)
	case args[0] == "config" && sub("validate"):
		return cmdConfigValidate(args[2:], stdout, stderr)
	case args[0] == "discovery" && sub("check"):
		return cmdDiscoveryCheck(ctx, args[2:], stdout, stderr)
	case args[0] == "keys" && sub("generate"):
		return cmdKeysGenerate(args[2:], stdout, stderr)
	case args[0] == "healthcheck":
		return cmdHealthcheck(ctx, args[1:], stdout, stderr)
	case args[0] == "logs":
		return cmdLogs(ctx, args[1:], stdout, stderr)
	case args[0] == "help" || args[0] == "-h" || args[0] == "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "broker: unknown command %q\n\n%s", strings.Join(args, " "), usage)
	return 2
}

// parseInterspersed parses flags that may follow positional arguments and returns the
// positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for range len(args) + 1 {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	return pos, nil
}

// serveAll serves each server on its listener until ctx is done or one fails, then shuts
// all down gracefully (10 s).
func serveAll(ctx context.Context, pairs ...serverListener) error {
	errc := make(chan error, len(pairs))
	for _, p := range pairs {
		go func() {
			if err := p.srv.Serve(p.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, p := range pairs {
		if e := p.srv.Shutdown(sctx); e != nil {
			_ = p.srv.Close()
		}
	}
	return err
}

type serverListener struct {
	srv *http.Server
	ln  net.Listener
}

// maxHeaderBytes bounds the request line and headers (net/http answers 431 beyond it); the
// broker's own query limit (8 KiB at /authorize and /login/callback) fits inside.
const maxHeaderBytes = 16 << 10

func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second, MaxHeaderBytes: maxHeaderBytes,
	}
}
