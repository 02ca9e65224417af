package agent

import (
	"slices"
	"strings"
	"testing"
	"time"

	"dcroll/spec"
	"dcroll/znodes"
)

// The fixture: service web with members m1..m5 (persistent member records
// and live registrations), racks r1 (m1 m2 m3) and r2 (m4 m5), all running
// v1 from spec "old"; HEAD "new" wants v2 (quorum 3, max_parallel 1). This
// machine is m1, it has v2 staged and holds the turn: the base snapshot
// says go.

var testNow = time.Date(2026, 11, 23, 2, 30, 0, 0, time.UTC)

func svcV(version string, quorum spec.Quorum, maxPar int) *spec.Service {
	return &spec.Service{
		Version:     version,
		Artifact:    "sha256:" + strings.Repeat(version[len(version)-1:], 64),
		Run:         []string{"./hello"},
		Quorum:      quorum,
		MaxParallel: maxPar,
		Health:      &spec.Health{Deadline: spec.Duration{Duration: time.Minute}},
	}
}

var (
	v1 = svcV("v1", spec.Quorum{Count: 3}, 1)
	v2 = svcV("v2", spec.Quorum{Count: 3}, 1)
	v3 = svcV("v3", spec.Quorum{Count: 3}, 1)
)

var racks = map[string]string{"m1": "r1", "m2": "r1", "m3": "r1", "m4": "r2", "m5": "r2"}

func cur(m, version, specID string, healthy bool) znodes.Current {
	return znodes.Current{Machine: m, Service: "web", Rack: racks[m], Version: version, SpecID: specID,
		State: znodes.StateRunning, Healthy: healthy}
}

func member(m string) znodes.Member {
	return znodes.Member{Machine: m, Service: "web", Rack: racks[m], Version: "v1", Seen: testNow.Add(-time.Hour)}
}

func down(m string) znodes.Down {
	return znodes.Down{Machine: m, Rack: racks[m], From: "v1", To: "v2"}
}

func entry(node, service, state string) Entry {
	return Entry{Node: node, DeployEntry: znodes.DeployEntry{Service: service, Version: "v2", FromVersion: "v1",
		SpecID: "new", Kind: "upgrade", State: state}}
}

func base() Snapshot {
	head := *v2
	s := Snapshot{
		Now: testNow, Machine: "m1", Rack: "r1", Service: "web",
		Local: Local{Running: true, Healthy: true, Version: "v1", Build: BuildID(v1), SpecID: "old",
			Staged: BuildID(v2), Known: map[string]string{"v1": "old"}},
		HeadID: "new", PrevID: "old", Head: &head,
		Queue:     []Entry{entry("d-0000000001", "web", znodes.DeployPending)},
		HoldsTurn: true,
	}
	for _, m := range []string{"m1", "m2", "m3", "m4", "m5"} {
		s.Members = append(s.Members, member(m))
		s.Current = append(s.Current, cur(m, "v1", "old", true))
	}
	return s
}

// atTarget turns the fixture into "every machine already runs v2 from new".
func atTarget(s *Snapshot) {
	s.Local.Version, s.Local.Build, s.Local.SpecID, s.Local.Staged = "v2", BuildID(v2), "new", ""
	for i := range s.Current {
		s.Current[i].Version, s.Current[i].SpecID = "v2", "new"
	}
	s.HoldsTurn = false
	s.Queue[0].State = znodes.DeployRolling
}

var hi = map[string]string{"greeting": "hi"}

// settingsChange turns the fixture into "every machine runs v2 from old
// with no settings; HEAD new wants v2 with greeting=hi", m1 holding the turn.
func settingsChange(s *Snapshot) {
	atTarget(s)
	s.Local.SpecID = "old"
	s.Head.Settings = hi
	s.Queue[0].Kind, s.Queue[0].State = "settings", znodes.DeployPending
	s.HoldsTurn = true
}

// removing turns the fixture into "HEAD new no longer has web; its removal
// entry is active", m1 still running v1 and holding the turn.
func removing(s *Snapshot) {
	s.Head = nil
	s.Queue = []Entry{{Node: "d-0000000002", DeployEntry: znodes.DeployEntry{Service: "web", SpecID: "new",
		Kind: znodes.KindRemoved, State: znodes.DeployRolling}}}
}

// stopped marks machines as reporting their service stopped.
func stopped(ms ...string) func(*Snapshot) { return setState(znodes.StateStopped, ms...) }

func setState(state string, ms ...string) func(*Snapshot) {
	return func(s *Snapshot) {
		for _, m := range ms {
			for i := range s.Current {
				if s.Current[i].Machine == m {
					s.Current[i].State, s.Current[i].Healthy = state, false
				}
			}
		}
	}
}

func unhealthy(ms ...string) func(*Snapshot) {
	return func(s *Snapshot) {
		for _, m := range ms {
			for i := range s.Current {
				if s.Current[i].Machine == m {
					s.Current[i].Healthy = false
				}
			}
		}
	}
}

// absent drops the registrations of machines; their member records stay.
func absent(ms ...string) func(*Snapshot) {
	return func(s *Snapshot) {
		for _, m := range ms {
			for i := range s.Current {
				if s.Current[i].Machine == m {
					s.Current = append(s.Current[:i], s.Current[i+1:]...)
					break
				}
			}
		}
	}
}

