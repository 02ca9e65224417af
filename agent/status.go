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
		w.mu.Lock()
		ss := ServiceStatus{Service: w.service, State: w.phase, Healthy: w.healthy, Since: w.since, Detail: w.detail,
			Reloads: w.reloads, InFlight: w.st.InFlight, PendingHalt: w.st.PendingHalt, Decision: w.last.Action.String(), Reason: w.last.Reason}
		if r := w.st.Current; r != nil {
			ss.Version, ss.SpecID = r.Version, r.SpecID
		}
		if w.sup != nil {
			st := w.sup.Status()
			ss.PID, ss.Restarts = st.PID, st.Restarts
		}
		w.mu.Unlock()
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
		_ = enc.Encode(rt.status())
	})
	return mux
}
