package collector

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/version"
)

// infoCollector exports vramseal_build_info and vramseal_agent_info.
type infoCollector struct {
	build, agent     prometheus.Metric
	buildD, agentD   *prometheus.Desc
	workerID, device string
}

func newInfoCollector(o Options) *infoCollector {
	c := &infoCollector{
		buildD: prometheus.NewDesc(Namespace+"_build_info",
			"The agent's build, always 1: version, revision and Go version.", []string{"version", "revision", "goversion"}, nil),
		agentD: prometheus.NewDesc(Namespace+"_agent_info",
			"This agent, always 1: its worker id and its device backend (sim for the simulated GPU, cuda).", []string{"worker_id", "device"}, nil),
		workerID: o.WorkerID, device: o.Device,
	}
	c.build = prometheus.MustNewConstMetric(c.buildD, prometheus.GaugeValue, 1, version.Version, version.GetRevision(), version.GoVersion)
	c.agent = prometheus.MustNewConstMetric(c.agentD, prometheus.GaugeValue, 1, o.WorkerID, o.Device)
	return c
}

func (c *infoCollector) describe(ch chan<- *prometheus.Desc) {
	ch <- c.buildD
	ch <- c.agentD
}

func (c *infoCollector) update(ch chan<- prometheus.Metric) error {
	ch <- c.build
	ch <- c.agent
	return nil
}
