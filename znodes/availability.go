package znodes

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/go-zookeeper/zk"
)

// Availability is a service's membership counted: what the quorum,
// max_parallel and one-domain-at-a-time rules need. Fleet.Availability
// computes it from a whole fleet; ReadAvailability from children lists,
// without reading the available members at all.
type Availability struct {
	// Total is the number of members (member record, registration or
	// step record: the union, as Fleet.States).
	Total int
	// Available members are registered, running, healthy and not mid-step.
	Available int
	// Unavailable lists every other member, by machine, read in full.
	Unavailable []MemberState
}

// Availability counts the fleet.
func (f Fleet) Availability() Availability {
	total, avail, unavail := f.Count()
	return Availability{Total: total, Available: avail, Unavailable: unavail}
}

// Reader is the narrow read interface of the read model: a WatchSet (reads
// that watch, answered from armed watches) or Plain(conn).
type Reader interface {
	Get(p string) ([]byte, *zk.Stat, error)
	Children(p string) ([]string, error)
}

// Plain returns a Reader of plain (unwatched) reads on c.
func Plain(c *Conn) Reader { return plainReader{c} }

type plainReader struct{ c *Conn }

func (r plainReader) Get(p string) ([]byte, *zk.Stat, error) { return r.c.zk.Get(p) }
func (r plainReader) Children(p string) ([]string, error) {
	names, _, err := r.c.zk.Children(p)
	return names, err
}

// ReadAvailability counts service's members from four children lists (the
// members, the registrations, the presence markers of /dc/up and the step
// records) and reads in full only the members that are not available: a
// member is available when it is registered, its marker is present and it
// has no step record. In a rollout one machine at a time that is a handful
// of reads whatever the size of the service, and through a WatchSet only
// the lists that changed cost a round trip.
func ReadAvailability(r Reader, p Paths, service string) (Availability, error) {
	var a Availability
	list := func(dir string) (map[string]bool, error) {
		names, err := r.Children(dir)
		if errors.Is(err, zk.ErrNoNode) {
			return map[string]bool{}, nil
		}
		if err != nil {
			return nil, err
		}
		set := make(map[string]bool, len(names))
		for _, n := range names {
			set[n] = true
		}
		return set, nil
	}
	members, err := list(p.Members(service))
	if err != nil {
		return a, fmt.Errorf("read members of %s: %w", service, err)
	}
	current, err := list(p.Current(service))
	if err != nil {
		return a, fmt.Errorf("read registrations of %s: %w", service, err)
	}
	up, err := list(p.Up(service))
	if err != nil {
		return a, fmt.Errorf("read availability markers of %s: %w", service, err)
	}
	down, err := list(p.Down(service))
	if err != nil {
		return a, fmt.Errorf("read step records of %s: %w", service, err)
	}
	all := map[string]bool{}
	for _, set := range []map[string]bool{members, current, down} {
		for n := range set {
			all[n] = true
		}
	}
	var unavailable []string
	for n := range all {
		if current[n] && up[n] && !down[n] {
			a.Available++
		} else {
			unavailable = append(unavailable, n)
		}
	}
	a.Total = len(all)
	slices.Sort(unavailable)
	// Read concurrently (pipelined on the one connection): a whole domain
	// mid-step costs about one round trip, not one per machine. A member
	// mid-step is read from its step record alone (rack, dc and labels
	// are there); another is read from its member record and registration.
	a.Unavailable = make([]MemberState, len(unavailable))
	errs := make([]error, len(unavailable))
	sem := make(chan struct{}, availParallel)
	var wg sync.WaitGroup
	for i, n := range unavailable {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			a.Unavailable[i], errs[i] = readMemberState(r, p, service, n, members[n] && !down[n], current[n] && !down[n], down[n])
		}()
	}
	wg.Wait()
	return a, errors.Join(errs...)
}

// availParallel bounds ReadAvailability's reads in flight.
const availParallel = 32

// ReadMemberState reads one machine's member record, registration and
// step record of service (each may be missing): a machine's view of itself.
func ReadMemberState(r Reader, p Paths, service, machine string) (MemberState, error) {
	return readMemberState(r, p, service, machine, true, true, true)
}

// readMemberState reads the records of one member that the lists say it
// has (a record deleted in between is simply missing; an unreadable member
// or step record still counts, an unreadable registration does not).
func readMemberState(r Reader, p Paths, service, machine string, member, current, down bool) (MemberState, error) {
	var f Fleet
	get := func(path string) ([]byte, bool, error) {
		b, _, err := r.Get(path)
		if errors.Is(err, zk.ErrNoNode) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("read %s: %w", path, err)
		}
		return b, true, nil
	}
	if member {
		b, ok, err := get(p.Member(service, machine))
		if err != nil {
			return MemberState{}, err
		}
		if ok {
			var m Member
			_ = Decode(b, &m) // unreadable: a member all the same
			m.Machine = machine
			f.Members = append(f.Members, m)
		}
	}
	if current {
		b, ok, err := get(p.CurrentMachine(service, machine))
		if err != nil {
			return MemberState{}, err
		}
		var c Current
		if ok && Decode(b, &c) == nil {
			c.Machine = machine
			f.Current = append(f.Current, c)
		}
	}
	if down {
		b, ok, err := get(p.DownMachine(service, machine))
		if err != nil {
			return MemberState{}, err
		}
		if ok {
			var d Down
			_ = Decode(b, &d) // unreadable: still mid-step
			d.Machine = machine
			f.Down = append(f.Down, d)
		}
	}
	if states := f.States(); len(states) == 1 {
		return states[0], nil
	}
	return MemberState{Machine: machine}, nil // every record went in between
}

// CurrentAvailable reports whether a registration payload says the
// machine is available (running and healthy): the condition of its /dc/up
// marker (Registration.WithMarker). A step record makes it unavailable all
// the same (ReadAvailability).
func CurrentAvailable(payload []byte) bool {
	var c Current
	return Decode(payload, &c) == nil && c.State == StateRunning && c.Healthy
}
