package handoff

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/client"
	"github.com/vramseal/vramseal/collector"
	"github.com/vramseal/vramseal/internal/control"
	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/simgpu"
)

const page = 4096

// benchBytes is the shard size of the hand-off benchmarks
// (VRAMSEAL_BENCH_HANDOFF_BYTES, default 64 MiB; make bench uses 1 GiB).
func benchBytes(b *testing.B) int {
	if v := os.Getenv("VRAMSEAL_BENCH_HANDOFF_BYTES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < page {
			b.Fatalf("VRAMSEAL_BENCH_HANDOFF_BYTES=%q", v)
		}
		return n
	}
	return 64 << 20
}

// BenchmarkShardReady: a consumer making a shard ready (dial, open, map,
// read every page) beside two readings of the same file from the page
// cache: through one reused 4 MiB buffer (the floor: no memory of its
// own), and into a buffer of the file's size (what an engine that loads
// the weights itself pays).
func BenchmarkShardReady(b *testing.B) {
	n := benchBytes(b)
	dir := b.TempDir()
	path := filepath.Join(dir, "shard")
	data := bytes.Repeat([]byte{0x5a}, n)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
	data = nil
	s := benchSealer(b, uint64(n)*2)
	if _, err := s.Seal(context.Background(), sealer.SealRequest{ID: "s", Path: path, GPU: 0}); err != nil {
		b.Fatal(err)
	}
	sock := benchServe(b, s)
	b.Run("page-cache-read", func(b *testing.B) {
		buf := make([]byte, 4<<20)
		b.SetBytes(int64(n))
		for b.Loop() {
			f, err := os.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			var sink byte
			for {
				k, err := f.Read(buf)
				for i := 0; i < k; i += page {
					sink ^= buf[i]
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			f.Close()
			_ = sink
		}
	})
	b.Run("page-cache-readfile", func(b *testing.B) { // what an engine loading the weights itself pays
		b.SetBytes(int64(n))
		for b.Loop() {
			buf, err := os.ReadFile(path)
			if err != nil || len(buf) != n {
				b.Fatal(err)
			}
		}
	})
	b.Run("consumer-open-map-touch", func(b *testing.B) {
		ctx := context.Background()
		b.SetBytes(int64(n))
		for b.Loop() {
			c, err := client.DialConsumer(ctx, sock)
			if err != nil {
				b.Fatal(err)
			}
			l, err := c.Open(ctx, "s")
			if err != nil {
				b.Fatal(err)
			}
			m, err := l.Map()
			if err != nil {
				b.Fatal(err)
			}
			var sink byte
			for i := 0; i < len(m); i += page {
				sink ^= m[i]
			}
			_ = sink
			client.Unmap(m)
			l.Close(ctx)
			c.Close()
		}
	})
}

// BenchmarkLeases: what list and a /metrics scrape cost with 0, 64 and 512
// open leases on one shard.
func BenchmarkLeases(b *testing.B) {
	dir := b.TempDir()
	path := filepath.Join(dir, "shard")
	if err := os.WriteFile(path, bytes.Repeat([]byte{1}, 1<<20), 0o600); err != nil {
		b.Fatal(err)
	}
	for _, leases := range []int{0, 64, 512} {
		s := benchSealer(b, 64<<20)
		ctx := context.Background()
		if _, err := s.Seal(ctx, sealer.SealRequest{ID: "s", Path: path, GPU: 0}); err != nil {
			b.Fatal(err)
		}
		for i := range leases {
			l, err := s.Open(ctx, "s", audit.Caller{UID: 1000, GID: 1000, PID: int64(10000 + i)}, nil)
			if err != nil {
				b.Fatal(err)
			}
			l.File.Close()
		}
		reg := prometheus.NewRegistry()
		if _, err := collector.Register(reg, collector.Options{WorkerID: "bench", Device: "sim", Sealer: s}); err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("list/leases=%d", leases), func(b *testing.B) {
			for b.Loop() {
				_ = s.List()
			}
		})
		b.Run(fmt.Sprintf("metrics/leases=%d", leases), func(b *testing.B) {
			for b.Loop() {
				if _, err := reg.Gather(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchSealer(b *testing.B, mem uint64) *sealer.Sealer {
	b.Helper()
	devs, err := simgpu.New(simgpu.Config{GPUs: 1, MemoryBytes: mem, Properties: simgpu.DefaultProperties()})
	if err != nil {
		b.Fatal(err)
	}
	signer, _ := sealer.NewSigner(bytes.Repeat([]byte{7}, 32))
	s, err := sealer.New(sealer.Config{WorkerID: "w", Devices: simgpu.Devices(devs), Signer: signer, Emitter: &audit.Recorder{}})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func benchServe(b *testing.B, s *sealer.Sealer) string {
	b.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	srv, err := NewServer(Config{Sealer: s, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	sock := filepath.Join(b.TempDir(), "h.sock")
	ln, err := control.Listen(sock, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	b.Cleanup(func() { cancel(); <-done })
	return sock
}
