package statuspage

import (
	"fmt"
	"time"

	"github.com/vramseal/vramseal/audit"
)

// Mode is what the page shows: the web.status_page key.
type Mode string

// Modes.
const (
	// Full shows everything the summary shows, and each event's fields.
	Full Mode = "full"
	// Summary shows the state without event details, uids, pids or
	// executables.
	Summary Mode = "summary"
	// Off shows only the links.
	Off Mode = "off"
)

// ParseMode returns the Mode named s.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case Full, Summary, Off:
		return m, nil
	}
	return "", fmt.Errorf("status page mode %q: want full, summary or off", s)
}

// Bounds of the page, so that it renders quickly and stays small with many
// shards.
const (
	// MaxShardRows is the most shard rows shown; the page says how many
	// more there are (failed shards come first, so none hides).
	MaxShardRows = 500
	// MaxEvents is the most audit events shown.
	MaxEvents = 50
	// maxText cuts user-supplied strings (model references, details).
	maxText = 160
)

// RefreshSeconds is how often the page reloads itself.
const RefreshSeconds = 10

// View is everything the page shows, at one moment. Render reads nothing
// else.
type View struct {
	Mode Mode
	// Now is when the view was taken; ages and due times are relative to it.
	Now time.Time

	WorkerID, Device, Version string
	// Simulated is true on device: sim (the title and a banner say so).
	Simulated bool
	// Ready and NotReady are /readyz's verdict and its reason.
	Ready    bool
	NotReady string
	// VerifyInterval is the configured verification interval.
	VerifyInterval time.Duration

	Links []Link

	GPUs []GPUView
	// TelemetryError is why the GPU telemetry is missing or stale ("" when
	// fresh).
	TelemetryError string

	// Shards are the rows shown; ShardsTotal counts every shard,
	// ShardsHidden those not shown, ShardsFailed the failed ones.
	Shards                                  []ShardView
	ShardsTotal, ShardsHidden, ShardsFailed int

	Audit AuditView

	// Events are the last audit events, newest first; EventsTotal counts
	// every event since the agent started.
	Events      []EventView
	EventsTotal uint64
}

// Link is one of the links the page keeps (/metrics, /healthz, /readyz).
type Link struct {
	Href, Text, Description string
}

// GPUView is one GPU.
type GPUView struct {
	Index      int
	UUID, Name string
	// Telemetry is true when the numbers below come from a fresh read;
	// Up is false for a GPU that did not answer it (lost, reset).
	Telemetry, Up bool

	// TotalBytes, UsedBytes and FreeBytes are the driver's; SealedBytes
	// vramseal's shards; OtherBytes what else is in use (other
	// processes, the driver, rounding of allocations).
	TotalBytes, SealedBytes, OtherBytes, FreeBytes uint64
	// The bar's widths, in percent of TotalBytes.
	SealedPct, OtherPct, FreePct float64

	Shards, Failed int

	// Policy is "compliant", "blocked" or "unknown" (no policy);
	// Violations say why it is blocked.
	Policy     string
	Violations []Violation

	HasECC                       bool
	ECCCorrected, ECCUncorrected uint64

	// XIDs are the critical XID errors NVML reported since the agent
	// started, by XID, lowest first (none on simulated GPUs).
	XIDs []XIDCount
}

// XIDCount is how many times one critical XID came on a GPU.
type XIDCount struct {
	XID, Count uint64
}

// Violation is one VRAM-only policy violation of a GPU.
type Violation struct {
	Violation, Details string
}

// ShardView is one row of the shards table.
type ShardView struct {
	ID       string
	GPU      int
	Bytes    uint64
	ModelRef string
	// State is sealed or failed; LastResult the last verification's
	// result ("" before the first).
	State, LastResult string
	// LastVerified is the last successful verification, LastChecked the
	// last one whatever its result (zero: none).
	LastVerified, LastChecked time.Time
	// NextDue is when the schedule verifies the shard next (zero: not
	// scheduled).
	NextDue time.Time

	// Origin is "sealed" (the agent read the file) or "attached" (memory
	// an engine owns and registered); Leases counts open consumer leases.
	// The sealer does not report either yet: Snapshot sets "sealed" and 0,
	// and the consumer hand-off and attach work fills them from the sealer.
	Origin string
	Leases int
}

// AuditView is the audit pipeline's state.
type AuditView struct {
	// Available is false when the agent has no audit pipeline stats.
	Available bool
	// State sums it up: "up to date", "shipping", "behind",
	// "export failing" or "records lost"; OK says whether that is fine.
	State string
	OK    bool

	PendingRecords uint64
	Bytes          int64
	// OldestPendingAge is the age of the oldest record not yet accepted by
	// the OTel Collector (0 when none is pending).
	OldestPendingAge    time.Duration
	ExportFailures      uint64
	Lost                []Loss
	LostTotal           uint64
	QuarantinedFiles    int
	LastSeq, ShippedSeq uint64
}

// Loss counts audit records lost for one reason.
type Loss struct {
	Reason string
	Count  uint64
}

// EventView is one audit event. Summary views leave ID and Fields empty.
type EventView struct {
	Time     time.Time
	Name     string // with the vramseal. prefix, as on the wire
	Severity string // INFO, WARN, ERROR, CRITICAL
	ShardID  string
	GPU      int // -1: none
	ID       string
	Fields   []audit.Field
}
