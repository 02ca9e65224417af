package watcher_test

import (
	"context"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"dcroll/integration/watcher"
	"dcroll/integration/zktest"
)

// TestWatcherRecordsTransitions drives /dc/current and /dc/down by hand and
// checks what the watcher recorded.
func TestWatcherRecordsTransitions(t *testing.T) {
	srv := zktest.Start(t)
	c := zktest.Connect(t, srv.Addr(), 4*time.Second)
	for _, p := range []string{"/dc", "/dc/current", "/dc/current/web", "/dc/down", "/dc/down/web"} {
		if _, err := c.Create(p, nil, 0, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatal(err)
		}
	}
	w, err := watcher.Start(context.Background(), srv.Addr(), "/dc", "web")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	cur := func(m, v, state string, healthy bool) []byte {
		h := "false"
		if healthy {
			h = "true"
		}
		return []byte(`{"v":1,"version":"` + v + `","state":"` + state + `","healthy":` + h + `}`)
	}
	acl := zk.WorldACL(zk.PermAll)
	start := time.Now()
	for _, m := range []string{"m1", "m2", "m3"} {
		if _, err := c.Create("/dc/current/web/"+m, cur(m, "1", "running", true), 0, acl); err != nil {
			t.Fatal(err)
		}
	}
	wait := func(what string, cond func(map[string]watcher.Machine) bool) {
		zktest.WaitFor(t, 10*time.Second, what, func() (bool, error) { return cond(w.Now("web")), nil })
	}
	wait("three up", func(s map[string]watcher.Machine) bool { return len(s) == 3 && s["m3"].Available() })
	allUp := time.Now()
	// m1 goes down (marker, then upgrading), comes back on 2.
	if _, err := c.Create("/dc/down/web/m1", nil, 0, acl); err != nil {
		t.Fatal(err)
	}
	wait("m1 down", func(s map[string]watcher.Machine) bool { return s["m1"].Down })
	if _, err := c.Set("/dc/current/web/m1", cur("m1", "2", "upgrading", false), -1); err != nil {
		t.Fatal(err)
	}
	wait("m1 upgrading", func(s map[string]watcher.Machine) bool { return s["m1"].State == "upgrading" })
	if _, err := c.Multi(&zk.SetDataRequest{Path: "/dc/current/web/m1", Data: cur("m1", "2", "running", true), Version: -1},
		&zk.DeleteRequest{Path: "/dc/down/web/m1", Version: -1}); err != nil {
		t.Fatal(err)
	}
	wait("m1 on 2", func(s map[string]watcher.Machine) bool { return s["m1"].Available() && s["m1"].Version == "2" })
	// m2 vanishes, then m3 is unhealthy: two unavailable at once.
	if err := c.Delete("/dc/current/web/m2", -1); err != nil {
		t.Fatal(err)
	}
	wait("m2 gone", func(s map[string]watcher.Machine) bool { return !s["m2"].Present })
	if _, err := c.Set("/dc/current/web/m3", cur("m3", "1", "running", false), -1); err != nil {
		t.Fatal(err)
	}
	wait("m3 unhealthy", func(s map[string]watcher.Machine) bool { return !s["m3"].Healthy })
	end := time.Now()

	if n, f := w.MaxUnavailable("web", start, end); n != 2 {
		t.Errorf("MaxUnavailable = %d at %v, want 2\n%s", n, f.At, w.Dump("web", start, end))
	}
	if n, _ := w.MinAvailable("web", allUp, end); n != 1 {
		t.Errorf("MinAvailable = %d, want 1 (m2 gone, m3 unhealthy)\n%s", n, w.Dump("web", start, end))
	}
	if n, _ := w.MaxDownMarkers("web", start, end); n != 1 {
		t.Errorf("MaxDownMarkers = %d, want 1", n)
	}
	if at, who := w.FirstUnavailable("web", w.AllOn("web", "1", start)); who != "m1" || at.IsZero() {
		t.Errorf("FirstUnavailable after all on 1 = %v %q, want m1", at, who)
	}
	if _, who := w.FirstDown("web", allUp); who != "m1" {
		t.Errorf("FirstDown = %q, want m1 (its marker; m2 only vanished later)", who)
	}
	if at, _ := w.FirstDown("web", time.Now()); !at.IsZero() {
		t.Errorf("FirstDown after the end = %v, want never", at)
	}
	if !w.AllOn("web", "2", start).IsZero() {
		t.Errorf("AllOn 2 should never have happened")
	}
}
