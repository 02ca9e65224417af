package spec

import (
	"fmt"
	"sort"
	"strings"
)

// CycleError is a dependency cycle among services.
type CycleError struct {
	// Cycle lists the services along the cycle, starting at the smallest
	// name and ending with it again: [api db api] means api depends on db
	// and db on api.
	Cycle []string
}

func (e *CycleError) Error() string {
	return "dependency cycle: " + strings.Join(e.Cycle, " -> ")
}

// Order returns the service names in deploy order: every service after the
// services it depends on; among services whose dependencies are all placed,
// the smallest name comes first, so the order is deterministic. A cycle is
// a *CycleError; a dependency on a missing service is an error too.
func (s *Spec) Order() ([]string, error) {
	names := s.Names()
	deps := make(map[string][]string, len(names))
	for _, name := range names {
		svc := s.Services[name]
		if svc == nil {
			continue
		}
		for _, d := range svc.DependsOn {
			if _, ok := s.Services[d]; !ok {
				return nil, fmt.Errorf("service %q depends on unknown service %q", name, d)
			}
			if !contains(deps[name], d) {
				deps[name] = append(deps[name], d)
			}
		}
		sort.Strings(deps[name])
	}
	// Kahn's algorithm; n is small, so a linear scan for the smallest ready
	// name is fine and keeps the code obvious.
	placed := make(map[string]bool, len(names))
	order := make([]string, 0, len(names))
	for len(order) < len(names) {
		next := ""
		for _, name := range names {
			if placed[name] {
				continue
			}
			ready := true
			for _, d := range deps[name] {
				if !placed[d] {
					ready = false
					break
				}
			}
			if ready {
				next = name
				break
			}
		}
		if next == "" {
			return nil, &CycleError{Cycle: findCycle(names, deps, placed)}
		}
		placed[next] = true
		order = append(order, next)
	}
	return order, nil
}

// findCycle finds a cycle among the unplaced services (every one of which
// has an unplaced dependency), deterministically: start at the smallest
// name, follow the smallest unplaced dependency until a name repeats, and
// rotate the cycle to start at its smallest member.
func findCycle(names []string, deps map[string][]string, placed map[string]bool) []string {
	var cur string
	for _, name := range names {
		if !placed[name] {
			cur = name
			break
		}
	}
	at := map[string]int{}
	var path []string
	for {
		if i, seen := at[cur]; seen {
			cycle := path[i:]
			lo := 0
			for j, n := range cycle {
				if n < cycle[lo] {
					lo = j
				}
			}
			out := append(append([]string(nil), cycle[lo:]...), cycle[:lo]...)
			return append(out, out[0])
		}
		at[cur] = len(path)
		path = append(path, cur)
		for _, d := range deps[cur] {
			if !placed[d] {
				cur = d
				break
			}
		}
	}
}
