package faults

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"dcroll/coordinator"
	"dcroll/integration/checker"
	"dcroll/spec"
)

// row is one scenario of the fault matrix: the faults it injects (run,
// which returns what the checker must find), the operator-visible outcome
// it must end in, and whether the checker must catch violations.
type row struct {
	name string
	// world: rows with the same non-empty world share one scenario (one
	// bootstrap), in table order.
	world string
	opts  Options
	run   func(t *testing.T, s *Scenario) checker.Expect
	// halted: the rollout must end halted with a reason containing it;
	// "" means it must complete.
	halted string
	// violations: the checker must report violations (the negative control).
	violations bool
}

var (
	v1 = map[string]string{"store": "1.0.0", "web": "1.0.0"}
	v2 = map[string]string{"store": "2.0.0", "web": "2.0.0"}
)

const broken = "3.0.0-broken"

// canaryBake is the bake time of the canary rows: long enough that a
// next step without the hold (well under a second after the canary is
// healthy) cannot pass for one that waited.
const canaryBake = 4 * time.Second

// both is the usual spec body: store and web on the given builds.
func both(store, web string) map[string]Svc {
	return map[string]Svc{"store": {Build: store}, "web": {Build: web}}
}

// webBroken pushes the broken web build one machine at a time.
func webBroken() map[string]Svc {
	return map[string]Svc{"store": {Build: "v1"}, "web": {Build: "v3", MaxParallel: 1}}
}

var webOne = map[string]Rules{"web": {Quorum: spec.Quorum{Percent: 60}, MaxParallel: 1, DependsOn: []string{"store"}}}

