package otel

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"
	"github.com/vramseal/vramseal/internal/logfield"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"golang.org/x/time/rate"
)

// Protocols of the OTLP exporters (OTEL_EXPORTER_OTLP_PROTOCOL).
const (
	ProtocolGRPC = "grpc"
	ProtocolHTTP = "http/protobuf"
)

// protocol returns the OTLP protocol for a signal ("LOGS", "TRACES"):
// OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL,
// else http/protobuf (the specification's default).
func protocol(getenv func(string) string, signal string) (string, error) {
	p := getenv("OTEL_EXPORTER_OTLP_" + signal + "_PROTOCOL")
	if p == "" {
		p = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	switch p {
	case "":
		return ProtocolHTTP, nil
	case ProtocolGRPC, ProtocolHTTP:
		return p, nil
	}
	return "", fmt.Errorf("OTLP protocol %q for %s is not supported (want grpc or http/protobuf)", p, strings.ToLower(signal))
}

// exporterKind reads OTEL_<SIGNAL>_EXPORTER: "otlp" (default) or "none".
func exporterKind(getenv func(string) string, signal string) (string, error) {
	switch v := getenv("OTEL_" + signal + "_EXPORTER"); v {
	case "", "otlp":
		return "otlp", nil
	case "none":
		return "none", nil
	default:
		return "", fmt.Errorf("OTEL_%s_EXPORTER=%q is not supported (want otlp or none)", signal, v)
	}
}

// newLogExporter makes the OTLP log exporter the environment asks for, or
// nil for OTEL_LOGS_EXPORTER=none. The exporter's own retries are off: the
// shipper retries from the spool. Endpoint, headers, timeout, TLS and
// compression come from the standard OTEL_EXPORTER_OTLP_[LOGS_]* variables,
// which the exporters read themselves.
func newLogExporter(ctx context.Context, getenv func(string) string) (sdklog.Exporter, string, error) {
	kind, err := exporterKind(getenv, "LOGS")
	if err != nil || kind == "none" {
		return nil, kind, err
	}
	p, err := protocol(getenv, "LOGS")
	if err != nil {
		return nil, "", err
	}
	var exp sdklog.Exporter
	switch p {
	case ProtocolGRPC:
		exp, err = otlploggrpc.New(ctx, otlploggrpc.WithRetry(otlploggrpc.RetryConfig{Enabled: false}))
	default:
		exp, err = otlploghttp.New(ctx, otlploghttp.WithRetry(otlploghttp.RetryConfig{Enabled: false}))
	}
	if err != nil {
		return nil, "", fmt.Errorf("OTLP log exporter (%s): %w", p, err)
	}
	return exp, p, nil
}

// newSpanExporter makes the OTLP trace exporter, or nil for
// OTEL_TRACES_EXPORTER=none.
func newSpanExporter(ctx context.Context, getenv func(string) string) (sdktrace.SpanExporter, error) {
	kind, err := exporterKind(getenv, "TRACES")
	if err != nil || kind == "none" {
		return nil, err
	}
	p, err := protocol(getenv, "TRACES")
	if err != nil {
		return nil, err
	}
	var exp sdktrace.SpanExporter
	switch p {
	case ProtocolGRPC:
		exp, err = otlptracegrpc.New(ctx, otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false}))
	default:
		exp, err = otlptracehttp.New(ctx, otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false}))
	}
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter (%s): %w", p, err)
	}
	return exp, nil
}

// newResource describes the agent with resourceAttrs, under whatever
// OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME add (the environment wins).
func newResource(ctx context.Context, cfg Config) (*resource.Resource, error) {
	env, err := resource.New(ctx, resource.WithTelemetrySDK(), resource.WithFromEnv())
	if err != nil {
		return nil, fmt.Errorf("OTel resource: %w", err)
	}
	res, err := resource.Merge(resource.NewSchemaless(resourceAttrs(cfg, os.Hostname)...), env)
	if err != nil {
		return nil, fmt.Errorf("OTel resource: %w", err)
	}
	return res, nil
}

// The downward API variables the agent reads (the Helm chart sets them).
const (
	envNodeName     = "NODE_NAME"
	envPodUID       = "POD_UID"
	envPodName      = "POD_NAME"
	envPodNamespace = "POD_NAMESPACE"
)

// resourceAttrs are the agent's own resource attributes: service.name
// (vramseal-agent), service.version, vramseal.worker.id, host.name (the
// node: $NODE_NAME where set, since a pod's host name is the pod's name,
// else the host name), service.instance.id ($POD_UID, else the worker id:
// one per running agent), and, from the downward API where set,
// k8s.node.name, k8s.pod.uid, k8s.pod.name and k8s.namespace.name.
func resourceAttrs(cfg Config, hostname func() (string, error)) []attribute.KeyValue {
	host := cfg.Getenv(envNodeName)
	if host == "" {
		host, _ = hostname()
	}
	instance := cfg.Getenv(envPodUID)
	if instance == "" {
		instance = cfg.WorkerID
	}
	attrs := []attribute.KeyValue{
		attribute.String("service.name", "vramseal-agent"),
		attribute.String("service.version", cfg.ServiceVersion),
		attribute.String("host.name", host),
		attribute.String(KeyWorkerID, cfg.WorkerID),
	}
	if instance != "" {
		attrs = append(attrs, attribute.String("service.instance.id", instance))
	}
	for _, kv := range []struct{ env, key string }{
		{envNodeName, "k8s.node.name"}, {envPodUID, "k8s.pod.uid"},
		{envPodName, "k8s.pod.name"}, {envPodNamespace, "k8s.namespace.name"},
	} {
		if v := cfg.Getenv(kv.env); v != "" {
			attrs = append(attrs, attribute.String(kv.key, v))
		}
	}
	return attrs
}

// collectProcessor is the log processor the shipper's LoggerProvider sends
// records to: it keeps them (cloned) until the shipper takes the batch and
// hands it to the exporter itself, so the result of every export comes back
// to the shipper (the SDK's BatchProcessor would drop it, and drop records
// when its queue is full). It is safe for concurrent use.
type collectProcessor struct {
	mu    sync.Mutex
	batch []sdklog.Record
}

func (p *collectProcessor) OnEmit(_ context.Context, r *sdklog.Record) error {
	p.mu.Lock()
	p.batch = append(p.batch, r.Clone())
	p.mu.Unlock()
	return nil
}

func (p *collectProcessor) Enabled(context.Context, sdklog.EnabledParameters) bool { return true }
func (p *collectProcessor) Shutdown(context.Context) error                         { return nil }
func (p *collectProcessor) ForceFlush(context.Context) error                       { return nil }

// take returns the records collected so far and forgets them.
func (p *collectProcessor) take() []sdklog.Record {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.batch
	p.batch = nil
	return b
}

var _ sdklog.Processor = (*collectProcessor)(nil)

// quietSpanExporter keeps span export failures out of the OTel global error
// handler (which would print one line per failed batch, forever, when no
// collector runs): it counts them and logs at most once a minute. Spans are
// best effort; the audit records are what the spool keeps.
type quietSpanExporter struct {
	sdktrace.SpanExporter
	log      logrus.FieldLogger
	failures atomic.Uint64
	warn     rate.Sometimes // at most once a minute
}

func (q *quietSpanExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if err := q.SpanExporter.ExportSpans(ctx, spans); err != nil {
		n := q.failures.Add(1)
		q.warn.Do(func() {
			q.log.WithError(err).WithFields(logrus.Fields{logfield.Spans: len(spans), logfield.SpanExportFailures: n}).Warn("OTLP span export failed; spans of this batch are dropped")
		})
	}
	return nil
}
