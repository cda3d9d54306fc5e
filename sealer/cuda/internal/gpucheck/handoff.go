package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ebitengine/purego"
	"github.com/sirupsen/logrus"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/client"
	"github.com/vramseal/vramseal/internal/control"
	"github.com/vramseal/vramseal/internal/handoff"
	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/cuda"
)

// The hand-off and attach check (-handoff): this program is the agent,
// and runs itself again as the second process (the GPU machine has no Go
// and no torch), in the role named by envRole.
const (
	envRole   = "GPUCHECK_ROLE" // consumer, writer or engine
	envSocket = "GPUCHECK_SOCKET"
	envLib    = "GPUCHECK_LIBRARY"
	envShard  = "GPUCHECK_SHARD"
	envGPU    = "GPUCHECK_GPU_UUID"
)

// handoffBytes is the size of the shard handed out and of the memory attached.
const handoffBytes = 8<<20 + 12345

// role runs the second process's part when envRole is set; ok false
// otherwise.
func role(ctx context.Context, out io.Writer) (ok bool, err error) {
	switch os.Getenv(envRole) {
	case "":
		return false, nil
	case "consumer":
		return true, consumer(ctx, out, false)
	case "writer":
		return true, consumer(ctx, out, true)
	case "engine":
		return true, engine(ctx, out)
	}
	return true, fmt.Errorf("unknown role %q", os.Getenv(envRole))
}

// consumer opens the shard, imports it with the CUDA driver, hashes it and
// prints "readonly=BOOL sha256=HEX"; as the writer, it then writes one
// byte through the mapping and prints "write: ok" or "write: ERROR".
func consumer(ctx context.Context, out io.Writer, write bool) error {
	c, err := client.DialConsumer(ctx, os.Getenv(envSocket))
	if err != nil {
		return err
	}
	defer c.Close()
	l, err := c.Open(ctx, os.Getenv(envShard))
	if err != nil {
		return err
	}
	drv, err := client.OpenCUDA(os.Getenv(envLib))
	if err != nil {
		return err
	}
	m, err := drv.Import(ctx, l)
	if err != nil {
		return err
	}
	defer m.Close()
	b := make([]byte, m.Size)
	if _, err := m.ReadAt(b, 0); err != nil {
		return err
	}
	sum := sha256.Sum256(b)
	fmt.Fprintf(out, "readonly=%v sha256=%s\n", m.ReadOnly, hex.EncodeToString(sum[:]))
	if !write {
		return l.Close(ctx)
	}
	// The same library: dlopen hands back the handle the client loaded.
	h, err := purego.Dlopen(os.Getenv(envLib), purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		return err
	}
	var htod func(dst uint64, src *byte, n uint64) cuda.Result
	var setCurrent func(ctx uintptr) cuda.Result
	var retain func(ctx *uintptr, dev int32) cuda.Result
	purego.RegisterLibFunc(&htod, h, "cuMemcpyHtoD_v2")
	purego.RegisterLibFunc(&setCurrent, h, "cuCtxSetCurrent")
	purego.RegisterLibFunc(&retain, h, "cuDevicePrimaryCtxRetain")
	var pctx uintptr
	if r := retain(&pctx, int32(m.Device)); r != cuda.Success {
		return r
	}
	one := []byte{^b[0]}
	r := setCurrent(pctx)
	if r == cuda.Success {
		r = htod(m.Ptr, &one[0], 1)
	}
	if r != cuda.Success {
		fmt.Fprintf(out, "write: %v\n", r)
		return nil
	}
	fmt.Fprintln(out, "write: ok")
	return nil
}

// engine allocates memory of its own on the GPU named by envGPU, fills it,
// attaches it as a VMM descriptor and prints "attached"; on "corrupt" from
// stdin it changes one byte and prints "corrupted"; on EOF it exits.
func engine(ctx context.Context, out io.Writer) error {
	devs, err := cuda.Open(ctx, cuda.Options{LibraryPath: os.Getenv(envLib), Workers: 1})
	if err != nil {
		return err
	}
	var dev *cuda.Device
	for _, d := range devs {
		defer d.Close()
		if d.StaticProperties().UUID == os.Getenv(envGPU) {
			dev = d
		}
	}
	if dev == nil {
		return fmt.Errorf("no GPU %s", os.Getenv(envGPU))
	}
	data := make([]byte, handoffBytes)
	fill(data)
	mem, err := dev.Alloc(ctx, uint64(len(data)))
	if err != nil {
		return err
	}
	defer dev.Free(ctx, mem)
	if err := dev.Write(ctx, mem, 0, data); err != nil {
		return err
	}
	x, err := dev.Export(ctx, mem)
	if err != nil {
		return err
	}
	c, err := client.DialConsumer(ctx, os.Getenv(envSocket))
	if err != nil {
		return err
	}
	defer c.Close()
	sum := sha256.Sum256(data)
	_, err = c.Attach(ctx, "gpu-check-attached", x.File, client.AttachOptions{GPUUUID: os.Getenv(envGPU), Size: uint64(len(data)), SHA256: hex.EncodeToString(sum[:])})
	x.File.Close()
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "attached")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() == "corrupt" {
			if err := dev.Write(ctx, mem, 4096, []byte{^data[4096]}); err != nil {
				return err
			}
			fmt.Fprintln(out, "corrupted")
		}
	}
	return nil
}

