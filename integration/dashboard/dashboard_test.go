// Package dashboard_test drives the web dashboard in headless Chromium: on
// a live rollout of real agent processes (the faults harness: a 3-node
// ZooKeeper ensemble, five machines in two racks, a coordinator daemon
// serving the dashboard), and on a synthetic fleet of 1,000 machines.
// Screenshots are saved as test artifacts (see artifactsDir).
package dashboard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"dcroll/coordinator"
	"dcroll/integration/faults"
	"dcroll/spec"
)

// TestDashboardLiveRollout follows one night in the browser without ever
// reloading the page: the bootstrapped fleet by rack, a push of v2 that
// the tiles follow live, a broken v3 that halts with a banner naming the
// next commands, and a ZooKeeper outage (quorum lost) that greys
// the page as stale until the ensemble is back, when it recovers by
// itself. It also checks `dcroll dashboard` serves the same data.
func TestDashboardLiveRollout(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a ZooKeeper ensemble, agents and Chromium")
	}
	b := newBrowser(t) // first: skip (or fail under CI) before starting anything
	c := faults.NewCluster(t)
	s := c.NewScenario(t, "dashboard", faults.Options{})
	t.Cleanup(b.close) // before the scenario's teardown kills the coordinator
	v1 := s.Bootstrap()
	url := s.DashboardURL(t)
	t.Logf("coordinator dashboard at %s", url)

	b.navigate(url)
	marker := eval[float64](b, `window.__loaded = Date.now()`)
	// Machines by rack: m1..m3 in r1, m4 and m5 in r2, all on 1.0.0.
	b.waitJS(30*time.Second, "five tiles on 1.0.0 in racks r1 and r2", `
		document.querySelectorAll('#fleet .rack[data-rack="r1"] .tile[data-version="1.0.0"]').length === 3 &&
		document.querySelectorAll('#fleet .rack[data-rack="r2"] .tile[data-version="1.0.0"]').length === 2`)
	for m, rack := range faults.Racks {
		sel := jsString(fmt.Sprintf(`#fleet .rack[data-rack=%q] .tile[data-machine=%q]`, rack, m))
		if tip := eval[string](b, fmt.Sprintf("(document.querySelector(%s) || {}).title || ''", sel)); !strings.Contains(tip, m) || !strings.Contains(tip, "1.0.0") {
			t.Errorf("tile of %s in %s: title %q", m, rack, tip)
		}
	}
	// The queue, numbered from 1, both entries done; the ETA line says
	// what the night record says (or that there is none yet).
	b.waitJS(10*time.Second, "the queue: store then web, done", `
		[...document.querySelectorAll('#queue tbody tr')].map(r => r.dataset.service + ':' + r.dataset.state).join(' ') === 'store:done web:done' &&
		document.querySelector('#queue tbody tr td').textContent === '1'`)
	checkETA(t, b)
	if !strings.Contains(b.text("#history"), spec.ShortID(v1)) {
		t.Errorf("history lacks the bootstrap push %s", spec.ShortID(v1))
	}
	b.screenshot("1-bootstrapped")

	checkDashboardCommand(t, c, s, v1)

	// A live update: push v2 and watch the tiles change, no reload.
	snaps := eval[int](b, `window.__dcroll.snapshots`)
	v2 := s.MustPush(s.Spec("v2", map[string]faults.Svc{"store": {Build: "v2"}, "web": {Build: "v2"}}), coordinator.PushOptions{})
	b.waitJS(30*time.Second, "a store tile on 2.0.0", `document.querySelector('#fleet .tile[data-version="2.0.0"]') !== null`)
	checkETA(t, b)
	b.screenshot("2-rolling-v2")
	for _, svc := range faults.Services {
		eval[bool](b, fmt.Sprintf(`(document.querySelector('#svc-tabs button[data-service=%q]').click(), true)`, svc))
		b.waitJS(faults.Converge, svc+": every tile on 2.0.0, available", `
			document.querySelectorAll('#fleet .tile').length === 5 &&
			document.querySelectorAll('#fleet .tile[data-version="2.0.0"][data-state="available"]').length === 5`)
	}
	s.WaitCompleted(faults.Converge)
	b.waitJS(10*time.Second, "the v2 queue done", `
		[...document.querySelectorAll('#queue tbody tr')].every(r => r.dataset.state === 'done') &&
		document.getElementById('head').textContent.includes(`+jsString(spec.ShortID(v2))+`)`)
	if got := eval[float64](b, `window.__loaded`); got != marker {
		t.Fatalf("the page reloaded (marker %v, now %v)", marker, got)
	}
	if n := eval[int](b, `window.__dcroll.snapshots`); n <= snaps {
		t.Errorf("%d snapshots after the push, %d before: the update did not come from the stream", n, snaps)
	}

	// A halt: web 3.0.0-broken fails its health check on the first machine.
	v3 := s.MustPush(s.Spec("v3", map[string]faults.Svc{"store": {Build: "v2"}, "web": {Build: "v3", MaxParallel: 1}}), coordinator.PushOptions{})
	halted := s.WaitHalted(60*time.Second, "")
	t.Logf("halted: %s on %s: %.200s", halted.Service, halted.Machine, halted.Reason)
	resume := "dcroll --root " + s.Root + " resume"
	rollback := "dcroll --root " + s.Root + " rollback " + spec.ShortID(v2)
	b.waitJS(30*time.Second, "the halt banner with the next commands", `
		!document.getElementById('halt-banner').hidden &&
		[...document.querySelectorAll('#halt-banner code')].map(c => c.textContent).join('|') === `+jsString(resume+"|"+rollback))
	if title := eval[string](b, `document.title`); !strings.HasPrefix(title, "HALTED") {
		t.Errorf("page title %q during a halt, want it to start with HALTED", title)
	}
	banner := b.text("#halt-banner")
	if !strings.Contains(banner, "web") || !strings.Contains(banner, faults.Version("v3")) || !strings.Contains(banner, halted.Machine) {
		t.Errorf("halt banner %q: want the service, version and machine", banner)
	}
	// The reason is said once, in the banner: not on every machine.
	reason := eval[string](b, `document.querySelector('#halt-banner .reason').textContent`)
	if reason == "" || len([]rune(reason)) > 400 {
		t.Errorf("halt reason in the banner: %d characters %q", len(reason), reason)
	}
	if n := strings.Count(b.pageText(), reason); reason != "" && n != 1 {
		t.Errorf("the halt reason appears %d times on the page, want once", n)
	}
	// History marks the rollback target (v2) and the halted HEAD (v3).
	b.waitJS(10*time.Second, "history with the rollback target and the halted HEAD", fmt.Sprintf(`
		(document.querySelector('#history tr[data-to=%q]') || {}).textContent?.includes('rollback') &&
		(document.querySelector('#history tr[data-to=%q]') || {}).textContent?.includes('halted')`, v2, v3))
	b.screenshot("3-halted")

	// ZooKeeper down: the leader and one more server killed, so the
	// ensemble has no quorum (as faults.LoseQuorum does, but the test
	// watches the page during the outage). The page keeps its data, greyed
	// with "stale since", and the stream stays up.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	lead, err := c.Ens.WaitLeader(ctx)
	cancel()
	if err != nil {
		t.Fatalf("zookeeper leader: %v", err)
	}
	for _, i := range []int{lead, (lead + 1) % len(c.Ens.Servers)} {
		if err := c.Ens.Servers[i].Kill(); err != nil {
			t.Logf("kill zookeeper %d: %v", i+1, err)
		}
	}
	t.Log("zookeeper quorum lost: two of three servers killed")
	b.waitJS(30*time.Second, "the stale banner", `
		document.body.classList.contains('stale') && !document.getElementById('stale-banner').hidden &&
		document.getElementById('stale-banner').textContent.includes('Stale since')`)
	if !strings.Contains(b.text("#stale-banner"), "zookeeper") {
		t.Errorf("stale banner %q does not say ZooKeeper is the trouble", b.text("#stale-banner"))
	}
	if n := eval[int](b, `document.querySelectorAll('#fleet .tile').length`); n != 5 {
		t.Errorf("%d tiles while stale, want the last data (5)", n)
	}
	b.screenshot("4-zookeeper-down")
	staleSnaps := eval[int](b, `window.__dcroll.snapshots`)

	c.Heal(t)
	t.Log("zookeeper ensemble back")
	b.waitJS(90*time.Second, "fresh data after the outage", fmt.Sprintf(`
		!document.body.classList.contains('stale') && document.getElementById('stale-banner').hidden &&
		window.__dcroll.snapshots > %d && !document.getElementById('halt-banner').hidden`, staleSnaps))
	if got := eval[float64](b, `window.__loaded`); got != marker {
		t.Fatalf("the page reloaded during the outage (marker %v, now %v)", marker, got)
	}
	b.waitJS(30*time.Second, "five tiles after the outage", `document.querySelectorAll('#fleet .tile').length === 5`)
	b.screenshot("5-recovered")
}

