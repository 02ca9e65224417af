package agent_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"dcroll/agent"
	"dcroll/agent/supervise"
	"dcroll/coordinator"
	"dcroll/examples/examplebuild"
	"dcroll/integration/zktest"
	"dcroll/spec"
	"dcroll/znodes"
)

// harness runs agents in this process against a real ZooKeeper, with blobs
// served from a directory (agent.DirFetcher) and the example service hello.
type harness struct {
	t     *testing.T
	zk    string
	conn  *znodes.Conn
	blobs string            // dir of blobs by hex
	ids   map[string]string // "v1", "v2", "v3" -> blob id
	dirs  map[string]string // machine -> data dir
	ports map[string]int
	http  map[string]string // machine -> status address

	mu     sync.Mutex
	cancel map[string]context.CancelFunc
	done   map[string]chan error
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	srv := zktest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := znodes.Dial(ctx, znodes.Options{Servers: srv.Addr(), SessionTimeout: 4 * time.Second, Logger: testLogger(t, "test")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	if err := conn.EnsureSkeleton(); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, zk: srv.Addr(), conn: conn, blobs: t.TempDir(), ids: map[string]string{},
		dirs: map[string]string{}, ports: map[string]int{}, http: map[string]string{}, cancel: map[string]context.CancelFunc{}, done: map[string]chan error{}}
	for _, v := range []struct {
		name    string
		version string
		broken  bool
	}{{"v1", "1.0.0", false}, {"v2", "2.0.0", false}, {"v3", "3.0.0-broken", true}} {
		h.ids[v.name] = h.publish(examplebuild.ForTest(t, v.version, v.broken))
	}
	h.coordinate() // the leading coordinator completes entries
	return h
}

func testLogger(t *testing.T, name string) *slog.Logger {
	if os.Getenv("DCROLL_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("who", name)
}

// publish copies file into the blob dir and records it in /dc/blobs so
// that coordinator.Push accepts specs naming it.
func (h *harness) publish(file string) string {
	h.t.Helper()
	f, err := os.Open(file)
	if err != nil {
		h.t.Fatal(err)
	}
	defer f.Close()
	sum := sha256.New()
	n, err := io.Copy(sum, f)
	if err != nil {
		h.t.Fatal(err)
	}
	hx := hex.EncodeToString(sum.Sum(nil))
	b, err := os.ReadFile(file)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.blobs, hx), b, 0o755); err != nil {
		h.t.Fatal(err)
	}
	id := "sha256:" + hx
	_, err = h.conn.Create(h.conn.Paths().Blob(hx), znodes.MustEncode(&znodes.Blob{ID: id, Size: n, PublishedAt: time.Now()}), 0)
	if err != nil && !strings.Contains(err.Error(), "exists") {
		h.t.Fatal(err)
	}
	return id
}

// start runs an agent for machine (rack) with service web until stop;
// opts adjust its configuration.
func (h *harness) start(machine, rack string, opts ...func(*agent.Config)) {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.dirs[machine] == "" {
		h.dirs[machine] = h.t.TempDir()
		h.ports[machine] = zktest.FreePort(h.t)
		h.http[machine] = fmt.Sprintf("127.0.0.1:%d", zktest.FreePort(h.t))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	h.cancel[machine], h.done[machine] = cancel, done
	cfg := agent.Config{
		Machine: machine, Rack: rack, DC: "dc1", Services: []string{"web"}, DataDir: h.dirs[machine],
		ZK: h.zk, SessionTimeout: 4 * time.Second, PollInterval: time.Second, HealthInterval: 100 * time.Millisecond,
		StopGrace: 2 * time.Second, StopServicesOnExit: true, MlockBudget: -1, HTTPAddr: h.http[machine],
		Env:     map[string][]string{"web": {fmt.Sprintf("DCROLL_PORT=%d", h.ports[machine])}},
		Fetcher: agent.DirFetcher{Dir: h.blobs}, Logger: testLogger(h.t, machine),
	}
	for _, o := range opts {
		o(&cfg)
	}
	go func() { done <- agent.Run(ctx, cfg) }()
	h.t.Cleanup(func() { h.stop(machine) })
}

// stop ends an agent (its service is stopped too: StopServicesOnExit).
func (h *harness) stop(machine string) {
	h.mu.Lock()
	cancel, done := h.cancel[machine], h.done[machine]
	delete(h.cancel, machine)
	h.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			h.t.Errorf("agent %s: %v", machine, err)
		}
	case <-time.After(30 * time.Second):
		h.t.Errorf("agent %s did not stop", machine)
	}
}

