package collector

import (
	"compress/gzip"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"
)

// Handler serves reg's metrics (the /metrics endpoint). It is
// promhttp.HandlerFor, instrumented with the promhttp_metric_handler_*
// metrics, except that it gzips at gzip.BestSpeed: a scrape with hundreds of
// sealed shards is a few hundred kilobytes of text, and gzip's default level
// would cost more than collecting them. A collector error is logged and the
// other metrics are still served.
func Handler(reg *prometheus.Registry, log logrus.FieldLogger) http.Handler {
	if log == nil {
		log = logrus.StandardLogger()
	}
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:           promLogger{log},
		ErrorHandling:      promhttp.ContinueOnError,
		DisableCompression: true,
		Registry:           reg,
	})
	return promhttp.InstrumentMetricHandler(reg, gzipped(h))
}

// promLogger adapts logrus to promhttp's ErrorLog.
type promLogger struct{ log logrus.FieldLogger }

func (l promLogger) Println(v ...any) { l.log.Warn(v...) }

var gzipWriters = sync.Pool{New: func() any {
	w, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
	return w
}}

// gzipped compresses h's responses when the client accepts gzip.
func gzipped(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Vary", "Accept-Encoding")
		if !acceptsGzip(r.Header.Get("Accept-Encoding")) {
			h.ServeHTTP(w, r)
			return
		}
		gz := gzipWriters.Get().(*gzip.Writer)
		defer gzipWriters.Put(gz)
		gz.Reset(w)
		w.Header().Set("Content-Encoding", "gzip")
		h.ServeHTTP(gzipResponse{ResponseWriter: w, w: gz}, r)
		_ = gz.Close()
	})
}

type gzipResponse struct {
	http.ResponseWriter
	w *gzip.Writer
}

func (g gzipResponse) Write(p []byte) (int, error) { return g.w.Write(p) }

// acceptsGzip reports whether an Accept-Encoding header accepts gzip
// (listed, or "*", with a non-zero q).
func acceptsGzip(header string) bool {
	for _, part := range strings.Split(header, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		name = strings.ToLower(strings.TrimSpace(name))
		if name != "gzip" && name != "*" {
			continue
		}
		q := 1.0
		for _, p := range strings.Split(params, ";") {
			if k, v, ok := strings.Cut(strings.TrimSpace(p), "="); ok && strings.TrimSpace(k) == "q" {
				if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
					q = f
				}
			}
		}
		if q > 0 {
			return true
		}
	}
	return false
}
