package znodes

import (
	"fmt"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// DefaultRoot is the root znode of a dcroll data center.
const DefaultRoot = "/dc"

// Sequential-node name prefixes. A sequential child is named prefix+10 digits
// (protected ones carry a GUID before the prefix, see zk.CreateProtectedEphemeralSequential).
const (
	HistoryPrefix  = "h-"
	DeployPrefix   = "d-"
	StagingPrefix  = "s-"
	TurnPrefix     = "t-"
	ElectionPrefix = "n-"
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// ValidName reports whether s can be used as a single znode name component
// (service, machine, blob hex). It refuses "/", "." and "..", and empty names.
func ValidName(s string) error {
	if !nameRE.MatchString(s) || s == "." || s == ".." {
		return fmt.Errorf("invalid name %q: use letters, digits, '.', '_' or '-' (max 128, not starting with punctuation)", s)
	}
	return nil
}

// Paths builds every znode path of one dcroll root.
type Paths struct{ Root string }

// NewPaths returns Paths for root, cleaned ("/dc" when empty).
func NewPaths(root string) Paths {
	if root == "" {
		root = DefaultRoot
	}
	root = path.Clean("/" + root)
	return Paths{Root: root}
}

func (p Paths) join(elem ...string) string {
	return path.Join(append([]string{p.Root}, elem...)...)
}

func (p Paths) Head() string                    { return p.join("head") }
func (p Paths) Control() string                 { return p.join("control") }
func (p Paths) Rollout() string                 { return p.join("rollout") }
func (p Paths) ACL() string                     { return p.join("acl") }
func (p Paths) Specs() string                   { return p.join("specs") }
func (p Paths) Spec(id string) string           { return p.join("specs", id) }
func (p Paths) History() string                 { return p.join("history") }
func (p Paths) HistoryEntryPrefix() string      { return p.join("history", HistoryPrefix) }
func (p Paths) HistoryEntry(name string) string { return p.join("history", name) }
func (p Paths) Deploy() string                  { return p.join("deploy") }
func (p Paths) DeployEntryPrefix() string       { return p.join("deploy", DeployPrefix) }
func (p Paths) DeployEntry(name string) string  { return p.join("deploy", name) }
func (p Paths) CurrentRoot() string             { return p.join("current") }
func (p Paths) Current(service string) string   { return p.join("current", service) }
func (p Paths) CurrentMachine(service, machine string) string {
	return p.join("current", service, machine)
}
func (p Paths) StagingRoot() string           { return p.join("staging") }
func (p Paths) Staging(service string) string { return p.join("staging", service) }
func (p Paths) StagingPrefixOf(service string) string {
	return p.join("staging", service, StagingPrefix)
}
func (p Paths) TurnsRoot() string            { return p.join("turns") }
func (p Paths) Turns(service string) string  { return p.join("turns", service) }
func (p Paths) BudgetRoot() string           { return p.join("budget") }
func (p Paths) Budget(service string) string { return p.join("budget", service) }
func (p Paths) DownRoot() string             { return p.join("down") }
func (p Paths) Down(service string) string   { return p.join("down", service) }
func (p Paths) DownMachine(service, machine string) string {
	return p.join("down", service, machine)
}
func (p Paths) UpRoot() string           { return p.join("up") }
func (p Paths) Up(service string) string { return p.join("up", service) }
func (p Paths) UpMachine(service, machine string) string {
	return p.join("up", service, machine)
}
func (p Paths) MembersRoot() string           { return p.join("members") }
func (p Paths) Members(service string) string { return p.join("members", service) }
func (p Paths) Member(service, machine string) string {
	return p.join("members", service, machine)
}
func (p Paths) BadRoot() string                { return p.join("bad") }
func (p Paths) Bad(key string) string          { return p.join("bad", key) }
func (p Paths) Agents() string                 { return p.join("agents") }
func (p Paths) Agent(machine string) string    { return p.join("agents", machine) }
func (p Paths) ProgressRoot() string           { return p.join("progress") }
func (p Paths) Progress(machine string) string { return p.join("progress", machine) }
func (p Paths) Blobs() string                  { return p.join("blobs") }
func (p Paths) Blob(hex string) string         { return p.join("blobs", hex) }
func (p Paths) RecoveringRoot() string         { return p.join("recovering") }
func (p Paths) Recovering(hex string) string   { return p.join("recovering", hex) }
func (p Paths) RecoveringMachine(hex, machine string) string {
	return p.join("recovering", hex, machine)
}
func (p Paths) ElectionRoot() string        { return p.join("election") }
func (p Paths) Election(name string) string { return p.join("election", name) }

// Skeleton lists the persistent container znodes that must exist before
// agents and the coordinator run; EnsureSkeleton creates them.
func (p Paths) Skeleton() []string {
	return []string{p.Root, p.Specs(), p.History(), p.Deploy(), p.CurrentRoot(), p.StagingRoot(),
		p.TurnsRoot(), p.BudgetRoot(), p.DownRoot(), p.UpRoot(), p.MembersRoot(), p.BadRoot(), p.Agents(), p.ProgressRoot(),
		p.Blobs(), p.RecoveringRoot(), p.ElectionRoot()}
}

// SeqOf returns the sequence number of a sequential znode name (the last 10
// digits) and whether the name has one. Protected names ("_c_<guid>-t-0000000003")
// sort by this number, never by the full name.
func SeqOf(name string) (int64, bool) {
	if len(name) < 10 {
		return 0, false
	}
	n, err := strconv.ParseInt(name[len(name)-10:], 10, 64)
	if err != nil {
		return 0, false
	}
	return n, true
}

// SortSequential sorts sequential znode names by their sequence number; names
// without one sort last, by name.
func SortSequential(names []string) {
	sort.SliceStable(names, func(i, j int) bool {
		a, aok := SeqOf(names[i])
		b, bok := SeqOf(names[j])
		switch {
		case aok && bok:
			return a < b
		case aok != bok:
			return aok
		default:
			return names[i] < names[j]
		}
	})
}

// HasPrefixSeq reports whether name is a sequential node created with prefix
// (plain or protected).
func HasPrefixSeq(name, prefix string) bool {
	if _, ok := SeqOf(name); !ok {
		return false
	}
	base := name[:len(name)-10]
	return strings.HasSuffix(base, prefix)
}
