package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// requiredEnv, when set to 1 (the Makefile does), makes a missing validator (node, or
// deploy/node_modules before `npm ci --prefix deploy`) a failure instead of a skip.
const requiredEnv = "DEPLOY_CHECKS_REQUIRED"

// manifest is one YAML document of deploy/kubernetes.
type manifest struct {
	source string // file#index
	doc    []byte
}

var documentSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// readManifests reads every document of deploy/kubernetes/*.yaml (comment-only ones apart).
func readManifests(t *testing.T) []manifest {
	t.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in deploy/kubernetes (%v)", err)
	}
	var ms []manifest
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range documentSeparator.Split(string(data), -1) {
			var v any
			if err := yaml.Unmarshal([]byte(doc), &v); err != nil {
				t.Fatalf("%s#%d: %v", f, i, err)
			}
			if v != nil {
				ms = append(ms, manifest{source: fmt.Sprintf("%s#%d", f, i), doc: []byte(doc)})
			}
		}
	}
	return ms
}

// cluster is every object of the manifests, decoded into the Kubernetes API's Go types.
type cluster struct {
	deployments []*appsv1.Deployment
	services    []*corev1.Service
	ingresses   []*networkingv1.Ingress
	configMaps  []*corev1.ConfigMap
	secrets     []*corev1.Secret
}

// decodeCluster decodes every manifest strictly: a field the API type lacks (a misspelt
// livenessprobe, a field at the wrong level) or a duplicate field is a problem, which the
// OpenAPI schemas let through (they allow unknown fields; kubectl apply --validate=strict
// refuses them). A kind the policy does not know
// is a problem too, so that a new kind of object gets its checks.
func decodeCluster(ms []manifest) (*cluster, []string) {
	c := &cluster{}
	var problems []string
	for _, m := range ms {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(m.doc, &tm); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", m.source, err))
			continue
		}
		var obj any
		switch tm.APIVersion + " " + tm.Kind {
		case "apps/v1 Deployment":
			d := &appsv1.Deployment{}
			c.deployments, obj = append(c.deployments, d), d
		case "v1 Service":
			s := &corev1.Service{}
			c.services, obj = append(c.services, s), s
		case "networking.k8s.io/v1 Ingress":
			i := &networkingv1.Ingress{}
			c.ingresses, obj = append(c.ingresses, i), i
		case "v1 ConfigMap":
			cm := &corev1.ConfigMap{}
			c.configMaps, obj = append(c.configMaps, cm), cm
		case "v1 Secret":
			s := &corev1.Secret{}
			c.secrets, obj = append(c.secrets, s), s
		case "policy/v1 PodDisruptionBudget":
			obj = &policyv1.PodDisruptionBudget{}
		case "networking.k8s.io/v1 NetworkPolicy":
			obj = &networkingv1.NetworkPolicy{}
		default:
			problems = append(problems, fmt.Sprintf("%s: %s %s: a kind the deployment checks do not know (add it to decodeCluster)", m.source, tm.APIVersion, tm.Kind))
			continue
		}
		// As the API server decodes: field names match exactly (encoding/json would take
		// livenessprobe for livenessProbe), unknown and duplicate fields are errors.
		j, err := yaml.YAMLToJSONStrict(m.doc)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %s: %v", m.source, tm.Kind, err))
			continue
		}
		strict, err := kjson.UnmarshalStrict(j, obj, kjson.DisallowUnknownFields, kjson.DisallowDuplicateFields)
		for _, e := range append(strict, err) {
			if e != nil {
				problems = append(problems, fmt.Sprintf("%s: %s: %v", m.source, tm.Kind, e))
			}
		}
	}
	return c, problems
}

