package handoff

import (
	"errors"
	"testing"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/internal/control"
)

// A consumer in a pod is named by its pod UID and container id, from its
// cgroup; a host process or an unreadable cgroup leaves them empty.
func TestCallerPodAndContainer(t *testing.T) {
	const (
		uid = "1f2e3d4c-5b6a-4798-8a9b-0c1d2e3f4a5b"
		cid = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	)
	cgroups := map[int32]string{
		42: "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1f2e3d4c_5b6a_4798_8a9b_0c1d2e3f4a5b.slice/cri-containerd-" + cid + ".scope\n",
		43: "0::/system.slice/vllm.service\n",
	}
	s := &Server{cfg: Config{
		Executable: func(int32) (string, error) { return "/usr/bin/python3", nil },
		Cgroup: func(pid int32) (string, error) {
			if cg, ok := cgroups[pid]; ok {
				return cg, nil
			}
			return "", errors.New("no such process")
		},
	}}
	want := audit.Caller{UID: 1000, GID: 1000, PID: 42, Executable: "/usr/bin/python3", PodUID: uid, ContainerID: cid}
	if got := s.caller(control.Peer{UID: 1000, GID: 1000, PID: 42}); got != want {
		t.Errorf("pod consumer = %+v, want %+v", got, want)
	}
	if got := s.caller(control.Peer{UID: 1000, GID: 1000, PID: 43}); got.PodUID != "" || got.ContainerID != "" {
		t.Errorf("host consumer = %+v", got)
	}
	if got := s.caller(control.Peer{UID: 1000, GID: 1000, PID: 44}); got.PodUID != "" || got.PID != 44 {
		t.Errorf("unreadable cgroup = %+v", got)
	}
	if got := s.caller(control.Peer{UID: 1000, GID: 1000, PID: 0}); got.PID != -1 || got.PodUID != "" {
		t.Errorf("peer in another pid namespace = %+v", got)
	}
}
