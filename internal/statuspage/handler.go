package statuspage

import (
	"bytes"
	"net/http"
	"time"

	"github.com/sirupsen/logrus"
)

// Handler serves the page at / (GET and HEAD; any other path is 404): a
// fresh Snapshot of src for mode at each request, rendered with Render.
// The page is rendered into memory first, so a failure is a 500 rather
// than half a page. now is the clock (time.Now when nil); log gets
// rendering failures (logrus's standard logger when nil).
func Handler(src Source, mode Mode, now func() time.Time, log logrus.FieldLogger) http.Handler {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = logrus.StandardLogger()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		var buf bytes.Buffer
		if err := Render(&buf, Snapshot(src, mode, now())); err != nil {
			log.WithError(err).Error("rendering the status page failed")
			http.Error(w, "rendering the status page failed", http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		// No script, no external resource: only the page's own inline style.
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(buf.Bytes())
	})
}
