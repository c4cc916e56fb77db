package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"

	"github.com/dpop-broker/dpop-broker/buildinfo"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// demoIdPSecretEnv names the environment variable holding the client secret the demo IdP
// expects from the broker (the connection's client_secret).
const demoIdPSecretEnv = "DEMO_IDP_CLIENT_SECRET"

// minDemoIdPSecret is the shortest client secret demo-idp accepts (as the management tokens').
const minDemoIdPSecret = 32

// cmdDemoIdP serves only the demo's upstream IdP (package demoidp) on --listen, with the
// issuer --issuer: the IdP of the deploy/ try-out (docker compose), where the broker runs
// with `serve` and a Redis store in another container. It is the provider `broker demo`
// runs: DPoP required with server nonces, a sign-in page for the user "alice", PKCE S256.
// The broker's client id is "broker"; its secret is $DEMO_IDP_CLIENT_SECRET (never a flag:
// command lines are visible to every process). Any loopback redirect URI is accepted, so a
// broker whose public_url is on 127.0.0.1 can sign in through it. /healthz answers 200 for
// container health checks.
func cmdDemoIdP(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("demo-idp", stderr)
	listen := fs.String("listen", "127.0.0.1:8081", "address the IdP listens on (0.0.0.0:8081 in a container)")
	issuer := fs.String("issuer", "", "the IdP's issuer URL as the broker and browsers reach it (default: http:// and the listen address, 127.0.0.1 for 0.0.0.0)")
	if err := fs.Parse(args); err != nil {
		return flagExit(fs, err, stdout)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "broker demo-idp: unexpected argument %q\n", fs.Arg(0))
		return usageMistake(stderr, findCommand("demo-idp"))
	}
	secret := os.Getenv(demoIdPSecretEnv)
	if len(secret) < minDemoIdPSecret {
		fmt.Fprintf(stderr, "broker demo-idp: $%s must hold the broker's client secret, at least %d characters (openssl rand -hex 32)\n", demoIdPSecretEnv, minDemoIdPSecret)
		return exitFailure
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "broker demo-idp: --listen: %v\n", err)
		return exitFailure
	}
	defer func() { _ = ln.Close() }()
	iss := *issuer
	if iss == "" {
		iss = demoIdPDefaultIssuer(ln.Addr().(*net.TCPAddr))
	}
	if u, err := url.Parse(iss); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		fmt.Fprintf(stderr, "broker demo-idp: --issuer %q must be an http(s) URL without query, fragment or user info\n", iss)
		return exitFailure
	}
	idp, _, err := demoidp.NewHandler(iss, demoidp.Options{
		ClientID: demoUpClientID, ClientSecret: secret, Subject: demoSubject,
		DPoPAlgs:    []string{"ES256", "EdDSA", "Ed25519", "RS256"},
		RequireDPoP: true, RequireNonce: true, Interactive: true,
	})
	if err != nil {
		fmt.Fprintf(stderr, "broker demo-idp: %v\n", err)
		return exitFailure
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.Handle("/", idp)
	fmt.Fprintf(stdout, "dpop-broker %s demo IdP (DPoP with server nonces; user %q, client_id %q) listening on %s\n  issuer %s\n",
		buildinfo.Read().Version, demoSubject, demoUpClientID, ln.Addr(), iss)
	if err := serveAll(ctx, serverListener{newHTTPServer(mux), ln}); err != nil {
		fmt.Fprintf(stderr, "broker demo-idp: %v\n", err)
		return exitFailure
	}
	return exitOK
}

// demoIdPDefaultIssuer is http:// and the bound address, 127.0.0.1 for an unspecified host
// (0.0.0.0 or ::, in a container), as `broker demo` names its URLs.
func demoIdPDefaultIssuer(a *net.TCPAddr) string {
	host := a.IP.String()
	if a.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(a.Port))
}
