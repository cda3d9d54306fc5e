package workload

import (
	"strings"
)

// Workload is what a process's cgroup says about its pod and container.
type Workload struct {
	// PodUID is the Kubernetes pod's UID ("" outside a pod), with dashes
	// ("1f2e...-..."), whatever form the cgroup path uses.
	PodUID string
	// ContainerID is the container's id (64 hex digits; "" when the path
	// names none).
	ContainerID string
}

// ParseCgroup reads /proc/PID/cgroup's content: cgroup v2 ("0::/path")
// and v1 lines, the cgroupfs and systemd drivers' paths, and the
// containerd, CRI-O and Docker container scopes:
//
//	/kubepods/burstable/pod<uid>/<id>
//	/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope
//	/kubepods.slice/kubepods-pod<uid>.slice/crio-<id>.scope
//
// It never fails: what it cannot read is left empty.
func ParseCgroup(data string) Workload {
	var w Workload
	for line := range strings.SplitSeq(data, "\n") {
		// hierarchy-ID:controllers:path; the path may hold colons.
		_, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		_, path, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		if got := parsePath(path); got.PodUID != "" {
			if w.PodUID == "" || got.ContainerID != "" && w.ContainerID == "" {
				w = got
			}
		}
	}
	return w
}

// parsePath finds the pod and container in one cgroup path.
func parsePath(path string) Workload {
	var w Workload
	segs := strings.Split(path, "/")
	inKubepods := false
	for i, seg := range segs {
		seg = strings.TrimSuffix(seg, ".slice")
		if strings.HasPrefix(seg, "kubepods") {
			inKubepods = true
		}
		j := strings.LastIndex(seg, "pod")
		if j < 0 || !inKubepods || (j > 0 && seg[j-1] != '-') {
			continue
		}
		uid := strings.ReplaceAll(seg[j+len("pod"):], "_", "-")
		if !isPodUID(uid) {
			continue
		}
		w.PodUID = uid
		if i+1 < len(segs) {
			w.ContainerID = containerID(segs[i+1])
		}
	}
	return w
}

// containerID reads a container's cgroup name: "<id>", "cri-containerd-<id>.scope",
// "crio-<id>.scope", "docker-<id>.scope".
func containerID(seg string) string {
	seg = strings.TrimSuffix(seg, ".scope")
	if i := strings.LastIndex(seg, "-"); i >= 0 {
		seg = seg[i+1:]
	}
	if len(seg) != 64 {
		return ""
	}
	for _, c := range seg {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return ""
		}
	}
	return seg
}

// isPodUID is a UUID: 8-4-4-4-12 hex digits.
func isPodUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return true
}