var table = []row{
	{
		name: "15-checker-catches-unsafe-rules",
		// The negative control: with the rules off, the broken web build
		// goes to every machine before the first one's health deadline.
		opts: Options{AgentEnv: []string{EnvUnsafeRules + "=1"}, Rules: webOne},
		run: func(t *testing.T, s *Scenario) checker.Expect {
			s.MustPush(s.Spec("v3-broken", webBroken()), coordinator.PushOptions{})
			return checker.Expect{Final: Final(v1), Bad: []string{broken}}
		},
		halted:     broken,
		violations: true,
	},
	{
		name: "01-session-expiry-mid-step",
		run: func(t *testing.T, s *Scenario) checker.Expect {
			mark := s.EventMark()
			s.MustPush(s.Spec("v2", map[string]Svc{"store": {Build: "v2", MinHealthy: 1500 * time.Millisecond}, "web": {Build: "v2"}}), coordinator.PushOptions{})
			// A store machine is mid-step: partition it until ZooKeeper
			// expires its session; its step record must keep everyone else up.
			ev := s.WaitEvent(mark, 60*time.Second, "store", "down", "1.0.0")
			s.Machines[ev.Machine].ExpireSession()
			// Then kill -9 a web machine mid-step and restart it only after
			// its session expired.
			ev = s.WaitEvent(mark, 60*time.Second, "web", "down", "1.0.0")
			m := s.Machines[ev.Machine]
			m.Kill()
			m.WaitUnregistered()
			m.Start()
			return checker.Expect{Targets: v2, Final: Final(v2)}
		},
	},
	{
		name: "02-frozen-agent-holds-completion",
		run: func(t *testing.T, s *Scenario) checker.Expect {
			m5 := s.Machines["m5"]
			m5.Freeze() // store/m5 keeps serving 1.0.0
			mark := s.EventMark()
			s.MustPush(s.Spec("v2", both("v2", "v2")), coordinator.PushOptions{})
			// The four others upgrade store...
			waitMachinesServing(t, s, "store", "2.0.0", 60*time.Second, "m1", "m2", "m3", "m4")
			// ...but the entry must not complete and web must not start while
			// m5 is frozen: past its session timeout and a few poll intervals.
			s.Never(SessionTimeout+3*time.Second, "while m5 is frozen", func() (bool, string) {
				if done, o := s.NotCompleted(); done {
					return true, "the rollout completed: " + o
				}
				if tried := s.Tried(mark, "web", "2.0.0"); len(tried) > 0 {
					return true, fmt.Sprintf("web 2.0.0 started on %v", tried)
				}
				if h, err := m5.Hello("store"); err != nil || h.Version != "1.0.0" {
					return true, fmt.Sprintf("store/m5 no longer serves 1.0.0: %+v %v", h, err)
				}
				return false, ""
			})
			m5.Thaw()
			return checker.Expect{Targets: v2, Final: Final(v2)}
		},
	},
	{
		name: "03-percent-quorum-two-crashed",
		run: func(t *testing.T, s *Scenario) checker.Expect {
			s.Machines["m4"].Crash()
			s.Machines["m5"].Crash()
			// Until their sessions expire the agents cannot know (see the
			// note in the report); the row is about a known-crashed fleet.
			s.Machines["m4"].WaitUnregistered()
			s.Machines["m5"].WaitUnregistered()
			mark := s.EventMark()
			// Only web changes: 3 of 5 left, 60% of 5 is 3, nobody may go.
			s.MustPush(s.Spec("web-v2", both("v1", "v2")), coordinator.PushOptions{})
			s.Never(SessionTimeout+3*time.Second, "with m4 and m5 crashed", func() (bool, string) {
				if done, o := s.NotCompleted(); done {
					return true, "the rollout completed: " + o
				}
				evs, _ := s.Events(mark)
				for _, e := range evs {
					if e.Service == "web" && e.Kind != "up" {
						return true, fmt.Sprintf("web/%s went %s (%s)", e.Machine, e.Kind, e.Version)
					}
				}
				return false, ""
			})
			s.Machines["m4"].Recover()
			s.Machines["m5"].Recover()
			return checker.Expect{Targets: map[string]string{"web": "2.0.0"}, Final: Final(map[string]string{"store": "1.0.0", "web": "2.0.0"})}
		},
	},
	{
		name: "05-settings-reload-crashes",
		run: func(t *testing.T, s *Scenario) checker.Expect {
			mark := s.EventMark()
			s.MustPush(s.Spec("crash", map[string]Svc{"store": {Build: "v1", Settings: map[string]string{"crash": "true"}}, "web": {Build: "v1"}}), coordinator.PushOptions{})
			s.WaitHalted(60*time.Second, "")
			waitAllServing(t, s, v1, 30*time.Second)
			if got := machinesWith(s, mark, "store", "down"); len(got) > 1 {
				t.Errorf("store went down on %v: more than max_parallel 1 machine reloaded the crashing settings", got)
			}
			for _, name := range sortedKeys(s.Machines) {
				if h, err := s.Machines[name].Hello("store"); err != nil || h.Settings["crash"] == "true" {
					t.Errorf("store/%s settings not reverted: %+v %v", name, h.Settings, err)
				}
			}
			return checker.Expect{Final: Final(v1)}
		},
		halted: "settings",
	},
	{
		name: "04-supersede-after-halt",
		opts: Options{Rules: webOne},
		run: func(t *testing.T, s *Scenario) checker.Expect {
			mark := s.EventMark()
			s.MustPush(s.Spec("v3-broken", webBroken()), coordinator.PushOptions{})
			h := s.WaitHalted(60*time.Second, broken)
			waitAllServing(t, s, v1, 30*time.Second)
			if tried := s.Tried(mark, "web", broken); len(tried) != 1 || tried[0] != h.Machine {
				t.Errorf("web %s tried on %v, want only the halting machine %s", broken, tried, h.Machine)
			}
			// The same build with only a longer health deadline, superseding.
			mark = s.EventMark()
			longer := map[string]Svc{"store": {Build: "v1"}, "web": {Build: "v3", MaxParallel: 1, Deadline: 2 * HealthDeadline}}
			_, err := s.Push(s.Spec("v3-broken-longer", longer), coordinator.PushOptions{Supersede: true})
			switch {
			case errors.Is(err, coordinator.ErrBadBuild):
				t.Logf("superseding push of the bad build refused: %v", err)
			case err != nil:
				t.Fatalf("superseding push: %v", err)
			default:
				t.Logf("superseding push accepted; it must stay halted")
			}
			s.Never(pollInterval*3, "after the superseding push", func() (bool, string) {
				if tried := s.Tried(mark, "web", broken); len(tried) > 0 {
					return true, fmt.Sprintf("%s tried again on %v without --force", broken, tried)
				}
				return false, ""
			})
			// Forced: exactly one machine tries again, and it halts again.
			mark = s.EventMark()
			s.MustPush(s.Spec("v3-broken-longer", longer), coordinator.PushOptions{Supersede: true, Force: true})
			s.WaitEvent(mark, 60*time.Second, "web", "", broken)
			s.WaitHalted(60*time.Second, broken)
			waitAllServing(t, s, v1, 30*time.Second)
			if tried := s.Tried(mark, "web", broken); len(tried) != 1 {
				t.Errorf("forced: %s tried on %v, want exactly one machine", broken, tried)
			}
			return checker.Expect{Final: Final(v1), Bad: []string{broken}}
		},
		halted: broken,
	},
	{
		name: "06-kill9-mid-step",
		run: func(t *testing.T, s *Scenario) checker.Expect {
			mark := s.EventMark()
			s.MustPush(s.Spec("v2", map[string]Svc{"store": {Build: "v2", MinHealthy: time.Second}, "web": {Build: "v2", MinHealthy: time.Second}}), coordinator.PushOptions{})
			// Restarted before its session expires...
			ev := s.WaitEvent(mark, 60*time.Second, "store", "down", "1.0.0")
			m := s.Machines[ev.Machine]
			m.Kill()
			m.Start()
			// ...and after.
			ev = s.WaitEvent(mark, 60*time.Second, "web", "down", "1.0.0")
			m = s.Machines[ev.Machine]
			m.Kill()
			m.WaitUnregistered()
			m.Start()
			return checker.Expect{Targets: v2, Final: Final(v2)}
		},
	},
	{
		name: "07-kill9-during-revert",
		opts: Options{Rules: webOne},
		run: func(t *testing.T, s *Scenario) checker.Expect {
			mark := s.EventMark()
			s.MustPush(s.Spec("v3-broken", webBroken()), coordinator.PushOptions{})
			// The broken build going down is the revert under way.
			ev := s.WaitEvent(mark, 60*time.Second, "web", "down", broken)
			m := s.Machines[ev.Machine]
			m.Kill()
			m.Start()
			s.WaitHalted(60*time.Second, broken)
			waitAllServing(t, s, v1, 30*time.Second)
			if tried := s.Tried(mark, "web", broken); len(tried) != 1 {
				t.Errorf("%s tried on %v, want only %s", broken, tried, m.Name)
			}
			return checker.Expect{Final: Final(v1), Bad: []string{broken}}
		},
		halted: broken,
	},
	{
		name: "08a-zk-leader-killed-during-spend",
		// Between the decision and its transaction.
		opts: Options{AgentEnv: []string{EnvSpendDelay + "=1500ms"}},
		run: func(t *testing.T, s *Scenario) checker.Expect {
			marks := s.LogMarks()
			s.MustPush(s.Spec("v2", both("v2", "v2")), coordinator.PushOptions{})
			s.WaitAnyLog(marks, 60*time.Second, MsgSpendDelay, "store")
			s.C.KillLeader(t)
			s.C.Heal(t)
			return checker.Expect{Targets: v2, Final: Final(v2)}
		},
	},
	{
		name: "08b-zk-leader-killed-at-step-finish",
		run: func(t *testing.T, s *Scenario) checker.Expect {
			// The new build just came up: the step's finishing writes follow.
			mark := s.EventMark()
			s.MustPush(s.Spec("v2", both("v2", "v2")), coordinator.PushOptions{})
			s.WaitEvent(mark, 60*time.Second, "store", "up", "2.0.0")
			s.C.KillLeader(t)
			s.C.Heal(t)
			return checker.Expect{Targets: v2, Final: Final(v2)}
		},
	},
	{
		name: "08c-zk-leader-killed-during-halt",
		opts: Options{Rules: webOne},
		run: func(t *testing.T, s *Scenario) checker.Expect {
			// Just before the broken build's health deadline.
			mark := s.EventMark()
			s.MustPush(s.Spec("v3-broken", webBroken()), coordinator.PushOptions{})
			ev := s.WaitEvent(mark, 60*time.Second, "web", "unhealthy", broken)
			at := time.NewTimer(time.Until(ev.At.Add(HealthDeadline - 600*time.Millisecond)))
			<-at.C // the fault's moment, not a wait for state
			s.C.KillLeader(t)
			s.WaitHalted(60*time.Second, broken)
			s.C.Heal(t)
			waitAllServing(t, s, v1, 30*time.Second)
			if tried := s.Tried(mark, "web", broken); len(tried) != 1 {
				t.Errorf("%s tried on %v, want one machine", broken, tried)
			}
			return checker.Expect{Final: Final(v1), Bad: []string{broken}}
		},
		halted: broken,
	},
	{
		name: "09-zk-quorum-lost",
		run: func(t *testing.T, s *Scenario) checker.Expect {
			mark := s.EventMark()
			s.MustPush(s.Spec("v2", map[string]Svc{"store": {Build: "v2", MinHealthy: time.Second}, "web": {Build: "v2"}}), coordinator.PushOptions{})
			s.WaitEvent(mark, 60*time.Second, "store", "down", "1.0.0")
			s.C.LoseQuorum(t, SessionTimeout+2*time.Second)
			return checker.Expect{Targets: v2, Final: Final(v2)}
		},
	},
	{
		name: "10-pause-halt-push-before-spend",
		// The delay on one machine per rack: the others roll at full speed.
		opts: Options{MachineEnv: map[string][]string{"m1": {EnvSpendDelay + "=2500ms"}, "m4": {EnvSpendDelay + "=2500ms"}}},
		run: func(t *testing.T, s *Scenario) checker.Expect {
			noStepFor := func(mark int64, d time.Duration, what string) {
				s.Never(d, what, func() (bool, string) {
					evs, _ := s.Events(mark)
					for _, e := range evs {
						if e.Kind == "down" {
							return true, fmt.Sprintf("%s/%s went down (%s)", e.Service, e.Machine, e.Version)
						}
					}
					return false, ""
				})
			}
			// A pause lands between the read and the spend.
			marks := s.LogMarks()
			s.MustPush(s.Spec("v2", both("v2", "v2")), coordinator.PushOptions{})
			s.WaitAnyLog(marks, 60*time.Second, MsgSpendDelay, "store")
			if err := coordinator.Pause(s.Conn, "faults", "pause before the spend"); err != nil {
				t.Fatal(err)
			}
			noStepFor(s.EventMark(), 4*time.Second, "paused before the spend")
			if _, err := coordinator.Resume(s.Conn, "faults"); err != nil {
				t.Fatal(err)
			}
			// A halt lands between the read and the spend.
			marks = s.LogMarks()
			s.WaitAnyLog(marks, 60*time.Second, MsgSpendDelay, "")
			haltActive(t, s, "halted by the test before the spend")
			noStepFor(s.EventMark(), 4*time.Second, "halted before the spend")
			if _, err := coordinator.Resume(s.Conn, "faults"); err != nil {
				t.Fatal(err)
			}
			// A push lands between the read and the spend: nobody starts
			// store 2.0.0 after it.
			marks = s.LogMarks()
			s.WaitAnyLog(marks, 60*time.Second, MsgSpendDelay, "")
			mark := s.EventMark()
			s.MustPush(s.Spec("v4", both("v4", "v2")), coordinator.PushOptions{Supersede: true})
			s.WaitCompleted(Converge)
			if got := machinesWith(s, mark, "store", "up", "2.0.0"); len(got) > 0 {
				t.Errorf("store 2.0.0 started on %v after the push of 4.0.0", got)
			}
			want := map[string]string{"store": "4.0.0", "web": "2.0.0"}
			return checker.Expect{Final: Final(want)}
		},
	},
	{
		name: "11-supersede-and-rollback",
		opts: Options{Rules: webOne},
		run: func(t *testing.T, s *Scenario) checker.Expect {
			// Rollback while halted.
			s.MustPush(s.Spec("v3-broken", webBroken()), coordinator.PushOptions{})
			s.WaitHalted(60*time.Second, broken)
			if _, err := s.Rollback("", coordinator.PushOptions{}); err != nil {
				t.Fatalf("rollback while halted: %v", err)
			}
			s.WaitCompleted(Converge)
			// Supersede mid-step.
			mark := s.EventMark()
			s.MustPush(s.Spec("v2", map[string]Svc{"store": {Build: "v2", MinHealthy: time.Second}, "web": {Build: "v2", MaxParallel: 1}}), coordinator.PushOptions{})
			s.WaitEvent(mark, 60*time.Second, "store", "down", "1.0.0")
			s.MustPush(s.Spec("v4", map[string]Svc{"store": {Build: "v4"}, "web": {Build: "v2", MaxParallel: 1}}), coordinator.PushOptions{Supersede: true})
			s.WaitCompleted(Converge)
			// Supersede while halted (the broken build, forced).
			s.MustPush(s.Spec("v3-broken-again", map[string]Svc{"store": {Build: "v4"}, "web": {Build: "v3", MaxParallel: 1}}), coordinator.PushOptions{Force: true})
			s.WaitHalted(60*time.Second, broken)
			e := s.MustPush(s.Spec("web-v1", map[string]Svc{"store": {Build: "v4"}, "web": {Build: "v1", MaxParallel: 1}}), coordinator.PushOptions{Supersede: true})
			s.WaitCompleted(Converge)
			// Rollback mid-step.
			mark = s.EventMark()
			s.MustPush(s.Spec("store-v2", map[string]Svc{"store": {Build: "v2", MinHealthy: time.Second}, "web": {Build: "v1", MaxParallel: 1}}), coordinator.PushOptions{})
			s.WaitEvent(mark, 60*time.Second, "store", "down", "4.0.0")
			res, err := s.Rollback("", coordinator.PushOptions{})
			if err != nil {
				t.Fatalf("rollback mid-step: %v", err)
			}
			if res.SpecID != e {
				t.Errorf("rollback went to %s, want %s", spec.ShortID(res.SpecID), spec.ShortID(e))
			}
			want := map[string]string{"store": "4.0.0", "web": "1.0.0"}
			return checker.Expect{Final: Final(want), Bad: []string{broken}}
		},
	},
	{
		name:  "13-quorum-larger-than-fleet",
		world: "api",
		run: func(t *testing.T, s *Scenario) checker.Expect {
			head := s.Head()
			mark := s.EventMark()
			six := spec.Quorum{Count: 6}
			_, err := s.Push(s.Spec("quorum-6", map[string]Svc{"store": {Build: "v2", Quorum: &six}, "web": {Build: "v1"}}), coordinator.PushOptions{})
			if !errors.Is(err, coordinator.ErrQuorumTooLarge) {
				t.Errorf("push with quorum 6 of 5: err %v, want ErrQuorumTooLarge", err)
			}
			if h := s.Head(); h != head {
				t.Errorf("HEAD moved %s -> %s", spec.ShortID(head), spec.ShortID(h))
			}
			s.Never(pollInterval*2, "after the refused push", func() (bool, string) {
				if tried := s.Tried(mark, "store", "2.0.0"); len(tried) > 0 {
					return true, fmt.Sprintf("store 2.0.0 started on %v", tried)
				}
				return false, ""
			})
			return checker.Expect{Final: Final(v1)}
		},
	},
	{
		name:  "14-rollback-to-halted-spec",
		world: "api",
		opts:  Options{Rules: webOne},
		run: func(t *testing.T, s *Scenario) checker.Expect {
			bad := s.MustPush(s.Spec("v3-broken", webBroken()), coordinator.PushOptions{})
			s.WaitHalted(60*time.Second, broken)
			if _, err := s.Rollback("", coordinator.PushOptions{}); err != nil {
				t.Fatalf("rollback: %v", err)
			}
			s.WaitCompleted(Converge)
			head := s.Head()
			mark := s.EventMark()
			_, err := s.Rollback(bad, coordinator.PushOptions{})
			if !errors.Is(err, coordinator.ErrBadBuild) {
				t.Errorf("rollback to the halted spec: err %v, want ErrBadBuild", err)
			}
			if h := s.Head(); h != head {
				t.Errorf("HEAD moved %s -> %s", spec.ShortID(head), spec.ShortID(h))
			}
			s.Never(pollInterval*2, "after the refused rollback", func() (bool, string) {
				if tried := s.Tried(mark, "web", broken); len(tried) > 0 {
					return true, fmt.Sprintf("%s started on %v", broken, tried)
				}
				return false, ""
			})
			return checker.Expect{Final: Final(v1), Bad: []string{broken}}
		},
	},
	{
		name:  "12-service-without-members",
		world: "api",
		opts:  Options{ExtraServices: []string{"cache"}},
		run: func(t *testing.T, s *Scenario) checker.Expect {
			s.MustPush(s.Spec("cache", map[string]Svc{"store": {Build: "v1"}, "web": {Build: "v1"}, "cache": {Build: "v1"}}), coordinator.PushOptions{})
			return checker.Expect{Final: Final(v1)}
		},
		halted: "cache",
	},
	{
		// The canary holds the rest until its bake time is over, judged
		// from the services' own event log: the next store instance goes
		// down at least the bake time after the canary came up on v2.
		name:  "18-canary-holds-until-bake",
		world: "canary",
		run: func(t *testing.T, s *Scenario) checker.Expect {
			mark := s.EventMark()
			withCanary := map[string]Svc{"store": {Build: "v2", Canary: &spec.Canary{Machines: 1, Bake: spec.Duration{Duration: canaryBake}}}, "web": {Build: "v1"}}
			s.MustPush(s.Spec("v2-canary", withCanary), coordinator.PushOptions{})
			s.WaitCompleted(Converge)
			evs, _ := s.Events(mark)
			var canary, next *Event
			for i := range evs {
				e := &evs[i]
				switch {
				case e.Service != "store":
				case canary == nil && e.Kind == "up" && e.Version == Version("v2"):
					canary = e
				case canary != nil && e.Kind == "down" && e.Machine != canary.Machine:
					next = e
				}
				if next != nil {
					break
				}
			}
			if canary == nil || next == nil {
				t.Fatalf("no canary and next step in the event log: %+v", evs)
			}
			if gap := next.At.Sub(canary.At); gap < canaryBake {
				t.Errorf("the rest did not wait for the bake (%s): %s went down %s after the canary %s came up on %s",
					canaryBake, next.Machine, gap.Round(time.Millisecond), canary.Machine, canary.Version)
			} else {
				t.Logf("canary %s up on %s; next step (%s) %s later", canary.Machine, canary.Version, next.Machine, gap.Round(time.Millisecond))
			}
			return checker.Expect{Final: Final(map[string]string{"store": Version("v2"), "web": Version("v1")})}
		},
	},
	{
		// A broken canary halts the rollout as any step does, and is the
		// only machine that ever ran the broken build.
		name:  "19-canary-fails-halts",
		world: "canary",
		run: func(t *testing.T, s *Scenario) checker.Expect {
			mark := s.EventMark()
			withCanary := map[string]Svc{"store": {Build: "v3", Canary: &spec.Canary{Machines: 1, Bake: spec.Duration{Duration: time.Minute}}}, "web": {Build: "v1"}}
			s.MustPush(s.Spec("v3-canary", withCanary), coordinator.PushOptions{})
			s.WaitHalted(60*time.Second, broken)
			after := map[string]string{"store": Version("v2"), "web": Version("v1")}
			waitAllServing(t, s, after, 30*time.Second)
			if tried := s.Tried(mark, "store", broken); len(tried) != 1 {
				t.Errorf("%s started on %v, want the one canary", broken, tried)
			}
			return checker.Expect{Final: Final(after), Bad: []string{broken}}
		},
		halted: broken,
	},
}

