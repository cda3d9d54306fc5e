package otel

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/log"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/audit/spool"
)

// Attribute keys every shipped record carries.
const (
	KeyRecordUID = "log.record.uid"
	KeyWorkerID  = "vramseal.worker.id"
	KeySeq       = "vramseal.audit.seq"
	KeyPrevHash  = "vramseal.audit.prev_hash"
	// KeyBody carries the record's body exactly as the spool framed it,
	// base64 (standard, padded): SHA-256 of those bytes is the record's
	// hash, so a copy of the records (the collector's) can be checked
	// against the chain without the spool.
	KeyBody = "vramseal.audit.body"
)

// AllEvents is the Event of a Mapping that every record carries.
const AllEvents = "*"

// Mapping is one row of the event → attribute mapping (docs/audit-events.md).
type Mapping struct {
	// Event is the event name without the "vramseal." prefix, or
	// AllEvents.
	Event string
	// Field is the field's name in the specification.
	Field string
	// Attribute is the OTel attribute key it is sent as.
	Attribute string
	// Type is the attribute's type: string, int or bool.
	Type string
}

// Mappings is the complete event → attribute mapping, the single source of
// truth that docs/audit-events.md repeats (a test compares the two).
var Mappings = []Mapping{
	{AllEvents, "event_id", KeyRecordUID, "string"},
	{AllEvents, "worker_id", KeyWorkerID, "string"},
	{AllEvents, "seq", KeySeq, "int"},
	{AllEvents, "prev_hash", KeyPrevHash, "string"},
	{AllEvents, "cause", "vramseal.cause", "string"},
	{AllEvents, "caller_uid", "vramseal.caller.uid", "int"},
	{AllEvents, "caller_gid", "vramseal.caller.gid", "int"},
	{AllEvents, "caller_pid", "vramseal.caller.pid", "int"},
	{AllEvents, "caller_executable", "vramseal.caller.executable", "string"},
	{AllEvents, "caller_pod_uid", "vramseal.caller.k8s.pod.uid", "string"},
	{AllEvents, "caller_container_id", "vramseal.caller.container.id", "string"},
	{AllEvents, "gpu_uuid", "vramseal.gpu.uuid", "string"},
	{AllEvents, "body", KeyBody, "string"},

	{audit.NameVRAMSealed, "shard_id", "vramseal.shard.id", "string"},
	{audit.NameVRAMSealed, "gpu_device", "gpu.device.index", "int"},
	{audit.NameVRAMSealed, "vram_bytes", "vramseal.vram.bytes", "int"},
	{audit.NameVRAMSealed, "digest", "vramseal.seal.digest", "string"},
	{audit.NameVRAMSealed, "content_sha256", "vramseal.seal.content_sha256", "string"},
	{audit.NameVRAMSealed, "leaf_size", "vramseal.seal.leaf_size", "int"},
	{audit.NameVRAMSealed, "model_ref", "vramseal.model.ref", "string"},
	{audit.NameVRAMSealed, "seal", "vramseal.seal.record", "string"},
	{audit.NameVRAMSealed, "seal_signature", "vramseal.seal.signature", "string"},
	{audit.NameVRAMSealed, "origin", "vramseal.shard.origin", "string"},

	{audit.NameSealVerified, "shard_id", "vramseal.shard.id", "string"},
	{audit.NameSealVerified, "gpu_device", "gpu.device.index", "int"},
	{audit.NameSealVerified, "digest", "vramseal.seal.digest", "string"},

	{audit.NameSealVerificationFailed, "shard_id", "vramseal.shard.id", "string"},
	{audit.NameSealVerificationFailed, "reason", "vramseal.verification.reason", "string"},
	{audit.NameSealVerificationFailed, "expected_digest", "vramseal.verification.expected_digest", "string"},
	{audit.NameSealVerificationFailed, "actual_digest", "vramseal.verification.actual_digest", "string"},
	{audit.NameSealVerificationFailed, "severity", "vramseal.severity", "string"},
	{audit.NameSealVerificationFailed, "gpu_device", "gpu.device.index", "int"},
	{audit.NameSealVerificationFailed, "first_bad_offset", "vramseal.verification.first_bad_offset", "int"},
	{audit.NameSealVerificationFailed, "bad_chunks", "vramseal.verification.bad_chunks", "int"},

	{audit.NameVRAMDeallocated, "shard_id", "vramseal.shard.id", "string"},
	{audit.NameVRAMDeallocated, "freed_bytes", "vramseal.vram.freed_bytes", "int"},
	{audit.NameVRAMDeallocated, "remaining_used", "vramseal.vram.remaining_used_bytes", "int"},
	{audit.NameVRAMDeallocated, "gpu_device", "gpu.device.index", "int"},
	{audit.NameVRAMDeallocated, "reason", "vramseal.deallocation.reason", "string"},
	{audit.NameVRAMDeallocated, "still_mapped_by", "vramseal.deallocation.still_mapped_by", "string"},

	{audit.NamePolicyViolation, "policy", "vramseal.policy.name", "string"},
	{audit.NamePolicyViolation, "violation", "vramseal.policy.violation", "string"},
	{audit.NamePolicyViolation, "details", "vramseal.policy.details", "string"},
	{audit.NamePolicyViolation, "action_taken", "vramseal.policy.action_taken", "string"},
	{audit.NamePolicyViolation, "gpu_device", "gpu.device.index", "int"},
	{audit.NamePolicyViolation, "severity", "vramseal.severity", "string"},

	{audit.NameVRAMAllocated, "shard_id", "vramseal.shard.id", "string"},
	{audit.NameVRAMAllocated, "gpu_device", "gpu.device.index", "int"},
	{audit.NameVRAMAllocated, "requested_bytes", "vramseal.vram.requested_bytes", "int"},
	{audit.NameVRAMAllocated, "used_after", "vramseal.vram.used_after_bytes", "int"},
	{audit.NameVRAMAllocated, "available_bytes", "vramseal.vram.available_bytes", "int"},

	{audit.NameVRAMAllocationFailed, "shard_id", "vramseal.shard.id", "string"},
	{audit.NameVRAMAllocationFailed, "gpu_device", "gpu.device.index", "int"},
	{audit.NameVRAMAllocationFailed, "requested_bytes", "vramseal.vram.requested_bytes", "int"},
	{audit.NameVRAMAllocationFailed, "available_bytes", "vramseal.vram.available_bytes", "int"},
	{audit.NameVRAMAllocationFailed, "reason", "vramseal.allocation.reason", "string"},

	{audit.NameVRAMOpened, "shard_id", "vramseal.shard.id", "string"},
	{audit.NameVRAMOpened, "gpu_device", "gpu.device.index", "int"},

	{audit.NameVRAMClosed, "shard_id", "vramseal.shard.id", "string"},
	{audit.NameVRAMClosed, "gpu_device", "gpu.device.index", "int"},
	{audit.NameVRAMClosed, "reason", "vramseal.lease.close_reason", "string"},

	{audit.NameControlRateLimited, "endpoint", "vramseal.control.endpoint", "string"},
	{audit.NameControlRateLimited, "requests_per_second", "vramseal.control.rate_limit.requests_per_second", "string"},
	{audit.NameControlRateLimited, "burst", "vramseal.control.rate_limit.burst", "int"},

	{audit.NameDebugFaultInjected, "fault", "vramseal.debug.fault", "string"},
	{audit.NameDebugFaultInjected, "shard_id", "vramseal.shard.id", "string"},
	{audit.NameDebugFaultInjected, "gpu_device", "gpu.device.index", "int"},
	{audit.NameDebugFaultInjected, "details", "vramseal.debug.details", "string"},

	{audit.NameGPUXID, "gpu_device", "gpu.device.index", "int"},
	{audit.NameGPUXID, "xid", "vramseal.gpu.xid", "int"},
	{audit.NameGPUXID, "count", "vramseal.gpu.xid.count", "int"},

	{audit.NameGPUForeignProcess, "gpu_device", "gpu.device.index", "int"},
	{audit.NameGPUForeignProcess, "pid", "vramseal.gpu.process.pid", "int"},
	{audit.NameGPUForeignProcess, "executable", "vramseal.gpu.process.executable", "string"},
	{audit.NameGPUForeignProcess, "used_bytes", "vramseal.gpu.process.used_bytes", "int"},
	{audit.NameGPUForeignProcess, "sealed_shards", "vramseal.gpu.sealed_shards", "int"},
	{audit.NameGPUForeignProcess, "suppressed", "vramseal.gpu.foreign_process.suppressed", "int"},

	{spool.NameCheckpoint, "hmac", "vramseal.audit.checkpoint.hmac", "string"},
	{spool.NameCheckpoint, "key_id", "vramseal.audit.checkpoint.key_id", "string"},

	{spool.NameLoss, "reason", "vramseal.audit.loss.reason", "string"},
	{spool.NameLoss, "count", "vramseal.audit.loss.count", "int"},
	{spool.NameLoss, "first_seq", "vramseal.audit.loss.first_seq", "int"},
	{spool.NameLoss, "first_lost_at", "vramseal.audit.loss.first_lost_at", "string"},
	{spool.NameLoss, "last_lost_at", "vramseal.audit.loss.last_lost_at", "string"},

	{spool.NameRepair, "action", "vramseal.audit.repair.action", "string"},
	{spool.NameRepair, "file", "vramseal.audit.repair.file", "string"},
	{spool.NameRepair, "offset", "vramseal.audit.repair.offset", "int"},
	{spool.NameRepair, "bytes", "vramseal.audit.repair.bytes", "int"},
	{spool.NameRepair, "last_good_seq", "vramseal.audit.repair.last_good_seq", "int"},
	{spool.NameRepair, "detail", "vramseal.audit.repair.detail", "string"},
	{spool.NameRepair, "first_missing_seq", "vramseal.audit.repair.first_missing_seq", "int"},
	{spool.NameRepair, "last_missing_seq", "vramseal.audit.repair.last_missing_seq", "int"},
}

