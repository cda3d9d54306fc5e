package handoff

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/client"
	"github.com/vramseal/vramseal/internal/control"
	"github.com/vramseal/vramseal/internal/logfield"
	"github.com/vramseal/vramseal/internal/testenv"
	"github.com/vramseal/vramseal/internal/wire"
	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/simgpu"
)

type fixture struct {
	sealer  *sealer.Sealer
	rec     *audit.Recorder
	socket  string
	content []byte
	hook    *test.Hook
}

// newFixture seals shard "s" on a simulated GPU and serves the consumer
// socket with access.
func newFixture(t *testing.T, access control.Access) *fixture {
	t.Helper()
	dir := t.TempDir()
	devs, err := simgpu.New(simgpu.Config{GPUs: 1, MemoryBytes: 64 << 20, Properties: simgpu.DefaultProperties()})
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := sealer.NewSigner(bytes.Repeat([]byte{7}, 32))
	log, hook := test.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	f := &fixture{rec: &audit.Recorder{}, hook: hook, content: bytes.Repeat([]byte("weights!"), 100_000)}
	f.sealer, err = sealer.New(sealer.Config{WorkerID: "w", Devices: simgpu.Devices(devs), Signer: signer, Emitter: f.rec, Logger: log,
		LeafSize: sealer.MinLeafSize})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "shard")
	if err := os.WriteFile(path, f.content, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := f.sealer.Seal(context.Background(), sealer.SealRequest{ID: "s", Path: path, GPU: 0}); err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(Config{Sealer: f.sealer, Access: access, Logger: log, HandshakeTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	f.socket = filepath.Join(dir, "handoff.sock")
	ln, err := control.Listen(f.socket, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return f
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// waitFor polls cond for up to 5s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestOpenInProcess(t *testing.T) {
	f := newFixture(t, control.Access{})
	ctx := context.Background()
	before := openFDs(t)
	c, err := client.DialConsumer(ctx, f.socket)
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.Open(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	m, err := l.Map()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m, f.content) || l.Size != uint64(len(f.content)) || l.Memory != sealer.MemoryMemfd {
		t.Fatalf("received %d bytes (%s), want the shard's %d", len(m), l.Memory, len(f.content))
	}
	if res, err := c.VerifySeal(ctx, l.Seal); err != nil || !res.Intact() {
		t.Errorf("verify-before-use: %+v, %v", res, err)
	}
	forged := l.Seal
	forged.ContentSHA256 = strings.Repeat("0", 64)
	if res, err := c.VerifySeal(ctx, forged); err != nil || res.Result != audit.ReasonSignatureInvalid {
		t.Errorf("forged seal: %+v, %v", res, err)
	}
	if _, err := c.Open(ctx, "s"); !isKind(err, sealer.KindExists.String()) {
		t.Errorf("second open on one connection: %v", err)
	}
	if f.sealer.Leases() != 1 {
		t.Fatalf("%d leases, want 1", f.sealer.Leases())
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if f.sealer.Leases() != 0 {
		t.Error("close did not end the lease")
	}
	client.Unmap(m)
	c.Close()
	waitFor(t, "descriptors back to their count", func() bool { return openFDs(t) == before })
	opened, closed := f.rec.Named(audit.NameVRAMOpened), f.rec.Named(audit.NameVRAMClosed)
	if len(opened) != 1 || len(closed) != 1 {
		t.Fatalf("events: %d opened, %d closed", len(opened), len(closed))
	}
	who := opened[0].(audit.VRAMOpened).Consumer
	exe, _ := os.Executable()
	if who.UID != int64(os.Getuid()) || who.PID != int64(os.Getpid()) || who.Executable != exe {
		t.Errorf("consumer %+v, want this process (%s)", who, exe)
	}
}

func isKind(err error, kind string) bool {
	var ae *client.APIError
	return errors.As(err, &ae) && ae.Kind == kind
}

// TestConsumerChild is the consumer process of TestConsumerInAnotherProcess:
// it opens the shard named in the environment, reports what it could do
// with it, and holds the lease until its stdin closes.
func TestConsumerChild(t *testing.T) {
	sock, id := os.Getenv("VRAMSEAL_TEST_CONSUMER_SOCKET"), os.Getenv("VRAMSEAL_TEST_CONSUMER_SHARD")
	if sock == "" {
		return // only as the child of TestConsumerInAnotherProcess
	}
	ctx := context.Background()
	c, err := client.DialConsumer(ctx, sock)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(3)
	}
	l, err := c.Open(ctx, id)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(3)
	}
	m, err := l.Map()
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(3)
	}
	sum := sha256.Sum256(m)
	fmt.Println("SHA256", hex.EncodeToString(sum[:]))
	_, werr := unix.Mmap(int(l.File.Fd()), 0, int(l.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	fmt.Println("MAP_SHARED_WRITE", errors.Is(werr, syscall.EPERM))
	_, werr = l.File.WriteAt([]byte("x"), 0)
	fmt.Println("WRITE", errors.Is(werr, syscall.EPERM))
	fmt.Println("READY")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() { // "byte N": print the byte at N as the mapping shows it now
		var off int
		if _, err := fmt.Sscanf(in.Text(), "byte %d", &off); err == nil && off < len(m) {
			fmt.Println("BYTE", m[off])
		}
	}
}

type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
}

func startConsumer(t *testing.T, socket, id string, cred *syscall.Credential) *child {
	t.Helper()
	exe := os.Args[0]
	cmd := exec.Command(exe, "-test.run=^TestConsumerChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "VRAMSEAL_TEST_CONSUMER_SOCKET="+socket, "VRAMSEAL_TEST_CONSUMER_SHARD="+id)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return c
}

// line returns the child's next line starting with prefix.
func (c *child) line(t *testing.T, prefix string) string {
	t.Helper()
	for c.out.Scan() {
		l := c.out.Text()
		if strings.HasPrefix(l, "ERR") {
			t.Fatalf("consumer: %s", l)
		}
		if strings.HasPrefix(l, prefix) {
			return strings.TrimSpace(strings.TrimPrefix(l, prefix))
		}
	}
	t.Fatalf("consumer ended before %q", prefix)
	return ""
}

// TestConsumerInAnotherProcess: a consumer process sees the shard's bytes,
// cannot map them writable nor write them, sees a bit the agent flips, and
// its lease holds off a release until it dies (SIGKILL).
func TestConsumerInAnotherProcess(t *testing.T) {
	f := newFixture(t, control.Access{})
	ctx := context.Background()
	c := startConsumer(t, f.socket, "s", nil)
	want := sha256.Sum256(f.content)
	if got := c.line(t, "SHA256"); got != hex.EncodeToString(want[:]) {
		t.Fatalf("consumer hashed %s, want %x", got, want)
	}
	if c.line(t, "MAP_SHARED_WRITE") != "true" || c.line(t, "WRITE") != "true" {
		t.Fatal("the consumer could map the shard writable or write it")
	}
	c.line(t, "READY")
	if err := simgpu.Corrupt(ctx, f.sealer, "s", 1000, 1); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(c.stdin, "byte 1000")
	if got, want := c.line(t, "BYTE"), fmt.Sprint(f.content[1000]^2); got != want {
		t.Errorf("the consumer sees byte %s after the flip, want %s: not the same memory", got, want)
	}
	if res, _ := f.sealer.Verify(ctx, "s"); res.Intact() {
		t.Error("verify missed the flip")
	}
	if _, err := f.sealer.Release(ctx, "s"); sealer.KindOf(err) != sealer.KindBusy || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", c.cmd.Process.Pid)) {
		t.Fatalf("release while leased: %v", err)
	}
	_ = c.cmd.Process.Kill()
	_ = c.cmd.Wait()
	waitFor(t, "the dead consumer's lease to end", func() bool { return f.sealer.Leases() == 0 })
	if _, err := f.sealer.Release(ctx, "s"); err != nil {
		t.Fatalf("release after the consumer died: %v", err)
	}
}

// TestBadInput: unknown shard, garbage, a silent client, a client that
// leaves mid-frame, a wrong version, an unknown operation; each a clear
// answer (or a dropped connection) and no descriptor leaked.
func TestBadInput(t *testing.T) {
	f := newFixture(t, control.Access{})
	ctx := context.Background()
	before := openFDs(t)
	c, err := client.DialConsumer(ctx, f.socket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Open(ctx, "nope"); !isKind(err, sealer.KindNotFound.String()) {
		t.Errorf("unknown shard: %v", err)
	}
	if _, err := c.Open(ctx, "../etc"); !isKind(err, wire.KindInvalid) {
		t.Errorf("bad id: %v", err)
	}
	c.Close()
	raw := func(data []byte) string {
		conn, err := net.Dial("unix", f.socket)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if len(data) > 0 {
			conn.Write(data)
		}
		_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		b, _ := io.ReadAll(conn)
		return string(b)
	}
	frame := func(body string) []byte {
		b := make([]byte, 4+len(body))
		binary.BigEndian.PutUint32(b, uint32(len(body)))
		copy(b[4:], body)
		return b
	}
	for name, c := range map[string]struct {
		data []byte
		want string
	}{
		"garbage":           {[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), `"kind":"invalid"`},
		"frame too large":   {[]byte{0xff, 0xff, 0xff, 0xff}, "want 1 to 65536"},
		"not JSON":          {frame("{{{"), "not a message of this protocol"},
		"unknown field":     {frame(`{"v":1,"op":"open","id":"s","x":1}`), "unknown field"},
		"wrong version":     {frame(`{"v":2,"op":"open","id":"s"}`), `"kind":"version"`},
		"unknown operation": {frame(`{"v":1,"op":"seal","id":"s"}`), "unknown operation"},
		"silent client":     {nil, ""},
		"half a header":     {[]byte{0, 0}, ""},
	} {
		got := raw(c.data)
		if !strings.Contains(got, c.want) {
			t.Errorf("%s: answer %q, want %q", name, got, c.want)
		}
	}
	if f.sealer.Leases() != 0 {
		t.Error("a lease was left open")
	}
	waitFor(t, "descriptors back to their count", func() bool { return openFDs(t) == before })
}

// TestRefusedCaller: a uid allowed on the control socket only is refused
// on the consumer socket, with a log line naming it.
func TestRefusedCaller(t *testing.T) {
	testenv.Root(t, "to start a consumer under another uid")
	f := newFixture(t, control.Access{OwnUID: 0, Section: "handoff"})
	testenv.OpenUp(t, filepath.Dir(f.socket))
	if err := os.Chmod(f.socket, 0o666); err != nil { // only the peer check decides
		t.Fatal(err)
	}
	exe := testenv.TestBinaryForAnyUser(t)
	cmd := exec.Command(exe, "-test.run=^TestConsumerChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "VRAMSEAL_TEST_CONSUMER_SOCKET="+f.socket, "VRAMSEAL_TEST_CONSUMER_SHARD=s")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), "not allowed: uid 65534 is neither root, the agent's user, in handoff.allowed_uids") {
		t.Errorf("consumer under uid 65534: %s", out)
	}
	if f.sealer.Leases() != 0 {
		t.Error("a refused caller holds a lease")
	}
	refused := false
	for _, e := range f.hook.AllEntries() {
		if strings.Contains(e.Message, "connection refused") && e.Data[logfield.PeerUID] == uint32(65534) {
			refused = true
		}
	}
	if !refused {
		t.Error("the refusal was not logged with the caller's uid")
	}
}