// The manifests are valid objects of the Kubernetes API: its OpenAPI schemas (types,
// required fields, enums), checked by kubernetes-models' validators.
func TestKubernetesManifestsMatchTheAPISchemas(t *testing.T) {
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat("node_modules/kubernetes-models/package.json")
	}
	if err != nil {
		if os.Getenv(requiredEnv) == "1" {
			t.Fatalf("the schema validator is not installed (npm ci --prefix deploy): %v", err)
		}
		t.Skipf("the schema validator is not installed (npm ci --prefix deploy; %s=1 makes this a failure): %v", requiredEnv, err)
	}
	type input struct {
		Source string          `json:"source"`
		Object json.RawMessage `json:"object"`
	}
	var in []input
	for _, m := range readManifests(t) {
		j, err := yaml.YAMLToJSON(m.doc)
		if err != nil {
			t.Fatalf("%s: %v", m.source, err)
		}
		in = append(in, input{m.source, j})
	}
	for _, tc := range []struct {
		name    string
		objects []input
		want    string // in the output; "" = every object valid
	}{
		{name: "the manifests", objects: in},
		{name: "a wrong type is refused", want: "must be integer", objects: []input{{"bad#0",
			json.RawMessage(`{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"},"spec":{"replicas":"2","selector":{},"template":{}}}`)}}},
		{name: "an unknown kind is refused", want: "no schema for v1 Nonsense", objects: []input{{"bad#0",
			json.RawMessage(`{"apiVersion":"v1","kind":"Nonsense","metadata":{"name":"x"}}`)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdin, err := json.Marshal(tc.objects)
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(node, "validate-kubernetes.mjs")
			cmd.Stdin = bytes.NewReader(stdin)
			out, err := cmd.CombinedOutput()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("schema validation: %v\n%s", err, out)
			case tc.want == "" && !strings.Contains(string(out), fmt.Sprintf("%d objects valid", len(tc.objects))):
				t.Errorf("unexpected output:\n%s", out)
			case tc.want != "" && (err == nil || !strings.Contains(string(out), tc.want)):
				t.Errorf("exit %v, want a failure naming %q:\n%s", err, tc.want, out)
			}
		})
	}
}

// The manifests decode strictly into the Kubernetes API types.
func TestKubernetesManifestsHaveOnlyKnownFields(t *testing.T) {
	_, problems := decodeCluster(readManifests(t))
	for _, p := range problems {
		t.Error(p)
	}
	bad := manifest{"bad#0", []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      containers:\n        - name: c\n          livenessprobe: {}\n")}
	if _, problems := decodeCluster([]manifest{bad}); len(problems) != 1 || !strings.Contains(problems[0], `unknown field "spec.template.spec.containers[0].livenessprobe"`) {
		t.Errorf("a misspelt field: %q", problems)
	}
}

// brokerDeployment returns the Deployment that runs `broker serve`, its container and the
// configuration file it serves (--config).
func brokerDeployment(c *cluster) (*appsv1.Deployment, *corev1.Container, string, error) {
	var found []*appsv1.Deployment
	var ctr *corev1.Container
	var cfgPath string
	for _, d := range c.deployments {
		for i := range d.Spec.Template.Spec.Containers {
			args := slices.Concat(d.Spec.Template.Spec.Containers[i].Command, d.Spec.Template.Spec.Containers[i].Args)
			if j := slices.Index(args, "serve"); j >= 0 {
				found, ctr = append(found, d), &d.Spec.Template.Spec.Containers[i]
				if k := slices.Index(args, "--config"); k >= 0 && k+1 < len(args) {
					cfgPath = args[k+1]
				}
			}
		}
	}
	switch {
	case len(found) != 1:
		return nil, nil, "", fmt.Errorf("%d containers run broker serve, want one", len(found))
	case cfgPath == "":
		return nil, nil, "", fmt.Errorf("deployment %s: broker serve without --config FILE", found[0].Name)
	}
	return found[0], ctr, cfgPath, nil
}

// brokerConfigText finds the configuration the broker serves: the ConfigMap key mounted at
// the --config path.
func brokerConfigText(c *cluster) (source, text string, err error) {
	d, ctr, cfgPath, err := brokerDeployment(c)
	if err != nil {
		return "", "", err
	}
	for _, vm := range ctr.VolumeMounts {
		if vm.MountPath != path.Dir(cfgPath) {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name != vm.Name || v.ConfigMap == nil {
				continue
			}
			for _, cm := range c.configMaps {
				if cm.Name == v.ConfigMap.Name {
					if text, ok := cm.Data[path.Base(cfgPath)]; ok {
						return "ConfigMap " + cm.Name + " " + path.Base(cfgPath), text, nil
					}
				}
			}
		}
	}
	return "", "", fmt.Errorf("deployment %s: no ConfigMap key mounted at --config %s", d.Name, cfgPath)
}

// containerPort resolves a probe's or Service's port (a number or a container port's name)
// against the container's ports; 0 when a name is unknown.
func containerPort(ctr *corev1.Container, p intstr.IntOrString) int {
	if p.Type == intstr.Int {
		return p.IntValue()
	}
	for _, cp := range ctr.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort)
		}
	}
	return 0
}

