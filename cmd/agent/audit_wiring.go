package main

import (
	"context"
	"fmt"

	"github.com/prometheus/common/version"
	"github.com/sirupsen/logrus"
	"go.opentelemetry.io/otel/trace"

	"github.com/vramseal/vramseal/audit"
	auditotel "github.com/vramseal/vramseal/audit/otel"
	"github.com/vramseal/vramseal/audit/spool"
	"github.com/vramseal/vramseal/collector"
	"github.com/vramseal/vramseal/internal/config"
	"github.com/vramseal/vramseal/internal/logfield"
	"github.com/vramseal/vramseal/internal/secret"
)

// auditPipeline is where audit events go. It is built in exactly one place,
// newAuditPipeline.
type auditPipeline struct {
	// Emitter receives every event: the durable spool (whose receipts the
	// sealer waits on for CRITICAL events), echoed to the operational log.
	Emitter audit.Emitter
	// Counters counts events and emit failures by name (for metrics).
	Counters *audit.Counters
	// Recent keeps the last events in memory, for the status page.
	Recent *audit.Recent
	// Stats is the spool's state, for metrics.
	Stats collector.AuditStats
	// TracerProvider makes the spans around seal, verify and release, so
	// audit records carry their trace and span ids.
	TracerProvider trace.TracerProvider
	// Close flushes what is pending to local disk, bounded by ctx.
	Close func(ctx context.Context) error
}

// recentEvents is how many of the last audit events the status page can
// show (kept in memory: a few hundred bytes each).
const recentEvents = 50

// newAuditPipeline opens (and repairs) the durable audit spool under
// audit.spool_dir and starts shipping it over OTLP as the OTEL_* variables
// say (OTEL_LOGS_EXPORTER=none keeps the spool as the only copy). Each event
// is also written to the operational log.
func newAuditPipeline(ctx context.Context, cfg *config.Config, sec secret.Secret, log logrus.FieldLogger) (*auditPipeline, error) {
	counters := audit.NewCounters()
	key, err := sec.Key(secret.LabelAuditCheckpoint)
	if err != nil {
		return nil, usageErr(err)
	}
	keyID, err := sec.KeyID()
	if err != nil {
		return nil, usageErr(err)
	}
	alog := log.WithField(logfield.Component, "audit")
	p, err := auditotel.NewPipeline(ctx, auditotel.Config{
		Spool: spool.Config{
			Dir: cfg.Audit.SpoolDir, SegmentBytes: int64(cfg.Audit.SegmentBytes), Retention: cfg.Audit.Retention,
			MinFreeBytes: cfg.Audit.MinFreeBytes, CheckpointKey: key, CheckpointKeyID: keyID,
			CheckpointEvery: int(cfg.Audit.CheckpointRecords), CheckpointInterval: cfg.Audit.CheckpointInterval,
		},
		WorkerID: cfg.WorkerID, ServiceVersion: version.Version, Logger: alog, Counters: counters,
	})
	if err != nil {
		return nil, usageErr(fmt.Errorf("%s: audit: %w", cfg.File, err))
	}
	recent := audit.NewRecent(recentEvents)
	return &auditPipeline{
		Emitter:        audit.Tee{Primary: p, Also: []audit.Emitter{audit.NewLogEmitter(alog, nil), recent}},
		Counters:       counters,
		Recent:         recent,
		Stats:          p,
		TracerProvider: p.TracerProvider(),
		Close:          p.Close,
	}, nil
}
