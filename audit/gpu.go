package audit

// Names of the GPU events.
const (
	NameGPUXID            = "gpu.xid"
	NameGPUForeignProcess = "gpu.foreign_process"
)

// GPUXID: NVML reported critical XID errors on a GPU (a driver-detected
// fault: a fallen-off bus, a double-bit ECC error, a page fault...). One
// event per GPU and XID per telemetry read, with how many came. The GPU's
// UUID is the header's; the cause is CauseTelemetry.
type GPUXID struct {
	Header
	GPUDevice int
	XID       uint64
	// Count is how many of this XID came since the last read (at least 1).
	Count uint64
}

func (GPUXID) Name() string       { return NameGPUXID }
func (GPUXID) Severity() Severity { return SeverityError }
func (e GPUXID) Head() Header     { return e.Header }
func (e GPUXID) Fields() []Field {
	return []Field{
		{"gpu_device", int64(e.GPUDevice)}, {"xid", e.XID}, {"count", e.Count},
	}
}

// GPUForeignProcess: a process that is neither the agent nor one of its
// consumers or attach owners appeared on a GPU that holds sealed shards.
// Events are rate-limited per GPU; Suppressed is how many such appearances
// on the GPU were not reported since its previous event. The GPU's UUID is
// the header's; the cause is CauseTelemetry.
type GPUForeignProcess struct {
	Header
	GPUDevice int
	// PID is the host pid NVML reports; Executable the process name when
	// the agent can see it ("" otherwise).
	PID        int64
	Executable string
	// UsedBytes is the GPU memory it holds (-1: not reported).
	UsedBytes int64
	// SealedShards is how many shards are sealed on the GPU.
	SealedShards int
	Suppressed   int
}

func (GPUForeignProcess) Name() string       { return NameGPUForeignProcess }
func (GPUForeignProcess) Severity() Severity { return SeverityWarn }
func (e GPUForeignProcess) Head() Header     { return e.Header }
func (e GPUForeignProcess) Fields() []Field {
	return []Field{
		{"gpu_device", int64(e.GPUDevice)}, {"pid", e.PID}, {"executable", e.Executable}, {"used_bytes", e.UsedBytes},
		{"sealed_shards", int64(e.SealedShards)}, {"suppressed", int64(e.Suppressed)},
	}
}

var (
	_ Event = GPUXID{}
	_ Event = GPUForeignProcess{}
)
