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
