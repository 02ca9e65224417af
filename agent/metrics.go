package agent

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"dcroll/distrib"
	"dcroll/distrib/mlock"
	"dcroll/internal/obs"
	"dcroll/znodes"
)

// metrics are the agent's Prometheus metrics, in a registry of its own (no
// globals: several agents can live in one test process). The registry also
// holds dcroll_build_info and the Go and process collectors (obs).
type metrics struct {
	reg       *prometheus.Registry
	healthy   *prometheus.GaugeVec
	decisions *prometheus.CounterVec
	steps     *prometheus.CounterVec
	reloads   *prometheus.CounterVec
	// stateErrors counts failed writes of state.json (the crash-safety record).
	stateErrors prometheus.Counter
	// stepSeconds is how long steps took, by service, kind and result.
	stepSeconds *prometheus.HistogramVec
	// fetchSeconds is how long each blob fetch took, by result.
	fetchSeconds *prometheus.HistogramVec
	// fetchBytes counts downloaded bytes by where they came from.
	fetchBytes *prometheus.CounterVec

	mu sync.Mutex
	// began is when the step in flight of each service began.
	began map[string]time.Time
	// counted is what fetchBytes already holds per blob id (the progress
	// of a blob is cumulative and reported again on every Fetch).
	counted map[string]znodes.BlobProgress
}

// Step and fetch durations range from milliseconds (a settings reload, a
// cached blob) to the deadline of a step (minutes).
var durationBuckets = []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// Bytes sources of dcroll_agent_fetch_bytes_total.
const (
	sourceRack  = "rack"
	sourceDC    = "dc"
	sourceOther = "other"
)

func newMetrics() *metrics {
	m := &metrics{
		reg: obs.NewRegistry(),
		healthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dcroll_agent_service_healthy", Help: "1 when the service passes its health check.",
		}, []string{"service"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dcroll_agent_decisions_total", Help: "Decisions taken (counted when the decision changes).",
		}, []string{"service", "action"}),
		steps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dcroll_agent_upgrade_steps_total", Help: "Steps (upgrade, settings, removal) by result: ok, removed, reverted, failed.",
		}, []string{"service", "result"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dcroll_agent_settings_reloads_total", Help: "Settings-only changes applied with the reload signal.",
		}, []string{"service"}),
		stateErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dcroll_agent_state_write_errors_total", Help: "Failed writes of state.json, the crash-safety record of steps.",
		}),
		stepSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dcroll_agent_step_duration_seconds", Help: "Duration of steps from begin to result, by service, kind (upgrade, settings, remove) and result (ok, removed, reverted, failed).",
			Buckets: durationBuckets,
		}, []string{"service", "kind", "result"}),
		fetchSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dcroll_agent_fetch_duration_seconds", Help: "Duration of blob fetches (artifacts and data), by result (ok, error); blobs already present count too.",
			Buckets: durationBuckets,
		}, []string{"result"}),
		fetchBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dcroll_agent_fetch_bytes_total", Help: "Blob bytes downloaded, by source: rack (peers of this rack), dc (other racks), other (web seed and unknown peers).",
		}, []string{"source"}),
		began:   map[string]time.Time{},
		counted: map[string]znodes.BlobProgress{},
	}
	// Present (at 0) before the first fetch.
	for _, s := range []string{sourceRack, sourceDC, sourceOther} {
		m.fetchBytes.WithLabelValues(s)
	}
	for _, r := range []string{"ok", "error"} {
		m.fetchSeconds.WithLabelValues(r)
	}
	m.reg.MustRegister(m.healthy, m.decisions, m.steps, m.reloads, m.stateErrors, m.stepSeconds, m.fetchSeconds, m.fetchBytes)
	return m
}

// stepBegan records when the step of service began (takeStep).
func (m *metrics) stepBegan(service string, now time.Time) {
	m.mu.Lock()
	m.began[service] = now
	m.mu.Unlock()
}

