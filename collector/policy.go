package collector

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vramseal/vramseal/audit"
)

// Compliance is the VRAM-only policy's verdict: per GPU, whether it may
// take shards. It must be safe for concurrent use and cheap.
type Compliance interface {
	Compliant() map[int]bool
}

// policyCollector exports vramseal_policy_compliant.
type policyCollector struct {
	policy Compliance
	desc   *prometheus.Desc
}

func newPolicyCollector(o Options) *policyCollector {
	return &policyCollector{
		policy: o.Policy,
		desc: prometheus.NewDesc(Namespace+"_policy_compliant",
			"Whether the GPU complies with the policy (1) or violates it and gets no shards (0).", []string{"policy", "gpu"}, nil),
	}
}

func (c *policyCollector) describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *policyCollector) update(ch chan<- prometheus.Metric) error {
	if c.policy == nil {
		return nil
	}
	m := c.policy.Compliant()
	gpus := make([]int, 0, len(m))
	for g := range m {
		gpus = append(gpus, g)
	}
	slices.Sort(gpus)
	for _, g := range gpus {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, boolGauge(m[g]), audit.PolicyVRAMOnly, gpuLabel(g))
	}
	return nil
}
