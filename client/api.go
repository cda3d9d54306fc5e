package client

import (
	"time"

	"github.com/vramseal/vramseal/sealer"
)

// MaxBodyBytes bounds a request body.
const MaxBodyBytes = 1 << 20

// SealRequest asks the agent to seal a file. Path must be absolute and name
// a regular file under one of the configured model_dirs (symlinks resolved).
type SealRequest struct {
	ID       string `json:"id"`
	Path     string `json:"path"`
	GPU      int    `json:"gpu"`
	SHA256   string `json:"sha256,omitempty"`
	ModelRef string `json:"model_ref,omitempty"`
	LeafSize uint64 `json:"leaf_size,omitempty"`
}

// SealResponse is a new seal.
type SealResponse struct {
	Seal sealer.Seal `json:"seal"`
}

// Shard is one sealed shard as the API reports it.
type Shard struct {
	sealer.ShardStatus
	// NextVerificationAt is when the schedule next verifies it (zero when
	// unknown).
	NextVerificationAt time.Time `json:"next_verification_at,omitzero"`
}

// ListResponse lists the sealed shards.
type ListResponse struct {
	Shards []Shard `json:"shards"`
}

// VerifyResponse is the outcome of a verification request. Intact is true
// only when every result is ok.
type VerifyResponse struct {
	Intact  bool                  `json:"intact"`
	Results []sealer.VerifyResult `json:"results"`
}

// CorruptRequest flips bit Bit of the byte at Offset of a sealed shard.
type CorruptRequest struct {
	ID     string `json:"id"`
	Offset uint64 `json:"offset"`
	Bit    uint   `json:"bit"`
}

// ECCRequest adds ECC error counts to a simulated GPU.
type ECCRequest struct {
	GPU           int    `json:"gpu"`
	Correctable   uint64 `json:"correctable"`
	Uncorrectable uint64 `json:"uncorrectable"`
}

// GPURequest names a simulated GPU.
type GPURequest struct {
	GPU int `json:"gpu"`
}

// FailReadsRequest makes a simulated GPU's reads fail, or not.
type FailReadsRequest struct {
	GPU int  `json:"gpu"`
	On  bool `json:"on"`
}

// Status describes the running agent.
type Status struct {
	WorkerID  string `json:"worker_id"`
	Device    string `json:"device"`
	Simulated bool   `json:"simulated"`
	// Ready is true once every declared shard is sealed.
	Ready bool `json:"ready"`
	// Pending lists the declared shards not sealed yet; PendingReasons
	// says, for those that failed, why (their last error).
	Pending        []string          `json:"pending,omitempty"`
	PendingReasons map[string]string `json:"pending_reasons,omitempty"`
	// NotReady says why the agent is not ready ("" when it is).
	NotReady      string        `json:"not_ready,omitempty"`
	Shards        int           `json:"shards"`
	GPUs          []int         `json:"gpus"`
	VerifyMode    string        `json:"verify_mode"`
	VerifyEvery   time.Duration `json:"verify_interval_ns"`
	OverdueShards map[int]int   `json:"overdue_shards,omitempty"`
}

// ErrorResponse is the body of every error.
type ErrorResponse struct {
	Error string `json:"error"`
	// Retryable is true when the same call may succeed later without a
	// change by the caller (insufficient VRAM, a device error).
	Retryable bool `json:"retryable,omitempty"`
	// Kind classifies it: invalid, not_found, exists, insufficient_vram,
	// device_error, integrity, policy_blocked, cancelled, forbidden,
	// not_simulated, too_large, internal.
	Kind string `json:"kind"`
}

// Error kinds beyond the sealer's.
const (
	KindForbidden    = "forbidden"
	KindNotSimulated = "not_simulated"
	KindTooLarge     = "too_large"
	KindInternal     = "internal"
	KindInvalid      = "invalid"
	// KindRateLimited: the caller's uid is over control.rate_limit (429).
	KindRateLimited = "rate_limited"
)