// stepDone counts the step of service that began at stepBegan and
// observes its duration.
func (m *metrics) stepDone(service, kind, result string, now time.Time) {
	m.steps.WithLabelValues(service, result).Inc()
	m.mu.Lock()
	began, ok := m.began[service]
	delete(m.began, service)
	m.mu.Unlock()
	if ok {
		m.stepSeconds.WithLabelValues(service, kind, result).Observe(now.Sub(began).Seconds())
	}
}

// fetched observes one Fetch: its duration, and the bytes its last
// progress report adds to what was counted for the blob before.
func (m *metrics) fetched(id string, d time.Duration, last *znodes.BlobProgress, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.fetchSeconds.WithLabelValues(result).Observe(d.Seconds())
	if last == nil {
		return
	}
	m.mu.Lock()
	prev := m.counted[id]
	m.counted[id] = *last
	m.mu.Unlock()
	add := func(source string, now, before int64) {
		if now > before {
			m.fetchBytes.WithLabelValues(source).Add(float64(now - before))
		}
	}
	add(sourceRack, last.FromRack, prev.FromRack)
	add(sourceDC, last.FromDC, prev.FromDC)
	add(sourceOther, last.FromOther, prev.FromOther)
}

// meteredFetcher is the fetcher with every Fetch (and FetchLocked, when
// the fetcher has it) observed by the metrics.
func (rt *runtime) meteredFetcher() (Fetcher, error) {
	f, err := rt.fetcher()
	if err != nil {
		return nil, err
	}
	mf := &metered{f: f, m: rt.metrics}
	if fl, ok := f.(fetchLocker); ok {
		return &meteredLocker{metered: mf, fl: fl}, nil
	}
	return mf, nil
}

// metered observes the Fetches of f.
type metered struct {
	f Fetcher
	m *metrics
}

// observe wraps onProgress to keep the last report, and returns the
// function that records the fetch when it returns.
func (mf *metered) observe(id string, onProgress func(znodes.BlobProgress)) (func(znodes.BlobProgress), func(error)) {
	start := time.Now()
	var mu sync.Mutex
	var last *znodes.BlobProgress
	hook := func(p znodes.BlobProgress) {
		mu.Lock()
		last = &p
		mu.Unlock()
		if onProgress != nil {
			onProgress(p)
		}
	}
	return hook, func(err error) {
		mu.Lock()
		l := last
		mu.Unlock()
		mf.m.fetched(id, time.Since(start), l, err)
	}
}

func (mf *metered) Fetch(ctx context.Context, id string, onProgress func(znodes.BlobProgress)) (string, error) {
	hook, done := mf.observe(id, onProgress)
	p, err := mf.f.Fetch(ctx, id, hook)
	done(err)
	return p, err
}

// meteredLocker is metered for fetchers that can lock what they fetch.
type meteredLocker struct {
	*metered
	fl fetchLocker
}

func (ml *meteredLocker) FetchLocked(ctx context.Context, id string, onProgress func(znodes.BlobProgress)) (string, *mlock.Region, error) {
	hook, done := ml.observe(id, onProgress)
	p, r, err := ml.fl.FetchLocked(ctx, id, hook)
	done(err)
	return p, r, err
}

var (
	_ Fetcher     = (*metered)(nil)
	_ fetchLocker = (*meteredLocker)(nil)
)

// register adds the gauges computed from the runtime.
func (m *metrics) register(rt *runtime) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dcroll_agent_zookeeper_connected", Help: "1 while the ZooKeeper session is live.",
	}, func() float64 {
		rt.mu.Lock()
		c := rt.conn
		rt.mu.Unlock()
		if c == nil {
			return 0
		}
		st, _, _ := c.State()
		return b2f(st == znodes.Connected)
	}))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dcroll_agent_mlocked_bytes", Help: "Bytes of blobs this agent holds mlocked (also in /dc/agents/<machine> locked_bytes).",
	}, func() float64 {
		rt.mu.Lock()
		n, _ := rt.f.(*distrib.Node)
		rt.mu.Unlock()
		if n == nil {
			return 0
		}
		return float64(n.Locker().Locked())
	}))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
