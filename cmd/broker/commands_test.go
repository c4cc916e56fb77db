package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/buildinfo"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// Every command's --help (also -h, and `broker help COMMAND`) exits 0 and prints, on stdout,
// its usage line, its flags and at least one example that runs it.
func TestEveryCommandHelpExitsZeroWithAnExample(t *testing.T) {
	for _, c := range commands {
		if commandRunner(c.name) == nil {
			t.Errorf("%s is documented but not dispatched", c.name)
		}
		words := strings.Fields(c.name)
		for _, args := range [][]string{
			append(words[:len(words):len(words)], "--help"),
			append(words[:len(words):len(words)], "-h"),
			append([]string{"help"}, words...),
		} {
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				code, out, errOut := runCmd(t, args...)
				if code != 0 || errOut != "" {
					t.Fatalf("exit %d, stderr %q", code, errOut)
				}
				example := false
				for _, e := range c.examples {
					example = example || strings.Contains(e.line, "broker "+c.name) || c.name == "version" && strings.Contains(e.line, "broker --version")
				}
				_, examples, _ := strings.Cut(out, "\nexamples:\n  ")
				if !strings.HasPrefix(out, "usage: broker "+c.name) || !example || !strings.Contains(examples, "broker "+c.name) {
					t.Errorf("help lacks the usage line or an example running the command:\n%s", out)
				}
			})
		}
	}
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"help", "--help"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, out, errOut := runCmd(t, args...)
			if code != 0 || errOut != "" || !strings.Contains(out, "exit status:\n  0  success\n") ||
				!strings.Contains(out, "\n  3  unreachable: ") || !strings.Contains(out, "Run 'broker <command> --help'") {
				t.Fatalf("exit %d, stderr %q:\n%s", code, errOut, out)
			}
			for _, c := range commands {
				if !strings.Contains(out, "\n  "+c.name+" ") {
					t.Errorf("broker --help does not list %s", c.name)
				}
			}
		})
	}
}

// A group alone (`broker config`) lists its commands on stderr (exit 2, the subcommand is
// missing); with --help on stdout (exit 0).
func TestCommandGroupsListTheirCommands(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		wantCode   int
		wantStdout bool
		want       string
	}{
		{args: []string{"config"}, wantCode: 2, want: "\n  validate   check a configuration file"},
		{args: []string{"discovery"}, wantCode: 2, want: "\n  check      show what an upstream supports for DPoP"},
		{args: []string{"keys"}, wantCode: 2, want: "\n  generate   print a new PKCS#8 PEM private key"},
		{args: []string{"config", "--help"}, wantCode: 0, wantStdout: true, want: "usage: broker config <command> [flags]"},
		{args: []string{"help", "keys"}, wantCode: 0, wantStdout: true, want: "\n  generate   "},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errOut := runCmd(t, tc.args...)
			got, other := errOut, out
			if tc.wantStdout {
				got, other = out, errOut
			}
			if code != tc.wantCode || !strings.Contains(got, tc.want) || other != "" {
				t.Fatalf("exit %d (want %d)\nstdout:\n%s\nstderr:\n%s", code, tc.wantCode, out, errOut)
			}
		})
	}
}

// A mistyped command or flag is a usage error (exit 2) that names the nearest one.
func TestUnknownCommandSuggestsTheNearest(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string // on stderr; "" = no suggestion at all
	}{
		{name: "a letter missing", args: []string{"serv"}, want: `unknown command "serv"; did you mean "broker serve"?`},
		{name: "letters swapped", args: []string{"lgos"}, want: `did you mean "broker logs"?`},
		{name: "a subcommand without its group", args: []string{"validate", "config.yaml"}, want: `did you mean "broker config validate"?`},
		{name: "a misspelt subcommand", args: []string{"config", "valdate", "config.yaml"}, want: `unknown command "config valdate"; did you mean "broker config validate"?`},
		{name: "a prefix", args: []string{"health"}, want: `did you mean "broker healthcheck"?`},
		{name: "a misspelt top-level flag", args: []string{"--verison"}, want: `unknown flag --verison; did you mean "--version"?`},
		{name: "a misspelt command flag", args: []string{"serve", "--confg", "x.yaml"}, want: "did you mean --config?\nusage: broker serve --config FILE"},
		{name: "a misspelt flag after the argument", args: []string{"discovery", "check", "https://idp.example.com", "--timout", "5s"}, want: "did you mean --timeout?"},
		{name: "nothing near", args: []string{"frobnicate"}, want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, tc.args...)
			if code != 2 || out != "" {
				t.Fatalf("exit %d, stdout %q", code, out)
			}
			if tc.want == "" && strings.Contains(errOut, "did you mean") || !strings.Contains(errOut, tc.want) {
				t.Fatalf("stderr:\n%s\nwant %q", errOut, tc.want)
			}
		})
	}
}