func (h *harness) spec(name, v string, settings map[string]string) *spec.Spec {
	versions := map[string]string{"v1": "1.0.0", "v2": "2.0.0", "v3": "3.0.0-broken"}
	sp := &spec.Spec{Name: name, Services: map[string]*spec.Service{
		"web": {
			Version: versions[v], Artifact: h.ids[v], Run: []string{"./hello"},
			Health: &spec.Health{HTTP: "http://127.0.0.1:${DCROLL_PORT}/healthz",
				Timeout: spec.Duration{Duration: time.Second}, MinHealthy: spec.Duration{Duration: 300 * time.Millisecond},
				Deadline: spec.Duration{Duration: 5 * time.Second}},
			Quorum: spec.Quorum{Count: 2}, MaxParallel: 1, Settings: settings,
		},
	}}
	sp.ApplyDefaults()
	return sp
}

func (h *harness) push(sp *spec.Spec, supersede bool) *coordinator.PushResult {
	h.t.Helper()
	res, err := coordinator.Push(context.Background(), h.conn, sp, coordinator.PushOptions{By: "test", Supersede: supersede})
	if err != nil {
		h.t.Fatalf("push %s: %v", sp.Name, err)
	}
	return res
}

func (h *harness) current() []znodes.Current {
	h.t.Helper()
	p := h.conn.Paths()
	names, _, err := h.conn.ZK().Children(p.Current("web"))
	if err != nil && err != zk.ErrNoNode {
		h.t.Fatal(err)
	}
	var out []znodes.Current
	for _, n := range names {
		var c znodes.Current
		if _, err := h.conn.GetJSON(p.CurrentMachine("web", n), &c); err == nil {
			out = append(out, c)
		}
	}
	return out
}

func (h *harness) queue() []coordinator.QueueEntry {
	h.t.Helper()
	q, err := coordinator.ReadQueue(h.conn)
	if err != nil {
		h.t.Fatal(err)
	}
	return q
}

// waitAll waits until n machines run version from specID, healthy, and
// the queue is done.
func (h *harness) waitAll(n int, version, specID string) {
	h.t.Helper()
	zktest.WaitFor(h.t, 60*time.Second, fmt.Sprintf("%d machines on %s", n, version), func() (bool, error) {
		cs := h.current()
		if len(cs) != n {
			return false, fmt.Errorf("%d machines registered", len(cs))
		}
		for _, c := range cs {
			if c.Version != version || c.SpecID != specID || !c.Healthy || c.State != znodes.StateRunning {
				return false, fmt.Errorf("%s: %s %s %s healthy=%v", c.Machine, c.Version, spec.ShortID(c.SpecID), c.State, c.Healthy)
			}
		}
		for _, e := range h.queue() {
			if e.State != znodes.DeployDone {
				return false, fmt.Errorf("entry %s %s", e.Service, e.State)
			}
		}
		return true, nil
	})
}

func (h *harness) hello(machine string) (examplebuild.HelloStatus, error) {
	return examplebuild.Hello(h.ports[machine])
}

// downWatcher records the largest number of down markers seen at once.
func (h *harness) downWatcher(ctx context.Context) func() int {
	var mu sync.Mutex
	maxDown := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			names, _, ch, err := h.conn.ZK().ChildrenW(h.conn.Paths().Down("web"))
			if err == nil {
				mu.Lock()
				maxDown = max(maxDown, len(names))
				mu.Unlock()
				select {
				case <-ch:
				case <-ctx.Done():
				}
				continue
			}
			select {
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
			}
		}
	}()
	return func() int {
		<-done
		mu.Lock()
		defer mu.Unlock()
		return maxDown
	}
}

