package znodes

import (
	"context"
	"errors"
	"fmt"
	"path"
	"reflect"
	"regexp"
	"runtime"
	"strconv"
	"testing"
	"time"

	"dcroll/integration/zkserver"
	"dcroll/integration/zktest"

	"github.com/go-zookeeper/zk"
)

// newFleetCache starts a cache on c, stopped (and waited for) at cleanup.
func newFleetCache(t *testing.T, c *Conn) *FleetCache {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	fc := NewFleetCache(ctx, c)
	t.Cleanup(func() {
		cancel()
		select {
		case <-fc.Done():
		case <-time.After(waitLong):
			t.Error("fleet cache did not stop")
		}
	})
	return fc
}

// fleetFixture writes the fleet of a service through c.
type fleetFixture struct {
	t   *testing.T
	c   *Conn
	svc string
}

func (x fleetFixture) put(p string, v any) {
	x.t.Helper()
	if err := x.c.EnsurePath(path.Dir(p)); err != nil {
		x.t.Fatal(err)
	}
	b := MustEncode(v)
	if _, err := x.c.zk.Set(p, b, -1); errors.Is(err, zk.ErrNoNode) {
		_, err = x.c.Create(p, b, 0)
		if err != nil {
			x.t.Fatal(err)
		}
	} else if err != nil {
		x.t.Fatal(err)
	}
}

func (x fleetFixture) del(p string) {
	x.t.Helper()
	if err := x.c.zk.Delete(p, -1); err != nil {
		x.t.Fatalf("delete %s: %v", p, err)
	}
}

func (x fleetFixture) member(m string) {
	x.put(x.c.Paths().Member(x.svc, m), &Member{Machine: m, Service: x.svc, Rack: "r" + m[len(m)-1:], Joined: time.Unix(1, 0).UTC()})
}

func (x fleetFixture) current(m, version string) {
	x.put(x.c.Paths().CurrentMachine(x.svc, m), &Current{Machine: m, Service: x.svc, Version: version, State: StateRunning, Healthy: true})
}

func (x fleetFixture) down(m string) {
	x.put(x.c.Paths().DownMachine(x.svc, m), &Down{Machine: m, Rack: "r1", Kind: "upgrade", From: "1", To: "2", At: time.Unix(2, 0).UTC()})
}

// machines adds n members, each registered at version 1.
func (x fleetFixture) machines(n int) {
	for i := range n {
		m := fmt.Sprintf("m%03d", i)
		x.member(m)
		x.current(m, "1")
	}
}

// waitFleet waits (on the cache's nudges, with a deadline) until the
// cache's fleet of svc equals a plain ReadFleet.
func waitFleet(t *testing.T, fc *FleetCache, c *Conn, svc, what string) Fleet {
	t.Helper()
	deadline := time.NewTimer(waitLong)
	defer deadline.Stop()
	for {
		want, err := c.ReadFleet(svc)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := fc.Fleet(svc)
		if ok && reflect.DeepEqual(got, want) {
			return got
		}
		select {
		case <-fc.Changed():
		case <-deadline.C:
			t.Fatalf("%s: cache (ready %v) = %d members, %d current, %d down; want %d, %d, %d",
				what, ok, len(got.Members), len(got.Current), len(got.Down), len(want.Members), len(want.Current), len(want.Down))
		}
	}
}

// waitCache waits (on the cache's nudges, with a deadline) until svc's
// cached fleet satisfies cond.
func waitCache(t *testing.T, fc *FleetCache, svc, what string, cond func(Fleet) bool) {
	t.Helper()
	deadline := time.NewTimer(waitLong)
	defer deadline.Stop()
	for {
		if f, ok := fc.Fleet(svc); ok && cond(f) {
			return
		}
		select {
		case <-fc.Changed():
		case <-deadline.C:
			t.Fatalf("%s: not seen by the cache within %s", what, waitLong)
		}
	}
}