// The exit statuses `broker --help` documents: 2 usage, 1 a problem found, 3 unreachable.
func TestExitStatusesAreDistinct(t *testing.T) {
	noDPoP, err := demoidp.Start(demoidp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer noDPoP.Close()
	hang := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // answers only after the check gave up
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(hang)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string // in stdout+stderr
	}{
		{name: "no command", args: nil, code: 2, want: "usage: broker <command>"},
		{name: "an unknown flag", args: []string{"keys", "generate", "--bits", "4096"}, code: 2, want: "flag provided but not defined: -bits"},
		{name: "an extra argument", args: []string{"keys", "generate", "extra"}, code: 2, want: `unexpected argument "extra"`},
		{name: "the configuration file without --config", args: []string{"serve", "config.yaml"}, code: 2, want: `unexpected argument "config.yaml" (the configuration file is --config FILE)`},
		{name: "an extra argument to demo", args: []string{"demo", "now"}, code: 2, want: "usage: broker demo ["},
		{name: "a missing argument", args: []string{"discovery", "check"}, code: 2, want: "usage: broker discovery check ISSUER"},
		{name: "a timeout that is not positive", args: []string{"discovery", "check", "https://idp.example.com", "--timeout", "0s"}, code: 2, want: "broker discovery check: --timeout must be a positive duration such as 10s"},
		{name: "config validate with a timeout that is not positive", args: []string{"config", "validate", "--online", "--timeout", "0", "x.yaml"}, code: 2, want: "broker config validate: --timeout must be a positive duration such as 10s"},
		{name: "an extra argument to version", args: []string{"version", "extra"}, code: 2, want: `unexpected argument "extra"`},
		{name: "healthcheck's usage mistakes exit 1", args: []string{"healthcheck", "--bogus"}, code: 1, want: "usage: broker healthcheck"},
		{name: "a file that cannot be read", args: []string{"config", "validate", filepath.Join(t.TempDir(), "missing.yaml")}, code: 1, want: "config: read config: "},
		{name: "an upstream without DPoP", args: []string{"discovery", "check", noDPoP.URL, "--allow-network", "127.0.0.1"}, code: 1, want: "dpop_not_supported: "},
		{name: "an upstream that refuses connections", args: []string{"discovery", "check", "http://127.0.0.1:1", "--allow-network", "127.0.0.1"}, code: 3, want: "discovery_failed: "},
		{name: "an upstream on an address the policy refuses", args: []string{"discovery", "check", noDPoP.URL}, code: 3, want: "loopback address, not in upstream_allowed_networks"},
		{name: "an upstream slower than --timeout", args: []string{"discovery", "check", slow.URL, "--allow-network", "127.0.0.1", "--timeout", "100ms"}, code: 3, want: "discovery_failed: no answer within the timeout (100ms): "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, tc.args...)
			if code != tc.code || !strings.Contains(out+errOut, tc.want) {
				t.Fatalf("exit %d (want %d), output lacks %q:\n%s%s", code, tc.code, tc.want, out, errOut)
			}
		})
	}
}

