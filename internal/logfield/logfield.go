// Package logfield names every field of the agent's operational log
// (logrus), so that one name means one thing in every line of every
// package: a search for shard_id finds every line about a shard.
package logfield

// Fields about shards, GPUs and operations.
const (
	ShardID   = "shard_id"
	GPU       = "gpu"
	GPUs      = "gpus"
	Path      = "path"
	Bytes     = "bytes"
	Done      = "done_bytes"
	Percent   = "percent"
	Result    = "result"
	Duration  = "duration"
	OverdueBy = "overdue_by"
	Attempt   = "attempt"
	Attempts  = "attempts"
	RetryIn   = "retry_in"
	Reason    = "reason"
	Digest    = "digest"
	Leases    = "leases"
	Library   = "library"
	Violation = "violation"
	Action    = "action_taken"
)

// Fields about callers and requests (the control and consumer sockets).
const (
	PeerUID           = "peer_uid"
	PeerGID           = "peer_gid"
	PeerPID           = "peer_pid"
	Method            = "method"
	Status            = "status"
	Why               = "why"
	RequestsPerSecond = "requests_per_second"
	Burst             = "burst"
	MaxConnections    = "max_connections"
)

// Fields of the debug switches' lines.
const (
	Offset        = "offset"
	Bit           = "bit"
	Correctable   = "correctable"
	Uncorrectable = "uncorrectable"
	Lost          = "lost"
	On            = "on"
)

// Fields about audit events and the spool.
const (
	Event              = "event"
	EventID            = "event_id"
	EventSeverity      = "event_severity"
	File               = "file"
	SpoolDir           = "spool_dir"
	Protocol           = "protocol"
	Export             = "export"
	Spans              = "spans"
	SpanExportFailures = "span_export_failures"
	PendingRecords     = "pending_records"
	FreeBytes          = "free_bytes"
	MinFreeBytes       = "min_free_bytes"
	LostTotal          = "lost_total"
)

// Fields about the agent itself.
const (
	WorkerID    = "worker_id"
	Device      = "device"
	Socket      = "socket"
	Listen      = "listen_address"
	ConfigFile  = "config_file"
	Component   = "component"
	Collector   = "collector"
	Signal      = "signal"
	Added       = "added"
	Removed     = "removed"
	Changed     = "changed"
	Keys        = "keys"
	Pending     = "pending"
	Released    = "released"
	Version     = "version"
	ExitStatus  = "exit_status"
	MemoryLimit = "memory_limit_bytes"
	GOGC        = "gogc"
	Env         = "env"
	Value       = "value"
	Trigger     = "trigger"
	AutoReload  = "config_auto_reload_interval"
)
