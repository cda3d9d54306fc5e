package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vramseal/vramseal/policy"
	"github.com/vramseal/vramseal/sealer"
)

var testEnv = Env{
	Getenv:   func(string) string { return "" },
	Hostname: func() (string, error) { return "host-1", nil },
}

const full = `
worker_id: node-a
device: sim
sim:
  gpus: 2
  memory_bytes: 8589934592
  compute_capability: "8.6"
  ecc_enabled: false
  per_gpu:
    - {gpu: 1, mig_enabled: true, compute_capability: "5.2"}
cuda: {library: /usr/local/nvidia/lib64/libcuda.so.1}
seal_secret_file: /etc/vramseal/seal.key
model_dirs: [/models, /srv/models]
control: {group: vramseal, allowed_uids: [1000], allowed_gids: [2000, 2001]}
seal: {leaf_size: 1048576}
verify: {interval: 90s, jitter: 0.25, max_bytes_per_second: 1000000000, mode: gpu}
policy: {min_memory_bytes: 2147483648, min_compute_capability: "7.0", require_ecc: true, allow_mig: false, exit_on_violation: true}
audit: {spool_dir: /var/lib/x, segment_bytes: 1048576, retention: 24h, min_free_bytes: 0}
web: {status_page: full}
shards:
  - {id: llama-00001, path: /models/a.safetensors, gpu: 0, sha256: "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", model_ref: "hf:meta/llama@abc"}
  - {id: llama-00002, path: rel/b.safetensors, gpu: 1, leaf_size: 4096}
`

