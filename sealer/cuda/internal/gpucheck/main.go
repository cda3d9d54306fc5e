// Command gpucheck measures vramseal on a real GPU and checks the targets of
// the CUDA backend; scripts/gpu-check.sh runs it (make gpu-check). It needs
// the NVIDIA driver and no Go toolchain.
//
// In one run, on one GPU, it measures the ceilings (device-to-device copy,
// PCIe read-back into pinned memory, one-stream SHA-256 and all-core leaf
// hashing on the CPU, the leaf kernel at several leaf sizes), then seals at
// least 8 GiB of shard files through the sealer and verifies them on the
// GPU (through the sealer, and pipelined with cuda.TreeDigests, whose
// kernel-only and end-to-end rates are reported apart) and on the host,
// prints a table and exits 1 when a target is missed. -report also writes
// the table and the PASS/FAIL lines to a file; -facts prints the driver
// library, driver and GPU and exits. -handoff runs the hand-off and attach
// checks instead, with this program run again as the second process
// (consumer, writer, engine).
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/cuda"
)

const gib = 1 << 30

func main() {
	if cuda.IsReader() { // the agent's reader process of attached memory, in the hand-off check
		os.Exit(cuda.ServeReader())
	}
	if ok, err := role(context.Background(), os.Stdout); ok {
		if err != nil {
			fmt.Fprintln(os.Stderr, "gpucheck (second process):", err)
			os.Exit(2)
		}
		return
	}
	total := flag.Uint64("bytes", 8*gib, "bytes of shards to seal (at least 8 GiB for the report)")
	shards := flag.Int("shards", 4, "number of shard files")
	leaf := flag.Uint64("leaf-size", 16<<10, "leaf size the GPU path seals with")
	dir := flag.String("dir", os.TempDir(), "where to write the shard files")
	gpu := flag.Int("gpu", 0, "CUDA ordinal of the GPU")
	lib := flag.String("library", "", "driver library (libcuda.so.1 when empty)")
	workers := flag.Int("workers", 4, "driver worker threads per device")
	inFlight := flag.Int("in-flight", cuda.DefaultVerifyInFlight, "verifications in flight on the GPU (pipelined verify)")
	report := flag.String("report", "", "also write the table and the PASS/FAIL lines to this file")
	facts := flag.Bool("facts", false, "print the driver library, driver and GPU, and exit")
	handoffOnly := flag.Bool("handoff", false, "run the hand-off and attach checks (a second process of this program as consumer and engine), and exit")
	flag.Parse()
	c := config{total: *total, shards: *shards, leaf: *leaf, dir: *dir, gpu: *gpu, lib: *lib, workers: *workers, inFlight: *inFlight, report: *report}
	var err error
	switch {
	case *facts:
		err = printFacts(context.Background(), os.Stdout, c)
	case *handoffOnly:
		err = handoffCheck(context.Background(), os.Stdout, c)
	default:
		err = run(context.Background(), os.Stdout, c)
	}
	if err != nil {
		if errors.Is(err, errTargets) {
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "gpucheck:", err)
		os.Exit(2)
	}
}

type config struct {
	total    uint64
	shards   int
	leaf     uint64
	dir      string
	gpu      int
	lib      string
	workers  int
	inFlight int
	report   string
}

func (c config) open(ctx context.Context) (*cuda.Device, error) {
	devs, err := cuda.Open(ctx, cuda.Options{LibraryPath: c.lib, Devices: []int{c.gpu}, Workers: c.workers, VerifyInFlight: c.inFlight})
	if err != nil {
		return nil, err
	}
	return devs[0], nil
}

// printFacts prints what gpu-check.sh shows before the tests: the driver
// library file ("library: PATH", which the script hands to readelf and to
// every binary it runs), the driver's CUDA version and the GPU.
func printFacts(ctx context.Context, out io.Writer, c config) error {
	dev, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer dev.Close()
	p, v := dev.StaticProperties(), dev.DriverVersion()
	fmt.Fprintf(out, "library: %s\n", dev.Library())
	fmt.Fprintf(out, "driver: CUDA %d.%d\n", v/1000, v%1000/10)
	fmt.Fprintf(out, "GPU %d: %s (%s), compute %s, %.1f GiB, ECC %v, integrated %v, MIG %v\n",
		c.gpu, p.Name, p.UUID, p.Compute, float64(p.TotalMemory)/gib, p.ECCEnabled, p.Integrated, p.MIG)
	for _, l := range dev.Limitations() {
		fmt.Fprintf(out, "limitation: %s\n", l)
	}
	return nil
}

var errTargets = errors.New("a target was missed")

func rate(bytes uint64, d time.Duration) float64 { return float64(bytes) / d.Seconds() / gib }

