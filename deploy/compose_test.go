package deploy

import (
	"context"
	"fmt"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/dpop-broker/dpop-broker/config"
	"sigs.k8s.io/yaml"
)

const composeFile = "docker-compose.yaml"

// requiredComposeVar is a ${VAR:?message} reference: compose refuses to start without VAR.
var requiredComposeVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*):\?`)

// loadCompose loads the compose file as `docker compose config` does, with compose-go:
// interpolation from env (only: not this process's environment), the Compose Specification's
// JSON schema, then the model's own consistency checks.
func loadCompose(env map[string]string) (*types.Project, error) {
	return loadComposeFile(composeFile, env)
}

func loadComposeFile(file string, env map[string]string) (*types.Project, error) {
	var list []string
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	opts, err := cli.NewProjectOptions([]string{file}, cli.WithName("dpop-broker-tryout"), cli.WithEnv(list))
	if err != nil {
		return nil, err
	}
	return opts.LoadProject(context.Background())
}

// argAfter returns the argument after flag in args, or "".
func argAfter(args []string, flag string) string {
	if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	return ""
}

// serviceRunning returns the names of the services whose command starts with the broker
// command word (serve, demo-idp), sorted.
func serviceRunning(p *types.Project, word string) []string {
	var names []string
	for name, s := range p.Services {
		if len(s.Command) > 0 && s.Command[0] == word {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// nonRootUser reports whether a compose user ("uid[:gid]" or a name) is set and is not root.
func nonRootUser(u string) bool {
	uid, _, _ := strings.Cut(u, ":")
	return uid != "" && uid != "0" && uid != "root"
}

// composePolicy returns every way the compose try-out departs from the deployment policy:
// the broker on a Redis store that is a service of the file, its health check by `broker
// healthcheck`, ports published on loopback only (plain http) and never admin_listen's,
// every variable of its configuration and every secret of any service interpolated from
// the environment (raw is the file before interpolation), each service non-root, read-only
// and without capabilities, and the demo IdP on the broker's network at the issuer the
// configuration's connection names.
func composePolicy(p *types.Project, raw map[string]any, bc *brokerConfig) []string {
	var problems []string
	add := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	brokers := serviceRunning(p, "serve")
	if len(brokers) != 1 {
		return []string{fmt.Sprintf("%d services run broker serve, want one", len(brokers))}
	}
	name := brokers[0]
	broker := p.Services[name]

	if bc.cfg.Store.Type != "redis" {
		add("store.type is %q: the try-out shows the broker on a redis store", bc.cfg.Store.Type)
	}
	for _, a := range bc.cfg.Store.Redis.Addrs {
		host, _ := addrPort(a)
		if _, ok := p.Services[host]; !ok {
			add("store.redis.addrs %s: no service %s in the compose file", a, host)
		}
	}
	if hc := broker.HealthCheck; hc == nil || hc.Disable || !slices.Contains(hc.Test, "/broker") || !slices.Contains(hc.Test, "healthcheck") {
		add("service %s: its healthcheck must run /broker healthcheck", name)
	}

	// Ports: loopback only, the listen port, never admin_listen's.
	listenHost, listenPort := addrPort(bc.cfg.Listen)
	if v := broker.Environment["BROKER_LISTEN"]; v != nil {
		listenHost, listenPort = addrPort(*v)
	}
	if ip := net.ParseIP(listenHost); ip == nil || !ip.IsUnspecified() {
		add("service %s: the broker must listen on every interface of its container (BROKER_LISTEN=0.0.0.0:PORT)", name)
	}
	published := map[int]bool{}
	for _, sp := range broker.Ports {
		published[int(sp.Target)] = true
		if ip := net.ParseIP(sp.HostIP); ip == nil || !ip.IsLoopback() {
			add("service %s: port %d is published on %q: plain http stays on loopback (127.0.0.1)", name, sp.Target, sp.HostIP)
		}
	}
	if !published[listenPort] {
		add("service %s: the listen port %d is not published", name, listenPort)
	}
	adminHost, adminPort := addrPort(bc.cfg.AdminListen)
	if ip := net.ParseIP(adminHost); ip == nil || !ip.IsLoopback() {
		add("admin_listen %q must be on the container's loopback (127.0.0.1:PORT)", bc.cfg.AdminListen)
	}
	for sname, s := range p.Services {
		for _, sp := range s.Ports {
			if adminPort != 0 && int(sp.Target) == adminPort && (sname == name || s.NetworkMode == "service:"+name) {
				add("service %s: admin_listen's port %d is published", sname, adminPort)
			}
		}
	}

	// Secrets: interpolated from the environment, never written in the file.
	rawEnv := func(service string) map[string]any {
		svc, _ := raw["services"].(map[string]any)[service].(map[string]any)
		env, _ := svc["environment"].(map[string]any)
		return env
	}
	interpolated := func(v any, name string) bool {
		s, ok := v.(string)
		return ok && (s == "${"+name+"}" || strings.HasPrefix(s, "${"+name+":"))
	}
	for _, v := range bc.vars {
		if !interpolated(rawEnv(name)[v], v) {
			add("service %s: %s (read by the configuration) must be ${%s:?...} in its environment", name, v, v)
		}
	}
	for sname, s := range p.Services {
		for k := range s.Environment {
			if secretEnvPattern.MatchString(k) && !interpolated(rawEnv(sname)[k], k) {
				add("service %s: %s is a secret: write ${%s:?...} (from the environment), not its value", sname, k, k)
			}
		}
		if !nonRootUser(s.User) {
			add("service %s: must run as a non-root user (user: UID:GID)", sname)
		}
		if !s.ReadOnly {
			add("service %s: read_only must be true", sname)
		}
		if !slices.Contains(s.CapDrop, "ALL") {
			add("service %s: cap_drop must be [ALL]", sname)
		}
	}

	// The demo IdP: on the broker's network, at the URL a connection names.
	for _, idp := range serviceRunning(p, "demo-idp") {
		s := p.Services[idp]
		if s.NetworkMode != "service:"+name {
			add("service %s: network_mode must be service:%s (the broker reaches the IdP on loopback, as browsers do)", idp, name)
		}
		issuer := argAfter(s.Command, "--issuer")
		if !slices.ContainsFunc(bc.cfg.Connections, func(c config.Connection) bool { return c.Options.Issuer == issuer }) {
			add("service %s: --issuer %q is no connection's issuer", idp, issuer)
		}
		if _, port := addrPort(argAfter(s.Command, "--listen")); !published[port] {
			add("service %s: its --listen port %d is not published by %s", idp, port, name)
		}
	}
	slices.Sort(problems)
	return problems
}

