package main

import (
	"context"

	"github.com/sirupsen/logrus"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/internal/config"
)

// auditPipeline is where audit events go. It is built in exactly one place,
// newAuditPipeline, so the durable pipeline (spool + OTLP, audit/otel) can
// replace the log emitter there.
type auditPipeline struct {
	// Emitter receives every event.
	Emitter audit.Emitter
	// Counters counts events and emit failures by name (for metrics).
	Counters *audit.Counters
	// Close flushes what is pending to local disk, bounded by ctx.
	Close func(ctx context.Context) error
}

// newAuditPipeline returns the audit pipeline. Until the durable spool is
// wired in, events go to the operational log (audit.LogEmitter): nothing is
// durable, so CRITICAL events report audit_durable=false.
func newAuditPipeline(cfg *config.Config, log logrus.FieldLogger) (*auditPipeline, error) {
	counters := audit.NewCounters()
	log.WithField(logFieldComponent, "audit").
		Info("audit events go to this log (no durable spool configured in this build)")
	return &auditPipeline{
		Emitter:  audit.NewLogEmitter(log.WithField(logFieldComponent, "audit"), counters),
		Counters: counters,
		Close:    func(context.Context) error { return nil },
	}, nil
}
