package faults

import (
	"sort"

	"dcroll/integration/checker"
)

// machineDC is machine m's data center in a scenario with options o
// (Options.DCs; default dc1).
func machineDC(o Options, m string) string {
	if dc := o.DCs[m]; dc != "" {
		return dc
	}
	return "dc1"
}

// groupsBy groups machines by their value in place (machine -> rack or
// dc), sorted by value: the order domains (and "dc" waves) go in.
func groupsBy(place map[string]string) []checker.Group {
	by := map[string][]string{}
	for m, v := range place {
		by[v] = append(by[v], m)
	}
	out := make([]checker.Group, 0, len(by))
	for v, ms := range by {
		sort.Strings(ms)
		out = append(out, checker.Group{Name: v, Machines: ms})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
