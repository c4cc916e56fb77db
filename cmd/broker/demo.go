package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/dpop-broker/dpop-broker/broker"
	"github.com/dpop-broker/dpop-broker/buildinfo"
	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/discovery"
	"github.com/dpop-broker/dpop-broker/dpop"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// demo names.
const (
	demoClientID       = "sample-app"
	demoSecondClientID = "second-app"
	demoSecondPath     = "/second" // the second app, on the sample app's server
	demoConnection     = "demo-idp"
	demoUpClientID     = "broker"
	demoSubject        = "alice" // the user who signs in at the demo IdP
	demoUserID         = "oidc|" + demoConnection + "|" + demoSubject
	// demoAPIAudience is the demo's API (sender_constraining: allowed).
	demoAPIAudience = "https://api.example.com"
)

// cmdDemo runs the broker, a built-in upstream IdP demanding DPoP with server nonces, and two
// sample apps (single sign-on between them), all in this process with a memory store and
// generated keys. It prefers ports 8080 (broker), 8081 (IdP) and 8082 (apps); a default port that is taken is replaced by a
// free one, so the demo starts on a busy machine too. A port given by flag is used or the
// demo stops with the reason.
func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("demo", stderr)
	host := fs.String("listen-host", "127.0.0.1", "host the three servers listen on; URLs use it too (127.0.0.1 when it is 0.0.0.0 or ::)")
	brokerPort := fs.Int("broker-port", 8080, "broker port (0 = a free one; the default falls back to a free one when taken)")
	idpPort := fs.Int("idp-port", 8081, "upstream IdP port (0 = a free one; the default falls back to a free one when taken)")
	appPort := fs.Int("app-port", 8082, "sample apps' port (0 = a free one; the default falls back to a free one when taken)")
	if err := fs.Parse(args); err != nil {
		return flagExit(fs, err, stdout)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "broker demo: unexpected argument %q\n", fs.Arg(0))
		return usageMistake(stderr, findCommand("demo"))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	logger, flushLog := newLogger(stderr)
	defer flushLog()
	d, err := startDemo(*host, demoPorts{
		broker: demoPort{port: *brokerPort, flag: "--broker-port", fallback: !given["broker-port"]},
		idp:    demoPort{port: *idpPort, flag: "--idp-port", fallback: !given["idp-port"]},
		app:    demoPort{port: *appPort, flag: "--app-port", fallback: !given["app-port"]},
	}, logger)
	if err != nil {
		fmt.Fprintf(stderr, "broker demo: %v\n", err)
		return 1
	}
	defer d.broker.Close() // once the servers stopped: back-channel logout deliveries finish
	hup, stopHup := notifyHangup()
	defer stopHup()
	hctx, stopIgnoring := context.WithCancel(ctx)
	defer stopIgnoring()
	go ignoreHangup(hctx, hup, logger)
	d.printWelcome(stdout, selfCommand())
	if err := serveAll(ctx, d.servers...); err != nil {
		fmt.Fprintf(stderr, "broker demo: %v\n", err)
		return 1
	}
	return 0
}

// demo is the wired demo before serving.
type demo struct {
	appURL, secondURL, issuer, idpURL string
	mgmtToken                         string   // management API token made for this run (demoMgmtScopes)
	notes                             []string // ports that were taken and what replaced them
	idpStats                          *demoidp.Stats
	broker                            *broker.Server
	servers                           []serverListener
}

// demoPort is a port the demo prefers for one of its servers.
type demoPort struct {
	port     int    // 0 = a free port
	flag     string // the flag that sets it, for messages
	fallback bool   // a free port replaces it when it is taken (the default was not overridden)
}

// demoPorts are the ports of the demo's three servers.
type demoPorts struct{ broker, idp, app demoPort }

