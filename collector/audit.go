package collector

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vramseal/vramseal/audit"
)

// AuditStats reports the spool's state; it must be safe for concurrent use
// and cheap (it is called at each scrape). The audit pipeline
// (audit/otel.Pipeline) implements it.
type AuditStats interface {
	Stats() audit.SpoolStats
}

// AuditStatsFunc adapts a function to AuditStats.
type AuditStatsFunc func() audit.SpoolStats

// Stats implements AuditStats.
func (f AuditStatsFunc) Stats() audit.SpoolStats { return f() }

// auditCollector exports the emitter's counters and the spool's state.
type auditCollector struct {
	counters *audit.Counters
	stats    AuditStats
	now      func() time.Time

	events, failures                   *prometheus.Desc
	pending, bytes, oldest, quarantine *prometheus.Desc
	lost, exportFailures               *prometheus.Desc
}

func newAuditCollector(o Options) *auditCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(Namespace+"_audit_"+name, help, labels, nil)
	}
	return &auditCollector{
		counters: o.AuditCounters, stats: o.AuditStats, now: o.Now,
		events:         d("events_total", "Audit events handed to the audit pipeline, by event name (without the vramseal. prefix).", "event"),
		failures:       d("emit_failures_total", "Audit events the pipeline failed to take or keep, by event name.", "event"),
		pending:        d("spool_pending_records", "Audit records in the local spool not yet acknowledged by the OTel Collector."),
		bytes:          d("spool_bytes", "Size of the local audit spool's files on disk."),
		oldest:         d("spool_oldest_pending_timestamp_seconds", "When the oldest pending audit record was written (the scrape time when none is pending, so the age is 0)."),
		quarantine:     d("spool_quarantined_files", "Audit spool files set aside as damaged at start-up."),
		lost:           d("events_lost_total", "Audit records lost, by reason (queue_full, disk_full, write_error).", "reason"),
		exportFailures: d("export_failures_total", "Failed exports of audit records to the OTel Collector."),
	}
}

func (c *auditCollector) describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.events, c.failures, c.pending, c.bytes, c.oldest, c.quarantine, c.lost, c.exportFailures} {
		ch <- d
	}
}

func (c *auditCollector) update(ch chan<- prometheus.Metric) error {
	if c.counters != nil {
		snap := c.counters.Snapshot()
		for name, n := range snap.Events {
			ch <- prometheus.MustNewConstMetric(c.events, prometheus.CounterValue, float64(n), name)
		}
		for name, n := range snap.Failures {
			ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(n), name)
		}
	}
	if c.stats == nil {
		return nil
	}
	st := c.stats.Stats()
	oldest := st.OldestPending
	if st.PendingRecords == 0 || oldest.IsZero() {
		oldest = c.now()
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	gauge(c.pending, float64(st.PendingRecords))
	gauge(c.bytes, float64(max(st.Bytes, 0)))
	gauge(c.oldest, unixSeconds(oldest))
	gauge(c.quarantine, float64(st.QuarantinedFiles))
	for _, r := range audit.LossReasons() {
		ch <- prometheus.MustNewConstMetric(c.lost, prometheus.CounterValue, float64(st.Lost[r]), r)
	}
	for r, n := range st.Lost {
		if !isLossReason(r) {
			ch <- prometheus.MustNewConstMetric(c.lost, prometheus.CounterValue, float64(n), r)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.exportFailures, prometheus.CounterValue, float64(st.ExportFailures))
	return nil
}

func isLossReason(r string) bool {
	for _, l := range audit.LossReasons() {
		if l == r {
			return true
		}
	}
	return false
}