// checkETA: with a night record that has an ETA, the header shows it; with
// none, it says so ("no ETA yet"), never nothing.
func checkETA(t *testing.T, b *browser) {
	t.Helper()
	night := b.text("#night-eta")
	hasETA := eval[bool](b, `!!(window.__dcroll.view && window.__dcroll.view.rollout && window.__dcroll.view.rollout.eta && !window.__dcroll.view.rollout.eta.startsWith('0001'))`)
	hasRecord := eval[bool](b, `!!(window.__dcroll.view && window.__dcroll.view.rollout)`)
	t.Logf("night ETA line: %q (record: %v, ETA: %v)", night, hasRecord, hasETA)
	switch {
	case hasETA && !strings.Contains(night, "ETA "):
		t.Errorf("the night record has an ETA but the page says %q", night)
	case !hasRecord && !strings.Contains(night, "no ETA yet"):
		t.Errorf("no night record, but the page says %q, want \"no ETA yet\"", night)
	case strings.TrimSpace(night) == "":
		t.Error("the night ETA line is empty")
	}
}

// checkDashboardCommand runs `dcroll dashboard` on the scenario's root and
// checks it serves the page and the same HEAD on /api/night.
func checkDashboardCommand(t *testing.T, c *faults.Cluster, s *faults.Scenario, head string) {
	t.Helper()
	log := filepath.Join(t.TempDir(), "dashboard.log")
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(c.Binary(), "--log-format", "json", "--zk", c.ConnectString(), "--root", s.Root,
		"dashboard", "--listen", "127.0.0.1:0", "--session-timeout", faults.SessionTimeout.String())
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Errorf("stop dcroll dashboard: %v", err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("dcroll dashboard exited: %v", err)
			}
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("dcroll dashboard did not stop on SIGTERM")
		}
	}()
	url := faults.WaitLogAddr(t, log, "dashboard listening", 30*time.Second)
	resp, err := http.Get(url + "api/night")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v coordinator.DashboardView
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("dcroll dashboard /api/night: %s %v", resp.Status, err)
	}
	if v.Status == nil || v.Status.Head == nil || v.Status.Head.SpecID != head || v.Root != s.Root {
		t.Errorf("dcroll dashboard /api/night: root %q head %+v, want %s at %s", v.Root, v.Status.Head, head, s.Root)
	}
	page, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	page.Body.Close()
	if page.StatusCode != http.StatusOK || !strings.HasPrefix(page.Header.Get("Content-Type"), "text/html") {
		t.Errorf("dcroll dashboard /: %s %s", page.Status, page.Header.Get("Content-Type"))
	}
	t.Logf("dcroll dashboard served %s", url)
}
