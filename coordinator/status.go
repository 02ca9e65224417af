package coordinator

import (
	"errors"
	"fmt"
	"sort"

	"github.com/go-zookeeper/zk"

	"dcroll/znodes"
)

// ServiceStatus is what /dc/current, /dc/down and /dc/staging say about one service.
type ServiceStatus struct {
	Service  string           `json:"service"`
	Target   string           `json:"target_version,omitempty"` // HEAD's version
	Machines []znodes.Current `json:"machines"`
	Down     []znodes.Down    `json:"down"`
	Staged   int              `json:"staged"` // machines ready to roll
	Versions map[string]int   `json:"versions"`
	Healthy  int              `json:"healthy"`
	Quorum   int              `json:"quorum"` // machines that must stay up (of those registered)
}

// Status is a whole data center's rollout state, as dashboards show it.
type Status struct {
	Head     *znodes.Head      `json:"head"`
	Control  znodes.Control    `json:"control"`
	Queue    []QueueEntry      `json:"queue"`
	Services []ServiceStatus   `json:"services"`
	Agents   []znodes.Agent    `json:"agents"`
	Progress []znodes.Progress `json:"progress,omitempty"`
}

// ReadStatus reads HEAD, the queue and every service's machines.
func ReadStatus(c *znodes.Conn) (*Status, error) {
	p := c.Paths()
	st := &Status{}
	var err error
	if st.Head, _, err = ReadHead(c); err != nil {
		return nil, err
	}
	if st.Control, _, err = ReadControl(c); err != nil {
		return nil, err
	}
	if st.Queue, err = ReadQueue(c); err != nil {
		return nil, err
	}
	services := map[string]bool{}
	names, err := children(c, p.CurrentRoot())
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		services[n] = true
	}
	var headSpecServices map[string]string
	var quorum = map[string]func(int) int{}
	if st.Head != nil {
		sp, err := LoadSpec(c, st.Head.SpecID)
		if err != nil {
			return nil, err
		}
		headSpecServices = map[string]string{}
		for name, svc := range sp.Services {
			services[name] = true
			headSpecServices[name] = svc.Version
			quorum[name] = svc.Quorum.Min
		}
	}
	all := make([]string, 0, len(services))
	for s := range services {
		all = append(all, s)
	}
	sort.Strings(all)
	for _, s := range all {
		ss := ServiceStatus{Service: s, Target: headSpecServices[s], Versions: map[string]int{}}
		ms, err := children(c, p.Current(s))
		if err != nil {
			return nil, err
		}
		sort.Strings(ms)
		for _, m := range ms {
			var cur znodes.Current
			if _, err := c.GetJSON(p.CurrentMachine(s, m), &cur); err != nil {
				if errors.Is(err, zk.ErrNoNode) {
					continue
				}
				return nil, err
			}
			ss.Machines = append(ss.Machines, cur)
			ss.Versions[cur.Version]++
			if cur.Healthy {
				ss.Healthy++
			}
		}
		downs, err := children(c, p.Down(s))
		if err != nil {
			return nil, err
		}
		sort.Strings(downs)
		for _, m := range downs {
			var d znodes.Down
			if _, err := c.GetJSON(p.DownMachine(s, m), &d); err == nil {
				ss.Down = append(ss.Down, d)
			}
		}
		staged, err := children(c, p.Staging(s))
		if err != nil {
			return nil, err
		}
		ss.Staged = len(staged)
		if q := quorum[s]; q != nil {
			ss.Quorum = q(len(ss.Machines))
		}
		st.Services = append(st.Services, ss)
	}
	agents, err := children(c, p.Agents())
	if err != nil {
		return nil, err
	}
	sort.Strings(agents)
	for _, m := range agents {
		var a znodes.Agent
		if _, err := c.GetJSON(p.Agent(m), &a); err == nil {
			st.Agents = append(st.Agents, a)
		}
	}
	progs, err := children(c, p.ProgressRoot())
	if err != nil {
		return nil, err
	}
	sort.Strings(progs)
	for _, m := range progs {
		var pr znodes.Progress
		if _, err := c.GetJSON(p.Progress(m), &pr); err == nil {
			st.Progress = append(st.Progress, pr)
		}
	}
	return st, nil
}

func children(c *znodes.Conn, path string) ([]string, error) {
	names, _, err := c.ZK().Children(path)
	if errors.Is(err, zk.ErrNoNode) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", path, err)
	}
	return names, nil
}
