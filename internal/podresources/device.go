package podresources

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Ref is a GPU as a device id names it: by UUID or by index, possibly a
// MIG device of it, or every GPU.
type Ref struct {
	// UUID is "GPU-..." (a whole GPU, or the parent of a MIG device named
	// by the old "MIG-GPU-<uuid>/<gi>/<ci>" form) or "MIG-..." (a MIG
	// device); "" when the id names an index.
	UUID string
	// Index is the NVML index (-1 when the id names a UUID).
	Index int
	// MIG is whether the id names a MIG device; GPUInstance is its GPU
	// instance id where the id says (-1 otherwise).
	MIG         bool
	GPUInstance int
	// All: the id names every GPU ("all", a CDI device some drivers use).
	All bool
}

// ErrNotGPU: the id does not name an NVIDIA GPU.
var ErrNotGPU = errors.New("not a GPU device id")

// Normalise parses a device id as the NVIDIA device plugin, its
// time-slicing and MIG strategies, and DRA drivers report it:
//
//	GPU-<uuid>                       a GPU by UUID
//	3                                a GPU by NVML index
//	<id>::2                          time-sliced replica 2 of <id> (the suffix is dropped)
//	MIG-<uuid>                       a MIG device by UUID
//	MIG-GPU-<uuid>/<gi>/<ci>         a MIG device, old form: its GPU and GPU instance
//	3:1                              MIG device 1 of GPU 3 (mixed strategy, by index)
//	gpu-3, gpu-3-mig-...             a DRA device name (NVIDIA's DRA driver)
//	nvidia.com/gpu=<any of these>    a CDI device name (DRA claims); "=all" is every GPU
func Normalise(id string) (Ref, error) {
	r := Ref{Index: -1, GPUInstance: -1}
	s := strings.TrimSpace(id)
	if i := strings.LastIndex(s, "="); i >= 0 {
		s = s[i+1:]
	}
	if i := strings.LastIndex(s, "::"); i > 0 && isDigits(s[i+2:]) {
		s = s[:i]
	}
	switch {
	case s == "":
		return r, fmt.Errorf("%q: %w", id, ErrNotGPU)
	case s == "all":
		r.All = true
		return r, nil
	case strings.HasPrefix(s, "MIG-GPU-"):
		parts := strings.Split(strings.TrimPrefix(s, "MIG-"), "/")
		if len(parts) != 3 || !isUUID(parts[0]) || !isDigits(parts[1]) || !isDigits(parts[2]) {
			return r, fmt.Errorf("%q: %w", id, ErrNotGPU)
		}
		r.UUID, r.MIG = parts[0], true
		r.GPUInstance, _ = strconv.Atoi(parts[1])
		return r, nil
	case strings.HasPrefix(s, "MIG-"):
		if !isUUID(s) {
			return r, fmt.Errorf("%q: %w", id, ErrNotGPU)
		}
		r.UUID, r.MIG = s, true
		return r, nil
	case strings.HasPrefix(s, "GPU-"):
		if !isUUID(s) {
			return r, fmt.Errorf("%q: %w", id, ErrNotGPU)
		}
		r.UUID = s
		return r, nil
	case strings.HasPrefix(s, "gpu-"):
		rest := strings.TrimPrefix(s, "gpu-")
		idx, tail, _ := strings.Cut(rest, "-")
		if !isDigits(idx) || (tail != "" && !strings.HasPrefix(tail, "mig")) {
			return r, fmt.Errorf("%q: %w", id, ErrNotGPU)
		}
		r.Index, _ = strconv.Atoi(idx)
		r.MIG = tail != ""
		return r, nil
	}
	idx, mig, isMIG := strings.Cut(s, ":")
	if !isDigits(idx) || (isMIG && !isDigits(mig)) {
		return r, fmt.Errorf("%q: %w", id, ErrNotGPU)
	}
	r.Index, _ = strconv.Atoi(idx)
	r.MIG = isMIG
	return r, nil
}

// isDigits is a non-empty decimal number of at most 6 digits.
func isDigits(s string) bool {
	if s == "" || len(s) > 6 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// isUUID is "GPU-" or "MIG-" and hex digits and dashes.
func isUUID(s string) bool {
	rest, ok := strings.CutPrefix(s, "GPU-")
	if !ok {
		rest, ok = strings.CutPrefix(s, "MIG-")
	}
	if !ok || len(rest) < 8 || len(rest) > 64 {
		return false
	}
	for _, c := range rest {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == '-') {
			return false
		}
	}
	return true
}

// Assignment is one GPU allocated to a pod's container.
type Assignment struct {
	Namespace, Pod, Container string
	GPU                       Ref
}

// isNVIDIA says whether a device-plugin resource name or DRA driver is
// NVIDIA's ("nvidia.com/gpu", "nvidia.com/mig-1g.10gb", "gpu.nvidia.com").
func isNVIDIA(name string) bool { return strings.Contains(name, "nvidia.com") }

// Assignments lists the NVIDIA GPUs each container holds, from its
// device-plugin devices and its DRA claims (their CDI devices, else the
// driver's device name). Ids that name no GPU are skipped; so are
// duplicates (time-sliced replicas of one GPU).
func Assignments(pods []Pod) []Assignment {
	var out []Assignment
	for _, p := range pods {
		for _, c := range p.Containers {
			seen := map[Ref]bool{}
			add := func(id string) {
				ref, err := Normalise(id)
				if err != nil || seen[ref] {
					return
				}
				seen[ref] = true
				out = append(out, Assignment{Namespace: p.Namespace, Pod: p.Name, Container: c.Name, GPU: ref})
			}
			for _, d := range c.Devices {
				if !isNVIDIA(d.Resource) {
					continue
				}
				for _, id := range d.IDs {
					add(id)
				}
			}
			for _, cl := range c.Claims {
				for _, r := range cl.Resources {
					if len(r.CDIDevices) > 0 {
						for _, n := range r.CDIDevices {
							if isNVIDIA(n) {
								add(n)
							}
						}
						continue
					}
					if isNVIDIA(r.Driver) {
						add(r.Device)
					}
				}
			}
		}
	}
	return out
}
