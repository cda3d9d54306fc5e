package collector

import (
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/sealer"
)

// SealState is the sealer's state read at each scrape; *sealer.Sealer
// implements it. Both calls must be safe for concurrent use and cheap.
type SealState interface {
	// GPUs returns the device indexes.
	GPUs() []int
	// List returns every sealed shard.
	List() []sealer.ShardStatus
}

// Schedule is the verification schedule, as the metrics need it.
type Schedule interface {
	// OverdueShards returns, per GPU, the number of shards past their due
	// time. GPUs not in the map have none.
	OverdueShards() map[int]int
}

var _ SealState = (*sealer.Sealer)(nil)

// Results, as the sealer reports them to its Observer.
var (
	sealResults         = []string{sealer.ResultOK, audit.ReasonContentDigestMismatch, audit.ReasonInsufficientVRAM, sealer.ResultError}
	verificationResults = []string{sealer.ResultOK, audit.ReasonDigestMismatch, audit.ReasonSignatureInvalid, audit.ReasonAllocationMissing, sealer.ResultError}
	allocationResults   = []string{sealer.ResultOK, audit.ReasonInsufficientVRAM, audit.ReasonPolicyBlocked, sealer.ResultError}
)

// VerificationBuckets are the bounds of the verification duration
// histogram: from a small shard on a GPU (10 ms) to a large one hashed on a
// busy host under a bandwidth budget (5 min).
var VerificationBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// unknownGPU labels outcomes the sealer reports for a GPU index it does not
// have (a consumer presenting a seal record that names another GPU), so a
// caller cannot create series at will.
const unknownGPU = "unknown"

// Observer counts the sealer's outcomes; give it to sealer.Config.Observer
// and to Options.Observer. Every known GPU's series exist at zero from the
// start. It is safe for concurrent use.
type Observer struct {
	gpus          map[int]bool
	seals         *prometheus.CounterVec
	verifications *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	verifiedBytes *prometheus.CounterVec
	allocations   *prometheus.CounterVec
}

var _ sealer.Observer = (*Observer)(nil)

// NewObserver returns an Observer for the GPUs with these indexes.
func NewObserver(gpus []int) *Observer {
	o := &Observer{
		gpus: map[int]bool{},
		seals: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "seals_total",
			Help: "Seal attempts, by GPU and result (ok, content_digest_mismatch, insufficient_vram, error)."}, []string{"gpu", "result"}),
		verifications: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "verifications_total",
			Help: "Verifications of sealed shards, by GPU and result (ok, digest_mismatch, signature_invalid, allocation_missing, error). Cancelled ones are not counted."}, []string{"gpu", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "verification_duration_seconds",
			Help: "How long verifications took, by GPU, whatever their result.", Buckets: VerificationBuckets}, []string{"gpu"}),
		verifiedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "verified_bytes_total",
			Help: "Bytes of VRAM verified intact, by GPU."}, []string{"gpu"}),
		allocations: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "allocations_total",
			Help: "VRAM allocations for shards, by GPU and result (ok, insufficient_vram, policy_blocked, error)."}, []string{"gpu", "result"}),
	}
	for _, g := range gpus {
		o.gpus[g] = true
		l := gpuLabel(g)
		for _, r := range sealResults {
			o.seals.WithLabelValues(l, r)
		}
		for _, r := range verificationResults {
			o.verifications.WithLabelValues(l, r)
		}
		for _, r := range allocationResults {
			o.allocations.WithLabelValues(l, r)
		}
		o.duration.WithLabelValues(l)
		o.verifiedBytes.WithLabelValues(l)
	}
	return o
}

func (o *Observer) gpu(i int) string {
	if !o.gpus[i] {
		return unknownGPU
	}
	return gpuLabel(i)
}

// known maps a result outside the documented set to "error", so the
// result label keeps its documented values.
func known(result string, set []string) string {
	if slices.Contains(set, result) {
		return result
	}
	return sealer.ResultError
}

