package agent

import (
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
	// ReleaseTurn: give the turn back; this machine has nothing to change.
	ReleaseTurn
	// SpendAndStep: holding the turn and every rule allows it: spend the
	// budget (one fenced Multi creating the persistent step record) and take
	// a step of Decision.Kind (upgrade, settings or removed) to
	// Decision.Version.
	SpendAndStep
	// Adopt: the machine already runs what HEAD wants (same build, same
	// settings); publish HEAD's spec id and version label.
	Adopt
	// StartVersion: nothing is serving; start Decision.Version (the
	// returning-machine rule), staging it first if it is not local.
	StartVersion
	// MarkDone: Decision.Entry is complete; mark it done (versioned set).
	MarkDone
	// ClearDown: this machine's step record outlived its step (healthy
	// again, any halt it owed written); delete it.
	ClearDown
	// WriteHalt: a halt this machine owes (Local.PendingHalt) has not
	// landed yet; write it before anything else.
	WriteHalt
)

var actionNames = [...]string{"nothing", "wait", "stage", "take-turn", "release-turn",
	"spend-and-step", "adopt", "start-version", "mark-done", "clear-down", "write-halt"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Step kinds: every change of a running machine is a step.
const (
	StepUpgrade  = "upgrade"  // restart on another build
	StepSettings = "settings" // same build, new settings: reload signal, health wait
	StepRemove   = "removed"  // the service left the spec: stop it
)

// Decision is the output of Decide.
type Decision struct {
	Action Action
	// Kind is the step kind of SpendAndStep.
	Kind string
	// Version is the version to stage, start or step to.
	Version string
	// SpecID is the spec that defines Version (where to find its blobs and
	// run line), or the spec to adopt.
	SpecID string
	// Entry is the deploy entry concerned (MarkDone, SpendAndStep;
	// informational otherwise).
	Entry *Entry
	// Reason is a one-line, human explanation shown in logs and /status.
	Reason string
}

func (d Decision) String() string {
	var b strings.Builder
	b.WriteString(d.Action.String())
	if d.Kind != "" && d.Kind != StepUpgrade {
		b.WriteString(" (" + d.Kind + ")")
	}
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

// Step is a step this machine has begun and not finished (state.json).
type Step struct {
	Kind   string    `json:"kind,omitempty"` // upgrade (default), settings, removed
	From   string    `json:"from"`
	To     string    `json:"to"`
	SpecID string    `json:"spec_id"`
	Entry  string    `json:"entry,omitempty"`
	Since  time.Time `json:"since"`
	// Reverting: the step failed and the machine is going back to From;
	// after kill -9 the next agent boots From, never To.
	Reverting bool `json:"reverting,omitempty"`
}

// PendingHalt is a halt this machine owes the queue: written to state.json
// before the revert begins, cleared once the halt (and the bad-build record)
// landed. The machine's step record stays until then.
type PendingHalt struct {
	Entry  string `json:"entry"`
	Reason string `json:"reason"`
	// Bad is the bad-build record to create with the halt (nil: the
	// failure is the machine's, not the build's, e.g. an mlock budget).
	Bad *znodes.BadBuild `json:"bad,omitempty"`
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
	// InFlight is an unfinished step, nil when none.
	InFlight *Step
	// PendingHalt is a halt not yet written, nil when none.
	PendingHalt *PendingHalt
}

// Snapshot is everything the decision core looks at: a consistent-enough
// read of the znodes plus the machine's local state. The driver builds a
// fresh one after every watch nudge.
type Snapshot struct {
	Now     time.Time
	Machine string
	Rack    string
	Service string
	// DC and Labels are this machine's data center and further labels
	// (Config.DC, Config.Labels): upgrade domains and waves.
	DC     string
	Labels map[string]string

	Local Local

	// HeadRefused says why HEAD was refused (Config.Trust: unsigned, bad
	// signature, untrusted key, replayed); HeadID and Head are then empty.
	HeadRefused string
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
	// StopGrace is the agent's SIGTERM-to-SIGKILL delay (Config.StopGrace;
	// 0: DefaultStopGrace).
	StopGrace time.Duration

	// Queue is the deploy queue in sequence order.
	Queue []Entry
	// Paused and PauseReason come from /dc/control.
	Paused      bool
	PauseReason string

	// Members are the persistent members of Service (/dc/members/<svc>).
	Members []znodes.Member
	// Current are the entries of /dc/current/<Service> (this machine's too).
	Current []znodes.Current
	// Down are the persistent step records of /dc/down/<Service>.
	Down []znodes.Down
	// Bad are the recorded bad builds by key (/dc/bad).
	Bad map[string]znodes.BadBuild
	// HoldsTurn: this machine is first in /dc/turns/<Service>.
	HoldsTurn bool
	// FleetPartial: Members, Current and Down hold only this machine's own
	// nodes (see worker.readFleet): nothing may be counted over them. The
	// turn holder reads Avail instead; a bystander counts nothing.
	FleetPartial bool
	// Avail is the service's membership counted (znodes.ReadAvailability:
	// children lists, the unavailable members in full), read by the turn
	// holder; nil: count Members, Current and Down.
	Avail *znodes.Availability
	// Budget is the service's budget node as read before the snapshot:
	// the spends of the active entry (its canaries) are counted there.
	Budget znodes.Budget
	// UnsafeRules is a test hook (DCROLL_TEST_UNSAFE_RULES): skip quorum,
	// max_parallel and the rack rule, so that the fault-matrix suite can
	// show its checker catches a broken rule. Never set in production.
	UnsafeRules bool
}

// Fleet is the service's membership model of the snapshot.
func (s Snapshot) Fleet() znodes.Fleet {
	return znodes.Fleet{Members: s.Members, Current: s.Current, Down: s.Down}
}

// availability is the membership counted: Avail when the driver read it
// so, else counted over Members, Current and Down.
func (s Snapshot) availability() znodes.Availability {
	if s.Avail != nil {
		return *s.Avail
	}
	return s.Fleet().Availability()
}

// BuildID identifies what a restart installs: the artifact, the data blobs
// and the run line of a service entry (a version label alone may be reused
// with a new artifact). It is stable across specs (spec.Service.BuildID).
func BuildID(svc *spec.Service) string { return svc.BuildID() }

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

// Decide is the pure decision core: given a snapshot, what may this
// machine do now? It never does I/O and never looks at the clock except
// through s.Now.
func Decide(s Snapshot) Decision {
	if st := s.Local.InFlight; st != nil {
		return Decision{Action: Wait, Version: st.To, Reason: fmt.Sprintf("step in progress: %s %s -> %s", orDefault(st.Kind, StepUpgrade), orNone(st.From), orNone(st.To))}
	}
	if h := s.Local.PendingHalt; h != nil {
		return Decision{Action: WriteHalt, Reason: fmt.Sprintf("halt of %s not written yet: %s", h.Entry, h.Reason)}
	}
	me := findCurrent(s.Current, s.Machine)
	if myDown := findDown(s.Down, s.Machine); myDown != nil {
		if s.Local.Running && s.Local.Healthy || !s.Local.Running && myDown.Kind == StepRemove {
			return Decision{Action: ClearDown, Reason: "step over (" + orDefault(myDown.Kind, StepUpgrade) + " " + orNone(myDown.To) + "); clear the step record"}
		}
		return Decision{Action: Wait, Reason: "own step record present; waiting for the service to be healthy (or for dcroll machine clear)"}
	}
	if s.HeadRefused != "" {
		return Decision{Action: Wait, Reason: "HEAD refused, running what runs: " + s.HeadRefused}
	}
	if s.HeadID == "" {
		return Decision{Action: Wait, Reason: "no HEAD spec yet (dcroll push)"}
	}
	own := EntryFor(s.Queue, s.Service)
	active := ActiveEntry(s.Queue)
	if s.Head == nil {
		return removal(s, own, active)
	}
	target := s.Head.Version
	targetBuild := BuildID(s.Head)

	// Returning machine: nothing serving, pick the version to start.
	if !s.Local.Running {
		return returning(s, own)
	}

	kind := ""
	switch {
	case s.Local.Build != targetBuild:
		kind = StepUpgrade
	case !maps.Equal(s.Local.Settings, s.Head.Settings):
		kind = StepSettings
	}
	if kind == "" {
		if s.HoldsTurn {
			return Decision{Action: ReleaseTurn, Reason: "already runs " + target}
		}
		if s.Local.SpecID != s.HeadID || s.Local.Version != target {
			return Decision{Action: Adopt, SpecID: s.HeadID, Version: target,
				Reason: fmt.Sprintf("runs the build and settings HEAD %s wants (%s)", spec.ShortID(s.HeadID), target)}
		}
		if active != nil && active.Service == s.Service && active.State != znodes.DeployHalted &&
			me != nil && !s.FleetPartial && active.CompletedBy(s.Fleet()) {
			return Decision{Action: MarkDone, Entry: active, Version: active.Version,
				Reason: fmt.Sprintf("every member of %s runs %s", s.Service, active.Version)}
		}
		if own != nil && own.State != znodes.DeployDone {
			return Decision{Action: Nothing, Reason: fmt.Sprintf("runs %s; waiting for the other members of %s", target, s.Service)}
		}
		return Decision{Action: Nothing, Reason: "runs " + target}
	}

	// Runs something else than HEAD wants: stage, then wait for the turn.
	// A bad build is neither staged nor stepped to (a halt says more).
	if b, ok := s.badFor(s.Head); ok {
		if w := gate(s, own, active); w != nil {
			return *w
		}
		return Decision{Action: Wait, Version: target, Entry: own,
			Reason: fmt.Sprintf("%s %s is a bad build: halted on %s at %s: %s; push a fixed build, dcroll rollback, or push --force", s.Service, b.Version, orNone(b.Machine), b.At.UTC().Format(time.DateTime), b.Reason)}
	}
	if kind == StepUpgrade && s.Local.Staged != targetBuild {
		return Decision{Action: Stage, Version: target, SpecID: s.HeadID, Entry: own, Reason: "stage " + target}
	}
	if w := gate(s, own, active); w != nil {
		return *w
	}
	if w := canaryHold(s, active, target); w != nil {
		return *w
	}
	if w := domainWait(s, active, target); w != nil {
		return *w
	}
	if w := windowWait(s, target); w != nil {
		return *w
	}
	if !s.HoldsTurn {
		return Decision{Action: TakeTurn, Version: target, Entry: own, Reason: fmt.Sprintf("ready to %s %s -> %s", kind, orNone(s.Local.Version), target)}
	}
	if me == nil {
		return Decision{Action: Wait, Version: target, Reason: "not registered in /dc/current yet"}
	}
	if w := stepRules(s, target, true); w != nil {
		return *w
	}
	return Decision{Action: SpendAndStep, Kind: kind, Version: target, SpecID: s.HeadID, Entry: active,
		Reason: fmt.Sprintf("%s %s -> %s: %s", kind, orNone(s.Local.Version), target, budgetNote(s, true))}
}

// removal decides for a service HEAD no longer has: stop it machine by
// machine under its removal entry (max_parallel, one rack, window; no
// quorum: the service is going away).
func removal(s Snapshot, own, active *Entry) Decision {
	if !s.Local.Running {
		if s.HoldsTurn {
			return Decision{Action: ReleaseTurn, Reason: "stopped"}
		}
		if active != nil && active.Service == s.Service && active.Kind == znodes.KindRemoved &&
			active.State != znodes.DeployHalted && active.CompletedBy(s.Fleet()) {
			return Decision{Action: MarkDone, Entry: active, Reason: fmt.Sprintf("every member of %s stopped", s.Service)}
		}
		return Decision{Action: Nothing, Reason: fmt.Sprintf("service %s is not in HEAD %s", s.Service, spec.ShortID(s.HeadID))}
	}
	if own == nil || own.Kind != znodes.KindRemoved || own.State == znodes.DeployDone {
		return Decision{Action: Wait, Reason: fmt.Sprintf("service %s is not in HEAD %s but runs here; no removal entry in the queue", s.Service, spec.ShortID(s.HeadID))}
	}
	if active != nil && active.State == znodes.DeployHalted {
		return Decision{Action: Wait, Entry: active, Reason: haltedReason(active)}
	}
	if s.Paused {
		return Decision{Action: Wait, Reason: pausedReason(s)}
	}
	if active == nil || active.Node != own.Node {
		return Decision{Action: Wait, Entry: own, Reason: fmt.Sprintf("waiting for service %s to finish", active.Service)}
	}
	if w := windowWait(s, ""); w != nil {
		return *w
	}
	if !s.HoldsTurn {
		return Decision{Action: TakeTurn, Entry: own, Reason: "ready to stop " + s.Service + " (removed from the spec)"}
	}
	if w := stepRules(s, "", false); w != nil { // stopped members are done, not unavailable
		return *w
	}
	return Decision{Action: SpendAndStep, Kind: StepRemove, SpecID: s.HeadID, Entry: active,
		Reason: fmt.Sprintf("stop %s %s (removed from the spec): %s", s.Service, s.Local.Version, budgetNote(s, false))}
}

// stepRules returns a Wait when taking a step now would break a promise:
// more than max_parallel members unavailable, two racks unavailable at
// once, or (withQuorum) fewer than the quorum of members available after
// this machine goes. Every member counts: absent, not running, unhealthy
// and mid-step members are unavailable. Without quorum (a removal), members
// that already stopped the service are done, not unavailable.
func stepRules(s Snapshot, target string, withQuorum bool) *Decision {
	if s.UnsafeRules {
		return nil
	}
	maxPar, q := 1, spec.Quorum{} // a removal (no HEAD entry): one machine at a time
	if s.Head != nil {
		maxPar, q = max(s.Head.MaxParallel, 1), s.Head.Quorum
	}
	a := s.availability()
	total, avail, unavail := a.Total, a.Available, a.Unavailable
	var others []znodes.MemberState
	meAvail := true
	for _, m := range unavail {
		switch {
		case m.Machine == s.Machine:
			meAvail = false
		case !withQuorum && m.Down == nil && m.Current != nil && m.Current.State == znodes.StateStopped:
			// A removal: members that already stopped are done, not down.
		default:
			others = append(others, m)
		}
	}
	if len(others)+1 > maxPar {
		return &Decision{Action: Wait, Version: target,
			Reason: fmt.Sprintf("max_parallel %d: %d other member(s) unavailable: %s", maxPar, len(others), describe(others))}
	}
	for _, m := range others {
		if domainValue(s, &m) != domainValue(s, nil) {
			return &Decision{Action: Wait, Version: target, Reason: oneDomainReason(s, m, others)}
		}
	}
	if withQuorum {
		need := q.Min(total)
		after := avail
		if meAvail {
			after--
		}
		if after < need {
			r := fmt.Sprintf("quorum: %d of %d members available, need %d after me", avail, total, need)
			if len(others) > 0 {
				r += "; unavailable: " + describe(others)
			}
			return &Decision{Action: Wait, Version: target, Reason: r}
		}
	}
	return nil
}

// budgetNote is the "why it may go" part of a SpendAndStep reason.
func budgetNote(s Snapshot, withQuorum bool) string {
	if s.UnsafeRules {
		return "UNSAFE test rules: quorum, max_parallel and racks ignored"
	}
	a := s.availability()
	total, avail := a.Total, a.Available
	if !withQuorum {
		return fmt.Sprintf("%d of %d members available", avail, total)
	}
	return fmt.Sprintf("quorum: %d of %d members available, %d needed after me", avail, total, s.Head.Quorum.Min(total))
}

func describe(ms []znodes.MemberState) string {
	parts := make([]string, 0, len(ms))
	for _, m := range ms {
		parts = append(parts, m.Machine+" "+m.Why())
	}
	return strings.Join(parts, ", ")
}

// badFor returns the bad-build record that forbids running svc: the
// build itself, or these settings on this build.
func (s Snapshot) badFor(svc *spec.Service) (znodes.BadBuild, bool) {
	build := BuildID(svc)
	if b, ok := s.Bad[znodes.BadKey(build, "")]; ok {
		return b, true
	}
	if b, ok := s.Bad[znodes.BadKey(build, znodes.SettingsHash(svc.Settings))]; ok {
		return b, true
	}
	return znodes.BadBuild{}, false
}

// badVersion reports whether version of s.Service is a recorded bad build.
func (s Snapshot) badVersion(version string) bool {
	for _, b := range s.Bad {
		if b.Service == s.Service && b.Version == version && b.Kind != StepSettings {
			return true
		}
	}
	return false
}

// gate returns a Wait when the rollout of s.Service may not progress now:
// no active entry of its own, halted, paused, or another service's entry
// comes first. No step without an active queue entry for it.
func gate(s Snapshot, own, active *Entry) *Decision {
	target := s.Head.Version
	switch {
	case active != nil && active.State == znodes.DeployHalted:
		return &Decision{Action: Wait, Version: target, Entry: active, Reason: haltedReason(active)}
	case s.Paused:
		return &Decision{Action: Wait, Version: target, Reason: pausedReason(s)}
	case active == nil || own == nil || own.State == znodes.DeployDone:
		return &Decision{Action: Wait, Version: target,
			Reason: fmt.Sprintf("HEAD wants %s %s but the deploy queue has no unfinished entry for it: push it again with --supersede, or dcroll rollback", s.Service, target)}
	case active.Service != s.Service:
		return &Decision{Action: Wait, Version: target, Entry: own,
			Reason: fmt.Sprintf("waiting for service %s to finish", active.Service)}
	}
	return nil
}

// canaryHold returns a Wait when the service has a canary phase that is
// not over (the entry is not promoted) and its canaries are out: as many
// machines as the canary's have spent budget for the entry (counted in the
// budget node, in the same Multi as each spend, so bystanders see it too
// and a spend decided on an old count fails on the budget version). The
// rest wait for the bake time (the coordinator then promotes the entry) or
// for dcroll promote.
func canaryHold(s Snapshot, active *Entry, target string) *Decision {
	c := s.Head.Canary
	if c == nil || active == nil || active.Promoted {
		return nil
	}
	n, first := s.Budget.StepsIn(active.Node)
	need := c.Machines
	if !s.FleetPartial || s.Avail != nil {
		need = min(need, s.availability().Total) // a service smaller than its canary
	}
	if n == 0 || n < need {
		return nil
	}
	out := first[:min(len(first), c.Machines)]
	var until string
	switch {
	case c.Bake.Duration == 0:
		until = "no bake time: waiting for dcroll promote " + s.Service
	case active.BakeSince.IsZero():
		until = fmt.Sprintf("bake %s starts once they are all healthy on %s; dcroll promote %s skips it", c.Bake, target, s.Service)
	default:
		until = fmt.Sprintf("baking until %s; dcroll promote %s skips it",
			active.BakeSince.Add(c.Bake.Duration).UTC().Format("15:04:05 MST"), s.Service)
	}
	return &Decision{Action: Wait, Version: target, Entry: active,
		Reason: fmt.Sprintf("canary: %s step first (%s)", strings.Join(out, ","), until)}
}

func haltedReason(e *Entry) string {
	return fmt.Sprintf("halted: %s on %s: %s (dcroll resume, or dcroll rollback)", e.Service, orNone(e.Machine), orNone(e.Reason))
}

func pausedReason(s Snapshot) string {
	if s.PauseReason != "" {
		return "paused: " + s.PauseReason
	}
	return "paused"
}

// windowWait returns a Wait when the maintenance window is closed or has
// less time left than one step needs.
func windowWait(s Snapshot, target string) *Decision {
	if !s.Window.Open(s.Now) {
		return &Decision{Action: Wait, Version: target, Reason: windowClosed(s.Window, s.Now)}
	}
	if need, left := stepTime(s), s.Window.Remaining(s.Now); left < need {
		return &Decision{Action: Wait, Version: target,
			Reason: fmt.Sprintf("window closes in %s, a step needs %s", roundDur(left), roundDur(need))}
	}
	return nil
}

// returning applies the returning-machine rule of PROTOCOL.md.
func returning(s Snapshot, own *Entry) Decision {
	target := s.Head.Version
	start := func(v, id, why string) Decision {
		return Decision{Action: StartVersion, Version: v, SpecID: id, Entry: own, Reason: why}
	}
	if _, bad := s.badFor(s.Head); bad && own != nil && own.FromVersion != "" {
		// HEAD's build halted a rollout: never start it on a returning machine.
		if id, ok := s.Local.Known[own.FromVersion]; ok {
			return start(own.FromVersion, id, fmt.Sprintf("HEAD's %s is a bad build: %s known locally", target, own.FromVersion))
		}
		if s.PrevID != "" {
			return start(own.FromVersion, s.PrevID, fmt.Sprintf("HEAD's %s is a bad build: %s", target, own.FromVersion))
		}
	}
	if own == nil || own.State == znodes.DeployDone {
		return start(target, s.HeadID, "no rollout of "+s.Service+" unfinished: HEAD's "+target)
	}
	if own.Kind == string(spec.ChangeNew) {
		// No older version to prefer (the driver does not read the peers).
		return start(target, s.HeadID, "service "+s.Service+" is new in this rollout: HEAD's "+target)
	}
	halted := own.State == znodes.DeployHalted
	counts := map[string]int{}
	specOf := map[string]string{}
	for _, c := range s.Current {
		if c.Machine == s.Machine || c.Version == "" || c.State != znodes.StateRunning {
			continue
		}
		if halted && c.Version == own.Version || s.badVersion(c.Version) {
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
	if s.Head != nil && s.Head.Health != nil && s.Head.Health.Deadline.Duration > 0 {
		d = s.Head.Health.Deadline.Duration
	}
	if s.StopGrace > 0 {
		return d + s.StopGrace
	}
	return d + DefaultStopGrace
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

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
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