// second is a second process of this program in a role.
type second struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startSecond(env ...string) (*second, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &second{cmd: cmd, in: in, out: bufio.NewReader(out)}, nil
}

func (s *second) line() (string, error) {
	l, err := s.out.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("the second process stopped (%v) after %q", err, l)
	}
	return strings.TrimSpace(l), nil
}

func (s *second) stop() error {
	s.in.Close()
	return s.cmd.Wait()
}

// handoffCheck is -handoff: the agent's side of the hand-off and attach
// checks, each line "PASS: …" or "FAIL: …"; errTargets when one failed.
func handoffCheck(ctx context.Context, out io.Writer, c config) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	// As the agent does: attachments are read in a reader process (this program).
	devs, err := cuda.Open(ctx, cuda.Options{LibraryPath: c.lib, Devices: []int{c.gpu}, Workers: c.workers, VerifyInFlight: c.inFlight,
		ReaderCommand: []string{self}})
	if err != nil {
		return err
	}
	dev := devs[0]
	defer dev.Close()
	fmt.Fprintf(out, "GPU %d: %s, VMM granularity %d bytes\n", c.gpu, dev.StaticProperties().UUID, dev.Granularity())
	if dev.Granularity() == 0 {
		return fmt.Errorf("this GPU cannot hand shards out: %s", strings.Join(dev.Limitations(), "; "))
	}
	s, err := newSealer(dev, 64<<10, sealer.VerifyHost)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp(c.dir, "gpucheck-handoff-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	data := make([]byte, handoffBytes)
	fill(data)
	path := filepath.Join(dir, "shard")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return err
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	srv, err := handoff.NewServer(handoff.Config{Sealer: s, Logger: log})
	if err != nil {
		return err
	}
	socket := filepath.Join(dir, "handoff.sock")
	ln, err := control.Listen(socket, nil)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln) }()
	defer func() { cancel(); <-done }()

	failed := false
	report := func(ok bool, format string, args ...any) {
		word := "PASS"
		if !ok {
			word, failed = "FAIL", true
		}
		fmt.Fprintf(out, "%s: %s\n", word, fmt.Sprintf(format, args...))
	}
	env := []string{envSocket + "=" + socket, envLib + "=" + dev.Library(), envGPU + "=" + dev.StaticProperties().UUID}

	// 1. Export, import in a second process, bytes equal, which access took effect.
	seal, err := s.Seal(ctx, sealer.SealRequest{ID: "gpu-check-handoff", Path: path})
	if err != nil {
		return err
	}
	p, err := startSecond(append(env, envRole+"=consumer", envShard+"="+seal.ShardID)...)
	if err != nil {
		return err
	}
	line, err := p.line()
	report(err == nil && strings.HasSuffix(line, "sha256="+seal.ContentSHA256), "hand-off: a second process imported the shard and read the sealed bytes (%s%v)", line, errOrEmpty(err))
	report(p.stop() == nil, "hand-off: the consumer closed its lease and exited")
	fmt.Fprintf(out, "access granted to the importer: %s\n", map[bool]string{true: "read-only (CU_MEM_ACCESS_FLAGS_PROT_READ)", false: "read-write (the driver refused read-only)"}[strings.HasPrefix(line, "readonly=true")])

	// 2. A write through the imported mapping, in a throwaway process.
	w, err := startSecond(append(env, envRole+"=writer", envShard+"="+seal.ShardID)...)
	if err != nil {
		return err
	}
	_, _ = w.line()
	wline, werr := w.line()
	_ = w.stop()
	res, verr := s.Verify(ctx, seal.ShardID)
	switch {
	case werr != nil:
		report(false, "write through the imported mapping: %v", werr)
	case wline == "write: ok":
		report(verr != nil && res.Result == audit.ReasonDigestMismatch, "write through the imported mapping took effect, and verification caught it (%s)", res.Result)
	default:
		report(verr == nil && res.Intact(), "write through the imported mapping refused (%s); the shard is intact (%s)", strings.TrimPrefix(wline, "write: "), res.Result)
	}
	if _, err := s.ForceRelease(ctx, seal.ShardID); err != nil {
		return err
	}

	// 3. Attach of the engine's allocation; corrupt it there; detected.
	e, err := startSecond(append(env, envRole+"=engine")...)
	if err != nil {
		return err
	}
	line, err = e.line()
	report(err == nil && line == "attached", "attach: a second process's VMM allocation attached and sealed (%s%v)", line, errOrEmpty(err))
	if err == nil {
		res, verr := s.Verify(ctx, "gpu-check-attached")
		report(verr == nil && res.Intact(), "attach: verified in place (%s)", res.Result)
		fmt.Fprintln(e.in, "corrupt")
		line, err = e.line()
		res, verr = s.Verify(ctx, "gpu-check-attached")
		report(err == nil && verr != nil && res.Result == audit.ReasonDigestMismatch && res.FirstBadOffset == 0,
			"attach: a byte changed by the owner was detected (%s, first bad leaf at offset %d)", res.Result, res.FirstBadOffset)
	}
	_ = e.stop()
	deadline := time.Now().Add(10 * time.Second)
	for len(s.List()) != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	report(len(s.List()) == 0, "attach: released when the owner exited")
	if failed {
		return errTargets
	}
	return nil
}

func errOrEmpty(err error) string {
	if err == nil {
		return ""
	}
	return "; " + err.Error()
}
