package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/dpop-broker/dpop-broker/broker"
	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/discovery"
	"github.com/dpop-broker/dpop-broker/upstream"
)

// Bounds of the summary `config validate` prints, so that it fits one screen however many
// clients and connections the file has.
const (
	summaryClients     = 8
	summaryConnections = 12
)

// onlineChecksAtOnce bounds the discovery fetches `config validate --online` runs at a time.
const onlineChecksAtOnce = 4

// cmdConfigValidate prints every problem as "KEY: reason" (exit 1), or a summary of the file
// and "config OK" (exit 0). Values that come from environment variables not set here are
// listed as "not set here:" lines and do not fail the check (serve refuses to start without
// them) unless --require-env is given. Warnings (allow_insecure_http) are printed either way.
// --online then checks every connection's upstream (checkConnectionsOnline).
func cmdConfigValidate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("config validate", stderr)
	requireEnv := fs.Bool("require-env", false, "fail when a referenced environment variable is not set (check the host serve will run on)")
	online := fs.Bool("online", false, "also fetch each connection's discovery document and check the DPoP algorithm it is configured for (exit 1: refused, 3: unreachable)")
	timeout := fs.Duration("timeout", 15*time.Second, "with --online: bound on each upstream's check")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return flagExit(fs, err, stdout)
	}
	if *timeout <= 0 {
		fmt.Fprintf(stderr, "broker config validate: --timeout must be a positive duration such as 10s\n")
		return exitUsage
	}
	if len(pos) != 1 {
		return usageMistake(stderr, findCommand("config validate"))
	}
	cfg, problems, err := config.LoadAndValidate(pos[0])
	if err != nil {
		fmt.Fprintf(stdout, "config: %v\n", err)
		return exitFailure
	}
	errs, unset := config.SplitUnsetEnv(problems)
	if *requireEnv {
		// Each unset variable is one error; what the rules would say about its empty value
		// (too short, missing) is not said again.
		errs, unset = append(unset, errs...), nil
	}
	for _, p := range errs {
		fmt.Fprintln(stdout, p.Error())
	}
	for _, p := range unset {
		fmt.Fprintf(stdout, "not set here: %s\n", p.Error())
	}
	warnings := cfg.Warnings()
	for _, w := range warnings {
		fmt.Fprintf(stdout, "warning: %s\n", w.Error())
	}
	if len(errs) > 0 {
		return exitFailure
	}
	if len(unset)+len(warnings) > 0 {
		fmt.Fprintln(stdout)
	}
	printConfigSummary(stdout, cfg)
	if len(unset) > 0 {
		fmt.Fprintf(stdout, "config OK (%d values not checked: their environment variables are not set here; serve needs them)\n", len(unset))
	} else {
		fmt.Fprintln(stdout, "config OK")
	}
	if !*online {
		return exitOK
	}
	hc, err := broker.UpstreamHTTPClient(*timeout, cfg.UpstreamAllowedNetworks)
	if err != nil { // validated above; kept for safety
		fmt.Fprintf(stdout, "upstream_allowed_networks: %v\n", err)
		return exitFailure
	}
	return checkConnectionsOnline(ctx, stdout, cfg.Connections, hc, *timeout)
}

