package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vramseal/vramseal/policy"
	"github.com/vramseal/vramseal/sealer"
)

// Device kinds (the device key).
const (
	DeviceSim  = "sim"
	DeviceCUDA = "cuda"
	DeviceAuto = "auto"
)

// Config is the agent's configuration. Field tags name the YAML keys.
type Config struct {
	// WorkerID names this agent in seals and events.
	WorkerID string `yaml:"worker_id"`
	// Device is sim, cuda or auto.
	Device string `yaml:"device"`
	// Sim describes the simulated GPUs (device: sim).
	Sim Sim `yaml:"sim"`
	// CUDA configures the NVIDIA driver backend (device: cuda or auto).
	CUDA CUDA `yaml:"cuda"`
	// SealSecretFile is the seal secret's path.
	SealSecretFile string `yaml:"seal_secret_file"`
	// SealSecretFiles replaces SealSecretFile to rotate the secret: the
	// first signs, every one verifies (docs/runbooks/seal-secret-rotation.md).
	SealSecretFiles []string `yaml:"seal_secret_files"`
	// ModelDirs are the directories the control API may seal files from.
	ModelDirs []string `yaml:"model_dirs"`
	// Control is the control socket's access rules.
	Control Control `yaml:"control"`
	// Handoff is the consumer socket (off unless Socket is set).
	Handoff Handoff `yaml:"handoff"`
	// Seal holds the seal defaults.
	Seal Seal `yaml:"seal"`
	// Verify is the verification schedule.
	Verify Verify `yaml:"verify"`
	// Policy is the VRAM-only policy.
	Policy policy.Config `yaml:"policy"`
	// Audit is the local audit spool.
	Audit Audit `yaml:"audit"`
	// Web is what the web port serves besides the metrics.
	Web Web `yaml:"web"`
	// Metrics holds the opt-in GPU process metrics and events.
	Metrics Metrics `yaml:"metrics"`
	// Kubernetes is the kubelet's pod-resources API (off unless set).
	Kubernetes Kubernetes `yaml:"kubernetes"`
	// Shards are sealed at start-up and kept sealed.
	Shards []Shard `yaml:"shards"`
	// MemoryLimitBytes is the Go runtime's soft memory limit (0: the
	// agent's default, see docs/config.md).
	MemoryLimitBytes uint64 `yaml:"memory_limit_bytes"`

	// File is the path the configuration was read from ("" when parsed
	// from bytes).
	File string `yaml:"-"`

	// lines maps each key path seen in the file to its line.
	lines map[string]int
}

// Sim describes the simulated GPUs.
type Sim struct {
	GPUs          int    `yaml:"gpus"`
	MemoryBytes   uint64 `yaml:"memory_bytes"`
	SimProperties `yaml:",inline"`
	// PerGPU overrides properties of single GPUs; keys left out keep the
	// values above.
	PerGPU []SimGPU `yaml:"per_gpu"`
}

// SimProperties are the device properties a simulated GPU reports (the
// policy checks them).
type SimProperties struct {
	Integrated        bool   `yaml:"integrated"`
	ComputeCapability string `yaml:"compute_capability"`
	ECCEnabled        bool   `yaml:"ecc_enabled"`
	MIGEnabled        bool   `yaml:"mig_enabled"`
	ManagedMemory     bool   `yaml:"managed_memory"`
}

// SimGPU overrides the properties of one simulated GPU.
type SimGPU struct {
	GPU               int     `yaml:"gpu"`
	Integrated        *bool   `yaml:"integrated"`
	ComputeCapability *string `yaml:"compute_capability"`
	ECCEnabled        *bool   `yaml:"ecc_enabled"`
	MIGEnabled        *bool   `yaml:"mig_enabled"`
	ManagedMemory     *bool   `yaml:"managed_memory"`
}

// CUDA configures the NVIDIA driver backend.
type CUDA struct {
	// Library is the driver library to load: an absolute path, or "" to
	// let the loader search and then try the usual driver folders
	// (sealer/cuda.Options.LibraryPath).
	Library string `yaml:"library"`
}

