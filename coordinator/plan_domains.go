package coordinator

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"dcroll/spec"
	"dcroll/znodes"
)

// Warning codes of a night plan about upgrade domains and waves.
const (
	WarnWaveUnlisted = "wave_unlisted" // members in data centers the waves list omits: they go last
	WarnDomainLabel  = "domain_label"  // members without the domain label: they form one domain of their own
)

// planGroup is the members of one batch group of a plan: one rack (or,
// with a domain, one domain value) of one wave, in the order they go.
type planGroup struct {
	wave, domain string // domain "" : a rack group
	members      []znodes.MemberState
}

// rack names the racks of a batch ms of g: its one rack for a rack
// group, else the racks it spans, joined.
func (g planGroup) rack(ms []znodes.MemberState) string {
	var racks []string
	for _, m := range ms {
		if !slices.Contains(racks, m.Rack) {
			racks = append(racks, m.Rack)
		}
	}
	slices.Sort(racks)
	return strings.Join(racks, ",")
}

// planGroups splits a service's members into the groups its batches are
// cut from, in the order they go, and says how many machines of a group
// go at once. Without domain and waves (and for a removal, which agents
// stop one rack at a time): racks sorted by name, max_parallel at once.
// With waves, the data centers in wave order (coordinator.WaveOrder),
// each split by rack or by domain. With a domain: its values sorted
// (DomainOrder, as the coordinator opens them), at once as many as
// max_parallel and the quorum allow (members minus the quorum's minimum,
// at least 1). It fills s.Domain, Waves, WaveOrder and Domains, and warns
// about members a waves list omits or without the domain label.
func planGroups(s *ServicePlan, svc *spec.Service, states []znodes.MemberState, removal bool,
	warn func(code, svc, format string, a ...any)) ([]planGroup, int) {
	per := max(s.MaxParallel, 1)
	shaped := svc != nil && !removal && (svc.Domain != "" || svc.Waves != nil)
	label := znodes.LabelRack
	if !shaped {
		var groups []planGroup
		for _, r := range DomainOrder(label, states) {
			groups = append(groups, planGroup{members: withLabel(states, label, r)})
		}
		return groups, per
	}
	s.Domain, s.Waves = svc.Domain, svc.Waves.String()
	if svc.Domain != "" {
		label = svc.Domain
		per = max(1, min(per, len(states)-s.QuorumMin))
	}
	waves := WaveOrder(svc, states)
	if svc.Waves != nil {
		s.WaveOrder = waves
		if unl := svc.Waves.Unlisted(waves); len(unl) > 0 {
			warn(WarnWaveUnlisted, s.Service, "members in data centers waves %s does not list go last: %s", svc.Waves, strings.Join(unl, ", "))
		}
	}
	var unlabelled []string
	var groups []planGroup
	for _, w := range waves {
		ms := inWave(w, states)
		for _, v := range DomainOrder(label, ms) {
			g := planGroup{wave: w, members: withLabel(ms, label, v)}
			if svc.Domain != "" {
				g.domain = v
				if v == znodes.NoLabel {
					for _, m := range g.members {
						unlabelled = append(unlabelled, m.Machine)
					}
				}
			}
			groups = append(groups, g)
			n := len(g.members)
			s.Domains = append(s.Domains, PlanDomain{Wave: w, Value: v, Members: n, AtOnce: min(per, n), Batches: (n + per - 1) / per})
		}
	}
	if len(unlabelled) > 0 {
		warn(WarnDomainLabel, s.Service, "members without label %s form one domain of their own: %s (agent config labels:)", svc.Domain, strings.Join(unlabelled, ","))
	}
	return groups, per
}

// withLabel returns the members of states whose label is v.
func withLabel(states []znodes.MemberState, label, v string) []znodes.MemberState {
	var out []znodes.MemberState
	for _, m := range states {
		if m.Label(label) == v {
			out = append(out, m)
		}
	}
	return out
}

// writeDomains prints a service's waves and domains, in the order they
// go: "  waves dc: dc-1 -> dc-2" and "  domain rack: r1 (2 members, 2 at
// once, 1 batch) -> r2 (...)"; nothing for a service without them.
func writeDomains(w io.Writer, s ServicePlan) {
	if s.Domain == "" && s.Waves == "" {
		return
	}
	if s.Waves != "" {
		fmt.Fprintf(w, "  waves %s: %s\n", s.Waves, strings.Join(s.WaveOrder, " -> "))
	}
	label := "rack"
	if s.Domain != "" {
		label = s.Domain
	}
	var parts []string
	for _, d := range s.Domains {
		batches := "1 batch"
		if d.Batches != 1 {
			batches = fmt.Sprintf("%d batches", d.Batches)
		}
		v := d.Value
		if s.Waves != "" {
			v = d.Wave + "/" + v
		}
		parts = append(parts, fmt.Sprintf("%s (%d members, %d at once, %s)", v, d.Members, d.AtOnce, batches))
	}
	how := "one domain at a time"
	if s.Domain == "" {
		how = "one rack at a time, max_parallel at once"
	}
	fmt.Fprintf(w, "  domain %s (%s): %s\n", label, how, strings.Join(parts, " -> "))
}

// domainHead and domainCells are the WAVE and DOMAIN columns of a
// service's batch table (only the ones it has).
func domainHead(s ServicePlan) string {
	h := ""
	if s.Waves != "" {
		h += "WAVE\t"
	}
	if s.Domain != "" {
		h += "DOMAIN " + strings.ToUpper(s.Domain) + "\t"
	}
	return h
}

func domainCells(s ServicePlan, b PlanBatch) string {
	c := ""
	if s.Waves != "" {
		c += dash(b.Wave) + "\t"
	}
	if s.Domain != "" {
		c += dash(b.Domain) + "\t"
	}
	return c
}
