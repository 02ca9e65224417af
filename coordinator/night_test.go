package coordinator

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"dcroll/spec"
	"dcroll/znodes"
)

// The fixture of the pure tests: service store, members m1..m4 all
// available on 1.0.0 (spec "old"), entry d-2 upgrades it to 2.0.0 (spec
// "new"), quorum 3; entry d-3 (web) comes after it.

var nightNow = time.Date(2026, 12, 2, 1, 30, 0, 0, time.UTC)

func nightMember(m, version, specID string) znodes.MemberState {
	cur := &znodes.Current{Machine: m, Service: "store", Rack: "r1", Version: version, SpecID: specID, State: znodes.StateRunning, Healthy: true}
	mem := &znodes.Member{Machine: m, Service: "store", Rack: "r1", Version: version, Seen: time.Date(2026, 12, 1, 20, 31, 0, 0, time.UTC)}
	return znodes.MemberState{Machine: m, Rack: "r1", Member: mem, Current: cur, Available: true}
}

func nightView() entryView {
	v := entryView{
		e: QueueEntry{Node: "d-2", DeployEntry: znodes.DeployEntry{Service: "store", Version: "2.0.0", FromVersion: "1.0.0",
			SpecID: "new", Kind: "upgrade", State: znodes.DeployRolling}},
		svc: &spec.Service{Version: "2.0.0", Quorum: spec.Quorum{Count: 3}, MaxParallel: 1,
			Health: &spec.Health{MinHealthy: spec.Duration{Duration: 10 * time.Second}}},
	}
	for _, m := range []string{"m1", "m2", "m3", "m4"} {
		v.states = append(v.states, nightMember(m, "1.0.0", "old"))
	}
	return v
}

func doneOn(v *entryView, ms ...string) {
	for i := range v.states {
		for _, m := range ms {
			if v.states[i].Machine == m {
				v.states[i].Current.Version, v.states[i].Current.SpecID = "2.0.0", "new"
			}
		}
	}
}

func unavailable(v *entryView, m string, how func(*znodes.MemberState)) {
	for i := range v.states {
		if v.states[i].Machine == m {
			how(&v.states[i])
			v.states[i].Available = false
		}
	}
}

