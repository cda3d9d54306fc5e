package cuda

import "fmt"

// MemoryType is where an allocation lives (CUmemorytype).
type MemoryType int

// Memory types.
const (
	MemoryHost    MemoryType = 1
	MemoryDevice  MemoryType = 2
	MemoryArray   MemoryType = 3
	MemoryUnified MemoryType = 4
)

func (m MemoryType) String() string {
	switch m {
	case MemoryHost:
		return "host"
	case MemoryDevice:
		return "device"
	case MemoryArray:
		return "array"
	case MemoryUnified:
		return "unified"
	}
	return fmt.Sprintf("unknown (%d)", int(m))
}