func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("fault matrix: ZooKeeper ensemble and agent processes")
	}
	began := time.Now()
	c := NewCluster(t)
	t.Logf("ensemble and builds ready after %s", time.Since(began).Round(time.Millisecond))
	var shared *Scenario // the scenario of the current world
	// A world's rows must be consecutive: a world started again would
	// reuse its root (and find the first one's blobs and origin there).
	worlds := map[string]int{}
	for i, r := range table {
		if w, seen := worlds[r.world]; r.world != "" && seen && w != i-1 {
			t.Fatalf("row %s: world %q rows are not consecutive in the table", r.name, r.world)
		}
		worlds[r.world] = i
	}
	for i, r := range table {
		s := shared
		if r.world != "" && s == nil {
			s = c.NewScenario(t, r.world, worldOptions(r.world))
			s.Shared = true
			shared = s
		}
		lastOfWorld := r.world != "" && (i+1 == len(table) || table[i+1].world != r.world)
		t.Run(r.name, func(t *testing.T) {
			rowBegan := time.Now()
			if s == nil {
				s = c.NewScenario(t, strings.SplitN(r.name, "-", 2)[0], r.opts)
			} else {
				defer func() {
					if t.Failed() {
						s.Dump(t)
					}
				}()
			}
			s.T = t
			if !s.bootstrapped {
				s.Bootstrap()
			}
			s.Mark(r.name)
			exp := r.run(t, s)
			if exp.Since == "" {
				exp.Since = r.name
			}
			o := s.WaitOutcome(Converge)
			switch {
			case r.halted == "" && !o.Completed:
				t.Errorf("outcome %s, want completed", o)
			case r.halted != "" && (o.Halted == nil || !strings.Contains(o.Halted.Reason, r.halted)):
				t.Errorf("outcome %s, want halted with a reason containing %q", o, r.halted)
			default:
				t.Logf("outcome: %s", o)
			}
			s.WaitExcusesLifted(60 * time.Second)
			rep := s.Judge(exp)
			switch {
			case r.violations && rep.OK():
				t.Errorf("the checker caught no violation of the deliberately broken rules")
			case !r.violations && !rep.OK():
				t.Errorf("checker: %d violations, first: %s", len(rep.Violations), rep.Violations[0])
			}
			t.Logf("row took %s", time.Since(rowBegan).Round(time.Millisecond))
		})
		if lastOfWorld {
			shared.Close()
			shared = nil
		}
	}
	t.Logf("fault matrix took %s", time.Since(began).Round(time.Millisecond))
}

