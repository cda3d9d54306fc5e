package otel

import (
	"testing"
)

func TestResourceAttrs(t *testing.T) {
	hostname := func() (string, error) { return "pod-abc12", nil }
	for _, tc := range []struct {
		name string
		env  map[string]string
		want map[string]string
	}{
		{"on Kubernetes", map[string]string{"NODE_NAME": "gpu-node-7", "POD_UID": "0f6c-uid", "POD_NAME": "vramseal-x1", "POD_NAMESPACE": "vramseal"},
			map[string]string{"host.name": "gpu-node-7", "service.instance.id": "0f6c-uid", "k8s.pod.uid": "0f6c-uid",
				"k8s.node.name": "gpu-node-7", "k8s.pod.name": "vramseal-x1", "k8s.namespace.name": "vramseal", KeyWorkerID: "node-a"}},
		{"on a host", map[string]string{},
			map[string]string{"host.name": "pod-abc12", "service.instance.id": "node-a", "k8s.pod.uid": "", "k8s.node.name": ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{WorkerID: "node-a", ServiceVersion: "1.2.3", Getenv: func(k string) string { return tc.env[k] }}
			got := map[string]string{}
			for _, kv := range resourceAttrs(cfg, hostname) {
				got[string(kv.Key)] = kv.Value.AsString()
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
			if got["service.name"] != "vramseal-agent" || got["service.version"] != "1.2.3" {
				t.Errorf("service: %v", got)
			}
		})
	}
}
