package coordinator

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"dcroll/integration/zkserver"
	"dcroll/integration/zktest"
	"dcroll/znodes"
)

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b)
}

// TestRunAdvancesQueueAndServesDashboard: the elected coordinator marks the
// active entry done once every machine runs the target, and only then; the
// dashboard, status API and metrics read the same znodes.
func TestRunAdvancesQueueAndServesDashboard(t *testing.T) {
	c := env(t)
	sp := mustSpec(t, specYAML("v1", "1", blobA, "1", blobB, "64"))
	if _, err := Push(context.Background(), c, sp, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	p := c.Paths()
	register := func(svc, m string, healthy bool) string {
		cur := &znodes.Current{Machine: m, Service: svc, Version: "1", SpecID: sp.ID(), State: znodes.StateRunning, Healthy: healthy}
		if err := c.EnsurePath(p.Current(svc)); err != nil {
			t.Fatal(err)
		}
		path, err := c.Create(p.CurrentMachine(svc, m), znodes.MustEncode(cur), zk.FlagEphemeral)
		if err != nil {
			t.Fatal(err)
		}
		return path
	}
	register("db", "m1", true)
	unhealthy := register("db", "m2", false)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc := make(chan string, 2)
	errc := make(chan error, 2)
	for _, id := range []string{"c1", "c2"} {
		go func() {
			errc <- Run(ctx, Config{Conn: c, ID: id, HTTPAddr: "127.0.0.1:0", Interval: 50 * time.Millisecond, Listening: func(a string) { addrc <- a },
				Mount: map[string]http.Handler{"/announce": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "tracker "+id) })}})
		}()
	}
	addr := <-addrc
	<-addrc
	zktest.WaitFor(t, 10*time.Second, "a coordinator leader", func() (bool, error) {
		id, _ := znodes.LeaderOf(c, ElectionName)
		return id == "c1" || id == "c2", nil
	})
	// db is not complete (m2 unhealthy): the entry must stay pending over
	// several advance rounds.
	for range 5 {
		q, _ := ReadQueue(c)
		if q[0].State == znodes.DeployDone {
			t.Fatal("entry marked done while a machine is unhealthy")
		}
		if _, err := ReadStatus(c); err != nil {
			t.Fatal(err)
		}
	}
	cur := &znodes.Current{Machine: "m2", Service: "db", Version: "1", SpecID: sp.ID(), State: znodes.StateRunning, Healthy: true}
	if _, err := c.ZK().Set(unhealthy, znodes.MustEncode(cur), -1); err != nil {
		t.Fatal(err)
	}
	zktest.WaitFor(t, 10*time.Second, "db entry done", func() (bool, error) {
		q, err := ReadQueue(c)
		return err == nil && q[0].State == znodes.DeployDone && q[1].State == znodes.DeployPending, err
	})

	var st Status
	if err := json.Unmarshal([]byte(get(t, "http://"+addr+"/api/status")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Head == nil || st.Head.SpecID != sp.ID() || len(st.Queue) != 2 {
		t.Fatalf("api/status = %+v", st)
	}
	metrics := get(t, "http://"+addr+"/metrics")
	for _, want := range []string{`dcroll_service_healthy{service="db"} 2`, `dcroll_deploy_entries{state="done"} 1`, `dcroll_zookeeper_up 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if got := get(t, "http://"+addr+"/announce"); !strings.HasPrefix(got, "tracker c") {
		t.Errorf("mounted /announce answered %q", got)
	}
	page := get(t, "http://"+addr+"/")
	if !strings.Contains(page, "dcroll data center") || !strings.Contains(page, "m2") {
		t.Errorf("dashboard page lacks machines: %.300s", page)
	}
	cancel()
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}

// mntrValue reads one value of the server's mntr.
func mntrValue(t *testing.T, addr, key string) int {
	t.Helper()
	out, err := zkserver.FourLetter(context.Background(), addr, "mntr")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "\t"); ok && k == key {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatalf("mntr %s = %q", key, v)
			}
			return n
		}
	}
	t.Fatalf("mntr has no %s:\n%s", key, out)
	return 0
}

// TestIdleAdvancerStaysFlat: the leader's advancer, ticking every 5ms on a
// real ZooKeeper, keeps its goroutines and the server's watches flat over
// 300 ticks and sends (almost) no read to ZooKeeper while nothing changes,
// with an empty queue and with an active entry that does not move; and it
// still sees the change that finally comes.
func TestIdleAdvancerStaysFlat(t *testing.T) {
	srv := zktest.Start(t)
	c, err := znodes.Dial(context.Background(), znodes.Options{Servers: srv.Addr(), SessionTimeout: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.EnsureSkeleton(); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{blobA, blobB} {
		if _, err := c.Create(c.Paths().Blob(strings.TrimPrefix(b, "sha256:")), znodes.MustEncode(&znodes.Blob{ID: b, Size: 1}), 0); err != nil {
			t.Fatal(err)
		}
	}

	var ticks atomic.Int64
	tickc := make(chan struct{}, 1)
	a := &advancer{c: c, log: slog.New(slog.DiscardHandler), now: time.Now, noMembersAfter: time.Hour,
		night: newNightWriter(c, "idle-test"), onTick: func() {
			ticks.Add(1)
			select {
			case tickc <- struct{}{}:
			default:
			}
		}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.run(ctx, 5*time.Millisecond) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	waitTicks := func(n int64) {
		t.Helper()
		target := ticks.Load() + n
		deadline := time.NewTimer(60 * time.Second)
		defer deadline.Stop()
		for ticks.Load() < target {
			select {
			case <-tickc:
			case <-deadline.C:
				t.Fatalf("only %d of %d ticks within 60s", n-(target-ticks.Load()), n)
			}
		}
	}
	// idle runs 300 ticks after a warm-up and checks that goroutines,
	// server watches and server reads did not grow.
	idle := func(what string) {
		t.Helper()
		waitTicks(20)
		g0 := runtime.NumGoroutine()
		w0 := mntrValue(t, srv.Addr(), "zk_watch_count")
		r0 := mntrValue(t, srv.Addr(), "zk_cnt_readlatency")
		start := time.Now()
		waitTicks(300)
		elapsed := time.Since(start)
		reads := mntrValue(t, srv.Addr(), "zk_cnt_readlatency") - r0
		w1 := mntrValue(t, srv.Addr(), "zk_watch_count")
		g1 := runtime.NumGoroutine()
		t.Logf("%s: 300 ticks in %s: goroutines %d -> %d, server watches %d -> %d, server reads %d",
			what, elapsed.Round(time.Millisecond), g0, g1, w0, w1, reads)
		if g1 > g0+5 {
			t.Errorf("%s: goroutines grew from %d to %d over 300 ticks", what, g0, g1)
		}
		if w1 != w0 {
			t.Errorf("%s: server watches went from %d to %d over 300 ticks", what, w0, w1)
		}
		if reads > 10 {
			t.Errorf("%s: %d ZooKeeper reads over 300 ticks with nothing changing (want O(1), not per tick)", what, reads)
		}
	}

	idle("empty queue")

	// A quiet active entry: db's m2 is registered but unhealthy.
	sp := mustSpec(t, specYAML("v1", "1", blobA, "1", blobB, "64"))
	if _, err := Push(context.Background(), c, sp, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"m1", "m2"} {
		addMember(t, c, "db", m, "1")
	}
	registerAt(t, c, "db", "m1", "1", sp.ID(), true)
	m2 := registerAt(t, c, "db", "m2", "1", sp.ID(), false)
	zktest.WaitFor(t, 10*time.Second, "the night record to show db's two members", func() (bool, error) {
		r, err := ReadRollout(c)
		return err == nil && r != nil && len(r.Services) == 2 && r.Services[0].Members == 2, err
	})
	idle("quiet active entry")
	if q, _ := ReadQueue(c); q[0].State != znodes.DeployPending {
		t.Fatalf("db entry %s while m2 is unhealthy", q[0].State)
	}
	// For comparison: the same rounds with plain reads (no view), as the
	// leader polled before.
	plain := &advancer{c: c, log: slog.New(slog.DiscardHandler), now: time.Now, noMembersAfter: time.Hour, night: newNightWriter(c, "idle-test")}
	r0 := mntrValue(t, srv.Addr(), "zk_cnt_readlatency")
	for range 50 {
		if err := plain.once(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("plain reads, for comparison: %.1f ZooKeeper reads per round", float64(mntrValue(t, srv.Addr(), "zk_cnt_readlatency")-r0)/50)

	// The change that ends the quiet is seen at once.
	cur := &znodes.Current{Machine: "m2", Service: "db", Rack: "r1", DC: "par1", Version: "1", SpecID: sp.ID(), State: znodes.StateRunning, Healthy: true}
	if _, err := c.ZK().Set(m2, znodes.MustEncode(cur), -1); err != nil {
		t.Fatal(err)
	}
	zktest.WaitFor(t, 10*time.Second, "db entry done", func() (bool, error) {
		q, err := ReadQueue(c)
		return err == nil && q[0].State == znodes.DeployDone, err
	})
}
