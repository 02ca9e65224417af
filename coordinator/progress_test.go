package coordinator

import (
	"context"
	"strings"
	"testing"
	"time"

	"dcroll/znodes"
)

const progressSpec = `name: p1
services:
  db:
    version: "2"
    artifact: ` + blobA + `
    run: ["./db"]
    progress_deadline: 10m
`

// TestAdvancerHaltsWithoutProgress: the progress deadline halts the active
// entry with a reason naming the members that hold it back, restarts on
// any progress, does not run while paused, and starts over for a new
// leader.
func TestAdvancerHaltsWithoutProgress(t *testing.T) {
	c := env(t)
	sp := mustSpec(t, progressSpec)
	if _, err := Push(context.Background(), c, sp, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"m1", "m2", "m3"} {
		addMember(t, c, "db", m, "1")
	}
	registerAt(t, c, "db", "m1", "1", "old", true)
	m2 := registerAt(t, c, "db", "m2", "1", "old", true)
	setCurrent := func(version, specID, state string, healthy bool) {
		t.Helper()
		cur := &znodes.Current{Machine: "m2", Service: "db", Rack: "r1", DC: "par1", Version: version, SpecID: specID, State: state, Healthy: healthy}
		if _, err := c.ZK().Set(m2, znodes.MustEncode(cur), -1); err != nil {
			t.Fatal(err)
		}
	}
	setCurrent("2", sp.ID(), znodes.StateStaging, false)
	now := time.Date(2026, 12, 1, 22, 0, 0, 0, time.UTC)
	a := newAdvancer(c, &now, time.Hour)
	tick := func(d time.Duration, a *advancer) QueueEntry {
		t.Helper()
		now = now.Add(d)
		if err := a.once(); err != nil {
			t.Fatal(err)
		}
		q, err := ReadQueue(c)
		if err != nil {
			t.Fatal(err)
		}
		return q[0]
	}
	pending := func(e QueueEntry, when string) {
		t.Helper()
		if e.State != znodes.DeployPending {
			t.Fatalf("%s: entry %s: %s", when, e.State, e.Reason)
		}
	}
	pending(tick(0, a), "first sight")
	pending(tick(9*time.Minute, a), "9m without progress")
	// Progress: m2 finishes staging and runs the target. The clock restarts.
	setCurrent("2", sp.ID(), znodes.StateRunning, true)
	pending(tick(59*time.Second, a), "progress at 9m59s")
	pending(tick(10*time.Minute-time.Second, a), "9m59s after progress")
	// A pause stops the clock: 20 paused minutes, then 9m59s more.
	if err := Pause(c, "test", "lunch"); err != nil {
		t.Fatal(err)
	}
	pending(tick(20*time.Minute, a), "paused")
	if _, err := Resume(c, "test"); err != nil {
		t.Fatal(err)
	}
	pending(tick(0, a), "just resumed")
	pending(tick(10*time.Minute-time.Second, a), "9m59s after the pause")
	// A new leader starts over: it halts later, never earlier.
	b := newAdvancer(c, &now, time.Hour)
	pending(tick(0, b), "new leader")
	pending(tick(10*time.Minute-time.Second, b), "new leader, 9m59s")
	e := tick(time.Second, b)
	want := "no progress for 10m0s on db: m1 runs 1, m3 absent (last seen 1 at 2026-12-01 20:31:00): see dcroll status; dcroll resume to retry"
	if e.State != znodes.DeployHalted || e.Reason != want || e.Machine != "" {
		t.Fatalf("entry = %s %q, want halted: %q", e.State, e.Reason, want)
	}
	if !strings.HasPrefix(e.Reason, ProgressDeadlinePrefix) {
		t.Fatal("reason lacks ProgressDeadlinePrefix")
	}
}

