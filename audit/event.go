package audit

import (
	"crypto/rand"
	"encoding/hex"
	"time"

	"github.com/google/uuid"
)

// Severity is an audit event's severity. Its numbers are the OpenTelemetry
// log severity numbers the events are sent with.
type Severity int

// Severities used by the audit events. CRITICAL is sent with severity number
// 21 (FATAL) and severity text "CRITICAL".
const (
	SeverityInfo     Severity = 9
	SeverityWarn     Severity = 13
	SeverityError    Severity = 17
	SeverityCritical Severity = 21
)

// String returns the severity text sent with a record.
func (s Severity) String() string {
	switch s {
	case SeverityInfo:
		return "INFO"
	case SeverityWarn:
		return "WARN"
	case SeverityError:
		return "ERROR"
	case SeverityCritical:
		return "CRITICAL"
	}
	return "UNSPECIFIED"
}

// Event names, without the "vramseal." prefix they carry on the wire.
const (
	NameVRAMSealed             = "vram.sealed"
	NameSealVerified           = "seal.verified"
	NameSealVerificationFailed = "seal.verification_failed"
	NameVRAMDeallocated        = "vram.deallocated"
	NamePolicyViolation        = "policy.violation"
	NameVRAMAllocated          = "vram.allocated"
	NameVRAMAllocationFailed   = "vram.allocation_failed"
)

// Names lists every event name: the specification's seven in its order,
// then the consumer lease, control and GPU events.
var Names = []string{
	NameVRAMSealed, NameSealVerified, NameSealVerificationFailed,
	NameVRAMDeallocated, NamePolicyViolation, NameVRAMAllocated,
	NameVRAMAllocationFailed, NameVRAMOpened, NameVRAMClosed, NameControlRateLimited,
	NameDebugFaultInjected, NameGPUXID, NameGPUForeignProcess,
}

// NamePrefix is put before an event's name on the wire.
const NamePrefix = "vramseal."

// Header is what every event carries.
type Header struct {
	// ID is unique per event (a UUIDv7); it is sent as log.record.uid so
	// duplicates after a crash can be removed downstream.
	ID string
	// Time is when the event happened.
	Time time.Time
	// WorkerID names the agent (node) that emitted the event.
	WorkerID string
	// Cause is what made the event happen (every event says).
	Cause Cause
	// GPUUUID is the UUID of the GPU the event names (gpu_device), which
	// survives a reboot or a re-enumeration; "" for none.
	GPUUUID string
}

// NewHeader returns a Header with a fresh event id.
func NewHeader(now time.Time, workerID string) Header {
	return Header{ID: NewID(), Time: now, WorkerID: workerID}
}

// NewID returns a fresh, time-ordered event id.
func NewID() string {
	id, err := uuid.NewV7()
	if err != nil {
		// uuid.NewV7 fails only when the system's random source does;
		// fall back to 16 random bytes so an event never lacks an id.
		var b [16]byte
		_, _ = rand.Read(b[:])
		return hex.EncodeToString(b[:])
	}
	return id.String()
}

// Field is one field of an event, named as in the specification
// (e.g. "shard_id"). Value is a string, int64, uint64 or bool.
type Field struct {
	Key   string
	Value any
}

// Event is one audit event.
type Event interface {
	// Name is the event name without the "vramseal." prefix.
	Name() string
	// Severity is the event's fixed severity.
	Severity() Severity
	// Head returns the common header.
	Head() Header
	// Fields lists the event's own fields (not the header's), in the order
	// of the specification.
	Fields() []Field
}

// Verification failure reasons (seal.verification_failed).
const (
	ReasonDigestMismatch        = "digest_mismatch"
	ReasonSignatureInvalid      = "signature_invalid"
	ReasonAllocationMissing     = "allocation_missing"
	ReasonReadError             = "read_error"
	ReasonContentDigestMismatch = "content_digest_mismatch"
)

