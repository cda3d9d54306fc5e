package collector

import (
	"strings"
	"testing"
)

func TestAcceptsGzip(t *testing.T) {
	for h, want := range map[string]bool{
		"gzip": true, "GZIP": true, "br, gzip": true, "gzip;q=0.001": true, "*;q=1": true,
		"": false, "identity": false, "gzip;q=0": false, "gzip; q=0.0": false, "gzipx": false, "x-gzip": false,
	} {
		if got := acceptsGzip(h); got != want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", h, got, want)
		}
	}
}

// FuzzAcceptsGzip checks that any header parses without panicking and that
// a header without "gzip" or "*" never selects gzip.
func FuzzAcceptsGzip(f *testing.F) {
	for _, s := range []string{"gzip", "deflate, gzip;q=1.0, *;q=0.5", "gzip;q=0", ";;,,", "*;q=abc", "gzip;q=NaN"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		got := acceptsGzip(h)
		l := strings.ToLower(h)
		if got && !strings.Contains(l, "gzip") && !strings.Contains(l, "*") {
			t.Errorf("acceptsGzip(%q) = true without gzip or *", h)
		}
	})
}