func run(ctx context.Context, out io.Writer, c config) error {
	if err := sealer.CheckLeafSize(c.leaf); err != nil {
		return err
	}
	if c.shards < 1 || c.total < uint64(c.shards) {
		return errors.New("need at least one shard and one byte per shard")
	}
	dev, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer dev.Close()
	p, v := dev.StaticProperties(), dev.DriverVersion()
	fmt.Fprintf(out, "vramseal gpu-check: GPU %d %s (%s), compute %s, %.1f GiB, driver CUDA %d.%d, %d CPU threads\n",
		c.gpu, p.Name, p.UUID, p.Compute, float64(p.TotalMemory)/gib, v/1000, v%1000/10, runtime.GOMAXPROCS(0))
	if err := dev.PrepareKernel(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "driver library: %s\n", dev.Library())
	for _, l := range dev.Limitations() {
		fmt.Fprintf(out, "limitation: %s\n", l)
	}
	fmt.Fprintf(out, "leaf kernel JIT: %s\n", strings.ReplaceAll(dev.KernelInfo(), "\n", "; "))

	// Probe size: 2 GiB on a data-centre GPU, less on a small one.
	probe := min(uint64(2*gib), p.TotalMemory/8) &^ (16<<20 - 1)
	if probe == 0 {
		return fmt.Errorf("GPU %d has too little memory (%d bytes) for the probes", c.gpu, p.TotalMemory)
	}
	// Host buffer of random bytes shared by the baselines.
	buf := make([]byte, min(gib, probe))
	fill(buf)
	bufBytes := uint64(len(buf))

	var rows []row
	add := func(name string, v float64, note string) float64 {
		rows = append(rows, row{name, v, note})
		fmt.Fprintf(out, "  measured %-44s %8.2f GiB/s %s\n", name, v, note)
		return v
	}

	copyBW, err := dev.MeasureCopyBandwidth(ctx, probe, 5)
	if err != nil {
		return err
	}
	dtod := add("device-to-device copy (ceiling)", copyBW/gib, fmt.Sprintf("cuMemcpyDtoD, %d MiB x5, bytes copied per second (each read once and written once)", probe>>20))
	readBW, err := dev.MeasureReadBandwidth(ctx, bufBytes, 3)
	if err != nil {
		return err
	}
	pcie := add("PCIe read-back into pinned memory", readBW/gib, "cuMemcpyDtoH in staging-buffer chunks, two streams")
	start := time.Now()
	sha256.Sum256(buf)
	oneStream := add("CPU SHA-256, one stream", rate(bufBytes, time.Since(start)), "crypto/sha256")
	start = time.Now()
	sealer.HashLeaves(buf, c.leaf, 0)
	allCores := add("CPU leaf hashing, all cores", rate(bufBytes, time.Since(start)), fmt.Sprintf("%d goroutines", runtime.GOMAXPROCS(0)))

	// The kernel at several leaf sizes over probe bytes in VRAM, checked
	// against the CPU at the GPU path's leaf size.
	a, err := dev.Alloc(ctx, probe)
	if err != nil {
		return err
	}
	for off := uint64(0); off < probe; off += bufBytes {
		buf[0]++
		if err := dev.Write(ctx, a, off, buf[:min(bufBytes, probe-off)]); err != nil {
			return err
		}
	}
	sweep := []string{}
	for _, l := range []uint64{4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20} {
		best := time.Duration(math.MaxInt64)
		var leaves []sealer.LeafHash
		for range 3 {
			start := time.Now()
			leaves, err = dev.LeafDigests(ctx, a, probe, l)
			if err != nil {
				return err
			}
			best = min(best, time.Since(start))
		}
		sweep = append(sweep, fmt.Sprintf("%dK %.1f", l>>10, rate(probe, best)))
		if l == c.leaf {
			host, err := sealer.ReadBackLeaves(ctx, dev, a, probe, l, 0)
			if err != nil {
				return err
			}
			for i := range host {
				if host[i] != leaves[i] {
					return fmt.Errorf("leaf size %d: GPU leaf %d differs from the CPU's", l, i)
				}
			}
		}
	}
	if err := dev.Free(ctx, a); err != nil {
		return err
	}
	fmt.Fprintf(out, "  leaf kernel over %d MiB by leaf size (GiB/s): %s\n", probe>>20, strings.Join(sweep, ", "))

	// Shard files.
	paths, err := writeShards(c, buf)
	defer func() {
		for _, p := range paths {
			os.Remove(p)
		}
	}()
	if err != nil {
		return err
	}
	sealRate := map[sealer.VerifyMode]float64{}
	verifyRate := map[sealer.VerifyMode]float64{}
	var digests []string // the seals' digests, shard by shard
	for _, mode := range []sealer.VerifyMode{sealer.VerifyDevice, sealer.VerifyHost} {
		s, err := newSealer(dev, c.leaf, mode)
		if err != nil {
			return err
		}
		start := time.Now()
		for i, path := range paths {
			seal, err := s.Seal(ctx, sealer.SealRequest{ID: fmt.Sprintf("gpu-check-%s-%d", mode, i), Path: path, GPU: c.gpu})
			if err != nil {
				return err
			}
			if mode == sealer.VerifyDevice {
				digests = append(digests, seal.Digest)
			}
		}
		sealRate[mode] = rate(c.total, time.Since(start))
		start = time.Now()
		res, err := s.VerifyAll(ctx)
		if err != nil {
			return fmt.Errorf("verify (%s): %w", mode, err)
		}
		verifyRate[mode] = rate(c.total, time.Since(start))
		if len(res) != c.shards {
			return fmt.Errorf("verify (%s): %d results for %d shards", mode, len(res), c.shards)
		}
		if err := s.ReleaseAll(ctx); err != nil {
			return err
		}
	}
	kernelOnly, endToEnd, err := pipelined(ctx, dev, c, paths, digests, buf)
	if err != nil {
		return err
	}
	seal := max(sealRate[sealer.VerifyDevice], sealRate[sealer.VerifyHost])
	add("seal, file -> VRAM (best of 2 runs)", seal, fmt.Sprintf("runs %.2f, %.2f", sealRate[sealer.VerifyDevice], sealRate[sealer.VerifyHost]))
	hostVerify := add("verify on the host (read back + hash)", verifyRate[sealer.VerifyHost], "verify.mode host")
	add("verify on the GPU through the sealer", verifyRate[sealer.VerifyDevice], "verify.mode gpu, one shard after another")
	add("GPU verify, kernel only", kernelOnly, "bytes over the time a leaf kernel of the pipelined run was running, best of 3")
	gpuVerify := add("GPU verify, end to end (pipelined)", endToEnd, fmt.Sprintf("TreeDigests, %d in flight, roots checked, best of 3", c.inFlight))

	var sum strings.Builder
	fmt.Fprintf(&sum, "\n%d shards, %.2f GiB sealed in all, leaf size %d bytes (the GPU path's: %d leaves per shard, one GPU thread each)\n\n",
		c.shards, float64(c.total)/gib, c.leaf, sealer.LeafCount(c.total/uint64(c.shards), c.leaf))
	fmt.Fprintf(&sum, "| measure | GiB/s | note |\n| --- | ---: | --- |\n")
	for _, r := range rows {
		fmt.Fprintf(&sum, "| %s | %.2f | %s |\n", r.name, r.v, r.note)
	}
	hostCeiling := min(pcie, allCores)
	targets := []target{
		{"GPU verify end to end >= 15% of device copy bytes copied per second", gpuVerify / dtod, 0.15, false},
		{"GPU verify end to end >= 30% of device copy bytes copied per second", gpuVerify / dtod, 0.30, true},
		{"host verify >= 80% of min(PCIe read-back, CPU all cores)", hostVerify / hostCeiling, 0.80, false},
		{"seal >= 80% of one-stream SHA-256", seal / oneStream, 0.80, false},
	}
	fmt.Fprintf(&sum, "\n")
	failed := false
	for _, t := range targets {
		res := "PASS"
		switch {
		case t.ratio >= t.want && t.goal:
			res = "GOAL met"
		case t.goal:
			res = "GOAL not met (not a failure)"
		case t.ratio < t.want:
			res, failed = "FAIL", true
		}
		fmt.Fprintf(&sum, "%s: %s: %.0f%%\n", res, t.name, 100*t.ratio)
	}
	if c.total < 8*gib {
		fmt.Fprintf(&sum, "note: only %.2f GiB sealed; the report wants at least 8 GiB\n", float64(c.total)/gib)
	}
	fmt.Fprint(out, sum.String())
	if c.report != "" {
		if err := os.WriteFile(c.report, []byte(strings.TrimPrefix(sum.String(), "\n")), 0o644); err != nil {
			return err
		}
	}
	if failed {
		return errTargets
	}
	return nil
}

