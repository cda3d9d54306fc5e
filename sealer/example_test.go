package sealer_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/simgpu"
)

// A seal, verify, tamper, verify, release round on a simulated GPU.
func Example() {
	ctx := context.Background()
	devs, _ := simgpu.New(simgpu.Config{GPUs: 2, MemoryBytes: 1 << 30})
	signer, _ := sealer.NewSigner(bytes.Repeat([]byte("k"), 32)) // from internal/secret in the agent
	rec := &audit.Recorder{}
	s, _ := sealer.New(sealer.Config{WorkerID: "node-a", Devices: simgpu.Devices(devs), Signer: signer, Emitter: rec})

	dir, _ := os.MkdirTemp("", "vramseal-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "model-00001-of-00002.safetensors")
	_ = os.WriteFile(path, bytes.Repeat([]byte("weights!"), 1<<17), 0o600) // 1 MiB

	seal, _ := s.Seal(ctx, sealer.SealRequest{ID: "llama-00001", Path: path, GPU: 1})
	fmt.Println("sealed", seal.ShardID, "on GPU", seal.GPUDevice, seal.VRAMBytes, "bytes")

	res, _ := s.Verify(ctx, "llama-00001")
	fmt.Println("verify:", res.Result)

	_ = simgpu.Corrupt(ctx, s, "llama-00001", 600000, 3) // one bit, simulated GPU only
	res, err := s.Verify(ctx, "llama-00001")
	fmt.Println("verify:", res.Result, "first bad offset", res.FirstBadOffset, "bad chunks", res.BadChunks)
	fmt.Println(err)

	rel, _ := s.Release(ctx, "llama-00001")
	fmt.Println("released", rel.FreedBytes, "bytes")

	for _, ev := range rec.Events() {
		fmt.Println(audit.NamePrefix+ev.Name(), ev.Severity())
	}
	// Output:
	// sealed llama-00001 on GPU 1 1048576 bytes
	// verify: ok
	// verify: digest_mismatch first bad offset 524288 bad chunks 1
	// verify llama-00001: VRAM does not match the seal: 1 chunk(s) of 262144 bytes differ, the first at offset 524288
	// released 1048576 bytes
	// vramseal.vram.allocated INFO
	// vramseal.vram.sealed INFO
	// vramseal.seal.verified INFO
	// vramseal.seal.verification_failed CRITICAL
	// vramseal.vram.deallocated INFO
}