func addrPort(addr string) (string, int) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0
	}
	n, _ := strconv.Atoi(port)
	return host, n
}

// selects reports whether a Service's selector matches the Deployment's pods.
func selects(s *corev1.Service, d *appsv1.Deployment) bool {
	if len(s.Spec.Selector) == 0 {
		return false
	}
	for k, v := range s.Spec.Selector {
		if d.Spec.Template.Labels[k] != v {
			return false
		}
	}
	return true
}

// kubernetesPolicy returns every way the manifests depart from the deployment policy: two
// broker replicas on a Redis store that a Service of the manifests serves, readiness on
// /readyz and liveness on /healthz at the listen port, admin_listen on the pod's loopback and
// in no container port, Service or Ingress, every variable of the configuration from a
// Secret (no secret value in any env, no Secret written in the manifests), and every
// container non-root on a read-only root file system without privilege escalation.
func kubernetesPolicy(c *cluster, bc *brokerConfig) []string {
	var problems []string
	add := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	d, ctr, _, err := brokerDeployment(c)
	if err != nil {
		return []string{err.Error()}
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		add("deployment %s: replicas must be 2", d.Name)
	}

	// The store: Redis, at a Service of the manifests.
	if bc.cfg.Store.Type != "redis" {
		add("store.type is %q: the replicas must share a redis store", bc.cfg.Store.Type)
	}
	for _, a := range bc.cfg.Store.Redis.Addrs {
		host, port := addrPort(a)
		if !slices.ContainsFunc(c.services, func(s *corev1.Service) bool {
			return s.Name == host && slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return int(p.Port) == port })
		}) {
			add("store.redis.addrs %s: no Service %s with port %d in the manifests", a, host, port)
		}
	}

	// Probes at the listen port.
	listen := bc.cfg.Listen
	for _, e := range ctr.Env {
		if e.Name == "BROKER_LISTEN" {
			listen = e.Value
		}
	}
	listenHost, listenPort := addrPort(listen)
	if ip := net.ParseIP(listenHost); listenHost != "" && (ip == nil || !ip.IsUnspecified()) {
		add("listen %s: the broker must listen on every interface of the pod (0.0.0.0)", listen)
	}
	for _, p := range []struct {
		kind, path string
		probe      *corev1.Probe
	}{{"readinessProbe", "/readyz", ctr.ReadinessProbe}, {"livenessProbe", "/healthz", ctr.LivenessProbe}} {
		switch {
		case p.probe == nil || p.probe.HTTPGet == nil:
			add("container %s: %s must be an httpGet of %s", ctr.Name, p.kind, p.path)
		case p.probe.HTTPGet.Path != p.path || containerPort(ctr, p.probe.HTTPGet.Port) != listenPort:
			add("container %s: %s must GET %s on the listen port %d", ctr.Name, p.kind, p.path, listenPort)
		}
	}

	// admin_listen: on the pod's loopback, exposed nowhere.
	adminHost, adminPort := addrPort(bc.cfg.AdminListen)
	if ip := net.ParseIP(adminHost); ip == nil || !ip.IsLoopback() {
		add("admin_listen %q must be on the pod's loopback (127.0.0.1:PORT): /console, /metrics and /api/v2 stay off the network", bc.cfg.AdminListen)
	}
	if adminPort != 0 {
		for _, cp := range ctr.Ports {
			if int(cp.ContainerPort) == adminPort {
				add("container %s: admin_listen's port %d is a container port", ctr.Name, adminPort)
			}
		}
		for _, s := range c.services {
			for _, sp := range s.Spec.Ports {
				target := sp.TargetPort
				if target.Type == intstr.Int && target.IntVal == 0 {
					target = intstr.FromInt32(sp.Port)
				}
				if selects(s, d) && containerPort(ctr, target) == adminPort {
					add("service %s: port %s reaches admin_listen's port %d", s.Name, sp.Name, adminPort)
				}
			}
		}
		for _, ing := range c.ingresses {
			for _, r := range ing.Spec.Rules {
				if r.HTTP == nil {
					continue
				}
				for _, p := range r.HTTP.Paths {
					if p.Backend.Service != nil && int(p.Backend.Service.Port.Number) == adminPort {
						add("ingress %s: a backend on admin_listen's port %d", ing.Name, adminPort)
					}
				}
			}
		}
	}

	// Secrets: from a Secret through env, never written down.
	for _, v := range bc.vars {
		i := slices.IndexFunc(ctr.Env, func(e corev1.EnvVar) bool { return e.Name == v })
		if i < 0 || ctr.Env[i].ValueFrom == nil || ctr.Env[i].ValueFrom.SecretKeyRef == nil {
			add("container %s: %s (read by the configuration) must come from a Secret (env valueFrom.secretKeyRef)", ctr.Name, v)
		}
	}
	for _, s := range c.secrets {
		add("secret %s is written in the manifests: create it from your secret store instead", s.Name)
	}
	for _, dep := range c.deployments {
		spec := dep.Spec.Template.Spec
		for _, ct := range slices.Concat(spec.InitContainers, spec.Containers) {
			for _, e := range ct.Env {
				fromConfigMap := e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil
				if secretEnvPattern.MatchString(e.Name) && (e.Value != "" || fromConfigMap) {
					add("container %s: %s is a secret: take it from a Secret (valueFrom.secretKeyRef)", ct.Name, e.Name)
				}
			}
			// Non-root, read-only root file system, no privilege escalation.
			sc := ct.SecurityContext
			if sc == nil {
				sc = &corev1.SecurityContext{}
			}
			psc := spec.SecurityContext
			if psc == nil {
				psc = &corev1.PodSecurityContext{}
			}
			nonRoot := sc.RunAsNonRoot
			if nonRoot == nil {
				nonRoot = psc.RunAsNonRoot
			}
			user := sc.RunAsUser
			if user == nil {
				user = psc.RunAsUser
			}
			if nonRoot == nil || !*nonRoot || user != nil && *user == 0 {
				add("container %s: must run as non-root (runAsNonRoot: true, runAsUser not 0)", ct.Name)
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				add("container %s: readOnlyRootFilesystem must be true", ct.Name)
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				add("container %s: allowPrivilegeEscalation must be false", ct.Name)
			}
		}
	}
	return problems
}