// SealDone implements sealer.Observer.
func (o *Observer) SealDone(gpu int, result string) {
	o.seals.WithLabelValues(o.gpu(gpu), known(result, sealResults)).Inc()
}

// AllocationDone implements sealer.Observer.
func (o *Observer) AllocationDone(gpu int, result string) {
	o.allocations.WithLabelValues(o.gpu(gpu), known(result, allocationResults)).Inc()
}

// VerificationDone implements sealer.Observer.
func (o *Observer) VerificationDone(gpu int, result string, d time.Duration, bytes uint64) {
	g := o.gpu(gpu)
	o.verifications.WithLabelValues(g, known(result, verificationResults)).Inc()
	o.duration.WithLabelValues(g).Observe(d.Seconds())
	if result == sealer.ResultOK {
		o.verifiedBytes.WithLabelValues(g).Add(float64(bytes))
	}
}

func (o *Observer) collectors() []prometheus.Collector {
	return []prometheus.Collector{o.seals, o.verifications, o.duration, o.verifiedBytes, o.allocations}
}

// sealCollector reads the sealer's state at each scrape, so a shard's
// series exist exactly while it is sealed.
type sealCollector struct {
	state          SealState
	obs            *Observer
	schedule       Schedule
	verifyInterval time.Duration

	shardInfo, shardVerified, shardLastVerified *prometheus.Desc
	shardLeases                                 *prometheus.Desc
	sealedShards, sealedBytes                   *prometheus.Desc
	interval, overdue                           *prometheus.Desc

	// cache keeps each shard's metrics between scrapes, rebuilt only when
	// a value changes, so a scrape of many shards allocates little.
	mu    sync.Mutex
	cache map[string]*shardMetrics
	gen   uint64
}

// shardMetrics are one shard's series as of its last change.
type shardMetrics struct {
	seal     sealer.Seal
	intact   bool
	last     time.Time
	info     prometheus.Metric
	verified prometheus.Metric
	lastTS   prometheus.Metric
	nLeases  int
	leases   prometheus.Metric
	gen      uint64 // the scrape that last saw the shard
}

func newSealCollector(o Options) *sealCollector {
	return &sealCollector{
		state: o.Sealer, obs: o.Observer, schedule: o.Schedule, verifyInterval: o.VerifyInterval,
		shardInfo: prometheus.NewDesc(Namespace+"_shard_info",
			"A sealed shard, always 1, with its seal digest, model reference and origin (sealed: loaded by the agent; attached: an engine's own memory, sealed in place).", []string{"shard_id", "gpu", "digest", "model_ref", "origin"}, nil),
		shardVerified: prometheus.NewDesc(Namespace+"_shard_verified",
			"Whether the shard was intact at its last verification (1; also before the first, as sealed) or not (0: altered, allocation missing, seal invalid or unreadable).", []string{"shard_id", "gpu"}, nil),
		shardLastVerified: prometheus.NewDesc(Namespace+"_shard_last_verified_timestamp_seconds",
			"When the shard was last verified intact (its seal time until its first successful verification).", []string{"shard_id", "gpu"}, nil),
		shardLeases: prometheus.NewDesc(Namespace+"_shard_leases",
			"Consumer leases open on the shard: processes that hold its memory through the consumer socket.", []string{"shard_id", "gpu"}, nil),
		sealedShards: prometheus.NewDesc(Namespace+"_sealed_shards", "Shards sealed on the GPU.", []string{"gpu"}, nil),
		sealedBytes:  prometheus.NewDesc(Namespace+"_sealed_bytes", "Bytes of VRAM held by the shards sealed on the GPU.", []string{"gpu"}, nil),
		interval:     prometheus.NewDesc(Namespace+"_verify_interval_seconds", "The configured interval between verifications of a shard.", nil, nil),
		overdue:      prometheus.NewDesc(Namespace+"_verification_overdue_shards", "Shards on the GPU past the time their next verification was due.", []string{"gpu"}, nil),
		cache:        map[string]*shardMetrics{},
	}
}

