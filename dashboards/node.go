package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/units"
)

func nodeDetail() *dashboard.DashboardBuilder {
	l := &layout{b: newDashboard(uidNode, "vramseal / Node and GPU detail",
		"One node's GPUs: memory, who uses them, sealed shards, verification work, and ECC errors and XIDs next to verification failures.", true)}
	l.row("GPUs",
		panel{kind: tablePanel, title: "GPUs", unit: units.Short, width: 12, height: 6,
			description: "GPUs the agent sees, with UUID, name and driver. A missing GPU: see the VramsealGPUDisappeared runbook; name \"vramseal simulated GPU\" on a production node means device: sim is configured.",
			queries:     []query{{expr: `vramseal_gpu_info{` + selGPU + `}`}}},
		panel{kind: tablePanel, title: "Agent", unit: units.Short, width: 12, height: 6,
			description: "Worker id, device kind (sim or cuda) and build of each agent. device=sim on a production node is a misconfiguration: nothing real is verified.",
			queries: []query{{expr: `vramseal_agent_info{` + selNode + `}` +
				` * on (job, instance) group_left (version, revision) vramseal_build_info{` + selNode + `}`}}},
		panel{kind: timeSeries, title: "GPU answering", unit: units.Short, width: 6, redBelow: ptr(1.0),
			description: "1 while the GPU answers telemetry reads, 0 when it is lost or failing. A 0: check nvidia-smi and dmesg for Xid errors (VramsealGPUDisappeared runbook).",
			queries:     []query{{expr: `vramseal_gpu_up{` + selGPU + `}`, legend: "{{instance}} GPU {{gpu}}"}}},
		panel{kind: timeSeries, title: "Processes on the GPU", unit: units.Short, width: 12,
			description: "Processes NVML reports on each GPU, by class: agent, consumer (a lease), owner (attached memory), foreign (none of these) and unknown (not matchable: the agent runs without the host's pid namespace, or cannot see the process). A foreign process on a GPU holding sealed shards shares the GPU with the weights: find it with metrics.process_labels or the vramseal.gpu.foreign_process event.",
			queries:     []query{{expr: `sum by (instance, gpu, class) (vramseal_gpu_processes{` + selGPU + `})`, legend: "{{class}} {{instance}} GPU {{gpu}}"}}},
		panel{kind: timeSeries, title: "GPU memory by process class", unit: units.BytesIEC, width: 12,
			description: "GPU memory held by the processes on each GPU, by class. Memory held by foreign or unknown processes is memory the agent's seals do not cover: check who holds it (metrics.process_labels, vramseal_gpu_pod_info) before trusting the GPU with sealed weights.",
			queries:     []query{{expr: `sum by (instance, gpu, class) (vramseal_gpu_process_memory_bytes{` + selGPU + `})`, legend: "{{class}} {{instance}} GPU {{gpu}}"}}},
		panel{kind: timeSeries, title: "GPU memory", unit: units.BytesIEC, width: 18,
			description: "Total, used and free GPU memory per GPU (NVML). Used near total blocks new seals (insufficient_vram); a total that changes means the GPU was reset or replaced.",
			queries: []query{
				{expr: `vramseal_gpu_memory_total_bytes{` + selGPU + `}`, legend: "total {{instance}} GPU {{gpu}}"},
				{expr: `vramseal_gpu_memory_used_bytes{` + selGPU + `}`, legend: "used {{instance}} GPU {{gpu}}"},
				{expr: `vramseal_gpu_memory_free_bytes{` + selGPU + `}`, legend: "free {{instance}} GPU {{gpu}}"},
			}},
	)
	l.row("Shards",
		panel{kind: tablePanel, title: "Sealed shards", unit: units.DatetimeISO, width: 24,
			description: "Each sealed shard with its digest, model reference, origin (sealed by the agent, or attached: an engine's own memory) and the time of its last successful verification. A time older than three verification intervals is stale (VramsealVerificationStale runbook).",
			queries: []query{{expr: `1000 * (vramseal_shard_last_verified_timestamp_seconds{` + selShard + `}` +
				` * on (job, instance, shard_id, gpu) group_left (digest, model_ref, origin) vramseal_shard_info{` + selShard + `})`}}},
		panel{kind: tablePanel, title: "Last verification result", unit: units.Short, width: 24, height: 6, redBelow: ptr(1.0),
			description: "1 where the shard was intact at its last verification, 0 where it failed. A 0 is critical: follow the VramsealSealVerificationFailed runbook.",
			queries:     []query{{expr: `vramseal_shard_verified{` + selShard + `}`}}},
	)
	l.row("Verification",
		panel{kind: timeSeries, title: "Verifications by result", unit: units.OpsPerSecond, width: 8,
			description: "Verifications per second by result. Anything but ok is bad: digest_mismatch or signature_invalid means tampering or memory faults, allocation_missing a GPU reset, error a read failure.",
			queries: []query{{expr: `sum by (instance, gpu, result) (rate(vramseal_verifications_total{` + selGPU + `}[$__rate_interval]))`,
				legend: "{{instance}} GPU {{gpu}} {{result}}"}}},
		panel{kind: timeSeries, title: "Verification duration", unit: units.Seconds, width: 8,
			description: "p50 and p99 time to verify one shard. Rising with the same shards: the GPU or the bandwidth budget is the bottleneck; if it nears the interval, verification falls behind: check verify.max_bytes_per_second and the GPU load.",
			queries: []query{
				{expr: `histogram_quantile(0.5, sum by (instance, gpu, le) (rate(vramseal_verification_duration_seconds_bucket{` + selGPU + `}[$__rate_interval])))`, legend: "p50 {{instance}} GPU {{gpu}}"},
				{expr: `histogram_quantile(0.99, sum by (instance, gpu, le) (rate(vramseal_verification_duration_seconds_bucket{` + selGPU + `}[$__rate_interval])))`, legend: "p99 {{instance}} GPU {{gpu}}"},
			}},
		panel{kind: timeSeries, title: "Verified bytes", unit: units.BytesPerSecondIEC, width: 8,
			description: "VRAM bytes re-read and hashed per second. Above verify.max_bytes_per_second the budget is not applied; far below sealed bytes / interval, verification cannot keep up: check the budget and the VramsealVerificationStale runbook.",
			queries: []query{{expr: `sum by (instance, gpu) (rate(vramseal_verified_bytes_total{` + selGPU + `}[$__rate_interval]))`,
				legend: "{{instance}} GPU {{gpu}}"}}},
		panel{kind: timeSeries, title: "ECC errors and XIDs next to verification failures", unit: units.Short, width: 12,
			description: "ECC errors, critical XIDs (NVML events; 0 where none came) and failed verifications per GPU in each interval. Uncorrected ECC errors or a hardware XID (48, 63, 64, 79, 94, 95) with failures on the same GPU point at failing hardware; failures with neither point at tampering: follow the VramsealSealVerificationFailed runbook (and VramsealGPUCriticalXID for the XIDs).",
			queries: []query{
				{expr: `sum by (instance, gpu, type) (increase(vramseal_gpu_ecc_errors_total{` + selGPU + `}[$__rate_interval]))`, legend: "ECC {{type}} {{instance}} GPU {{gpu}}"},
				{expr: `sum by (instance, gpu, xid) (increase(vramseal_gpu_xid_errors_total{` + selGPU + `}[$__rate_interval]))` +
					` or on (instance, gpu) (0 * group by (instance, gpu) (vramseal_gpu_up{` + selGPU + `}))`, legend: "XID {{xid}} {{instance}} GPU {{gpu}}"},
				{expr: `sum by (instance, gpu) (increase(vramseal_verifications_total{` + selGPU + `, result!="ok"}[$__rate_interval]))`, legend: "failed verifications {{instance}} GPU {{gpu}}"},
			}},
		panel{kind: timeSeries, title: "Seals and allocations by result", unit: units.OpsPerSecond, width: 12,
			description: "Seals and VRAM allocations per second by result. insufficient_vram: the GPU is full; content_digest_mismatch: the file is not the published one; error: see the agent log.",
			queries: []query{
				{expr: `sum by (instance, gpu, result) (rate(vramseal_seals_total{` + selGPU + `}[$__rate_interval]))`, legend: "seal {{result}} {{instance}} GPU {{gpu}}"},
				{expr: `sum by (instance, gpu, result) (rate(vramseal_allocations_total{` + selGPU + `}[$__rate_interval]))`, legend: "allocation {{result}} {{instance}} GPU {{gpu}}"},
			}},
	)
	l.row("Collectors",
		panel{kind: statPanel, title: "Collector success", unit: units.Short, width: 12, height: 5, redBelow: ptr(1.0),
			description: "1 when the collector succeeded at the last scrape. A 0 for gpu means the NVML memory and ECC readings are missing: see the VramsealCollectorFailing runbook.",
			queries:     []query{{expr: `vramseal_collector_success{` + selNode + `}`, legend: "{{instance}} {{collector}}"}}},
		panel{kind: timeSeries, title: "Collector duration", unit: units.Seconds, width: 12, height: 5,
			description: "Time each collector takes per scrape. Approaching the scrape timeout: the scrape fails as a whole; look at NVML latency.",
			queries:     []query{{expr: `vramseal_collector_duration_seconds{` + selNode + `}`, legend: "{{instance}} {{collector}}"}}},
	)
	return l.b
}