// worldOptions merges the options of a world's rows.
func worldOptions(world string) Options {
	var o Options
	for _, r := range table {
		if r.world != world {
			continue
		}
		o.AgentEnv = append(o.AgentEnv, r.opts.AgentEnv...)
		o.ExtraServices = append(o.ExtraServices, r.opts.ExtraServices...)
		if r.opts.Racks != nil {
			o.Racks, o.DCs = r.opts.Racks, r.opts.DCs
		}
		for m, env := range r.opts.MachineEnv {
			if o.MachineEnv == nil {
				o.MachineEnv = map[string][]string{}
			}
			o.MachineEnv[m] = append(o.MachineEnv[m], env...)
		}
		for svc, x := range r.opts.Rules {
			if o.Rules == nil {
				o.Rules = map[string]Rules{}
			}
			o.Rules[svc] = x
		}
	}
	return o
}

// haltActive halts the active deploy entry as an operator would.
func haltActive(t *testing.T, s *Scenario, reason string) {
	t.Helper()
	for range 10 {
		q, err := coordinator.ReadQueue(s.Conn)
		if err != nil {
			t.Fatal(err)
		}
		e := coordinator.Active(q)
		if e == nil {
			t.Fatal("halt: no active entry")
		}
		ok, err := coordinator.Halt(s.Conn, *e, reason, "")
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return
		}
	}
	t.Fatal("halt: the entry kept changing")
}

// machinesWith lists the machines with an event of service of kind (and
// version, if given) after mark.
func machinesWith(s *Scenario, mark int64, service, kind string, version ...string) []string {
	evs, _ := s.Events(mark)
	set := map[string]bool{}
	for _, e := range evs {
		if e.Service == service && e.Kind == kind && (len(version) == 0 || e.Version == version[0]) {
			set[e.Machine] = true
		}
	}
	return sortedKeys(set)
}

// waitMachinesServing waits until service on the named machines answers
// healthy with version.
func waitMachinesServing(t *testing.T, s *Scenario, service, version string, timeout time.Duration, machines ...string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for _, name := range machines {
		for {
			h, err := s.Machines[name].Hello(service)
			if err == nil && h.Healthy && h.Version == version {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s/%s serves %+v (%v), want %s", service, name, h, err, version)
			}
			tick := time.NewTimer(50 * time.Millisecond)
			<-tick.C
		}
	}
}

func waitAllServing(t *testing.T, s *Scenario, versions map[string]string, timeout time.Duration) {
	t.Helper()
	s.WaitServing(timeout, versions)
}
