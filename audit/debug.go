package audit

// NameDebugFaultInjected is the event of a debug fault switch.
const NameDebugFaultInjected = "debug.fault_injected"

// Debug faults (debug.fault_injected's fault).
const (
	FaultCorrupt     = "corrupt"      // a bit of a sealed shard flipped
	FaultECC         = "ecc"          // ECC error counts added to a GPU
	FaultGPULost     = "gpu_lost"     // a GPU made to disappear
	FaultGPURestored = "gpu_restored" // a lost GPU brought back
	FaultFailReads   = "fail_reads"   // a GPU's reads made to fail, or not
)

// DebugFaultInjected: a fault was injected into the simulated GPU through
// a debug switch (never possible on real GPUs). The caller is the event's
// (Header.Cause, kind debug). ShardID is "" and GPUDevice -1 where the
// fault names none.
type DebugFaultInjected struct {
	Header
	Fault     string
	ShardID   string
	GPUDevice int
	Details   string
}

func (DebugFaultInjected) Name() string       { return NameDebugFaultInjected }
func (DebugFaultInjected) Severity() Severity { return SeverityWarn }
func (e DebugFaultInjected) Head() Header     { return e.Header }
func (e DebugFaultInjected) Fields() []Field {
	return []Field{
		{"fault", e.Fault},
		{"shard_id", e.ShardID},
		{"gpu_device", int64(e.GPUDevice)},
		{"details", e.Details},
	}
}

var _ Event = DebugFaultInjected{}
