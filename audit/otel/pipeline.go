package otel

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/time/rate"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/audit/spool"
	"github.com/vramseal/vramseal/internal/logfield"
)

// ScopeName is the instrumentation scope of the audit log records.
const ScopeName = "github.com/vramseal/vramseal/audit"

// Config configures a Pipeline. Spool.Dir is required.
type Config struct {
	// Spool configures the durable spool (its defaults where zero). The
	// Pipeline sets its OnFailure, and its WorkerID and Logger when unset.
	Spool spool.Config
	// WorkerID and ServiceVersion go into the OTel resource.
	WorkerID       string
	ServiceVersion string
	// Logger is the operational log (logrus standard logger when nil).
	Logger logrus.FieldLogger
	// Counters counts emitted events and failures (may be nil).
	Counters *audit.Counters
	// ShipBatch is the most records one export carries (512 when zero).
	ShipBatch int
	// RetryMin and RetryMax bound the shipper's backoff after a failed
	// export (500ms and 30s when zero). It retries forever.
	RetryMin, RetryMax time.Duration
	// Getenv reads the OTEL_* and NODE_NAME variables (os.Getenv when nil).
	// The OTLP exporters read their endpoint, headers, timeout and TLS
	// variables from the process environment themselves.
	Getenv func(string) string
}

// Pipeline is the audit Emitter of the agent: every event goes into the
// durable spool first, and a shipper exports the spool's records as OTel
// log records through OTLP. It also owns the TracerProvider whose spans the
// sealer starts, so the records carry the ids of the operation's span.
type Pipeline struct {
	cfg      Config
	log      logrus.FieldLogger
	spool    *spool.Spool
	lp       *sdklog.LoggerProvider
	proc     *collectProcessor
	exporter sdklog.Exporter
	tp       *sdktrace.TracerProvider
	spans    *quietSpanExporter

	cancel context.CancelFunc
	done   chan struct{}

	exportFailures atomic.Uint64
	oldestPending  atomic.Int64 // Unix ns of the oldest record read and not yet shipped; 0 none
	closeOnce      sync.Once
	closeErr       error
}

// NewPipeline opens (and repairs) the spool, builds the OTLP exporters, the
// LoggerProvider and the TracerProvider from the OTEL_* environment, and
// starts shipping. Close it to flush.
func NewPipeline(ctx context.Context, cfg Config) (*Pipeline, error) {
	if cfg.Logger == nil {
		cfg.Logger = logrus.StandardLogger()
	}
	if cfg.Getenv == nil {
		cfg.Getenv = os.Getenv
	}
	if cfg.ShipBatch <= 0 {
		cfg.ShipBatch = 512
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 500 * time.Millisecond
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 30 * time.Second
	}
	p := &Pipeline{cfg: cfg, log: cfg.Logger.WithField(logfield.Component, "audit-pipeline"), done: make(chan struct{})}
	res, err := newResource(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("audit pipeline: %w", err)
	}
	exp, proto, err := newLogExporter(ctx, cfg.Getenv)
	if err != nil {
		return nil, fmt.Errorf("audit pipeline: %w", err)
	}
	spanExp, err := newSpanExporter(ctx, cfg.Getenv)
	if err != nil {
		return nil, fmt.Errorf("audit pipeline: %w", err)
	}
	scfg := cfg.Spool
	scfg.OnFailure = p.failed
	if scfg.WorkerID == "" {
		scfg.WorkerID = cfg.WorkerID
	}
	if scfg.Logger == nil {
		scfg.Logger = cfg.Logger
	}
	sp, err := spool.Open(scfg)
	if err != nil {
		if exp != nil {
			_ = exp.Shutdown(ctx)
		}
		if spanExp != nil {
			_ = spanExp.Shutdown(ctx)
		}
		return nil, fmt.Errorf("audit pipeline: %w", err)
	}
	p.spool = sp
	p.exporter = exp
	p.proc = &collectProcessor{}
	p.lp = sdklog.NewLoggerProvider(sdklog.WithResource(res), sdklog.WithProcessor(p.proc))
	topts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if spanExp != nil {
		p.spans = &quietSpanExporter{SpanExporter: spanExp, log: p.log, warn: rate.Sometimes{Interval: time.Minute}}
		topts = append(topts, sdktrace.WithBatcher(p.spans))
	}
	p.tp = sdktrace.NewTracerProvider(topts...)
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel = cancel
	go p.ship(sctx)
	p.log.WithFields(logrus.Fields{logfield.SpoolDir: cfg.Spool.Dir, logfield.Protocol: proto, logfield.Export: exp != nil}).Info("audit pipeline started")
	return p, nil
}

func (p *Pipeline) failed(name string) {
	if p.cfg.Counters != nil {
		p.cfg.Counters.Failed(name)
	}
}

// Emit appends ev to the spool with the span context of ctx and returns at
// once. The Receipt settles when the record is on disk (fsynced at once for
// CRITICAL events, within the commit window for the rest), or with the
// reason it is not.
func (p *Pipeline) Emit(ctx context.Context, ev audit.Event) audit.Receipt {
	if p.cfg.Counters != nil {
		p.cfg.Counters.Emitted(ev.Name())
	}
	e := spool.EntryOf(ev)
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		e.TraceID = sc.TraceID()
		e.SpanID = sc.SpanID()
		e.TraceFlags = byte(sc.TraceFlags())
	}
	return p.spool.Append(e, ev.Severity() == audit.SeverityCritical)
}

