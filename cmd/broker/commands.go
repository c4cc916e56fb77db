package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/dpop-broker/dpop-broker/config"
)

// Exit statuses of every command (README, "The command line"; `broker --help`).
const (
	exitOK          = 0
	exitFailure     = 1 // the command ran and found a problem, or failed
	exitUsage       = 2 // unknown command or flag, missing or extra argument
	exitUnreachable = 3 // an upstream IdP could not be reached or its discovery document not used
)

// exitStatusHelp documents the exit statuses in `broker --help`.
const exitStatusHelp = `exit status:
  0  success
  1  failure: the command found a problem (an invalid configuration, an upstream that
     refuses the DPoP asked of it, an unhealthy broker) or could not do its work
  2  usage: an unknown command or flag, a missing or extra argument
  3  unreachable: an upstream's discovery document could not be fetched or used
     (discovery check, config validate --online)
  healthcheck exits 1 for usage mistakes too: container engines reserve exit status 2.
`

// command documents one command: its help (--help), its line in the command list and the
// exit status of a usage mistake. run dispatches the names (commandRunner).
type command struct {
	name     string    // as typed after broker: "serve", "config validate"
	synopsis string    // the arguments after the name
	summary  string    // one line for the command list
	about    string    // what it does, for --help
	examples []example // at least one
	// usageExit is the exit status of a usage mistake (0: exitUsage).
	usageExit int
}

// example is one command line in a command's help, with what it does.
type example struct{ note, line string }

