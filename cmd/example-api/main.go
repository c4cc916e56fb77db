package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/dpop-broker/dpop-broker/dpop"
	"github.com/dpop-broker/dpop-broker/sessions"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type options struct {
	issuer, audience, jwksURL, listen, publicURL, redis, nonceSecretEnv string
	required                                                            bool
	nonceRotation                                                       time.Duration
	corsOrigins                                                         []string
	algs                                                                string
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("example-api", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.issuer, "issuer", "", "access-token issuer, exactly as in the iss claim (required)")
	fs.StringVar(&o.audience, "audience", "", "API identifier expected in aud (required)")
	fs.StringVar(&o.jwksURL, "jwks-url", "", "JWKS URL of the issuer (default ISSUER/.well-known/jwks.json)")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:0", "listen address")
	fs.StringVar(&o.publicURL, "public-url", "", "external base URL for htu checks (default http://LISTEN-ADDRESS)")
	fs.BoolVar(&o.required, "required", false, "accept only DPoP-bound tokens with the DPoP scheme")
	fs.StringVar(&o.redis, "redis", "", "Redis address for the shared jti replay cache (default: in-process cache)")
	fs.StringVar(&o.nonceSecretEnv, "nonce-secret-env", "", "environment variable holding a ≥32-byte secret; when set, proofs must carry a server nonce")
	fs.DurationVar(&o.nonceRotation, "nonce-rotation", 5*time.Minute, "server nonce rotation period")
	fs.StringVar(&o.algs, "algs", "", "space- or comma-separated DPoP proof algs (default: dpop.DefaultAlgs)")
	fs.Func("cors-origin", "allowed CORS origin (repeatable or comma-separated)", func(s string) error {
		for _, v := range strings.Split(s, ",") {
			if v = strings.TrimSpace(v); v != "" {
				o.corsOrigins = append(o.corsOrigins, strings.TrimRight(v, "/"))
			}
		}
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.issuer == "" || o.audience == "" {
		return nil, errors.New("--issuer and --audience are required")
	}
	if o.jwksURL == "" {
		o.jwksURL = strings.TrimRight(o.issuer, "/") + "/.well-known/jwks.json"
	}
	return o, nil
}

// run starts the API and serves until ctx ends; it prints "READY http://HOST:PORT" once
// listening.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "example-api:", err)
		return 2
	}
	logger := slog.New(slog.NewJSONHandler(stderr, nil))
	if err := serve(ctx, o, stdout, logger); err != nil {
		fmt.Fprintln(stderr, "example-api:", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, o *options, stdout io.Writer, logger *slog.Logger) error {
	v := &dpop.Verifier{}
	if o.algs != "" {
		v.Algs = strings.FieldsFunc(o.algs, func(r rune) bool { return r == ',' || r == ' ' })
	}
	if o.redis != "" {
		store, err := sessions.NewRedis(sessions.RedisConfig{Addrs: []string{o.redis}, Prefix: "example-api"})
		if err != nil {
			return fmt.Errorf("redis: %w", err)
		}
		defer store.Close()
		if err := store.Ping(ctx); err != nil {
			return fmt.Errorf("redis: %w", err)
		}
		v.Replay = storeReplay{store}
	} else {
		v.Replay = dpop.NewMemoryReplayCache(0)
	}
	if o.nonceSecretEnv != "" {
		secret := os.Getenv(o.nonceSecretEnv)
		if secret == "" {
			return fmt.Errorf("nonce secret: $%s is empty", o.nonceSecretEnv)
		}
		ns, err := dpop.NewNonceSource([]byte(secret), o.nonceRotation, nil)
		if err != nil {
			return fmt.Errorf("nonce secret from $%s: %w", o.nonceSecretEnv, err)
		}
		v.Nonces, v.RequireNonce = ns, true
	}

	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	base := "http://" + ln.Addr().String()
	if o.publicURL == "" {
		o.publicURL = base
	}
	rs := &dpop.ResourceServer{
		Issuer:    o.issuer,
		Audience:  o.audience,
		KeySet:    oidc.NewRemoteKeySet(ctx, o.jwksURL),
		Verifier:  v,
		Required:  o.required,
		PublicURL: o.publicURL,
		Logger:    logger,
	}
	srv := &http.Server{
		Handler:           cors(o.corsOrigins, newMux(rs)),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	logger.Info("example-api listening", slog.String("url", base), slog.Bool("dpop_required", o.required),
		slog.Bool("nonces", v.RequireNonce), slog.Bool("redis_replay_cache", o.redis != ""))
	fmt.Fprintln(stdout, "READY", base)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

func newMux(rs *dpop.ResourceServer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /api/private", rs.Wrap(http.HandlerFunc(private)))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	return mux
}

func private(w http.ResponseWriter, r *http.Request) {
	claims := dpop.TokenClaims(r.Context())
	jkt, _ := dpop.TokenJKT(claims)
	sub, _ := claims["sub"].(string)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, map[string]string{"message": "Hello from a private endpoint!", "sub": sub, "jkt": jkt})
}
