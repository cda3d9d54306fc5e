// Package audit defines vramseal's audit events and the Emitter that the rest
// of the agent calls to report them.
//
// There is one Go type per event of the specification (docs/audit-events.md):
// VRAMSealed, SealVerified, SealVerificationFailed, VRAMDeallocated,
// PolicyViolation, VRAMAllocated and VRAMAllocationFailed. Every event carries a
// Header with a unique event id (sent as log.record.uid), the time it happened
// and the worker id. Fields lists an event's fields by their schema name, in
// the order of the specification, so encoders (the OTel mapping, the
// operational log, tests) never need a type switch.
//
// The rules every Emitter keeps:
//
//   - Emit hands back at once and never fails the operation it reports.
//   - Emit returns a Receipt. For a CRITICAL event the operation waits on it,
//     with a short bound (WaitDurable), until the record is durable on local
//     disk, and then returns its own result either way.
//   - Every failure or loss is logged (logrus) and counted. Nothing is
//     dropped silently.
//
// Emitters here: LogEmitter writes events to the operational log (for the
// demo), Recorder keeps them in memory
// for tests. The durable spool and OTLP export live in audit/otel.
package audit