func TestVersionPrintsTheBuild(t *testing.T) {
	b := buildinfo.Read()
	want := fmt.Sprintf("dpop-broker %s\n", b.Version)
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		code, out, errOut := runCmd(t, args...)
		if code != 0 || errOut != "" || !strings.HasPrefix(out, want) || !strings.Contains(out, "\ngo:         "+runtime.Version()+"\n") ||
			!strings.Contains(out, "\ncommit:     "+b.Commit) || !strings.Contains(out, "\nbuild date: "+b.Date) {
			t.Errorf("broker %s: exit %d, stderr %q:\n%s", args[0], code, errOut, out)
		}
	}
	for _, tc := range []struct {
		name string
		info buildinfo.Info
		want string
	}{
		{
			name: "a stamped release",
			info: buildinfo.Info{Version: "v1.2.3", Commit: "0123456789abcdef0123456789abcdef01234567", GoVersion: "go1.26.8", Date: "2026-12-01T10:00:00Z"},
			want: "dpop-broker v1.2.3\ncommit:     0123456789abcdef0123456789abcdef01234567\ngo:         go1.26.8\nbuild date: 2026-12-01T10:00:00Z\n",
		},
		{
			name: "go build in a checkout with changes: the commit time stands in for the date",
			info: buildinfo.Info{Version: "v0.0.0-20261203074619-ca2885ea008e+dirty", Commit: "ca2885ea008eec191ae00726511b500b7282d1fa", Modified: true,
				GoVersion: "go1.26.8", Date: "2026-12-03T07:46:19Z", DateIsCommitTime: true},
			want: "dpop-broker v0.0.0-20261203074619-ca2885ea008e+dirty\ncommit:     ca2885ea008eec191ae00726511b500b7282d1fa (with uncommitted changes)\n" +
				"go:         go1.26.8\nbuild date: 2026-12-03T07:46:19Z (the commit's time: the build date was not stamped)\n",
		},
		{
			name: "go run",
			info: buildinfo.Info{Version: "(devel)", Commit: "unknown", GoVersion: "go1.26.8", Date: "unknown"},
			want: "dpop-broker (devel)\ncommit:     unknown\ngo:         go1.26.8\nbuild date: unknown\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			printVersion(&b, tc.info)
			if b.String() != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", b.String(), tc.want)
			}
		})
	}
}

// A binary linked with the -X flags of the Makefile and the Dockerfile reports the stamped
// values (buildinfo's test checks that those files name exactly these variables).
func TestVersionStampedAtLinkTime(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the broker")
	}
	bin := filepath.Join(t.TempDir(), "broker")
	const pkg = "github.com/dpop-broker/dpop-broker/buildinfo"
	ldflags := "-X " + pkg + ".version=v9.8.7 -X " + pkg + ".commit=0123456789abcdef0123456789abcdef01234567 -X " + pkg + ".buildDate=2026-12-01T10:00:00Z"
	build := exec.CommandContext(t.Context(), "go", "build", "-ldflags", ldflags, "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(t.Context(), bin, "--version").CombinedOutput()
	want := "dpop-broker v9.8.7\ncommit:     0123456789abcdef0123456789abcdef01234567\ngo:         " + runtime.Version() + "\nbuild date: 2026-12-01T10:00:00Z\n"
	if err != nil || string(out) != want {
		t.Fatalf("broker --version: %v\n%s\nwant:\n%s", err, out, want)
	}
}

// The demo's banner starts with the version.
func TestDemoBannerNamesTheVersion(t *testing.T) {
	var b strings.Builder
	(&demo{issuer: "http://127.0.0.1:8080/", appURL: "http://127.0.0.1:8082"}).printWelcome(&b, "broker")
	if want := "dpop-broker " + buildinfo.Read().Version + " demo: "; !strings.HasPrefix(b.String(), want) {
		t.Fatalf("banner does not start with %q:\n%s", want, b.String())
	}
}