// pipelined loads the shard files into VRAM again, without the sealer,
// and verifies them all with TreeDigests three times, checking every root
// against the seal's digest. It returns the best kernel-only rate (bytes
// over the time some leaf kernel was running) and the best end-to-end rate
// (bytes over the wall time, copies and roots included).
func pipelined(ctx context.Context, dev *cuda.Device, c config, paths, digests []string, buf []byte) (kernel, e2e float64, err error) {
	var reqs []cuda.TreeRequest
	defer func() {
		for _, r := range reqs {
			err = errors.Join(err, dev.Free(ctx, r.Allocation))
		}
	}()
	for _, p := range paths {
		r, err := load(ctx, dev, p, c.leaf, buf)
		if err != nil {
			return 0, 0, err
		}
		reqs = append(reqs, r)
	}
	best, bestKernel := time.Duration(math.MaxInt64), time.Duration(math.MaxInt64)
	for range 3 {
		start := time.Now()
		res, err := dev.TreeDigests(ctx, reqs)
		wall := time.Since(start)
		if err != nil {
			return 0, 0, err
		}
		for i, r := range res {
			if r.Err != nil {
				return 0, 0, fmt.Errorf("pipelined verify, shard %d: %w", i, r.Err)
			}
			if got := sealer.FormatDigest(r.Root); got != digests[i] {
				return 0, 0, fmt.Errorf("pipelined verify, shard %d: %s, but the seal says %s", i, got, digests[i])
			}
		}
		best, bestKernel = min(best, wall), min(bestKernel, kernelBusy(res))
	}
	return rate(c.total, bestKernel), rate(c.total, best), nil
}

