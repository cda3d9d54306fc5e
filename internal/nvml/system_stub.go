//go:build !cgo || !linux || nonvml

package nvml

// BuiltIn reports whether this binary was built with NVML support.
const BuiltIn = false

// System returns a Library whose Init reports ErrNotBuiltIn: this binary
// was built without cgo (or with the nonvml tag).
func System() Library { return notBuiltIn{} }