func TestFingerprintAndStuck(t *testing.T) {
	e := QueueEntry{DeployEntry: znodes.DeployEntry{Service: "store", Version: "2", SpecID: "s2", State: znodes.DeployRolling}}
	at := time.Date(2026, 12, 1, 20, 31, 0, 0, time.UTC)
	states := []znodes.MemberState{
		{Machine: "m1", Current: &znodes.Current{Version: "2", SpecID: "s2", State: znodes.StateRunning, Healthy: true}, Available: true},
		{Machine: "m3", Current: &znodes.Current{Version: "2", SpecID: "s2", State: znodes.StateStaging}},
		{Machine: "m5", Member: &znodes.Member{Version: "1.0.0", Seen: at}},
	}
	got := strings.Join(stuck(e, states), ", ")
	if want := "m3 staging, m5 absent (last seen 1.0.0 at 2026-12-01 20:31:00)"; got != want {
		t.Errorf("stuck = %q, want %q", got, want)
	}
	base := fingerprint(e, states)
	for name, change := range map[string]func(e *QueueEntry, s []znodes.MemberState){
		"entry state": func(e *QueueEntry, s []znodes.MemberState) { e.State = znodes.DeployPending },
		"version":     func(e *QueueEntry, s []znodes.MemberState) { s[1].Current.Version = "3" },
		"state":       func(e *QueueEntry, s []znodes.MemberState) { s[1].Current.State = znodes.StateRunning },
		"health":      func(e *QueueEntry, s []znodes.MemberState) { s[1].Current.Healthy = true },
		"step record": func(e *QueueEntry, s []znodes.MemberState) { s[0].Down = &znodes.Down{} },
		"returns":     func(e *QueueEntry, s []znodes.MemberState) { s[2].Current = &znodes.Current{Version: "1.0.0"} },
	} {
		e2 := e
		s2 := make([]znodes.MemberState, len(states))
		for i, s := range states {
			s2[i] = s
			if s.Current != nil {
				c := *s.Current
				s2[i].Current = &c
			}
		}
		change(&e2, s2)
		if fingerprint(e2, s2) == base {
			t.Errorf("%s: fingerprint unchanged", name)
		}
	}
	if fingerprint(e, states) != base {
		t.Error("fingerprint not stable")
	}
}

// TestReadHistoryOutcomes: outcomes derived from the next move and the queue.
func TestReadHistoryOutcomes(t *testing.T) {
	c := env(t)
	ctx := context.Background()
	outcomes := func() string {
		t.Helper()
		h, err := ReadHistory(c)
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, l := range h {
			o := l.Outcome
			if l.OutcomeService != "" {
				o += "(" + l.OutcomeService + ")"
			}
			s = append(s, o)
		}
		return strings.Join(s, ", ")
	}
	v1 := mustSpec(t, specYAML("v1", "1", blobA, "1", blobB, "64"))
	if _, err := Push(ctx, c, v1, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	if got := outcomes(); got != "in progress" {
		t.Fatalf("after v1: %s", got)
	}
	markAllDone(t, c)
	if got := outcomes(); got != "done" {
		t.Fatalf("v1 done: %s", got)
	}
	v2 := mustSpec(t, specYAML("v2", "2", blobC, "1", blobB, "64"))
	if _, err := Push(ctx, c, v2, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	v3 := mustSpec(t, specYAML("v3", "3", blobA, "1", blobB, "64"))
	if _, err := Push(ctx, c, v3, PushOptions{By: "test", Supersede: true}); err != nil {
		t.Fatal(err)
	}
	q, _ := ReadQueue(c)
	if _, err := Halt(c, q[0], "health deadline passed", "m2"); err != nil {
		t.Fatal(err)
	}
	if got := outcomes(); got != "done, superseded, halted(db)" {
		t.Fatalf("v3 halted: %s", got)
	}
	if _, err := Rollback(ctx, c, v2.ID(), PushOptions{By: "test", Supersede: true}); err != nil {
		t.Fatal(err)
	}
	if got := outcomes(); got != "done, superseded, rolled back, in progress" {
		t.Fatalf("after rollback: %s", got)
	}
}
