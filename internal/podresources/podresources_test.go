package podresources

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
)

const (
	uuidA = "GPU-9c8a3f3e-1b2c-4d5e-8f90-123456789abc"
	uuidB = "GPU-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"
	migA  = "MIG-4d5e6f70-8192-5a3b-9c4d-e5f60718293a"
)

func TestNormalise(t *testing.T) {
	ref := func(uuid string, index int, mig bool, gi int) Ref {
		return Ref{UUID: uuid, Index: index, MIG: mig, GPUInstance: gi}
	}
	cases := []struct {
		id   string
		want Ref
	}{
		{uuidA, ref(uuidA, -1, false, -1)},                                 // UUID
		{"3", ref("", 3, false, -1)},                                       // index
		{uuidA + "::4", ref(uuidA, -1, false, -1)},                         // time-sliced UUID
		{"1::0", ref("", 1, false, -1)},                                    // time-sliced index
		{migA, ref(migA, -1, true, -1)},                                    // MIG UUID
		{migA + "::2", ref(migA, -1, true, -1)},                            // time-sliced MIG
		{"MIG-" + uuidA + "/7/0", ref(uuidA, -1, true, 7)},                 // old MIG form
		{"0:2", ref("", 0, true, -1)},                                      // MIG by index (mixed strategy)
		{"gpu-5", ref("", 5, false, -1)},                                   // DRA device name
		{"gpu-2-mig-1g10gb-3-0", ref("", 2, true, -1)},                     // DRA MIG device name
		{"nvidia.com/gpu=" + uuidB, ref(uuidB, -1, false, -1)},             // CDI, UUID
		{"k8s.gpu.nvidia.com/device=gpu-1", ref("", 1, false, -1)},         // CDI, DRA name
		{"nvidia.com/gpu=0", ref("", 0, false, -1)},                        // CDI, index
		{"nvidia.com/gpu=all", Ref{Index: -1, GPUInstance: -1, All: true}}, // CDI, every GPU
	}
	for _, c := range cases {
		got, err := Normalise(c.id)
		if err != nil || got != c.want {
			t.Errorf("Normalise(%q) = %+v, %v; want %+v", c.id, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "eth0", "GPU-", "GPU-xyz-not-hex!", "MIG-GPU-" + uuidA[4:] + "/x/0", "gpu-", "gpu-a", "1:", ":1", "-1", "1234567", "/dev/nvidia0", "nvidia.com/gpu="} {
		if got, err := Normalise(bad); !errors.Is(err, ErrNotGPU) {
			t.Errorf("Normalise(%q) = %+v, %v; want ErrNotGPU", bad, got, err)
		}
	}
}

func testPods() []Pod {
	return []Pod{
		{Namespace: "inference", Name: "vllm-0", Containers: []Container{
			{Name: "engine", Devices: []Devices{
				{Resource: "nvidia.com/gpu", IDs: []string{uuidA + "::0", uuidA + "::1"}}, // two replicas of one GPU
				{Resource: "example.com/nic", IDs: []string{"0"}},                         // not a GPU resource
			}},
			{Name: "sidecar"},
		}},
		{Namespace: "batch", Name: "train-1", Containers: []Container{
			{Name: "main", Devices: []Devices{{Resource: "nvidia.com/mig-1g.10gb", IDs: []string{migA}}}},
		}},
		{Namespace: "dra", Name: "claimer", Containers: []Container{
			{Name: "c", Claims: []Claim{{Name: "gpu-claim", Namespace: "dra", Resources: []ClaimResource{
				{Driver: "gpu.nvidia.com", Pool: "node-a", Device: "gpu-1", CDIDevices: []string{"k8s.gpu.nvidia.com/device=gpu-1"}},
				{Driver: "gpu.nvidia.com", Pool: "node-a", Device: "gpu-0"},  // no CDI device: the device name
				{Driver: "net.example.com", Pool: "node-a", Device: "gpu-7"}, // not NVIDIA's driver
			}}}},
		}},
	}
}

func TestAssignments(t *testing.T) {
	got := Assignments(testPods())
	want := []Assignment{
		{Namespace: "inference", Pod: "vllm-0", Container: "engine", GPU: Ref{UUID: uuidA, Index: -1, GPUInstance: -1}},
		{Namespace: "batch", Pod: "train-1", Container: "main", GPU: Ref{UUID: migA, Index: -1, MIG: true, GPUInstance: -1}},
		{Namespace: "dra", Pod: "claimer", Container: "c", GPU: Ref{Index: 1, GPUInstance: -1}},
		{Namespace: "dra", Pod: "claimer", Container: "c", GPU: Ref{Index: 0, GPUInstance: -1}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Assignments =\n%+v\nwant\n%+v", got, want)
	}
}

func TestWireRoundTrip(t *testing.T) {
	pods := testPods()
	got, err := decodeList(EncodeList(pods))
	if err != nil {
		t.Fatal(err)
	}
	// Containers without devices decode with nil slices, as encoded.
	if !reflect.DeepEqual(got, pods) {
		t.Fatalf("round trip =\n%+v\nwant\n%+v", got, pods)
	}
	if _, err := decodeList([]byte{0x0a, 0xff}); err == nil {
		t.Error("a truncated message decoded")
	}
}

// fakeKubelet serves the pod-resources List call on a Unix socket, as the
// kubelet does, with the same codec; it records the calls it got.
func fakeKubelet(t *testing.T, pods []Pod) (socket string, calls *int) {
	t.Helper()
	socket = filepath.Join(t.TempDir(), "kubelet.sock")
	lis, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	srv := grpc.NewServer(grpc.ForceServerCodec(Codec{}))
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "v1.PodResourcesLister",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "List", Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var req Raw
			if err := dec(&req); err != nil {
				return nil, err
			}
			n++
			resp := Raw(EncodeList(pods))
			return &resp, nil
		}}},
	}, struct{}{})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return socket, &n
}

