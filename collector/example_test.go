package collector_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/collector"
	"github.com/vramseal/vramseal/collector/simsource"
	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/simgpu"
)

// Example wires the collectors as the agent does, on one simulated GPU,
// seals a shard and shows a few of the series /metrics serves.
func Example() {
	log := logrus.New()
	log.SetOutput(io.Discard)
	devs, _ := simgpu.New(simgpu.Config{GPUs: 1, MemoryBytes: 1 << 30, Properties: simgpu.DefaultProperties()})
	signer, _ := sealer.NewSigner(bytes.Repeat([]byte{9}, 32))
	counters := audit.NewCounters()

	// The Observer exists before the Sealer, which reports to it.
	obs := collector.NewObserver([]int{0})
	s, _ := sealer.New(sealer.Config{WorkerID: "node-a", Devices: simgpu.Devices(devs), Signer: signer,
		Emitter: audit.NewLogEmitter(log, counters), Observer: obs, Logger: log})

	reg := prometheus.NewRegistry()
	metrics, err := collector.Register(reg, collector.Options{
		WorkerID: "node-a", Device: "sim", GPU: simsource.New(devs),
		Sealer: s, Observer: obs, VerifyInterval: 5 * time.Minute, AuditCounters: counters, Logger: log,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	// The agent runs `go metrics.Run(ctx)` for its lifetime: GPU reads in
	// the background. Here one read is made after the seal, with Refresh.

	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, "model.safetensors")
	_ = os.WriteFile(p, []byte("weights"), 0o600)
	_, _ = s.Seal(ctx, sealer.SealRequest{ID: "model-00001", Path: p, GPU: 0})
	_ = metrics.Refresh(ctx)

	srv := httptest.NewServer(collector.Handler(reg, log))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(body), "\n") {
		for _, prefix := range []string{"vramseal_sealed_", "vramseal_shard_verified", `vramseal_gpu_memory_used_bytes`, `vramseal_collector_success{collector="gpu"}`} {
			if strings.HasPrefix(l, prefix) {
				fmt.Println(l)
			}
		}
	}
	// Output:
	// vramseal_collector_success{collector="gpu"} 1
	// vramseal_gpu_memory_used_bytes{gpu="0",uuid="GPU-SIM-00000000-0000-4000-8000-000000000000"} 7
	// vramseal_sealed_bytes{gpu="0"} 7
	// vramseal_sealed_shards{gpu="0"} 1
	// vramseal_shard_verified{gpu="0",shard_id="model-00001"} 1
}
