// Package spool is vramseal's durable local audit log: every audit event is
// appended here before it is shipped, so no event is lost when the OTel
// Collector is down or the agent restarts.
//
// # Format
//
// The folder holds segment files named after their first sequence number
// (00000000000000000001.seg), a cursor file (the anchor: the last sequence
// number the collector accepted and the last durable checkpoint's sequence
// number and hash, replaced atomically: temporary file, fsync, rename, fsync
// of the folder) and, after a repair, quarantined segments
// (*.seg.quarantined, never deleted). A record is framed as
//
//	uint32 BE length | uint32 BE CRC-32C(body) | body
//	body = version 1 | uint64 BE seq | prev_hash [32] | payload (the event)
//
// and its hash is SHA-256(body): each record carries the previous record's
// hash, so the records form a chain. Checkpoint records close the chain
// periodically with an HMAC (CheckpointMAC) keyed from the seal secret; loss
// and repair records say what was lost or repaired.
//
// # Writing
//
// Append never blocks: it puts the event into a bounded queue (room reserved
// for CRITICAL events) and returns an audit.Receipt. One writer goroutine
// takes what is queued, writes it with one write(2) per batch, fsyncs at once
// when the batch holds a CRITICAL record, and otherwise within the commit
// window (200 ms by default: group commit); receipts settle after the fsync.
// Below MinFreeBytes of free disk space only CRITICAL events are written. A
// failed write is cut back, its events are counted as lost and recorded in a
// loss record once writing works again.
//
// # Starting
//
// Open scans every segment: a torn last record (a crash mid-write) is
// truncated; a segment with a corrupt record is quarantined and the chain goes
// on from the last good record with a recorded break; each repair is written
// as a repair record; segments that end before the anchor (records removed)
// are logged as an error and recorded too. Verify checks a folder offline
// (vramseal-agent audit verify): a spool that ends before its anchor fails,
// and the records after the anchor are reported as the unauthenticated tail.
package spool
