package audit

import (
	"context"

	"github.com/sirupsen/logrus"
	"github.com/vramseal/vramseal/internal/logfield"
	"go.opentelemetry.io/otel/trace"
)

// LogEmitter writes every event to the operational log, one line per event
// with the event's fields (and trace_id and span_id when the event's context
// carries a span). It keeps no durable copy: every Receipt reports
// ErrNotDurable. It serves the demo and deployments without a spool.
type LogEmitter struct {
	log      logrus.FieldLogger
	counters *Counters
}

// NewLogEmitter returns a LogEmitter writing to log and counting into
// counters (which may be nil).
func NewLogEmitter(log logrus.FieldLogger, counters *Counters) *LogEmitter {
	return &LogEmitter{log: log, counters: counters}
}

// Emit logs ev.
func (e *LogEmitter) Emit(ctx context.Context, ev Event) Receipt {
	if e.counters != nil {
		e.counters.Emitted(ev.Name())
	}
	f := LogFields(ev)
	// The caller's trace (a traceparent on a control API request, for
	// instance), so the log line can be found from the trace.
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		f["trace_id"], f["span_id"] = sc.TraceID().String(), sc.SpanID().String()
	}
	entry := e.log.WithFields(f)
	switch ev.Severity() {
	case SeverityCritical, SeverityError:
		entry.Error("audit event")
	case SeverityWarn:
		entry.Warn("audit event")
	default:
		entry.Info("audit event")
	}
	return Settled(ErrNotDurable)
}

// LogFields renders an event as logrus fields: "event", "event_id",
// "event_severity", "worker_id", the header's (cause, caller, GPU UUID) and
// the event's own fields.
func LogFields(ev Event) logrus.Fields {
	h := ev.Head()
	f := logrus.Fields{
		logfield.Event:         NamePrefix + ev.Name(),
		logfield.EventID:       h.ID,
		logfield.EventSeverity: ev.Severity().String(),
		logfield.WorkerID:      h.WorkerID,
	}
	for _, fl := range AllFields(ev) {
		if fl.Key == "severity" || fl.Key == "seal" {
			continue // already there as event_severity; the seal record repeats the other fields
		}
		f[fl.Key] = fl.Value
	}
	return f
}

var _ Emitter = (*LogEmitter)(nil)
