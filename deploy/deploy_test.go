package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
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

// TestEveryYAMLFileParses parses every YAML file under deploy/ but the
// chart's templates (Go templates; tools/k8scheck renders and checks them).
func TestEveryYAMLFileParses(t *testing.T) {
	var n int
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path == filepath.Join(Chart, "templates") {
			return filepath.SkipDir
		}
		if d.IsDir() || !(strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			return nil
		}
		n++
		decodeAll(t, path)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 8 {
		t.Fatalf("only %d YAML files found", n)
	}
}

// checkConfig loads a deployment's configuration with the agent's own
// loader: unknown keys and bad values fail here, not on a node.
func checkConfig(t *testing.T, where string, data []byte) *config.Config {
	t.Helper()
	cfg, err := config.Parse(where, data, config.Env{Getenv: func(string) string { return "node-a" }})
	if err != nil {
		t.Fatalf("%s does not load: %v", where, err)
	}
	if cfg.Device == config.DeviceSim {
		t.Errorf("%s: a deployment config must not choose the simulated GPU", where)
	}
	return cfg
}

// TestSampleConfigs loads the systemd sample and the chart's default
// configuration (values.yaml config) as the agent would.
func TestSampleConfigs(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("systemd", "config.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg := checkConfig(t, "systemd/config.yml", data); cfg.SealSecretFile != "/etc/vramseal/seal.key" {
		t.Errorf("systemd/config.yml: seal_secret_file %q, want the path the unit's instructions install", cfg.SealSecretFile)
	}
	var values struct {
		Config any `yaml:"config"`
	}
	if err := decodeAll(t, filepath.Join(Chart, "values.yaml"))[0].Decode(&values); err != nil {
		t.Fatal(err)
	}
	cfgYAML, err := yaml.Marshal(values.Config)
	if err != nil {
		t.Fatal(err)
	}
	checkConfig(t, Chart+"/values.yaml config", cfgYAML)
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
	if !slices.Contains(svc["Service"]["Environment"], "CUDA_DEVICE_ORDER=PCI_BUS_ID") {
		t.Errorf("the unit does not set CUDA_DEVICE_ORDER=PCI_BUS_ID: %v", svc["Service"]["Environment"])
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
		// A reference without a tag or digest is latest too.
		name := f[strings.LastIndex(f, "/")+1:]
		if strings.HasSuffix(f, ":latest") || !(strings.Contains(name, ":") || strings.Contains(f, "@sha256:")) {
			t.Errorf("base image %s is not pinned to a tag or digest other than latest", f)
		}
	}
	for _, want := range []string{"CGO_ENABLED=1", "make build", "ENV CUDA_DEVICE_ORDER=PCI_BUS_ID", `ENTRYPOINT ["/usr/local/bin/vramseal-agent"]`, "USER 0:0", "org.opencontainers.image.revision"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("Containerfile lacks %q", want)
		}
	}
}

