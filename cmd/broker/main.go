package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command and returns the exit status (exitOK, exitFailure, exitUsage,
// exitUnreachable; commands.go lists the commands).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return dispatch(ctx, args, stdout, stderr)
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
