package statuspage

import (
	"cmp"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/collector"
	"github.com/vramseal/vramseal/policy"
	"github.com/vramseal/vramseal/sealer"
)

// Shards is the sealer's state (a *sealer.Sealer).
type Shards interface {
	// GPUs returns the device indexes.
	GPUs() []int
	// List returns every sealed shard, by id.
	List() []sealer.ShardStatus
}

// Schedule is the verification schedule (a *sealer.Schedule).
type Schedule interface {
	// NextDue returns when the shard is next due for verification.
	NextDue(id string) (time.Time, bool)
}

// Policy is the VRAM-only policy's verdict (a *policy.Policy).
type Policy interface {
	Compliant() map[int]bool
	Violations() []policy.Violation
}

// Telemetry is the GPU telemetry the metrics collector caches (a
// *collector.Set): the page never reads the GPUs itself.
type Telemetry interface {
	GPUTelemetry() collector.GPUSnapshot
}

// RecentEvents are the last audit events (an *audit.Recent).
type RecentEvents interface {
	Events() (newestFirst []audit.Event, total uint64)
}

// Source is where the page's data comes from. The agent fills it with its
// parts; every interface is optional (nil: that section says it has no
// data). Each must be safe for concurrent use and cheap, as for the
// metrics collectors.
type Source struct {
	WorkerID, Device, Version string
	Simulated                 bool
	VerifyInterval            time.Duration
	// Ready is /readyz's verdict and reason (nil: ready).
	Ready func() (bool, string)
	// Links are kept on every page.
	Links []Link

	Shards    Shards
	Schedule  Schedule
	Policy    Policy
	Telemetry Telemetry
	Audit     collector.AuditStats
	Events    RecentEvents
}

// Snapshot reads src once and returns the view for mode at now. Its cost
// grows with the number of shards only through one pass over the sealer's
// list; schedule look-ups are made for the rows shown only.
func Snapshot(src Source, mode Mode, now time.Time) *View {
	v := &View{
		Mode: mode, Now: now, WorkerID: src.WorkerID, Device: src.Device, Version: src.Version,
		Simulated: src.Simulated, VerifyInterval: src.VerifyInterval, Links: src.Links, Ready: true,
	}
	if src.Ready != nil {
		v.Ready, v.NotReady = src.Ready()
	}
	if mode == Off {
		return v
	}
	var shards []sealer.ShardStatus
	var gpuIndexes []int
	if src.Shards != nil {
		shards, gpuIndexes = src.Shards.List(), src.Shards.GPUs()
	}
	v.GPUs, v.TelemetryError = gpuViews(src, gpuIndexes, shards)
	v.Shards, v.ShardsTotal, v.ShardsFailed = shardRows(shards, src.Schedule)
	v.ShardsHidden = v.ShardsTotal - len(v.Shards)
	if src.Audit != nil {
		v.Audit = auditView(src.Audit.Stats(), now)
	}
	if src.Events != nil {
		evs, total := src.Events.Events()
		v.EventsTotal = total
		for _, ev := range evs[:min(len(evs), MaxEvents)] {
			v.Events = append(v.Events, eventView(ev, mode))
		}
	}
	return v
}

// gpuViews joins the sealer's GPUs, the cached telemetry and the policy.
func gpuViews(src Source, indexes []int, shards []sealer.ShardStatus) ([]GPUView, string) {
	byIndex := map[int]*GPUView{}
	get := func(i int) *GPUView {
		g, ok := byIndex[i]
		if !ok {
			g = &GPUView{Index: i, Policy: "unknown"}
			byIndex[i] = g
		}
		return g
	}
	for _, i := range indexes {
		get(i)
	}
	for _, s := range shards {
		g := get(s.Seal.GPUDevice)
		g.Shards++
		g.SealedBytes += s.Seal.VRAMBytes
		if s.State == sealer.StateFailed {
			g.Failed++
		}
	}
	telemetryErr := "no GPU telemetry source"
	if src.Telemetry != nil {
		snap := src.Telemetry.GPUTelemetry()
		switch {
		case snap.Err != nil:
			telemetryErr = snap.Err.Error()
		case !snap.Fresh && !snap.ReadAt.IsZero():
			telemetryErr = "GPU telemetry is stale (read at " + snap.ReadAt.UTC().Format(time.RFC3339) + ")"
		case snap.ReadAt.IsZero():
			telemetryErr = "GPU telemetry not read yet"
		default:
			telemetryErr = ""
		}
		if snap.Fresh {
			for _, t := range snap.GPUs {
				g := get(t.Index)
				g.UUID, g.Name, g.Telemetry, g.Up = t.UUID, t.Name, true, t.Up
				if !t.Up {
					continue
				}
				g.TotalBytes, g.FreeBytes = t.TotalBytes, t.FreeBytes
				if t.UsedBytes > g.SealedBytes {
					g.OtherBytes = t.UsedBytes - g.SealedBytes
				}
				g.HasECC, g.ECCCorrected, g.ECCUncorrected = t.HasECC, t.ECCCorrected, t.ECCUncorrected
				g.XIDs = xidCounts(t.XIDs)
			}
		}
	}
	if src.Policy != nil {
		for i, ok := range src.Policy.Compliant() {
			if ok {
				get(i).Policy = "compliant"
			} else {
				get(i).Policy = "blocked"
			}
		}
		for _, vi := range src.Policy.Violations() {
			if vi.GPU < 0 {
				continue // none concerns no single GPU today
			}
			g := get(vi.GPU)
			g.Policy = "blocked"
			g.Violations = append(g.Violations, Violation{Violation: vi.Violation, Details: cut(vi.Details)})
		}
	}
	out := make([]GPUView, 0, len(byIndex))
	for _, g := range byIndex {
		if g.TotalBytes > 0 {
			total := float64(g.TotalBytes)
			g.SealedPct = min(100, 100*float64(g.SealedBytes)/total)
			g.OtherPct = min(100-g.SealedPct, 100*float64(g.OtherBytes)/total)
			g.FreePct = min(100-g.SealedPct-g.OtherPct, 100*float64(g.FreeBytes)/total)
		}
		out = append(out, *g)
	}
	slices.SortFunc(out, func(a, b GPUView) int { return a.Index - b.Index })
	return out, telemetryErr
}