// commands are every command, in the order `broker --help` lists them.
var commands = []command{
	{
		name:     "serve",
		synopsis: "--config FILE [--listen HOST:PORT]",
		summary:  "run the broker",
		about: `Loads and checks the configuration (--config, or $BROKER_CONFIG), opens the store and serves
the broker on the configuration's listen address (--listen or $BROKER_LISTEN override it; a
socket passed by systemd socket activation is used instead). Logs are JSON lines on stdout;
the "listening" line names the version. Exit 1 when the configuration is invalid or the
broker cannot start. SIGHUP reads the file again and applies what can change live (clients,
connections, APIs, management tokens, rate limits, ...); an invalid file is refused and the
running configuration kept (docs/reload.md).`,
		examples: []example{
			{"serve a configuration file", "broker serve --config config.yaml"},
			{"reload its configuration file", "kill -HUP $(pidof broker)"},
			{"as the container image does", "BROKER_CONFIG=/etc/dpop-broker/config.yaml BROKER_LISTEN=0.0.0.0:8080 broker serve"},
		},
	},
	{
		name:     "demo",
		synopsis: "[--listen-host H] [--broker-port P] [--idp-port P] [--app-port P]",
		summary:  "broker, built-in upstream IdP and two sample apps, nothing to set up",
		about: `Runs the broker, a built-in upstream IdP that demands DPoP with server nonces, and two sample
apps in this process, with a memory store and keys generated for this run. It prefers ports
8080, 8081 and 8082 and takes a free one for a default that is busy. The banner (stdout) names
the version, every URL and a management token; login events go to stderr.`,
		examples: []example{
			{"the whole demo on its default ports", "broker demo"},
			{"every server on a free port", "broker demo --broker-port 0 --idp-port 0 --app-port 0"},
		},
	},
	{
		name:     "demo-idp",
		synopsis: "[--listen HOST:PORT] [--issuer URL]",
		summary:  "only the demo's upstream IdP, for the deploy/ try-out (docker compose)",
		about: `Serves the upstream IdP that ` + "`broker demo`" + ` runs, alone: DPoP required with server nonces, a
sign-in page for the user "alice", PKCE S256, any loopback redirect URI. The broker's client_id
is "broker" and its client secret is $` + demoIdPSecretEnv + ` (at least 32 characters). --issuer is
the URL the broker and browsers reach it at (default: http:// and the listen address). For
trying a broker that runs with serve and a Redis store (deploy/docker-compose.yaml); never
an IdP for real users. /healthz answers 200.`,
		examples: []example{
			{"next to a broker on this machine", "DEMO_IDP_CLIENT_SECRET=$(openssl rand -hex 32) broker demo-idp"},
			{"in a container whose port 8081 is published on 127.0.0.1", "broker demo-idp --listen 0.0.0.0:8081 --issuer http://127.0.0.1:8081"},
		},
	},
	{
		name:     "config validate",
		synopsis: "[--require-env] [--online [--timeout 15s]] FILE",
		summary:  "check a configuration file (--online: each connection's upstream too)",
		about: `Checks a configuration file without starting anything. Every problem is printed as
"KEY: reason" (exit 1); a valid file gets a summary (issuer, store, clients, connections with
their DPoP algorithm) and "config OK". Values from environment variables that are not set here
are listed as "not set here" and do not fail the check unless --require-env is given.
--online then fetches each connection's discovery document as serve would (the address policy
with the file's upstream_allowed_networks) and checks the DPoP algorithm the connection is
configured for: exit 1 when an upstream refuses it, else 3 when one cannot be reached or its
document cannot be used (a refusal needs the file or the IdP changed; an outage may clear).`,
		examples: []example{
			{"check a file on your workstation", "broker config validate config.yaml"},
			{"on the host serve runs on: unset variables are errors", "broker config validate --require-env /etc/dpop-broker/config.yaml"},
			{"also ask every upstream whether it offers the configured DPoP", "broker config validate --online --timeout 10s config.yaml"},
		},
	},
	{
		name:     "discovery check",
		synopsis: "ISSUER [--alg ES256] [--discovery-url URL] [--allow-network CIDR]... [--timeout 15s]",
		summary:  "show what an upstream supports for DPoP",
		about: `Fetches an upstream's discovery document as serve would (the upstream address policy, no
redirects, no proxy), prints what it offers and whether it can do DPoP with --alg.
Exit 0 when it can, 1 when it cannot (dpop_not_supported, dpop_alg_mismatch), 3 when the
discovery document cannot be fetched or used (discovery_failed) within --timeout.`,
		examples: []example{
			{"can this IdP do DPoP with ES256?", "broker discovery check https://idp.example.com --alg ES256"},
			{"a discovery document at another URL", "broker discovery check https://idp.example.com/realms/corp --discovery-url https://idp.example.com/realms/corp/.well-known/openid-configuration"},
			{"the demo's IdP, on loopback", "broker discovery check http://127.0.0.1:8081 --allow-network 127.0.0.1"},
		},
	},
	{
		name:     "keys generate",
		synopsis: "[--alg ES256|Ed25519|RS256|PS256]",
		summary:  "print a new PKCS#8 PEM private key",
		about: `Prints a new private key (PKCS#8 PEM) on stdout, and its algorithm and JWK thumbprint on
stderr.`,
		examples: []example{
			{"the broker's ID-token signing key", "(umask 077; broker keys generate --alg RS256 > signing.pem)"},
			{"a DPoP key toward upstreams", "(umask 077; broker keys generate --alg ES256 > dpop.pem)"},
		},
	},
	{
		name:     "healthcheck",
		synopsis: "[--url URL | --listen HOST:PORT | --config FILE] [--ready] [--timeout 5s]",
		summary:  "probe a running broker's /healthz or /readyz",
		about: `Probes a running broker: GET /healthz (process up), or /readyz with --ready (store
reachable). Prints one line; exit 0 when the answer is 200, else 1. Usage mistakes exit 1 too:
container engines reserve exit status 2. It needs no shell or curl (the image's HEALTHCHECK).`,
		examples: []example{
			{"the broker on this machine's default address", "broker healthcheck"},
			{"readiness of a broker elsewhere", "broker healthcheck --ready --url http://127.0.0.1:9090"},
		},
		usageExit: exitFailure,
	},
	{
		name:     "logs",
		synopsis: "[--type f] [--connection NAME] [--client ID] [--error CODE] [--q QUERY] [--limit N] [--json] [--follow] [--url URL] [--token TOKEN]",
		summary:  "show or follow login events (management API)",
		about: `Shows login events from GET /api/v2/logs, oldest first; --follow tails new ones. The broker
is --url or $BROKER_URL; the token (read:logs) is --token or $BROKER_MGMT_TOKEN.`,
		examples: []example{
			{"follow the demo's logins", "BROKER_URL=http://127.0.0.1:8080 BROKER_MGMT_TOKEN=... broker logs --follow"},
			{"the last 50 failed logins through one connection", "broker logs --type f --connection corp --limit 50"},
			{"nonce retries, as JSON lines", "broker logs --error use_dpop_nonce --json"},
		},
	},
	{
		name:     "version",
		summary:  "print the version, commit, Go version and build date",
		about:    `Prints the version, the commit, the Go version and the build date of this binary (also: broker --version).`,
		examples: []example{{"", "broker version"}, {"", "broker --version"}},
	},
}

