package agent

import (
	"strings"
	"testing"
	"time"

	"dcroll/spec"
	"dcroll/znodes"
)

// The fixture: service web on m1..m5, racks r1 (m1 m2 m3) and r2 (m4 m5),
// all running v1 from spec "old"; HEAD "new" wants v2. This machine is m1,
// it has v2 staged and holds the turn: the base snapshot says go.

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
)

var racks = map[string]string{"m1": "r1", "m2": "r1", "m3": "r1", "m4": "r2", "m5": "r2"}

func cur(m, version, specID string, healthy bool) znodes.Current {
	return znodes.Current{Machine: m, Service: "web", Rack: racks[m], Version: version, SpecID: specID,
		State: znodes.StateRunning, Healthy: healthy}
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
	return Snapshot{
		Now: testNow, Machine: "m1", Rack: "r1", Service: "web",
		Local: Local{Running: true, Healthy: true, Version: "v1", Build: BuildID(v1), SpecID: "old",
			Staged: BuildID(v2), Known: map[string]string{"v1": "old"}},
		HeadID: "new", PrevID: "old", Head: &head,
		Queue: []Entry{entry("d-0000000001", "web", znodes.DeployPending)},
		Current: []znodes.Current{cur("m1", "v1", "old", true), cur("m2", "v1", "old", true), cur("m3", "v1", "old", true),
			cur("m4", "v1", "old", true), cur("m5", "v1", "old", true)},
		HoldsTurn: true,
	}
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

func TestDecide(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*Snapshot)
		want    Action
		version string
		reason  string // substring of Decision.Reason
	}{
		// Quorum edges (5 machines, quorum 3 unless said otherwise).
		{"all healthy quorum 3: go", nil, SpendAndUpgrade, "v2", "quorum: 5 healthy, 4 after me >= 3"},
		{"quorum 4 one above: go", func(s *Snapshot) { s.Head.Quorum = spec.Quorum{Count: 4} }, SpendAndUpgrade, "v2", "4 after me >= 4"},
		{"quorum 5 exactly at quorum: wait", func(s *Snapshot) { s.Head.Quorum = spec.Quorum{Count: 5} }, Wait, "v2", "quorum: 5 healthy, need 5 after me"},
		{"3 healthy quorum 3: wait", unhealthy("m4", "m5"), Wait, "v2", "quorum: 3 healthy, need 3 after me"},
		{"4 healthy quorum 3: go", unhealthy("m5"), SpendAndUpgrade, "v2", "4 healthy, 3 after me >= 3"},
		{"unhealthy me does not count: go", func(s *Snapshot) {
			unhealthy("m1", "m5")(s)
			s.Local.Healthy = false
		}, SpendAndUpgrade, "v2", "3 healthy, 3 after me >= 3"},
		{"upgrading machine is not available", func(s *Snapshot) {
			s.Current[1].State = znodes.StateUpgrading
			s.Current[2].State = znodes.StateStarting
		}, Wait, "v2", "quorum: 3 healthy, need 3 after me"},
		{"percent 60% of 5 = 3, 4 healthy: go", func(s *Snapshot) {
			s.Head.Quorum = spec.Quorum{Percent: 60}
			unhealthy("m5")(s)
		}, SpendAndUpgrade, "v2", "3 after me >= 3"},
		{"percent 60% of 5 = 3, 3 healthy: wait", func(s *Snapshot) {
			s.Head.Quorum = spec.Quorum{Percent: 60}
			unhealthy("m4", "m5")(s)
		}, Wait, "v2", "need 3 after me"},
		{"percent 61% of 5 rounds up to 4: wait", func(s *Snapshot) { s.Head.Quorum = spec.Quorum{Percent: 61}; unhealthy("m5")(s) },
			Wait, "v2", "quorum: 4 healthy, need 4 after me"},
		{"orphan down marker counts in total", func(s *Snapshot) {
			// m6 died during its step: 6 machines, 80% -> 5 needed, 5 healthy.
			s.Head.Quorum = spec.Quorum{Percent: 80}
			s.Head.MaxParallel = 2
			s.Down = []znodes.Down{{Machine: "m6", Rack: "r1"}}
		}, Wait, "v2", "quorum: 5 healthy, need 5 after me"},
		{"quorum 0 with one machine: go", func(s *Snapshot) {
			s.Head.Quorum = spec.Quorum{}
			s.Current = s.Current[:1]
		}, SpendAndUpgrade, "v2", "0 after me >= 0"},

		// max_parallel and racks.
		{"max_parallel 1, one down: wait", func(s *Snapshot) { s.Down = []znodes.Down{down("m2")} }, Wait, "v2", "max_parallel: 1 down (m2), limit 1"},
		{"max_parallel 2, one down same rack: go", func(s *Snapshot) {
			s.Head.MaxParallel = 2
			s.Down = []znodes.Down{down("m2")}
		}, SpendAndUpgrade, "v2", "quorum: 4 healthy, 3 after me"},
		{"max_parallel 2, two down: wait", func(s *Snapshot) {
			s.Head.MaxParallel = 2
			s.Down = []znodes.Down{down("m2"), down("m3")}
		}, Wait, "v2", "max_parallel: 2 down (m2,m3), limit 2"},
		{"max_parallel 2, other rack down: wait", func(s *Snapshot) {
			s.Head.MaxParallel = 2
			s.Down = []znodes.Down{down("m4")}
		}, Wait, "v2", "rack r2 is down (m4); one rack at a time"},
		{"max_parallel 3, two down same rack, quorum 2: go", func(s *Snapshot) {
			s.Head.MaxParallel = 3
			s.Head.Quorum = spec.Quorum{Count: 2}
			s.Local.Healthy = true
			s.Down = []znodes.Down{down("m2"), down("m3")}
		}, SpendAndUpgrade, "v2", "3 healthy, 2 after me >= 2"},
		{"max_parallel 2, one down, quorum leaves no room: wait", func(s *Snapshot) {
			s.Head.MaxParallel = 2
			s.Head.Quorum = spec.Quorum{Count: 4}
			s.Down = []znodes.Down{down("m2")}
		}, Wait, "v2", "quorum: 4 healthy, need 4 after me"},

		// Window.
		{"window open: go", func(s *Snapshot) { s.Window = &spec.Window{Start: "01:00", End: "05:00", Timezone: "UTC"} },
			SpendAndUpgrade, "v2", ""},
		{"window closed", func(s *Snapshot) { s.Window = &spec.Window{Start: "03:00", End: "05:00", Timezone: "UTC"} },
			Wait, "v2", "window closed until 03:00 UTC"},
		{"window too little time left", func(s *Snapshot) { s.Window = &spec.Window{Start: "01:00", End: "02:31", Timezone: "UTC"} },
			Wait, "v2", "window closes in 1m0s, a step needs 1m10s"},
		{"window explicit step time fits", func(s *Snapshot) {
			s.Window = &spec.Window{Start: "01:00", End: "02:31", Timezone: "UTC"}
			s.StepTime = 30 * time.Second
		}, SpendAndUpgrade, "v2", ""},
		{"window crossing midnight open", func(s *Snapshot) { s.Window = &spec.Window{Start: "22:00", End: "04:00", Timezone: "UTC"} },
			SpendAndUpgrade, "v2", ""},
		{"window closed still stages", func(s *Snapshot) {
			s.Window = &spec.Window{Start: "03:00", End: "05:00", Timezone: "UTC"}
			s.Local.Staged = ""
		}, Stage, "v2", "stage v2"},

		// Operator switches and the queue.
		{"paused", func(s *Snapshot) { s.Paused, s.PauseReason = true, "incident 42" }, Wait, "v2", "paused: incident 42"},
		{"paused still stages", func(s *Snapshot) { s.Paused, s.Local.Staged = true, "" }, Stage, "v2", ""},
		{"halted", func(s *Snapshot) {
			s.Queue[0].State = znodes.DeployHalted
			s.Queue[0].Machine, s.Queue[0].Reason = "m3", "not healthy after 60s"
		}, Wait, "v2", "halted: web on m3: not healthy after 60s"},
		{"halted entry of another service stops everyone", func(s *Snapshot) {
			s.Queue = []Entry{entry("d-1", "store", znodes.DeployHalted), entry("d-2", "web", znodes.DeployPending)}
			s.Queue[0].Machine, s.Queue[0].Reason = "m9", "exit 1"
		}, Wait, "v2", "halted: store on m9: exit 1"},
		{"entry of another service active", func(s *Snapshot) {
			s.Queue = []Entry{entry("d-1", "store", znodes.DeployRolling), entry("d-2", "web", znodes.DeployPending)}
		}, Wait, "v2", "waiting for service store to finish"},
		{"earlier entry done: ours is active", func(s *Snapshot) {
			s.Queue = []Entry{entry("d-1", "store", znodes.DeployDone), entry("d-2", "web", znodes.DeployPending)}
		}, SpendAndUpgrade, "v2", ""},
		{"not staged: stage", func(s *Snapshot) { s.Local.Staged = "" }, Stage, "v2", "stage v2"},
		{"staged an older build: stage", func(s *Snapshot) { s.Local.Staged = BuildID(v1) }, Stage, "v2", ""},
		{"same label new artifact: stage", func(s *Snapshot) {
			s.Local.Version = "v2"
			s.Local.Staged = ""
		}, Stage, "v2", ""},
		{"staged, no turn: take turn", func(s *Snapshot) { s.HoldsTurn = false }, TakeTurn, "v2", "ready to upgrade v1 -> v2"},
		{"other service active: no turn taken", func(s *Snapshot) {
			s.HoldsTurn = false
			s.Queue = []Entry{entry("d-1", "store", znodes.DeployRolling), entry("d-2", "web", znodes.DeployPending)}
		}, Wait, "v2", "waiting for service store"},
		{"straggler after the rollout: upgrades under quorum", func(s *Snapshot) {
			s.Queue = []Entry{entry("d-1", "web", znodes.DeployDone)}
		}, SpendAndUpgrade, "v2", ""},
		{"straggler while another service rolls: wait", func(s *Snapshot) {
			s.Queue = []Entry{entry("d-1", "web", znodes.DeployDone), entry("d-2", "store", znodes.DeployPending)}
		}, Wait, "v2", "waiting for service store"},
		{"not registered", func(s *Snapshot) { s.Current = s.Current[1:] }, Wait, "v2", "not registered"},
		{"step in flight", func(s *Snapshot) { s.Local.InFlight = &Step{From: "v1", To: "v2"} }, Wait, "v2", "step in progress: v1 -> v2"},
		{"own down marker, healthy: clear", func(s *Snapshot) { s.Down = []znodes.Down{down("m1")} }, ClearDown, "", ""},
		{"own down marker, unhealthy: wait", func(s *Snapshot) {
			s.Down = []znodes.Down{down("m1")}
			s.Local.Healthy = false
		}, Wait, "", "own down marker"},
		{"no HEAD", func(s *Snapshot) { s.HeadID, s.Head = "", nil }, Wait, "", "no HEAD"},
		{"service not in HEAD", func(s *Snapshot) { s.Head = nil }, Nothing, "", "not in HEAD"},

		// At target: settings, adoption, completion.
		{"at target holding turn: release", func(s *Snapshot) { atTarget(s); s.HoldsTurn = true }, ReleaseTurn, "", "already runs v2"},
		{"settings-only entry: apply", func(s *Snapshot) {
			atTarget(s)
			s.Local.SpecID = "old"
			s.Queue[0].Kind, s.Queue[0].State = "settings", znodes.DeployPending
			s.Head.Settings = map[string]string{"greeting": "hi"}
		}, ApplySettings, "v2", "settings changed"},
		{"settings-only entry while paused: wait", func(s *Snapshot) {
			atTarget(s)
			s.Head.Settings = map[string]string{"greeting": "hi"}
			s.Paused = true
		}, Wait, "v2", "paused"},
		{"settings-only entry behind another service: wait", func(s *Snapshot) {
			atTarget(s)
			s.Head.Settings = map[string]string{"greeting": "hi"}
			s.Queue = []Entry{entry("d-1", "store", znodes.DeployRolling), entry("d-2", "web", znodes.DeployPending)}
		}, Wait, "v2", "waiting for service store"},
		{"settings applied, spec id old: adopt", func(s *Snapshot) {
			atTarget(s)
			s.Local.SpecID = "old"
			s.Local.Settings = map[string]string{"greeting": "hi"}
			s.Head.Settings = map[string]string{"greeting": "hi"}
		}, Adopt, "v2", "runs v2 as HEAD"},
		{"unchanged service: adopt new spec id", func(s *Snapshot) {
			atTarget(s)
			s.Local.SpecID = "old"
			s.Queue = []Entry{entry("d-1", "store", znodes.DeployRolling)}
		}, Adopt, "v2", ""},
		{"entry complete: mark done", atTarget, MarkDone, "v2", "every machine of web runs v2"},
		{"pending settings entry complete: mark done", func(s *Snapshot) { atTarget(s); s.Queue[0].State = znodes.DeployPending }, MarkDone, "v2", ""},
		{"one machine still v1: not done", func(s *Snapshot) { atTarget(s); s.Current[3].Version = "v1" }, Nothing, "", "waiting for the other machines"},
		{"one machine on old spec id: not done", func(s *Snapshot) { atTarget(s); s.Current[3].SpecID = "old" }, Nothing, "", ""},
		{"one machine unhealthy: not done", func(s *Snapshot) { atTarget(s); s.Current[4].Healthy = false }, Nothing, "", ""},
		{"down marker left: not done", func(s *Snapshot) { atTarget(s); s.Down = []znodes.Down{down("m4")} }, Nothing, "", ""},
		{"halted entry is never marked done", func(s *Snapshot) { atTarget(s); s.Queue[0].State = znodes.DeployHalted }, Nothing, "", ""},
		{"entry already done: nothing", func(s *Snapshot) { atTarget(s); s.Queue[0].State = znodes.DeployDone }, Nothing, "", "runs v2"},
		{"other service's entry active: do not mark ours", func(s *Snapshot) {
			atTarget(s)
			s.Queue = []Entry{entry("d-1", "store", znodes.DeployRolling), entry("d-2", "web", znodes.DeployPending)}
		}, Nothing, "", ""},

		// Returning machine (nothing running).
		{"returning, no rollout: HEAD's version", func(s *Snapshot) {
			s.Local = Local{}
			s.Queue = nil
		}, StartVersion, "v2", "no rollout of web unfinished"},
		{"returning, entry done: HEAD's version", func(s *Snapshot) {
			s.Local = Local{}
			s.Queue[0].State = znodes.DeployDone
		}, StartVersion, "v2", ""},
		{"returning, rollout not reached: most popular", func(s *Snapshot) { s.Local.Running = false }, StartVersion, "v1", "most machines run v1 (4)"},
		{"returning, rollout half way: most popular v2", func(s *Snapshot) {
			s.Local.Running = false
			s.Queue[0].State = znodes.DeployRolling
			for i := 1; i < 4; i++ {
				s.Current[i].Version, s.Current[i].SpecID = "v2", "new"
			}
		}, StartVersion, "v2", "most machines run v2 (3)"},
		{"returning, tie: FromVersion", func(s *Snapshot) {
			s.Local.Running = false
			s.Queue[0].State = znodes.DeployRolling
			s.Current[1].Version, s.Current[2].Version = "v2", "v2"
		}, StartVersion, "v1", "tie v1/v2, chose v1"},
		{"returning, halted target never chosen", func(s *Snapshot) {
			s.Local.Running = false
			s.Queue[0].State = znodes.DeployHalted
			for i := 1; i < 5; i++ {
				s.Current[i].Version = "v2"
			}
			s.Current[4].Version = "v1"
		}, StartVersion, "v1", "most machines run v1 (1)"},
		{"returning, halted, no peers: FromVersion", func(s *Snapshot) {
			s.Local = Local{}
			s.Queue[0].State = znodes.DeployHalted
			s.Current = s.Current[:1]
		}, StartVersion, "v1", "halted"},
		{"returning, no peers, FromVersion known locally", func(s *Snapshot) {
			s.Local.Running = false
			s.Current = s.Current[:1]
		}, StartVersion, "v1", "known locally"},
		{"returning, no peers, FromVersion unknown: HEAD's", func(s *Snapshot) {
			s.Local = Local{}
			s.Current = nil
		}, StartVersion, "v2", "no peers: HEAD's v2"},
		{"returning ignores peers not running", func(s *Snapshot) {
			s.Local = Local{}
			for i := range s.Current {
				s.Current[i].State = znodes.StateStarting
			}
		}, StartVersion, "v2", "no peers"},
		{"returning while paused still starts", func(s *Snapshot) { s.Local.Running = false; s.Paused = true }, StartVersion, "v1", ""},
	}
	for _, tt := range tests {
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

func TestCountQuorum(t *testing.T) {
	cs := []znodes.Current{cur("m1", "v1", "a", true), cur("m2", "v1", "a", false), cur("m3", "v1", "a", true)}
	cs[2].State = znodes.StateUpgrading
	got := CountQuorum(spec.Quorum{Percent: 50}, cs, []znodes.Down{down("m1"), down("m9")})
	want := Quorum{Total: 4, Available: 0, Min: 2, Down: 2}
	if got != want {
		t.Fatalf("CountQuorum = %+v, want %+v", got, want)
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
