package checker

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Upgrade domains and waves, judged from the event log alone (like every
// rule of the checker: nothing ZooKeeper, the agents or the coordinator
// say is read). The functions are separate from Judge: a scenario with a
// spec domain or waves calls them on the event log of its rollout.

// Event is one well-formed line of the event log.
type Event struct {
	At                        time.Time
	Service, Machine, Version string
	Kind                      string // up, unhealthy, down
}

// ParseEvents returns the well-formed lines of event log data, ordered by
// their timestamps (Judge reports the malformed ones).
func ParseEvents(data []byte) []Event {
	var out []Event
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Split(l, " ")
		if len(f) != 6 || slices.Contains(f, "") {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, f[0])
		if err != nil || f[4] != evUp && f[4] != evUnhealthy && f[4] != evDown {
			continue
		}
		out = append(out, Event{At: at, Service: f[1], Machine: f[2], Version: f[3], Kind: f[4]})
	}
	slices.SortStableFunc(out, func(a, b Event) int { return a.At.Compare(b.At) })
	return out
}

// Outage is a time an instance was not healthy by its own log: from a
// down or unhealthy event to its next up (End zero: not up again).
type Outage struct {
	Machine    string
	Start, End time.Time
}

func (o Outage) end() time.Time {
	if o.End.IsZero() {
		return time.Unix(1<<40, 0)
	}
	return o.End
}

func (o Outage) overlaps(p Outage) bool {
	return o.Start.Before(p.end()) && p.Start.Before(o.end())
}

// Outages returns every outage of service's instances that began at or
// after since, by machine, in order.
func Outages(evs []Event, service string, since time.Time) map[string][]Outage {
	out := map[string][]Outage{}
	open := map[string]int{} // machine -> index+1 of its open outage
	for _, e := range evs {
		if e.Service != service || e.At.Before(since) {
			continue
		}
		i := open[e.Machine]
		switch {
		case e.Kind == evUp && i > 0:
			out[e.Machine][i-1].End = e.At
			open[e.Machine] = 0
		case e.Kind != evUp && i == 0:
			out[e.Machine] = append(out[e.Machine], Outage{Machine: e.Machine, Start: e.At})
			open[e.Machine] = len(out[e.Machine])
		}
	}
	return out
}

// Group is an upgrade domain or a wave: a name and its machines.
type Group struct {
	Name     string
	Machines []string
}

// CheckDomains checks the upgrade domains of service from since on,
// domains given in the order they must go. An instance's step is taken to
// last from its outage's start until settle after the outage's end: a
// restart takes milliseconds, but the agent keeps the step (and its
// domain) open until the instance has been healthy for the spec's
// min_healthy, so settle is min_healthy or a little less (0: the outages
// alone). It returns one line per violation:
//
//   - whole: the steps of a domain's members overlap (every member went
//     down before any other's first step was over), so the domain went as
//     one batch;
//   - one at a time: no step of one domain overlaps a step of another;
//   - in order: the domains' first outages begin in the given order, and
//     every domain went down (the rollout changed every member).
func CheckDomains(evs []Event, service string, since time.Time, settle time.Duration, domains []Group) []string {
	outs := Outages(evs, service, since)
	for _, os := range outs {
		for i := range os {
			if !os[i].End.IsZero() {
				os[i].End = os[i].End.Add(settle)
			}
		}
	}
	var bad []string
	first := make([]time.Time, len(domains))
	for i, d := range domains {
		var starts, ends []time.Time
		for _, m := range d.Machines {
			os := outs[m]
			if len(os) == 0 {
				bad = append(bad, fmt.Sprintf("domain %s: %s/%s never went down", d.Name, service, m))
				continue
			}
			starts, ends = append(starts, os[0].Start), append(ends, os[0].end())
			if first[i].IsZero() || os[0].Start.Before(first[i]) {
				first[i] = os[0].Start
			}
		}
		if len(starts) > 1 {
			if last, early := slices.MaxFunc(starts, time.Time.Compare), slices.MinFunc(ends, time.Time.Compare); !last.Before(early) {
				bad = append(bad, fmt.Sprintf("domain %s did not go as a whole: a step of %s was over at %s before the last went down at %s",
					d.Name, strings.Join(d.Machines, ","), stamp(early), stamp(last)))
			}
		}
	}
	for i, d := range domains {
		for j := i + 1; j < len(domains); j++ {
			e := domains[j]
			for _, m := range d.Machines {
				for _, n := range e.Machines {
					for _, o := range outs[m] {
						for _, p := range outs[n] {
							if o.overlaps(p) {
								bad = append(bad, fmt.Sprintf("two domains at once: %s/%s (domain %s) stepping %s-%s and %s/%s (domain %s) stepping %s-%s",
									service, m, d.Name, stamp(o.Start), stamp(o.End), service, n, e.Name, stamp(p.Start), stamp(p.End)))
							}
						}
					}
				}
			}
		}
	}
	for i := 1; i < len(domains); i++ {
		if !first[i-1].IsZero() && !first[i].IsZero() && first[i].Before(first[i-1]) {
			bad = append(bad, fmt.Sprintf("domains out of order: %s went down at %s, before %s (at %s)",
				domains[i].Name, stamp(first[i]), domains[i-1].Name, stamp(first[i-1])))
		}
	}
	return bad
}

// CheckWaves checks the waves of service from since on, waves given in
// the order they must go: no instance of a wave went down before every
// instance of the waves before it was up on target (its first up on
// target since since). One line per violation.
func CheckWaves(evs []Event, service, target string, since time.Time, waves []Group) []string {
	upOn := map[string]time.Time{} // machine -> first up on target
	for _, e := range evs {
		if e.Service == service && !e.At.Before(since) && e.Kind == evUp && e.Version == target {
			if _, ok := upOn[e.Machine]; !ok {
				upOn[e.Machine] = e.At
			}
		}
	}
	var bad []string
	var done time.Time // when every instance of the waves so far was up on target
	never := false     // one of them never was
	var before []string
	for i, w := range waves {
		if i > 0 {
			for _, e := range evs {
				if e.Service != service || e.At.Before(since) || e.Kind == evUp || !slices.Contains(w.Machines, e.Machine) {
					continue
				}
				if never || e.At.Before(done) {
					when := "at " + stamp(done)
					if never {
						when = "never"
					}
					bad = append(bad, fmt.Sprintf("wave %s started early: %s/%s went %s at %s; wave(s) %s were all up on %s %s",
						w.Name, service, e.Machine, e.Kind, stamp(e.At), strings.Join(before, ","), target, when))
					break
				}
			}
		}
		for _, m := range w.Machines {
			at, ok := upOn[m]
			switch {
			case !ok:
				bad = append(bad, fmt.Sprintf("wave %s: %s/%s never came up on %s", w.Name, service, m, target))
				never = true
			case at.After(done):
				done = at
			}
		}
		before = append(before, w.Name)
	}
	return bad
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "(not yet)"
	}
	return t.Format("15:04:05.000")
}
