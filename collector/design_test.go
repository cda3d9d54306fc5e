package collector_test

import (
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/vramseal/vramseal/collector"
	"github.com/vramseal/vramseal/policy"
	"github.com/vramseal/vramseal/sealer"
)

// designMetrics is the metric table the project promises (docs/metrics.md): dashboards and alert
// rules are written against exactly these names, types and labels.
var designMetrics = map[string]struct {
	typ    dto.MetricType
	labels string
}{
	"vramseal_build_info":                                   {dto.MetricType_GAUGE, "goversion,revision,version"},
	"vramseal_agent_info":                                   {dto.MetricType_GAUGE, "device,worker_id"},
	"vramseal_gpu_info":                                     {dto.MetricType_GAUGE, "driver_version,gpu,name,pci_bus_id,uuid"},
	"vramseal_gpu_memory_total_bytes":                       {dto.MetricType_GAUGE, "gpu,uuid"},
	"vramseal_gpu_memory_used_bytes":                        {dto.MetricType_GAUGE, "gpu,uuid"},
	"vramseal_gpu_memory_free_bytes":                        {dto.MetricType_GAUGE, "gpu,uuid"},
	"vramseal_gpu_ecc_errors_total":                         {dto.MetricType_COUNTER, "gpu,type,uuid"},
	"vramseal_sealed_shards":                                {dto.MetricType_GAUGE, "gpu"},
	"vramseal_sealed_bytes":                                 {dto.MetricType_GAUGE, "gpu"},
	"vramseal_shard_info":                                   {dto.MetricType_GAUGE, "digest,gpu,model_ref,origin,shard_id"},
	"vramseal_shard_verified":                               {dto.MetricType_GAUGE, "gpu,shard_id"},
	"vramseal_shard_last_verified_timestamp_seconds":        {dto.MetricType_GAUGE, "gpu,shard_id"},
	"vramseal_verify_interval_seconds":                      {dto.MetricType_GAUGE, ""},
	"vramseal_verification_overdue_shards":                  {dto.MetricType_GAUGE, "gpu"},
	"vramseal_seals_total":                                  {dto.MetricType_COUNTER, "gpu,result"},
	"vramseal_verifications_total":                          {dto.MetricType_COUNTER, "gpu,result"},
	"vramseal_verification_duration_seconds":                {dto.MetricType_HISTOGRAM, "gpu"},
	"vramseal_verified_bytes_total":                         {dto.MetricType_COUNTER, "gpu"},
	"vramseal_allocations_total":                            {dto.MetricType_COUNTER, "gpu,result"},
	"vramseal_policy_compliant":                             {dto.MetricType_GAUGE, "gpu,policy"},
	"vramseal_audit_events_total":                           {dto.MetricType_COUNTER, "event"},
	"vramseal_audit_emit_failures_total":                    {dto.MetricType_COUNTER, "event"},
	"vramseal_audit_spool_pending_records":                  {dto.MetricType_GAUGE, ""},
	"vramseal_audit_spool_bytes":                            {dto.MetricType_GAUGE, ""},
	"vramseal_audit_spool_oldest_pending_timestamp_seconds": {dto.MetricType_GAUGE, ""},
	"vramseal_audit_spool_quarantined_files":                {dto.MetricType_GAUGE, ""},
	"vramseal_audit_events_lost_total":                      {dto.MetricType_COUNTER, "reason"},
	"vramseal_audit_export_failures_total":                  {dto.MetricType_COUNTER, ""},
	"vramseal_collector_success":                            {dto.MetricType_GAUGE, "collector"},
	"vramseal_collector_duration_seconds":                   {dto.MetricType_GAUGE, "collector"},
}

// TestDesignMetricTable checks every metric of that table against a
// full scrape: name, type and label names.
func TestDesignMetricTable(t *testing.T) {
	mfs, err := fullEnv(t).reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	served := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		served[mf.GetName()] = mf
	}
	for name, want := range designMetrics {
		mf, ok := served[name]
		if !ok {
			t.Errorf("%s: not served", name)
			continue
		}
		if mf.GetType() != want.typ {
			t.Errorf("%s: type %s, want %s", name, mf.GetType(), want.typ)
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, lp := range m.GetLabel() {
				ls = append(ls, lp.GetName())
			}
			slices.Sort(ls)
			if got := strings.Join(ls, ","); got != want.labels {
				t.Errorf("%s: labels %q, want %q", name, got, want.labels)
				break
			}
		}
	}
}

// The sources the agent wires implement the collectors' interfaces.
var (
	_ collector.Compliance = (*policy.Policy)(nil)
	_ collector.SealState  = (*sealer.Sealer)(nil)
)
