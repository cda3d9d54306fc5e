package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/vramseal/vramseal/alerts"
	"github.com/vramseal/vramseal/internal/config"
	"github.com/vramseal/vramseal/internal/testenv"
)

// TestGeneratedFilesAreFresh fails when the PrometheusRule or the dashboards
// ConfigMap differ from their sources: run `make generate` and commit.
func TestGeneratedFilesAreFresh(t *testing.T) {
	files, err := Generated()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		got, err := os.ReadFile(name)
		if err != nil {
			t.Errorf("%v: run `make generate`", err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run `make generate` and commit the result", name)
		}
	}
}

// TestGeneratedRuleMatchesSource decodes the PrometheusRule back and
// compares its groups with alerts/vramseal.rules.yml.
func TestGeneratedRuleMatchesSource(t *testing.T) {
	docs := decodeAll(t, filepath.Join("kubernetes", "prometheusrule.yaml"))
	var obj struct {
		Spec alerts.RuleFile `yaml:"spec"`
	}
	if err := docs[0].Decode(&obj); err != nil {
		t.Fatal(err)
	}
	src, err := alerts.Load()
	if err != nil {
		t.Fatal(err)
	}
	a, _ := yaml.Marshal(src)
	b, _ := yaml.Marshal(obj.Spec)
	if !bytes.Equal(a, b) {
		t.Fatalf("PrometheusRule groups differ from alerts/%s", alerts.RulesFile)
	}
}

// TestPrometheusRuleKeepsEveryRuleKey: a rule file using every key of
// Prometheus's format (keep_firing_for, a group's query_offset, limit and
// labels) comes out of PrometheusRule with each of them.
func TestPrometheusRuleKeepsEveryRuleKey(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "alerts", "testdata", "keep_firing_for.rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := PrometheusRule(src)
	if err != nil {
		t.Fatal(err)
	}
	var obj struct {
		Spec any `yaml:"spec"`
	}
	var want any
	if err := yaml.Unmarshal(out, &obj); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(src, &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(obj.Spec, want) {
		t.Fatalf("PrometheusRule spec differs from its rule file:\n%s", out)
	}
	if !bytes.Contains(out, []byte("keep_firing_for: 10m")) {
		t.Fatalf("keep_firing_for lost:\n%s", out)
	}
}

func TestDashboardsConfigMapRefusesNothing(t *testing.T) {
	if _, err := DashboardsConfigMap(nil); err == nil {
		t.Fatal("no error for an empty dashboard set")
	}
	if _, err := PrometheusRule([]byte("groups: [")); err == nil {
		t.Fatal("no error for a broken rule file")
	}
}

// decodeAll parses every YAML document of a file.
func decodeAll(t *testing.T, path string) []*yaml.Node {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		docs = append(docs, &n)
	}
	if len(docs) == 0 {
		t.Fatalf("%s: no YAML document", path)
	}
	return docs
}

type object struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string            `yaml:"name"`
		Namespace string            `yaml:"namespace"`
		Labels    map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
}

// TestEveryYAMLFileParses parses every YAML file under deploy/ and checks
// each Kubernetes object names itself and sits in the vramseal namespace.
func TestEveryYAMLFileParses(t *testing.T) {
	var n int
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			return err
		}
		n++
		for _, doc := range decodeAll(t, path) {
			if !strings.HasPrefix(path, "kubernetes"+string(filepath.Separator)) {
				continue
			}
			var o object
			if err := doc.Decode(&o); err != nil {
				t.Errorf("%s: %v", path, err)
				continue
			}
			if o.Kind == "Kustomization" {
				continue
			}
			if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
				t.Errorf("%s: apiVersion, kind and metadata.name are required", path)
			}
			if o.Kind != "Namespace" && o.Metadata.Namespace != Namespace {
				t.Errorf("%s: %s/%s in namespace %q, want %q", path, o.Kind, o.Metadata.Name, o.Metadata.Namespace, Namespace)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 12 {
		t.Fatalf("only %d YAML files found", n)
	}
}