// attrIndex maps event name → field → attribute key.
var attrIndex = func() map[string]map[string]string {
	m := map[string]map[string]string{}
	for _, r := range Mappings {
		if m[r.Event] == nil {
			m[r.Event] = map[string]string{}
		}
		m[r.Event][r.Field] = r.Attribute
	}
	return m
}()

// AttributeKey returns the attribute key of an event's field, and whether
// the mapping has one.
func AttributeKey(event, field string) (string, bool) {
	if k, ok := attrIndex[event][field]; ok {
		return k, true
	}
	k, ok := attrIndex[AllEvents][field]
	return k, ok
}

// value converts a field value to an attribute value.
func value(v any) attribute.Value {
	switch x := v.(type) {
	case string:
		return attribute.StringValue(x)
	case int64:
		return attribute.Int64Value(x)
	case int:
		return attribute.Int64Value(int64(x))
	case uint64:
		if x > math.MaxInt64 {
			x = math.MaxInt64
		}
		return attribute.Int64Value(int64(x))
	case bool:
		return attribute.BoolValue(x)
	}
	return attribute.StringValue(fmt.Sprint(v))
}

// LogRecord maps a spool record to an OTel log record: event name
// "vramseal.<name>", timestamp, severity number and text, a short body, and
// every field as an attribute (Mappings). A field the mapping lacks is sent
// as "vramseal.<field>" rather than dropped. The span context is not part of
// the record: the logger takes it from the context Emit gets.
func LogRecord(rec spool.Record) log.Record {
	var r log.Record
	r.SetEventName(audit.NamePrefix + rec.Name)
	r.SetTimestamp(rec.Time)
	r.SetSeverity(log.Severity(rec.Severity))
	r.SetSeverityText(rec.Severity.String())
	r.SetBody(attribute.StringValue(summary(rec)))
	r.AddAttributes(Attributes(rec)...)
	return r
}