// TestAgentRollout runs three in-process agents through a whole life:
// first start, upgrade under quorum, a broken version that halts after one
// machine and reverts, a rollback, and a settings-only push.
func TestAgentRollout(t *testing.T) {
	h := newHarness(t)
	machines := map[string]string{"m1": "r1", "m2": "r1", "m3": "r2"}
	for m, r := range machines {
		h.start(m, r)
	}

	v1 := h.push(h.spec("v1", "v1", map[string]string{"greeting": "hello"}), false)
	h.waitAll(3, "1.0.0", v1.SpecID)

	ctx, cancel := context.WithCancel(context.Background())
	maxDown := h.downWatcher(ctx)
	v2 := h.push(h.spec("v2", "v2", map[string]string{"greeting": "hello"}), false)
	h.waitAll(3, "2.0.0", v2.SpecID)
	cancel()
	if got := maxDown(); got != 1 {
		t.Errorf("max machines down at once = %d, want 1 (max_parallel 1)", got)
	}
	for m := range machines {
		st, err := h.hello(m)
		if err != nil || st.Version != "2.0.0" {
			t.Errorf("%s serves %+v (%v), want 2.0.0", m, st, err)
		}
	}

	// v3 never becomes healthy: the first machine halts the rollout and reverts.
	h.push(h.spec("v3", "v3", map[string]string{"greeting": "hello"}), false)
	var halted coordinator.QueueEntry
	zktest.WaitFor(t, 60*time.Second, "rollout of v3 halted", func() (bool, error) {
		q := h.queue()
		if len(q) != 1 || q[0].State != znodes.DeployHalted {
			return false, fmt.Errorf("queue %+v", q)
		}
		halted = q[0]
		return true, nil
	})
	if !strings.Contains(halted.Reason, "3.0.0-broken") || halted.Machine == "" {
		t.Errorf("halted entry = %+v, want a reason naming the version and the machine", halted)
	}
	zktest.WaitFor(t, 30*time.Second, "reverted to v2, nobody down", func() (bool, error) {
		names, _, err := h.conn.ZK().Children(h.conn.Paths().Down("web"))
		if err != nil || len(names) > 0 {
			return false, fmt.Errorf("down %v %v", names, err)
		}
		for _, c := range h.current() {
			if c.Version != "2.0.0" || !c.Healthy || c.State != znodes.StateRunning {
				return false, fmt.Errorf("%s: %s %s healthy=%v", c.Machine, c.Version, c.State, c.Healthy)
			}
		}
		return true, nil
	})

	// Dashboards see why the machines wait.
	zktest.WaitFor(t, 10*time.Second, "every machine publishing why it waits", func() (bool, error) {
		for _, c := range h.current() {
			if !strings.HasPrefix(c.Detail, "waiting: halted: web on "+halted.Machine) {
				return false, fmt.Errorf("%s detail %q", c.Machine, c.Detail)
			}
		}
		return true, nil
	})

	// Rolling back (to v2) abandons the halted rollout; nothing restarts.
	// No machine steps or changes for it (they all run v2 from the v2 spec
	// already), so no agent reads the fleet: bystanders read only their
	// own nodes. The elected coordinator completes such an entry.
	pids := map[string]int{}
	for m := range machines {
		st, err := h.hello(m)
		if err != nil {
			t.Fatal(err)
		}
		pids[m] = st.PID
	}
	rb, err := coordinator.Rollback(context.Background(), h.conn, "", coordinator.PushOptions{By: "test"})
	if err != nil {
		t.Fatal(err)
	}
	h.waitAll(3, "2.0.0", rb.SpecID)

	// Settings only: a reload, no restart.
	s4 := h.push(h.spec("v2-settings", "v2", map[string]string{"greeting": "bonjour"}), false)
	h.waitAll(3, "2.0.0", s4.SpecID)
	for m := range machines {
		st, err := h.hello(m)
		if err != nil {
			t.Fatal(err)
		}
		if st.PID != pids[m] {
			t.Errorf("%s restarted: pid %d -> %d", m, pids[m], st.PID)
		}
		if st.Reloads < 1 || st.Settings["greeting"] != "bonjour" {
			t.Errorf("%s: reloads %d settings %v, want a reload with greeting=bonjour", m, st.Reloads, st.Settings)
		}
	}
}

// coordinate runs a coordinator (the queue advancer) until the test ends.
func (h *harness) coordinate() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- coordinator.Run(ctx, coordinator.Config{Conn: h.conn, ID: "test-coordinator", Interval: 100 * time.Millisecond, Logger: testLogger(h.t, "coordinator")})
	}()
	h.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("coordinator: %v", err)
		}
	})
}

func getBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b)
}

// TestStatusAndMetrics: /status says what runs and why; /metrics is Prometheus text.
func TestStatusAndMetrics(t *testing.T) {
	h := newHarness(t)
	h.start("m1", "r1")
	res := h.push(h.spec("v1", "v1", nil), false)
	h.waitAll(1, "1.0.0", res.SpecID)
	var st agent.Status
	zktest.WaitFor(t, 10*time.Second, "status shows the last decision", func() (bool, error) {
		if err := json.Unmarshal([]byte(getBody(t, "http://"+h.http["m1"]+"/status")), &st); err != nil {
			return false, err
		}
		if len(st.Services) != 1 || st.Services[0].Decision != "nothing" {
			return false, fmt.Errorf("%+v", st)
		}
		return true, nil
	})
	s := st.Services[0]
	if st.Machine != "m1" || st.ZooKeeper != "connected" || s.Version != "1.0.0" || !s.Healthy || s.PID == 0 || s.Reason != "runs 1.0.0" {
		t.Errorf("status = %+v", st)
	}
	m := getBody(t, "http://"+h.http["m1"]+"/metrics")
	for _, want := range []string{`dcroll_agent_service_healthy{service="web"} 1`, "dcroll_agent_zookeeper_connected 1",
		`dcroll_agent_decisions_total{action="start-version",service="web"} 1`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q:\n%s", want, m)
		}
	}
}

