package coordinator

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"dcroll/znodes"
)

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
	descNightETA = prometheus.NewDesc("dcroll_night_eta_seconds", "Seconds until the deploy queue is expected done (the leading coordinator's record; absent when unknown).", nil, nil)
	descSvcETA   = prometheus.NewDesc("dcroll_service_eta_seconds", "Seconds until the service's deploy entry is expected done (absent when unknown).", []string{"service"}, nil)
	descBlocked  = prometheus.NewDesc("dcroll_service_blocked", "1 for the reason code that blocks the service's deploy entry (halted, paused, window, dependency, canary, quorum, absent, staging, no_members).", []string{"service", "code"}, nil)
	descStepSecs = prometheus.NewDesc("dcroll_service_step_seconds", "Expected seconds per member step: the measured moving average, else the health settings' estimate.", []string{"service", "measured"}, nil)
	descUp       = prometheus.NewDesc("dcroll_zookeeper_up", "1 when the status could be read from ZooKeeper.", nil, nil)
)

type statusCollector struct{ c *znodes.Conn }

func (s *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMachines, descHealthy, descMembers, descAvail, descQuorum, descDown, descStaged, descQueue, descPaused, descAgents, descLocked, descNightETA, descSvcETA, descBlocked, descStepSecs, descUp} {
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
	if r := st.Rollout; r != nil {
		now := time.Now()
		if !r.ETA.IsZero() {
			ch <- prometheus.MustNewConstMetric(descNightETA, prometheus.GaugeValue, max(r.ETA.Sub(now).Seconds(), 0))
		}
		for _, s := range r.Services {
			if s.State == znodes.DeployDone {
				continue
			}
			if !s.ETA.IsZero() {
				ch <- prometheus.MustNewConstMetric(descSvcETA, prometheus.GaugeValue, max(s.ETA.Sub(now).Seconds(), 0), s.Service)
			}
			if s.Blocked != "" {
				ch <- prometheus.MustNewConstMetric(descBlocked, prometheus.GaugeValue, 1, s.Service, s.Blocked)
			}
			ch <- prometheus.MustNewConstMetric(descStepSecs, prometheus.GaugeValue, s.StepSeconds, s.Service, strconv.FormatBool(s.Measured))
		}
	}
}