func badBuild(svc *spec.Service, settings map[string]string) (string, znodes.BadBuild) {
	b := znodes.BadBuild{Service: "web", Version: svc.Version, Build: BuildID(svc), Kind: StepUpgrade,
		SpecID: "new", Reason: "not healthy after 60s", Machine: "m3", At: testNow.Add(-time.Hour)}
	b.Key = znodes.BadKey(b.Build, "")
	if settings != nil {
		b.Kind, b.Key = StepSettings, znodes.BadKey(b.Build, znodes.SettingsHash(settings))
	}
	return b.Key, b
}

func markBad(svc *spec.Service, settings map[string]string) func(*Snapshot) {
	return func(s *Snapshot) {
		k, b := badBuild(svc, settings)
		if s.Bad == nil {
			s.Bad = map[string]znodes.BadBuild{}
		}
		s.Bad[k] = b
	}
}

func all(mods ...func(*Snapshot)) func(*Snapshot) {
	return func(s *Snapshot) {
		for _, m := range mods {
			m(s)
		}
	}
}

// canary gives HEAD's service a canary phase.
func canary(machines int, bake time.Duration) func(*Snapshot) {
	return func(s *Snapshot) {
		s.Head.Canary = &spec.Canary{Machines: machines, Bake: spec.Duration{Duration: bake}}
	}
}

// doneWith makes machines run v2 from new, healthy: done with the entry.
func doneWith(ms ...string) func(*Snapshot) {
	return func(s *Snapshot) {
		for _, m := range ms {
			for i := range s.Current {
				if s.Current[i].Machine == m {
					s.Current[i].Version, s.Current[i].SpecID = "v2", "new"
				}
			}
		}
	}
}

func maxPar(n int) func(*Snapshot) { return func(s *Snapshot) { s.Head.MaxParallel = n } }

// spent records spends of the active entry in the budget node.
func spent(ms ...string) func(*Snapshot) {
	return func(s *Snapshot) {
		for _, m := range ms {
			s.Budget = s.Budget.Spent(m, s.Queue[0].Node, testNow)
		}
	}
}

// asBystander makes the snapshot a bystander's: only its own nodes, no turn.
func asBystander(s *Snapshot) {
	s.HoldsTurn, s.FleetPartial = false, true
	s.Members = slices.DeleteFunc(s.Members, func(m znodes.Member) bool { return m.Machine != s.Machine })
	s.Current = slices.DeleteFunc(s.Current, func(c znodes.Current) bool { return c.Machine != s.Machine })
	s.Down = slices.DeleteFunc(s.Down, func(d znodes.Down) bool { return d.Machine != s.Machine })
}

type decideRow struct {
	name    string
	mod     func(*Snapshot)
	want    Action
	version string // Decision.Version ("" not checked)
	reason  string // substring of Decision.Reason
	kind    string // Decision.Kind of a SpendAndStep ("": upgrade)
}

