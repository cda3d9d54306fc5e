package handoff

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vramseal/vramseal/client"
	"github.com/vramseal/vramseal/internal/control"
	"github.com/vramseal/vramseal/internal/testenv"
	"github.com/vramseal/vramseal/internal/wire"
	"github.com/vramseal/vramseal/sealer"
)

// TestAttachIPCBadInput: attach requests carrying a CUDA IPC handle or a
// GPU UUID that cannot be served are answered invalid, saying why, and
// the connection is kept.
func TestAttachIPCBadInput(t *testing.T) {
	f := newFixture(t, control.Access{})
	ctx := context.Background()
	conn, err := net.Dial("unix", f.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := conn.(*net.UnixConn)
	mem, _ := testenv.Memfd(t, make([]byte, 4096), unix.F_SEAL_SHRINK|unix.F_SEAL_GROW)
	good := strings.Repeat("ab", sealer.IPCHandleSize)
	for _, tc := range []struct {
		name  string
		req   wire.Request
		files int
		want  string
	}{
		{"short handle", wire.Request{IPCHandle: "abcd", Size: 10}, 0, "128 hex digits"},
		{"not hex", wire.Request{IPCHandle: strings.Repeat("zz", sealer.IPCHandleSize), Size: 10}, 0, "128 hex digits"},
		{"handle and descriptor", wire.Request{IPCHandle: good, Size: 10, Files: 1}, 1, "no descriptor"},
		{"simulated GPU", wire.Request{IPCHandle: good, Size: 10}, 0, "cannot attach a CUDA IPC handle"},
		{"offset without handle", wire.Request{Offset: 5, Size: 10, Files: 1}, 1, "only with a CUDA IPC handle"},
		{"bad GPU UUID", wire.Request{GPUUUID: "GPU-1", Size: 10, Files: 1}, 1, "not a GPU UUID"},
		{"unknown GPU UUID", wire.Request{GPUUUID: "GPU-00000000-0000-0000-0000-000000000000", Size: 10, Files: 1}, 1, "no GPU GPU-0000"},
	} {
		tc.req.V, tc.req.Op, tc.req.ID = wire.Version, wire.OpAttach, "x"
		var send []*os.File
		if tc.files == 1 {
			send = append(send, mem)
		}
		if err := wire.Write(c, tc.req, send...); err != nil {
			t.Fatal(err)
		}
		var resp wire.Response
		if _, err := wire.Read(c, &resp); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if resp.OK || resp.Error == nil || resp.Error.Kind != wire.KindInvalid || !strings.Contains(resp.Error.Message, tc.want) {
			t.Errorf("%s: answer %+v, want invalid saying %q", tc.name, resp.Error, tc.want)
		}
	}
	// The connection still serves.
	cl, err := client.DialConsumer(ctx, f.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.AttachIPC(ctx, "y", [sealer.IPCHandleSize]byte{1}, "", 0, 10, client.AttachOptions{}); err == nil || !strings.Contains(err.Error(), "cannot attach a CUDA IPC handle") {
		t.Errorf("AttachIPC on a simulated GPU: %v", err)
	}
	if len(f.sealer.List()) != 1 {
		t.Errorf("%d shards after refused attaches", len(f.sealer.List()))
	}
}
