package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sys/unix"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/client"
	"github.com/vramseal/vramseal/internal/logfield"
	"github.com/vramseal/vramseal/internal/testenv"
	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/simgpu"
)

type fixture struct {
	sealer  *sealer.Sealer
	rec     *audit.Recorder
	hook    *test.Hook
	devs    []*simgpu.Device
	client  *client.Control
	socket  string
	models  string
	outside string
	changes int
}

// newFixture starts a real control server on a Unix socket in a temporary
// directory, over a real sealer with two simulated GPUs of mem bytes.
func newFixture(t testing.TB, mem uint64, access Access, sim bool) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{rec: &audit.Recorder{}, models: filepath.Join(dir, "models"), outside: filepath.Join(dir, "outside")}
	for _, d := range []string{f.models, f.outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	devs, err := simgpu.New(simgpu.Config{GPUs: 2, MemoryBytes: mem, Properties: simgpu.DefaultProperties()})
	if err != nil {
		t.Fatal(err)
	}
	f.devs = devs
	signer, _ := sealer.NewSigner(bytes.Repeat([]byte{7}, 32))
	log, hook := test.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	f.hook = hook
	f.sealer, err = sealer.New(sealer.Config{WorkerID: "w", Devices: simgpu.Devices(devs), Signer: signer, Emitter: f.rec, Logger: log, CriticalWait: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Sealer: f.sealer, ModelDirs: []string{f.models}, Access: access, Logger: log, OnChange: func() { f.changes++ }}
	if sim {
		cfg.Faults = simgpu.Faults{Shards: f.sealer, Devices: devs}
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.socket = filepath.Join(dir, "run", "agent.sock")
	ln, err := Listen(f.socket, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	f.client = client.NewControl(f.socket, 10*time.Second)
	return f
}

func (f *fixture) file(t *testing.T, dir, name string, n int) string {
	t.Helper()
	p := filepath.Join(dir, name)
	data := bytes.Repeat([]byte("vramseal"), n/8+1)[:n]
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func apiStatus(err error) int {
	var ae *client.APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

func TestSealListVerifyCorruptRelease(t *testing.T) {
	f := newFixture(t, 64<<20, Access{OwnUID: uint32(os.Getuid())}, true)
	ctx := context.Background()
	p := f.file(t, f.models, "a.bin", 1<<20+17)
	seal, err := f.client.Seal(ctx, client.SealRequest{ID: "a", Path: p, GPU: 1, ModelRef: "m@1", LeafSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	if seal.ShardID != "a" || seal.GPUDevice != 1 || seal.VRAMBytes != 1<<20+17 || seal.LeafSize != 4096 || seal.Signature == "" {
		t.Fatalf("seal %+v", seal)
	}
	shards, err := f.client.List(ctx)
	if err != nil || len(shards) != 1 || shards[0].Seal != seal || shards[0].State != sealer.StateSealed {
		t.Fatalf("list %+v, %v", shards, err)
	}
	if _, err := f.client.Seal(ctx, client.SealRequest{ID: "a", Path: p}); apiStatus(err) != http.StatusConflict {
		t.Errorf("sealing an id twice: %v", err)
	}
	v, err := f.client.Verify(ctx, "a")
	if err != nil || !v.Intact || len(v.Results) != 1 || v.Results[0].Result != "ok" {
		t.Fatalf("verify %+v, %v", v, err)
	}
	record := []byte(seal.JSON())
	if v, err := f.client.VerifySeal(ctx, record); err != nil || !v.Intact {
		t.Fatalf("verify of the genuine seal record: %+v, %v", v, err)
	}
	forged := bytes.Replace(record, []byte(`"model_ref":"m@1"`), []byte(`"model_ref":"m@2"`), 1)
	if v, err := f.client.VerifySeal(ctx, forged); err != nil || v.Intact || v.Results[0].Result != audit.ReasonSignatureInvalid {
		t.Fatalf("verify of a forged seal record: %+v, %v", v, err)
	}
	if _, err := f.client.Debug(ctx, "corrupt", client.CorruptRequest{ID: "a", Offset: 5000}); err != nil {
		t.Fatal(err)
	}
	v, err = f.client.VerifyAll(ctx)
	if err != nil || v.Intact || v.Results[0].Result != audit.ReasonDigestMismatch || v.Results[0].FirstBadOffset != 4096 {
		t.Fatalf("verify after corruption: %+v, %v", v, err)
	}
	if _, err := f.client.Verify(ctx, "nope"); apiStatus(err) != http.StatusNotFound {
		t.Errorf("verify of an unknown shard: %v", err)
	}
	rel, err := f.client.Release(ctx, "a", false)
	if err != nil || rel.FreedBytes != 1<<20+17 || rel.RemainingUsed != 0 {
		t.Fatalf("release %+v, %v", rel, err)
	}
	if _, err := f.client.Release(ctx, "a", false); apiStatus(err) != http.StatusNotFound {
		t.Errorf("second release: %v", err)
	}
	if f.devs[1].LiveAllocations() != 0 {
		t.Error("allocation left after release")
	}
	if v, err := f.client.VerifyAll(ctx); err != nil || !v.Intact || len(v.Results) != 0 {
		t.Errorf("verify --all with nothing sealed: %+v, %v", v, err)
	}
	if f.changes != 2 {
		t.Errorf("OnChange called %d times, want 2 (seal, release)", f.changes)
	}
	// Each mutating call is logged with the caller's credentials.
	found := false
	for _, e := range f.hook.AllEntries() {
		if e.Message == "control API call" && e.Data[logfield.PeerUID] == uint32(os.Getuid()) && e.Data[logfield.Path] == "/v1/shards" {
			found = true
		}
	}
	if !found {
		t.Error("no log line with the caller's uid for a seal")
	}
}

// TestSealRefusals is the API half of docs/bad-input.md.
func TestSealRefusals(t *testing.T) {
	f := newFixture(t, 4<<20, Access{}, true)
	ctx := context.Background()
	inside := f.file(t, f.models, "ok.bin", 1000)
	outside := f.file(t, f.outside, "secret.bin", 1000)
	big := f.file(t, f.models, "big.bin", 5<<20)
	if err := os.Symlink(outside, filepath.Join(f.models, "escape.bin")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(inside, filepath.Join(f.outside, "into.bin")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(f.models, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		req    client.SealRequest
		status int
		want   string
	}{
		{"outside model_dirs", client.SealRequest{ID: "x", Path: outside}, 403, "is outside " + f.models},
		{"symlink leaving model_dirs", client.SealRequest{ID: "x", Path: filepath.Join(f.models, "escape.bin")}, 403, "resolves to " + outside + ", outside"},
		{"dot-dot out of model_dirs", client.SealRequest{ID: "x", Path: f.models + "/../outside/secret.bin"}, 403, "is outside"},
		{"directory", client.SealRequest{ID: "x", Path: filepath.Join(f.models, "dir")}, 403, "is a directory"},
		{"missing file", client.SealRequest{ID: "x", Path: filepath.Join(f.models, "nope.bin")}, 403, "no such file or directory"},
		{"relative path", client.SealRequest{ID: "x", Path: "models/ok.bin"}, 403, "is not an absolute path"},
		{"bad id", client.SealRequest{ID: "../x", Path: inside}, 400, `shard id "../x"`},
		{"shard larger than the GPU", client.SealRequest{ID: "x", Path: big}, 507, "5242880 bytes requested, 4194304 available on GPU 0"},
		{"no such GPU", client.SealRequest{ID: "x", Path: inside, GPU: 7}, 400, "no GPU 7"},
		{"wrong sha256", client.SealRequest{ID: "x", Path: inside, SHA256: strings.Repeat("0", 64)}, 422, "content sha256 is"},
		{"bad leaf size", client.SealRequest{ID: "x", Path: inside, LeafSize: 3}, 400, "leaf size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.client.Seal(ctx, tc.req)
			if apiStatus(err) != tc.status || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %d %v, want %d and %q", apiStatus(err), err, tc.status, tc.want)
			}
		})
	}
	// A symlink from outside into model_dirs resolves inside: allowed.
	if _, err := f.client.Seal(ctx, client.SealRequest{ID: "via-link", Path: filepath.Join(f.outside, "into.bin")}); err != nil {
		t.Errorf("symlink into model_dirs: %v", err)
	}
}

func TestBadRequestBodies(t *testing.T) {
	f := newFixture(t, 4<<20, Access{}, true)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", f.socket)
	}}}
	post := func(path string, body []byte) (int, string) {
		resp, err := hc.Post("http://x"+path, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e client.ErrorResponse
		if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
			t.Fatalf("error answer is not JSON: %v", err)
		}
		return resp.StatusCode, e.Error
	}
	garbage := bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef, '{'}, 2<<20) // 10 MB
	for _, tc := range []struct {
		name, path string
		body       []byte
		status     int
		want       string
	}{
		{"not JSON", "/v1/shards", []byte("id=a&path=/x"), 400, "request body is not JSON"},
		{"10 MB of garbage", "/v1/shards", garbage, 413, "request body is larger than 1048576 bytes"},
		{"10 MB of garbage as a seal record", "/v1/verify/seal", garbage, 413, "larger than 1048576 bytes"},
		{"truncated JSON", "/v1/shards", []byte(`{"id": "a", "path": `), 400, "request body is not JSON"},
		{"unknown field", "/v1/shards", []byte(`{"id": "a", "path": "/x", "gpus": 1}`), 400, `unknown field "gpus"`},
		{"wrong type", "/v1/shards", []byte(`{"id": 5}`), 400, "cannot unmarshal number"},
		{"two objects", "/v1/debug/corrupt", []byte(`{"id": "a"} {"id": "b"}`), 400, "not JSON"},
		{"seal record not JSON", "/v1/verify/seal", []byte("shard a please"), 400, "not JSON"},
		{"seal record with unknown field", "/v1/verify/seal", []byte(`{"shard_id": "a", "signature": "x", "extra": 1}`), 400, `unknown field "extra"`},
		{"unknown endpoint", "/v1/nope", []byte(`{}`), 404, "no endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := post(tc.path, tc.body)
			if status != tc.status || !strings.Contains(body, tc.want) {
				t.Errorf("got %d %s, want %d and %q", status, body, tc.status, tc.want)
			}
		})
	}
}

func TestTraceparentReachesAuditEvents(t *testing.T) {
	f := newFixture(t, 4<<20, Access{}, true)
	p := f.file(t, f.models, "a.bin", 3000)
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	f.client.TraceParent = tp
	if _, err := f.client.Seal(context.Background(), client.SealRequest{ID: "a", Path: p}); err != nil {
		t.Fatal(err)
	}
	recs := f.rec.Recorded()
	if len(recs) == 0 {
		t.Fatal("no events")
	}
	for _, r := range recs {
		sc := trace.SpanContextFromContext(r.Ctx)
		if sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
			t.Errorf("%s carries trace %s, want the caller's", r.Event.Name(), sc.TraceID())
		}
	}
}