// Control is who may use the control socket.
type Control struct {
	// Group, when set (a name or a numeric gid), makes the socket 0660
	// owned by that group, whose members may call.
	Group       string   `yaml:"group"`
	AllowedUIDs []uint32 `yaml:"allowed_uids"`
	AllowedGIDs []uint32 `yaml:"allowed_gids"`
	// RateLimit bounds each calling uid's request rate (off by default).
	RateLimit RateLimit `yaml:"rate_limit"`
}

// Handoff is the consumer socket, where engines open sealed shards.
type Handoff struct {
	// Socket is the consumer socket's path; "" (the default) turns the
	// hand-off off.
	Socket string `yaml:"socket"`
	// Group, AllowedUIDs and AllowedGIDs: who may connect besides root and
	// the agent's user, as for the control socket.
	Group       string   `yaml:"group"`
	AllowedUIDs []uint32 `yaml:"allowed_uids"`
	AllowedGIDs []uint32 `yaml:"allowed_gids"`
	// ShutdownWait is how long a stopping agent waits for consumers to
	// close their leases before it revokes them.
	ShutdownWait time.Duration `yaml:"shutdown_wait"`
}

// Seal holds the seal defaults.
type Seal struct {
	LeafSize uint64 `yaml:"leaf_size"`
}

// Verify is the verification schedule.
type Verify struct {
	Interval          time.Duration `yaml:"interval"`
	Jitter            float64       `yaml:"jitter"`
	MaxBytesPerSecond uint64        `yaml:"max_bytes_per_second"`
	Mode              string        `yaml:"mode"`
	// MaxInFlightPerGPU bounds the verifications reading one GPU at once.
	MaxInFlightPerGPU int `yaml:"max_in_flight_per_gpu"`
	// BufferBudgetBytes bounds the read buffers of every verification and
	// seal together.
	BufferBudgetBytes uint64 `yaml:"buffer_budget_bytes"`
}

// Audit is the local audit spool's configuration.
type Audit struct {
	SpoolDir     string        `yaml:"spool_dir"`
	SegmentBytes uint64        `yaml:"segment_bytes"`
	Retention    time.Duration `yaml:"retention"`
	MinFreeBytes uint64        `yaml:"min_free_bytes"`
	// CheckpointRecords and CheckpointInterval: a checkpoint closes the
	// chain after this many records or this much time, whichever comes
	// first; they bound the tail that no checkpoint vouches for yet.
	CheckpointRecords  uint64        `yaml:"checkpoint_records"`
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
}

// What the status page at / shows (the web.status_page key).
const (
	// StatusPageFull shows everything, audit event details included.
	StatusPageFull = "full"
	// StatusPageSummary shows the state without event details, uids,
	// pids or executables.
	StatusPageSummary = "summary"
	// StatusPageOff serves only the links to /metrics, /healthz, /readyz.
	StatusPageOff = "off"
)

// Web is what the web port serves besides the metrics.
type Web struct {
	// StatusPage is full, summary or off.
	StatusPage string `yaml:"status_page"`
}

// Metrics holds the opt-in parts of the GPU process attribution
// (docs/metrics.md, "GPU processes").
type Metrics struct {
	// ProcessLabels exports one series per GPU process with its pid and
	// name (off: only counts and memory per class).
	ProcessLabels bool `yaml:"process_labels"`
	// ProcessLabelLimit caps those series per scrape; the rest are
	// counted in vramseal_gpu_process_series_dropped_total.
	ProcessLabelLimit int `yaml:"process_label_limit"`
	// ForeignProcessEvents emits vramseal.gpu.foreign_process when an
	// unmatched process appears on a GPU that holds sealed shards, at
	// most once per GPU per ForeignProcessEventInterval.
	ForeignProcessEvents        bool          `yaml:"foreign_process_events"`
	ForeignProcessEventInterval time.Duration `yaml:"foreign_process_event_interval"`
}