// commandRunner returns the function that runs the named command.
func commandRunner(name string) func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	noCtx := func(f func([]string, io.Writer, io.Writer) int) func(context.Context, []string, io.Writer, io.Writer) int {
		return func(_ context.Context, args []string, stdout, stderr io.Writer) int { return f(args, stdout, stderr) }
	}
	switch name {
	case "serve":
		return cmdServe
	case "demo":
		return cmdDemo
	case "demo-idp":
		return cmdDemoIdP
	case "config validate":
		return cmdConfigValidate
	case "discovery check":
		return cmdDiscoveryCheck
	case "keys generate":
		return noCtx(cmdKeysGenerate)
	case "healthcheck":
		return cmdHealthcheck
	case "logs":
		return cmdLogs
	case "version":
		return noCtx(cmdVersion)
	}
	return nil
}

// findCommand returns the command named name, or nil.
func findCommand(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

// groupCommands returns the commands under group ("config": config validate), or nil when
// group is not a group.
func groupCommands(group string) []*command {
	var cs []*command
	for i := range commands {
		if g, _, ok := strings.Cut(commands[i].name, " "); ok && g == group {
			cs = append(cs, &commands[i])
		}
	}
	return cs
}

// isHelpArg reports whether arg asks for help.
func isHelpArg(arg string) bool {
	return arg == "-h" || arg == "--help" || arg == "-help" || arg == "help"
}

// dispatch runs the command args name (`broker` and its arguments).
func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printUsage(stderr)
		return exitUsage
	}
	switch first := args[0]; {
	case isHelpArg(first):
		if len(args) > 1 && !isHelpArg(args[1]) { // broker help config validate = broker config validate --help
			return dispatch(ctx, append(slices.Clone(args[1:]), "--help"), stdout, stderr)
		}
		printUsage(stdout)
		return exitOK
	case first == "--version" || first == "-version":
		return cmdVersion(args[1:], stdout, stderr)
	case strings.HasPrefix(first, "-"):
		fmt.Fprintf(stderr, "broker: unknown flag %s%s\nRun 'broker --help' for the commands and their flags.\n",
			first, didYouMean(strings.TrimLeft(first, "-"), []string{"help", "version"}, "--"))
		return exitUsage
	}
	if group := groupCommands(args[0]); group != nil {
		switch {
		case len(args) == 1:
			printGroup(stderr, args[0], group)
			return exitUsage
		case isHelpArg(args[1]):
			printGroup(stdout, args[0], group)
			return exitOK
		}
		name := args[0] + " " + args[1]
		if c := findCommand(name); c != nil {
			return commandRunner(c.name)(ctx, args[2:], stdout, stderr)
		}
		var subs []string
		for _, c := range group {
			subs = append(subs, c.name)
		}
		fmt.Fprintf(stderr, "broker: unknown command %q%s\n", name, didYouMean(name, subs, "broker "))
		printGroup(stderr, args[0], group)
		return exitUsage
	}
	if c := findCommand(args[0]); c != nil {
		return commandRunner(c.name)(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "broker: unknown command %q%s\nRun 'broker --help' for the list of commands.\n", args[0], suggestCommand(args[0]))
	return exitUsage
}

// printUsage writes `broker --help`: the commands, where their help is, the exit statuses.
func printUsage(w io.Writer) {
	var b strings.Builder
	b.WriteString("usage: broker <command> [flags]\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-17s %s\n", c.name, c.summary)
	}
	b.WriteString("\nRun 'broker <command> --help' for a command's flags and examples (e.g. broker serve --help);\n" +
		"'broker --version' prints the version.\n\n")
	b.WriteString(exitStatusHelp)
	_, _ = io.WriteString(w, b.String())
}

