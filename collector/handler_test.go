package collector_test

import (
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vramseal/vramseal/collector"
)

func TestHandler(t *testing.T) {
	e := fullEnv(t)
	srv := httptest.NewServer(collector.Handler(e.reg, quietLogger()))
	defer srv.Close()
	get := func(acceptEncoding string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
		if acceptEncoding != "" {
			req.Header.Set("Accept-Encoding", acceptEncoding)
		}
		resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r io.Reader = resp.Body
		if resp.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			r = zr
		}
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(b)
	}
	for _, tc := range []struct {
		accept string
		gzip   bool
	}{
		{"gzip", true},
		{"deflate, gzip;q=1.0, *;q=0.5", true},
		{"*", true},
		{"", false},
		{"identity", false},
		{"gzip;q=0", false},
	} {
		resp, body := get(tc.accept)
		if got := resp.Header.Get("Content-Encoding") == "gzip"; got != tc.gzip {
			t.Errorf("Accept-Encoding %q: gzip %v, want %v", tc.accept, got, tc.gzip)
		}
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "vramseal_shard_verified{") ||
			!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Errorf("Accept-Encoding %q: %s %q, body has shard series: %v", tc.accept, resp.Status, resp.Header.Get("Content-Type"), strings.Contains(body, "vramseal_shard_verified{"))
		}
	}
	_, body := get("")
	if !strings.Contains(body, `promhttp_metric_handler_requests_total{code="200"} 6`) {
		t.Errorf("handler is not instrumented: %q", lines(body, "promhttp_metric_handler_requests_total"))
	}
}