// demoMgmtScopes are the scopes of the demo's management token: every scope, so that the
// README's management examples (logs, connections, clients, sessions) work against the demo,
// which runs on loopback only with a token made for this run.
var demoMgmtScopes = []string{
	config.ScopeReadLogs,
	config.ScopeReadConnections, config.ScopeCreateConnections, config.ScopeUpdateConnections, config.ScopeDeleteConnections,
	config.ScopeReadClients, config.ScopeCreateClients, config.ScopeUpdateClients, config.ScopeDeleteClients,
	config.ScopeReadSessions, config.ScopeDeleteSessions,
}

// demoClientAuthAlgs are the algs of the client-authentication keys (private_key_jwt toward
// upstreams) the demo generates, so that its /client-auth/jwks.json shows them and a
// connection created through the management API may use private_key_jwt: RS256 is the
// default token_endpoint_auth_signing_alg.
var demoClientAuthAlgs = []string{"RS256", "ES256"}

func startDemo(host string, ports demoPorts, logger *slog.Logger) (_ *demo, err error) {
	// URLs name the listen host, or 127.0.0.1 when listening on all interfaces (containers).
	urlHost := host
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		urlHost = "127.0.0.1"
	}
	if !discovery.LoopbackHost(urlHost) {
		// Every demo URL is plain http, which upstream connections accept on loopback only.
		return nil, fmt.Errorf("--listen-host %q: the demo serves plain http, so it runs on loopback (127.0.0.1, ::1, localhost), or on 0.0.0.0 in a container with its URLs on 127.0.0.1", host)
	}
	d := &demo{}
	var lns []net.Listener
	defer func() {
		if err != nil {
			for _, ln := range lns {
				_ = ln.Close()
			}
		}
	}()
	// The demo binds its listeners first and builds every URL from the bound addresses, so a
	// port chosen here cannot be taken by someone else before it is used.
	listen := func(name string, p demoPort) (net.Listener, error) {
		addr := net.JoinHostPort(host, strconv.Itoa(p.port))
		ln, err := net.Listen("tcp", addr)
		if err != nil && p.fallback && p.port != 0 {
			reason := err
			if u := errors.Unwrap(err); u != nil {
				reason = u // "bind: address already in use" without the address, which the note names
			}
			var err2 error
			if ln, err2 = net.Listen("tcp", net.JoinHostPort(host, "0")); err2 == nil {
				d.notes = append(d.notes, fmt.Sprintf("port %d is not available (%v), so the %s uses port %d",
					p.port, reason, name, ln.Addr().(*net.TCPAddr).Port))
				err = nil
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%s: listen on %s (%s): %w; %s 0 picks a free port", name, addr, p.flag, err, p.flag)
		}
		lns = append(lns, ln)
		return ln, nil
	}
	idpLn, err := listen("upstream IdP", ports.idp)
	if err != nil {
		return nil, err
	}
	brokerLn, err := listen("broker", ports.broker)
	if err != nil {
		return nil, err
	}
	appLn, err := listen("sample app", ports.app)
	if err != nil {
		return nil, err
	}
	origin := func(ln net.Listener) string {
		return "http://" + net.JoinHostPort(urlHost, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	}
	d.idpURL, d.issuer, d.appURL = origin(idpLn), origin(brokerLn)+"/", origin(appLn)
	d.secondURL = d.appURL + demoSecondPath
	d.mgmtToken = rand.Text() + rand.Text() // 52 characters (the minimum is 32)
	upSecret, appSecret, secondSecret := rand.Text(), rand.Text(), rand.Text()
	var idp http.Handler
	idp, d.idpStats, err = demoidp.NewHandler(d.idpURL, demoidp.Options{
		ClientID: demoUpClientID, ClientSecret: upSecret, Subject: demoSubject,
		DPoPAlgs:    []string{"ES256", "EdDSA", "Ed25519", "RS256"},
		RequireDPoP: true, RequireNonce: true, Interactive: true,
	})
	if err != nil {
		return nil, fmt.Errorf("upstream IdP: %w", err)
	}

	cfg := config.Default()
	cfg.Issuer = d.issuer
	cfg.Listen = brokerLn.Addr().String()
	cfg.GenerateMissingKeys = true
	// The demo IdP listens on loopback (the demo stays there): let the upstream address
	// policy reach it.
	cfg.UpstreamAllowedNetworks = []string{"127.0.0.0/8", "::1"}
	cfg.RateLimits.Enabled = false // one local user; `serve` has them on by default
	cfg.Management.Tokens = []config.ManagementToken{{Name: "demo", Token: d.mgmtToken, Scopes: demoMgmtScopes}}
	// The demo user may enter the console by signing in through the broker, as operators do
	// (console.admins); the management token is the break-glass way in.
	cfg.Console.Admins = []config.ConsoleAdmin{{UserID: demoUserID}}
	// Two apps, so that the second shows single sign-on; each is told of logouts by
	// back-channel logout (docs/sessions.md).
	cfg.Clients = []config.Client{{
		ClientID: demoClientID, Name: "Sample App", ClientSecret: appSecret,
		RedirectURIs: []string{d.appURL + "/callback"}, Connections: []string{demoConnection},
		PostLogoutRedirectURIs: []string{d.appURL + "/"},
		BackchannelLogoutURI:   d.appURL + "/backchannel-logout", BackchannelLogoutSessionRequired: true,
		// The sample app may obtain tokens for the demo API, with its read:messages scope.
		APIs: []config.APIGrant{{Audience: demoAPIAudience, Scopes: []string{"read:messages"}}},
	}, {
		ClientID: demoSecondClientID, Name: "Second App", ClientSecret: secondSecret,
		RedirectURIs: []string{d.secondURL + "/callback"}, Connections: []string{demoConnection},
		PostLogoutRedirectURIs: []string{d.secondURL + "/"},
		BackchannelLogoutURI:   d.secondURL + "/backchannel-logout", BackchannelLogoutSessionRequired: true,
	}}
	// The broker as a DPoP server for its apps: an example API that binds tokens when the app
	// sends a proof, and server nonces (the secret is generated: GenerateMissingKeys).
	cfg.APIs = []config.API{{Audience: demoAPIAudience, Name: "Demo API", SenderConstraining: config.PolicyAllowed,
		Scopes: []config.APIScope{{Name: "read:messages", Description: "Read the demo messages"}}}}
	cfg.DPoPServer.RequireNonce = true
	cfg.Connections = []config.Connection{{
		Name: demoConnection, Strategy: "oidc",
		Options: config.ConnectionOptions{
			Issuer: d.idpURL, ClientID: demoUpClientID, ClientSecret: upSecret,
			Scope: "openid profile email", Type: "back_channel",
			DPoPSigningAlg: "ES256", FetchUserinfo: true,
		},
	}}
	keys, err := config.LoadKeys(cfg, true) // every key generated
	if err != nil {
		return nil, err
	}
	for _, alg := range demoClientAuthAlgs {
		key, err := dpop.GenerateKey(alg)
		if err == nil {
			err = keys.AddClientAuthKey(key, alg, false)
		}
		if err != nil {
			return nil, fmt.Errorf("client-authentication key %s: %w", alg, err)
		}
	}
	store, err := config.OpenStore(cfg) // memory: max_records with its replay budget
	if err != nil {
		return nil, err
	}
	events := &logs.Writer{Logger: logger, Store: store, MaxLen: cfg.Logs.MaxEvents, Hostname: "demo"}
	d.broker, err = broker.New(cfg, broker.Deps{Store: store, Events: events, Logger: logger, Keys: keys})
	if err != nil {
		return nil, err
	}
	apps := http.NewServeMux()
	for _, a := range []*sampleApp{{
		name: "Sample App", cookie: "sample_app", baseURL: d.appURL,
		intro: "This app trusts dpop-broker as its OpenID provider. The broker sends you to a demo upstream " +
			"IdP that requires DPoP with server nonces.",
		other:    appLink{Name: "Second App", Href: demoSecondPath + "/"},
		clientID: demoClientID, clientSecret: appSecret,
	}, {
		name: "Second App", path: demoSecondPath, cookie: "second_app", baseURL: d.secondURL,
		intro: "Another app of the same broker. Log in to Sample App first, then here: single sign-on, " +
			"the broker answers from its session without the IdP's page.",
		other:    appLink{Name: "Sample App", Href: "/"},
		clientID: demoSecondClientID, clientSecret: secondSecret,
	}} {
		a.issuer, a.events = d.issuer, events
		a.pending, a.sessions = map[string]pendingLogin{}, map[string]*appSession{}
		a.routes(apps)
	}
	d.servers = []serverListener{
		{newHTTPServer(idp), idpLn},
		{newHTTPServer(d.broker.Handler()), brokerLn},
		{newHTTPServer(apps), appLn},
	}
	return d, nil
}

// printWelcome tells the user where everything is, how to follow the login log and how to
// stop. self is how to run this binary again (selfCommand).
func (d *demo) printWelcome(w io.Writer, self string) {
	brokerURL := strings.TrimSuffix(d.issuer, "/")
	var b strings.Builder
	fmt.Fprintf(&b, "dpop-broker %s demo: broker, built-in upstream IdP (DPoP with server nonces) and two sample apps;\n"+
		"memory store and keys generated for this run.\n", buildinfo.Read().Version)
	for _, n := range d.notes {
		fmt.Fprintf(&b, "  note: %s\n", n)
	}
	fmt.Fprintf(&b, "\n  sample app    %s/\n", d.appURL)
	fmt.Fprintf(&b, "  second app    %s/\n", d.secondURL)
	fmt.Fprintf(&b, "  broker        %s  (issuer; discovery at %s/.well-known/openid-configuration)\n", d.issuer, brokerURL)
	fmt.Fprintf(&b, "  upstream IdP  %s\n", d.idpURL)
	fmt.Fprintf(&b, "  client-auth   %s/client-auth/jwks.json  (the broker's private_key_jwt keys: %s)\n", brokerURL, strings.Join(demoClientAuthAlgs, ", "))
	fmt.Fprintf(&b, "\nA management token made for this run, with every scope (%s),\nfor the README's management API examples:\n  export BROKER_URL=%s BROKER_MGMT_TOKEN=%s\n",
		strings.Join(demoMgmtScopes, " "), brokerURL, d.mgmtToken)
	fmt.Fprintf(&b, "Operators' console (\"Sign in through the broker\" as the demo user, %s, who is in console.admins;\nor \"Break-glass\" with that token):\n  %s/console/\n", demoUserID, brokerURL)
	b.WriteString("Follow the login log:\n")
	fmt.Fprintf(&b, "  BROKER_URL=%s BROKER_MGMT_TOKEN=%s %s logs --follow\n", brokerURL, d.mgmtToken, self)
	fmt.Fprintf(&b, "List the apps (README, \"Clients\": create one and log in with it):\n  curl -H 'Authorization: Bearer %s' %s/api/v2/clients\n",
		d.mgmtToken, brokerURL)
	fmt.Fprintf(&b, "List the demo user's broker sessions:\n  curl -H 'Authorization: Bearer %s' %s/api/v2/users/%s/sessions\n",
		d.mgmtToken, brokerURL, url.PathEscape(demoUserID))
	fmt.Fprintf(&b, "\nOpen %s/ in your browser\n", d.appURL)
	b.WriteString("Log in there, then open the second app: single sign-on, no IdP page. \"Check silently\" tries\n" +
		"prompt=none; \"Log out\" in one app signs the other out by back-channel logout.\n")
	b.WriteString("Stop the demo with Ctrl-C.\n")
	_, _ = io.WriteString(w, b.String())
}

// selfCommand is how to run this binary again in a printed command: "go run ./cmd/broker"
// when it was built by go run (its executable lives in the go-build cache), else the name it
// was started with.
func selfCommand() string {
	if exe, err := os.Executable(); err == nil && strings.Contains(filepath.ToSlash(exe), "/go-build") {
		return "go run ./cmd/broker"
	}
	return os.Args[0]
}
