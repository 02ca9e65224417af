package coordinator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"dcroll/spec"
	"dcroll/znodes"
)

func canarySpec(version, blob, canary string) string {
	return fmt.Sprintf(`name: c%s
services:
  db:
    version: %q
    artifact: %s
    run: ["./db"]
    quorum: 1
%s`, version, version, blob, canary)
}

// canaryWorld pushes db 1 (new) and, once done, db 2 with canary; m1..m3
// are members running 1. It returns the v2 spec and an advancer with a
// night writer on an injected clock.
func canaryWorld(t *testing.T, canary string) (*znodes.Conn, *spec.Spec, *advancer, *time.Time, map[string]string) {
	t.Helper()
	c := env(t)
	v1 := mustSpec(t, canarySpec("1", blobA, ""))
	if _, err := Push(context.Background(), c, v1, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	markAllDone(t, c)
	paths := map[string]string{}
	for _, m := range []string{"m1", "m2", "m3"} {
		addMember(t, c, "db", m, "1")
		paths[m] = registerAt(t, c, "db", m, "1", v1.ID(), true)
	}
	v2 := mustSpec(t, canarySpec("2", blobB, "    canary: "+canary+"\n"))
	if _, err := Push(context.Background(), c, v2, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)
	a := newAdvancer(c, &now, time.Hour)
	a.night = newNightWriter(c, "coord-test")
	return c, v2, a, &now, paths
}

// setMachine rewrites a fake agent's registration.
func setMachine(t *testing.T, c *znodes.Conn, path, m, version, specID, state string, healthy bool) {
	t.Helper()
	cur := &znodes.Current{Machine: m, Service: "db", Rack: "r1", DC: "par1", Version: version, SpecID: specID, State: state, Healthy: healthy}
	if _, err := c.ZK().Set(path, znodes.MustEncode(cur), -1); err != nil {
		t.Fatal(err)
	}
}

func tickNight(t *testing.T, c *znodes.Conn, a *advancer, now *time.Time, d time.Duration) (QueueEntry, znodes.ServiceRollout) {
	t.Helper()
	*now = now.Add(d)
	if err := a.once(); err != nil {
		t.Fatal(err)
	}
	q, err := ReadQueue(c)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ReadRollout(c)
	if err != nil || r == nil {
		t.Fatalf("no night record: %v", err)
	}
	if r.By != "coord-test" || !r.At.Equal(now.UTC()) && d > nightRefresh {
		t.Fatalf("record by %q at %v", r.By, r.At)
	}
	for _, s := range r.Services {
		if s.Entry == q[0].Node {
			return q[0], s
		}
	}
	t.Fatalf("no record of entry %s: %+v", q[0].Node, r.Services)
	return QueueEntry{}, znodes.ServiceRollout{}
}

// TestCanaryBakesThenPromotes: with one canary done, the record says the
// rest wait; the bake starts once it is healthy, restarts when it goes
// absent, and the leader promotes the entry after the bake time.
func TestCanaryBakesThenPromotes(t *testing.T) {
	c, v2, a, now, paths := canaryWorld(t, "{machines: 1, bake: 10m}")
	e, s := tickNight(t, c, a, now, 0)
	if e.BakeSince.IsZero() != true || s.Blocked != "" || s.Canary == nil || s.Canary.Machines != 1 {
		t.Fatalf("before any canary: entry %+v record %+v", e, s)
	}
	setMachine(t, c, paths["m1"], "m1", "2", v2.ID(), znodes.StateRunning, true)
	e, s = tickNight(t, c, a, now, time.Second)
	bakeStart := *now
	if !e.BakeSince.Equal(bakeStart) || e.Promoted {
		t.Fatalf("canary healthy: entry bake since %v promoted %v", e.BakeSince, e.Promoted)
	}
	e, s = tickNight(t, c, a, now, 4*time.Minute)
	if s.Blocked != znodes.BlockedCanary || !strings.Contains(s.BlockedBy, "baking until 01:10:01 UTC (6m0s left") {
		t.Fatalf("baking: %q %q", s.Blocked, s.BlockedBy)
	}
	if s.ETA.IsZero() || s.ETA.Before(bakeStart.Add(10*time.Minute)) {
		t.Fatalf("ETA %v before the bake ends", s.ETA)
	}
	// The progress deadline does not run while baking (default 30m).
	e, _ = tickNight(t, c, a, now, 5*time.Minute+59*time.Second)
	if e.Promoted || e.State == znodes.DeployHalted {
		t.Fatalf("promoted or halted early: %+v", e)
	}
	e, s = tickNight(t, c, a, now, time.Second)
	if !e.Promoted || e.PromotedBy != PromotedByBake || s.Blocked != "" {
		t.Fatalf("after the bake: entry %+v record %q", e, s.BlockedBy)
	}
	if _, err := Promote(c, "db", "alice"); !errors.Is(err, ErrNothingToPromote) || !strings.Contains(err.Error(), "was promoted by bake") {
		t.Fatalf("promote again: %v", err)
	}
}

// TestCanaryAbsentRestartsBake and dcroll promote.
func TestCanaryAbsentRestartsBakeAndPromote(t *testing.T) {
	c, v2, a, now, paths := canaryWorld(t, "{machines: 1, bake: 10m}")
	setMachine(t, c, paths["m1"], "m1", "2", v2.ID(), znodes.StateRunning, true)
	if e, _ := tickNight(t, c, a, now, time.Second); e.BakeSince.IsZero() {
		t.Fatal("bake did not start")
	}
	if err := c.ZK().Delete(paths["m1"], -1); err != nil { // m1's agent is gone
		t.Fatal(err)
	}
	if e, _ := tickNight(t, c, a, now, 9*time.Minute); !e.BakeSince.IsZero() || e.Promoted {
		t.Fatalf("absent canary: bake since %v promoted %v", e.BakeSince, e.Promoted)
	}
	if _, err := Promote(c, "dbx", "alice"); err == nil || !strings.Contains(err.Error(), `did you mean "db"?`) {
		t.Fatalf("promote dbx: %v", err)
	}
	e, err := Promote(c, "db", "alice")
	if err != nil || e.Service != "db" {
		t.Fatalf("promote: %v", err)
	}
	q, _ := ReadQueue(c)
	if !q[0].Promoted || q[0].PromotedBy != "alice" {
		t.Fatalf("entry after promote: %+v", q[0].DeployEntry)
	}
}

// TestCanaryUnhealthyHalts: a canary that passed its step and then fails
// its health check halts the entry, naming it.
func TestCanaryUnhealthyHalts(t *testing.T) {
	c, v2, a, now, paths := canaryWorld(t, "{machines: 1}")
	setMachine(t, c, paths["m1"], "m1", "2", v2.ID(), znodes.StateRunning, true)
	e, s := tickNight(t, c, a, now, time.Second)
	if s.Blocked != znodes.BlockedCanary || !strings.Contains(s.BlockedBy, "waiting for dcroll promote db") || e.Promoted {
		t.Fatalf("no bake: %q", s.BlockedBy)
	}
	e, _ = tickNight(t, c, a, now, time.Hour) // a manual canary waits as long as it takes
	if e.State == znodes.DeployHalted || e.Promoted {
		t.Fatalf("manual canary: %+v", e.DeployEntry)
	}
	setMachine(t, c, paths["m1"], "m1", "2", v2.ID(), znodes.StateRunning, false)
	e, s = tickNight(t, c, a, now, time.Second)
	if e.State != znodes.DeployHalted || e.Machine != "m1" || !strings.HasPrefix(e.Reason, "canary m1 unhealthy on 2 after its step") {
		t.Fatalf("unhealthy canary: %s %q on %s", e.State, e.Reason, e.Machine)
	}
	if s.Blocked != znodes.BlockedHalted {
		t.Fatalf("record: %q", s.BlockedBy)
	}
	if _, err := Promote(c, "db", "alice"); err != nil {
		t.Fatalf("promote a halted entry (it is retried with resume): %v", err)
	}
}
