package collector

import (
	"context"
)

// PodSource says which pod and container each GPU is allocated to (the
// kubelet's pod-resources API). GPUPods is called from the background
// telemetry read, with a context that ends at the read timeout.
type PodSource interface {
	GPUPods(ctx context.Context) ([]GPUPod, error)
}

// GPUPod is one GPU (or MIG device of it) allocated to a container.
type GPUPod struct {
	Namespace, Pod, Container string
	// UUID names the GPU ("GPU-...") or one of its MIG devices
	// ("MIG-..."); when "", Index names it (NVML's index). All names
	// every GPU.
	UUID  string
	Index int
	All   bool
}

// maxPodSeries bounds vramseal_gpu_pod_info.
const maxPodSeries = 1024

// matches says whether p names the GPU t (or one of its MIG devices).
func (p GPUPod) matches(t GPUTelemetry) bool {
	switch {
	case p.All:
		return true
	case p.UUID == "":
		return p.Index == t.Index
	case p.UUID == t.UUID:
		return true
	}
	for _, m := range t.MIG {
		if m.UUID == p.UUID {
			return true
		}
	}
	return false
}

// podKey is one vramseal_gpu_pod_info series' pod labels.
type podKey struct{ namespace, pod, container string }

// podsByGPU matches pods to the GPUs of a read, one series per GPU and
// container, at most maxPodSeries in all.
func podsByGPU(pods []GPUPod, data []GPUTelemetry) map[int][]podKey {
	out := map[int][]podKey{}
	seen := map[int]map[podKey]bool{}
	n := 0
	for _, t := range data {
		if !t.Up {
			continue
		}
		for _, p := range pods {
			if !p.matches(t) {
				continue
			}
			k := podKey{p.Namespace, p.Pod, p.Container}
			if seen[t.Index] == nil {
				seen[t.Index] = map[podKey]bool{}
			}
			if seen[t.Index][k] {
				continue
			}
			if n >= maxPodSeries {
				return out
			}
			seen[t.Index][k] = true
			out[t.Index] = append(out[t.Index], k)
			n++
		}
	}
	return out
}
