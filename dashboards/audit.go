package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/units"
)

func auditPipeline() *dashboard.DashboardBuilder {
	l := &layout{b: newDashboard(uidAudit, "vramseal / Audit pipeline",
		"Audit events from emit to the local spool to the OTel Collector: rates, failures, losses and backlog.", false)}
	l.row("Events",
		panel{kind: timeSeries, title: "Audit events by name", unit: units.OpsPerSecond, width: 12,
			description: "Audit events emitted per second by name. seal.verification_failed or policy.violation above 0 need action (see their alerts); a sudden stop of seal.verified means verification stopped.",
			queries: []query{{expr: `sum by (event) (rate(vramseal_audit_events_total{` + selNode + `}[$__rate_interval]))`,
				legend: "{{event}}"}}},
		panel{kind: timeSeries, title: "Emit failures", unit: units.Short, width: 12,
			description: "Audit events that failed to reach the local spool, per interval. Above 0: check the spool volume (VramsealAuditEmitFailures runbook).",
			queries: []query{{expr: `sum by (instance, event) (increase(vramseal_audit_emit_failures_total{` + selNode + `}[$__rate_interval]))`,
				legend: "{{instance}} {{event}}"}}},
		panel{kind: timeSeries, title: "Events lost", unit: units.Short, width: 12,
			description: "Audit events lost per interval by reason (queue_full, disk_full, write_error). Above 0: the audit trail has a gap; follow the VramsealAuditEventsLost runbook.",
			queries: []query{{expr: `sum by (instance, reason) (increase(vramseal_audit_events_lost_total{` + selNode + `}[$__rate_interval]))`,
				legend: "{{instance}} {{reason}}"}}},
		panel{kind: statPanel, title: "Quarantined spool files", unit: units.Short, width: 12, redAt: ptr(1.0),
			description: "Spool files moved aside at start-up because they could not be trusted. Above 0: keep them as evidence and follow the VramsealAuditSpoolQuarantined runbook.",
			queries:     []query{{expr: `vramseal_audit_spool_quarantined_files{` + selNode + `}`, legend: "{{instance}}"}}},
	)
	l.row("Spool and export",
		panel{kind: timeSeries, title: "Spool backlog (records)", unit: units.Short, width: 8,
			description: "Records in the spool not yet acknowledged by the collector. Growing steadily: exports fail or are too slow (VramsealAuditBacklogGrowing runbook).",
			queries:     []query{{expr: `vramseal_audit_spool_pending_records{` + selNode + `}`, legend: "{{instance}}"}}},
		panel{kind: timeSeries, title: "Spool size", unit: units.BytesIEC, width: 8,
			description: "Bytes of the local spool on disk. Approaching the volume size minus audit.min_free_bytes: events will be lost with disk_full; fix exports or grow the volume.",
			queries:     []query{{expr: `vramseal_audit_spool_bytes{` + selNode + `}`, legend: "{{instance}}"}}},
		panel{kind: timeSeries, title: "Oldest pending record age", unit: units.Seconds, width: 8,
			description: "Age of the oldest record waiting to be shipped (0 when nothing waits). Above 15 minutes: see the VramsealAuditBacklogGrowing runbook.",
			queries: []query{{expr: `(time() - vramseal_audit_spool_oldest_pending_timestamp_seconds{` + selNode + `})` +
				` * on (job, instance) (vramseal_audit_spool_pending_records{` + selNode + `} > bool 0)`, legend: "{{instance}}"}}},
		panel{kind: timeSeries, title: "Export failures", unit: units.OpsPerSecond, width: 24,
			description: "Failed exports per second to the OTel Collector. Sustained above 0: check the collector and the OTEL_* settings (VramsealAuditExportFailing runbook); records wait in the spool meanwhile.",
			queries:     []query{{expr: `rate(vramseal_audit_export_failures_total{` + selNode + `}[$__rate_interval])`, legend: "{{instance}}"}}},
	)
	return l.b
}
