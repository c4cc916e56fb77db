package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"

	"github.com/dpop-broker/dpop-broker/broker"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/upstream/upstreamtest"
)

// demo names.
const (
	demoClientID   = "sample-app"
	demoConnection = "demo-idp"
	demoUpClientID = "broker"
	// demoAPIAudience is the demo's API (sender_constraining: allowed).
	demoAPIAudience = "https://api.example.com"
)

// cmdDemo runs the broker, a built-in upstream IdP demanding DPoP with server nonces, and a
// sample app, all in this process with a memory store and generated keys.
func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	host := fs.String("listen-host", "127.0.0.1", "host the three servers listen on; URLs use it too (127.0.0.1 when it is 0.0.0.0 or ::)")
	brokerPort := fs.Int("broker-port", 8080, "broker port (0 = pick a free one)")
	idpPort := fs.Int("idp-port", 8081, "upstream IdP port (0 = pick a free one)")
	appPort := fs.Int("app-port", 8082, "sample app port (0 = pick a free one)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	logger := slog.New(slog.NewJSONHandler(stderr, nil))
	d, err := startDemo(*host, *brokerPort, *idpPort, *appPort, logger)
	if err != nil {
		fmt.Fprintf(stderr, "broker demo: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "Open %s/ in your browser\n", d.appURL)
	if err := serveAll(ctx, d.servers...); err != nil {
		fmt.Fprintf(stderr, "broker demo: %v\n", err)
		return 1
	}
	return 0
}

// demo is the wired demo before serving.
type demo struct {
	appURL, issuer, idpURL string
	broker                 *broker.Server
	servers                []serverListener
}

func startDemo(host string, brokerPort, idpPort, appPort int, logger *slog.Logger) (_ *demo, err error) {
	var lns []net.Listener
	defer func() {
		if err != nil {
			for _, ln := range lns {
				_ = ln.Close()
			}
		}
	}()
	listen := func(port int) (net.Listener, error) {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return nil, fmt.Errorf("listen: %w", err)
		}
		lns = append(lns, ln)
		return ln, nil
	}
	idpLn, err := listen(idpPort)
	if err != nil {
		return nil, err
	}
	brokerLn, err := listen(brokerPort)
	if err != nil {
		return nil, err
	}
	appLn, err := listen(appPort)
	if err != nil {
		return nil, err
	}
	// URLs name the listen host, or 127.0.0.1 when listening on all interfaces (containers).
	urlHost := host
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		urlHost = "127.0.0.1"
	}
	origin := func(ln net.Listener) string {
		return "http://" + net.JoinHostPort(urlHost, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	}
	d := &demo{idpURL: origin(idpLn), issuer: origin(brokerLn) + "/", appURL: origin(appLn)}
	upSecret, appSecret := rand.Text(), rand.Text()
	idp, _, err := upstreamtest.NewHandler(d.idpURL, upstreamtest.Options{
		ClientID: demoUpClientID, ClientSecret: upSecret,
		DPoPAlgs:    []string{"ES256", "EdDSA", "Ed25519", "RS256"},
		RequireDPoP: true, RequireNonce: true, Interactive: true,
	})
	if err != nil {
		return nil, fmt.Errorf("upstream IdP: %w", err)
	}

	cfg := broker.Default()
	cfg.Issuer = d.issuer
	cfg.Listen = brokerLn.Addr().String()
	cfg.GenerateMissingKeys = true
	// The demo IdP listens on this machine: let the upstream address policy reach it.
	cfg.UpstreamAllowedNetworks = []string{"127.0.0.0/8", "::1"}
	if ip := idpLn.Addr().(*net.TCPAddr).IP; !ip.IsUnspecified() && !ip.IsLoopback() {
		cfg.UpstreamAllowedNetworks = append(cfg.UpstreamAllowedNetworks, ip.String())
	}
	cfg.RateLimits.Enabled = false // one local user; `serve` has them on by default
	cfg.Clients = []broker.ClientConfig{{
		ClientID: demoClientID, Name: "Sample App", ClientSecret: appSecret,
		RedirectURIs: []string{d.appURL + "/callback"}, Connections: []string{demoConnection},
		PostLogoutRedirectURIs: []string{d.appURL + "/"},
		// The sample app may obtain tokens for the demo API, with its read:messages scope.
		APIs: []broker.APIGrant{{Audience: demoAPIAudience, Scopes: []string{"read:messages"}}},
	}}
	// The broker as a DPoP server for its apps: an example API that binds tokens when the app
	// sends a proof, and server nonces (the secret is generated: GenerateMissingKeys).
	cfg.APIs = []broker.APIConfig{{Audience: demoAPIAudience, Name: "Demo API", SenderConstraining: broker.PolicyAllowed,
		Scopes: []broker.APIScope{{Name: "read:messages", Description: "Read the demo messages"}}}}
	cfg.DPoPServer.RequireNonce = true
	cfg.Connections = []broker.ConnectionConfig{{
		Name: demoConnection, Strategy: "oidc",
		Options: broker.ConnectionOptions{
			Issuer: d.idpURL, ClientID: demoUpClientID, ClientSecret: upSecret,
			Scope: "openid profile email", Type: "back_channel",
			DPoPSigningAlg: "ES256", FetchUserinfo: true,
		},
	}}
	store := sessions.NewMemory()
	events := &logs.Writer{Logger: logger, Store: store, MaxLen: cfg.Logs.MaxEvents, Hostname: "demo"}
	d.broker, err = broker.New(cfg, broker.Deps{Store: store, Events: events, Logger: logger})
	if err != nil {
		return nil, err
	}
	app := &sampleApp{
		baseURL: d.appURL, issuer: d.issuer, clientID: demoClientID, clientSecret: appSecret,
		events: events, pending: map[string]pendingLogin{},
	}
	d.servers = []serverListener{
		{newHTTPServer(idp), idpLn},
		{newHTTPServer(d.broker.Handler()), brokerLn},
		{newHTTPServer(app.handler()), appLn},
	}
	return d, nil
}