// Attributes returns the attributes a shipped record carries: the ones of
// every record (uid, worker id, seq, prev hash, and the body when the
// record has one) and each field under its key (Mappings). A field the
// mapping lacks is sent as "vramseal.<field>" rather than dropped.
func Attributes(rec spool.Record) []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, len(rec.Fields)+5)
	attrs = append(attrs,
		attribute.String(KeyRecordUID, rec.ID),
		attribute.String(KeyWorkerID, rec.WorkerID),
		attribute.Int64(KeySeq, int64(min(rec.Seq, math.MaxInt64))),
		attribute.String(KeyPrevHash, hex.EncodeToString(rec.PrevHash[:])),
	)
	if len(rec.Body) > 0 {
		attrs = append(attrs, attribute.String(KeyBody, base64.StdEncoding.EncodeToString(rec.Body)))
	}
	for _, f := range rec.Fields {
		key, ok := AttributeKey(rec.Name, f.Key)
		if !ok {
			key = "vramseal." + f.Key
		}
		attrs = append(attrs, attribute.KeyValue{Key: attribute.Key(key), Value: value(f.Value)})
	}
	return attrs
}

// summary is the record's body: the event name and its main fields, for
// people reading the collector's output.
func summary(rec spool.Record) string {
	var b strings.Builder
	b.WriteString(audit.NamePrefix + rec.Name)
	for _, k := range []string{"shard_id", "gpu_device", "reason", "violation", "action", "count"} {
		if v := rec.Field(k); v != nil {
			fmt.Fprintf(&b, " %s=%v", k, v)
		}
	}
	return b.String()
}