// shardRows returns at most MaxShardRows rows, failed shards first (then
// by id, as the sealer lists them), with the total and failed counts.
func shardRows(shards []sealer.ShardStatus, sched Schedule) (rows []ShardView, total, failed int) {
	ordered := make([]sealer.ShardStatus, 0, len(shards))
	for _, s := range shards {
		if s.State == sealer.StateFailed {
			ordered = append(ordered, s)
		}
	}
	failed = len(ordered)
	for _, s := range shards {
		if s.State != sealer.StateFailed {
			ordered = append(ordered, s)
		}
	}
	ordered = ordered[:min(len(ordered), MaxShardRows)]
	rows = make([]ShardView, len(ordered))
	for i, s := range ordered {
		rows[i] = ShardView{
			ID: s.Seal.ShardID, GPU: s.Seal.GPUDevice, Bytes: s.Seal.VRAMBytes, ModelRef: cut(s.Seal.ModelRef),
			State: s.State, LastResult: s.LastResult, LastVerified: s.LastVerifiedAt, LastChecked: s.LastCheckedAt,
			Origin: s.Origin, Leases: len(s.Leases),
		}
		if sched != nil {
			if due, ok := sched.NextDue(s.Seal.ShardID); ok {
				rows[i].NextDue = due
			}
		}
	}
	return rows, len(shards), failed
}

// Ages after which a pending backlog is no longer "shipping".
const (
	exportFailingAfter = time.Minute
	behindAfter        = 5 * time.Minute
)

func auditView(st audit.SpoolStats, now time.Time) AuditView {
	a := AuditView{
		Available: true, PendingRecords: st.PendingRecords, Bytes: st.Bytes, ExportFailures: st.ExportFailures,
		QuarantinedFiles: st.QuarantinedFiles, LastSeq: st.LastSeq, ShippedSeq: st.ShippedSeq,
	}
	if st.PendingRecords > 0 && !st.OldestPending.IsZero() && now.After(st.OldestPending) {
		a.OldestPendingAge = now.Sub(st.OldestPending)
	}
	for _, r := range audit.LossReasons() {
		n := st.Lost[r]
		a.Lost = append(a.Lost, Loss{Reason: r, Count: n})
		a.LostTotal += n
	}
	switch {
	case a.LostTotal > 0:
		a.State = "records lost"
	case st.PendingRecords == 0:
		a.State, a.OK = "up to date", true
	case a.OldestPendingAge >= exportFailingAfter && st.ExportFailures > 0:
		a.State = "export failing"
	case a.OldestPendingAge >= behindAfter:
		a.State = "behind"
	default:
		a.State, a.OK = "shipping", true
	}
	return a
}

// eventView summarises ev; the full mode adds its id and fields (but never
// the seal record and signature a vram.sealed event carries: the shards
// table and `list -o json` show those).
func eventView(ev audit.Event, mode Mode) EventView {
	h := ev.Head()
	e := EventView{Time: h.Time, Name: audit.NamePrefix + ev.Name(), Severity: ev.Severity().String(), GPU: -1}
	for _, f := range audit.AllFields(ev) {
		switch f.Key {
		case "shard_id":
			e.ShardID, _ = f.Value.(string)
			continue
		case "gpu_device":
			if n, ok := f.Value.(int64); ok {
				e.GPU = int(n)
			}
			continue
		case "seal", "seal_signature", "severity":
			continue
		}
		if mode == Full {
			if s, ok := f.Value.(string); ok {
				f.Value = cut(s)
			}
			e.Fields = append(e.Fields, f)
		}
	}
	if mode == Full {
		e.ID = h.ID
	}
	return e
}

// cut shortens s to maxText characters, marking the cut.
func cut(s string) string {
	if utf8.RuneCountInString(s) <= maxText {
		return s
	}
	r := []rune(s)
	return string(r[:maxText-1]) + "…"
}

// xidCounts lists a GPU's XID counts, lowest XID first.
func xidCounts(m map[uint64]uint64) []XIDCount {
	out := make([]XIDCount, 0, len(m))
	for x, n := range m {
		out = append(out, XIDCount{XID: x, Count: n})
	}
	slices.SortFunc(out, func(a, b XIDCount) int { return cmp.Compare(a.XID, b.XID) })
	return out
}