// Allocation failure reasons (vram.allocation_failed).
const (
	ReasonInsufficientVRAM = "insufficient_vram"
	ReasonDeviceError      = "device_error"
	ReasonPolicyBlocked    = "policy_blocked"
)

// Policy violation values and actions (policy.violation).
const (
	PolicyVRAMOnly = "vram_only"

	ViolationDeviceMissing           = "device_missing"
	ViolationIntegratedGPU           = "integrated_gpu"
	ViolationComputeCapabilityTooLow = "compute_capability_too_low"
	ViolationInsufficientMemory      = "insufficient_memory"
	ViolationECCDisabled             = "ecc_disabled"
	ViolationMIGEnabled              = "mig_enabled"
	ViolationNonDeviceMemory         = "non_device_memory"
	ActionSealingBlocked             = "sealing_blocked"
	ActionAgentStopped               = "agent_stopped"
)

// VRAMSealed (WORKER-4160): a shard was loaded into VRAM and sealed.
type VRAMSealed struct {
	Header
	ShardID       string
	GPUDevice     int
	VRAMBytes     uint64
	Digest        string
	ContentSHA256 string
	LeafSize      uint64
	ModelRef      string
	// Seal is the signed seal record (JSON) and SealSignature its signature,
	// so the event's claims are authenticated wherever they travel.
	Seal          string
	SealSignature string
	// Origin is "sealed" (the agent loaded the file) or "attached" (an
	// engine's own memory, sealed in place).
	Origin string
}

func (VRAMSealed) Name() string       { return NameVRAMSealed }
func (VRAMSealed) Severity() Severity { return SeverityInfo }
func (e VRAMSealed) Head() Header     { return e.Header }
func (e VRAMSealed) Fields() []Field {
	return []Field{
		{"shard_id", e.ShardID},
		{"gpu_device", int64(e.GPUDevice)},
		{"vram_bytes", e.VRAMBytes},
		{"digest", e.Digest},
		{"content_sha256", e.ContentSHA256},
		{"leaf_size", e.LeafSize},
		{"model_ref", e.ModelRef},
		{"seal", e.Seal},
		{"seal_signature", e.SealSignature},
		{"origin", e.Origin},
	}
}

// SealVerified (WORKER-4161): a shard's VRAM matched its seal.
type SealVerified struct {
	Header
	ShardID   string
	GPUDevice int
	Digest    string
}

func (SealVerified) Name() string       { return NameSealVerified }
func (SealVerified) Severity() Severity { return SeverityInfo }
func (e SealVerified) Head() Header     { return e.Header }
func (e SealVerified) Fields() []Field {
	return []Field{
		{"shard_id", e.ShardID},
		{"gpu_device", int64(e.GPUDevice)},
		{"digest", e.Digest},
	}
}

// SealVerificationFailed (WORKER-4161, CRITICAL): a shard's VRAM, or a seal
// record presented for it, did not match. FirstBadOffset is -1 and BadChunks 0
// when the failure is not a content mismatch.
type SealVerificationFailed struct {
	Header
	ShardID        string
	GPUDevice      int
	Reason         string
	ExpectedDigest string
	ActualDigest   string
	FirstBadOffset int64
	BadChunks      int64
}

func (SealVerificationFailed) Name() string       { return NameSealVerificationFailed }
func (SealVerificationFailed) Severity() Severity { return SeverityCritical }
func (e SealVerificationFailed) Head() Header     { return e.Header }
func (e SealVerificationFailed) Fields() []Field {
	return []Field{
		{"shard_id", e.ShardID},
		{"reason", e.Reason},
		{"expected_digest", e.ExpectedDigest},
		{"actual_digest", e.ActualDigest},
		{"severity", SeverityCritical.String()},
		{"gpu_device", int64(e.GPUDevice)},
		{"first_bad_offset", e.FirstBadOffset},
		{"bad_chunks", e.BadChunks},
	}
}