func TestBlockedBy(t *testing.T) {
	paris := &spec.Window{Start: "01:00", End: "05:00", Timezone: "Europe/Paris"}
	closed := &spec.Window{Start: "03:00", End: "05:00", Timezone: "Europe/Paris"} // 01:30 UTC is 02:30 in Paris
	store := nightView().e
	tests := []struct {
		name   string
		mod    func(v *entryView, active *QueueEntry, w **spec.Window, ctl *znodes.Control)
		code   string
		reason string
	}{
		{"all available: progressing", nil, "", ""},
		{"one mid-step: progressing", func(v *entryView, _ *QueueEntry, _ **spec.Window, _ *znodes.Control) {
			unavailable(v, "m2", func(s *znodes.MemberState) { s.Down = &znodes.Down{Machine: "m2"} })
		}, "", ""},
		{"halted: the reason once, first line", func(v *entryView, a *QueueEntry, _ **spec.Window, _ *znodes.Control) {
			v.e.State, v.e.Machine, v.e.Reason = znodes.DeployHalted, "m4", "not healthy after 30s: 500\n<html>body</html>"
			*a = v.e
		}, znodes.BlockedHalted, "halted on m4: not healthy after 30s: 500"},
		{"behind another service", func(v *entryView, a *QueueEntry, _ **spec.Window, _ *znodes.Control) {
			v.e.Node, v.e.Service, v.e.State = "d-3", "web", znodes.DeployPending
		}, znodes.BlockedDependency, "waiting for store"},
		{"behind a halted service", func(v *entryView, a *QueueEntry, _ **spec.Window, _ *znodes.Control) {
			a.State = znodes.DeployHalted
			v.e.Node, v.e.Service, v.e.State = "d-3", "web", znodes.DeployPending
		}, znodes.BlockedDependency, "waiting for store (halted)"},
		{"paused", func(_ *entryView, _ *QueueEntry, _ **spec.Window, ctl *znodes.Control) {
			ctl.Paused, ctl.By, ctl.Reason = true, "alice", "incident 42"
		}, znodes.BlockedPaused, "paused by alice: incident 42"},
		{"window open", func(_ *entryView, _ *QueueEntry, w **spec.Window, _ *znodes.Control) { *w = paris }, "", ""},
		{"window closed", func(_ *entryView, _ *QueueEntry, w **spec.Window, _ *znodes.Control) { *w = closed },
			znodes.BlockedWindow, "outside window until 03:00 Europe/Paris"},
		{"no members", func(v *entryView, _ *QueueEntry, _ **spec.Window, _ *znodes.Control) { v.states = nil },
			znodes.BlockedNoMembers, "no machine has registered store"},
		{"quorum: one absent, 3/4 available, min 3", func(v *entryView, _ *QueueEntry, _ **spec.Window, _ *znodes.Control) {
			unavailable(v, "m4", func(s *znodes.MemberState) { s.Current = nil })
		}, znodes.BlockedQuorum, "quorum 3/4 available, min 3; m4 absent since 20:31 UTC"},
		{"quorum: one unhealthy", func(v *entryView, _ *QueueEntry, _ **spec.Window, _ *znodes.Control) {
			unavailable(v, "m2", func(s *znodes.MemberState) { s.Current.Healthy = false })
		}, znodes.BlockedQuorum, "quorum 3/4 available, min 3"},
		{"absent member holds completion", func(v *entryView, _ *QueueEntry, _ **spec.Window, _ *znodes.Control) {
			doneOn(v, "m1", "m2", "m3")
			unavailable(v, "m4", func(s *znodes.MemberState) { s.Current = nil })
		}, znodes.BlockedAbsent, "m4 absent since 20:31 UTC"},
		{"staging members", func(v *entryView, _ *QueueEntry, _ **spec.Window, _ *znodes.Control) {
			doneOn(v, "m1", "m2")
			unavailable(v, "m3", func(s *znodes.MemberState) { s.Current.State = znodes.StateStaging })
			unavailable(v, "m4", func(s *znodes.MemberState) { s.Current.State = znodes.StateStaging })
		}, znodes.BlockedStaging, "m3,m4 staging"},
		{"canary out, no bake: waits for promote", func(v *entryView, _ *QueueEntry, _ **spec.Window, _ *znodes.Control) {
			v.svc.Canary = &spec.Canary{Machines: 1}
			doneOn(v, "m1")
		}, znodes.BlockedCanary, "canary: 1 on 2.0.0, waiting for dcroll promote store"},
		{"canary baking", func(v *entryView, _ *QueueEntry, _ **spec.Window, _ *znodes.Control) {
			v.svc.Canary = &spec.Canary{Machines: 1, Bake: spec.Duration{Duration: 10 * time.Minute}}
			v.e.BakeSince = nightNow.Add(-4 * time.Minute)
			doneOn(v, "m1")
		}, znodes.BlockedCanary, "canary: 1 on 2.0.0 baking until 01:36:00 UTC (6m0s left; dcroll promote store skips it)"},
		{"canary promoted: progressing", func(v *entryView, _ *QueueEntry, _ **spec.Window, _ *znodes.Control) {
			v.svc.Canary = &spec.Canary{Machines: 1}
			v.e.Promoted = true
			doneOn(v, "m1")
		}, "", ""},
		{"canary still stepping: progressing", func(v *entryView, _ *QueueEntry, _ **spec.Window, _ *znodes.Control) {
			v.svc.Canary = &spec.Canary{Machines: 2}
			doneOn(v, "m1")
		}, "", ""},
		{"done", func(v *entryView, _ *QueueEntry, _ **spec.Window, _ *znodes.Control) { v.e.State = znodes.DeployDone }, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, active := nightView(), store
			var w *spec.Window
			var ctl znodes.Control
			if tt.mod != nil {
				tt.mod(&v, &active, &w, &ctl)
			}
			code, reason := blockedBy(v, &active, w, ctl, nightNow)
			if code != tt.code || !strings.HasPrefix(reason, tt.reason) || (tt.reason == "") != (reason == "") {
				t.Errorf("blockedBy = %q, %q; want %q, %q", code, reason, tt.code, tt.reason)
			}
		})
	}
}

