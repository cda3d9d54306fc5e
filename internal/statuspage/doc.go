// Package statuspage is the agent's status page at /: a server-rendered
// HTML page (no JavaScript; it refreshes itself) showing, per GPU, a memory
// bar (sealed by vramseal, used by others, free), the VRAM-only policy's
// verdict and ECC counts; the sealed shards; the audit pipeline's backlog and
// export state; and the last audit events.
//
// The page reads the state the metrics collectors read (the sealer's shard
// list, the schedule, the policy, the GPU telemetry the collector caches,
// the audit pipeline's Stats) through the small interfaces of Source, so it
// is never a second source of truth. Snapshot turns a Source into a View;
// Render, a pure function, writes a View as HTML; Handler serves both. The
// page is bounded: at most MaxShardRows shard rows and MaxEvents events, and
// long user-supplied strings cut. Everything is escaped by html/template.
//
// With the summary mode (the default) the page shows no event details, uids,
// pids or executables; full adds each event's fields; off shows only the
// links to /metrics, /healthz and /readyz (docs/status-page.md).
package statuspage
