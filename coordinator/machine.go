package coordinator

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/go-zookeeper/zk"

	"dcroll/spec"
	"dcroll/znodes"
)

// Sentinel errors of the operator commands.
var (
	// ErrRegistered: the machine's agent is registered now.
	ErrRegistered = errors.New("machine is registered now")
	// ErrUnknownMachine: no member, registration or step record names it.
	ErrUnknownMachine = errors.New("unknown machine")
	// ErrUnknownService: nothing is known of the service.
	ErrUnknownService = errors.New("unknown service")
	// ErrNoStep: the machine has no step record to clear.
	ErrNoStep = errors.New("no step record")
)

// MachineRow is one member of one service, as dcroll machine list shows it.
type MachineRow struct {
	Service string `json:"service"`
	MemberStatus
}

// Machines lists every member of every service, or of service only, by
// service then machine. An unknown service is an error naming the known
// ones.
func Machines(c *znodes.Conn, service string) ([]MachineRow, error) {
	services, err := fleetServices(c)
	if err != nil {
		return nil, fmt.Errorf("machine list: %w", err)
	}
	if service != "" {
		if err := checkService(c, "machine list", service, services); err != nil {
			return nil, err
		}
		services = []string{service}
	}
	rows := []MachineRow{}
	for _, s := range services {
		f, err := c.ReadFleet(s)
		if err != nil {
			return nil, fmt.Errorf("machine list: %w", err)
		}
		for _, ms := range f.States() {
			rows = append(rows, MachineRow{Service: s, MemberStatus: memberStatus(ms)})
		}
	}
	return rows, nil
}

// RemoveOptions tune RemoveMachine.
type RemoveOptions struct {
	// Service limits the removal to one service ("" = every service).
	Service string
	// Force removes the records even though the machine's agent is
	// registered now (it may register the machine again).
	Force bool
}

// RemoveResult says what RemoveMachine deleted.
type RemoveResult struct {
	Machine  string   `json:"machine"`
	Services []string `json:"services"` // services it is no longer a member of
	Deleted  []string `json:"deleted"`  // znode paths
}

// RemoveMachine deletes machine's member records and step records (of
// every service, or of o.Service) in one transaction of versioned
// deletes: the operator says this machine is gone for good, so it no
// longer counts against availability nor holds an entry back. It refuses
// (changing nothing) a machine whose agent is registered now unless
// o.Force, and a machine no record names.
func RemoveMachine(c *znodes.Conn, machine string, o RemoveOptions) (*RemoveResult, error) {
	const what = "machine remove"
	p := c.Paths()
	services, err := fleetServices(c)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if o.Service != "" {
		if err := checkService(c, what, o.Service, services); err != nil {
			return nil, err
		}
		services = []string{o.Service}
	}
	res := &RemoveResult{Machine: machine, Services: []string{}, Deleted: []string{}}
	var ops []any
	var registered, known []string
	for _, s := range services {
		f, err := c.ReadFleet(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		var found bool
		for _, ms := range f.States() {
			known = append(known, ms.Machine)
			if ms.Machine != machine {
				continue
			}
			found = true
			if ms.Current != nil {
				registered = append(registered, s)
			}
		}
		if !found {
			continue
		}
		var dels []any
		for _, path := range []string{p.Member(s, machine), p.DownMachine(s, machine)} {
			ok, st, err := c.ZK().Exists(path)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", what, err)
			}
			if ok {
				dels = append(dels, &zk.DeleteRequest{Path: path, Version: st.Version})
				res.Deleted = append(res.Deleted, path)
			}
		}
		if len(dels) == 0 {
			continue // only registered: nothing persistent to delete
		}
		if !o.Force {
			ops = append(ops, assertAbsent(c, s, machine)...)
		}
		ops = append(ops, dels...)
		res.Services = append(res.Services, s)
	}
	if len(registered) > 0 && !o.Force {
		return nil, &refusal{err: ErrRegistered, msg: fmt.Sprintf("%s: %s is registered now in %s (its agent runs): stop its agent first, or --force",
			what, machine, strings.Join(registered, ", "))}
	}
	if len(res.Deleted) == 0 {
		if len(registered) > 0 {
			return nil, fmt.Errorf("%s: %s has no member or step record to delete (it is only registered: stop its agent)", what, machine)
		}
		return nil, unknownMachine(what, machine, o.Service, known)
	}
	if _, err := c.Multi(ops...); err != nil {
		if errors.Is(err, zk.ErrNodeExists) {
			return nil, &refusal{err: ErrRegistered, msg: fmt.Sprintf("%s: %s registered while this ran, nothing was changed: stop its agent first, or --force", what, machine)}
		}
		return nil, fmt.Errorf("%s: nothing was changed, run it again: %w", what, err)
	}
	return res, nil
}