func TestParseFull(t *testing.T) {
	c, err := Parse("/etc/vramseal/agent.yml", []byte(full), testEnv)
	if err != nil {
		t.Fatal(err)
	}
	if c.WorkerID != "node-a" || c.Device != DeviceSim || c.Sim.GPUs != 2 || c.Sim.MemoryBytes != 8<<30 {
		t.Errorf("top level: %+v", c)
	}
	if c.CUDA.Library != "/usr/local/nvidia/lib64/libcuda.so.1" {
		t.Errorf("cuda: %+v", c.CUDA)
	}
	if c.Verify.Interval != 90*time.Second || c.Verify.Jitter != 0.25 || c.Verify.MaxBytesPerSecond != 1e9 || c.Verify.Mode != "gpu" {
		t.Errorf("verify: %+v", c.Verify)
	}
	if c.Policy != (policy.Config{MinMemoryBytes: 2 << 30, MinComputeCapability: "7.0", RequireECC: true, AllowMIG: false, ExitOnViolation: true}) {
		t.Errorf("policy: %+v", c.Policy)
	}
	if c.Control.Group != "vramseal" || len(c.Control.AllowedUIDs) != 1 || len(c.Control.AllowedGIDs) != 2 {
		t.Errorf("control: %+v", c.Control)
	}
	if c.Audit.Retention != 24*time.Hour || c.Audit.SpoolDir != "/var/lib/x" {
		t.Errorf("audit: %+v", c.Audit)
	}
	if c.Web.StatusPage != StatusPageFull {
		t.Errorf("web: %+v", c.Web)
	}
	if got := c.Shards[1].Path; got != "/etc/vramseal/rel/b.safetensors" {
		t.Errorf("relative shard path resolved to %q, want it next to the config file", got)
	}
	ds := c.DeclaredShards()
	if len(ds) != 2 || ds[0].ModelRef != "hf:meta/llama@abc" || ds[1].LeafSize != 4096 || ds[1].GPU != 1 {
		t.Errorf("declared shards: %+v", ds)
	}
	want0 := sealer.GPUProperties{Index: 0, Compute: sealer.ComputeCapability{Major: 8, Minor: 6}, MIG: sealer.MIGDisabled}
	want1 := sealer.GPUProperties{Index: 1, Compute: sealer.ComputeCapability{Major: 5, Minor: 2}, MIG: sealer.MIGEnabled}
	if p, managed := c.Sim.GPU(0); p != want0 || managed {
		t.Errorf("sim GPU 0: %+v, managed %v", p, managed)
	}
	if p, managed := c.Sim.GPU(1); p != want1 || managed {
		t.Errorf("sim GPU 1: %+v, managed %v", p, managed)
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse("a.yml", []byte("seal_secret_file: /k\n"), testEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.WorkerID, want.SealSecretFile, want.File = "host-1", "/k", "a.yml"
	want.lines = c.lines
	if same, diff := c.SameExceptShards(&want); !same {
		t.Errorf("defaults differ in %v", diff)
	}
	if c.Device != "auto" || c.Verify.Interval != 5*time.Minute || !c.Policy.AllowMIG || !c.Sim.ECCEnabled || c.Seal.LeafSize != 262144 ||
		c.Web.StatusPage != "summary" {
		t.Errorf("defaults: %+v", c)
	}
}

func TestWorkerIDFromEnvironment(t *testing.T) {
	env := Env{Getenv: func(k string) string {
		if k == "NODE_NAME" {
			return "gpu-node-7"
		}
		return ""
	}, Hostname: func() (string, error) { return "ignored", nil }}
	c, err := Parse("a.yml", []byte("seal_secret_file: /k\n"), env)
	if err != nil || c.WorkerID != "gpu-node-7" {
		t.Fatalf("worker id %q, %v; want $NODE_NAME", c.WorkerID, err)
	}
	c, err = Parse("a.yml", []byte("seal_secret_file: /k\nworker_id: explicit\n"), env)
	if err != nil || c.WorkerID != "explicit" {
		t.Fatalf("worker id %q, %v; want the configured one", c.WorkerID, err)
	}
	_, err = Parse("a.yml", []byte("seal_secret_file: /k\n"), Env{Getenv: testEnv.Getenv, Hostname: func() (string, error) { return "", errors.New("no uts") }})
	if err == nil || !strings.Contains(err.Error(), "worker_id") {
		t.Fatalf("no worker id: %v", err)
	}
}

// TestBadInput is the configuration half of docs/bad-input.md: each case
// must fail with an error naming the file, the key, the line and the reason.
func TestBadInput(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"malformed YAML", "seal_secret_file: /k\ndevice: sim: x\n", "a.yml: line 2: not valid YAML: mapping values are not allowed in this context"},
		{"unclosed flow mapping", "seal_secret_file: /k\nverify: {interval: 5m\n", "a.yml: line 2: not valid YAML: did not find expected ',' or '}' in the block or collection that starts on this line"},
		{"bad list indentation", "seal_secret_file: /k\nshards:\n  - id: a\n   path: b\n", "a.yml: line 3: not valid YAML: did not find expected '-' indicator in the block or collection that starts on this line"},
		{"tab indentation", "seal_secret_file: /k\nverify:\n\tinterval: 5m\n", "a.yml: line 3: not valid YAML: found character that cannot start any token"},
		{"unknown key", "seal_secret_file: /k\nverify:\n  intervall: 5m\n", "a.yml: verify.intervall (line 3): unknown key; known keys here: interval, jitter, max_bytes_per_second, mode"},
		{"unknown top-level key", "seal_secret_file: /k\nshard: []\n", "a.yml: shard (line 2): unknown key"},
		{"key twice", "seal_secret_file: /k\ndevice: sim\ndevice: cuda\n", "a.yml: device (line 3): key given twice (first on line 2)"},
		{"wrong type", "seal_secret_file: /k\nsim: {gpus: two}\n", `a.yml: sim.gpus (line 2): want an integer, got "two"`},
		{"negative size", "seal_secret_file: /k\nsim: {memory_bytes: -1}\n", `a.yml: sim.memory_bytes (line 2): want a non-negative integer, got "-1" (negative)`},
		{"bad duration", "seal_secret_file: /k\nverify: {interval: 5 minutes}\n", `a.yml: verify.interval (line 2): want a duration such as 5m or 90s, got "5 minutes"`},
		{"duration without unit", "seal_secret_file: /k\nverify: {interval: 300}\n", `verify.interval (line 2): want a duration`},
		{"interval too short", "seal_secret_file: /k\nverify: {interval: 10ms}\n", "a.yml: verify.interval (line 2): 10ms: want at least 1s"},
		{"jitter out of range", "seal_secret_file: /k\nverify: {jitter: 1.5}\n", "a.yml: verify.jitter (line 2): 1.5: want a fraction"},
		{"bad verify mode", "seal_secret_file: /k\nverify: {mode: cpu}\n", `a.yml: verify.mode (line 2): "cpu" is not one of host, gpu`},
		{"bad status page", "seal_secret_file: /k\nweb: {status_page: on}\n", `a.yml: web.status_page (line 2): "on" is not one of full, summary, off`},
		{"bad device", "seal_secret_file: /k\ndevice: tpu\n", `a.yml: device (line 2): "tpu" is not one of sim, cuda, auto`},
		{"list for a mapping", "seal_secret_file: /k\nsim: [1, 2]\n", "a.yml: sim (line 2): want a mapping of keys, got a list"},
		{"mapping for a string", "seal_secret_file: {a: b}\n", "a.yml: seal_secret_file (line 1): want a string, got a mapping"},
		{"missing secret file", "device: sim\n", "a.yml: seal_secret_file: required"},
		{"bad leaf size", "seal_secret_file: /k\nseal: {leaf_size: 1000}\n", "a.yml: seal.leaf_size (line 2): leaf size 1000"},
		{"relative driver library", "seal_secret_file: /k\ncuda: {library: libcuda.so.1}\n", `a.yml: cuda.library (line 2): "libcuda.so.1" is not an absolute path`},
		{"cuda unknown key", "seal_secret_file: /k\ncuda: {lib: /x}\n", "a.yml: cuda.lib (line 2): unknown key; known keys here: library"},
		{"relative model dir", "seal_secret_file: /k\nmodel_dirs: [models]\n", `a.yml: model_dirs[0] (line 2): "models" is not an absolute path`},
		{"duplicate shard id", "seal_secret_file: /k\nshards:\n  - {id: a, path: /m/a}\n  - {id: a, path: /m/b}\n", `a.yml: shards[1].id (line 4): duplicate shard id "a" (also shards[0])`},
		{"bad shard id", "seal_secret_file: /k\nshards:\n  - {id: ../etc, path: /m/a}\n", `a.yml: shards[0].id (line 3): shard id "../etc"`},
		{"shard without path", "seal_secret_file: /k\nshards:\n  - {id: a}\n", "a.yml: shards[0].path: required"},
		{"shard on a GPU that does not exist", "seal_secret_file: /k\ndevice: sim\nsim: {gpus: 2}\nshards:\n  - {id: a, path: /m/a, gpu: 2}\n", "a.yml: shards[0].gpu (line 5): GPU 2 does not exist (sim.gpus is 2)"},
		{"bad sha256", "seal_secret_file: /k\nshards:\n  - {id: a, path: /m/a, sha256: abc}\n", "a.yml: shards[0].sha256 (line 3):"},
		{"bad compute capability", "seal_secret_file: /k\nsim: {compute_capability: 9}\n", `a.yml: sim.compute_capability (line 2): compute capability "9": want MAJOR.MINOR with a one-digit minor`},
		{"policy compute capability with a two-digit minor", "seal_secret_file: /k\npolicy: {min_compute_capability: \"6.10\"}\n", `a.yml: policy.min_compute_capability (line 2): compute capability "6.10": want MAJOR.MINOR with a one-digit minor`},
		{"per_gpu of a missing GPU", "seal_secret_file: /k\nsim: {gpus: 1, per_gpu: [{gpu: 3}]}\n", "a.yml: sim.per_gpu[0].gpu (line 2): GPU 3 does not exist"},
		{"per_gpu unknown key", "seal_secret_file: /k\nsim: {per_gpu: [{gpu: 0, ecc: true}]}\n", "a.yml: sim.per_gpu[0].ecc (line 2): unknown key"},
		{"two documents", "seal_secret_file: /k\n---\ndevice: sim\n", "a.yml: line 2: more than one YAML document"},
		{"checkpoint records zero", "seal_secret_file: /k\naudit: {checkpoint_records: 0}\n", "a.yml: audit.checkpoint_records (line 2): 0: want from 1 to 1048576"},
		{"checkpoint interval too short", "seal_secret_file: /k\naudit: {checkpoint_interval: 100ms}\n", "a.yml: audit.checkpoint_interval (line 2): 100ms: want from 1s to 1h"},
		{"both secret keys", "seal_secret_file: /k\nseal_secret_files: [/k2]\n", "a.yml: seal_secret_files (line 2): give seal_secret_file or seal_secret_files, not both"},
		{"secret file listed twice", "seal_secret_files: [/k, /k]\n", `a.yml: seal_secret_files[1] (line 1): "/k" is listed twice (also seal_secret_files[0])`},
		{"alias", "seal_secret_file: &x /k\naudit: {spool_dir: *x}\n", "a.yml: audit.spool_dir (line 2): YAML aliases are not supported"},
		{"uid out of range", "seal_secret_file: /k\ncontrol: {allowed_uids: [4294967296]}\n", "a.yml: control.allowed_uids[0] (line 2): want a non-negative integer, got \"4294967296\" (out of range)"},
		{"bool as string", "seal_secret_file: /k\npolicy: {require_ecc: \"yes\"}\n", `a.yml: policy.require_ecc (line 2): want true or false, got "yes"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("a.yml", []byte(tc.yaml), testEnv)
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.yaml)
			}
			if !IsError(err) {
				t.Errorf("error %T is not a *config.Error", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error\n  %v\nwant it to contain\n  %s", err, tc.want)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "nope.yml")
	_, err := Load(p)
	if err == nil || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), p+": cannot read the configuration file") {
		t.Fatalf("error %v", err)
	}
}

func TestEmptyFileIsDefaultsAndNeedsSecret(t *testing.T) {
	for _, data := range []string{"", "\n", "# only a comment\n", "~\n"} {
		_, err := Parse("a.yml", []byte(data), testEnv)
		if err == nil || !strings.Contains(err.Error(), "seal_secret_file: required") {
			t.Errorf("%q: %v", data, err)
		}
	}
}

func TestSameExceptShards(t *testing.T) {
	a, err := Parse("a.yml", []byte(full), testEnv)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse("a.yml", []byte(strings.Replace(full, "  - {id: llama-00002, path: rel/b.safetensors, gpu: 1, leaf_size: 4096}\n", "", 1)), testEnv)
	if err != nil {
		t.Fatal(err)
	}
	if same, diff := a.SameExceptShards(b); !same {
		t.Errorf("only shards changed, but reported %v", diff)
	}
	c, err := Parse("a.yml", []byte(strings.Replace(full, "interval: 90s", "interval: 2m", 1)), testEnv)
	if err != nil {
		t.Fatal(err)
	}
	if same, diff := a.SameExceptShards(c); same || len(diff) != 1 || diff[0] != "verify" {
		t.Errorf("verify changed, reported same=%v diff=%v", same, diff)
	}
}

// TestComputeCapabilityParity: sim.compute_capability and
// policy.min_compute_capability accept and refuse the same values, with
// the same message.
func TestComputeCapabilityParity(t *testing.T) {
	for _, v := range []string{"9.0", "10.1", "6.0", "9.10", "9", "9.", ".0", "a.b", "-1.0", "+9.0", "9.0.1", "100.0"} {
		_, simErr := Parse("a.yml", []byte("seal_secret_file: /k\nsim: {compute_capability: \""+v+"\"}\n"), testEnv)
		_, polErr := Parse("a.yml", []byte("seal_secret_file: /k\npolicy: {min_compute_capability: \""+v+"\"}\n"), testEnv)
		if (simErr == nil) != (polErr == nil) {
			t.Errorf("%q: sim.compute_capability %v, policy.min_compute_capability %v", v, simErr, polErr)
			continue
		}
		if simErr != nil {
			s, p := simErr.Error(), polErr.Error()
			if strings.TrimPrefix(s, "a.yml: sim.compute_capability (line 2): ") != strings.TrimPrefix(p, "a.yml: policy.min_compute_capability (line 2): ") {
				t.Errorf("%q: messages differ:\n%s\n%s", v, s, p)
			}
		}
	}
}

// seal_secret_files lists the secrets of a rotation: the first signs.
func TestSealSecretFiles(t *testing.T) {
	c, err := Parse("a.yml", []byte("seal_secret_files: [/new.key, /old.key]\n"), testEnv)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.SecretFiles(); len(got) != 2 || got[0] != "/new.key" || got[1] != "/old.key" {
		t.Fatalf("secret files %v", got)
	}
	c, err = Parse("a.yml", []byte("seal_secret_file: /k\n"), testEnv)
	if err != nil || len(c.SecretFiles()) != 1 || c.SecretFiles()[0] != "/k" {
		t.Fatalf("one secret file: %v %v", c, err)
	}
}
