package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"sort"
	"strings"
	"time"

	"dcroll/spec"
	"dcroll/znodes"
)

// Action is what the decision core tells the driver to do next.
type Action int

const (
	// Nothing: the machine is where it should be.
	Nothing Action = iota
	// Wait: the machine should change but may not now; Reason says why.
	Wait
	// Stage: fetch, verify, lock and unpack Decision.Version (from spec
	// Decision.SpecID), then announce it in /dc/staging.
	Stage
	// TakeTurn: join the service's turn queue (/dc/turns/<svc>).
	TakeTurn
	// ReleaseTurn: give the turn back; this machine has nothing to upgrade.
	ReleaseTurn
	// SpendAndUpgrade: holding the turn and every rule allows it: spend the
	// quorum budget (one Multi) and upgrade to Decision.Version.
	SpendAndUpgrade
	// ApplySettings: write HEAD's settings and send the reload signal; no
	// restart, no turn, no budget.
	ApplySettings
	// Adopt: the machine already runs what HEAD wants; publish HEAD's spec
	// id in its /dc/current entry.
	Adopt
	// StartVersion: nothing is serving; start Decision.Version (the
	// returning-machine rule), staging it first if it is not local.
	StartVersion
	// MarkDone: Decision.Entry is complete; mark it done (versioned set).
	MarkDone
	// ClearDown: this machine's down marker outlived its step; delete it.
	ClearDown
)