// TestStepClock: one sample per member done, from the member done before
// it (the first from the entry's first step record), timed by the
// members' own timestamps; members done before the clock started are not
// samples; blocked time is not step time.
func TestStepClock(t *testing.T) {
	v := nightView()
	doneOn(&v, "m4") // done before the clock starts: no sample
	var c stepClock
	at := func(d time.Duration) time.Time { return nightNow.Add(d) }
	step := func(m string, since time.Duration) {
		unavailable(&v, m, func(s *znodes.MemberState) { s.Down = &znodes.Down{Machine: m, Entry: "d-2", At: at(since)} })
	}
	finish := func(m string, when time.Duration) {
		for i := range v.states {
			if v.states[i].Machine == m {
				v.states[i].Down, v.states[i].Available = nil, true
				v.states[i].Current.Since = at(when)
			}
		}
		doneOn(&v, m)
	}
	if got := c.observe(v, "", at(0)); len(got) != 0 {
		t.Fatalf("samples before any step: %v", got)
	}
	step("m1", 2*time.Second)
	if got := c.observe(v, "", at(3*time.Second)); len(got) != 0 || !c.start.Equal(at(2*time.Second)) {
		t.Fatalf("start = %v, samples %v", c.start, got)
	}
	finish("m1", 12*time.Second)
	if got := c.observe(v, "", at(13*time.Second)); len(got) != 1 || got[0] != 10 {
		t.Fatalf("first sample = %v, want 10s from the step record to m1 done", got)
	}
	step("m2", 13*time.Second)
	finish("m2", 20*time.Second)
	if got := c.observe(v, "", at(21*time.Second)); len(got) != 1 || got[0] != 8 {
		t.Fatalf("second sample = %v, want 8s from m1 done to m2 done", got)
	}
	// Blocked (paused) for an hour after m2: not counted.
	if got := c.observe(v, znodes.BlockedPaused, at(time.Hour)); len(got) != 0 || !c.last.IsZero() {
		t.Fatal("blocked: still timing")
	}
	step("m3", time.Hour+time.Minute)
	if got := c.observe(v, "", at(time.Hour+time.Minute+time.Second)); len(got) != 0 || !c.last.Equal(at(time.Hour+time.Minute)) {
		t.Fatalf("last = %v, want the step record's time", c.last)
	}
	finish("m3", time.Hour+time.Minute+5*time.Second)
	if got := c.observe(v, "", at(time.Hour+2*time.Minute)); len(got) != 1 || got[0] != 5 {
		t.Fatalf("after the block: %v, want 5s", got)
	}
	st := addSample(znodes.StepStat{}, 10, nightNow)
	st = addSample(st, 20, nightNow)
	if st.Samples != 2 || st.Seconds != 13 {
		t.Fatalf("moving average = %+v, want 0.3*20 + 0.7*10", st)
	}
}

