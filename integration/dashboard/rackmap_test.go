package dashboard_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"dcroll/coordinator"
	"dcroll/integration/zktest"
	"dcroll/spec"
	"dcroll/znodes"
)

const blobHex = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

// TestRackMapThousandMachines renders a fleet of 1,000 members (2 data
// centers x 10 racks x 50 machines, mid-rollout: most on the old version,
// some on the target, a few mid-step, unhealthy or absent) with a night
// record the test writes itself: one tile per machine grouped by data
// center and rack, a legend of versions, a page that stays short, the
// queue with blocked-by, canary and ETA from the record, the pause banner,
// downloads in flight only and sizes in human units.
func TestRackMapThousandMachines(t *testing.T) {
	if testing.Short() {
		t.Skip("starts ZooKeeper and Chromium")
	}
	b := newBrowser(t)
	srv := zktest.Start(t)
	c, err := znodes.Dial(context.Background(), znodes.Options{Servers: srv.Addr(), Root: "/dc-rackmap", SessionTimeout: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.EnsureSkeleton(); err != nil {
		t.Fatal(err)
	}
	p := c.Paths()
	if _, err := c.Create(p.Blob(blobHex), znodes.MustEncode(&znodes.Blob{ID: "sha256:" + blobHex, Size: 1}), 0); err != nil {
		t.Fatal(err)
	}
	sp, err := spec.Parse("rackmap.yaml", []byte(`name: night-1000
services:
  store:
    version: "2.0.0"
    artifact: sha256:`+blobHex+`
    run: ["./store"]
    quorum: 60%
    max_parallel: 5
`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := coordinator.Push(context.Background(), c, sp, coordinator.PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}

	// The fleet: member records (persistent), registrations (ephemeral)
	// and a few step records, written in batches of one transaction each.
	for _, dir := range []string{p.Members("store"), p.Current("store"), p.Down("store")} {
		if err := c.EnsurePath(dir); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	var ops []any
	flush := func() {
		if len(ops) == 0 {
			return
		}
		if _, err := c.ZK().Multi(ops...); err != nil {
			t.Fatalf("write fleet: %v", err)
		}
		ops = ops[:0]
	}
	n := 0
	for dc := 1; dc <= 2; dc++ {
		for rack := 1; rack <= 10; rack++ {
			for i := 1; i <= 50; i++ {
				n++
				m := fmt.Sprintf("m%04d", n)
				dcName, rackName := fmt.Sprintf("dc%d", dc), fmt.Sprintf("dc%d-r%02d", dc, rack)
				version := "1.0.0"
				if n%5 == 0 {
					version = "2.0.0"
				}
				ops = append(ops, c.CreateOp(p.Member("store", m), znodes.MustEncode(&znodes.Member{
					Machine: m, Service: "store", Rack: rackName, DC: dcName, Joined: now, Version: version, Seen: now}), 0))
				if n%97 == 0 {
					continue // absent: a member without registration
				}
				cur := &znodes.Current{Machine: m, Service: "store", Rack: rackName, DC: dcName, Version: version,
					SpecID: sp.ID(), State: znodes.StateRunning, Healthy: n%89 != 0, Since: now}
				if n%89 == 0 {
					cur.Detail = "health check: status 500: " + strings.Repeat("<p>stack frame</p>", 40)
				}
				ops = append(ops, c.CreateOp(p.CurrentMachine("store", m), znodes.MustEncode(cur), zk.FlagEphemeral))
				if n%5 == 1 && n < 30 {
					ops = append(ops, c.CreateOp(p.DownMachine("store", m), znodes.MustEncode(&znodes.Down{
						Machine: m, Rack: rackName, Kind: "upgrade", From: "1.0.0", To: "2.0.0", At: now}), 0))
				}
				if len(ops) >= 200 {
					flush()
				}
			}
		}
	}
	flush()

	// The night record, as the leading coordinator would write it.
	q, err := coordinator.ReadQueue(c)
	if err != nil || len(q) != 1 {
		t.Fatalf("queue %v: %v", q, err)
	}
	eta := now.Add(42 * time.Minute)
	r := znodes.Rollout{By: "coord-test", At: now, HeadID: sp.ID(), State: znodes.NightBlocked, ETA: eta, Remaining: 800,
		Services: []znodes.ServiceRollout{{
			Service: "store", Entry: q[0].Node, Position: 1, Kind: "upgrade", From: "1.0.0", To: "2.0.0", State: znodes.DeployRolling,
			Members: 1000, Available: 600, Done: 200, QuorumMin: 600, MaxParallel: 5, Batches: 160,
			Blocked: znodes.BlockedQuorum, BlockedBy: "quorum 600/1000 available, min 600",
			StepSeconds: 3.2, Measured: true, Start: now.Add(-10 * time.Minute), ETA: eta,
			Canary: &znodes.CanaryState{Machines: 2, Bake: 10 * time.Minute, Done: 2, BakeSince: now, BakeUntil: now.Add(10 * time.Minute)},
		}}}
	if _, err := c.Create(p.Rollout(), znodes.MustEncode(&r), 0); err != nil {
		t.Fatal(err)
	}

	// A paused night, two agents (one with a blob still downloading, one
	// done) and their mlocked memory.
	if err := coordinator.Pause(c, "alice@ops", "investigating p99"); err != nil {
		t.Fatal(err)
	}
	for i, m := range []string{"m0001", "m0002"} {
		a := &znodes.Agent{Machine: m, Rack: "dc1-r01", DC: "dc1", Services: []string{"store"}, Since: now, LockedBytes: int64(i+1) * 3 << 29}
		if _, err := c.Create(p.Agent(m), znodes.MustEncode(a), zk.FlagEphemeral); err != nil {
			t.Fatal(err)
		}
		blob := &znodes.BlobProgress{Blob: "sha256:" + blobHex, Bytes: 48 << 20, Total: 128 << 20, RateBps: 6.5 * (1 << 20), Peers: 3, Source: "swarm"}
		if i == 1 {
			blob.Bytes, blob.Done = blob.Total, true
		}
		if _, err := c.Create(p.Progress(m), znodes.MustEncode(&znodes.Progress{Machine: m, Blobs: []znodes.BlobProgress{*blob}, At: now}), zk.FlagEphemeral); err != nil {
			t.Fatal(err)
		}
	}

	web := httptest.NewServer(coordinator.Dashboard(c))
	// Close waits for open requests: the browser's stream ends first.
	t.Cleanup(func() { b.close(); web.Close() })
	b.navigate(web.URL + "/")
	b.waitJS(30*time.Second, "1,000 tiles", `document.querySelectorAll("#fleet .tile").length === 1000`)

	if got := eval[int](b, `document.querySelectorAll("#fleet .dc").length`); got != 2 {
		t.Errorf("%d data centers on the map, want 2", got)
	}
	if got := eval[int](b, `document.querySelectorAll("#fleet .rack").length`); got != 20 {
		t.Errorf("%d racks on the map, want 20", got)
	}
	if got := eval[int](b, `document.querySelectorAll('#fleet .rack[data-rack="dc2-r07"] .tile').length`); got != 50 {
		t.Errorf("rack dc2-r07 has %d tiles, want 50", got)
	}
	if got := eval[int](b, `document.querySelectorAll('#fleet .tile[data-version="2.0.0"]').length`); got != 200 {
		t.Errorf("%d tiles on 2.0.0, want 200", got)
	}
	for _, sel := range []string{".tile.s-absent", ".tile.s-unhealthy", ".tile.s-mid-step"} {
		if got := eval[int](b, fmt.Sprintf("document.querySelectorAll(%s).length", jsString("#fleet "+sel))); got == 0 {
			t.Errorf("no %s tile", sel)
		}
	}
	// Tooltips say machine, version, state and why, with long health
	// bodies cut.
	tip := eval[string](b, `document.querySelector('#fleet .tile.s-unhealthy').title`)
	if !strings.Contains(tip, "m0089") || !strings.Contains(tip, "1.0.0") || !strings.Contains(tip, "unhealthy") || !strings.Contains(tip, "status 500") || len(tip) > 400 {
		t.Errorf("unhealthy tile's tooltip %q", tip)
	}
	legend := b.text("#legend")
	for _, want := range []string{"1.0.0", "2.0.0 (target) ×200", "absent", "mid-step"} {
		if !strings.Contains(legend, want) {
			t.Errorf("legend %q lacks %q", legend, want)
		}
	}
	// 1,000 machines fit on a few screens: no table of a thousand rows.
	height := eval[int](b, `document.documentElement.scrollHeight`)
	t.Logf("page height with 1,000 machines: %dpx; snapshot %d KiB of JSON", height, eval[int](b, `JSON.stringify(window.__dcroll.view).length`)>>10)
	if height > 2600 {
		t.Errorf("page is %dpx tall with 1,000 machines, want a compact map (≤ 2600px)", height)
	}
	if rows := eval[int](b, `document.querySelectorAll("table tr").length`); rows > 100 {
		t.Errorf("%d table rows on the page", rows)
	}

	queue := b.text("#queue")
	for _, want := range []string{"store", "1.0.0 → 2.0.0", "quorum 600/1000 available, min 600", "canary 2/2 healthy", "baking until", "200/1000"} {
		if !strings.Contains(queue, want) {
			t.Errorf("queue %q lacks %q", queue, want)
		}
	}
	if got := b.text("#queue tbody tr td"); got != "1" {
		t.Errorf("queue numbered from %q, want 1", got)
	}
	if night := b.text("#night-eta"); !strings.Contains(night, "ETA") || !strings.Contains(night, "800 steps left") || strings.Contains(night, "no ETA") {
		t.Errorf("night ETA %q", night)
	}
	if eta := b.text("#queue td.eta"); !strings.Contains(eta, "in 4") { // "in 42m" or "in 41m59s"
		t.Errorf("queue ETA %q, want in ~42m", eta)
	}
	pause := b.text("#pause-banner")
	if !strings.Contains(pause, "PAUSED by alice@ops: investigating p99") || !strings.Contains(pause, "dcroll --root /dc-rackmap resume") {
		t.Errorf("pause banner %q", pause)
	}
	// Downloads: only the one in flight, in MiB and MiB/s.
	if got := eval[int](b, `document.querySelectorAll("#downloads tbody tr").length`); got != 1 {
		t.Errorf("%d downloads listed, want the 1 in flight", got)
	}
	if dl := b.text("#downloads tbody tr"); !strings.Contains(dl, "m0001") || !strings.Contains(dl, "48.0 MiB / 128 MiB (37%)") || !strings.Contains(dl, "6.5 MiB/s") {
		t.Errorf("download row %q", dl)
	}
	if ag := b.text("#agents-summary"); !strings.Contains(ag, "2 registered") || !strings.Contains(ag, "mlocked 4.5 GiB in all") || !strings.Contains(ag, "m0002 (3.0 GiB)") {
		t.Errorf("agents summary %q", ag)
	}
	b.screenshot("1000-machines")
}
