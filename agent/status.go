package agent

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Status is the agent's /status document.
type Status struct {
	Machine   string          `json:"machine"`
	Rack      string          `json:"rack"`
	DC        string          `json:"dc"`
	ZooKeeper string          `json:"zookeeper"` // connected, suspended, lost, closed, or "not connected"
	PeerAddr  string          `json:"peer_addr,omitempty"`
	Services  []ServiceStatus `json:"services"`
}

// ServiceStatus is one service in Status.
type ServiceStatus struct {
	Service  string    `json:"service"`
	Version  string    `json:"version,omitempty"`
	SpecID   string    `json:"spec_id,omitempty"`
	State    string    `json:"state"`
	Healthy  bool      `json:"healthy"`
	Since    time.Time `json:"since"`
	Detail   string    `json:"detail,omitempty"`
	PID      int       `json:"pid,omitempty"`
	Restarts int       `json:"restarts"`
	Reloads  int       `json:"reloads"`
	InFlight *Step     `json:"in_flight,omitempty"`
	// PendingHalt is a halt this machine owes the queue and has not
	// written yet (its step record stays until it has).
	PendingHalt *PendingHalt `json:"pending_halt,omitempty"`
	// Decision and Reason are the last decision: what the machine does or
	// waits for, and why.
	Decision string `json:"decision"`
	Reason   string `json:"reason,omitempty"`
}

func (rt *runtime) status() Status {
	rt.mu.Lock()
	s := Status{Machine: rt.cfg.Machine, Rack: rt.cfg.Rack, DC: rt.cfg.DC, PeerAddr: rt.peerAddr, ZooKeeper: "not connected"}
	conn, workers := rt.conn, rt.workers
	rt.mu.Unlock()
	if conn != nil {
		st, _, _ := conn.State()
		s.ZooKeeper = st.String()
	}
	for _, w := range workers {
		l := w.snapshot()
		ss := ServiceStatus{Service: w.service, State: l.Phase, Healthy: l.Healthy, Since: l.Since, Detail: l.Detail,
			PID: l.PID, Restarts: l.Restarts, Reloads: l.Reloads, InFlight: l.InFlight, PendingHalt: l.PendingHalt,
			Decision: l.Last.Action.String(), Reason: l.Last.Reason}
		if r := l.Current; r != nil {
			ss.Version, ss.SpecID = r.Version, r.SpecID
		}
		s.Services = append(s.Services, ss)
	}
	return s
}

func (rt *runtime) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(rt.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rt.status()); err != nil {
			rt.log.Debug("write /status", "err", err) // the client went away
		}
	})
	return mux
}