// TestBuildNight: ETAs chained in queue order from measured step times (or
// the health settings' estimate), steps fitted into the window, no ETA
// behind a block only a person resolves, and the night's state.
func TestBuildNight(t *testing.T) {
	store := nightView()
	doneOn(&store, "m1")
	web := nightView()
	web.e.Node, web.e.Service, web.e.State = "d-3", "web", znodes.DeployPending
	web.svc = &spec.Service{Version: "2.0.0", Quorum: spec.Quorum{Count: 1}, MaxParallel: 2}
	in := nightInput{now: nightNow, headID: "new", views: []entryView{store, web},
		steps: map[string]znodes.StepStat{"store": {Seconds: 20, Samples: 3}},
		clock: stepClock{entry: "d-2", last: nightNow.Add(-5 * time.Second), start: nightNow.Add(-time.Minute)}}
	r := buildNight(in)
	if r.State != znodes.NightRolling || r.Remaining != 7 {
		t.Fatalf("state %s remaining %d", r.State, r.Remaining)
	}
	s, w := r.Services[0], r.Services[1]
	// store: 3 members left at the measured 20s, from the last done 5s ago.
	if want := nightNow.Add(55 * time.Second); !s.ETA.Equal(want) || !s.Measured || s.Done != 1 || s.Batches != 3 || !s.Start.Equal(in.clock.start) {
		t.Fatalf("store = %+v, want ETA %v", s, want)
	}
	// web: estimate (min_healthy 5s default + 30s overhead) / max_parallel 2 per member, 4 members.
	per := (spec.DefaultHealthMinHealthy + PlanStepOverhead) / 2
	if want := s.ETA.Add(4 * per); !w.ETA.Equal(want) || w.Measured || w.Blocked != znodes.BlockedDependency || w.Batches != 2 {
		t.Fatalf("web = %+v, want ETA %v", w, want)
	}
	if !r.ETA.Equal(w.ETA) {
		t.Fatalf("night ETA %v, want web's %v", r.ETA, w.ETA)
	}

	// A window closing in a minute (now is 02:30 in Paris) and steps of
	// 40s: the second step does not fit and resumes at the next opening.
	in.window = &spec.Window{Start: "01:00", End: "02:31", Timezone: "Europe/Paris"}
	in.steps = map[string]znodes.StepStat{"store": {Seconds: 40, Samples: 3}}
	r = buildNight(in)
	nextOpen := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC) // 01:00 Paris next day
	if got := r.Services[0].ETA; got.Before(nextOpen) || r.Services[0].Window != "01:00-02:31 Europe/Paris" {
		t.Fatalf("store ETA %v with the window closing at 01:31 UTC, want after %v", got, nextOpen)
	}
	in.window = nil
	in.steps = map[string]znodes.StepStat{"store": {Seconds: 20, Samples: 3}}

	// Halted: no ETA for it or after it; the night is halted.
	in.views[0].e.State = znodes.DeployHalted
	r = buildNight(in)
	if r.State != znodes.NightHalted || !r.ETA.IsZero() || !r.Services[0].ETA.IsZero() || !r.Services[1].ETA.IsZero() {
		t.Fatalf("halted: %+v", r)
	}
	// Blocked by quorum: blocked night, no ETA.
	in.views[0].e.State = znodes.DeployRolling
	unavailable(&in.views[0], "m2", func(s *znodes.MemberState) { s.Current = nil })
	r = buildNight(in)
	if r.State != znodes.NightBlocked || !r.ETA.IsZero() || r.Services[0].Blocked != znodes.BlockedQuorum {
		t.Fatalf("quorum: %+v", r.Services[0])
	}
	// Everything done.
	in.views[0].e.State, in.views[1].e.State = znodes.DeployDone, znodes.DeployDone
	if r = buildNight(in); r.State != znodes.NightDone || !r.ETA.IsZero() || r.Remaining != 0 {
		t.Fatalf("done: %+v", r)
	}
	if r = buildNight(nightInput{now: nightNow}); r.State != znodes.NightIdle || r.Services == nil {
		t.Fatalf("idle: %+v", r)
	}
}

// TestBuildNightDomains: a service upgraded a rack at a time has one batch
// per rack when max_parallel and the quorum let a whole rack go, and its
// estimate spreads a batch over the rack's members.
func TestBuildNightDomains(t *testing.T) {
	v := nightView()
	v.states = nil
	for r := range 4 {
		for i := range 5 {
			s := nightMember(fmt.Sprintf("m%d%d", r, i), "1.0.0", "old")
			s.Rack, s.Member.Rack, s.Current.Rack = fmt.Sprintf("r%d", r), fmt.Sprintf("r%d", r), fmt.Sprintf("r%d", r)
			v.states = append(v.states, s)
		}
	}
	v.svc.Domain, v.svc.MaxParallel, v.svc.Quorum = znodes.LabelRack, 5, spec.Quorum{Count: 15}
	r := buildNight(nightInput{now: nightNow, headID: "new", views: []entryView{v}})
	s := r.Services[0]
	if s.Batches != 4 {
		t.Errorf("batches %d, want 4 (one per rack)", s.Batches)
	}
	per := batchEstimate(v.svc, v.e.Kind) / 5
	if want := nightNow.Add(20 * per); !s.ETA.Equal(want) {
		t.Errorf("ETA %v, want %v (20 members at a batch over 5)", s.ETA, want)
	}
	// A quorum that spares only 2: 3 batches per rack.
	v.svc.Quorum = spec.Quorum{Count: 18}
	if s := buildNight(nightInput{now: nightNow, headID: "new", views: []entryView{v}}).Services[0]; s.Batches != 12 {
		t.Errorf("quorum sparing 2: batches %d, want 12", s.Batches)
	}
}
