package collector

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ConfigReloads is the outcome of the agent's configuration reloads (on
// SIGHUP or when the file changes), exported as
// vramseal_config_last_reload_successful,
// vramseal_config_last_reload_success_timestamp_seconds and
// vramseal_config_restart_required. The load at start-up counts as a
// successful reload, as Prometheus counts its own. It is safe for
// concurrent use.
type ConfigReloads struct {
	mu          sync.Mutex
	ok          bool
	lastSuccess time.Time
	restart     bool
}

// NewConfigReloads returns the state after the start-up load at loadedAt.
func NewConfigReloads(loadedAt time.Time) *ConfigReloads {
	return &ConfigReloads{ok: true, lastSuccess: loadedAt}
}

// Succeeded records a reload applied at at; restartRequired says whether
// the file also changed keys that only a restart applies.
func (r *ConfigReloads) Succeeded(at time.Time, restartRequired bool) {
	r.mu.Lock()
	r.ok, r.lastSuccess, r.restart = true, at, restartRequired
	r.mu.Unlock()
}

// Failed records a reload refused (the file did not load); the running
// configuration, and what restart it needs, are unchanged.
func (r *ConfigReloads) Failed() {
	r.mu.Lock()
	r.ok = false
	r.mu.Unlock()
}

func (r *ConfigReloads) read() (ok bool, lastSuccess time.Time, restart bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ok, r.lastSuccess, r.restart
}

// configCollector exports ConfigReloads.
type configCollector struct {
	r                  *ConfigReloads
	okD, tsD, restartD *prometheus.Desc
}

func newConfigCollector(r *ConfigReloads) *configCollector {
	return &configCollector{r: r,
		okD: prometheus.NewDesc(Namespace+"_config_last_reload_successful",
			"Whether the last configuration reload (SIGHUP, or a change of the file) succeeded (1) or was refused and the running configuration kept (0).", nil, nil),
		tsD: prometheus.NewDesc(Namespace+"_config_last_reload_success_timestamp_seconds",
			"When the configuration was last loaded successfully (at start-up or by a reload), in seconds since the epoch.", nil, nil),
		restartD: prometheus.NewDesc(Namespace+"_config_restart_required",
			"1 when the loaded configuration file changes keys that only a restart applies (a reload applies the shard list only), else 0.", nil, nil),
	}
}

func (c *configCollector) describe(ch chan<- *prometheus.Desc) {
	ch <- c.okD
	ch <- c.tsD
	ch <- c.restartD
}

func (c *configCollector) update(ch chan<- prometheus.Metric) error {
	ok, ts, restart := c.r.read()
	ch <- prometheus.MustNewConstMetric(c.okD, prometheus.GaugeValue, boolFloat(ok))
	ch <- prometheus.MustNewConstMetric(c.tsD, prometheus.GaugeValue, float64(ts.UnixNano())/1e9)
	ch <- prometheus.MustNewConstMetric(c.restartD, prometheus.GaugeValue, boolFloat(restart))
	return nil
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
