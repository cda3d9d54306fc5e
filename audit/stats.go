package audit

import "time"

// SpoolStats is the durable audit spool's state at one moment, for the
// metrics collector: what the spool knows (audit/spool), with what its
// shipper adds (OldestPending, ExportFailures; audit/otel).
type SpoolStats struct {
	// PendingRecords are written to the spool and not yet accepted by the
	// OTel Collector.
	PendingRecords uint64
	// Bytes is the size of the spool's segment files on local disk.
	Bytes int64
	// OldestPending is when the oldest pending record was written (zero
	// when nothing is pending, or before the shipper has read it).
	OldestPending time.Time
	// QuarantinedFiles are segment files set aside at start-up as damaged.
	QuarantinedFiles int
	// Lost counts events lost, by reason: queue_full, disk_full,
	// write_error (every key present).
	Lost map[string]uint64
	// ExportFailures counts failed exports to the OTel Collector.
	ExportFailures uint64
	// LastSeq is the last sequence number written, ShippedSeq the cursor
	// (the last one the collector took).
	LastSeq, ShippedSeq uint64
}

// Why events were lost (SpoolStats.Lost keys, the reason label of
// vramseal_audit_events_lost_total, the reason of a vramseal.audit.loss
// record).
const (
	LossQueueFull  = "queue_full"
	LossDiskFull   = "disk_full"
	LossWriteError = "write_error"
)

// LossReasons lists every loss reason, in a fixed order.
func LossReasons() []string { return []string{LossQueueFull, LossDiskFull, LossWriteError} }
