package coordinator

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"

	"dcroll/znodes"
)

// MemberStatus is one member of a service (see znodes.Fleet.States): a
// machine with a member record, a registration or a step record.
type MemberStatus struct {
	Machine string `json:"machine"`
	Rack    string `json:"rack,omitempty"`
	DC      string `json:"dc,omitempty"`
	// Version runs now; for an absent member, the version it last reported.
	Version string `json:"version,omitempty"`
	// State is available, absent, mid-step, unhealthy or the registration's
	// state (starting, failed, ...).
	State string `json:"state"`
	// Why says why the member is unavailable (znodes.MemberState.Why).
	Why        string       `json:"why,omitempty"`
	Available  bool         `json:"available"`
	Registered bool         `json:"registered"` // its agent is registered now
	NoRecord   bool         `json:"no_record,omitempty"`
	Joined     time.Time    `json:"joined,omitzero"`
	Seen       time.Time    `json:"seen,omitzero"` // last registration or version change
	Step       *znodes.Down `json:"step,omitempty"`
	Detail     string       `json:"detail,omitempty"` // the registration's last error or note
}

// memberStatus summarizes a znodes.MemberState.
func memberStatus(s znodes.MemberState) MemberStatus {
	m := MemberStatus{Machine: s.Machine, Rack: s.Rack, Available: s.Available, Why: s.Why(), Step: s.Down, NoRecord: s.Member == nil}
	if s.Member != nil {
		m.DC, m.Version, m.Joined, m.Seen = s.Member.DC, s.Member.Version, s.Member.Joined, s.Member.Seen
	}
	if c := s.Current; c != nil {
		m.Registered, m.Version, m.Detail = true, c.Version, c.Detail
		if c.DC != "" {
			m.DC = c.DC
		}
	}
	switch {
	case s.Available:
		m.State = "available"
	case s.Down != nil:
		m.State = "mid-step"
	case s.Current == nil:
		m.State = "absent"
	case s.Current.State != znodes.StateRunning:
		m.State = s.Current.State
	default:
		m.State = "unhealthy"
	}
	return m
}

// ServiceStatus is what /dc/members, /dc/current, /dc/down and /dc/staging
// say about one service.
type ServiceStatus struct {
	Service string `json:"service"`
	Target  string `json:"target_version,omitempty"` // HEAD's version
	// Members are every member, absent ones included, by machine name.
	Members []MemberStatus `json:"members"`
	// Total members, and how many are available (registered, running,
	// healthy, not mid-step): the numbers the quorum is computed over.
	Total     int              `json:"total"`
	Available int              `json:"available"`
	Quorum    int              `json:"quorum"`   // members that must stay available
	Machines  []znodes.Current `json:"machines"` // live registrations
	Down      []znodes.Down    `json:"down"`     // step records
	Staged    int              `json:"staged"`   // machines ready to roll
	Versions  map[string]int   `json:"versions"` // registrations per version
	Healthy   int              `json:"healthy"`  // healthy registrations
}

// Status is a whole data center's rollout state, as dashboards show it.
type Status struct {
	Head     *znodes.Head      `json:"head"`
	Control  znodes.Control    `json:"control"`
	Queue    []QueueEntry      `json:"queue"`
	Services []ServiceStatus   `json:"services"`
	Agents   []znodes.Agent    `json:"agents"`
	Progress []znodes.Progress `json:"progress,omitempty"`
	// Rollout is the leading coordinator's night record: per service
	// blocked-by and ETA (nil until a coordinator wrote one).
	Rollout *znodes.Rollout `json:"rollout"`
}