func TestDecide(t *testing.T) {
	tests := []decideRow{
		// Quorum edges (5 members, quorum 3 and max_parallel 1 unless said otherwise).
		{"all available quorum 3: go", nil, SpendAndStep, "v2", "upgrade v1 -> v2: quorum: 5 of 5 members available, 3 needed after me", ""},
		{"quorum 4 one above: go", func(s *Snapshot) { s.Head.Quorum = spec.Quorum{Count: 4} }, SpendAndStep, "v2", "5 of 5 members available, 4 needed after me", ""},
		{"quorum 5 exactly at quorum: wait", func(s *Snapshot) { s.Head.Quorum = spec.Quorum{Count: 5} }, Wait, "v2", "quorum: 5 of 5 members available, need 5 after me", ""},
		{"3 available quorum 3, max_parallel 3: wait", all(unhealthy("m2", "m3"), maxPar(3)),
			Wait, "v2", "quorum: 3 of 5 members available, need 3 after me; unavailable: m2 unhealthy, m3 unhealthy", ""},
		{"unhealthy peer blocks at max_parallel 1: wait", unhealthy("m2"), Wait, "v2", "max_parallel 1: 1 other member(s) unavailable: m2 unhealthy", ""},
		{"4 available quorum 3, max_parallel 2: go", all(unhealthy("m2"), maxPar(2)), SpendAndStep, "v2", "4 of 5 members available, 3 needed after me", ""},
		{"unavailable me is not subtracted again: go", all(unhealthy("m1", "m2"), maxPar(2), func(s *Snapshot) { s.Local.Healthy = false }),
			SpendAndStep, "v2", "quorum: 3 of 5 members available, 3 needed after me", ""},
		{"upgrading and starting peers are unavailable", all(maxPar(3), func(s *Snapshot) {
			s.Current[1].State = znodes.StateUpgrading
			s.Current[2].State = znodes.StateStarting
		}), Wait, "v2", "quorum: 3 of 5 members available, need 3 after me; unavailable: m2 upgrading, m3 starting", ""},
		{"percent 60% of 5 = 3, 4 available: go", all(unhealthy("m2"), maxPar(2), func(s *Snapshot) { s.Head.Quorum = spec.Quorum{Percent: 60} }),
			SpendAndStep, "v2", "4 of 5 members available, 3 needed after me", ""},
		{"percent 60% of 5 = 3, 3 available: wait", all(unhealthy("m2", "m3"), maxPar(3), func(s *Snapshot) { s.Head.Quorum = spec.Quorum{Percent: 60} }),
			Wait, "v2", "3 of 5 members available, need 3 after me", ""},
		{"percent 61% of 5 rounds up to 4: wait", all(unhealthy("m2"), maxPar(2), func(s *Snapshot) { s.Head.Quorum = spec.Quorum{Percent: 61} }),
			Wait, "v2", "quorum: 4 of 5 members available, need 4 after me", ""},
		{"step record without member record counts in total", func(s *Snapshot) {
			// m6 died during its step: 6 members, 80% -> 5 needed, 5 available.
			s.Head.Quorum = spec.Quorum{Percent: 80}
			s.Head.MaxParallel = 2
			s.Down = []znodes.Down{{Machine: "m6", Rack: "r1"}}
		}, Wait, "v2", "quorum: 5 of 6 members available, need 5 after me; unavailable: m6 mid-step", ""},
		{"registration without member record counts", func(s *Snapshot) {
			c := cur("m6", "v1", "old", false)
			c.Rack = "r1"
			s.Current = append(s.Current, c)
		}, Wait, "v2", "max_parallel 1: 1 other member(s) unavailable: m6 unhealthy", ""},
		{"quorum 0 with one member: go", func(s *Snapshot) {
			s.Head.Quorum = spec.Quorum{}
			s.Members, s.Current = s.Members[:1], s.Current[:1]
		}, SpendAndStep, "v2", "1 of 1 members available, 0 needed after me", ""},
		{"percent 60% of 5 members, 2 absent: wait", all(absent("m2", "m3"), maxPar(3), func(s *Snapshot) { s.Head.Quorum = spec.Quorum{Percent: 60} }),
			Wait, "v2", "quorum: 3 of 5 members available, need 3 after me; unavailable: m2 absent", ""},
		{"absent members do not shrink a count quorum: wait", all(absent("m2"), maxPar(2), func(s *Snapshot) { s.Head.Quorum = spec.Quorum{Count: 4} }),
			Wait, "v2", "quorum: 4 of 5 members available, need 4 after me", ""},
		{"unsafe rules: go despite quorum", func(s *Snapshot) { s.Head.Quorum = spec.Quorum{Count: 5}; s.UnsafeRules = true },
			SpendAndStep, "v2", "UNSAFE test rules", ""},
		{"unsafe rules: go despite max_parallel and racks", func(s *Snapshot) { s.Down = []znodes.Down{down("m2"), down("m4")}; s.UnsafeRules = true },
			SpendAndStep, "v2", "UNSAFE test rules", ""},

		// max_parallel and racks.
		{"max_parallel 1, one mid-step: wait", func(s *Snapshot) { s.Down = []znodes.Down{down("m2")} },
			Wait, "v2", "max_parallel 1: 1 other member(s) unavailable: m2 mid-step (upgrade v1 -> v2", ""},
		{"max_parallel 2, one mid-step in my rack: go", all(maxPar(2), func(s *Snapshot) { s.Down = []znodes.Down{down("m2")} }),
			SpendAndStep, "v2", "quorum: 4 of 5 members available, 3 needed after me", ""},
		{"max_parallel 2, one upgrading in my rack: go", all(maxPar(2), setState(znodes.StateUpgrading, "m3")),
			SpendAndStep, "v2", "4 of 5 members available", ""},
		{"max_parallel 2, two mid-step: wait", all(maxPar(2), func(s *Snapshot) { s.Down = []znodes.Down{down("m2"), down("m3")} }),
			Wait, "v2", "max_parallel 2: 2 other member(s) unavailable: m2 mid-step", ""},
		{"max_parallel 2, one mid-step in the other rack: wait", all(maxPar(2), func(s *Snapshot) { s.Down = []znodes.Down{down("m4")} }),
			Wait, "v2", "one rack at a time: rack r2 has m4 mid-step", ""},
		{"max_parallel 3, two mid-step same rack, quorum 2: go", func(s *Snapshot) {
			s.Head.MaxParallel = 3
			s.Head.Quorum = spec.Quorum{Count: 2}
			s.Down = []znodes.Down{down("m2"), down("m3")}
		}, SpendAndStep, "v2", "3 of 5 members available, 2 needed after me", ""},
		{"max_parallel 2, one mid-step, quorum leaves no room: wait", func(s *Snapshot) {
			s.Head.MaxParallel = 2
			s.Head.Quorum = spec.Quorum{Count: 4}
			s.Down = []znodes.Down{down("m2")}
		}, Wait, "v2", "quorum: 4 of 5 members available, need 4 after me", ""},
		{"max_parallel 0 means 1", all(maxPar(0), unhealthy("m2")), Wait, "v2", "max_parallel 1: 1 other", ""},
		{"absent member blocks at max_parallel 1: wait", absent("m2"),
			Wait, "v2", "max_parallel 1: 1 other member(s) unavailable: m2 absent (last seen v1 at 2026-11-23 01:30:00)", ""},
		{"absent member in the other rack blocks: wait", all(absent("m4"), maxPar(2)), Wait, "v2", "one rack at a time: rack r2 has m4 absent", ""},
		{"stopped peer is unavailable: wait", stopped("m2"), Wait, "v2", "m2 stopped", ""},

		// A HEAD refused by the trust gate: nothing moves, the reason says why.
		{"HEAD refused: wait", func(s *Snapshot) { s.HeadRefused = "HEAD is not signed (spec abc, seq 3)" },
			Wait, "", "HEAD refused, running what runs: HEAD is not signed", ""},

		// Canary phase (one canary, bake 10m): canaries are counted in the
		// budget node (spends of the active entry).
		{"canary: none out yet: go", canary(1, 10*time.Minute), SpendAndStep, "v2", "upgrade v1 -> v2", ""},
		{"canary: one mid-step in the entry: wait", all(canary(1, 10*time.Minute), maxPar(2), spent("m2"), func(s *Snapshot) {
			d := down("m2")
			d.Entry = s.Queue[0].Node
			s.Down = []znodes.Down{d}
		}), Wait, "v2", "canary: m2 step first (bake 10m0s starts once they are all healthy on v2; dcroll promote web skips it)", ""},
		{"canary: one done, baking: wait", all(canary(1, 10*time.Minute), doneWith("m4"), spent("m4"), func(s *Snapshot) { s.Queue[0].BakeSince = testNow.Add(-time.Minute) }),
			Wait, "v2", "canary: m4 step first (baking until 02:39:00 UTC; dcroll promote web skips it)", ""},
		{"canary: one done, no bake time: wait for promote", all(canary(1, 0), doneWith("m4"), spent("m4")),
			Wait, "v2", "no bake time: waiting for dcroll promote web", ""},
		{"canary: promoted: go", all(canary(1, 10*time.Minute), doneWith("m4"), spent("m4"), func(s *Snapshot) { s.Queue[0].Promoted = true }),
			SpendAndStep, "v2", "upgrade v1 -> v2", ""},
		{"canary: two canaries, one done: go", all(canary(2, time.Minute), doneWith("m4"), spent("m4")), SpendAndStep, "v2", "upgrade", ""},
		{"canary: more canaries than members: every member may go", all(canary(9, time.Minute), doneWith("m2", "m3", "m4", "m5"), spent("m2", "m3", "m4", "m5")), SpendAndStep, "v2", "upgrade", ""},
		{"canary: spends of another entry are no canaries", all(canary(1, time.Minute), doneWith("m4"), spent("m4"), func(s *Snapshot) {
			s.Budget.Entry = "d-0000000000"
		}), SpendAndStep, "v2", "upgrade", ""},
		{"canary: a machine done without a step is no canary", all(canary(1, time.Minute), doneWith("m4")), SpendAndStep, "v2", "upgrade", ""},
		{"canary: settings change holds too", all(settingsChange, canary(1, time.Minute), spent("m4"), func(s *Snapshot) {
			for i := range s.Current {
				s.Current[i].SpecID = "old"
			}
			s.Current[3].SpecID = "new" // only m4 runs the new settings
		}), Wait, "v2", "canary: m4 step first", ""},
		{"canary: a bystander sees the hold in the budget", all(canary(1, time.Minute), spent("m4"), asBystander),
			Wait, "v2", "canary: m4 step first", ""},

		// Window.
		{"window open: go", func(s *Snapshot) { s.Window = &spec.Window{Start: "01:00", End: "05:00", Timezone: "UTC"} },
			SpendAndStep, "v2", "upgrade v1 -> v2", ""},
		{"window closed", func(s *Snapshot) { s.Window = &spec.Window{Start: "03:00", End: "05:00", Timezone: "UTC"} },
			Wait, "v2", "window closed until 03:00 UTC", ""},
		{"window too little time left", func(s *Snapshot) { s.Window = &spec.Window{Start: "01:00", End: "02:31", Timezone: "UTC"} },
			Wait, "v2", "window closes in 1m0s, a step needs 1m10s", ""},
		{"window: the configured stop grace counts, not the default", func(s *Snapshot) {
			s.Window = &spec.Window{Start: "01:00", End: "02:31", Timezone: "UTC"}
			s.Head.Health = &spec.Health{Deadline: spec.Duration{Duration: 55 * time.Second}}
			s.StopGrace = time.Second
		}, SpendAndStep, "v2", "upgrade v1 -> v2", ""},
		{"window: default stop grace does not fit", func(s *Snapshot) {
			s.Window = &spec.Window{Start: "01:00", End: "02:31", Timezone: "UTC"}
			s.Head.Health = &spec.Health{Deadline: spec.Duration{Duration: 55 * time.Second}}
		}, Wait, "v2", "window closes in 1m0s, a step needs 1m5s", ""},
		{"window explicit step time fits", func(s *Snapshot) {
			s.Window = &spec.Window{Start: "01:00", End: "02:31", Timezone: "UTC"}
			s.StepTime = 30 * time.Second
		}, SpendAndStep, "v2", "upgrade v1 -> v2", ""},
		{"window crossing midnight open", func(s *Snapshot) { s.Window = &spec.Window{Start: "22:00", End: "04:00", Timezone: "UTC"} },
			SpendAndStep, "v2", "upgrade v1 -> v2", ""},
		{"window closed still stages", func(s *Snapshot) {
			s.Window = &spec.Window{Start: "03:00", End: "05:00", Timezone: "UTC"}
			s.Local.Staged = ""
		}, Stage, "v2", "stage v2", ""},

		// Operator switches and the queue.
		{"paused", func(s *Snapshot) { s.Paused, s.PauseReason = true, "incident 42" }, Wait, "v2", "paused: incident 42", ""},
		{"paused still stages", func(s *Snapshot) { s.Paused, s.Local.Staged = true, "" }, Stage, "v2", "stage v2", ""},
		{"halted", func(s *Snapshot) {
			s.Queue[0].State = znodes.DeployHalted
			s.Queue[0].Machine, s.Queue[0].Reason = "m3", "not healthy after 60s"
		}, Wait, "v2", "halted: web on m3: not healthy after 60s", ""},
		{"halted entry of another service stops everyone", func(s *Snapshot) {
			s.Queue = []Entry{entry("d-1", "store", znodes.DeployHalted), entry("d-2", "web", znodes.DeployPending)}
			s.Queue[0].Machine, s.Queue[0].Reason = "m9", "exit 1"
		}, Wait, "v2", "halted: store on m9: exit 1", ""},
		{"entry of another service active", func(s *Snapshot) {
			s.Queue = []Entry{entry("d-1", "store", znodes.DeployRolling), entry("d-2", "web", znodes.DeployPending)}
		}, Wait, "v2", "waiting for service store to finish", ""},
		{"earlier entry done: ours is active", func(s *Snapshot) {
			s.Queue = []Entry{entry("d-1", "store", znodes.DeployDone), entry("d-2", "web", znodes.DeployPending)}
		}, SpendAndStep, "v2", "upgrade v1 -> v2", ""},
		{"not staged: stage", func(s *Snapshot) { s.Local.Staged = "" }, Stage, "v2", "stage v2", ""},
		{"staged an older build: stage", func(s *Snapshot) { s.Local.Staged = BuildID(v1) }, Stage, "v2", "stage v2", ""},
		{"same label new artifact: stage", func(s *Snapshot) {
			s.Local.Version = "v2"
			s.Local.Staged = ""
		}, Stage, "v2", "stage v2", ""},
		{"staged, no turn: take turn", func(s *Snapshot) { s.HoldsTurn = false }, TakeTurn, "v2", "ready to upgrade v1 -> v2", ""},
		{"other service active: no turn taken", func(s *Snapshot) {
			s.HoldsTurn = false
			s.Queue = []Entry{entry("d-1", "store", znodes.DeployRolling), entry("d-2", "web", znodes.DeployPending)}
		}, Wait, "v2", "waiting for service store", ""},
		{"straggler after its entry is done: wait for an entry", func(s *Snapshot) {
			s.Queue = []Entry{entry("d-1", "web", znodes.DeployDone)}
		}, Wait, "v2", "HEAD wants web v2 but the deploy queue has no unfinished entry for it", ""},
		{"straggler while another service rolls: wait for an entry", func(s *Snapshot) {
			s.Queue = []Entry{entry("d-1", "web", znodes.DeployDone), entry("d-2", "store", znodes.DeployPending)}
		}, Wait, "v2", "no unfinished entry", ""},
		{"upgrade with an empty queue: wait", func(s *Snapshot) { s.Queue = nil }, Wait, "v2", "no unfinished entry", ""},
		{"upgrade with an empty queue still stages", func(s *Snapshot) { s.Queue, s.Local.Staged = nil, "" }, Stage, "v2", "stage v2", ""},
		{"not registered", absent("m1"), Wait, "v2", "not registered", ""},
		{"step in flight", func(s *Snapshot) { s.Local.InFlight = &Step{From: "v1", To: "v2"} }, Wait, "v2", "step in progress: upgrade v1 -> v2", ""},
		{"settings step in flight", func(s *Snapshot) { s.Local.InFlight = &Step{Kind: StepSettings, From: "v2", To: "v2"} },
			Wait, "v2", "step in progress: settings v2 -> v2", ""},
		{"pending halt: write it", func(s *Snapshot) {
			s.Local.PendingHalt = &PendingHalt{Entry: "d-0000000001", Reason: "upgrade v2 on m1: exit 1"}
		}, WriteHalt, "", "halt of d-0000000001 not written yet: upgrade v2 on m1: exit 1", ""},
		{"pending halt comes before own step record, pause and HEAD", func(s *Snapshot) {
			s.Local.PendingHalt = &PendingHalt{Entry: "d-0000000001", Reason: "exit 1"}
			s.Down = []znodes.Down{down("m1")}
			s.Paused, s.HeadID, s.Head = true, "", nil
		}, WriteHalt, "", "halt of d-0000000001", ""},
		{"own step record, healthy: clear", func(s *Snapshot) { s.Down = []znodes.Down{down("m1")} }, ClearDown, "", "step over (upgrade v2)", ""},
		{"own step record, unhealthy: wait", func(s *Snapshot) {
			s.Down = []znodes.Down{down("m1")}
			s.Local.Healthy = false
		}, Wait, "", "own step record present", ""},
		{"own upgrade step record, stopped: wait", func(s *Snapshot) {
			s.Down = []znodes.Down{down("m1")}
			s.Local = Local{}
		}, Wait, "", "own step record present", ""},
		{"own removal step record, stopped: clear", func(s *Snapshot) {
			removing(s)
			s.Down = []znodes.Down{{Machine: "m1", Rack: "r1", Kind: StepRemove, From: "v1"}}
			s.Local = Local{}
			stopped("m1")(s)
		}, ClearDown, "", "step over (removed (none))", ""},
		{"no HEAD", func(s *Snapshot) { s.HeadID, s.Head = "", nil }, Wait, "", "no HEAD", ""},

		// Bad builds.
		{"bad build target: wait naming the halt", markBad(v2, nil),
			Wait, "v2", "web v2 is a bad build: halted on m3 at 2026-11-23 01:30:00: not healthy after 60s", ""},
		{"bad build of another build: go", markBad(v1, nil), SpendAndStep, "v2", "upgrade v1 -> v2", ""},

		// Settings steps: same build, new settings.
		{"settings change: spend and step (settings)", settingsChange, SpendAndStep, "v2", "settings v2 -> v2: quorum: 5 of 5 members available", StepSettings},
		{"settings change needs no staging: take turn", all(settingsChange, func(s *Snapshot) { s.HoldsTurn = false }),
			TakeTurn, "v2", "ready to settings v2 -> v2", ""},
		{"settings change while paused: wait", all(settingsChange, func(s *Snapshot) { s.Paused = true }), Wait, "v2", "paused", ""},
		{"settings change halted: wait", all(settingsChange, func(s *Snapshot) {
			s.Queue[0].State, s.Queue[0].Machine, s.Queue[0].Reason = znodes.DeployHalted, "m4", "reload failed"
		}), Wait, "v2", "halted: web on m4: reload failed", ""},
		{"settings change, window closed: wait", all(settingsChange, func(s *Snapshot) {
			s.Window = &spec.Window{Start: "03:00", End: "05:00", Timezone: "UTC"}
		}), Wait, "v2", "window closed until 03:00 UTC", ""},
		{"settings change behind another service: wait", all(settingsChange, func(s *Snapshot) {
			s.Queue = []Entry{entry("d-1", "store", znodes.DeployRolling), entry("d-2", "web", znodes.DeployPending)}
		}), Wait, "v2", "waiting for service store", ""},
		{"settings change with no unfinished entry: wait", all(settingsChange, func(s *Snapshot) { s.Queue[0].State = znodes.DeployDone }),
			Wait, "v2", "no unfinished entry", ""},
		{"settings change under quorum: wait", all(settingsChange, func(s *Snapshot) { s.Head.Quorum = spec.Quorum{Count: 5} }),
			Wait, "v2", "quorum: 5 of 5 members available, need 5 after me", ""},
		{"settings change, peer mid-step: wait", all(settingsChange, func(s *Snapshot) { s.Down = []znodes.Down{down("m2")} }),
			Wait, "v2", "max_parallel 1: 1 other member(s) unavailable: m2 mid-step", ""},
		{"settings change, bad settings on this build: wait", all(settingsChange, markBad(v2, hi)), Wait, "v2", "web v2 is a bad build: halted on m3", ""},
		{"settings change, other settings bad on this build: go", all(settingsChange, markBad(v2, map[string]string{"greeting": "yo"})),
			SpendAndStep, "v2", "settings v2 -> v2", StepSettings},
		{"settings change, build bad: wait", all(settingsChange, markBad(v2, nil)), Wait, "v2", "web v2 is a bad build", ""},

		// At target: adoption, completion.
		{"at target holding turn: release", func(s *Snapshot) { atTarget(s); s.HoldsTurn = true }, ReleaseTurn, "", "already runs v2", ""},
		{"settings applied, spec id old: adopt", func(s *Snapshot) {
			atTarget(s)
			s.Local.SpecID = "old"
			s.Local.Settings = hi
			s.Head.Settings = map[string]string{"greeting": "hi"}
		}, Adopt, "v2", "runs the build and settings HEAD new wants (v2)", ""},
		{"unchanged service: adopt new spec id", func(s *Snapshot) {
			atTarget(s)
			s.Local.SpecID = "old"
			s.Queue = []Entry{entry("d-1", "store", znodes.DeployRolling)}
		}, Adopt, "v2", "runs the build and settings HEAD new wants", ""},
		{"label-only change, same build: adopt", func(s *Snapshot) {
			atTarget(s)
			s.Head.Version = "v2.1" // same artifact, data and run as v2
		}, Adopt, "v2.1", "runs the build and settings HEAD new wants (v2.1)", ""},
		{"entry complete: mark done", atTarget, MarkDone, "v2", "every member of web runs v2", ""},
		{"pending entry complete: mark done", func(s *Snapshot) { atTarget(s); s.Queue[0].State = znodes.DeployPending }, MarkDone, "v2", "every member of web runs v2", ""},
		{"one machine still v1: not done", func(s *Snapshot) { atTarget(s); s.Current[3].Version = "v1" }, Nothing, "", "waiting for the other members of web", ""},
		{"one machine on old spec id: not done", func(s *Snapshot) { atTarget(s); s.Current[3].SpecID = "old" }, Nothing, "", "waiting for the other members", ""},
		{"one machine unhealthy: not done", func(s *Snapshot) { atTarget(s); s.Current[4].Healthy = false }, Nothing, "", "waiting for the other members", ""},
		{"absent member holds mark done back", all(atTarget, absent("m5")), Nothing, "", "waiting for the other members", ""},
		{"step record left: not done", func(s *Snapshot) { atTarget(s); s.Down = []znodes.Down{down("m4")} }, Nothing, "", "waiting for the other members", ""},
		{"halted entry is never marked done", func(s *Snapshot) { atTarget(s); s.Queue[0].State = znodes.DeployHalted }, Nothing, "", "runs v2", ""},
		{"entry already done: nothing", func(s *Snapshot) { atTarget(s); s.Queue[0].State = znodes.DeployDone }, Nothing, "", "runs v2", ""},
		{"other service's entry active: do not mark ours", func(s *Snapshot) {
			atTarget(s)
			s.Queue = []Entry{entry("d-1", "store", znodes.DeployRolling), entry("d-2", "web", znodes.DeployPending)}
		}, Nothing, "", "waiting for the other members", ""},

		// Removal: HEAD no longer has the service.
		{"removal: go, no quorum", removing, SpendAndStep, "", "stop web v1 (removed from the spec): 5 of 5 members available", StepRemove},
		{"removal: a peer already stopped is done, not down: go", all(removing, stopped("m2")), SpendAndStep, "", "stop web", StepRemove},
		{"removal: a stopped peer mid-step still counts", all(removing, stopped("m4"), func(s *Snapshot) { s.Down = []znodes.Down{down("m4")} }), Wait, "", "m4 mid-step", ""},
		{"upgrade onto a bad build+settings pair: wait", all(markBad(v2, hi), func(s *Snapshot) { s.Head.Settings = hi }), Wait, "v2", "bad build", ""},
		{"removal of the last member: go", func(s *Snapshot) {
			removing(s)
			s.Members, s.Current = s.Members[:1], s.Current[:1]
		}, SpendAndStep, "", "1 of 1 members available", StepRemove},
		{"removal: no turn: take turn", func(s *Snapshot) { removing(s); s.HoldsTurn = false }, TakeTurn, "", "ready to stop web (removed from the spec)", ""},
		{"removal: peer mid-step at max_parallel 1: wait", func(s *Snapshot) { removing(s); s.Down = []znodes.Down{down("m2")} },
			Wait, "", "max_parallel 1: 1 other member(s) unavailable: m2 mid-step", ""},
		{"removal: absent peer at max_parallel 1: wait", all(removing, absent("m4")), Wait, "", "m4 absent", ""},
		{"removal: window closed: wait", func(s *Snapshot) {
			removing(s)
			s.Window = &spec.Window{Start: "03:00", End: "05:00", Timezone: "UTC"}
		}, Wait, "", "window closed until 03:00 UTC", ""},
		{"removal: paused: wait", func(s *Snapshot) { removing(s); s.Paused, s.PauseReason = true, "freeze" }, Wait, "", "paused: freeze", ""},
		{"removal: halted: wait", func(s *Snapshot) {
			removing(s)
			s.Queue[0].State, s.Queue[0].Machine, s.Queue[0].Reason = znodes.DeployHalted, "m2", "stop failed"
		}, Wait, "", "halted: web on m2: stop failed", ""},
		{"removal: another service first: wait", func(s *Snapshot) {
			removing(s)
			s.Queue = append([]Entry{entry("d-0000000001", "store", znodes.DeployRolling)}, s.Queue...)
		}, Wait, "", "waiting for service store to finish", ""},
		{"removal, running, no removal entry: wait", func(s *Snapshot) { s.Head = nil }, Wait, "", "not in HEAD new but runs here; no removal entry", ""},
		{"removal, running, removal entry done: wait", func(s *Snapshot) { removing(s); s.Queue[0].State = znodes.DeployDone },
			Wait, "", "no removal entry", ""},
		{"removal, stopped, others running: nothing", func(s *Snapshot) {
			removing(s)
			s.Local, s.HoldsTurn = Local{}, false
			stopped("m1")(s)
		}, Nothing, "", "service web is not in HEAD new", ""},
		{"removal, stopped holding the turn: release", func(s *Snapshot) { removing(s); s.Local = Local{}; stopped("m1")(s) },
			ReleaseTurn, "", "stopped", ""},
		{"removal complete: mark done", func(s *Snapshot) {
			removing(s)
			s.Local, s.HoldsTurn = Local{}, false
			stopped("m1", "m2", "m3", "m4", "m5")(s)
		}, MarkDone, "", "every member of web stopped", ""},
		{"removal complete but for an absent member: nothing", func(s *Snapshot) {
			removing(s)
			s.Local, s.HoldsTurn = Local{}, false
			stopped("m1", "m2", "m3", "m4")(s)
			absent("m5")(s)
		}, Nothing, "", "not in HEAD", ""},

		// Returning machine (nothing running).
		{"returning, no rollout: HEAD's version", func(s *Snapshot) {
			s.Local = Local{}
			s.Queue = nil
		}, StartVersion, "v2", "no rollout of web unfinished", ""},
		{"returning, entry done: HEAD's version", func(s *Snapshot) {
			s.Local = Local{}
			s.Queue[0].State = znodes.DeployDone
		}, StartVersion, "v2", "no rollout of web unfinished: HEAD's v2", ""},
		{"returning, rollout not reached: most popular", func(s *Snapshot) { s.Local.Running = false }, StartVersion, "v1", "most machines run v1 (4)", ""},
		{"returning, service new in the rollout: HEAD's version, peers not counted", func(s *Snapshot) {
			s.Local = Local{}
			s.Queue[0].Kind, s.Queue[0].FromVersion = string(spec.ChangeNew), ""
		}, StartVersion, "v2", "service web is new in this rollout: HEAD's v2", ""},
		{"returning, rollout half way: most popular v2", func(s *Snapshot) {
			s.Local.Running = false
			s.Queue[0].State = znodes.DeployRolling
			for i := 1; i < 4; i++ {
				s.Current[i].Version, s.Current[i].SpecID = "v2", "new"
			}
		}, StartVersion, "v2", "most machines run v2 (3)", ""},
		{"returning, tie: FromVersion", func(s *Snapshot) {
			s.Local.Running = false
			s.Queue[0].State = znodes.DeployRolling
			s.Current[1].Version, s.Current[2].Version = "v2", "v2"
		}, StartVersion, "v1", "tie v1/v2, chose v1", ""},
		{"returning, halted target never chosen", func(s *Snapshot) {
			s.Local.Running = false
			s.Queue[0].State = znodes.DeployHalted
			for i := 1; i < 5; i++ {
				s.Current[i].Version = "v2"
			}
			s.Current[4].Version = "v1"
		}, StartVersion, "v1", "most machines run v1 (1)", ""},
		{"returning, halted, no peers: FromVersion", func(s *Snapshot) {
			s.Local = Local{}
			s.Queue[0].State = znodes.DeployHalted
			s.Current = s.Current[:1]
		}, StartVersion, "v1", "no peers; v2 is halted: v1", ""},
		{"returning, no peers, FromVersion known locally", func(s *Snapshot) {
			s.Local.Running = false
			s.Current = s.Current[:1]
		}, StartVersion, "v1", "no peers: v1 known locally", ""},
		{"returning, no peers, FromVersion unknown: HEAD's", func(s *Snapshot) {
			s.Local = Local{}
			s.Current = nil
		}, StartVersion, "v2", "no peers: HEAD's v2", ""},
		{"returning ignores peers not running", func(s *Snapshot) {
			s.Local = Local{}
			for i := range s.Current {
				s.Current[i].State = znodes.StateStarting
			}
		}, StartVersion, "v2", "no peers", ""},
		{"returning while paused still starts", func(s *Snapshot) { s.Local.Running = false; s.Paused = true }, StartVersion, "v1", "most machines run v1", ""},
		{"returning skips a bad peer version", all(markBad(v3, nil), func(s *Snapshot) {
			s.Local.Running = false
			s.Queue[0].State = znodes.DeployRolling
			for i := 1; i < 4; i++ {
				s.Current[i].Version, s.Current[i].SpecID = "v3", "mid"
			}
		}), StartVersion, "v1", "most machines run v1 (1)", ""},
		{"returning, bad settings record does not hide a peer version", all(markBad(v3, hi), func(s *Snapshot) {
			s.Local.Running = false
			s.Queue[0].State = znodes.DeployRolling
			for i := 1; i < 4; i++ {
				s.Current[i].Version, s.Current[i].SpecID = "v3", "mid"
			}
		}), StartVersion, "v3", "most machines run v3 (3)", ""},
		{"returning, HEAD's build bad: FromVersion known locally", all(markBad(v2, nil), func(s *Snapshot) {
			s.Local.Running = false
			s.Queue[0].State = znodes.DeployHalted
			for i := 1; i < 5; i++ {
				s.Current[i].Version = "v2"
			}
		}), StartVersion, "v1", "HEAD's v2 is a bad build: v1 known locally", ""},
		{"returning, HEAD's build bad, FromVersion not local: from HEAD's predecessor", all(markBad(v2, nil), func(s *Snapshot) {
			s.Local = Local{}
			s.Queue[0].State = znodes.DeployPending
		}), StartVersion, "v1", "HEAD's v2 is a bad build: v1", ""},
	}
	runDecide(t, tests)
}

