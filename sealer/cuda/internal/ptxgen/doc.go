// Package ptxgen writes the PTX of vramseal's GPU kernel without a CUDA
// toolkit, and interprets it in Go.
//
// The kernel is built in a tiny intermediate representation (IR): typed
// virtual registers (32-bit, 64-bit, predicate), unsigned arithmetic, funnel
// shift rotates, byte swaps, loads and stores of global memory, guards,
// labels and branches. The same IR is printed as PTX (what the driver
// JIT-compiles with cuModuleLoadData) and run by an interpreter here, so the
// kernel's logic — leaf layout, SHA-256 rounds, padding of a short last leaf,
// where each digest is written — is checked against crypto/sha256 on any
// machine. Each IR operation maps onto exactly one PTX instruction, so the
// interpreter executes the same instruction stream the GPU does, modulo the
// PTX semantics the printer relies on (documented at each op).
//
// The generator command (./cmd/ptxgen, run by `make generate-ptx`) writes
// sealer/cuda/sha256_leaves.ptx; a test in sealer/cuda fails when the
// committed file is stale.
package ptxgen