// VRAMDeallocated (WORKER-4162): a shard's VRAM was freed. Reason is a
// Dealloc* value; StillMappedBy lists the pids of consumers whose leases a
// forced release or shutdown ended, which may still map the memory.
type VRAMDeallocated struct {
	Header
	ShardID       string
	GPUDevice     int
	FreedBytes    uint64
	RemainingUsed uint64
	Reason        string
	StillMappedBy []int64
}

func (VRAMDeallocated) Name() string       { return NameVRAMDeallocated }
func (VRAMDeallocated) Severity() Severity { return SeverityInfo }
func (e VRAMDeallocated) Head() Header     { return e.Header }
func (e VRAMDeallocated) Fields() []Field {
	return []Field{
		{"shard_id", e.ShardID},
		{"freed_bytes", e.FreedBytes},
		{"remaining_used", e.RemainingUsed},
		{"gpu_device", int64(e.GPUDevice)},
		{"reason", e.Reason},
		{"still_mapped_by", PIDList(e.StillMappedBy)},
	}
}

// PolicyViolation (WORKER-4163): a GPU or an allocation broke the VRAM-only
// policy. GPUDevice is -1 when the violation concerns no single GPU.
type PolicyViolation struct {
	Header
	Policy      string
	Violation   string
	Details     string
	ActionTaken string
	GPUDevice   int
}

func (PolicyViolation) Name() string       { return NamePolicyViolation }
func (PolicyViolation) Severity() Severity { return SeverityError }
func (e PolicyViolation) Head() Header     { return e.Header }
func (e PolicyViolation) Fields() []Field {
	return []Field{
		{"policy", e.Policy},
		{"violation", e.Violation},
		{"details", e.Details},
		{"action_taken", e.ActionTaken},
		{"gpu_device", int64(e.GPUDevice)},
		{"severity", SeverityError.String()},
	}
}

// VRAMAllocated: VRAM was allocated for a shard.
type VRAMAllocated struct {
	Header
	ShardID        string
	GPUDevice      int
	RequestedBytes uint64
	UsedAfter      uint64
	// AvailableBytes is what the GPU has left for further shards.
	AvailableBytes uint64
}

func (VRAMAllocated) Name() string       { return NameVRAMAllocated }
func (VRAMAllocated) Severity() Severity { return SeverityInfo }
func (e VRAMAllocated) Head() Header     { return e.Header }
func (e VRAMAllocated) Fields() []Field {
	return []Field{
		{"shard_id", e.ShardID},
		{"gpu_device", int64(e.GPUDevice)},
		{"requested_bytes", e.RequestedBytes},
		{"used_after", e.UsedAfter},
		{"available_bytes", e.AvailableBytes},
	}
}

// VRAMAllocationFailed: VRAM could not be allocated for a shard; nothing was
// allocated.
type VRAMAllocationFailed struct {
	Header
	ShardID        string
	GPUDevice      int
	RequestedBytes uint64
	AvailableBytes uint64
	Reason         string
}

func (VRAMAllocationFailed) Name() string       { return NameVRAMAllocationFailed }
func (VRAMAllocationFailed) Severity() Severity { return SeverityWarn }
func (e VRAMAllocationFailed) Head() Header     { return e.Header }
func (e VRAMAllocationFailed) Fields() []Field {
	return []Field{
		{"shard_id", e.ShardID},
		{"gpu_device", int64(e.GPUDevice)},
		{"requested_bytes", e.RequestedBytes},
		{"available_bytes", e.AvailableBytes},
		{"reason", e.Reason},
	}
}

var (
	_ Event = VRAMSealed{}
	_ Event = SealVerified{}
	_ Event = SealVerificationFailed{}
	_ Event = VRAMDeallocated{}
	_ Event = PolicyViolation{}
	_ Event = VRAMAllocated{}
	_ Event = VRAMAllocationFailed{}
)
