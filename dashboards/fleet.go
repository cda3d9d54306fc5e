package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/units"
)

func fleetOverview() *dashboard.DashboardBuilder {
	l := &layout{b: newDashboard(uidFleet, "vramseal / Fleet overview",
		"Every node running vramseal-agent: GPUs, VRAM, sealed shards, verification, policy and the audit pipeline.", true)}
	l.row("Fleet",
		panel{kind: statPanel, title: "Agents up", unit: units.Short, width: 4, height: 5,
			description: "vramseal-agents Prometheus scrapes successfully. Fewer than your GPU nodes: a node runs unverified; see the VramsealAgentDown and VramsealAgentAbsent runbooks.",
			queries:     []query{{expr: `sum(up{` + selNode + `})`}}},
		panel{kind: statPanel, title: "GPUs", unit: units.Short, width: 4, height: 5,
			description: "GPUs the agents report. A drop means a GPU fell off the bus or a node left: see the VramsealGPUDisappeared runbook.",
			queries:     []query{{expr: `count(vramseal_gpu_info{` + selGPU + `})`}}},
		panel{kind: statPanel, title: "GPUs not answering", unit: units.Short, width: 4, height: 5, redAt: ptr(1.0),
			description: "GPUs the agents report lost or failing (vramseal_gpu_up 0). Above 0: the shards on them are gone; see the VramsealGPUDisappeared runbook.",
			queries:     []query{{expr: `count(vramseal_gpu_up{` + selGPU + `} == 0) or vector(0)`}}},
		panel{kind: statPanel, title: "Sealed shards", unit: units.Short, width: 4, height: 5,
			description: "Shards currently sealed in VRAM. Fewer than declared: a declared shard could not be sealed (missing file, digest mismatch, no room); check the agent log and vramseal_seals_total by result.",
			queries:     []query{{expr: `sum(vramseal_sealed_shards{` + selGPU + `})`}}},
		panel{kind: statPanel, title: "Sealed bytes", unit: units.BytesIEC, width: 4, height: 5,
			description: "Bytes of model weights sealed in VRAM across the selection. Unexpected changes mean shards were released or sealed outside your rollout: check the vram.sealed and vram.deallocated events.",
			queries:     []query{{expr: `sum(vramseal_sealed_bytes{` + selGPU + `})`}}},
		panel{kind: statPanel, title: "Shards failing verification", unit: units.Short, width: 4, height: 5, redAt: ptr(1.0),
			description: "Shards whose last verification failed. Anything above 0 is critical: the weights in VRAM changed. Drain the GPU and follow the VramsealSealVerificationFailed runbook.",
			queries:     []query{{expr: `count(vramseal_shard_verified{` + selShard + `} == 0) or vector(0)`}}},
		panel{kind: statPanel, title: "GPUs violating policy", unit: units.Short, width: 4, height: 5, redAt: ptr(1.0),
			description: "GPUs that fail the VRAM-only policy and get no shards. Above 0: see the violation event and the VramsealPolicyViolated runbook.",
			queries:     []query{{expr: `count(vramseal_policy_compliant{` + selGPU + `} == 0) or vector(0)`}}},
	)
	l.row("VRAM",
		panel{kind: timeSeries, title: "VRAM used by node and GPU", unit: units.BytesIEC, width: 8,
			description: "GPU memory in use (NVML), sealed shards and everything else. Near the total, new shards fail with insufficient_vram: check which processes hold memory (nvidia-smi), free memory or move shards.",
			queries:     []query{{expr: `vramseal_gpu_memory_used_bytes{` + selGPU + `}`, legend: "{{instance}} GPU {{gpu}}"}}},
		panel{kind: timeSeries, title: "VRAM free by node and GPU", unit: units.BytesIEC, width: 8,
			description: "GPU memory free (NVML). Close to 0: sealing more shards on that GPU fails; check vramseal_allocations_total by result and rebalance shards across GPUs.",
			queries:     []query{{expr: `vramseal_gpu_memory_free_bytes{` + selGPU + `}`, legend: "{{instance}} GPU {{gpu}}"}}},
		panel{kind: timeSeries, title: "Sealed bytes by node and GPU", unit: units.BytesIEC, width: 8,
			description: "Bytes the agent has sealed per GPU. A sudden drop without a release you planned: look for vram.deallocated events and a lost GPU.",
			queries:     []query{{expr: `vramseal_sealed_bytes{` + selGPU + `}`, legend: "{{instance}} GPU {{gpu}}"}}},
	)
	l.row("Integrity",
		panel{kind: tablePanel, title: "Shards whose last verification failed", unit: units.Short, width: 12, redBelow: ptr(1.0),
			description: "Node, GPU and shard of every sealed shard whose last verification failed (value 0). Any row is critical: drain that GPU, keep the evidence, follow the VramsealSealVerificationFailed runbook. Empty is good.",
			queries: []query{{expr: `(vramseal_shard_verified{` + selShard + `} == 0)` +
				` * on (job, instance) group_left (worker_id) vramseal_agent_info{` + selNode + `}`}}},
		panel{kind: timeSeries, title: "Verification age vs interval", unit: units.Seconds, width: 12,
			description: "Seconds since each shard's last successful verification, next to the configured interval. A line above three intervals is stale: check the verification rate and bandwidth budget (VramsealVerificationStale runbook).",
			queries: []query{
				{expr: `time() - vramseal_shard_last_verified_timestamp_seconds{` + selShard + `}`, legend: "{{instance}} {{shard_id}}"},
				{expr: `max by (instance) (vramseal_verify_interval_seconds{` + selNode + `})`, legend: "interval {{instance}}"},
			}},
		panel{kind: timeSeries, title: "Shards overdue for verification", unit: units.Short, width: 12,
			description: "Shards past their due verification time. Persistently above 0: verification cannot keep up (budget too low, read errors); see the VramsealVerificationStale runbook.",
			queries:     []query{{expr: `vramseal_verification_overdue_shards{` + selGPU + `}`, legend: "{{instance}} GPU {{gpu}}"}}},
		panel{kind: tablePanel, title: "Policy compliance", unit: units.Short, width: 12, redBelow: ptr(1.0),
			description: "1 where a GPU satisfies the policy, 0 where it violates it (it then gets no shards). For a 0: read the policy.violation event and follow the VramsealPolicyViolated runbook.",
			queries:     []query{{expr: `vramseal_policy_compliant{` + selGPU + `}`}}},
	)
	l.row("Audit",
		panel{kind: timeSeries, title: "Audit backlog", unit: units.Short, width: 8,
			description: "Audit records in the local spool not yet acknowledged by the OTel Collector. Growing: the collector is unreachable or too slow (VramsealAuditBacklogGrowing runbook).",
			queries:     []query{{expr: `vramseal_audit_spool_pending_records{` + selNode + `}`, legend: "{{instance}}"}}},
		panel{kind: timeSeries, title: "Oldest pending audit record age", unit: units.Seconds, width: 8,
			description: "Age of the oldest record waiting to be shipped (0 when nothing waits). Above 15 minutes: exports are failing or too slow; see the VramsealAuditBacklogGrowing runbook.",
			queries: []query{{expr: `(time() - vramseal_audit_spool_oldest_pending_timestamp_seconds{` + selNode + `})` +
				` * on (job, instance) (vramseal_audit_spool_pending_records{` + selNode + `} > bool 0)`, legend: "{{instance}}"}}},
		panel{kind: timeSeries, title: "Audit export failures", unit: units.OpsPerSecond, width: 8,
			description: "Failed exports per second to the OTel Collector. Sustained above 0: check the collector and OTEL_EXPORTER_OTLP_ENDPOINT (VramsealAuditExportFailing runbook).",
			queries:     []query{{expr: `rate(vramseal_audit_export_failures_total{` + selNode + `}[$__rate_interval])`, legend: "{{instance}}"}}},
	)
	return l.b
}