func TestClientAgainstFakeKubelet(t *testing.T) {
	socket, calls := fakeKubelet(t, testPods())
	c, err := New(socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pods, err := c.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(pods, testPods()) || *calls != 1 {
		t.Fatalf("List = %+v (%d calls)", pods, *calls)
	}
}

func TestClientWithoutKubelet(t *testing.T) {
	c, err := New(filepath.Join(t.TempDir(), "missing.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := c.List(ctx); err == nil || !strings.Contains(err.Error(), "pod-resources List") {
		t.Fatalf("List without a kubelet = %v", err)
	}
	if _, err := New("relative.sock"); err == nil {
		t.Error("a relative socket path was accepted")
	}
}

func FuzzNormalise(f *testing.F) {
	for _, s := range []string{uuidA, "3", uuidA + "::4", migA, "MIG-" + uuidA + "/7/0", "0:2", "gpu-5", "nvidia.com/gpu=all"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		r, err := Normalise(id)
		if err != nil {
			return
		}
		if !r.All && r.UUID == "" && r.Index < 0 {
			t.Fatalf("Normalise(%q) = %+v names no GPU", id, r)
		}
		if r.UUID != "" && r.Index != -1 {
			t.Fatalf("Normalise(%q) = %+v names both a UUID and an index", id, r)
		}
	})
}

// The kubelet's answer is parsed, never trusted: any bytes decode or fail
// without a panic, and what decodes re-encodes to a message that decodes
// the same.
func FuzzDecodeList(f *testing.F) {
	f.Add(EncodeList(testPods()))
	f.Add([]byte{0x0a, 0x02, 0x1a, 0x00})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		pods, err := decodeList(b)
		if err != nil {
			return
		}
		again, err := decodeList(EncodeList(pods))
		if err != nil || len(again) != len(pods) {
			t.Fatalf("re-decoding %d pods: %d, %v", len(pods), len(again), err)
		}
		_ = Assignments(pods)
	})
}