func TestKustomizationListsEveryManifest(t *testing.T) {
	var k struct {
		Resources []string `yaml:"resources"`
	}
	if err := decodeAll(t, filepath.Join("kubernetes", "kustomization.yaml"))[0].Decode(&k); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join("kubernetes", "*.yaml"))
	for _, f := range files {
		base := filepath.Base(f)
		if base == "kustomization.yaml" || base == "secret.yaml" {
			continue
		}
		if !slices.Contains(k.Resources, base) {
			t.Errorf("kustomization.yaml does not list %s", base)
		}
	}
	for _, r := range k.Resources {
		if _, err := os.Stat(filepath.Join("kubernetes", r)); err != nil {
			t.Errorf("kustomization.yaml lists %s: %v", r, err)
		}
	}
}

// Only the parts of a DaemonSet this test asserts.
type daemonSet struct {
	Spec struct {
		Template struct {
			Spec struct {
				ServiceAccountName string `yaml:"serviceAccountName"`
				Containers         []struct {
					Args  []string `yaml:"args"`
					Ports []struct {
						Name          string `yaml:"name"`
						ContainerPort int    `yaml:"containerPort"`
					} `yaml:"ports"`
					Env []struct {
						Name      string `yaml:"name"`
						Value     string `yaml:"value"`
						ValueFrom *struct {
							FieldRef struct {
								FieldPath string `yaml:"fieldPath"`
							} `yaml:"fieldRef"`
						} `yaml:"valueFrom"`
					} `yaml:"env"`
					Resources struct {
						Requests map[string]string `yaml:"requests"`
						Limits   map[string]string `yaml:"limits"`
					} `yaml:"resources"`
					SecurityContext struct {
						AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
						ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
						Capabilities             struct {
							Drop []string `yaml:"drop"`
						} `yaml:"capabilities"`
					} `yaml:"securityContext"`
					VolumeMounts []struct {
						Name      string `yaml:"name"`
						MountPath string `yaml:"mountPath"`
						ReadOnly  bool   `yaml:"readOnly"`
					} `yaml:"volumeMounts"`
				} `yaml:"containers"`
				Volumes []struct {
					Name   string `yaml:"name"`
					Secret *struct {
						SecretName  string `yaml:"secretName"`
						DefaultMode int    `yaml:"defaultMode"`
					} `yaml:"secret"`
					HostPath *struct {
						Path string `yaml:"path"`
					} `yaml:"hostPath"`
					ConfigMap *struct {
						Name string `yaml:"name"`
					} `yaml:"configMap"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

func TestDaemonSet(t *testing.T) {
	var ds daemonSet
	if err := decodeAll(t, filepath.Join("kubernetes", "daemonset.yaml"))[0].Decode(&ds); err != nil {
		t.Fatal(err)
	}
	spec := ds.Spec.Template.Spec
	if spec.ServiceAccountName != "vramseal-agent" || len(spec.Containers) != 1 {
		t.Fatalf("service account %q, %d containers", spec.ServiceAccountName, len(spec.Containers))
	}
	c := spec.Containers[0]
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	var secretOK, spoolOK, socketOK bool
	for _, v := range spec.Volumes {
		switch {
		case v.Secret != nil:
			if v.Secret.DefaultMode != 0o400 {
				t.Errorf("secret volume %s: defaultMode %o, want 0400", v.Name, v.Secret.DefaultMode)
			}
			secretOK = mounts[v.Name] == "/etc/vramseal/secret"
		case v.HostPath != nil && v.HostPath.Path == "/var/lib/vramseal/audit":
			spoolOK = mounts[v.Name] == "/var/lib/vramseal/audit"
		case v.HostPath != nil && v.HostPath.Path == "/run/vramseal":
			socketOK = mounts[v.Name] == "/run/vramseal"
		}
	}
	if !secretOK || !spoolOK || !socketOK {
		t.Errorf("volumes: secret mounted %v, hostPath spool %v, socket dir %v", secretOK, spoolOK, socketOK)
	}
	for _, want := range []string{"run", "--config.file=/etc/vramseal/config.yml", "--control.socket=/run/vramseal/agent.sock", "--web.listen-address=:9477"} {
		if !slices.Contains(c.Args, want) {
			t.Errorf("args %v lack %s", c.Args, want)
		}
	}
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			env[e.Name] = "fieldRef:" + e.ValueFrom.FieldRef.FieldPath
		} else {
			env[e.Name] = e.Value
		}
	}
	if env["NODE_NAME"] != "fieldRef:spec.nodeName" {
		t.Errorf("NODE_NAME = %q, want the downward API spec.nodeName", env["NODE_NAME"])
	}
	for _, k := range []string{"OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_RESOURCE_ATTRIBUTES"} {
		if env[k] == "" {
			t.Errorf("env %s not set", k)
		}
	}
	if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
		t.Errorf("resources: %+v", c.Resources)
	}
	sc := c.SecurityContext
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
		t.Errorf("securityContext too loose: %+v", sc)
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "metrics" || c.Ports[0].ContainerPort != 9477 {
		t.Errorf("ports: %+v", c.Ports)
	}
	// The Service and the ServiceMonitor use that port by name, and the
	// Service name is the job the rules select.
	var svc struct {
		Metadata struct{ Name string }
		Spec     struct {
			Ports []struct{ Name string }
		}
	}
	if err := decodeAll(t, filepath.Join("kubernetes", "service.yaml"))[0].Decode(&svc); err != nil {
		t.Fatal(err)
	}
	if svc.Metadata.Name != "vramseal" || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "metrics" {
		t.Errorf("service: %+v", svc)
	}
	var sm struct {
		Spec struct {
			Endpoints []struct{ Port string }
		}
	}
	if err := decodeAll(t, filepath.Join("kubernetes", "servicemonitor.yaml"))[0].Decode(&sm); err != nil {
		t.Fatal(err)
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "metrics" {
		t.Errorf("servicemonitor endpoints: %+v", sm.Spec.Endpoints)
	}
}

// checkConfig loads a shipped configuration with the agent's own strict
// loader (unknown keys and bad values are errors) and checks what a
// deployment must say.
func checkConfig(t *testing.T, where string, data []byte) {
	t.Helper()
	env := config.Env{Getenv: func(string) string { return "" }, Hostname: func() (string, error) { return "node-1", nil }}
	if _, err := config.Parse(where, data, env); err != nil {
		t.Errorf("the agent refuses %s: %v", where, err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	for _, k := range []string{"device", "seal_secret_file", "model_dirs", "audit"} {
		if _, ok := cfg[k]; !ok {
			t.Errorf("%s: config lacks %s", where, k)
		}
	}
	if cfg["device"] == "sim" {
		t.Errorf("%s: a deployment config must not choose the simulated GPU", where)
	}
}

func TestSampleConfigs(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("systemd", "config.yml"))
	if err != nil {
		t.Fatal(err)
	}
	checkConfig(t, "systemd/config.yml", data)
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	if err := decodeAll(t, filepath.Join("kubernetes", "configmap.yaml"))[0].Decode(&cm); err != nil {
		t.Fatal(err)
	}
	checkConfig(t, "kubernetes/configmap.yaml config.yml", []byte(cm.Data["config.yml"]))
}

func TestScrapeConfigJobMatchesRules(t *testing.T) {
	var sc struct {
		ScrapeConfigs []struct {
			JobName string `yaml:"job_name"`
		} `yaml:"scrape_configs"`
	}
	if err := decodeAll(t, filepath.Join("prometheus", "scrape-config.yml"))[0].Decode(&sc); err != nil {
		t.Fatal(err)
	}
	if len(sc.ScrapeConfigs) != 1 || sc.ScrapeConfigs[0].JobName != "vramseal" {
		t.Fatalf("scrape job %+v, want vramseal", sc.ScrapeConfigs)
	}
	if !bytes.Contains(alerts.Rules, []byte(`job="vramseal"`)) {
		t.Fatal(`the rules no longer select job="vramseal": update the scrape config, the Service name and this test`)
	}
}

// unitFile reads a systemd unit into section → key → values.
func unitFile(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string][]string{}
	sec := ""
	sc := bufio.NewScanner(f)
	var cont string
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cont != "" {
			line = cont + " " + line
			cont = ""
		}
		if strings.HasSuffix(line, "\\") {
			cont = strings.TrimSuffix(line, "\\")
			continue
		}
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			sec = strings.Trim(line, "[]")
			out[sec] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || sec == "" {
				t.Fatalf("%s: bad line %q", path, line)
			}
			out[sec][k] = append(out[sec][k], v)
		}
	}
	return out
}

func TestSystemdUnits(t *testing.T) {
	svc := unitFile(t, filepath.Join("systemd", "vramseal-agent.service"))
	exec := strings.Fields(svc["Service"]["ExecStart"][0])
	if exec[0] != "/usr/local/bin/vramseal-agent" || exec[1] != "run" {
		t.Errorf("ExecStart %v", exec)
	}
	for _, flag := range []string{"--config.file=/etc/vramseal/config.yml", "--web.systemd-socket", "--control.socket=/run/vramseal/agent.sock"} {
		if !slices.Contains(exec, flag) {
			t.Errorf("ExecStart lacks %s", flag)
		}
	}
	if svc["Service"]["User"][0] != "vramseal" || svc["Service"]["RuntimeDirectory"][0] != "vramseal" {
		t.Errorf("service must run as vramseal with RuntimeDirectory=vramseal")
	}
	if !slices.Contains(svc["Unit"]["Requires"], "vramseal-agent.socket") {
		t.Errorf("service does not require its socket")
	}
	sock := unitFile(t, filepath.Join("systemd", "vramseal-agent.socket"))
	if sock["Socket"]["ListenStream"][0] != "9477" {
		t.Errorf("socket listens on %v", sock["Socket"]["ListenStream"])
	}
}

// TestSystemdAnalyzeVerify runs systemd-analyze verify on the units
// (systemd-analyze comes with Debian's systemd package, which `make test`
// installs where it is missing). The Kubernetes manifests are rendered and
// decoded strictly by tools/k8scheck.
func TestSystemdAnalyzeVerify(t *testing.T) {
	sa := testenv.Program(t, "systemd-analyze")
	dir := t.TempDir()
	svc, err := os.ReadFile(filepath.Join("systemd", "vramseal-agent.service"))
	if err != nil {
		t.Fatal(err)
	}
	// The binary is not installed here; point ExecStart at one that exists.
	svc = bytes.ReplaceAll(svc, []byte("/usr/local/bin/vramseal-agent"), []byte("/bin/true"))
	sock, err := os.ReadFile(filepath.Join("systemd", "vramseal-agent.socket"))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"vramseal-agent.service": svc, "vramseal-agent.socket": sock} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(sa, "verify", filepath.Join(dir, "vramseal-agent.socket"), filepath.Join(dir, "vramseal-agent.service")).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestContainerfile(t *testing.T) {
	data, err := os.ReadFile("Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	var froms []string
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "FROM ") {
			froms = append(froms, strings.Fields(line)[1])
		}
	}
	if len(froms) != 2 {
		t.Fatalf("want a two-stage build, got FROM %v", froms)
	}
	if !strings.Contains(froms[0], "golang:1.26") {
		t.Errorf("build stage %s: want the project's Go 1.26", froms[0])
	}
	for _, f := range froms {
		if strings.HasSuffix(f, ":latest") {
			t.Errorf("base image %s is not pinned", f)
		}
	}
	for _, want := range []string{"CGO_ENABLED=1", "make build", `ENTRYPOINT ["/usr/local/bin/vramseal-agent"]`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("Containerfile lacks %q", want)
		}
	}
}