// kernelBusy is how long at least one shard's leaf kernel was running: the
// union of the kernels' intervals, which may overlap.
func kernelBusy(res []cuda.TreeResult) time.Duration {
	iv := make([]cuda.TreeResult, len(res))
	copy(iv, res)
	slices.SortFunc(iv, func(a, b cuda.TreeResult) int { return a.KernelStart.Compare(b.KernelStart) })
	var busy time.Duration
	var end time.Time
	for _, r := range iv {
		s, e := r.KernelStart, r.KernelStart.Add(r.Kernel)
		if s.Before(end) {
			s = end
		}
		if e.After(s) {
			busy += e.Sub(s)
			end = e
		}
	}
	return busy
}

// load writes the file at path into a new allocation.
func load(ctx context.Context, dev *cuda.Device, path string, leaf uint64, buf []byte) (cuda.TreeRequest, error) {
	f, err := os.Open(path)
	if err != nil {
		return cuda.TreeRequest{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return cuda.TreeRequest{}, err
	}
	size := uint64(st.Size())
	a, err := dev.Alloc(ctx, size)
	if err != nil {
		return cuda.TreeRequest{}, err
	}
	for off := uint64(0); off < size; {
		n, err := io.ReadFull(f, buf[:min(uint64(len(buf)), size-off)])
		if err == nil {
			err = dev.Write(ctx, a, off, buf[:n])
		}
		if err != nil {
			return cuda.TreeRequest{}, errors.Join(err, dev.Free(ctx, a))
		}
		off += uint64(n)
	}
	return cuda.TreeRequest{Allocation: a, Size: size, LeafSize: leaf}, nil
}

type row struct {
	name string
	v    float64
	note string
}

// target is one check of the report; a goal is reported, never failed.
type target struct {
	name  string
	ratio float64
	want  float64
	goal  bool
}

// fill fills b with fast pseudo-random bytes.
func fill(b []byte) {
	var key [32]byte
	rand.Read(key[:])
	mrand.NewChaCha8(key).Read(b)
}

// writeShards writes the shard files, c.total bytes in all, from buf with a
// different first byte per GiB so no two leaves of different GiBs agree.
func writeShards(c config, buf []byte) ([]string, error) {
	per := c.total / uint64(c.shards)
	var paths []string
	for i := range c.shards {
		size := per
		if i == c.shards-1 {
			size = c.total - per*uint64(c.shards-1)
		}
		p := filepath.Join(c.dir, fmt.Sprintf("vramseal-gpu-check-%d.bin", i))
		paths = append(paths, p)
		f, err := os.Create(p)
		if err != nil {
			return paths, err
		}
		for w := uint64(0); w < size; {
			n := min(uint64(len(buf)), size-w)
			buf[0]++
			if _, err := f.Write(buf[:n]); err != nil {
				f.Close()
				return paths, err
			}
			w += n
		}
		if err := f.Close(); err != nil {
			return paths, err
		}
	}
	return paths, nil
}

func newSealer(dev *cuda.Device, leaf uint64, mode sealer.VerifyMode) (*sealer.Sealer, error) {
	key := make([]byte, 32)
	rand.Read(key)
	signer, err := sealer.NewSigner(key)
	if err != nil {
		return nil, err
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	return sealer.New(sealer.Config{
		WorkerID: "gpu-check", Devices: []sealer.Device{dev}, Signer: signer, Emitter: &audit.Recorder{},
		LeafSize: leaf, VerifyMode: mode, Logger: log,
	})
}
