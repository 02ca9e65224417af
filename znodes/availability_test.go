package znodes

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"dcroll/integration/zktest"

	"github.com/go-zookeeper/zk"
)

// register runs machine's registration of service with its /dc/up marker
// until the test ends, and returns it.
func register(t *testing.T, c *Conn, service, machine string, cur Current) *Registration {
	t.Helper()
	cur.Machine, cur.Service, cur.Rack = machine, service, "r1"
	b := MustEncode(&cur)
	p := c.Paths()
	reg := NewRegistration(c, p.CurrentMachine(service, machine), func() ([]byte, error) { return b, nil }).
		WithMarker(p.UpMachine(service, machine), CurrentAvailable)
	stop := runBG(t, reg.Run)
	t.Cleanup(func() { _ = stop() })
	select {
	case <-reg.Ready():
	case <-time.After(waitLong):
		t.Fatalf("%s not registered", machine)
	}
	return reg
}

func member(t *testing.T, c *Conn, service, machine string) {
	t.Helper()
	if err := c.EnsurePath(c.Paths().Members(service)); err != nil {
		t.Fatal(err)
	}
	m := MustEncode(&Member{Machine: machine, Service: service, Rack: "r1"})
	if _, err := c.Create(c.Paths().Member(service, machine), m, 0); err != nil {
		t.Fatal(err)
	}
}

func waitAvail(t *testing.T, r Reader, p Paths, service string, what string, ok func(Availability) bool) Availability {
	t.Helper()
	var a Availability
	zktest.WaitFor(t, waitLong, what, func() (bool, error) {
		var err error
		a, err = ReadAvailability(r, p, service)
		if err != nil {
			return false, err
		}
		if !ok(a) {
			return false, fmt.Errorf("total %d, available %d, unavailable %v", a.Total, a.Available, names(a.Unavailable))
		}
		return true, nil
	})
	return a
}

func names(ms []MemberState) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Machine+":"+m.Why())
	}
	return out
}