// Kubernetes is the kubelet's pod-resources API.
type Kubernetes struct {
	// PodResourcesSocket is the kubelet's pod-resources socket
	// (/var/lib/kubelet/pod-resources/kubelet.sock); "" turns pod
	// attribution off.
	PodResourcesSocket string `yaml:"pod_resources_socket"`
}

// Shard is a shard declared in the configuration.
type Shard struct {
	ID       string `yaml:"id"`
	Path     string `yaml:"path"`
	GPU      int    `yaml:"gpu"`
	SHA256   string `yaml:"sha256"`
	ModelRef string `yaml:"model_ref"`
	// LeafSize overrides seal.leaf_size for this shard when not 0.
	LeafSize uint64 `yaml:"leaf_size"`
}

// SecretFiles returns the seal secret files: the first signs seal records
// and checkpoints, every one verifies them.
func (c *Config) SecretFiles() []string {
	if len(c.SealSecretFiles) > 0 {
		return c.SealSecretFiles
	}
	return []string{c.SealSecretFile}
}

// Default returns the configuration with every default applied and no
// shards. WorkerID is left empty (Parse fills it in).
func Default() Config {
	return Config{
		Device: DeviceAuto,
		Sim: Sim{
			GPUs: 1, MemoryBytes: 8 << 30,
			SimProperties: SimProperties{ComputeCapability: "9.0", ECCEnabled: true},
		},
		Handoff: Handoff{ShutdownWait: 20 * time.Second},
		Seal:    Seal{LeafSize: sealer.DefaultLeafSize},
		Verify: Verify{Interval: 5 * time.Minute, Jitter: 0.1, Mode: string(sealer.VerifyHost),
			MaxInFlightPerGPU: sealer.DefaultMaxVerifyInFlightPerGPU, BufferBudgetBytes: sealer.DefaultBufferBudget},
		Policy: policy.Config{MinMemoryBytes: 1 << 30, MinComputeCapability: "6.0", AllowMIG: true},
		Audit: Audit{
			SpoolDir: "/var/lib/vramseal/audit", SegmentBytes: 64 << 20,
			Retention: 2160 * time.Hour, MinFreeBytes: 100 << 20,
			CheckpointRecords: 1000, CheckpointInterval: 5 * time.Second,
		},
		Web:     Web{StatusPage: StatusPageSummary},
		Metrics: Metrics{ProcessLabelLimit: 100, ForeignProcessEventInterval: 10 * time.Minute},
	}
}

// Env is what Parse needs from the environment, so tests pass their own.
type Env struct {
	// Getenv reads an environment variable (os.Getenv when nil).
	Getenv func(string) string
	// Hostname returns the host name (os.Hostname when nil).
	Hostname func() (string, error)
}

// Load reads and parses the configuration file at path.
func Load(path string) (*Config, error) {
	return LoadEnv(path, Env{})
}

// LoadEnv is Load with an explicit environment.
func LoadEnv(path string, env Env) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Reason: "cannot read the configuration file", Err: err}
	}
	return Parse(path, data, env)
}