func TestDebugRefusedWithoutSimulatedGPU(t *testing.T) {
	f := newFixture(t, 4<<20, Access{}, false)
	for name, req := range map[string]any{
		"corrupt": client.CorruptRequest{ID: "a"}, "ecc": client.ECCRequest{GPU: 0, Uncorrectable: 1},
		"gpu-lost": client.GPURequest{}, "gpu-restored": client.GPURequest{}, "fail-reads": client.FailReadsRequest{On: true},
	} {
		_, err := f.client.Debug(context.Background(), name, req)
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusConflict || ae.Kind != client.KindNotSimulated {
			t.Errorf("debug %s on real GPUs: %v", name, err)
		}
	}
}

func TestDebugSwitches(t *testing.T) {
	f := newFixture(t, 4<<20, Access{}, true)
	ctx := context.Background()
	if _, err := f.client.Debug(ctx, "ecc", client.ECCRequest{GPU: 1, Correctable: 2, Uncorrectable: 3}); err != nil {
		t.Fatal(err)
	}
	if tm := f.devs[1].Telemetry(); tm.ECCCorrected != 2 || tm.ECCUncorrected != 3 {
		t.Errorf("telemetry %+v", tm)
	}
	if _, err := f.client.Debug(ctx, "gpu-lost", client.GPURequest{GPU: 0}); err != nil || !f.devs[0].Telemetry().Lost {
		t.Errorf("gpu-lost: %v", err)
	}
	if _, err := f.client.Debug(ctx, "gpu-restored", client.GPURequest{GPU: 0}); err != nil || f.devs[0].Telemetry().Lost {
		t.Errorf("gpu-restored: %v", err)
	}
	p := f.file(t, f.models, "a.bin", 3000)
	if _, err := f.client.Seal(ctx, client.SealRequest{ID: "a", Path: p}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.Debug(ctx, "fail-reads", client.FailReadsRequest{GPU: 0, On: true}); err != nil {
		t.Fatal(err)
	}
	if v, err := f.client.Verify(ctx, "a"); err != nil || v.Intact || v.Results[0].Result != audit.ReasonReadError {
		t.Errorf("verify with failing reads: %+v, %v", v, err)
	}
	if _, err := f.client.Debug(ctx, "ecc", client.ECCRequest{GPU: 9}); apiStatus(err) != http.StatusNotFound {
		t.Errorf("ecc on a missing GPU: %v", err)
	}
	if _, err := f.client.Debug(ctx, "corrupt", client.CorruptRequest{ID: "a", Offset: 3000}); apiStatus(err) != http.StatusBadRequest {
		t.Errorf("corrupt past the end: %v", err)
	}
}

func TestClientUnreachable(t *testing.T) {
	c := client.NewControl(filepath.Join(t.TempDir(), "none.sock"), time.Second)
	_, err := c.List(context.Background())
	if !errors.Is(err, client.ErrUnreachable) {
		t.Fatalf("error %v, want client.ErrUnreachable", err)
	}
}

func TestOpenModelFile(t *testing.T) {
	models, outside := t.TempDir(), t.TempDir()
	inside := filepath.Join(models, "a.bin")
	if err := os.WriteFile(inside, []byte("weights"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(outside, "secret"), []byte("x"), 0o600)
	_ = os.Symlink(filepath.Join(outside, "secret"), filepath.Join(models, "escape"))
	f, path, err := OpenModelFile([]string{models}, inside)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	real, _ := filepath.EvalSymlinks(inside)
	if path != real {
		t.Fatalf("path %s, want %s", path, real)
	}
	if _, _, err := OpenModelFile([]string{models}, filepath.Join(models, "escape")); err == nil {
		t.Fatal("a symlink leaving model_dirs was opened")
	}
}

// A folder on the resolved path swapped for a symlink after the check is
// refused by the open itself (openat2 RESOLVE_NO_SYMLINKS), never followed.
func TestOpenNoSymlinksRefusesASwappedFolder(t *testing.T) {
	root := t.TempDir()
	models, elsewhere := filepath.Join(root, "models"), filepath.Join(root, "elsewhere")
	_ = os.MkdirAll(filepath.Join(models, "llama"), 0o755)
	_ = os.MkdirAll(elsewhere, 0o755)
	_ = os.WriteFile(filepath.Join(models, "llama", "a.bin"), []byte("w"), 0o600)
	_ = os.WriteFile(filepath.Join(elsewhere, "a.bin"), []byte("x"), 0o600)
	if fd, err := unix.Openat2(unix.AT_FDCWD, root, &unix.OpenHow{Flags: unix.O_RDONLY}); err != nil {
		testenv.Missing(t, "this kernel has no openat2 (%v): only the last component is protected here", err)
	} else {
		unix.Close(fd)
	}
	real := filepath.Join(models, "llama", "a.bin")
	f, err := openNoSymlinks(real)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	// The swap: llama becomes a symlink to a folder outside model_dirs.
	_ = os.RemoveAll(filepath.Join(models, "llama"))
	if err := os.Symlink(elsewhere, filepath.Join(models, "llama")); err != nil {
		t.Fatal(err)
	}
	if f, err := openNoSymlinks(real); err == nil {
		f.Close()
		t.Fatal("a path through a swapped-in symlink was opened")
	}
}