// TestBootWithoutZooKeeper: an agent that cannot reach ZooKeeper starts the
// version its state.json remembers, and nothing else.
func TestBootWithoutZooKeeper(t *testing.T) {
	h := newHarness(t)
	h.start("m1", "r1")
	res := h.push(h.spec("v2", "v2", map[string]string{"greeting": "hi"}), false)
	h.waitAll(1, "2.0.0", res.SpecID)
	h.stop("m1") // stops the service too (StopServicesOnExit)
	if _, err := h.hello("m1"); err == nil {
		t.Fatal("service still answers after its agent stopped it")
	}
	h.start("m1", "r1", func(c *agent.Config) { c.ZK = "127.0.0.1:1" })
	zktest.WaitFor(t, 20*time.Second, "m1 serving 2.0.0 without ZooKeeper", func() (bool, error) {
		st, err := h.hello("m1")
		if err != nil {
			return false, err
		}
		if st.Version != "2.0.0" || st.Settings["greeting"] != "hi" {
			return false, fmt.Errorf("serves %+v", st)
		}
		return true, nil
	})
	var st agent.Status
	if err := json.Unmarshal([]byte(getBody(t, "http://"+h.http["m1"]+"/status")), &st); err != nil {
		t.Fatal(err)
	}
	if st.ZooKeeper != "not connected" || len(st.Services) != 1 || st.Services[0].Version != "2.0.0" {
		t.Errorf("status = %+v", st)
	}
}

// TestSessionLossReregisters: when the agent's session expires (the network
// is cut longer than the session timeout), it registers again and keeps
// following HEAD; the service is not restarted.
func TestSessionLossReregisters(t *testing.T) {
	h := newHarness(t)
	proxy := zktest.NewProxy(t, h.zk)
	h.start("m1", "r1", func(c *agent.Config) { c.ZK = proxy.Addr() })
	h.start("m2", "r1")
	v1 := h.push(h.spec("v1", "v1", nil), false)
	h.waitAll(2, "1.0.0", v1.SpecID)
	before, err := h.hello("m1")
	if err != nil {
		t.Fatal(err)
	}
	_, st, err := h.conn.ZK().Get(h.conn.Paths().CurrentMachine("web", "m1"))
	if err != nil {
		t.Fatal(err)
	}
	owner := st.EphemeralOwner

	proxy.Cut()
	zktest.WaitFor(t, 20*time.Second, "m1's session to expire", func() (bool, error) {
		ok, _, err := h.conn.ZK().Exists(h.conn.Paths().CurrentMachine("web", "m1"))
		return !ok, err
	})
	if st, err := h.hello("m1"); err != nil || st.PID != before.PID {
		t.Errorf("service disturbed while ZooKeeper was unreachable: %+v %v", st, err)
	}
	proxy.Restore()
	zktest.WaitFor(t, 30*time.Second, "m1 registered again", func() (bool, error) {
		ok, st, err := h.conn.ZK().Exists(h.conn.Paths().CurrentMachine("web", "m1"))
		return ok && st.EphemeralOwner != owner, err
	})
	h.waitAll(2, "1.0.0", v1.SpecID)
	if st, err := h.hello("m1"); err != nil || st.PID != before.PID {
		t.Errorf("service restarted by the session loss: %+v %v (pid before %d)", st, err, before.PID)
	}
	sp := h.spec("v2", "v2", nil)
	sp.Services["web"].Quorum = spec.Quorum{Count: 1} // two machines: one may go
	v2 := h.push(sp, false)
	h.waitAll(2, "2.0.0", v2.SpecID)
}