func runDecide(t *testing.T, tests []decideRow) {
	t.Helper()
	seen := map[string]bool{}
	for _, tt := range tests {
		if seen[tt.name] {
			t.Fatalf("duplicate row %q", tt.name)
		}
		seen[tt.name] = true
		t.Run(tt.name, func(t *testing.T) {
			s := base()
			if tt.mod != nil {
				tt.mod(&s)
			}
			d := Decide(s)
			if d.Action != tt.want {
				t.Fatalf("Decide = %v, want %v", d, tt.want)
			}
			if tt.version != "" && d.Version != tt.version {
				t.Errorf("Decide = %v, want version %s", d, tt.version)
			}
			if !strings.Contains(d.Reason, tt.reason) {
				t.Errorf("Decide reason %q, want it to contain %q", d.Reason, tt.reason)
			}
			if d.Reason == "" {
				t.Errorf("Decide = %v: empty reason", d)
			}
			switch d.Action {
			case SpendAndStep:
				if want := orDefault(tt.kind, StepUpgrade); d.Kind != want {
					t.Errorf("Decide = %v: kind %q, want %q", d, d.Kind, want)
				}
				fallthrough
			case MarkDone:
				if a := ActiveEntry(s.Queue); d.Entry == nil || a == nil || d.Entry.Node != a.Node {
					t.Errorf("Decide = %v: entry %v, want the active entry %v", d, d.Entry, a)
				}
			default:
				if tt.kind != "" {
					t.Fatalf("row sets kind %q for a %v", tt.kind, tt.want)
				}
			}
		})
	}
}

