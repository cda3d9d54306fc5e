package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vramseal/vramseal/collector"
)

func BenchmarkGather(b *testing.B) {
	reg, cleanup, err := agentRegistry(context.Background(), 8, 64)
	if err != nil {
		b.Fatal(err)
	}
	defer cleanup()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}

func benchScrape(b *testing.B, gzip bool) { benchScrapeWith(b, gzip, false) }

func benchScrapeWith(b *testing.B, gzip, ours bool) {
	reg, cleanup, err := agentRegistry(context.Background(), 8, 64)
	if err != nil {
		b.Fatal(err)
	}
	defer cleanup()
	var h http.Handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	if ours {
		h = collector.Handler(reg, nil)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	c := &http.Client{Transport: &http.Transport{DisableCompression: !gzip}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := c.Get(srv.URL)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

func BenchmarkScrapeGzip(b *testing.B)  { benchScrape(b, true) }
func BenchmarkScrapePlain(b *testing.B) { benchScrape(b, false) }

func BenchmarkScrapeHandlerGzip(b *testing.B) { benchScrapeWith(b, true, true) }
