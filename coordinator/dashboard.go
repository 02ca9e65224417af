package coordinator

import (
	"embed"
	"encoding/json"
	"html/template"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"dcroll/internal/obs"
	"dcroll/spec"
	"dcroll/znodes"
)

//go:embed dashboard.html
var dashboardFS embed.FS

var dashboardTmpl = template.Must(template.New("dashboard.html").Funcs(template.FuncMap{
	"short": spec.ShortID,
	"ago":   func(t time.Time) string { return time.Since(t).Round(time.Second).String() },
	"pct": func(a, b int64) int64 {
		if b == 0 {
			return 0
		}
		return a * 100 / b
	},
}).ParseFS(dashboardFS, "dashboard.html"))

// Dashboard serves the web dashboard (/), the status API (/api/status),
// Prometheus metrics (/metrics), all read from znode state on each request,
// and /healthz (200 "ok" while the ZooKeeper session is connected, 503
// with the reason otherwise).
func Dashboard(c *znodes.Conn) http.Handler { return dashboard(c, nil) }

// dashboard is Dashboard; el, when set, is this coordinator's candidacy,
// exported as dcroll_coordinator_leader.
func dashboard(c *znodes.Conn, el *znodes.Election) http.Handler {
	reg := obs.NewRegistry()
	reg.MustRegister(&statusCollector{c: c})
	if el != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "dcroll_coordinator_leader", Help: "1 while this coordinator is the elected leader (advances the deploy queue), 0 otherwise.",
		}, func() float64 {
			if el.IsLeader() {
				return 1
			}
			return 0
		}))
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", obs.MetricsHandler(reg))
	mux.Handle("/healthz", obs.Healthz(obs.ZooKeeper(func() *znodes.Conn { return c })))
	mux.HandleFunc("/api/status", func(w http.ResponseWriter, r *http.Request) {
		st, err := ReadStatus(c)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(st)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		st, err := ReadStatus(c)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := dashboardTmpl.Execute(w, st); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	return mux
}

var (
	descMachines = prometheus.NewDesc("dcroll_service_machines", "Machines registered in /dc/current per service and version.", []string{"service", "version"}, nil)
	descHealthy  = prometheus.NewDesc("dcroll_service_healthy", "Healthy machines per service.", []string{"service"}, nil)
	descMembers  = prometheus.NewDesc("dcroll_service_members", "Members per service (absent ones included).", []string{"service"}, nil)
	descAvail    = prometheus.NewDesc("dcroll_service_available", "Available members per service (registered, running, healthy, not mid-step).", []string{"service"}, nil)
	descQuorum   = prometheus.NewDesc("dcroll_service_quorum", "Members that must stay available per service.", []string{"service"}, nil)
	descDown     = prometheus.NewDesc("dcroll_service_down", "Members mid-step (step records) per service.", []string{"service"}, nil)
	descStaged   = prometheus.NewDesc("dcroll_service_staged", "Machines ready to roll per service.", []string{"service"}, nil)
	descQueue    = prometheus.NewDesc("dcroll_deploy_entries", "Deploy queue entries by state.", []string{"state"}, nil)
	descPaused   = prometheus.NewDesc("dcroll_paused", "1 when rollouts are paused.", nil, nil)
	descAgents   = prometheus.NewDesc("dcroll_agents", "Live agents.", nil, nil)
	descLocked   = prometheus.NewDesc("dcroll_agent_mlocked_bytes", "Blob bytes each agent holds mlocked.", []string{"machine"}, nil)
	descUp       = prometheus.NewDesc("dcroll_zookeeper_up", "1 when the status could be read from ZooKeeper.", nil, nil)
)

type statusCollector struct{ c *znodes.Conn }

func (s *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMachines, descHealthy, descMembers, descAvail, descQuorum, descDown, descStaged, descQueue, descPaused, descAgents, descLocked, descUp} {
		ch <- d
	}
}

func (s *statusCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := ReadStatus(s.c)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 1)
	for _, svc := range st.Services {
		for v, n := range svc.Versions {
			ch <- prometheus.MustNewConstMetric(descMachines, prometheus.GaugeValue, float64(n), svc.Service, v)
		}
		ch <- prometheus.MustNewConstMetric(descHealthy, prometheus.GaugeValue, float64(svc.Healthy), svc.Service)
		ch <- prometheus.MustNewConstMetric(descMembers, prometheus.GaugeValue, float64(svc.Total), svc.Service)
		ch <- prometheus.MustNewConstMetric(descAvail, prometheus.GaugeValue, float64(svc.Available), svc.Service)
		ch <- prometheus.MustNewConstMetric(descQuorum, prometheus.GaugeValue, float64(svc.Quorum), svc.Service)
		ch <- prometheus.MustNewConstMetric(descDown, prometheus.GaugeValue, float64(len(svc.Down)), svc.Service)
		ch <- prometheus.MustNewConstMetric(descStaged, prometheus.GaugeValue, float64(svc.Staged), svc.Service)
	}
	states := map[string]int{znodes.DeployPending: 0, znodes.DeployRolling: 0, znodes.DeployHalted: 0, znodes.DeployDone: 0}
	for _, e := range st.Queue {
		states[e.State]++
	}
	for k, n := range states {
		ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(n), k)
	}
	paused := 0.0
	if st.Control.Paused {
		paused = 1
	}
	ch <- prometheus.MustNewConstMetric(descPaused, prometheus.GaugeValue, paused)
	ch <- prometheus.MustNewConstMetric(descAgents, prometheus.GaugeValue, float64(len(st.Agents)))
	for _, a := range st.Agents {
		ch <- prometheus.MustNewConstMetric(descLocked, prometheus.GaugeValue, float64(a.LockedBytes), a.Machine)
	}
}
