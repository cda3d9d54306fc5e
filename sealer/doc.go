// Package sealer is vramseal's domain: it seals model shards into GPU
// memory (Sealer.Seal), re-verifies them (Verify, VerifySeal, VerifyAll) and
// releases them (Release, ReleaseAll), reporting each step as an audit event.
//
// Around the Sealer:
//
//   - Schedule re-verifies every sealed shard each interval, with jitter,
//     one verification at a time per GPU, under one byte budget for the
//     whole agent; it makes overdue shards visible (OverdueShards, NextDue).
//   - Declared keeps the shards declared in the configuration sealed,
//     retrying failures with backoff, and applies a reloaded shard list
//     without touching unchanged shards.
//   - LogProgress reports the progress of large seals on the operational log.
//
// Hardware sits behind Device (sealer/simgpu, sealer/cuda). Time sits behind
// Clock so the schedule and the reconciler are tested with a fake clock.
// The package knows no Prometheus and no OTel SDK: outcomes go to an
// Observer, and spans are started with the OTel trace API only.
package sealer