// serverWatches is the server's total of watches, data and children
// (mntr zk_watch_count; wchs counts data watches only).
func serverWatches(t *testing.T, addr string) int {
	t.Helper()
	out, err := zkserver.FourLetter(context.Background(), addr, "mntr")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`zk_watch_count\s+(\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("mntr: %q", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// expectedWatches is one watch per directory and per child of svc's
// fleet, and one per parent of a missing directory.
func expectedWatches(t *testing.T, c *Conn, svc string) int {
	t.Helper()
	p := c.Paths()
	n := 0
	for _, dir := range []string{p.Members(svc), p.Current(svc), p.Down(svc)} {
		kids, _, err := c.zk.Children(dir)
		switch {
		case errors.Is(err, zk.ErrNoNode):
			n++ // its parent's list
		case err != nil:
			t.Fatal(err)
		default:
			n += 1 + len(kids)
		}
	}
	return n
}

// waitGoroutines waits until at most max goroutines run.
func waitGoroutines(t *testing.T, max int, what string) {
	t.Helper()
	zktest.WaitFor(t, waitLong, fmt.Sprintf("%s: at most %d goroutines", what, max), func() (bool, error) {
		return runtime.NumGoroutine() <= max, nil
	})
}

// TestFleetCacheReflectsChanges: a cache of a service with 50 members
// equals a plain ReadFleet after creates, data changes and deletes of
// members, registrations and step records (the step records' directory
// does not exist at first).
func TestFleetCacheReflectsChanges(t *testing.T) {
	c := dial(t, startZK(t))
	x := fleetFixture{t, c, "store"}
	x.machines(50)
	fc := newFleetCache(t, c)
	if _, ok := fc.Fleet("store"); ok {
		t.Fatal("fleet ready before Track")
	}
	fc.Track("store")
	f := waitFleet(t, fc, c, "store", "initial read")
	if len(f.Members) != 50 || len(f.Current) != 50 || len(f.Down) != 0 {
		t.Fatalf("initial fleet: %d members, %d current, %d down", len(f.Members), len(f.Current), len(f.Down))
	}
	p := c.Paths()
	x.current("m007", "2")
	waitFleet(t, fc, c, "store", "registration changed")
	x.down("m007") // creates /down/store: seen through the parent's list
	waitFleet(t, fc, c, "store", "first step record")
	x.down("m008")
	waitFleet(t, fc, c, "store", "second step record")
	x.del(p.DownMachine("store", "m007"))
	waitFleet(t, fc, c, "store", "step record deleted")
	x.member("m050")
	x.current("m050", "1")
	waitFleet(t, fc, c, "store", "member added")
	x.del(p.CurrentMachine("store", "m010"))
	waitFleet(t, fc, c, "store", "registration gone")
	x.del(p.Member("store", "m010"))
	waitFleet(t, fc, c, "store", "member removed")
	x.put(p.Member("store", "m011"), &Member{Machine: "m011", Service: "store", Rack: "r9", Version: "2"})
	f = waitFleet(t, fc, c, "store", "member record changed")
	if len(f.Members) != 50 || len(f.Current) != 50 || len(f.Down) != 1 || f.Current[7].Version != "2" {
		t.Fatalf("final fleet: %d members, %d current, %d down", len(f.Members), len(f.Current), len(f.Down))
	}
	// Fleet returns a copy.
	f.Current[0].Version = "mutated"
	if g, _ := fc.Fleet("store"); g.Current[0].Version == "mutated" {
		t.Fatal("Fleet returned the cache's own slice")
	}
}

// TestFleetCacheReadsPerChange: after the initial read, one change of one
// machine costs the same few ZooKeeper requests with 10 and with 100
// members: a registration changed is one read, a machine registering is
// two (the list, the new child), a registration deleted at most one (the
// list; none for the child, whose watch says it is gone).
func TestFleetCacheReadsPerChange(t *testing.T) {
	addr := startZK(t)
	c := dial(t, addr)
	fc := newFleetCache(t, c)
	const k = 10 // changes of each kind
	perChange := map[int][3]float64{}
	for _, n := range []int{10, 100} {
		svc := fmt.Sprintf("svc%d", n)
		x := fleetFixture{t, c, svc}
		x.machines(n)
		if err := c.EnsurePath(c.Paths().Down(svc)); err != nil {
			t.Fatal(err)
		}
		before := fc.Reads()
		fc.Track(svc)
		waitFleet(t, fc, c, svc, "initial read")
		initial := fc.Reads() - before
		if want := uint64(3 + 2*n); initial != want {
			t.Errorf("%d members: initial read %d requests, want %d", n, initial, want)
		}
		packets := func() int {
			out, err := zkserver.FourLetter(context.Background(), addr, "mntr")
			if err != nil {
				t.Fatal(err)
			}
			m := regexp.MustCompile(`zk_packets_received\s+(\d+)`).FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("mntr: %q", out)
			}
			v, _ := strconv.Atoi(m[1])
			return v
		}
		has := func(f Fleet, m, version string) bool {
			for _, c := range f.Current {
				if c.Machine == m {
					return version == "" || c.Version == version
				}
			}
			return false
		}
		var got [3]float64
		for kind, change := range []struct {
			do   func(i int)
			seen func(f Fleet, i int) bool
		}{
			{func(i int) { x.current(fmt.Sprintf("m%03d", i), "2") }, func(f Fleet, i int) bool { return has(f, fmt.Sprintf("m%03d", i), "2") }},
			{func(i int) { x.current(fmt.Sprintf("n%03d", i), "1") }, func(f Fleet, i int) bool { return has(f, fmt.Sprintf("n%03d", i), "1") }},
			{func(i int) { x.del(c.Paths().CurrentMachine(svc, fmt.Sprintf("n%03d", i))) }, func(f Fleet, i int) bool { return !has(f, fmt.Sprintf("n%03d", i), "") }},
		} {
			r0, p0 := fc.Reads(), packets()
			for i := range k {
				change.do(i)
				waitCache(t, fc, svc, fmt.Sprintf("change %d of kind %d", i, kind), func(f Fleet) bool { return change.seen(f, i) })
			}
			// A last registration change (one read) flushes the read of
			// a deletion's list, whose watch fires after the child's.
			x.current("m000", fmt.Sprintf("flush%d", kind))
			waitCache(t, fc, svc, "flush", func(f Fleet) bool { return has(f, "m000", fmt.Sprintf("flush%d", kind)) })
			got[kind] = float64(fc.Reads()-r0-1) / k
			t.Logf("%d members, change kind %d (set, create, delete): %.1f cache requests per change; server packets per change (the writer's requests and pings included) %.1f",
				n, kind, got[kind], float64(packets()-p0)/(k+1))
		}
		waitFleet(t, fc, c, svc, "after the changes")
		perChange[n] = got
		// A deletion costs at most the list (two deletions close together
		// share one); a change and a registration cost exactly 1 and 2.
		if got[0] != 1 || got[1] != 2 || got[2] <= 0 || got[2] > 1 {
			t.Errorf("%d members: requests per change (set, create, delete) = %v, want [1 2 <=1]", n, got)
		}
	}
	for kind := range 3 {
		if perChange[100][kind] > max(perChange[10][kind], 1) {
			t.Errorf("requests per change grow with the fleet: 10 members %v, 100 members %v", perChange[10], perChange[100])
		}
	}
}

// TestFleetCacheOneWatchPerPath: the server holds exactly one watch per
// directory and child of the fleet (and one on the parent of the missing
// step-records directory) across many changes, and the number of
// goroutines stays flat; Untrack ends the service's goroutines.
func TestFleetCacheOneWatchPerPath(t *testing.T) {
	srv := zktest.Start(t) // its own server: wchs counts only this test's watches
	c := dial(t, srv.Addr())
	x := fleetFixture{t, c, "web"}
	x.machines(50)
	base := serverWatches(t, srv.Addr())
	g0 := runtime.NumGoroutine()
	fc := newFleetCache(t, c)
	fc.Track("web")
	waitFleet(t, fc, c, "web", "initial read")
	check := func(when string) {
		t.Helper()
		want := expectedWatches(t, c, "web")
		zktest.WaitFor(t, waitLong, when+": one watch per path", func() (bool, error) {
			got, cached := serverWatches(t, srv.Addr())-base, fc.Watches()
			if got != want || cached != want {
				return false, fmt.Errorf("server holds %d watches of the cache, the cache %d, want %d", got, cached, want)
			}
			return true, nil
		})
	}
	check("after the initial read")
	if want := 1 + 50 + 1 + 50 + 1; expectedWatches(t, c, "web") != want {
		t.Fatalf("fixture: want %d watches", want)
	}
	g1 := runtime.NumGoroutine()
	p := c.Paths()
	for i := range 200 {
		m := fmt.Sprintf("m%03d", i%50)
		switch i % 5 {
		case 0, 1:
			x.current(m, strconv.Itoa(i))
		case 2:
			x.down(m)
		case 3:
			x.del(p.DownMachine("web", fmt.Sprintf("m%03d", (i-1)%50)))
		case 4:
			x.put(p.Member("web", m), &Member{Machine: m, Service: "web", Rack: "r1", Version: strconv.Itoa(i)})
		}
		waitFleet(t, fc, c, "web", fmt.Sprintf("change %d", i))
	}
	check("after 200 changes")
	waitGoroutines(t, g1+3, "after 200 changes")
	t.Logf("goroutines: %d before the cache, %d after its initial read, %d after 200 changes; %d watches",
		g0, g1, runtime.NumGoroutine(), fc.Watches())

	fc.Untrack("web")
	if _, ok := fc.Fleet("web"); ok {
		t.Fatal("fleet still there after Untrack")
	}
	waitGoroutines(t, g0+3, "after Untrack")
	zktest.WaitFor(t, waitLong, "no watch held after Untrack", func() (bool, error) { return fc.Watches() == 0, nil })
}

// TestFleetCacheMissingDirectories: a service nobody registered yet is a
// ready, empty fleet watched through the three parents' lists only; its
// directories appearing later are seen.
func TestFleetCacheMissingDirectories(t *testing.T) {
	c := dial(t, startZK(t))
	fc := newFleetCache(t, c)
	fc.Track("new")
	fc.Track("other")
	f := waitFleet(t, fc, c, "new", "empty fleet")
	if len(f.Members)+len(f.Current)+len(f.Down) != 0 {
		t.Fatalf("fleet of a service without directories: %+v", f)
	}
	waitFleet(t, fc, c, "other", "empty fleet")
	zktest.WaitFor(t, waitLong, "one watch per parent", func() (bool, error) {
		if n := fc.Watches(); n != 3 {
			return false, fmt.Errorf("%d watches", n)
		}
		return true, nil
	})
	x := fleetFixture{t, c, "new"}
	x.member("m1")
	waitFleet(t, fc, c, "new", "first member")
	x.current("m1", "1")
	waitFleet(t, fc, c, "new", "first registration")
	x.down("m1")
	waitFleet(t, fc, c, "new", "first step record")
	if got := fc.Watches(); got != 3*2+3 { // new: 3 dirs + 3 children; other: 3 parents
		t.Errorf("%d watches, want 9", got)
	}
	// The directory deleted: watched through the parent again.
	x.del(c.Paths().DownMachine("new", "m1"))
	x.del(c.Paths().Down("new"))
	waitFleet(t, fc, c, "new", "step records gone")
	x.down("m2")
	waitFleet(t, fc, c, "new", "step records back")
}

// TestFleetCacheSurvivesSessionExpiry: after the session expires the cache
// starts over in the new session: it re-reads every fleet (seeing what
// changed meanwhile) and holds one watch per path again.
func TestFleetCacheSurvivesSessionExpiry(t *testing.T) {
	srv := zktest.Start(t)
	proxy := zktest.NewProxy(t, srv.Addr())
	c := dial(t, proxy.Addr())
	other := dial(t, srv.Addr())
	x := fleetFixture{t, other, "db"}
	x.machines(20)
	base := serverWatches(t, srv.Addr())
	fc := newFleetCache(t, c)
	fc.Track("db")
	waitFleet(t, fc, c, "db", "initial read")
	_, gen0, _ := c.State()
	reads0 := fc.Reads()

	zktest.ExpireSession(t, proxy, c.ZK(), waitLong)
	x.current("m003", "9") // while the cache's session is gone
	x.del(other.Paths().CurrentMachine("db", "m004"))

	waitFor(t, "a new session", func() (bool, error) {
		st, gen, _ := c.State()
		return st == Connected && gen != gen0, nil
	})
	f := waitFleet(t, fc, c, "db", "re-read after expiry")
	if f.Current[3].Version != "9" || len(f.Current) != 19 {
		t.Fatalf("after expiry: %d registrations, m003 at %s", len(f.Current), f.Current[3].Version)
	}
	if n := fc.Reads() - reads0; n < 3+20+19 {
		t.Errorf("%d requests after the expiry, want a full re-read (>= %d)", n, 3+20+19)
	}
	want := expectedWatches(t, c, "db")
	zktest.WaitFor(t, waitLong, "one watch per path in the new session", func() (bool, error) {
		got, cached := serverWatches(t, srv.Addr())-base, fc.Watches()
		if got != want || cached != want {
			return false, fmt.Errorf("server %d, cache %d, want %d", got, cached, want)
		}
		return true, nil
	})
	x.current("m005", "3")
	waitFleet(t, fc, c, "db", "watched again")
}