// The manifests follow the deployment policy, and the configuration they mount passes
// `broker config validate`; each rule of the policy is seen to fail on a manifest that
// breaks it.
func TestKubernetesManifestsFollowTheDeploymentPolicy(t *testing.T) {
	ms := readManifests(t)
	c, problems := decodeCluster(ms)
	if len(problems) > 0 {
		t.Fatalf("the manifests do not decode (TestKubernetesManifestsHaveOnlyKnownFields): %q", problems)
	}
	source, text, err := brokerConfigText(c)
	if err != nil {
		t.Fatal(err)
	}
	bc := checkBrokerConfig(t, source, text)
	if len(bc.vars) == 0 {
		t.Fatalf("%s reads no environment variable: where do its secrets come from?", source)
	}
	for _, p := range kubernetesPolicy(c, bc) {
		t.Error(p)
	}

	broker := func(c *cluster) *corev1.Container { _, ctr, _, _ := brokerDeployment(c); return ctr }
	for _, tc := range []struct {
		name   string
		break_ func(c *cluster, cfg *brokerConfig)
		want   string
	}{
		{name: "one replica", want: "replicas must be 2", break_: func(c *cluster, _ *brokerConfig) {
			d, _, _, _ := brokerDeployment(c)
			one := int32(1)
			d.Spec.Replicas = &one
		}},
		{name: "a memory store", want: `store.type is "memory"`, break_: func(_ *cluster, bc *brokerConfig) { bc.cfg.Store.Type = "memory" }},
		{name: "Redis at no Service", want: "no Service elsewhere", break_: func(_ *cluster, bc *brokerConfig) { bc.cfg.Store.Redis.Addrs = []string{"elsewhere:6379"} }},
		{name: "readiness on /healthz", want: "readinessProbe must GET /readyz", break_: func(c *cluster, _ *brokerConfig) { broker(c).ReadinessProbe.HTTPGet.Path = "/healthz" }},
		{name: "no liveness probe", want: "livenessProbe must be an httpGet of /healthz", break_: func(c *cluster, _ *brokerConfig) { broker(c).LivenessProbe = nil }},
		{name: "admin_listen on every interface", want: "must be on the pod's loopback", break_: func(_ *cluster, bc *brokerConfig) { bc.cfg.AdminListen = "0.0.0.0:9090" }},
		{name: "admin port declared", want: "admin_listen's port 9090 is a container port", break_: func(c *cluster, _ *brokerConfig) {
			broker(c).Ports = append(broker(c).Ports, corev1.ContainerPort{Name: "admin", ContainerPort: 9090})
		}},
		{name: "admin port in a Service", want: "reaches admin_listen's port 9090", break_: func(c *cluster, _ *brokerConfig) {
			c.services[0].Spec.Ports = append(c.services[0].Spec.Ports, corev1.ServicePort{Name: "admin", Port: 9090})
		}},
		{name: "admin port in an Ingress", want: "a backend on admin_listen's port 9090", break_: func(c *cluster, _ *brokerConfig) {
			c.ingresses[0].Spec.Rules[0].HTTP.Paths[0].Backend.Service.Port = networkingv1.ServiceBackendPort{Number: 9090}
		}},
		{name: "a secret written in env", want: "BROKER_MGMT_TOKEN is a secret", break_: func(c *cluster, _ *brokerConfig) {
			for i, e := range broker(c).Env {
				if e.Name == "BROKER_MGMT_TOKEN" {
					broker(c).Env[i] = corev1.EnvVar{Name: e.Name, Value: "written-down"}
				}
			}
		}},
		{name: "a configuration variable not in env", want: "NEW_SECRET (read by the configuration) must come from a Secret", break_: func(_ *cluster, bc *brokerConfig) {
			bc.vars = append(bc.vars, "NEW_SECRET")
		}},
		{name: "a Secret in the manifests", want: "secret leaked is written in the manifests", break_: func(c *cluster, _ *brokerConfig) {
			c.secrets = append(c.secrets, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "leaked"}})
		}},
		{name: "root", want: "must run as non-root", break_: func(c *cluster, _ *brokerConfig) {
			root := int64(0)
			broker(c).SecurityContext.RunAsUser = &root
		}},
		{name: "writable root file system", want: "readOnlyRootFilesystem must be true", break_: func(c *cluster, _ *brokerConfig) { broker(c).SecurityContext = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := decodeCluster(ms)
			cfg := *bc.cfg
			broken := &brokerConfig{cfg: &cfg, vars: slices.Clone(bc.vars), env: bc.env}
			tc.break_(c, broken)
			problems := kubernetesPolicy(c, broken)
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.want) }) {
				t.Errorf("problems %q, want one saying %q", problems, tc.want)
			}
		})
	}
}
