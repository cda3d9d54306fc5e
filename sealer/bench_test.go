package sealer_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/simgpu"
)

// benchFile returns the file the benchmarks seal: $VRAMSEAL_BENCH_FILE (the
// 1 GiB file scripts/bench.sh also gives openssl), else a 64 MiB temp file.
func benchFile(b *testing.B) (string, uint64) {
	b.Helper()
	if p := os.Getenv("VRAMSEAL_BENCH_FILE"); p != "" {
		st, err := os.Stat(p)
		if err != nil {
			b.Fatal(err)
		}
		return p, uint64(st.Size())
	}
	p := filepath.Join(b.TempDir(), "shard")
	if err := os.WriteFile(p, data(64<<20, 5), 0o600); err != nil {
		b.Fatal(err)
	}
	return p, 64 << 20
}

func benchLeaf() uint64 {
	if v, err := strconv.ParseUint(os.Getenv("VRAMSEAL_BENCH_LEAF"), 10, 64); err == nil {
		return v
	}
	return sealer.DefaultLeafSize
}

func benchSealer(b *testing.B, size uint64, mode sealer.VerifyMode) *sealer.Sealer {
	devs, err := simgpu.New(simgpu.Config{GPUs: 1, MemoryBytes: 2*size + 1<<20})
	if err != nil {
		b.Fatal(err)
	}
	signer, _ := sealer.NewSigner(bytes.Repeat([]byte{7}, 32))
	s, err := sealer.New(sealer.Config{WorkerID: "bench", Devices: simgpu.Devices(devs), Signer: signer,
		Emitter: &audit.Recorder{}, LeafSize: benchLeaf(), VerifyMode: mode})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkSeal: file → simulated VRAM, with content SHA-256 and tree
// digest in the same pass.
func BenchmarkSeal(b *testing.B) {
	path, size := benchFile(b)
	s := benchSealer(b, size, sealer.VerifyHost)
	ctx := context.Background()
	b.SetBytes(int64(size))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := fmt.Sprint("s", i)
		if _, err := s.Seal(ctx, sealer.SealRequest{ID: id, Path: path, GPU: 0}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if _, err := s.Release(ctx, id); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkVerify: re-verification of a sealed shard, hashed on the
// (simulated) device and read back to the host.
func BenchmarkVerify(b *testing.B) {
	for _, mode := range []sealer.VerifyMode{sealer.VerifyDevice, sealer.VerifyHost} {
		b.Run(string(mode), func(b *testing.B) {
			path, size := benchFile(b)
			s := benchSealer(b, size, mode)
			ctx := context.Background()
			if _, err := s.Seal(ctx, sealer.SealRequest{ID: "s", Path: path, GPU: 0}); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(size))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if res, err := s.Verify(ctx, "s"); err != nil || !res.Intact() {
					b.Fatal(res, err)
				}
			}
		})
	}
}

// BenchmarkDigestReader: the offline digest of a file (vramseal-agent digest).
func BenchmarkDigestReader(b *testing.B) {
	path, size := benchFile(b)
	b.SetBytes(int64(size))
	for i := 0; i < b.N; i++ {
		f, _ := os.Open(path)
		if _, err := sealer.DigestReader(f, benchLeaf()); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}