// writeValidateConfig writes a configuration with the given connections (YAML flow mappings)
// and clients, keys for ES256 and RS256 DPoP, and loopback upstreams allowed; extra is added
// at the top level.
func writeValidateConfig(t *testing.T, extra string, clients []string, connections []string) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string][]byte{"signing.pem": testKeyPEM(t, "RS256"), "es256.pem": testKeyPEM(t, "ES256"), "rsa.pem": testKeyPEM(t, "RS256")}
	for name, pem := range files {
		if err := os.WriteFile(filepath.Join(dir, name), pem, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "issuer: \"http://127.0.0.1:8080/\"\nupstream_allowed_networks: [\"127.0.0.1\"]\n%s\n", extra)
	fmt.Fprintf(&b, "keys:\n  signing: { private_key_file: %q }\n  dpop:\n    es256: { private_key_file: %q }\n    rsa: { private_key_file: %q }\n",
		filepath.Join(dir, "signing.pem"), filepath.Join(dir, "es256.pem"), filepath.Join(dir, "rsa.pem"))
	b.WriteString("clients:\n")
	for _, c := range clients {
		fmt.Fprintf(&b, "  - %s\n", c)
	}
	b.WriteString("connections:\n")
	for _, c := range connections {
		fmt.Fprintf(&b, "  - %s\n", c)
	}
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// oidcConnection is a connection in YAML flow style; alg "" leaves DPoP off.
func oidcConnection(name, issuer, alg string) string {
	dpop := ""
	if alg != "" {
		dpop = ", dpop_signing_alg: " + alg
	}
	return fmt.Sprintf("{ name: %s, strategy: oidc, options: { issuer: %q, client_id: broker, client_secret: upstream-secret%s } }", name, issuer, dpop)
}

func TestConfigValidatePrintsASummary(t *testing.T) {
	app := func(id string) string {
		return fmt.Sprintf(`{ client_id: %s, client_secret: app-secret, redirect_uris: ["http://127.0.0.1:8082/callback"], connections: [corp] }`, id)
	}
	many := make([]string, 10)
	for i := range many {
		many[i] = app(fmt.Sprintf("app-%02d", i))
	}
	for _, tc := range []struct {
		name        string
		extra       string
		clients     []string
		connections []string
		want        string
	}{
		{
			name:    "memory store, DPoP on and off, an okta domain",
			clients: []string{app("sample-app"), app("spa")},
			connections: []string{
				oidcConnection("corp", "https://idp.example.com", "ES256"),
				oidcConnection("legacy", "https://legacy.example.com", ""),
				`{ name: okta, strategy: okta, options: { domain: example.okta.com, client_id: b, client_secret: s, dpop_signing_alg: RS256 } }`,
			},
			want: "issuer:      http://127.0.0.1:8080/\n" +
				"store:       memory (at most 100000 records; one replica only)\n" +
				"clients:     2 (sample-app, spa)\n" +
				"connections: 3\n" +
				"  corp                 oidc  https://idp.example.com                  DPoP ES256\n" +
				"  legacy               oidc  https://legacy.example.com               DPoP off\n" +
				"  okta                 okta  https://example.okta.com                 DPoP RS256\n" +
				"listen:      127.0.0.1:8080; admin_listen: none (the console, /metrics and /api/v2 are on listen)\n" +
				"log:         info, json on stdout; events to log\n" +
				"log streams: 0\n" +
				"config OK\n",
		},
		{
			name: "Redis Sentinel with TLS, more clients than one screen lists",
			extra: "store: { type: redis, redis: { addrs: [\"10.0.0.1:26379\", \"10.0.0.2:26379\"], master_name: broker, password: redis-secret, tls: { enabled: true } } }\n" +
				"admin_listen: 127.0.0.1:9090\n" +
				"log: { level: warn, format: text, events: /var/log/dpop-broker/events.jsonl }\n" +
				"log_streams: [{ name: siem, url: \"https://siem.example.com/hook?key=query-secret\", auth: { type: bearer, token: stream-secret-0123456789 } }]",
			clients:     many,
			connections: []string{oidcConnection("corp", "https://idp.example.com", "ES256")},
			want: "issuer:      http://127.0.0.1:8080/\n" +
				"store:       redis (Sentinel master broker via 10.0.0.1:26379, 10.0.0.2:26379, TLS)\n" +
				"clients:     10 (app-00, app-01, app-02, app-03, app-04, app-05, app-06, app-07, … and 2 more)\n" +
				"connections: 1\n" +
				"  corp                 oidc  https://idp.example.com                  DPoP ES256\n" +
				"listen:      127.0.0.1:8080; admin_listen: 127.0.0.1:9090 (the console, /metrics, /api/v2)\n" +
				"log:         warn, text on stdout; events to /var/log/dpop-broker/events.jsonl\n" +
				"log streams: 1 (siem → siem.example.com)\n" +
				"config OK\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, "config", "validate", writeValidateConfig(t, tc.extra, tc.clients, tc.connections))
			if code != 0 || out != tc.want {
				t.Fatalf("exit %d, stderr %q\ngot:\n%s\nwant:\n%s", code, errOut, out, tc.want)
			}
			for _, secret := range []string{"app-secret", "upstream-secret", "redis-secret", "query-secret", "stream-secret"} {
				if strings.Contains(out, secret) {
					t.Errorf("the summary shows %s", secret)
				}
			}
		})
	}
}

