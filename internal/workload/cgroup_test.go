package workload

import (
	"strings"
	"testing"
)

func TestParseCgroup(t *testing.T) {
	const (
		uid   = "1f2e3d4c-5b6a-4798-8a9b-0c1d2e3f4a5b"
		cid   = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		uidUS = "1f2e3d4c_5b6a_4798_8a9b_0c1d2e3f4a5b"
	)
	cases := []struct {
		name, data string
		want       Workload
	}{
		{"v2 systemd containerd", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidUS + ".slice/cri-containerd-" + cid + ".scope\n", Workload{uid, cid}},
		{"v2 systemd cri-o guaranteed", "0::/kubepods.slice/kubepods-pod" + uidUS + ".slice/crio-" + cid + ".scope\n", Workload{uid, cid}},
		{"v1 cgroupfs", "12:memory:/kubepods/besteffort/pod" + uid + "/" + cid + "\n11:cpu,cpuacct:/kubepods/besteffort/pod" + uid + "/" + cid + "\n", Workload{uid, cid}},
		{"v1 docker", "3:devices:/kubepods/burstable/pod" + uid + "/docker-" + cid + ".scope\n", Workload{uid, cid}},
		{"pod without container", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidUS + ".slice\n", Workload{PodUID: uid}},
		{"host service", "0::/system.slice/vllm.service\n", Workload{}},
		{"not kubepods", "0::/user.slice/pod" + uid + "/" + cid + "\n", Workload{}},
		{"garbage", "not a cgroup file", Workload{}},
		{"empty", "", Workload{}},
	}
	for _, c := range cases {
		if got := ParseCgroup(c.data); got != c.want {
			t.Errorf("%s: ParseCgroup = %+v, want %+v", c.name, got, c.want)
		}
	}
}

func FuzzParseCgroup(f *testing.F) {
	f.Add("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1f2e3d4c_5b6a_4798_8a9b_0c1d2e3f4a5b.slice/cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope\n")
	f.Add("12:memory:/kubepods/besteffort/pod1f2e3d4c-5b6a-4798-8a9b-0c1d2e3f4a5b/x\n1:name=systemd:/")
	f.Add(":::\n::\n0::/kubepods/pod")
	f.Fuzz(func(t *testing.T, data string) {
		w := ParseCgroup(data)
		if w.PodUID != "" && !isPodUID(w.PodUID) {
			t.Fatalf("pod uid %q is not a UUID", w.PodUID)
		}
		if w.ContainerID != "" && (w.PodUID == "" || containerID(w.ContainerID) != w.ContainerID) {
			t.Fatalf("container id %q (pod %q)", w.ContainerID, w.PodUID)
		}
		if w.PodUID != "" && !strings.Contains(strings.ReplaceAll(data, "_", "-"), w.PodUID) {
			t.Fatalf("pod uid %q is not in the input", w.PodUID)
		}
	})
}
