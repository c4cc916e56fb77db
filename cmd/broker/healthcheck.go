package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
)

// healthcheckTarget works out the URL to probe: --url, else the listen address from --listen
// or $BROKER_LISTEN, else from the configuration file (--config or $BROKER_CONFIG), else the
// default listen address.
func healthcheckTarget(rawURL, listen, configPath string, ready bool) (string, error) {
	path := "/healthz"
	if ready {
		path = "/readyz"
	}
	if rawURL != "" {
		u, err := url.Parse(rawURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return "", fmt.Errorf("--url %q must be the broker's base URL such as http://127.0.0.1:8080", rawURL)
		}
		return strings.TrimSuffix(rawURL, "/") + path, nil
	}
	addr := listen
	if addr == "" && configPath != "" {
		cfg, err := config.Load(configPath)
		var fe config.FieldErrors
		if err != nil && !errors.As(err, &fe) { // problems elsewhere in the file do not matter here
			return "", err
		}
		addr = cfg.Listen
	}
	if addr == "" {
		addr = config.Default().Listen
	}
	base, err := probeBase(addr)
	if err != nil {
		return "", fmt.Errorf("listen address: %w", err)
	}
	return base + path, nil
}

// cmdHealthcheck probes a running broker: GET /healthz (process up), or /readyz with --ready
// (store reachable). It prints one line and exits 0 when the answer is 200, else 1 (also for
// bad flags: container engines reserve exit status 2). It needs no shell or curl, so it
// works as the HEALTHCHECK of the distroless image.
func cmdHealthcheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("healthcheck", stderr)
	rawURL := fs.String("url", "", "broker base URL to probe (default: the listen address, from --listen, $"+listenEnv+" or the configuration)")
	listen := fs.String("listen", os.Getenv(listenEnv), "listen address of the broker to probe (default $"+listenEnv+")")
	configPath := fs.String("config", os.Getenv("BROKER_CONFIG"), "configuration file whose listen address to probe (default $BROKER_CONFIG)")
	ready := fs.Bool("ready", false, "probe /readyz (store reachable) instead of /healthz (process up)")
	timeout := fs.Duration("timeout", 5*time.Second, "bound on the whole probe")
	if err := fs.Parse(args); err != nil {
		return flagExit(fs, err, stdout) // 1 for a mistake: container engines reserve 2
	}
	if fs.NArg() > 0 || *timeout <= 0 {
		return usageMistake(stderr, findCommand("healthcheck"))
	}
	target, err := healthcheckTarget(*rawURL, *listen, *configPath, *ready)
	if err != nil {
		fmt.Fprintf(stderr, "unhealthy: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		fmt.Fprintf(stderr, "unhealthy: %v\n", err)
		return 1
	}
	client := &http.Client{
		Transport:     &http.Transport{Proxy: nil, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is printed already
		}
		hint := ""
		if *rawURL == "" && *listen == "" && *configPath == "" {
			hint = " (the default address: pass --url, --listen or --config to probe another)"
		}
		fmt.Fprintf(stderr, "unhealthy: GET %s: %v%s\n", target, err, hint)
		return 1
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "unhealthy: GET %s: %s\n", target, resp.Status)
		return 1
	}
	fmt.Fprintf(stdout, "healthy: GET %s: %s\n", target, resp.Status)
	return 0
}