// TestSystemdServiceHardening checks what the hardened unit must keep for
// the product to work, and that it tells systemd when it is up.
func TestSystemdServiceHardening(t *testing.T) {
	svc := unitFile(t, filepath.Join("systemd", "vramseal-agent.service"))["Service"]
	one := func(k string) string {
		if v := svc[k]; len(v) > 0 {
			return v[len(v)-1]
		}
		return ""
	}
	// Type=notify: READY=1, STATUS=, WATCHDOG=1 and RELOADING=1 from the
	// agent (cmd/agent/notify.go).
	for k, want := range map[string]string{"Type": "notify", "NotifyAccess": "main", "ExecReload": "/bin/kill -HUP $MAINPID"} {
		if got := one(k); got != want {
			t.Errorf("%s=%s, want %s", k, got, want)
		}
	}
	if one("WatchdogSec") == "" {
		t.Error("no WatchdogSec: the agent feeds systemd's watchdog")
	}
	// Go exits with status 2 on SIGABRT (the default WatchdogSignal); 2 is a
	// status that prevents restarts.
	if slices.Contains(strings.Fields(one("RestartPreventExitStatus")), "2") && one("WatchdogSignal") != "SIGKILL" {
		t.Errorf("WatchdogSignal=%q with RestartPreventExitStatus=%s: a hung agent would not be restarted", one("WatchdogSignal"), one("RestartPreventExitStatus"))
	}
	// Settings that break the callers' attribution on the control and
	// consumer sockets (SO_PEERCRED, /proc/PID/exe), hide the GPUs, or stop
	// remote scraping and the OTLP export.
	for k, bad := range map[string][]string{
		"PrivateUsers":   {"yes", "true", "self", "identity"},
		"ProtectProc":    {"invisible", "noaccess", "ptraceable"},
		"ProcSubset":     {"pid"},
		"PrivateDevices": {"yes", "true"},
		"PrivateNetwork": {"yes", "true"},
	} {
		if v := one(k); slices.Contains(bad, v) {
			t.Errorf("%s=%s breaks the agent", k, v)
		}
	}
	for _, k := range []string{"IPAddressDeny", "IPAddressAllow", "RootDirectory", "RootImage"} {
		if len(svc[k]) > 0 {
			t.Errorf("%s= is set (%v): scraping from other hosts, the OTLP export or the GPU libraries need the host's network and root", k, svc[k])
		}
	}
	// The agent gives its sockets their group with fchownat
	// (internal/control): a filter that denies @privileged (@chown) must
	// allow it again, after the deny.
	filters := svc["SystemCallFilter"]
	deny := slices.IndexFunc(filters, func(f string) bool { return strings.HasPrefix(f, "~") && strings.Contains(f, "@privileged") })
	if deny >= 0 && !slices.ContainsFunc(filters[deny+1:], func(f string) bool {
		return !strings.HasPrefix(f, "~") && (slices.Contains(strings.Fields(f), "fchownat") || slices.Contains(strings.Fields(f), "@chown"))
	}) {
		t.Errorf("SystemCallFilter %q denies fchownat: control.group and handoff.group would fail", filters)
	}
	if got := one("DevicePolicy"); got != "closed" {
		t.Errorf("DevicePolicy=%s, want closed (with the GPUs allowed)", got)
	}
	for _, dev := range []string{"char-nvidia-frontend rw", "char-nvidia-uvm rw", "char-nvidia-caps r"} {
		if !slices.Contains(svc["DeviceAllow"], dev) {
			t.Errorf("DeviceAllow lacks %q: %v", dev, svc["DeviceAllow"])
		}
	}
	fams := strings.Fields(one("RestrictAddressFamilies"))
	for _, f := range []string{"AF_UNIX", "AF_INET", "AF_INET6"} {
		if !slices.Contains(fams, f) {
			t.Errorf("RestrictAddressFamilies lacks %s: %v", f, fams)
		}
	}
	// Engines (other users) reach /run/vramseal/handoff.sock.
	mode, err := strconv.ParseUint(one("RuntimeDirectoryMode"), 8, 32)
	if err != nil || mode&0o001 == 0 {
		t.Errorf("RuntimeDirectoryMode=%s: other users cannot reach the consumer socket", one("RuntimeDirectoryMode"))
	}
	users, err := os.ReadFile(filepath.Join("systemd", "vramseal.sysusers"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(users, []byte("\nm vramseal video\n")) {
		t.Error("vramseal.sysusers does not put vramseal in the video group (/dev/nvidia* where restricted)")
	}
}

// maxExposure is the highest `systemd-analyze security` exposure the unit
// may have.
const maxExposure = 2.0

// exposure scores a unit file with `systemd-analyze security --offline=true`.
func exposure(t *testing.T, sa, unit string) float64 {
	t.Helper()
	out, err := exec.Command(sa, "security", "--offline=true", unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no overall exposure in:\n%s", out)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestSystemdSecurityScore scores the unit offline.
func TestSystemdSecurityScore(t *testing.T) {
	sa := testenv.Program(t, "systemd-analyze")
	dir := t.TempDir()
	svc, err := os.ReadFile(filepath.Join("systemd", "vramseal-agent.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(dir, "vramseal-agent.service")
	if err := os.WriteFile(unit, bytes.ReplaceAll(svc, []byte("/usr/local/bin/vramseal-agent"), []byte("/bin/true")), 0o644); err != nil {
		t.Fatal(err)
	}
	if v := exposure(t, sa, unit); v > maxExposure {
		t.Errorf("exposure %.1f, want at most %.1f", v, maxExposure)
	} else {
		t.Logf("systemd-analyze security --offline=true: exposure %.1f", v)
	}
}

// TestNoLatestTag: no image reference in the deployment files or the docs
// uses the latest tag (the chart's default tag is its appVersion).
func TestNoLatestTag(t *testing.T) {
	latest := regexp.MustCompile(`[a-z0-9./-]+:latest\b`)
	var n int
	for _, root := range []string{".", "../docs", "../README.md"} {
		err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || strings.HasSuffix(path, "_test.go") {
				return err
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			n++
			for _, m := range latest.FindAll(data, -1) {
				t.Errorf("%s: %s (pin a version)", path, m)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if n < 20 {
		t.Fatalf("only %d files read", n)
	}
}
