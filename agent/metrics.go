package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"dcroll/distrib"
	"dcroll/znodes"
)

// metrics are the agent's Prometheus metrics, in a registry of its own (no
// globals: several agents can live in one test process).
type metrics struct {
	reg       *prometheus.Registry
	healthy   *prometheus.GaugeVec
	decisions *prometheus.CounterVec
	steps     *prometheus.CounterVec
	reloads   *prometheus.CounterVec
	// stateErrors counts failed writes of state.json (the crash-safety record).
	stateErrors prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
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
	}
	m.reg.MustRegister(m.healthy, m.decisions, m.steps, m.reloads, m.stateErrors)
	return m
}

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
		Name: "dcroll_agent_locked_bytes", Help: "Bytes of blobs locked in memory.",
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
