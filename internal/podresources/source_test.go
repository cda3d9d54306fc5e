package podresources_test

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"

	"github.com/vramseal/vramseal/collector"
	"github.com/vramseal/vramseal/internal/podresources"
)

const (
	uuid0 = "GPU-9c8a3f3e-1b2c-4d5e-8f90-123456789abc"
	uuid1 = "GPU-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"
	mig1  = "MIG-4d5e6f70-8192-5a3b-9c4d-e5f60718293a"
)

type gpus struct{}

func (gpus) Telemetry(context.Context) ([]collector.GPUTelemetry, error) {
	return []collector.GPUTelemetry{
		{Index: 0, UUID: uuid0, Up: true},
		{Index: 1, UUID: uuid1, Up: true, MIG: []collector.MIGInstance{{GPUInstanceID: 3, UUID: mig1, Profile: "1g.10gb"}}},
		{Index: 2, UUID: "GPU-lost", Up: false},
	}, nil
}

func serve(t *testing.T, pods []podresources.Pod) string {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "kubelet.sock")
	lis, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodec(podresources.Codec{}))
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "v1.PodResourcesLister", HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "List", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var req podresources.Raw
			if err := dec(&req); err != nil {
				return nil, err
			}
			resp := podresources.Raw(podresources.EncodeList(pods))
			return &resp, nil
		}}},
	}, struct{}{})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return socket
}

// TestPodInfoFromFakeKubelet: the metrics name the pod and container of
// each GPU as the kubelet's pod-resources API reports them, whatever form
// the device id takes.
func TestPodInfoFromFakeKubelet(t *testing.T) {
	socket := serve(t, []podresources.Pod{
		{Namespace: "inference", Name: "vllm-0", Containers: []podresources.Container{{Name: "engine",
			Devices: []podresources.Devices{{Resource: "nvidia.com/gpu", IDs: []string{uuid0 + "::3"}}}}}},
		{Namespace: "batch", Name: "train", Containers: []podresources.Container{{Name: "main",
			Devices: []podresources.Devices{{Resource: "nvidia.com/mig-1g.10gb", IDs: []string{mig1}}}}}},
		{Namespace: "dra", Name: "claimer", Containers: []podresources.Container{{Name: "c",
			Claims: []podresources.Claim{{Name: "gpu", Namespace: "dra", Resources: []podresources.ClaimResource{
				{Driver: "gpu.nvidia.com", Device: "gpu-0", CDIDevices: []string{"k8s.gpu.nvidia.com/device=gpu-0"}}}}}}}},
		{Namespace: "gone", Name: "on-lost-gpu", Containers: []podresources.Container{{Name: "x",
			Devices: []podresources.Devices{{Resource: "nvidia.com/gpu", IDs: []string{"2"}}}}}},
	})
	client, err := podresources.New(socket)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	log := logrus.New()
	log.SetOutput(io.Discard)
	set, err := collector.New(collector.Options{Device: "cuda", GPU: gpus{}, Pods: podresources.NewSource(client), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := set.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(set)
	want := `
# HELP vramseal_gpu_pod_info A container the GPU (or a MIG device of it) is allocated to, always 1, from the kubelet's pod-resources API (with kubernetes.pod_resources_socket).
# TYPE vramseal_gpu_pod_info gauge
vramseal_gpu_pod_info{container="c",gpu="0",namespace="dra",pod="claimer",uuid="` + uuid0 + `"} 1
vramseal_gpu_pod_info{container="engine",gpu="0",namespace="inference",pod="vllm-0",uuid="` + uuid0 + `"} 1
vramseal_gpu_pod_info{container="main",gpu="1",namespace="batch",pod="train",uuid="` + uuid1 + `"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "vramseal_gpu_pod_info"); err != nil {
		t.Fatal(err)
	}
}

// Without the kubelet the GPU metrics stay; there are no pod series.
func TestPodInfoWithoutKubelet(t *testing.T) {
	client, err := podresources.New(filepath.Join(t.TempDir(), "none.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	log := logrus.New()
	log.SetOutput(io.Discard)
	set, err := collector.New(collector.Options{Device: "cuda", GPU: gpus{}, Pods: podresources.NewSource(client), Logger: log, GPUTimeout: 3e9})
	if err != nil {
		t.Fatal(err)
	}
	if err := set.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(set)
	if n, err := testutil.GatherAndCount(reg, "vramseal_gpu_pod_info"); err != nil || n != 0 {
		t.Fatalf("pod series without a kubelet: %d, %v", n, err)
	}
	if n, _ := testutil.GatherAndCount(reg, "vramseal_gpu_info"); n != 2 {
		t.Fatalf("vramseal_gpu_info series: %d, want 2", n)
	}
}
