package znodes

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/go-zookeeper/zk"
)

// Member is a machine of a service, persistent at Paths.Member: created by
// the machine's agent at its first registration and deleted only by an
// operator (dcroll machine remove). A member that stops answering stays a
// member: it counts against availability until someone says otherwise.
type Member struct {
	V       int       `json:"v"`
	Machine string    `json:"machine"`
	Service string    `json:"service"`
	Rack    string    `json:"rack"`
	DC      string    `json:"dc"`
	Joined  time.Time `json:"joined"`
	// Version is the version the machine last reported serving, and Seen
	// when it last registered or changed version: what status shows of an
	// absent member.
	Version string    `json:"version,omitempty"`
	Seen    time.Time `json:"seen"`
	// Labels are the agent's labels (see Current.Labels).
	Labels map[string]string `json:"labels,omitempty"`
}

// BadBuild records a build (or a build with settings) that halted a
// rollout, at Paths.Bad(key). Pushes and rollbacks naming it are refused
// without --force, and a returning machine never starts it.
type BadBuild struct {
	V       int       `json:"v"`
	Key     string    `json:"key"`
	Service string    `json:"service"`
	Version string    `json:"version"`
	Build   string    `json:"build"`
	Kind    string    `json:"kind"` // upgrade (the build is bad) or settings (these settings on this build)
	SpecID  string    `json:"spec_id"`
	Reason  string    `json:"reason"`
	Machine string    `json:"machine"`
	Entry   string    `json:"entry,omitempty"`
	At      time.Time `json:"at"`
}

// BadKey names the bad-build record of a build ("" settings) or of a
// settings change on a build (settings = the settings' hash).
func BadKey(build, settings string) string {
	if settings == "" {
		return build
	}
	return build + "-s" + settings
}

// Fleet is one service's membership and live state: the model every rule
// (quorum, max_parallel, one rack at a time, completion) is computed over.
type Fleet struct {
	Members []Member  // persistent membership
	Current []Current // live (ephemeral) registrations
	Down    []Down    // persistent step records
}

// MemberState is one member with what is known of it now.
type MemberState struct {
	Machine string
	Rack    string
	Member  *Member  // nil: registered but its member record is missing (counted anyway)
	Current *Current // nil: absent (agent gone, frozen or partitioned)
	Down    *Down    // non-nil: mid-step
	// Available: registered, running, healthy and not mid-step.
	Available bool
}

