package client_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ebitengine/purego"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/client"
	"github.com/vramseal/vramseal/internal/control"
	"github.com/vramseal/vramseal/internal/handoff"
	"github.com/vramseal/vramseal/internal/testenv"
	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/cuda"
)

// The consumer process: the test binary run again with these set.
const (
	envSocket = "VRAMSEAL_TEST_CUDA_CONSUMER_SOCKET"
	envLib    = "VRAMSEAL_TEST_CUDA_CONSUMER_LIB"
	envShard  = "VRAMSEAL_TEST_CUDA_CONSUMER_SHARD"
	envNoRO   = "VRAMSEAL_TEST_CUDA_CONSUMER_REFUSE_READ_ONLY"
)

func TestMain(m *testing.M) {
	if cuda.IsReader() { // the agent's reader process of attached memory
		os.Exit(cuda.ServeReader())
	}
	if os.Getenv(envSocket) != "" {
		if err := consumerMain(); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// consumerMain opens the shard, imports it with its own copy of the CUDA
// driver and prints what it read; then, line by line on stdin: "read"
// reads and prints again, "close" closes and exits.
func consumerMain() error {
	ctx := context.Background()
	if os.Getenv(envNoRO) != "" {
		h, err := purego.Dlopen(os.Getenv(envLib), purego.RTLD_NOW|purego.RTLD_LOCAL)
		if err != nil {
			return err
		}
		var set func(string, int64)
		p, err := purego.Dlsym(h, "fakecuda_set")
		if err != nil {
			return err
		}
		purego.RegisterFunc(&set, p)
		set("refuse_read_only", 1)
	}
	c, err := client.DialConsumer(ctx, os.Getenv(envSocket))
	if err != nil {
		return err
	}
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
	l.File.Close() // the import holds the memory
	read := func() error {
		b := make([]byte, m.Size)
		if _, err := m.ReadAt(b, 0); err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		fmt.Printf("readonly=%v sha256=%s\n", m.ReadOnly, hex.EncodeToString(sum[:]))
		return nil
	}
	if err := read(); err != nil {
		return err
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "read":
			if err := read(); err != nil {
				return err
			}
		case "close":
			_ = l.Close(ctx) // refused once the agent revoked the lease
			return m.Close()
		}
	}
	return nil
}

// consumer is a consumer process holding a shard imported through CUDA.
type consumer struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startConsumer(t *testing.T, socket, lib, shard string, refuseReadOnly bool) *consumer {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envSocket+"="+socket, envLib+"="+lib, envShard+"="+shard)
	if refuseReadOnly {
		cmd.Env = append(cmd.Env, envNoRO+"=1")
	}
	cmd.Stderr = os.Stderr
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &consumer{cmd: cmd, in: in, out: bufio.NewReader(out)}
	t.Cleanup(func() { in.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return c
}

// line reads the consumer's next line.
func (c *consumer) line(t *testing.T) string {
	t.Helper()
	s, err := c.out.ReadString('\n')
	if err != nil {
		t.Fatalf("consumer: %q, %v", s, err)
	}
	return strings.TrimSpace(s)
}

// agent is a sealer on the fake CUDA driver serving the consumer socket.
type agent struct {
	s      *sealer.Sealer
	rec    *audit.Recorder
	socket string
	lib    string
	data   []byte
	seal   sealer.Seal
}

// fakeDriver builds sealer/cuda's fake libcuda into a temporary folder.
func fakeDriver(t *testing.T) string {
	t.Helper()
	gcc := testenv.Program(t, "gcc")
	lib := filepath.Join(t.TempDir(), "libcuda.so.1")
	out, err := exec.Command(gcc, "-shared", "-fPIC", "-O2", "-o", lib, filepath.Join("..", "sealer", "cuda", "testdata", "fakecuda.c"), "-lpthread").CombinedOutput()
	if err != nil {
		t.Fatalf("building the fake driver: %v\n%s", err, out)
	}
	return lib
}

func newAgent(t *testing.T) *agent {
	t.Helper()
	ctx := context.Background()
	a := &agent{lib: fakeDriver(t), rec: &audit.Recorder{}, data: bytes.Repeat([]byte("sealed weights "), 20_000)}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	devs, err := cuda.Open(ctx, cuda.Options{LibraryPath: a.lib, Workers: 2, ReaderCommand: []string{self}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, d := range devs {
			d.Close()
		}
	})
	signer, _ := sealer.NewSigner(bytes.Repeat([]byte{7}, 32))
	log, _ := test.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	a.s, err = sealer.New(sealer.Config{WorkerID: "w", Devices: cuda.Devices(devs), Signer: signer, Emitter: a.rec, Logger: log,
		LeafSize: sealer.MinLeafSize, LeaseWait: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "shard")
	if err := os.WriteFile(path, a.data, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"s", "t"} {
		if a.seal, err = a.s.Seal(ctx, sealer.SealRequest{ID: id, Path: path, GPU: 0}); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := handoff.NewServer(handoff.Config{Sealer: a.s, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	a.socket = filepath.Join(t.TempDir(), "handoff.sock")
	ln, err := control.Listen(a.socket, nil)
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return a
}

func waitLeases(t *testing.T, s *sealer.Sealer, n int) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); s.Leases() != n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%d leases, want %d", s.Leases(), n)
		}
	}
}

// TestCUDAHandoffTwoProcesses: a consumer process opens a sealed CUDA
// shard, imports the VMM descriptor with its own driver (read-only), and
// reads the sealed bytes; its lease blocks a release, a forced release
// revokes it and names its pid in still_mapped_by, and its mapping still
// holds the bytes. A second consumer whose driver refuses read-only access
// gets read-write; shutdown revokes it with still_mapped_by.
func TestCUDAHandoffTwoProcesses(t *testing.T) {
	a := newAgent(t)
	ctx := context.Background()
	want := fmt.Sprintf("readonly=true sha256=%s", a.seal.ContentSHA256)
	c := startConsumer(t, a.socket, a.lib, "s", false)
	if got := c.line(t); got != want {
		t.Fatalf("consumer read %q, want %q", got, want)
	}
	waitLeases(t, a.s, 1)
	if _, err := a.s.Release(ctx, "s"); sealer.KindOf(err) != sealer.KindBusy || !strings.Contains(err.Error(), fmt.Sprint(c.cmd.Process.Pid)) {
		t.Errorf("release of a leased shard: %v", err)
	}
	res, err := a.s.ForceRelease(ctx, "s")
	if err != nil || !slices.Equal(res.StillMappedBy, []int64{int64(c.cmd.Process.Pid)}) {
		t.Fatalf("forced release: %+v, %v", res, err)
	}
	// The agent freed its mapping and handle; the consumer's import keeps the memory.
	fmt.Fprintln(c.in, "read")
	if got := c.line(t); got != want {
		t.Errorf("after the forced release the consumer read %q", got)
	}
	fmt.Fprintln(c.in, "close")
	if err := c.cmd.Wait(); err != nil {
		t.Errorf("consumer: %v", err)
	}

	d := startConsumer(t, a.socket, a.lib, "t", true)
	if got, want := d.line(t), "readonly=false sha256="+a.seal.ContentSHA256; got != want {
		t.Fatalf("consumer with read-only refused: %q, want %q", got, want)
	}
	waitLeases(t, a.s, 1)
	if err := a.s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, ev := range a.rec.Named(audit.NameVRAMDeallocated) {
		e := ev.(audit.VRAMDeallocated)
		reasons = append(reasons, e.Reason)
		if e.ShardID == "t" && (e.Reason != audit.DeallocShutdown || !slices.Equal(e.StillMappedBy, []int64{int64(d.cmd.Process.Pid)})) {
			t.Errorf("shutdown deallocation %+v", e)
		}
	}
	if !slices.Equal(reasons, []string{audit.DeallocForced, audit.DeallocShutdown}) {
		t.Errorf("deallocation reasons %q", reasons)
	}
	if n := len(a.rec.Named(audit.NameVRAMOpened)); n != 2 {
		t.Errorf("%d vram.opened events, want 2", n)
	}
}

// TestCUDAAttachOverSocket: an engine (here in the test process, on its
// own copy of the fake driver) attaches memory it owns on the consumer
// socket, as a VMM descriptor and as a legacy IPC handle, both naming the
// GPU by UUID; the agent seals and verifies it in place and catches a
// change the owner makes; the attachments end with the connection.
func TestCUDAAttachOverSocket(t *testing.T) {
	a := newAgent(t)
	ctx := context.Background()
	b, err := os.ReadFile(a.lib)
	if err != nil {
		t.Fatal(err)
	}
	lib := filepath.Join(t.TempDir(), "libcuda.so.1")
	if err := os.WriteFile(lib, b, 0o755); err != nil {
		t.Fatal(err)
	}
	engines, err := cuda.Open(ctx, cuda.Options{LibraryPath: lib, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	engine := engines[0]
	defer engine.Close()
	data := bytes.Repeat([]byte("engine weights "), 5000)
	mem, err := engine.Alloc(ctx, uint64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Free(ctx, mem)
	if err := engine.Write(ctx, mem, 0, data); err != nil {
		t.Fatal(err)
	}
	uuid := engine.StaticProperties().UUID
	sum := sha256.Sum256(data)
	c, err := client.DialConsumer(ctx, a.socket)
	if err != nil {
		t.Fatal(err)
	}
	x, err := engine.Export(ctx, mem)
	if err != nil {
		t.Fatal(err)
	}
	att, err := c.Attach(ctx, "vmm", x.File, client.AttachOptions{GPUUUID: uuid, Size: uint64(len(data)), SHA256: hex.EncodeToString(sum[:])})
	x.File.Close()
	if err != nil {
		t.Fatal(err)
	}
	if att.Seal.ContentSHA256 != hex.EncodeToString(sum[:]) {
		t.Error("the attached seal is not of the engine's bytes")
	}
	h, err := purego.Dlopen(lib, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		t.Fatal(err)
	}
	var get func(h *[sealer.IPCHandleSize]byte, ptr uint64) int32
	var last func(k string) int64
	for name, fn := range map[string]any{"cuIpcGetMemHandle": &get, "fakecuda_get": &last} {
		p, err := purego.Dlsym(h, name)
		if err != nil {
			t.Fatal(err)
		}
		purego.RegisterFunc(fn, p)
	}
	var handle [sealer.IPCHandleSize]byte
	if r := get(&handle, uint64(last("last_map"))); r != 0 {
		t.Fatalf("cuIpcGetMemHandle: %d", r)
	}
	if _, err := c.AttachIPC(ctx, "ipc", handle, uuid, 15, uint64(len(data)-15), client.AttachOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"vmm", "ipc"} {
		if res, err := a.s.Verify(ctx, id); err != nil || !res.Intact() {
			t.Errorf("verify %s: %+v, %v", id, res, err)
		}
	}
	// The owner changes its memory while attached: both seals catch it.
	if err := engine.Write(ctx, mem, 100, []byte("X")); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"vmm", "ipc"} {
		if res, _ := a.s.Verify(ctx, id); res.Result != audit.ReasonDigestMismatch {
			t.Errorf("verify %s after the owner's change: %+v", id, res)
		}
	}
	c.Close()
	for end := time.Now().Add(5 * time.Second); len(a.s.List()) != 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("attachments not released when the owner went away: %d shards", len(a.s.List()))
		}
	}
}
