package sealer

// Operational log field names (logrus) used by the sealer, the schedule and
// the agent, so one name means one thing in every log line.
const (
	LogFieldShardID   = "shard_id"
	LogFieldGPU       = "gpu"
	LogFieldPath      = "path"
	LogFieldBytes     = "bytes"
	LogFieldDone      = "done_bytes"
	LogFieldPercent   = "percent"
	LogFieldResult    = "result"
	LogFieldDuration  = "duration"
	LogFieldOverdueBy = "overdue_by"
	LogFieldAttempt   = "attempt"
	LogFieldRetryIn   = "retry_in"
	LogFieldReason    = "reason"
	LogFieldDigest    = "digest"
)
