package sealer

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// GPUProperties are what the agent knows of one GPU: what the VRAM-only
// policy checks, what the metrics and the status page name it by. Both
// backends report them (GPUDescriber); nothing else declares them.
type GPUProperties struct {
	// Index is the device index (the `gpu` label, gpu_device field).
	Index int
	// Name is the product name, e.g. "NVIDIA H100 80GB HBM3".
	Name string
	// UUID is the device UUID as nvidia-smi prints it ("GPU-…", or
	// "MIG-…" for a MIG instance).
	UUID string
	// Integrated is true for a GPU that shares memory with the host.
	Integrated bool
	// Compute is the compute capability.
	Compute ComputeCapability
	// TotalMemory is the device memory in bytes.
	TotalMemory uint64
	// ECCEnabled is true when ECC is on.
	ECCEnabled bool
	// MIG is whether the GPU is in MIG mode, as far as the backend knows.
	MIG MIGMode
}

// GPUDescriber is a device that reports its properties and what memory
// backs an allocation. Both backends implement it; the VRAM-only policy
// asks it.
type GPUDescriber interface {
	// Index is the device index.
	Index() int
	// Properties reports the device's properties; an error means the
	// device does not answer (lost, reset). Safe for concurrent use.
	Properties(ctx context.Context) (GPUProperties, error)
	// AllocationMemory asks the driver what memory backs a.
	AllocationMemory(ctx context.Context, a Allocation) (AllocationMemory, error)
}

// AllocationMemory is what the driver says backs an allocation.
type AllocationMemory struct {
	// Type is "device", "host", "unified", "array", or "unknown (N)".
	Type string
	// Managed is true for managed (unified) memory.
	Managed bool
}

// MemoryDevice is the AllocationMemory.Type of plain device memory.
const MemoryDevice = "device"

// MIGMode is whether a GPU is in MIG mode, as far as is known.
type MIGMode int

// MIG modes.
const (
	MIGUnknown MIGMode = iota
	MIGDisabled
	MIGEnabled
)

func (m MIGMode) String() string {
	switch m {
	case MIGDisabled:
		return "disabled"
	case MIGEnabled:
		return "enabled"
	}
	return "unknown"
}

// ComputeCapability is a GPU's compute capability, e.g. 9.0.
type ComputeCapability struct {
	Major, Minor int
}

func (c ComputeCapability) String() string { return fmt.Sprintf("%d.%d", c.Major, c.Minor) }

// Less reports whether c is below o.
func (c ComputeCapability) Less(o ComputeCapability) bool {
	return c.Major < o.Major || c.Major == o.Major && c.Minor < o.Minor
}

// ParseComputeCapability parses "MAJOR.MINOR" (e.g. "8.6", "10.0"): a
// major of one or two digits and a one-digit minor, as NVIDIA numbers
// them. It is the one parser for every configuration key that takes one.
func ParseComputeCapability(s string) (ComputeCapability, error) {
	a, b, ok := strings.Cut(s, ".")
	major, err1 := strconv.Atoi(a)
	minor, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || len(a) < 1 || len(a) > 2 || len(b) != 1 ||
		a[0] < '0' || a[0] > '9' || b[0] < '0' || b[0] > '9' {
		return ComputeCapability{}, fmt.Errorf("compute capability %q: want MAJOR.MINOR with a one-digit minor, e.g. 9.0", s)
	}
	return ComputeCapability{Major: major, Minor: minor}, nil
}
