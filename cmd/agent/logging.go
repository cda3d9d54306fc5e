package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/sirupsen/logrus"
)

// newLogger returns the operational logger: level is debug, info, warn or
// error; format is logfmt or json.
func newLogger(w io.Writer, level, format string) (*logrus.Logger, error) {
	l := logrus.New()
	l.SetOutput(w)
	lvl, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log.level: %w", err)
	}
	l.SetLevel(lvl)
	switch format {
	case "logfmt":
		l.SetFormatter(&logrus.TextFormatter{DisableColors: true, FullTimestamp: true, TimestampFormat: time.RFC3339Nano})
	case "json":
		l.SetFormatter(&logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano})
	default:
		return nil, fmt.Errorf("--log.format: %q is not logfmt or json", format)
	}
	return l, nil
}

// slogHandler hands slog records (from exporter-toolkit) to logrus.
type slogHandler struct {
	log    logrus.FieldLogger
	fields logrus.Fields
	group  string
}

func newSlog(log logrus.FieldLogger) *slog.Logger {
	return slog.New(&slogHandler{log: log, fields: logrus.Fields{}})
}

func (h *slogHandler) Enabled(_ context.Context, l slog.Level) bool {
	if lg, ok := h.log.(*logrus.Entry); ok {
		return lg.Logger.IsLevelEnabled(toLogrus(l))
	}
	if lg, ok := h.log.(*logrus.Logger); ok {
		return lg.IsLevelEnabled(toLogrus(l))
	}
	return true
}

func toLogrus(l slog.Level) logrus.Level {
	switch {
	case l >= slog.LevelError:
		return logrus.ErrorLevel
	case l >= slog.LevelWarn:
		return logrus.WarnLevel
	case l >= slog.LevelInfo:
		return logrus.InfoLevel
	}
	return logrus.DebugLevel
}

func (h *slogHandler) Handle(_ context.Context, r slog.Record) error {
	f := make(logrus.Fields, len(h.fields)+r.NumAttrs())
	for k, v := range h.fields {
		f[k] = v
	}
	r.Attrs(func(a slog.Attr) bool {
		f[h.key(a.Key)] = a.Value.Resolve().Any()
		return true
	})
	h.log.WithFields(f).Log(toLogrus(r.Level), r.Message)
	return nil
}

func (h *slogHandler) key(k string) string {
	if h.group != "" {
		return h.group + "." + k
	}
	return k
}

func (h *slogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := &slogHandler{log: h.log, group: h.group, fields: make(logrus.Fields, len(h.fields)+len(attrs))}
	for k, v := range h.fields {
		n.fields[k] = v
	}
	for _, a := range attrs {
		n.fields[h.key(a.Key)] = a.Value.Resolve().Any()
	}
	return n
}

func (h *slogHandler) WithGroup(name string) slog.Handler {
	n := &slogHandler{log: h.log, group: h.key(name), fields: h.fields}
	return n
}