// The compose file loads with compose-go (the Compose Specification's schema), refuses to
// load while a secret is not in the environment, mounts a configuration that passes
// `broker config validate`, and follows the deployment policy; each rule of the policy is
// seen to fail on a file that breaks it.
func TestComposeFileFollowsTheSpecificationAndTheDeploymentPolicy(t *testing.T) {
	text, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, m := range requiredComposeVar.FindAllStringSubmatch(string(text), -1) {
		env[m[1]] = testValue(m[1])
	}
	if len(env) == 0 {
		t.Fatal("the compose file requires no variable: where do its secrets come from?")
	}
	if _, err := loadCompose(nil); err == nil || !strings.Contains(err.Error(), "required variable") {
		t.Errorf("loading without the secrets in the environment: %v, want a required variable missing", err)
	}
	p, err := loadCompose(env)
	if err != nil {
		t.Fatalf("compose-go: %v", err)
	}
	var raw map[string]any
	if err := yaml.Unmarshal(text, &raw); err != nil {
		t.Fatal(err)
	}

	// The configuration the broker serves: the file bound at its --config path.
	brokers := serviceRunning(p, "serve")
	if len(brokers) != 1 {
		t.Fatalf("services running broker serve: %v, want one", brokers)
	}
	cfgPath := argAfter(p.Services[brokers[0]].Command, "--config")
	i := slices.IndexFunc(p.Services[brokers[0]].Volumes, func(v types.ServiceVolumeConfig) bool {
		return v.Type == types.VolumeTypeBind && v.Target == cfgPath && v.ReadOnly
	})
	if i < 0 {
		t.Fatalf("service %s: no read-only bind mount at --config %q", brokers[0], cfgPath)
	}
	source := p.Services[brokers[0]].Volumes[i].Source
	cfgText, err := os.ReadFile(source)
	if err != nil {
		t.Fatal(err)
	}
	bc := checkBrokerConfig(t, source, string(cfgText))
	for _, v := range bc.vars {
		if _, ok := env[v]; !ok {
			t.Errorf("%s reads %s, which the compose file does not require (${%s:?...})", source, v, v)
		}
	}
	for _, pr := range composePolicy(p, raw, bc) {
		t.Error(pr)
	}

	service := func(p *types.Project, name string, f func(s *types.ServiceConfig)) {
		s := p.Services[name]
		f(&s)
		p.Services[name] = s
	}
	for _, tc := range []struct {
		name   string
		break_ func(p *types.Project, raw map[string]any, bc *brokerConfig)
		want   string
	}{
		{name: "a memory store", want: `store.type is "memory"`, break_: func(_ *types.Project, _ map[string]any, bc *brokerConfig) { bc.cfg.Store.Type = "memory" }},
		{name: "Redis not a service", want: "no service elsewhere", break_: func(_ *types.Project, _ map[string]any, bc *brokerConfig) {
			bc.cfg.Store.Redis.Addrs = []string{"elsewhere:6379"}
		}},
		{name: "no health check", want: "its healthcheck must run /broker healthcheck", break_: func(p *types.Project, _ map[string]any, _ *brokerConfig) {
			service(p, "broker", func(s *types.ServiceConfig) { s.HealthCheck = nil })
		}},
		{name: "published on every interface", want: `port 8080 is published on ""`, break_: func(p *types.Project, _ map[string]any, _ *brokerConfig) {
			service(p, "broker", func(s *types.ServiceConfig) { s.Ports[0].HostIP = "" })
		}},
		{name: "admin port published", want: "admin_listen's port 9090 is published", break_: func(p *types.Project, _ map[string]any, _ *brokerConfig) {
			service(p, "broker", func(s *types.ServiceConfig) {
				s.Ports = append(s.Ports, types.ServicePortConfig{HostIP: "127.0.0.1", Target: 9090, Published: "9090"})
			})
		}},
		{name: "a secret written in the file", want: "BROKER_MGMT_TOKEN is a secret", break_: func(_ *types.Project, raw map[string]any, _ *brokerConfig) {
			raw["services"].(map[string]any)["broker"].(map[string]any)["environment"].(map[string]any)["BROKER_MGMT_TOKEN"] = "written-down"
		}},
		{name: "a configuration variable not passed", want: "NEW_SECRET (read by the configuration) must be ${NEW_SECRET:?...}", break_: func(_ *types.Project, _ map[string]any, bc *brokerConfig) {
			bc.vars = append(bc.vars, "NEW_SECRET")
		}},
		{name: "root", want: "service redis: must run as a non-root user", break_: func(p *types.Project, _ map[string]any, _ *brokerConfig) {
			service(p, "redis", func(s *types.ServiceConfig) { s.User = "0:0" })
		}},
		{name: "writable root file system", want: "service broker: read_only must be true", break_: func(p *types.Project, _ map[string]any, _ *brokerConfig) {
			service(p, "broker", func(s *types.ServiceConfig) { s.ReadOnly = false })
		}},
		{name: "demo IdP on its own network", want: "network_mode must be service:broker", break_: func(p *types.Project, _ map[string]any, _ *brokerConfig) {
			service(p, "demo-idp", func(s *types.ServiceConfig) { s.NetworkMode = "" })
		}},
		{name: "demo IdP at another issuer", want: "is no connection's issuer", break_: func(_ *types.Project, _ map[string]any, bc *brokerConfig) {
			bc.cfg.Connections = nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := loadCompose(env)
			if err != nil {
				t.Fatal(err)
			}
			var raw map[string]any
			if err := yaml.Unmarshal(text, &raw); err != nil {
				t.Fatal(err)
			}
			cfg := *bc.cfg
			broken := &brokerConfig{cfg: &cfg, vars: slices.Clone(bc.vars), env: bc.env}
			tc.break_(p, raw, broken)
			problems := composePolicy(p, raw, broken)
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.want) }) {
				t.Errorf("problems %q, want one saying %q", problems, tc.want)
			}
		})
	}
}

// compose-go refuses what the Compose Specification does not allow, as docker compose does.
func TestComposeLoaderRefusesWhatTheSpecificationDoesNotAllow(t *testing.T) {
	for _, tc := range []struct{ name, file, want string }{
		{name: "a misspelt service key", file: "services:\n  x:\n    image: redis\n    readonly: true\n", want: "readonly"},
		{name: "a wrong type", file: "services:\n  x:\n    image: redis\n    read_only: [true]\n", want: "read_only"},
		{name: "a network_mode naming no service", file: "services:\n  x:\n    image: redis\n    network_mode: service:nowhere\n", want: "nowhere"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := t.TempDir() + "/compose.yaml"
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := loadComposeFile(path, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one naming %q", err, tc.want)
			}
		})
	}
}
