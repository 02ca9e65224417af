// Package obs is what every dcroll daemon (agent, coordinator, origin)
// serves to its operators: a Prometheus registry that already holds
// dcroll_build_info and the Go and process collectors, and a /healthz
// handler that answers 200 "ok" while the daemon's ZooKeeper session is
// connected and 503 with the reason otherwise.
//
//	reg := obs.NewRegistry()
//	reg.MustRegister(myCollectors...)
//	mux.Handle("GET /metrics", obs.MetricsHandler(reg))
//	mux.Handle("GET /healthz", obs.Healthz(obs.ZooKeeper(func() *znodes.Conn { return conn })))
package obs

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"dcroll/internal/buildinfo"
	"dcroll/znodes"
)

// NewRegistry returns a registry (no globals: several daemons can live in
// one test process) holding dcroll_build_info{version,commit,goversion} 1
// and the standard go_* and process_* collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	bi := buildinfo.Get()
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "dcroll_build_info",
		Help:        "Always 1; the labels name the running build.",
		ConstLabels: prometheus.Labels{"version": bi.Version, "commit": bi.Commit, "goversion": bi.GoVersion},
	})
	info.Set(1)
	reg.MustRegister(info,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// MetricsHandler serves reg in the Prometheus exposition format.
func MetricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// Healthz answers 200 "ok" when check returns nil, and 503 with the error
// text otherwise.
func Healthz(check func() error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := check(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, err.Error())
			return
		}
		fmt.Fprintln(w, "ok")
	})
}

// ZooKeeper is a Healthz check: nil while the session of conn() is
// connected. conn may return nil (not dialled yet).
func ZooKeeper(conn func() *znodes.Conn) func() error {
	return func() error {
		c := conn()
		if c == nil {
			return fmt.Errorf("zookeeper: not connected yet")
		}
		if st, _, _ := c.State(); st != znodes.Connected {
			return fmt.Errorf("zookeeper: session %s", st)
		}
		return nil
	}
}