// ReadStatus reads HEAD, the queue and every service's members.
func ReadStatus(c *znodes.Conn) (*Status, error) {
	p := c.Paths()
	// Lists are never null in JSON: an empty data center has "services": [].
	st := &Status{Services: []ServiceStatus{}, Agents: []znodes.Agent{}}
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
	if st.Rollout, err = ReadRollout(c); err != nil {
		return nil, err
	}
	if st.Queue == nil {
		st.Queue = []QueueEntry{}
	}
	services, err := fleetServices(c)
	if err != nil {
		return nil, err
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
			if !slices.Contains(services, name) {
				services = append(services, name)
			}
			headSpecServices[name] = svc.Version
			quorum[name] = svc.Quorum.Min
		}
	}
	sort.Strings(services)
	for _, s := range services {
		ss := ServiceStatus{Service: s, Target: headSpecServices[s], Versions: map[string]int{}, Members: []MemberStatus{}}
		f, err := c.ReadFleet(s)
		if err != nil {
			return nil, err
		}
		for _, ms := range f.States() {
			ss.Members = append(ss.Members, memberStatus(ms))
			ss.Total++
			if ms.Available {
				ss.Available++
			}
		}
		ss.Machines, ss.Down = f.Current, f.Down
		if ss.Machines == nil {
			ss.Machines = []znodes.Current{}
		}
		if ss.Down == nil {
			ss.Down = []znodes.Down{}
		}
		for _, cur := range f.Current {
			ss.Versions[cur.Version]++
			if cur.Healthy {
				ss.Healthy++
			}
		}
		staged, err := children(c, p.Staging(s))
		if err != nil {
			return nil, err
		}
		ss.Staged = len(staged)
		if q := quorum[s]; q != nil {
			ss.Quorum = q(ss.Total)
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

// fleetServices lists, sorted, the services that have members,
// registrations or step records.
func fleetServices(c *znodes.Conn) ([]string, error) {
	p := c.Paths()
	var all []string
	for _, dir := range []string{p.MembersRoot(), p.CurrentRoot(), p.DownRoot()} {
		names, err := children(c, dir)
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			if !slices.Contains(all, n) {
				all = append(all, n)
			}
		}
	}
	sort.Strings(all)
	return all, nil
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

// History outcomes in HistoryLine.Outcome.
const (
	OutcomeDone       = "done"
	OutcomeHalted     = "halted"
	OutcomeSuperseded = "superseded"
	OutcomeRolledBack = "rolled back"
	OutcomeInProgress = "in progress"
)

// HistoryLine is one HEAD move with how its rollout ended.
type HistoryLine struct {
	znodes.HistoryEntry
	// Outcome is done, halted, superseded, rolled back or in progress.
	Outcome string `json:"outcome"`
	// OutcomeService is the halted service when Outcome is halted.
	OutcomeService string `json:"outcome_service,omitempty"`
}

// HistoryOutcomes derives, at read time, how each move of h (oldest first)
// ended, from the move after it and, for the latest, from the deploy queue
// q (nothing records outcomes, so history written by any dcroll has them):
//
//   - the move after it is a rollback: rolled back (finished or not);
//   - the move after it superseded halted entries: halted, with the service;
//   - the move after it superseded an unfinished rollout: superseded;
//   - otherwise done; the latest move is done when the queue is, halted
//     when its active entry is, else in progress.
func HistoryOutcomes(h []znodes.HistoryEntry, q []QueueEntry) []HistoryLine {
	out := make([]HistoryLine, len(h))
	for i, e := range h {
		l := HistoryLine{HistoryEntry: e, Outcome: OutcomeDone}
		if i+1 < len(h) {
			next := h[i+1]
			switch {
			case next.Action == znodes.ActionRollback:
				l.Outcome = OutcomeRolledBack
			case len(next.SupersededHalts) > 0:
				l.Outcome = OutcomeHalted
				l.OutcomeService, _, _ = strings.Cut(next.SupersededHalts[0], " ") // "store 3.0.0: halted ..."
			case next.Superseded:
				l.Outcome = OutcomeSuperseded
			}
		} else if a := Active(q); a != nil {
			l.Outcome = OutcomeInProgress
			if a.State == znodes.DeployHalted {
				l.Outcome, l.OutcomeService = OutcomeHalted, a.Service
			}
		}
		out[i] = l
	}
	return out
}

// ReadHistory returns every HEAD move, oldest first, with its outcome
// (see HistoryOutcomes).
func ReadHistory(c *znodes.Conn) ([]HistoryLine, error) {
	h, err := History(c)
	if err != nil {
		return nil, err
	}
	q, err := ReadQueue(c)
	if err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	return HistoryOutcomes(h, q), nil
}