func (c *sealCollector) describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.shardInfo, c.shardVerified, c.shardLastVerified, c.shardLeases, c.sealedShards, c.sealedBytes, c.interval, c.overdue} {
		ch <- d
	}
	if c.obs != nil {
		for _, m := range c.obs.collectors() {
			m.Describe(ch)
		}
	}
}

func (c *sealCollector) update(ch chan<- prometheus.Metric) error {
	if c.obs != nil {
		for _, m := range c.obs.collectors() {
			m.Collect(ch)
		}
	}
	if c.verifyInterval > 0 {
		ch <- prometheus.MustNewConstMetric(c.interval, prometheus.GaugeValue, c.verifyInterval.Seconds())
	}
	if c.state == nil {
		return nil
	}
	gpus := c.state.GPUs()
	shards := make(map[int]int, len(gpus))
	bytes := make(map[int]uint64, len(gpus))
	c.mu.Lock()
	c.gen++
	for _, st := range c.state.List() {
		shards[st.Seal.GPUDevice]++
		bytes[st.Seal.GPUDevice] += st.Seal.VRAMBytes
		m := c.shard(st)
		ch <- m.info
		ch <- m.verified
		ch <- m.lastTS
		ch <- m.leases
	}
	for id, m := range c.cache {
		if m.gen != c.gen {
			delete(c.cache, id) // released
		}
	}
	c.mu.Unlock()
	var overdue map[int]int
	if c.schedule != nil {
		overdue = c.schedule.OverdueShards()
	}
	for _, g := range gpus {
		l := gpuLabel(g)
		ch <- prometheus.MustNewConstMetric(c.sealedShards, prometheus.GaugeValue, float64(shards[g]), l)
		ch <- prometheus.MustNewConstMetric(c.sealedBytes, prometheus.GaugeValue, float64(bytes[g]), l)
		if c.schedule != nil {
			ch <- prometheus.MustNewConstMetric(c.overdue, prometheus.GaugeValue, float64(overdue[g]), l)
		}
	}
	return nil
}

// shard returns the shard's cached metrics, rebuilding those that changed.
// c.mu must be held.
func (c *sealCollector) shard(st sealer.ShardStatus) *shardMetrics {
	s := st.Seal
	intact := st.State == sealer.StateSealed && (st.LastResult == "" || st.LastResult == sealer.ResultOK)
	last := st.LastVerifiedAt
	if last.IsZero() {
		last = s.SealedAt
	}
	gpu := gpuLabel(s.GPUDevice)
	m := c.cache[s.ShardID]
	if m == nil || m.seal != s {
		m = &shardMetrics{seal: s}
		m.info = prometheus.MustNewConstMetric(c.shardInfo, prometheus.GaugeValue, 1, s.ShardID, gpu, s.Digest, s.ModelRef, st.Origin)
		c.cache[s.ShardID] = m
	}
	if m.verified == nil || m.intact != intact {
		m.intact = intact
		m.verified = prometheus.MustNewConstMetric(c.shardVerified, prometheus.GaugeValue, boolGauge(intact), s.ShardID, gpu)
	}
	if m.lastTS == nil || !m.last.Equal(last) {
		m.last = last
		m.lastTS = prometheus.MustNewConstMetric(c.shardLastVerified, prometheus.GaugeValue, unixSeconds(last), s.ShardID, gpu)
	}
	if m.leases == nil || m.nLeases != len(st.Leases) {
		m.nLeases = len(st.Leases)
		m.leases = prometheus.MustNewConstMetric(c.shardLeases, prometheus.GaugeValue, float64(m.nLeases), s.ShardID, gpu)
	}
	m.gen = c.gen
	return m
}

func unixSeconds(t time.Time) float64 {
	return float64(t.UnixNano()) / 1e9
}