// printConfigSummary writes what the file sets up, in one screen: issuer, store, clients and
// connections with their DPoP algorithm. It names no secret (no Redis password, no client
// secret).
func printConfigSummary(w io.Writer, cfg *config.Config) {
	fmt.Fprintf(w, "issuer:      %s\n", cfg.Issuer)
	switch s := cfg.Store; s.Type {
	case "redis":
		where := strings.Join(s.Redis.Addrs, ", ")
		if s.Redis.MasterName != "" {
			where = "Sentinel master " + s.Redis.MasterName + " via " + where
		}
		tls := ""
		if s.Redis.TLS.Enabled {
			tls = ", TLS"
		}
		fmt.Fprintf(w, "store:       redis (%s%s)\n", where, tls)
	case "memory":
		fmt.Fprintf(w, "store:       memory (at most %d records; one replica only)\n", s.Memory.MaxRecords)
	default:
		fmt.Fprintf(w, "store:       %s\n", s.Type)
	}
	ids := make([]string, 0, min(len(cfg.Clients), summaryClients))
	for i := range min(len(cfg.Clients), summaryClients) {
		ids = append(ids, cfg.Clients[i].ClientID)
	}
	fmt.Fprintf(w, "clients:     %d%s\n", len(cfg.Clients), listSummary(ids, len(cfg.Clients)))
	fmt.Fprintf(w, "connections: %d\n", len(cfg.Connections))
	for i := range min(len(cfg.Connections), summaryConnections) {
		cc := &cfg.Connections[i]
		upstreamAt := connectionIssuer(cc)
		if upstreamAt == "" {
			upstreamAt = cc.Options.DiscoveryURL
		}
		fmt.Fprintf(w, "  %-20s %-5s %-40s %s\n", cc.Name, cc.Strategy, upstreamAt, dpopSummary(cc.Options.DPoPSigningAlg))
	}
	if n := len(cfg.Connections) - summaryConnections; n > 0 {
		fmt.Fprintf(w, "  … and %d more\n", n)
	}
	admin := "none (the console, /metrics and /api/v2 are on listen)"
	if cfg.AdminListen != "" {
		admin = cfg.AdminListen + " (the console, /metrics, /api/v2)"
	}
	fmt.Fprintf(w, "listen:      %s; admin_listen: %s\n", cfg.Listen, admin)
	fmt.Fprintf(w, "log:         %s, %s on %s; events to %s\n", cmp.Or(cfg.Log.Level, "info"), cfg.Log.FormatName(),
		cfg.Log.OutputName(), cfg.Log.EventsTo())
	streams := make([]string, 0, len(cfg.LogStreams))
	for _, ls := range cfg.LogStreams {
		host := "?"
		if u, err := url.Parse(ls.URL); err == nil {
			host = u.Host // never the path, query or credentials
		}
		streams = append(streams, ls.Name+" → "+host)
	}
	fmt.Fprintf(w, "log streams: %d%s\n", len(cfg.LogStreams), listSummary(streams[:min(len(streams), summaryClients)], len(streams)))
}

// listSummary is " (a, b, c)" or " (a, b, … and 3 more)" for the first names of total.
func listSummary(names []string, total int) string {
	if total == 0 {
		return ""
	}
	s := strings.Join(names, ", ")
	if more := total - len(names); more > 0 {
		s += fmt.Sprintf(", … and %d more", more)
	}
	return " (" + s + ")"
}

// dpopSummary names a connection's DPoP algorithm ("" = DPoP off).
func dpopSummary(alg string) string {
	if alg == "" {
		return "DPoP off"
	}
	return "DPoP " + alg
}

// connectionIssuer is the issuer the broker expects of a connection's upstream: options.issuer,
// or for strategy okta the one derived from options.domain (upstream.OktaIssuer); "" when
// neither is set (only discovery_url).
func connectionIssuer(cc *config.Connection) string {
	o := &cc.Options
	if cc.Strategy == "okta" && o.Issuer == "" && o.Domain != "" {
		if iss, err := upstream.OktaIssuer(o.Domain, o.AuthorizationServerID); err == nil {
			return iss
		}
	}
	return o.Issuer
}

// upstreamCheck is the outcome of checking one upstream for a DPoP algorithm.
type upstreamCheck struct {
	doc  *discovery.Document // nil when discovery failed
	wire string              // the alg the proofs are labelled with (CheckDPoP); "" with DPoP off
	code int                 // exitOK, exitFailure (refused) or exitUnreachable
	err  error               // why code is not exitOK
}