// config validate --online checks every connection's upstream: exit 1 when one refuses the
// DPoP its connection is configured for (even if another is unreachable), 3 when one cannot
// be reached, 0 when all can do it.
func TestConfigValidateOnlineChecksEveryUpstream(t *testing.T) {
	start := func(o demoidp.Options) string {
		p, err := demoidp.Start(o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		return p.URL
	}
	es256 := start(demoidp.Options{DPoPAlgs: []string{"ES256"}})
	plain := start(demoidp.Options{})
	const down = "http://127.0.0.1:1"
	for _, tc := range []struct {
		name        string
		connections []string
		code        int
		want        []string
	}{
		{
			name:        "every upstream can do what its connection asks",
			connections: []string{oidcConnection("corp", es256, "ES256"), oidcConnection("legacy", plain, "")},
			code:        0,
			want:        []string{"\n  corp: DPoP ES256: OK (proofs labelled ES256)\n", "\n  legacy: reachable (DPoP off)\n", "\nonline check OK: 2 upstreams\n"},
		},
		{
			name:        "an upstream without DPoP",
			connections: []string{oidcConnection("corp", es256, "ES256"), oidcConnection("legacy", plain, "ES256")},
			code:        1,
			want:        []string{"\n  corp: DPoP ES256: OK", "\n  legacy: dpop_not_supported: upstream " + plain + " does not support DPoP", "online check FAILED: 1 of 2 connections"},
		},
		{
			name:        "an upstream that does not offer the alg",
			connections: []string{oidcConnection("rsa", es256, "RS256")},
			code:        1,
			want:        []string{"\n  rsa: dpop_alg_mismatch: upstream " + es256 + " does not offer DPoP algorithm RS256"},
		},
		{
			name:        "an unreachable upstream",
			connections: []string{oidcConnection("corp", es256, "ES256"), oidcConnection("gone", down, "ES256")},
			code:        3,
			want:        []string{"\n  corp: DPoP ES256: OK", "\n  gone: discovery_failed: ", "online check FAILED: 1 of 2 upstreams could not be checked"},
		},
		{
			name:        "a refusal wins over an unreachable upstream",
			connections: []string{oidcConnection("legacy", plain, "ES256"), oidcConnection("gone", down, "")},
			code:        1,
			want:        []string{"\n  legacy: dpop_not_supported: ", "\n  gone: discovery_failed: ", "(1 unreachable)"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var clients []string
			names := make([]string, len(tc.connections))
			for i, c := range tc.connections {
				names[i] = strings.TrimSuffix(strings.Fields(c)[2], ",")
			}
			clients = append(clients, fmt.Sprintf(`{ client_id: a, client_secret: s, redirect_uris: ["http://127.0.0.1:8082/callback"], connections: [%s] }`, strings.Join(names, ", ")))
			cfg := writeValidateConfig(t, "", clients, tc.connections)
			code, out, errOut := runCmd(t, "config", "validate", "--online", cfg)
			if code != tc.code || !strings.Contains(out, "\nconfig OK\n\nupstreams (--online, at most 15s each):\n") {
				t.Fatalf("exit %d (want %d), stderr %q:\n%s", code, tc.code, errOut, out)
			}
			for _, want := range tc.want {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			// Without --online nothing is fetched and the file alone is judged.
			if code, out, _ := runCmd(t, "config", "validate", cfg); code != 0 || strings.Contains(out, "upstreams") {
				t.Errorf("without --online: exit %d:\n%s", code, out)
			}
		})
	}
	t.Run("an invalid file is not checked online", func(t *testing.T) {
		cfg := writeValidateConfig(t, "", []string{`{ client_id: a, client_secret: s, redirect_uris: ["http://127.0.0.1:8082/callback"], connections: [corp] }`},
			[]string{oidcConnection("corp", down, "ES512")})
		code, out, _ := runCmd(t, "config", "validate", "--online", cfg)
		if code != 1 || !strings.Contains(out, `dpop_signing_alg: "ES512" is not supported`) || strings.Contains(out, "upstreams") {
			t.Fatalf("exit %d:\n%s", code, out)
		}
	})
}
