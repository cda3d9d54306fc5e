package collector

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// ControlCounters counts what the control API refuses; give it to the
// control server (its Observer) and to Options.Control. It is safe for
// concurrent use.
type ControlCounters struct {
	rateLimited atomic.Uint64
}

// RateLimited counts one call refused by the per-caller rate limit.
func (c *ControlCounters) RateLimited() { c.rateLimited.Add(1) }

// controlCollector exports the control API's counters.
type controlCollector struct {
	counters    *ControlCounters
	rateLimited *prometheus.Desc
}

func newControlCollector(opts Options) *controlCollector {
	return &controlCollector{
		counters: opts.Control,
		rateLimited: prometheus.NewDesc(Namespace+"_control_rate_limited_total",
			"Control API calls refused with 429 because their caller (uid) went over control.rate_limit.", nil, nil),
	}
}

func (c *controlCollector) describe(ch chan<- *prometheus.Desc) { ch <- c.rateLimited }

func (c *controlCollector) update(ch chan<- prometheus.Metric) error {
	if c.counters == nil {
		return nil
	}
	ch <- prometheus.MustNewConstMetric(c.rateLimited, prometheus.CounterValue, float64(c.counters.rateLimited.Load()))
	return nil
}