var actionNames = [...]string{"nothing", "wait", "stage", "take-turn", "release-turn",
	"spend-and-upgrade", "apply-settings", "adopt", "start-version", "mark-done", "clear-down"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Decision is the output of Decide.
type Decision struct {
	Action Action
	// Version is the version to stage, start or upgrade to.
	Version string
	// SpecID is the spec that defines Version (where to find its blobs and
	// run line), or the spec to adopt.
	SpecID string
	// Entry is the deploy entry concerned (MarkDone; informational otherwise).
	Entry *Entry
	// Reason is a one-line, human explanation shown in logs and /status.
	Reason string
}

func (d Decision) String() string {
	var b strings.Builder
	b.WriteString(d.Action.String())
	if d.Version != "" {
		b.WriteString(" " + d.Version)
	}
	if d.Reason != "" {
		b.WriteString(": " + d.Reason)
	}
	return b.String()
}

// Entry is a deploy queue entry with its znode name and version.
type Entry = znodes.QueuedEntry

// Step is an upgrade (or revert) this machine has begun and not finished.
type Step struct {
	From   string    `json:"from"`
	To     string    `json:"to"`
	SpecID string    `json:"spec_id"`
	Entry  string    `json:"entry,omitempty"`
	Since  time.Time `json:"since"`
}

// Local is the machine's own view of its service.
type Local struct {
	// Running: a process of the service is up (healthy or not).
	Running bool
	// Healthy: the health check passes.
	Healthy bool
	// Version is the running version label ("" when none).
	Version string
	// Build is the BuildID of the running version.
	Build string
	// SpecID is the spec the running version and settings came from.
	SpecID string
	// Settings are the settings the running process was given.
	Settings map[string]string
	// Staged is the BuildID staged and announced in /dc/staging (blobs
	// verified and locked, artifact unpacked), "" when none.
	Staged string
	// Known maps version labels unpacked on this machine to the spec id
	// that defined them.
	Known map[string]string
	// InFlight is an unfinished upgrade step, nil when none.
	InFlight *Step
}

// Snapshot is everything the decision core looks at: a consistent-enough
// read of the znodes plus the machine's local state. The driver builds a
// fresh one after every watch nudge.
type Snapshot struct {
	Now     time.Time
	Machine string
	Rack    string
	Service string

	Local Local

	// HeadID is HEAD's spec id ("" when there is no HEAD yet).
	HeadID string
	// PrevID is the spec HEAD pointed to before (Head.Prev), where an
	// unfinished entry's FromVersion is defined.
	PrevID string
	// Head is HEAD's entry for Service (nil when HEAD lacks the service).
	Head *spec.Service
	// Window is HEAD's maintenance window (nil: always open).
	Window *spec.Window
	// StepTime is how much open window one upgrade step needs; 0 means the
	// health deadline of Head (or its default) plus StopGrace.
	StepTime time.Duration

	// Queue is the deploy queue in sequence order.
	Queue []Entry
	// Paused and PauseReason come from /dc/control.
	Paused      bool
	PauseReason string

	// Current are the entries of /dc/current/<Service> (this machine's too).
	Current []znodes.Current
	// Down are the entries of /dc/down/<Service>.
	Down []znodes.Down
	// HoldsTurn: this machine is first in /dc/turns/<Service>.
	HoldsTurn bool
}

// StopGrace is the default time between SIGTERM and SIGKILL, part of the
// default step time.
const StopGrace = 10 * time.Second

// BuildID identifies what a restart installs: the artifact, the data blobs
// and the run line of a service entry (a version label alone may be reused
// with a new artifact). It is stable across specs.
func BuildID(svc *spec.Service) string {
	if svc == nil {
		return ""
	}
	h := sha256.New()
	fmt.Fprintf(h, "%q\n%q\n%q\n", svc.Artifact, svc.Data, svc.Run)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// ActiveEntry returns the first entry whose state is not done, or nil.
func ActiveEntry(q []Entry) *Entry {
	for i := range q {
		if q[i].State != znodes.DeployDone {
			return &q[i]
		}
	}
	return nil
}

// EntryFor returns the last entry of service in the queue, or nil.
func EntryFor(q []Entry, service string) *Entry {
	for i := len(q) - 1; i >= 0; i-- {
		if q[i].Service == service {
			return &q[i]
		}
	}
	return nil
}

// Quorum is the availability arithmetic of one service.
type Quorum struct {
	Total     int // machines of the service: current entries plus orphan down markers
	Available int // healthy, running, not down
	Min       int // quorum.Min(Total)
	Down      int // down markers
}

// CountQuorum computes the availability of a service.
func CountQuorum(q spec.Quorum, current []znodes.Current, down []znodes.Down) Quorum {
	isDown := make(map[string]bool, len(down))
	for _, d := range down {
		isDown[d.Machine] = true
	}
	seen := make(map[string]bool, len(current))
	var r Quorum
	for _, c := range current {
		seen[c.Machine] = true
		r.Total++
		if c.Healthy && c.State == znodes.StateRunning && !isDown[c.Machine] {
			r.Available++
		}
	}
	for _, d := range down {
		if !seen[d.Machine] {
			r.Total++
		}
	}
	r.Down = len(down)
	r.Min = q.Min(r.Total)
	return r
}

// Decide is the pure decision core: given a snapshot, what may this
// machine do now? It never does I/O and never looks at the clock except
// through s.Now.
func Decide(s Snapshot) Decision {
	if st := s.Local.InFlight; st != nil {
		return Decision{Action: Wait, Version: st.To, Reason: fmt.Sprintf("step in progress: %s -> %s", orNone(st.From), st.To)}
	}
	me := findCurrent(s.Current, s.Machine)
	myDown := findDown(s.Down, s.Machine)
	if myDown != nil {
		if s.Local.Running && s.Local.Healthy {
			return Decision{Action: ClearDown, Reason: "down marker left after the step; healthy again"}
		}
		return Decision{Action: Wait, Reason: "own down marker present; waiting for the service to be healthy"}
	}
	if s.HeadID == "" {
		return Decision{Action: Wait, Reason: "no HEAD spec yet (dcroll push)"}
	}
	if s.Head == nil {
		return Decision{Action: Nothing, Reason: fmt.Sprintf("service %s is not in HEAD %s", s.Service, spec.ShortID(s.HeadID))}
	}
	target := s.Head.Version
	targetBuild := BuildID(s.Head)
	own := EntryFor(s.Queue, s.Service)
	active := ActiveEntry(s.Queue)

	// Returning machine: nothing serving, pick the version to start.
	if !s.Local.Running {
		return returning(s, own)
	}

	if s.Local.Build == targetBuild {
		if s.HoldsTurn {
			return Decision{Action: ReleaseTurn, Reason: "already runs " + target}
		}
		if !maps.Equal(s.Local.Settings, s.Head.Settings) {
			if w := gate(s, own, active); w != nil {
				return *w
			}
			return Decision{Action: ApplySettings, Version: target, SpecID: s.HeadID, Entry: own, Reason: "settings changed"}
		}
		if s.Local.SpecID != s.HeadID {
			return Decision{Action: Adopt, SpecID: s.HeadID, Version: target,
				Reason: fmt.Sprintf("runs %s as HEAD %s wants", target, spec.ShortID(s.HeadID))}
		}
		if active != nil && active.Service == s.Service && active.State != znodes.DeployHalted &&
			me != nil && active.CompletedBy(s.Current, len(s.Down)) {
			return Decision{Action: MarkDone, Entry: active, Version: active.Version,
				Reason: fmt.Sprintf("every machine of %s runs %s", s.Service, active.Version)}
		}
		if own != nil && own.State != znodes.DeployDone {
			return Decision{Action: Nothing, Reason: fmt.Sprintf("runs %s; waiting for the other machines of %s", target, s.Service)}
		}
		return Decision{Action: Nothing, Reason: "runs " + target}
	}

	// Runs something else than HEAD wants: stage, then wait for the turn.
	if s.Local.Staged != targetBuild {
		return Decision{Action: Stage, Version: target, SpecID: s.HeadID, Entry: own, Reason: "stage " + target}
	}
	if w := gate(s, own, active); w != nil {
		return *w
	}
	if need := stepTime(s); !s.Window.Open(s.Now) {
		return Decision{Action: Wait, Version: target, Reason: windowClosed(s.Window, s.Now)}
	} else if left := s.Window.Remaining(s.Now); left < need {
		return Decision{Action: Wait, Version: target,
			Reason: fmt.Sprintf("window closes in %s, a step needs %s", roundDur(left), roundDur(need))}
	}
	if !s.HoldsTurn {
		return Decision{Action: TakeTurn, Version: target, Entry: own, Reason: fmt.Sprintf("ready to upgrade %s -> %s", orNone(s.Local.Version), target)}
	}
	if me == nil {
		return Decision{Action: Wait, Version: target, Reason: "not registered in /dc/current yet"}
	}
	q := CountQuorum(s.Head.Quorum, s.Current, s.Down)
	maxPar := max(s.Head.MaxParallel, 1)
	if q.Down >= maxPar {
		return Decision{Action: Wait, Version: target,
			Reason: fmt.Sprintf("max_parallel: %d down (%s), limit %d", q.Down, downNames(s.Down), maxPar)}
	}
	for _, d := range s.Down {
		if d.Rack != s.Rack {
			return Decision{Action: Wait, Version: target,
				Reason: fmt.Sprintf("rack %s is down (%s); one rack at a time", d.Rack, downNames(s.Down))}
		}
	}
	after := q.Available
	if me.Healthy && me.State == znodes.StateRunning {
		after--
	}
	if after < q.Min {
		return Decision{Action: Wait, Version: target,
			Reason: fmt.Sprintf("quorum: %d healthy, need %d after me", q.Available, q.Min)}
	}
	return Decision{Action: SpendAndUpgrade, Version: target, SpecID: s.HeadID, Entry: own,
		Reason: fmt.Sprintf("quorum: %d healthy, %d after me >= %d; upgrade %s -> %s", q.Available, after, q.Min, orNone(s.Local.Version), target)}
}

// gate returns a Wait when the rollout of s.Service may not progress now:
// halted, paused, or another service's entry comes first.
func gate(s Snapshot, own, active *Entry) *Decision {
	target := s.Head.Version
	if active != nil && active.State == znodes.DeployHalted {
		return &Decision{Action: Wait, Version: target, Entry: active,
			Reason: fmt.Sprintf("halted: %s on %s: %s", active.Service, orNone(active.Machine), orNone(active.Reason))}
	}
	if s.Paused {
		r := "paused"
		if s.PauseReason != "" {
			r += ": " + s.PauseReason
		}
		return &Decision{Action: Wait, Version: target, Reason: r}
	}
	if active != nil && active.Service != s.Service {
		return &Decision{Action: Wait, Version: target, Entry: own,
			Reason: fmt.Sprintf("waiting for service %s to finish", active.Service)}
	}
	return nil
}

// returning applies the returning-machine rule of PROTOCOL.md.
func returning(s Snapshot, own *Entry) Decision {
	target := s.Head.Version
	start := func(v, id, why string) Decision {
		return Decision{Action: StartVersion, Version: v, SpecID: id, Entry: own, Reason: why}
	}
	if own == nil || own.State == znodes.DeployDone {
		return start(target, s.HeadID, "no rollout of "+s.Service+" unfinished: HEAD's "+target)
	}
	halted := own.State == znodes.DeployHalted
	counts := map[string]int{}
	specOf := map[string]string{}
	for _, c := range s.Current {
		if c.Machine == s.Machine || c.Version == "" || c.State != znodes.StateRunning {
			continue
		}
		if halted && c.Version == own.Version {
			continue
		}
		counts[c.Version]++
		if id := specOf[c.Version]; id == "" || c.SpecID < id {
			specOf[c.Version] = c.SpecID
		}
	}
	if len(counts) == 0 {
		if own.FromVersion != "" {
			if id, ok := s.Local.Known[own.FromVersion]; ok {
				return start(own.FromVersion, id, "no peers: "+own.FromVersion+" known locally")
			}
		}
		if halted && own.FromVersion != "" && s.PrevID != "" {
			return start(own.FromVersion, s.PrevID, fmt.Sprintf("no peers; %s is halted: %s", own.Version, own.FromVersion))
		}
		return start(target, s.HeadID, "no peers: HEAD's "+target)
	}
	best, n := "", -1
	var tied []string
	for v, c := range counts {
		switch {
		case c > n:
			best, n, tied = v, c, []string{v}
		case c == n:
			tied = append(tied, v)
		}
	}
	if len(tied) > 1 {
		sort.Strings(tied)
		best = tied[0]
		for _, v := range tied {
			if v == own.FromVersion {
				best = v
				break
			}
		}
		return start(best, specOf[best], fmt.Sprintf("rollout of %s unfinished: tie %s, chose %s", s.Service, strings.Join(tied, "/"), best))
	}
	id := specOf[best]
	if best == target && id == "" {
		id = s.HeadID
	}
	return start(best, id, fmt.Sprintf("rollout of %s unfinished: most machines run %s (%d)", s.Service, best, n))
}

func stepTime(s Snapshot) time.Duration {
	if s.StepTime > 0 {
		return s.StepTime
	}
	d := spec.DefaultHealthDeadline
	if s.Head.Health != nil && s.Head.Health.Deadline.Duration > 0 {
		d = s.Head.Health.Deadline.Duration
	}
	return d + StopGrace
}

func windowClosed(w *spec.Window, now time.Time) string {
	next := w.NextOpen(now)
	if next.IsZero() {
		return "window invalid: never open"
	}
	loc := next.Location()
	return fmt.Sprintf("window closed until %s %s", next.In(loc).Format("15:04"), loc)
}

func findCurrent(cs []znodes.Current, m string) *znodes.Current {
	for i := range cs {
		if cs[i].Machine == m {
			return &cs[i]
		}
	}
	return nil
}

func findDown(ds []znodes.Down, m string) *znodes.Down {
	for i := range ds {
		if ds[i].Machine == m {
			return &ds[i]
		}
	}
	return nil
}

func downNames(ds []znodes.Down) string {
	names := make([]string, 0, len(ds))
	for _, d := range ds {
		names = append(names, d.Machine)
	}
	sort.Strings(names)
	return strings.Join(names, ",")
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func roundDur(d time.Duration) time.Duration {
	if d > time.Minute {
		return d.Round(time.Second)
	}
	return d.Round(100 * time.Millisecond)
}
