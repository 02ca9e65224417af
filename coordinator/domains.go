package coordinator

import (
	"slices"

	"dcroll/spec"
	"dcroll/znodes"
)

// Upgrade domains and waves (spec domain, waves). The leading coordinator
// decides, once per tick, which wave (data center) and which domain (a
// value of the service's domain label) are open, and writes them into the
// active deploy entry (DeployEntry.Wave, Domain) with a versioned set:
// that write also fences any spend decided on the old values (a spend is
// conditional on the entry's version). Agents step only in the open wave
// and domain (agent.domainWait), so each agent's share of the rule is a
// comparison of its own labels with the entry it already watches: O(1)
// ZooKeeper work however many machines the service has.

// holdsOpen reports whether member s keeps its wave and domain open for
// entry e: it is mid-step (a step record), or registered and not done. An
// absent member holds nothing open: it catches up when it returns (the
// returning-machine rule), and its wave or domain is reopened then.
func holdsOpen(e znodes.DeployEntry, s znodes.MemberState) bool {
	return s.Down != nil || s.Current != nil && !e.DoneBy(s)
}

// waveOf is member s's wave: its data center (znodes.NoLabel if none).
func waveOf(s znodes.MemberState) string { return s.Label(znodes.LabelDC) }

// WaveOrder returns the waves of svc over the members states, first to
// last: the data centers svc.Waves arranges (spec.Waves.Arrange), or one
// wave "" holding everyone when svc has no waves.
func WaveOrder(svc *spec.Service, states []znodes.MemberState) []string {
	if svc == nil || svc.Waves == nil {
		return []string{""}
	}
	dcs := make([]string, 0, len(states))
	for _, s := range states {
		dcs = append(dcs, waveOf(s))
	}
	return svc.Waves.Arrange(dcs)
}

// DomainOrder returns the domain values of label among states, sorted.
func DomainOrder(label string, states []znodes.MemberState) []string {
	var out []string
	for _, s := range states {
		if v := s.Label(label); !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}

// inWave returns the members of states in wave w ("" : all of them).
func inWave(w string, states []znodes.MemberState) []znodes.MemberState {
	if w == "" {
		return states
	}
	var out []znodes.MemberState
	for _, s := range states {
		if waveOf(s) == w {
			out = append(out, s)
		}
	}
	return out
}

// pickOpen chooses among groups (in order) the one to open: the first
// with a member mid-step (a domain stays open while any of its members
// has a step record), else cur if it still holds open (a domain is
// finished before the next begins, even if an earlier one reopens
// meanwhile), else the first that holds open. ok is false when none does.
func pickOpen(e znodes.DeployEntry, order []string, cur string, members func(string) []znodes.MemberState) (string, bool) {
	has := func(g string, f func(znodes.MemberState) bool) bool {
		return slices.ContainsFunc(members(g), f)
	}
	midStep := func(s znodes.MemberState) bool { return s.Down != nil }
	hold := func(s znodes.MemberState) bool { return holdsOpen(e, s) }
	for _, g := range order {
		if has(g, midStep) {
			return g, true
		}
	}
	if slices.Contains(order, cur) && has(cur, hold) {
		return cur, true
	}
	for _, g := range order {
		if has(g, hold) {
			return g, true
		}
	}
	return "", false
}

// OpenDomains is the pure rule of the leading coordinator: which wave and
// which domain of entry e's service svc (its spec entry) are open, given
// the service's members states. A service without waves has wave "", one
// without a domain has domain "". Waves go in WaveOrder, domains within
// the open wave in DomainOrder; a wave or domain is open while one of its
// members is mid-step or registered and not done with e (see pickOpen).
// When no member holds any open (every registered member is done), the
// entry's values are kept: nothing is left to step.
func OpenDomains(e znodes.DeployEntry, svc *spec.Service, states []znodes.MemberState) (wave, domain string) {
	if svc == nil || svc.Domain == "" && svc.Waves == nil || e.Kind == znodes.KindRemoved {
		return e.Wave, e.Domain
	}
	waves := WaveOrder(svc, states)
	wave, ok := pickOpen(e, waves, e.Wave, func(w string) []znodes.MemberState { return inWave(w, states) })
	if !ok {
		return e.Wave, e.Domain
	}
	if svc.Domain == "" {
		return wave, ""
	}
	members := inWave(wave, states)
	byDomain := func(v string) []znodes.MemberState {
		var out []znodes.MemberState
		for _, s := range members {
			if s.Label(svc.Domain) == v {
				out = append(out, s)
			}
		}
		return out
	}
	cur := e.Domain
	if wave != e.Wave {
		cur = "" // a new wave starts with its first domain
	}
	domain, _ = pickOpen(e, DomainOrder(svc.Domain, members), cur, byDomain)
	return wave, domain
}

// domains writes the open wave and domain of the active entry v (see
// OpenDomains) when they changed. A lost race (the entry changed since it
// was read) is retried at the next tick.
func (a *advancer) domains(v entryView) error {
	wave, domain := OpenDomains(v.e.DeployEntry, v.svc, v.states)
	if wave == v.e.Wave && domain == v.e.Domain {
		return nil
	}
	ok, err := a.c.SetEntry(v.e, func(d *znodes.DeployEntry) { d.Wave, d.Domain = wave, domain })
	a.wrote()
	if ok {
		a.log.Info("upgrade domain opened", "service", v.e.Service, "wave", wave, "domain", domain,
			"was_wave", v.e.Wave, "was_domain", v.e.Domain)
	}
	return err
}