// checkUpstreamDPoP fetches the discovery document of issuer (at discoveryURL, default the
// well-known URL) through hc within timeout, and checks that it offers the DPoP alg ("" = DPoP
// off: reachable is enough). A document that cannot be fetched or used is exitUnreachable
// (discovery_failed); one without the alg is exitFailure (dpop_not_supported,
// dpop_alg_mismatch: RFC 9449 §5.1).
func checkUpstreamDPoP(ctx context.Context, hc *http.Client, timeout time.Duration, issuer, discoveryURL, alg string) upstreamCheck {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	doc, err := (&discovery.Client{HTTP: hc}).Get(ctx, issuer, discoveryURL)
	if err != nil {
		if ne := net.Error(nil); errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
			err = fmt.Errorf("no answer within the timeout (%s): %w", timeout, err)
		}
		return upstreamCheck{code: exitUnreachable, err: err}
	}
	if alg == "" {
		return upstreamCheck{doc: doc, code: exitOK}
	}
	wire, err := doc.CheckDPoP(alg)
	if err != nil {
		return upstreamCheck{doc: doc, code: exitFailure, err: err}
	}
	return upstreamCheck{doc: doc, wire: wire, code: exitOK}
}

// checkConnectionsOnline runs checkUpstreamDPoP for every connection (a few at a time) and
// prints one line each, in the file's order. It returns exitFailure when an upstream refuses
// the DPoP its connection is configured for, else exitUnreachable when one could not be
// checked, else exitOK: a refusal needs the file or the IdP changed, so it wins over an
// outage that trying again may clear.
func checkConnectionsOnline(ctx context.Context, w io.Writer, conns []config.Connection, hc *http.Client, timeout time.Duration) int {
	results := make([]upstreamCheck, len(conns))
	sem := make(chan struct{}, onlineChecksAtOnce)
	var wg sync.WaitGroup
	for i := range conns {
		cc := &conns[i]
		issuer := connectionIssuer(cc)
		if issuer == "" {
			results[i] = upstreamCheck{code: exitFailure, err: fmt.Errorf("no issuer to check (set options.issuer)")}
			continue
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i] = checkUpstreamDPoP(ctx, hc, timeout, issuer, cc.Options.DiscoveryURL, cc.Options.DPoPSigningAlg)
		})
	}
	wg.Wait()
	fmt.Fprintf(w, "\nupstreams (--online, at most %s each):\n", timeout)
	refused, unreachable := 0, 0
	for i, r := range results {
		cc := &conns[i]
		var line string
		switch r.code {
		case exitOK:
			if r.wire == "" {
				line = "reachable (DPoP off)"
			} else {
				line = fmt.Sprintf("DPoP %s: OK (proofs labelled %s)", cc.Options.DPoPSigningAlg, r.wire)
			}
		case exitUnreachable:
			unreachable++
			line = fmt.Sprintf("%s: %v", upstream.CodeDiscovery, r.err)
		default:
			refused++
			line = fmt.Sprintf("%s: %v", capabilityCode(r.err), r.err)
		}
		fmt.Fprintf(w, "  %s: %s\n", cc.Name, line)
	}
	switch {
	case refused > 0:
		fmt.Fprintf(w, "online check FAILED: %d of %d connections cannot do what they are configured for (%d unreachable)\n", refused, len(conns), unreachable)
		return exitFailure
	case unreachable > 0:
		fmt.Fprintf(w, "online check FAILED: %d of %d upstreams could not be checked\n", unreachable, len(conns))
		return exitUnreachable
	}
	fmt.Fprintf(w, "online check OK: %d upstreams\n", len(conns))
	return exitOK
}

// capabilityCode is the stable code of a refusal from CheckDPoP (dpop_not_supported,
// dpop_alg_mismatch), or dpop_check_failed.
func capabilityCode(err error) string {
	var ce *discovery.CapabilityError
	if errors.As(err, &ce) {
		return ce.Code()
	}
	return "dpop_check_failed"
}