// ClearStep deletes machine's step record of service: the operator says
// the step is over (a dead machine that will not come back mid-step), so
// the quorum budget it holds is free again. It refuses when there is no
// step record, and when the machine's agent is registered now (it owns
// the step and deletes the record itself when the step ends) unless force.
func ClearStep(c *znodes.Conn, machine, service string, force bool) (*znodes.Down, error) {
	const what = "machine clear"
	p := c.Paths()
	var d znodes.Down
	st, err := c.GetJSON(p.DownMachine(service, machine), &d)
	if errors.Is(err, zk.ErrNoNode) {
		services, ferr := fleetServices(c)
		if ferr != nil {
			return nil, fmt.Errorf("%s: %w", what, ferr)
		}
		if err := checkService(c, what, service, services); err != nil {
			return nil, err
		}
		f, ferr := c.ReadFleet(service)
		if ferr != nil {
			return nil, fmt.Errorf("%s: %w", what, ferr)
		}
		var known, mid []string
		for _, ms := range f.States() {
			known = append(known, ms.Machine)
			if ms.Down != nil {
				mid = append(mid, ms.Machine)
			}
		}
		if !slices.Contains(known, machine) {
			return nil, unknownMachine(what, machine, service, known)
		}
		hint := "no member of " + service + " is mid-step"
		if len(mid) > 0 {
			hint = "mid-step: " + strings.Join(mid, ", ")
		}
		return nil, &refusal{err: ErrNoStep, msg: fmt.Sprintf("%s: %s has no step record in %s, nothing to clear (%s)", what, machine, service, hint)}
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	d.Machine = machine
	ok, _, err := c.ZK().Exists(p.CurrentMachine(service, machine))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if ok && !force {
		return nil, &refusal{err: ErrRegistered, msg: fmt.Sprintf("%s: %s is registered now in %s (its agent runs, owns the step and deletes the record when the step ends): stop its agent first, or --force",
			what, machine, service)}
	}
	var ops []any
	if !force {
		ops = assertAbsent(c, service, machine)
	}
	ops = append(ops, &zk.DeleteRequest{Path: p.DownMachine(service, machine), Version: st.Version})
	if _, err := c.Multi(ops...); err != nil {
		if errors.Is(err, zk.ErrNodeExists) {
			return nil, &refusal{err: ErrRegistered, msg: fmt.Sprintf("%s: %s registered while this ran, nothing was changed: stop its agent first, or --force", what, machine)}
		}
		return nil, fmt.Errorf("%s: nothing was changed, run it again: %w", what, err)
	}
	return &d, nil
}

// assertAbsent returns Multi ops that fail the transaction (with
// ErrNodeExists) if machine's registration of service exists when it
// commits: a create and a delete of that path. A transaction cannot check
// that a node does not exist otherwise. With no /dc/current/<service>
// parent there is nothing to assert (the create would fail with ErrNoNode).
func assertAbsent(c *znodes.Conn, service, machine string) []any {
	if ok, _, err := c.ZK().Exists(c.Paths().Current(service)); err != nil || !ok {
		return nil
	}
	path := c.Paths().CurrentMachine(service, machine)
	return []any{c.CreateOp(path, nil, 0), &zk.DeleteRequest{Path: path, Version: 0}}
}

// BadBuilds lists the builds recorded as having halted a rollout, oldest first.
func BadBuilds(c *znodes.Conn) ([]znodes.BadBuild, error) {
	p := c.Paths()
	keys, err := children(c, p.BadRoot())
	if err != nil {
		return nil, fmt.Errorf("bad list: %w", err)
	}
	out := []znodes.BadBuild{}
	for _, k := range keys {
		var b znodes.BadBuild
		if _, err := c.GetJSON(p.Bad(k), &b); err != nil {
			if errors.Is(err, zk.ErrNoNode) {
				continue
			}
			return nil, fmt.Errorf("bad list: %w", err)
		}
		b.Key = k
		out = append(out, b)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out, nil
}

func unknownMachine(what, machine, service string, known []string) error {
	slices.Sort(known)
	known = slices.Compact(known)
	in := ""
	if service != "" {
		in = " in " + service
	}
	if len(known) == 0 {
		return &refusal{err: ErrUnknownMachine, msg: fmt.Sprintf("%s: no machine %q%s: no machine is a member yet", what, machine, in)}
	}
	return &refusal{err: ErrUnknownMachine, msg: fmt.Sprintf("%s: no machine %q%s: %s", what, machine, in, spec.Suggest(machine, known, "members"))}
}

// checkService refuses a service that has no members, registrations or
// step records (services, from fleetServices) and is not in HEAD's spec.
func checkService(c *znodes.Conn, what, service string, services []string) error {
	if slices.Contains(services, service) {
		return nil
	}
	known := slices.Clone(services)
	if h, _, err := ReadHead(c); err == nil && h != nil {
		if sp, err := LoadSpec(c, h.SpecID); err == nil {
			if sp.Services[service] != nil {
				return nil
			}
			known = append(known, sp.Names()...)
		}
	}
	slices.Sort(known)
	known = slices.Compact(known)
	if len(known) == 0 {
		return &refusal{err: ErrUnknownService, msg: fmt.Sprintf("%s: no service %q: no service has members yet", what, service)}
	}
	return &refusal{err: ErrUnknownService, msg: fmt.Sprintf("%s: no service %q: %s", what, service, spec.Suggest(service, known, "services"))}
}