// Parse parses data, which came from file (used in errors and to resolve
// relative shard paths).
func Parse(file string, data []byte, env Env) (*Config, error) {
	cfg := Default()
	lines, err := decode(file, data, &cfg)
	if err != nil {
		return nil, err
	}
	cfg.lines = lines
	cfg.File = file
	if err := cfg.complete(env); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// complete fills in what depends on the environment and validates.
func (c *Config) complete(env Env) error {
	getenv, hostname := env.Getenv, env.Hostname
	if getenv == nil {
		getenv = os.Getenv
	}
	if hostname == nil {
		hostname = os.Hostname
	}
	if c.WorkerID == "" {
		c.WorkerID = strings.TrimSpace(getenv("NODE_NAME"))
	}
	if c.WorkerID == "" {
		h, err := hostname()
		if err != nil || h == "" {
			return c.errorf("worker_id", "not set, $NODE_NAME is empty and the host name is unknown (%v)", err)
		}
		c.WorkerID = h
	}
	base := ""
	if c.File != "" {
		base = filepath.Dir(c.File)
	}
	for i := range c.Shards {
		if p := c.Shards[i].Path; p != "" && !filepath.IsAbs(p) && base != "" {
			c.Shards[i].Path = filepath.Join(base, p)
		}
	}
	return c.validate()
}

func (c *Config) errorf(key, format string, args ...any) error {
	return &Error{File: c.File, Key: key, Line: c.lines[key], Reason: fmt.Sprintf(format, args...)}
}

// validate checks values; the decoder has already checked keys and types.
func (c *Config) validate() error {
	if err := checkName(c.WorkerID); err != nil {
		return c.errorf("worker_id", "%v", err)
	}
	switch c.Device {
	case DeviceSim, DeviceCUDA, DeviceAuto:
	default:
		return c.errorf("device", "%q is not one of sim, cuda, auto", c.Device)
	}
	if c.Sim.GPUs < 1 || c.Sim.GPUs > 64 {
		return c.errorf("sim.gpus", "%d: want 1 to 64", c.Sim.GPUs)
	}
	if c.Sim.MemoryBytes < 1<<20 {
		return c.errorf("sim.memory_bytes", "%d: want at least 1048576 (1 MiB)", c.Sim.MemoryBytes)
	}
	if _, err := sealer.ParseComputeCapability(c.Sim.ComputeCapability); err != nil {
		return c.errorf("sim.compute_capability", "%v", err)
	}
	if l := c.CUDA.Library; l != "" && !filepath.IsAbs(l) {
		return c.errorf("cuda.library", "%q is not an absolute path (leave it empty to let the loader search)", l)
	}
	seenGPU := map[int]int{}
	for i, g := range c.Sim.PerGPU {
		key := fmt.Sprintf("sim.per_gpu[%d]", i)
		if g.GPU < 0 || g.GPU >= c.Sim.GPUs {
			return c.errorf(key+".gpu", "GPU %d does not exist (sim.gpus is %d)", g.GPU, c.Sim.GPUs)
		}
		if j, dup := seenGPU[g.GPU]; dup {
			return c.errorf(key+".gpu", "GPU %d already overridden by sim.per_gpu[%d]", g.GPU, j)
		}
		seenGPU[g.GPU] = i
		if g.ComputeCapability != nil {
			if _, err := sealer.ParseComputeCapability(*g.ComputeCapability); err != nil {
				return c.errorf(key+".compute_capability", "%v", err)
			}
		}
	}
	if c.SealSecretFile != "" && len(c.SealSecretFiles) > 0 {
		return c.errorf("seal_secret_files", "give seal_secret_file or seal_secret_files, not both")
	}
	if c.SealSecretFile == "" && len(c.SealSecretFiles) == 0 {
		return c.errorf("seal_secret_file", "required: the path of a file of at least 32 random bytes, mode 0400 or 0600")
	}
	seen := map[string]int{}
	for i, f := range c.SealSecretFiles {
		key := fmt.Sprintf("seal_secret_files[%d]", i)
		if f == "" {
			return c.errorf(key, "empty path")
		}
		if j, dup := seen[f]; dup {
			return c.errorf(key, "%q is listed twice (also seal_secret_files[%d])", f, j)
		}
		seen[f] = i
	}
	for i, d := range c.ModelDirs {
		if !filepath.IsAbs(d) {
			return c.errorf(fmt.Sprintf("model_dirs[%d]", i), "%q is not an absolute path", d)
		}
	}
	if err := checkGroup(c.Control.Group); err != nil {
		return c.errorf("control.group", "%v", err)
	}
	if c.Handoff.Socket != "" && !filepath.IsAbs(c.Handoff.Socket) {
		return c.errorf("handoff.socket", "%q is not an absolute path", c.Handoff.Socket)
	}
	if err := checkGroup(c.Handoff.Group); err != nil {
		return c.errorf("handoff.group", "%v", err)
	}
	if c.Handoff.ShutdownWait < 0 || c.Handoff.ShutdownWait > 10*time.Minute {
		return c.errorf("handoff.shutdown_wait", "%s: want 0 to 10m", c.Handoff.ShutdownWait)
	}
	if err := sealer.CheckLeafSize(c.Seal.LeafSize); err != nil {
		return c.errorf("seal.leaf_size", "%v", err)
	}
	if c.Verify.Interval < time.Second {
		return c.errorf("verify.interval", "%s: want at least 1s", c.Verify.Interval)
	}
	if c.Verify.Jitter < 0 || c.Verify.Jitter >= 1 {
		return c.errorf("verify.jitter", "%g: want a fraction from 0 up to (not including) 1", c.Verify.Jitter)
	}
	switch sealer.VerifyMode(c.Verify.Mode) {
	case sealer.VerifyHost, sealer.VerifyDevice:
	default:
		return c.errorf("verify.mode", "%q is not one of host, gpu", c.Verify.Mode)
	}
	if err := c.validateLimits(); err != nil {
		return err
	}
	if err := c.Policy.Check(); err != nil {
		return c.errorf("policy.min_compute_capability", "%v", err)
	}
	if c.Audit.SpoolDir == "" || !filepath.IsAbs(c.Audit.SpoolDir) {
		return c.errorf("audit.spool_dir", "%q is not an absolute path", c.Audit.SpoolDir)
	}
	if c.Audit.SegmentBytes < 1<<20 {
		return c.errorf("audit.segment_bytes", "%d: want at least 1048576 (1 MiB)", c.Audit.SegmentBytes)
	}
	if c.Audit.Retention < time.Hour {
		return c.errorf("audit.retention", "%s: want at least 1h", c.Audit.Retention)
	}
	if c.Audit.CheckpointRecords < 1 || c.Audit.CheckpointRecords > 1<<20 {
		return c.errorf("audit.checkpoint_records", "%d: want from 1 to 1048576", c.Audit.CheckpointRecords)
	}
	if c.Audit.CheckpointInterval < time.Second || c.Audit.CheckpointInterval > time.Hour {
		return c.errorf("audit.checkpoint_interval", "%s: want from 1s to 1h", c.Audit.CheckpointInterval)
	}
	switch c.Web.StatusPage {
	case StatusPageFull, StatusPageSummary, StatusPageOff:
	default:
		return c.errorf("web.status_page", "%q is not one of full, summary, off", c.Web.StatusPage)
	}
	if c.Metrics.ProcessLabelLimit < 1 || c.Metrics.ProcessLabelLimit > 10000 {
		return c.errorf("metrics.process_label_limit", "%d: want from 1 to 10000", c.Metrics.ProcessLabelLimit)
	}
	if c.Metrics.ForeignProcessEventInterval < time.Second || c.Metrics.ForeignProcessEventInterval > 24*time.Hour {
		return c.errorf("metrics.foreign_process_event_interval", "%s: want from 1s to 24h", c.Metrics.ForeignProcessEventInterval)
	}
	if s := c.Kubernetes.PodResourcesSocket; s != "" && !filepath.IsAbs(s) {
		return c.errorf("kubernetes.pod_resources_socket", "%q is not an absolute path", s)
	}
	ids := map[string]int{}
	for i, s := range c.Shards {
		key := fmt.Sprintf("shards[%d]", i)
		if err := sealer.CheckShardID(s.ID); err != nil {
			return c.errorf(key+".id", "%v", err)
		}
		if j, dup := ids[s.ID]; dup {
			return c.errorf(key+".id", "duplicate shard id %q (also shards[%d])", s.ID, j)
		}
		ids[s.ID] = i
		if s.Path == "" {
			return c.errorf(key+".path", "required: the shard's file")
		}
		if s.GPU < 0 {
			return c.errorf(key+".gpu", "%d: want a GPU index from 0", s.GPU)
		}
		if c.Device == DeviceSim && s.GPU >= c.Sim.GPUs {
			return c.errorf(key+".gpu", "GPU %d does not exist (sim.gpus is %d)", s.GPU, c.Sim.GPUs)
		}
		if s.SHA256 != "" {
			if _, err := sealer.ParseSHA256Hex(s.SHA256); err != nil {
				return c.errorf(key+".sha256", "%v", err)
			}
		}
		if len(s.ModelRef) > 1024 {
			return c.errorf(key+".model_ref", "%d characters long, at most 1024 allowed", len(s.ModelRef))
		}
		if s.LeafSize != 0 {
			if err := sealer.CheckLeafSize(s.LeafSize); err != nil {
				return c.errorf(key+".leaf_size", "%v", err)
			}
		}
	}
	return nil
}

func checkName(s string) error {
	if len(s) > 256 {
		return fmt.Errorf("%d characters long, at most 256 allowed", len(s))
	}
	for _, r := range s {
		if r < 0x21 || r == 0x7f {
			return fmt.Errorf("%q contains a space or control character", s)
		}
	}
	return nil
}

func checkGroup(g string) error {
	if g == "" {
		return nil
	}
	if strings.ContainsAny(g, ":\n\x00 ") || len(g) > 256 {
		return fmt.Errorf("%q is not a group name or id", g)
	}
	return nil
}

// GPU returns the properties simulated GPU gpu reports (Index, Name, UUID
// and TotalMemory are the simulator's own) and whether its allocations
// report as managed memory: the base keys, overridden by its per_gpu entry.
// The configuration must have been validated.
func (s Sim) GPU(gpu int) (props sealer.GPUProperties, managed bool) {
	p := s.SimProperties
	for _, g := range s.PerGPU {
		if g.GPU != gpu {
			continue
		}
		p.Integrated = deref(g.Integrated, p.Integrated)
		p.ComputeCapability = deref(g.ComputeCapability, p.ComputeCapability)
		p.ECCEnabled = deref(g.ECCEnabled, p.ECCEnabled)
		p.MIGEnabled = deref(g.MIGEnabled, p.MIGEnabled)
		p.ManagedMemory = deref(g.ManagedMemory, p.ManagedMemory)
	}
	cc, _ := sealer.ParseComputeCapability(p.ComputeCapability)
	mig := sealer.MIGDisabled
	if p.MIGEnabled {
		mig = sealer.MIGEnabled
	}
	return sealer.GPUProperties{Index: gpu, Integrated: p.Integrated, Compute: cc, ECCEnabled: p.ECCEnabled, MIG: mig}, p.ManagedMemory
}

func deref[T any](p *T, otherwise T) T {
	if p == nil {
		return otherwise
	}
	return *p
}

// DeclaredShards returns the configured shards as the sealer declares them.
func (c *Config) DeclaredShards() []sealer.DeclaredShard {
	out := make([]sealer.DeclaredShard, 0, len(c.Shards))
	for _, s := range c.Shards {
		out = append(out, sealer.DeclaredShard{
			ID: s.ID, Path: s.Path, GPU: s.GPU, ExpectedSHA256: s.SHA256, ModelRef: s.ModelRef, LeafSize: s.LeafSize,
		})
	}
	return out
}

// SameExceptShards reports whether c and o differ in nothing but their
// shards, and if not, the top-level keys that differ.
func (c *Config) SameExceptShards(o *Config) (bool, []string) {
	a, b := *c, *o
	a.Shards, b.Shards, a.File, b.File = nil, nil, "", ""
	a.lines, b.lines = nil, nil
	diff := topKeys(a, b)
	slices.Sort(diff)
	return len(diff) == 0, diff
}

// Error is a configuration error: the file, the key (a dotted path), its
// line (0 when unknown) and the reason.
type Error struct {
	File   string
	Key    string
	Line   int
	Reason string
	Err    error
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	switch {
	case e.Key != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s (line %d): ", e.Key, e.Line)
	case e.Key != "":
		fmt.Fprintf(&b, "%s: ", e.Key)
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	b.WriteString(e.Reason)
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// IsError reports whether err is a configuration error.
func IsError(err error) bool {
	var e *Error
	return errors.As(err, &e)
}