// TestReadAvailabilityCountsFromMarkers: available members are counted
// from the /dc/up markers that follow their registrations; unhealthy,
// mid-step and absent members are unavailable and read in full; the count
// agrees with the whole-fleet count.
func TestReadAvailabilityCountsFromMarkers(t *testing.T) {
	addr := startZK(t)
	c := dial(t, addr)
	p := c.Paths()
	const svc = "web"
	running := Current{State: StateRunning, Healthy: true, Version: "1"}
	for _, m := range []string{"m1", "m2", "m3", "m4", "m5"} {
		member(t, c, svc, m)
	}
	register(t, c, svc, "m1", running)
	register(t, c, svc, "m2", running)
	sick := register(t, c, svc, "m3", running)
	register(t, c, svc, "m4", running) // and a step record below
	// m5: a member that is absent.
	if err := c.EnsurePath(p.Down(svc)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(p.DownMachine(svc, "m4"), MustEncode(&Down{Machine: "m4", Rack: "r1", To: "2"}), 0); err != nil {
		t.Fatal(err)
	}
	if err := sick.Update(MustEncode(&Current{Machine: "m3", Service: svc, State: StateRunning, Healthy: false})); err != nil {
		t.Fatal(err)
	}
	a := waitAvail(t, Plain(c), p, svc, "m1, m2 available of 5", func(a Availability) bool { return a.Total == 5 && a.Available == 2 })
	if got := names(a.Unavailable); len(got) != 3 || got[0][:3] != "m3:" || got[1][:3] != "m4:" || got[2][:3] != "m5:" {
		t.Errorf("unavailable %v, want m3 unhealthy, m4 mid-step, m5 absent", got)
	}
	f, err := c.ReadFleet(svc)
	if err != nil {
		t.Fatal(err)
	}
	whole := f.Availability()
	if whole.Total != a.Total || whole.Available != a.Available || len(whole.Unavailable) != len(a.Unavailable) {
		t.Errorf("counted from markers %d/%d, from the whole fleet %d/%d", a.Available, a.Total, whole.Available, whole.Total)
	}
	for i := range a.Unavailable {
		if a.Unavailable[i].Why() != whole.Unavailable[i].Why() {
			t.Errorf("%s: %q from markers, %q from the fleet", a.Unavailable[i].Machine, a.Unavailable[i].Why(), whole.Unavailable[i].Why())
		}
	}

	// Healthy again: the marker comes back with the payload.
	if err := sick.Update(MustEncode(&running)); err != nil {
		t.Fatal(err)
	}
	waitAvail(t, Plain(c), p, svc, "m3 available again", func(a Availability) bool { return a.Available == 3 })
}

// TestReadAvailabilityCostsNoReadsOfAvailableMembers: through a WatchSet,
// counting 40 members costs a few requests, and a recount after one
// member's change costs a few more, not one per member.
func TestReadAvailabilityCostsNoReadsOfAvailableMembers(t *testing.T) {
	addr := startZK(t)
	c := dial(t, addr)
	reader := dial(t, addr, withSession(20*time.Second))
	p := c.Paths()
	const svc, n = "db", 40
	running := Current{State: StateRunning, Healthy: true, Version: "1"}
	regs := map[string]*Registration{}
	for i := range n {
		m := fmt.Sprintf("m%02d", i)
		member(t, c, svc, m)
		regs[m] = register(t, c, svc, m, running)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ws := NewWatchSet(ctx, reader.ZK(), make(chan struct{}, 1))
	waitAvail(t, ws, p, svc, "all available", func(a Availability) bool { return a.Available == n })
	before := requestsOf(t, addr, reader.SessionID())
	if _, err := ReadAvailability(ws, p, svc); err != nil {
		t.Fatal(err)
	}
	if got := requestsOf(t, addr, reader.SessionID()) - before; got > 1 {
		t.Errorf("recount with nothing changed: %d requests", got)
	}
	before = requestsOf(t, addr, reader.SessionID())
	if err := regs["m07"].Update(MustEncode(&Current{Machine: "m07", Service: svc, State: StateUpgrading})); err != nil {
		t.Fatal(err)
	}
	waitAvail(t, ws, p, svc, "m07 unavailable", func(a Availability) bool { return a.Available == n-1 })
	if got := requestsOf(t, addr, reader.SessionID()) - before; got > 12 {
		t.Errorf("recount after one member's change: %d requests for %d members, want a handful", got, n)
	}
}

// TestPresenceFollowsSessions: a marker is created again in a new session
// and deleted when its owner says so.
func TestPresenceFollowsSessions(t *testing.T) {
	addr := startZK(t)
	proxy := zktest.NewProxy(t, addr)
	c := dial(t, proxy.Addr())
	obs := dial(t, addr)
	p := c.Paths().UpMachine("svc", "m1")
	pr := NewPresence(c, p)
	exists := func() bool {
		ok, _, err := obs.ZK().Exists(p)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if err := pr.Set(true); err != nil || !exists() {
		t.Fatalf("set: %v, exists %v", err, exists())
	}
	old := c.SessionID()
	zktest.ExpireSession(t, proxy, c.ZK(), waitLong)
	zktest.WaitFor(t, waitLong, "a new session and the marker in it", func() (bool, error) {
		if err := pr.Sync(); err != nil {
			return false, err
		}
		ok, st, err := obs.ZK().Exists(p)
		return err == nil && ok && st.EphemeralOwner != old, err
	})
	if err := pr.Set(false); err != nil || exists() {
		t.Fatalf("unset: %v, exists %v", err, exists())
	}
	if err := pr.Set(false); err != nil {
		t.Fatalf("unset twice: %v", err)
	}
}

// TestRegistrationUpdateWith: extra ops land in the payload's transaction;
// one that cannot land does not keep the payload from being written.
func TestRegistrationUpdateWith(t *testing.T) {
	addr := startZK(t)
	c := dial(t, addr)
	p := c.Paths()
	reg := register(t, c, "svc", "m1", Current{State: StateUpgrading})
	if err := c.EnsurePath(p.Down("svc")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(p.DownMachine("svc", "m1"), MustEncode(&Down{Machine: "m1"}), 0); err != nil {
		t.Fatal(err)
	}
	running := MustEncode(&Current{Machine: "m1", Service: "svc", State: StateRunning, Healthy: true})
	if err := reg.UpdateWith(running, DeleteOp(p.DownMachine("svc", "m1"), -1)); err != nil {
		t.Fatal(err)
	}
	if ok, _, _ := c.ZK().Exists(p.DownMachine("svc", "m1")); ok {
		t.Error("step record still there")
	}
	a, err := ReadAvailability(Plain(c), p, "svc")
	if err != nil || a.Available != 1 {
		t.Fatalf("available %d (%v), want 1: payload, marker and deletion in one change", a.Available, err)
	}
	stopped := MustEncode(&Current{Machine: "m1", Service: "svc", State: StateStopped})
	if err := reg.UpdateWith(stopped, DeleteOp(p.DownMachine("svc", "m1"), -1)); !errors.Is(err, zk.ErrNoNode) {
		t.Fatalf("deleting a missing record: %v, want ErrNoNode", err)
	}
	b, _, err := c.ZK().Get(p.CurrentMachine("svc", "m1"))
	if err != nil || !bytes.Equal(b, stopped) {
		t.Fatalf("payload %s (%v), want the stopped one written anyway", b, err)
	}
	if ok, _, _ := c.ZK().Exists(p.UpMachine("svc", "m1")); ok {
		t.Error("marker of a stopped machine still there")
	}
}