// TestBootFinishesInterruptedStep: state.json says a step to a version that
// never becomes healthy was in flight when the agent died; the next boot,
// even without ZooKeeper, goes back to the previous version and clears it.
func TestBootFinishesInterruptedStep(t *testing.T) {
	h := newHarness(t)
	h.start("m1", "r1")
	res := h.push(h.spec("v2", "v2", nil), false)
	h.waitAll(1, "2.0.0", res.SpecID)
	h.stop("m1")

	dir := filepath.Join(h.dirs["m1"], "web")
	st, err := agent.LoadState(dir, "web")
	if err != nil || st.Current == nil {
		t.Fatalf("state after the first run: %+v %v", st, err)
	}
	blob, err := agent.DirFetcher{Dir: h.blobs}.Fetch(context.Background(), h.ids["v3"], nil)
	if err != nil {
		t.Fatal(err)
	}
	v3dir, err := supervise.Unpack(context.Background(), blob, filepath.Join(dir, "versions"), "3.0.0-broken", "./hello")
	if err != nil {
		t.Fatal(err)
	}
	broken := *st.Current
	broken.Version, broken.Build, broken.Dir = "3.0.0-broken", "broken", v3dir
	st.Previous, st.Current = st.Current, &broken
	st.InFlight = &agent.Step{From: "2.0.0", To: "3.0.0-broken"}
	if err := st.Save(dir, time.Now()); err != nil {
		t.Fatal(err)
	}

	h.start("m1", "r1", func(c *agent.Config) { c.ZK = "127.0.0.1:1" })
	zktest.WaitFor(t, 30*time.Second, "m1 back on 2.0.0", func() (bool, error) {
		s, err := h.hello("m1")
		if err != nil || s.Version != "2.0.0" {
			return false, fmt.Errorf("serves %+v (%v)", s, err)
		}
		st, err := agent.LoadState(dir, "web")
		if err != nil || st.InFlight != nil || st.Current.Version != "2.0.0" {
			return false, fmt.Errorf("state %+v %v", st, err)
		}
		return true, nil
	})
}

// TestBootInterruptedRevert: the agent died while reverting from a failed
// build (state.json: InFlight.Reverting, Current = the good build,
// Previous = the failed one). The good build is slow to become healthy at
// boot (its health check fails: wrong port); the next boot must keep it and
// never go back to the build that failed (the old rule "interrupted and
// unhealthy: go back to Previous" would start the broken one).
func TestBootInterruptedRevert(t *testing.T) {
	h := newHarness(t)
	h.start("m1", "r1")
	res := h.push(h.spec("v2", "v2", nil), false)
	h.waitAll(1, "2.0.0", res.SpecID)
	h.stop("m1")

	dir := filepath.Join(h.dirs["m1"], "web")
	st, err := agent.LoadState(dir, "web")
	if err != nil || st.Current == nil {
		t.Fatalf("state after the first run: %+v %v", st, err)
	}
	blob, err := agent.DirFetcher{Dir: h.blobs}.Fetch(context.Background(), h.ids["v3"], nil)
	if err != nil {
		t.Fatal(err)
	}
	v3dir, err := supervise.Unpack(context.Background(), blob, filepath.Join(dir, "versions"), "3.0.0-broken", "./hello")
	if err != nil {
		t.Fatal(err)
	}
	broken := *st.Current
	broken.Version, broken.Build, broken.Dir = "3.0.0-broken", "broken", v3dir
	good := *st.Current
	good.Health = &spec.Health{HTTP: fmt.Sprintf("http://127.0.0.1:%d/healthz", zktest.FreePort(t)),
		Timeout: spec.Duration{Duration: 200 * time.Millisecond}, MinHealthy: spec.Duration{Duration: 100 * time.Millisecond},
		Deadline: spec.Duration{Duration: time.Second}}
	st.Current, st.Previous = &good, &broken
	st.InFlight = &agent.Step{Kind: agent.StepUpgrade, From: "2.0.0", To: "3.0.0-broken", Reverting: true}
	if err := st.Save(dir, time.Now()); err != nil {
		t.Fatal(err)
	}

	h.start("m1", "r1", func(c *agent.Config) { c.ZK = "127.0.0.1:1" })
	zktest.WaitFor(t, 30*time.Second, "the interrupted revert finished at boot", func() (bool, error) {
		st, err := agent.LoadState(dir, "web")
		if err != nil || st.InFlight != nil {
			return false, fmt.Errorf("state %+v %v", st, err)
		}
		return true, nil
	})
	st, err = agent.LoadState(dir, "web")
	if err != nil || st.Current == nil || st.Current.Version != "2.0.0" {
		t.Fatalf("state after boot: %+v %v: want Current 2.0.0", st, err)
	}
	if s, err := h.hello("m1"); err != nil || s.Version != "2.0.0" {
		t.Fatalf("serves %+v (%v), want 2.0.0: a revert interrupted by kill -9 must never boot the failed build", s, err)
	}
}