// Why says in a few words why a member is unavailable ("" when available).
func (m MemberState) Why() string {
	switch {
	case m.Available:
		return ""
	case m.Down != nil:
		what := m.Down.Kind
		if what == "" {
			what = "upgrade"
		}
		return fmt.Sprintf("mid-step (%s %s -> %s since %s)", what, orDash(m.Down.From), orDash(m.Down.To), m.Down.At.UTC().Format("15:04:05"))
	case m.Current == nil:
		if m.Member != nil {
			return fmt.Sprintf("absent (last seen %s at %s)", orDash(m.Member.Version), m.Member.Seen.UTC().Format("2006-01-02 15:04:05"))
		}
		return "absent"
	case m.Current.State != StateRunning:
		return m.Current.State
	default:
		return "unhealthy"
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// States lists every member, sorted by machine. A machine counts as a
// member if it has a member record, a registration or a step record: the
// union, so that a missing record never makes a machine disappear.
func (f Fleet) States() []MemberState {
	by := map[string]*MemberState{}
	get := func(m string) *MemberState {
		if s := by[m]; s != nil {
			return s
		}
		s := &MemberState{Machine: m}
		by[m] = s
		return s
	}
	for i := range f.Members {
		s := get(f.Members[i].Machine)
		s.Member, s.Rack = &f.Members[i], f.Members[i].Rack
	}
	for i := range f.Current {
		s := get(f.Current[i].Machine)
		s.Current = &f.Current[i]
		if f.Current[i].Rack != "" {
			s.Rack = f.Current[i].Rack
		}
	}
	for i := range f.Down {
		s := get(f.Down[i].Machine)
		s.Down = &f.Down[i]
		if s.Rack == "" {
			s.Rack = f.Down[i].Rack
		}
	}
	out := make([]MemberState, 0, len(by))
	for _, s := range by {
		c := s.Current
		s.Available = c != nil && s.Down == nil && c.State == StateRunning && c.Healthy
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Machine < out[j].Machine })
	return out
}

// Count returns the number of members, how many are available, and the
// unavailable ones.
func (f Fleet) Count() (total, available int, unavailable []MemberState) {
	for _, s := range f.States() {
		total++
		if s.Available {
			available++
		} else {
			unavailable = append(unavailable, s)
		}
	}
	return total, available, unavailable
}

// CompletedBy reports whether the entry is done: every member is done with
// it (DoneBy), and there is at least one member. An absent member holds
// the entry back. Agents and the coordinator both apply this rule before
// marking an entry done.
func (e DeployEntry) CompletedBy(f Fleet) bool {
	states := f.States()
	if len(states) == 0 {
		return false
	}
	for _, s := range states {
		if !e.DoneBy(s) {
			return false
		}
	}
	return true
}

// DoneBy reports whether member s is done with the entry: registered, not
// mid-step, and running the entry's version from the entry's spec,
// healthy (for a removal: reporting its service stopped).
func (e DeployEntry) DoneBy(s MemberState) bool {
	c := s.Current
	if s.Down != nil || c == nil {
		return false
	}
	if e.Kind == KindRemoved {
		return c.State == StateStopped
	}
	return c.Version == e.Version && c.SpecID == e.SpecID && c.Healthy && c.State == StateRunning
}

// ReadFleet reads one service's members, registrations and step records
// (plain reads, no watches): the coordinator's and the CLI's view.
func (c *Conn) ReadFleet(service string) (Fleet, error) {
	var f Fleet
	p := c.Paths()
	err := readChildren(c, p.Members(service), func(name string, b []byte) {
		var m Member
		if Decode(b, &m) == nil {
			m.Machine = name
			f.Members = append(f.Members, m)
		}
	})
	if err != nil {
		return f, fmt.Errorf("read members of %s: %w", service, err)
	}
	err = readChildren(c, p.Current(service), func(name string, b []byte) {
		var cur Current
		if Decode(b, &cur) == nil {
			cur.Machine = name
			f.Current = append(f.Current, cur)
		}
	})
	if err != nil {
		return f, fmt.Errorf("read current of %s: %w", service, err)
	}
	err = readChildren(c, p.Down(service), func(name string, b []byte) {
		var d Down
		_ = Decode(b, &d) // unreadable: still a machine mid-step
		d.Machine = name
		f.Down = append(f.Down, d)
	})
	if err != nil {
		return f, fmt.Errorf("read step records of %s: %w", service, err)
	}
	return f, nil
}

// readChildren calls fn for every child of dir that still exists, in name
// order; a missing dir has no children.
func readChildren(c *Conn, dir string, fn func(name string, data []byte)) error {
	names, _, err := c.zk.Children(dir)
	if errors.Is(err, zk.ErrNoNode) {
		return nil
	}
	if err != nil {
		return err
	}
	slices.Sort(names)
	for _, n := range names {
		b, _, err := c.zk.Get(dir + "/" + n)
		if errors.Is(err, zk.ErrNoNode) {
			continue
		}
		if err != nil {
			return err
		}
		fn(n, b)
	}
	return nil
}

// SettingsHash identifies a service's settings (sorted key=value lines,
// sha256, 12 hex digits; "" for no settings): the second half of BadKey.
func SettingsHash(settings map[string]string) string {
	if len(settings) == 0 {
		return ""
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%q=%q\n", k, settings[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// SetEntry writes change(entry) to the deploy entry e, conditional on the
// version e was read at: exactly one of several concurrent writers wins.
// ok is false when someone changed or deleted the entry first (not an
// error: re-read).
func (c *Conn) SetEntry(e QueuedEntry, change func(*DeployEntry)) (ok bool, err error) {
	d := e.DeployEntry
	change(&d)
	_, err = c.zk.Set(c.paths.DeployEntry(e.Node), MustEncode(&d), e.ZVersion)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, zk.ErrBadVersion), errors.Is(err, zk.ErrNoNode):
		return false, nil
	}
	return false, fmt.Errorf("set deploy entry %s (%s): %w", e.Node, e.Service, err)
}
