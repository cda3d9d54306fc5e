package main

import (
	"context"
	"math"
	"runtime/debug"
	"time"

	"github.com/vramseal/vramseal/internal/config"
	"github.com/vramseal/vramseal/sealer"
)

// baseMemoryLimit is the default soft memory limit before the leaf digests
// of the GPUs' memory are added: the agent's own heap is a few MiB, its
// read buffers live outside the heap, and so does a simulated GPU's
// "VRAM" (memfds).
const baseMemoryLimit = 128 << 20

// memoryLimit is the Go runtime's soft memory limit for cfg on these
// devices (docs/config.md, memory_limit_bytes): the configured one, else
// -1 when GOMEMLIMIT is set (the runtime's own is kept), else the default.
func memoryLimit(ctx context.Context, cfg *config.Config, devs []sealer.Device, getenv func(string) string) int64 {
	if cfg.MemoryLimitBytes != 0 {
		return int64(min(cfg.MemoryLimitBytes, math.MaxInt64))
	}
	if getenv("GOMEMLIMIT") != "" {
		return -1
	}
	limit := uint64(baseMemoryLimit)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for _, d := range devs {
		if info, err := d.MemoryInfo(ctx); err == nil {
			// Each shard keeps its leaf digests; a verification computes a
			// second set while it runs.
			limit += 2 * sealer.LeafCount(info.Total, cfg.Seal.LeafSize) * 32
		}
	}
	return int64(min(limit, math.MaxInt64))
}

// defaultGCPercent is the garbage collector's target (as GOGC) unless GOGC
// is set: the agent's live heap is about 3 MB, so a collection costs about
// a millisecond, and at the runtime's 100 the garbage of the scrapes alone
// doubles the idle heap.
const defaultGCPercent = 50

// applyGCPercent sets the collector's target to defaultGCPercent unless
// GOGC is set, and returns the GOGC in force ("" when the default).
func applyGCPercent(getenv func(string) string) string {
	if v := getenv("GOGC"); v != "" {
		return v
	}
	debug.SetGCPercent(defaultGCPercent)
	return ""
}

// applyMemoryLimit sets the runtime's soft memory limit and returns the
// one in force.
func applyMemoryLimit(limit int64) int64 {
	if limit < 0 {
		return debug.SetMemoryLimit(-1) // a negative value reads it
	}
	debug.SetMemoryLimit(limit)
	return limit
}