// TracerProvider returns the provider for the spans around operations.
func (p *Pipeline) TracerProvider() trace.TracerProvider {
	if p.tp == nil {
		return noop.NewTracerProvider()
	}
	return p.tp
}

// Stats returns the spool's state with the shipper's: the oldest record
// read and not yet shipped, and the failed exports.
func (p *Pipeline) Stats() audit.SpoolStats {
	st := p.spool.Stats()
	st.ExportFailures = p.exportFailures.Load()
	if ns := p.oldestPending.Load(); ns != 0 && st.PendingRecords > 0 {
		st.OldestPending = time.Unix(0, ns)
	}
	return st
}

// Close stops shipping (it resumes from the cursor at the next start),
// writes what is queued to the spool with a last checkpoint and fsyncs it,
// flushes the spans, and shuts the exporters down, all bounded by ctx.
func (p *Pipeline) Close(ctx context.Context) error {
	p.closeOnce.Do(func() {
		p.cancel()
		var errs []error
		select {
		case <-p.done:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("audit pipeline: waiting for the shipper: %w", ctx.Err()))
		}
		if err := p.spool.Close(ctx); err != nil {
			errs = append(errs, err)
		}
		if err := p.tp.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("audit pipeline: tracer provider: %w", err))
		}
		if p.exporter != nil {
			if err := p.exporter.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("audit pipeline: log exporter: %w", err))
			}
		}
		if err := p.lp.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("audit pipeline: logger provider: %w", err))
		}
		p.closeErr = errors.Join(errs...)
	})
	return p.closeErr
}

// ship exports the spool's records in order, advancing the cursor only when
// the collector accepted a batch, and retries forever with backoff.
func (p *Pipeline) ship(ctx context.Context) {
	defer close(p.done)
	logger := p.lp.Logger(ScopeName)
	r := p.spool.NewReader(p.spool.Shipped())
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var (
		pending  []spool.Record
		batch    []sdklog.Record
		backoff  = p.cfg.RetryMin
		failing  bool
		attempts int
		// While exports keep failing, the warning is logged at most once a
		// minute; the first failure after a success always is.
		warn = rate.Sometimes{Interval: time.Minute}
	)
	for ctx.Err() == nil {
		if len(pending) == 0 {
			recs, err := r.Read(p.cfg.ShipBatch)
			if err != nil {
				p.log.WithError(err).Error("audit shipper: a spool segment is unreadable; its remaining records are skipped")
			}
			if len(recs) == 0 {
				select {
				case <-ctx.Done():
				case <-p.spool.Notify():
				case <-tick.C:
				}
				continue
			}
			pending = recs
			p.oldestPending.Store(recs[0].Time.UnixNano())
			if p.exporter == nil { // OTEL_LOGS_EXPORTER=none: the spool is the copy
				p.ack(pending)
				pending = nil
				continue
			}
			for _, rec := range recs {
				logger.Emit(recordContext(ctx, rec), LogRecord(rec))
			}
			batch = p.proc.take()
		}
		err := p.exporter.Export(ctx, batch)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			p.exportFailures.Add(1)
			attempts++
			if !failing {
				warn = rate.Sometimes{Interval: time.Minute}
			}
			warn.Do(func() {
				p.log.WithError(err).WithFields(logrus.Fields{logfield.Attempts: attempts, logfield.PendingRecords: p.spool.Stats().PendingRecords, logfield.RetryIn: backoff.String()}).Warn("audit export to the OTel collector failed; records stay in the spool and are retried")
			})
			failing = true
			sleep := backoff/2 + rand.N(backoff/2+1)
			backoff = min(backoff*2, p.cfg.RetryMax)
			select {
			case <-ctx.Done():
			case <-time.After(sleep):
			}
			continue
		}
		if failing {
			p.log.WithField(logfield.Attempts, attempts).Info("audit export to the OTel collector works again")
			failing, attempts = false, 0
		}
		backoff = p.cfg.RetryMin
		p.ack(pending)
		pending, batch = nil, nil
	}
}

func (p *Pipeline) ack(recs []spool.Record) {
	if err := p.spool.Ack(recs[len(recs)-1].Seq); err != nil {
		p.log.WithError(err).Error("audit shipper: cannot write the cursor; records may be shipped again after a restart")
	}
	p.oldestPending.Store(0)
}

// recordContext carries the span context the event was emitted under, so
// the logger puts its trace and span ids on the record.
func recordContext(ctx context.Context, rec spool.Record) context.Context {
	if rec.TraceID == ([16]byte{}) {
		return ctx
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: rec.TraceID, SpanID: rec.SpanID, TraceFlags: trace.TraceFlags(rec.TraceFlags), Remote: true,
	})
	return trace.ContextWithSpanContext(ctx, sc)
}

var _ audit.Emitter = (*Pipeline)(nil)
