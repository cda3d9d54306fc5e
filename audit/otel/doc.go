// Package otel turns vramseal's audit events into OpenTelemetry log records
// and ships them to an OTel Collector through OTLP, durably.
//
// Pipeline is the agent's audit.Emitter: Emit appends the event, with the
// span context of its ctx, to the local spool (package audit/spool); a
// shipper reads the spool in order, makes each record an OTel log record
// (LogRecord: event name "vramseal.<name>", severity, every field as an
// attribute per Mappings, log.record.uid = the event id, the span's trace and
// span ids), and exports batches through a LoggerProvider whose small
// processor hands them to the OTLP exporter itself, so the result comes
// back. The cursor advances only when the collector accepted a batch;
// failures are retried forever with backoff and logged at most once a
// minute. The Pipeline also owns the TracerProvider for the spans around
// seal, verify and release, exported to the same collector.
//
// Every record also carries its body exactly as the spool framed it
// (vramseal.audit.body), so the collector's copy can be checked on its own:
// ReadCopy reads the files the Collector's file exporter writes (JSON lines,
// or zstd-compressed) and VerifyCopy checks each record against its body,
// the sequence, the hash chain and the checkpoint HMACs, per worker;
// CopyReport.CompareSpool compares the copy with the local spool.
//
// Configuration comes from the standard environment variables:
// OTEL_EXPORTER_OTLP_ENDPOINT (and _LOGS_/_TRACES_ variants),
// OTEL_EXPORTER_OTLP_PROTOCOL (grpc or http/protobuf, the default),
// OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _CERTIFICATE, OTEL_SERVICE_NAME,
// OTEL_RESOURCE_ATTRIBUTES, and OTEL_LOGS_EXPORTER / OTEL_TRACES_EXPORTER
// (otlp or none; with none the spool is the only copy).
package otel