// printGroup lists the commands under group (`broker config`).
func printGroup(w io.Writer, group string, cs []*command) {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: broker %s <command> [flags]\n\ncommands:\n", group)
	for _, c := range cs {
		fmt.Fprintf(&b, "  %-10s %s\n", strings.TrimPrefix(c.name, group+" "), c.summary)
	}
	fmt.Fprintf(&b, "\nRun 'broker %s <command> --help' for its flags and examples.\n", group)
	_, _ = io.WriteString(w, b.String())
}

// newFlagSet returns the flag set of the named command (commands), writing mistakes to
// stderr. Its help is printed by flagExit, not by the flag package.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	return fs
}

// flagExit finishes a command whose flags did not parse (err from fs.Parse): for --help (-h)
// it prints the command's help on stdout and returns exitOK; for a mistake, which the flag
// package has named on stderr, it adds the usage line, a suggestion for a misspelt flag and
// where the help is, and returns the command's usage exit status.
func flagExit(fs *flag.FlagSet, err error, stdout io.Writer) int {
	c := findCommand(fs.Name())
	if c == nil { // every flag set is named after its command (tested); never expected
		c = &command{name: fs.Name(), about: "(no help written for this command)"}
	}
	if errors.Is(err, flag.ErrHelp) {
		printCommandHelp(stdout, c, fs)
		return exitOK
	}
	w := fs.Output()
	if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok {
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
		if best := nearest(name, names); best != nil {
			fmt.Fprintf(w, "did you mean --%s?\n", strings.Join(best, " or --"))
		}
	}
	return usageMistake(w, c)
}

// usageMistake prints the usage line of c and where its help is, and returns its usage exit
// status (for a missing or extra argument after the flags parsed).
func usageMistake(w io.Writer, c *command) int {
	fmt.Fprintf(w, "usage: broker %s\nRun 'broker %s --help' for its flags and examples.\n", strings.TrimSpace(c.name+" "+c.synopsis), c.name)
	if c.usageExit != 0 {
		return c.usageExit
	}
	return exitUsage
}

// printCommandHelp writes a command's help: usage line, what it does, flags, examples.
func printCommandHelp(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: broker %s\n\n%s\n", strings.TrimSpace(c.name+" "+c.synopsis), c.about)
	hasFlags := false
	fs.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		fmt.Fprint(w, "\nflags:\n")
		out := fs.Output()
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(out)
	}
	fmt.Fprint(w, "\nexamples:\n")
	for _, e := range c.examples {
		if e.note != "" {
			fmt.Fprintf(w, "  # %s\n", e.note)
		}
		fmt.Fprintf(w, "  %s\n", e.line)
	}
}

// suggestCommand is didYouMean over every command: a top-level word (serve, config) or a
// subcommand's word (validate suggests "config validate").
func suggestCommand(word string) string {
	var names []string
	for _, c := range commands {
		g, _, _ := strings.Cut(c.name, " ")
		names = append(names, g, c.name)
	}
	names = append(names, "help")
	slices.Sort(names)
	return didYouMean(word, slices.Compact(names), "broker ")
}

// didYouMean returns `; did you mean "PREFIX NAME"?` naming the candidates nearest to typed
// (nearest), or "" when none is near.
func didYouMean(typed string, candidates []string, prefix string) string {
	best := nearest(typed, candidates)
	if best == nil {
		return ""
	}
	quoted := make([]string, len(best))
	for i, c := range best {
		quoted[i] = fmt.Sprintf("%q", prefix+c)
	}
	return "; did you mean " + strings.Join(quoted, " or ") + "?"
}

// nearest returns the candidates nearest to typed, or nil when none is near: by edit distance
// (a transposition counts one; at most a third of typed's length, at least 1), a prefix of at
// least 3 letters counting one. A two-word candidate ("config validate") is also compared by
// its last word.
func nearest(typed string, candidates []string) []string {
	typed = strings.ToLower(typed)
	var best []string
	bestDist := -1
	for _, c := range candidates {
		word := c
		d := config.EditDistance(typed, c)
		if _, last, ok := strings.Cut(c, " "); ok {
			word = last
			d = min(d, config.EditDistance(typed, last))
		}
		if len(typed) >= 3 && strings.HasPrefix(word, typed) {
			d = min(d, 1)
		}
		if d > max(1, len(typed)/3) {
			continue
		}
		switch {
		case bestDist < 0 || d < bestDist:
			best, bestDist = []string{c}, d
		case d == bestDist:
			best = append(best, c)
		}
	}
	return best
}