// Decisions that upgrade or start carry the spec that defines the version.
func TestDecideSpecIDs(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Snapshot)
		want string
	}{
		{"spend uses HEAD", nil, "new"},
		{"stage uses HEAD", func(s *Snapshot) { s.Local.Staged = "" }, "new"},
		{"returning popular uses a peer's spec", func(s *Snapshot) { s.Local.Running = false }, "old"},
		{"returning halted no peers uses HEAD's predecessor", func(s *Snapshot) {
			s.Local = Local{}
			s.Queue[0].State = znodes.DeployHalted
			s.Current = nil
		}, "old"},
		{"settings step uses HEAD", settingsChange, "new"},
		{"adopt uses HEAD", func(s *Snapshot) { atTarget(s); s.Local.SpecID = "old" }, "new"},
		{"removal uses HEAD", removing, "new"},
		{"returning, HEAD's build bad, uses HEAD's predecessor", all(markBad(v2, nil), func(s *Snapshot) { s.Local = Local{} }), "old"},
		{"returning, HEAD's build bad, uses the locally known spec", all(markBad(v2, nil), func(s *Snapshot) {
			s.Local.Running = false
			s.Local.Known = map[string]string{"v1": "older"}
		}), "older"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base()
			if tt.mod != nil {
				tt.mod(&s)
			}
			if d := Decide(s); d.SpecID != tt.want {
				t.Fatalf("Decide = %v with spec %q, want %q", d, d.SpecID, tt.want)
			}
		})
	}
}

func TestBuildID(t *testing.T) {
	a := svcV("v1", spec.Quorum{}, 1)
	b := *a
	b.Settings = map[string]string{"x": "y"}
	b.Quorum = spec.Quorum{Count: 9}
	if BuildID(a) != BuildID(&b) {
		t.Errorf("settings or quorum changed the build id")
	}
	c := *a
	c.Data = []string{"sha256:" + strings.Repeat("d", 64)}
	if BuildID(a) == BuildID(&c) {
		t.Errorf("data change kept the build id")
	}
	d := *a
	d.Run = []string{"./hello", "-v"}
	if BuildID(a) == BuildID(&d) {
		t.Errorf("run change kept the build id")
	}
}
