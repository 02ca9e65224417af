package integration

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"dcroll/agent"
	"dcroll/agent/supervise"
	"dcroll/coordinator"
	"dcroll/distrib"
	"dcroll/examples/examplebuild"
	"dcroll/integration/watcher"
	"dcroll/integration/zktest"
	"dcroll/spec"
	"dcroll/znodes"
)

// The rollout test runs real agent processes (`dcroll agent`, i.e.
// agent.Run) for two services, store and web (web depends on store),
// on five "machines" of one host, against a real ZooKeeper and an
// in-process origin, with blobs distributed over BitTorrent. An independent
// watcher (integration/watcher, its own ZooKeeper connection) records
// /dc/current and /dc/down and the safety properties are checked on what it
// saw.

const (
	// sessionTimeout is the most the test server allows (20 ticks of 200ms):
	// shorter ones expire when the two shared cores are busy.
	sessionTimeout = 4 * time.Second
	nMachines      = 5
)

var racks = map[string]string{"m1": "r1", "m2": "r1", "m3": "r1", "m4": "r2", "m5": "r2"}

var services = []string{"store", "web"}

// Service parameters every spec of the test shares (quorum, max_parallel).
var rules = map[string]struct {
	quorum      spec.Quorum
	maxParallel int
}{
	"store": {spec.Quorum{Count: 3}, 1},
	"web":   {spec.Quorum{Percent: 60}, 2},
}

var (
	buildOnce sync.Once
	buildDir  string
	agentBin  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// agentBinary builds the dcroll binary once per test binary.
func agentBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "dcroll-integration-")
		if buildErr != nil {
			return
		}
		pkg := "dcroll/cmd/dcroll"
		agentBin = filepath.Join(buildDir, "dcroll")
		out, err := exec.Command("go", "build", "-o", agentBin, pkg).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return agentBin
}

type machine struct {
	name, rack string
	dir        string
	ports      map[string]int // service -> DCROLL_PORT
	httpAddr   string
	log        string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

type cluster struct {
	t        *testing.T
	zkAddr   string
	conn     *znodes.Conn
	blobs    map[string]string // "v1", "v2", "v3" -> blob id
	versions map[string]string // "v1" -> "1.0.0"
	bin      string
	machines map[string]*machine
	w        *watcher.Watcher
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	bin := agentBinary(t)
	srv := zktest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	conn, err := znodes.Dial(ctx, znodes.Options{Servers: srv.Addr(), SessionTimeout: 4 * time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	if err := conn.EnsureSkeleton(); err != nil {
		t.Fatal(err)
	}

	st, err := distrib.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	origin, err := distrib.NewOrigin(distrib.OriginConfig{Store: st, Conn: conn, ListenAddr: "127.0.0.1:0",
		HTTPAddr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	originDone := make(chan struct{})
	go func() {
		defer close(originDone)
		if err := origin.Run(ctx); err != nil && ctx.Err() == nil {
			t.Errorf("origin: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-originDone })
	// The elected coordinator completes entries whose last machine did not
	// step (bystander agents do not read the whole fleet).
	coordDone := make(chan struct{})
	go func() {
		defer close(coordDone)
		if err := coordinator.Run(ctx, coordinator.Config{Conn: conn, ID: "test-coordinator", Interval: 200 * time.Millisecond,
			Logger: slog.New(slog.DiscardHandler)}); err != nil && ctx.Err() == nil {
			t.Errorf("coordinator: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-coordDone })

	c := &cluster{t: t, zkAddr: srv.Addr(), conn: conn, bin: bin, blobs: map[string]string{},
		versions: map[string]string{"v1": "1.0.0", "v2": "2.0.0", "v3": "3.0.0-broken"}, machines: map[string]*machine{}}
	for _, v := range []string{"v1", "v2", "v3"} {
		file := examplebuild.TarGzForTest(t, c.versions[v], v == "v3")
		bs, err := distrib.Publish(ctx, conn, st, []string{file}, distrib.PublishOptions{OriginURL: origin.URL()})
		if err != nil {
			t.Fatalf("publish %s: %v", v, err)
		}
		c.blobs[v] = bs[0].ID
	}
	origin.Nudge()

	c.w, err = watcher.Start(ctx, srv.Addr(), "/dc", services...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.w.Close)

	for name, rack := range racks {
		m := &machine{name: name, rack: rack, dir: t.TempDir(), ports: map[string]int{}, httpAddr: fmt.Sprintf("127.0.0.1:%d", zktest.FreePort(t))}
		for _, s := range services {
			m.ports[s] = zktest.FreePort(t)
		}
		m.log = filepath.Join(m.dir, "agent.log")
		c.machines[name] = m
	}
	t.Cleanup(c.teardown)
	return c
}

// start runs machine m's agent process.
func (c *cluster) start(m *machine) {
	c.t.Helper()
	env := map[string][]string{}
	for s, p := range m.ports {
		env[s] = []string{fmt.Sprintf("DCROLL_PORT=%d", p)}
	}
	cfg := agent.Config{Machine: m.name, Rack: m.rack, DC: "dc1", Services: services, DataDir: filepath.Join(m.dir, "data"),
		ZK: c.zkAddr, SessionTimeout: sessionTimeout, PeerListen: "127.0.0.1:0", HTTPAddr: m.httpAddr,
		MlockBudget: 64 << 20, Env: env, PollInterval: time.Second, HealthInterval: 100 * time.Millisecond, StopGrace: 2 * time.Second}
	cfgPath := filepath.Join(m.dir, "agent.yaml")
	if err := os.WriteFile(cfgPath, agentYAML(cfg), 0o644); err != nil {
		c.t.Fatal(err)
	}
	args := []string{"--log-format", "json", "--zk", c.zkAddr, "agent", "--config", cfgPath}
	logf, err := os.OpenFile(m.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(c.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		c.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	m.mu.Lock()
	m.cmd, m.done = cmd, done
	m.mu.Unlock()
}

// agentYAML writes cfg as the YAML config file of `dcroll agent`.
func agentYAML(cfg agent.Config) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "machine: %s\nrack: %s\ndc: %s\ndata_dir: %q\nzk: %q\n", cfg.Machine, cfg.Rack, cfg.DC, cfg.DataDir, cfg.ZK)
	fmt.Fprintf(&b, "session_timeout: %s\npeer_listen: %q\nhttp_addr: %q\nmlock_budget: %d\n", cfg.SessionTimeout, cfg.PeerListen, cfg.HTTPAddr, cfg.MlockBudget)
	fmt.Fprintf(&b, "poll_interval: %s\nhealth_interval: %s\nstop_grace: %s\nservices:\n", cfg.PollInterval, cfg.HealthInterval, cfg.StopGrace)
	for _, s := range cfg.Services {
		fmt.Fprintf(&b, "  - %s\n", s)
	}
	b.WriteString("env:\n")
	for _, s := range sortedNames(cfg.Env) {
		fmt.Fprintf(&b, "  %s:\n", s)
		for _, kv := range cfg.Env[s] {
			fmt.Fprintf(&b, "    - %q\n", kv)
		}
	}
	return []byte(b.String())
}

// signal sends sig to m's agent and waits for it to exit.
func (c *cluster) signal(m *machine, sig syscall.Signal) {
	c.t.Helper()
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		c.t.Errorf("agent %s ignored %v for 30s", m.name, sig)
	}
}

// stopServices stops the service processes m's agents left running.
func (c *cluster) stopServices(m *machine) {
	files, _ := filepath.Glob(filepath.Join(m.dir, "data", "*", "versions", "*", supervise.PIDFileName))
	for _, f := range files {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if _, err := supervise.StopPIDFile(ctx, f, time.Second, nil); err != nil {
			c.t.Logf("stop %s: %v", f, err)
		}
		cancel()
	}
}

func (c *cluster) teardown() {
	for _, m := range c.machines {
		c.signal(m, syscall.SIGKILL)
		c.stopServices(m)
	}
	if c.t.Failed() {
		keep := os.Getenv("DCROLL_IT_KEEP_LOGS") // a directory to copy the agents' logs to
		for _, name := range sortedNames(c.machines) {
			c.t.Logf("--- last lines of agent %s ---\n%s", name, tail(c.machines[name].log, 40))
			if keep != "" {
				if b, err := os.ReadFile(c.machines[name].log); err == nil {
					_ = os.WriteFile(filepath.Join(keep, name+".log"), b, 0o644)
				}
			}
		}
	}
}

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// svcSpec is one service of a test spec.
type svcSpec struct {
	v           string // "v1", "v2", "v3"
	settings    map[string]string
	maxParallel int           // 0: rules
	minHealthy  time.Duration // 0: 300ms
}

func (c *cluster) spec(name string, svcs map[string]svcSpec) *spec.Spec {
	c.t.Helper()
	sp := &spec.Spec{Name: name, Services: map[string]*spec.Service{}}
	for s, x := range svcs {
		mp := x.maxParallel
		if mp == 0 {
			mp = rules[s].maxParallel
		}
		mh := x.minHealthy
		if mh == 0 {
			mh = 300 * time.Millisecond
		}
		svc := &spec.Service{
			Version: c.versions[x.v], Artifact: c.blobs[x.v], Run: []string{"./bin/hello"},
			Health: &spec.Health{HTTP: "http://127.0.0.1:${DCROLL_PORT}/healthz", Timeout: spec.Duration{Duration: time.Second},
				MinHealthy: spec.Duration{Duration: mh}, Deadline: spec.Duration{Duration: 4 * time.Second}},
			Quorum: rules[s].quorum, MaxParallel: mp, Settings: x.settings,
		}
		if s == "web" {
			svc.DependsOn = []string{"store"}
		}
		sp.Services[s] = svc
	}
	sp.ApplyDefaults()
	if _, err := spec.FromCanonical(sp.Canonical()); err != nil {
		c.t.Fatalf("spec %s: %v", name, err)
	}
	return sp
}

func (c *cluster) push(sp *spec.Spec) string {
	c.t.Helper()
	res, err := coordinator.Push(context.Background(), c.conn, sp, coordinator.PushOptions{By: "integration"})
	if err != nil {
		c.t.Fatalf("push %s: %v", sp.Name, err)
	}
	return res.SpecID
}

func (c *cluster) current(service string) map[string]znodes.Current {
	p := c.conn.Paths()
	names, _, err := c.conn.ZK().Children(p.Current(service))
	out := map[string]znodes.Current{}
	if err != nil {
		return out
	}
	for _, n := range names {
		var cur znodes.Current
		if _, err := c.conn.GetJSON(p.CurrentMachine(service, n), &cur); err == nil {
			out[n] = cur
		}
	}
	return out
}

// converged reports whether every machine in want runs version of specID
// for service, healthy, with no down marker.
func (c *cluster) converged(service, version, specID string, want []string) error {
	cur := c.current(service)
	for _, m := range want {
		x, ok := cur[m]
		if !ok {
			return fmt.Errorf("%s/%s not registered", service, m)
		}
		if x.Version != version || x.SpecID != specID || !x.Healthy || x.State != znodes.StateRunning {
			return fmt.Errorf("%s/%s: %s %s %s healthy=%v %s", service, m, x.Version, spec.ShortID(x.SpecID), x.State, x.Healthy, x.Detail)
		}
	}
	names, _, err := c.conn.ZK().Children(c.conn.Paths().Down(service))
	if err == nil && len(names) > 0 {
		return fmt.Errorf("%s down: %v", service, names)
	}
	return nil
}

// waitConverged waits until every machine in want runs the given versions
// of spec id and the deploy queue is done.
func (c *cluster) waitConverged(what, specID string, versions map[string]string, want []string) {
	c.t.Helper()
	zktest.WaitFor(c.t, 90*time.Second, what, func() (bool, error) {
		for _, s := range services {
			if err := c.converged(s, versions[s], specID, want); err != nil {
				return false, err
			}
		}
		q, err := coordinator.ReadQueue(c.conn)
		if err != nil {
			return false, err
		}
		for _, e := range q {
			if e.State != znodes.DeployDone {
				return false, fmt.Errorf("deploy entry %s %s is %s %s", e.Service, e.Version, e.State, e.Reason)
			}
		}
		// The watcher lags a little: let it see the same, so that a phase
		// starting now does not inherit a stale frame.
		for _, s := range services {
			now := c.w.Now(s)
			for _, m := range want {
				if x := now[m]; !x.Available() || x.Version != versions[s] {
					return false, fmt.Errorf("watcher still sees %s/%s as %s", s, m, x)
				}
			}
		}
		return true, nil
	})
}

func (c *cluster) hello(m *machine, service string) (examplebuild.HelloStatus, error) {
	return examplebuild.Hello(m.ports[service])
}

func all() []string { return sortedNames(racks) }

// checkSafety checks what the watcher saw of service in [from, to]: never
// more than max_parallel machines out (down marker or unavailable), never
// two racks out, never fewer available than the quorum.
func (c *cluster) checkSafety(service string, from, to time.Time, maxParallel int) {
	c.t.Helper()
	w := c.w
	if n, f := w.MaxDownMarkers(service, from, to); n > maxParallel {
		c.t.Errorf("%s: %d down markers at %s, max_parallel %d\n%s", service, n, f.At.Format("15:04:05.000"), maxParallel, w.Dump(service, from, to))
	}
	if n, f := w.MaxUnavailable(service, from, to); n > maxParallel {
		c.t.Errorf("%s: %d machines unavailable at %s, max_parallel %d\n%s", service, n, f.At.Format("15:04:05.000"), maxParallel, w.Dump(service, from, to))
	}
	if n, f := w.MaxRacksUnavailable(service, from, to); n > 1 {
		c.t.Errorf("%s: %d racks unavailable at once at %s\n%s", service, n, f.At.Format("15:04:05.000"), w.Dump(service, from, to))
	}
	min := rules[service].quorum.Min(nMachines)
	if n, f := w.MinAvailable(service, from, to); n < min {
		c.t.Errorf("%s: only %d available at %s, quorum %d\n%s", service, n, f.At.Format("15:04:05.000"), min, w.Dump(service, from, to))
	}
}

func TestRollout(t *testing.T) {
	if testing.Short() {
		t.Skip("starts ZooKeeper and agent processes")
	}
	began := time.Now()
	c := newCluster(t)
	for _, name := range all() {
		c.start(c.machines[name])
	}
	v1 := map[string]string{"store": "1.0.0", "web": "1.0.0"}
	v2 := map[string]string{"store": "2.0.0", "web": "2.0.0"}
	storeV1 := svcSpec{v: "v1", settings: map[string]string{"greeting": "store v1"}}
	storeV2 := svcSpec{v: "v2", settings: map[string]string{"greeting": "store v2"}}

	var v1ID, v2ID string
	ok := t.Run("first push starts HEAD's version everywhere", func(t *testing.T) {
		v1ID = c.push(c.spec("v1", map[string]svcSpec{"store": storeV1, "web": {v: "v1"}}))
		c.waitConverged("all on v1", v1ID, v1, all())
		for _, name := range all() {
			for _, s := range services {
				if h, err := c.hello(c.machines[name], s); err != nil || h.Version != "1.0.0" {
					t.Errorf("%s/%s serves %+v (%v), want 1.0.0", s, name, h, err)
				}
			}
		}
	})
	if !ok {
		return
	}
	t.Logf("v1 everywhere after %s", time.Since(began).Round(time.Millisecond))

	ok = t.Run("upgrade follows dependency order, quorum, max_parallel and racks", func(t *testing.T) {
		from := time.Now()
		v2ID = c.push(c.spec("v2", map[string]svcSpec{"store": storeV2, "web": {v: "v2", minHealthy: time.Second}}))
		c.waitConverged("all on v2", v2ID, v2, all())
		to := time.Now()
		storeDone := c.w.AllOn("store", "2.0.0", from)
		webFirst, who := c.w.FirstDown("web", from)
		if storeDone.IsZero() || webFirst.IsZero() || webFirst.Before(storeDone) {
			t.Errorf("web/%s went down at %s, before store finished (%s)\n%s%s", who, webFirst.Format("15:04:05.000"),
				storeDone.Format("15:04:05.000"), c.w.Dump("store", from, to), c.w.Dump("web", from, to))
		}
		for _, s := range services {
			c.checkSafety(s, from, to, rules[s].maxParallel)
		}
		if n, _ := c.w.MaxDownMarkers("web", from, to); n != 2 {
			t.Logf("note: web never had 2 machines down at once (max %d); max_parallel 2 was not exercised", n)
		}
	})
	if !ok {
		return
	}
	t.Logf("v2 everywhere after %s", time.Since(began).Round(time.Millisecond))

	ok = t.Run("broken version halts after one machine, which reverts", func(t *testing.T) {
		from := time.Now()
		c.push(c.spec("v3-broken", map[string]svcSpec{"store": storeV2, "web": {v: "v3", maxParallel: 1}}))
		var halted coordinator.QueueEntry
		zktest.WaitFor(t, 60*time.Second, "web rollout halted", func() (bool, error) {
			q, err := coordinator.ReadQueue(c.conn)
			if err != nil {
				return false, err
			}
			for _, e := range q {
				if e.Service == "web" && e.State == znodes.DeployHalted {
					halted = e
					return true, nil
				}
			}
			return false, fmt.Errorf("queue %+v", q)
		})
		zktest.WaitFor(t, 30*time.Second, "halting machine back on v2", func() (bool, error) {
			err := c.converged("web", "2.0.0", v2ID, all())
			return err == nil, err
		})
		// Nobody else starts while halted: give them a poll interval to misbehave.
		settle := time.Now().Add(1500 * time.Millisecond)
		zktest.WaitFor(t, 5*time.Second, "a poll interval", func() (bool, error) { return time.Now().After(settle), nil })
		to := time.Now()
		var tried []string
		for m, vs := range c.w.Seen("web", from, to) {
			if vs["3.0.0-broken"] {
				tried = append(tried, m)
			}
		}
		if len(tried) != 1 || tried[0] != halted.Machine {
			t.Errorf("machines seen on 3.0.0-broken: %v, want exactly the halting machine %q\n%s", tried, halted.Machine, c.w.Dump("web", from, to))
		}
		if !strings.Contains(halted.Reason, "3.0.0-broken") {
			t.Errorf("halt reason %q does not name the version", halted.Reason)
		}
		c.checkSafety("web", from, to, 1)
		rb, err := coordinator.Rollback(context.Background(), c.conn, "", coordinator.PushOptions{By: "integration"})
		if err != nil {
			t.Fatal(err)
		}
		if rb.SpecID != v2ID {
			t.Fatalf("rollback went to %s, want v2 %s", spec.ShortID(rb.SpecID), spec.ShortID(v2ID))
		}
		c.waitConverged("rolled back to v2", v2ID, v2, all())
	})
	if !ok {
		return
	}
	t.Logf("broken version handled after %s", time.Since(began).Round(time.Millisecond))

	var v4ID string
	v4 := map[string]string{"store": "2.0.0", "web": "1.0.0"}
	ok = t.Run("kill -9 mid-upgrade leaves nobody else down; the rollout resumes", func(t *testing.T) {
		from := time.Now()
		v4ID = c.push(c.spec("v4", map[string]svcSpec{"store": storeV2, "web": {v: "v1", maxParallel: 1, minHealthy: 1500 * time.Millisecond}}))
		var victim string
		zktest.WaitFor(t, 60*time.Second, "a web machine down for its upgrade", func() (bool, error) {
			for name, m := range c.w.Now("web") {
				if m.Down {
					victim = name
					return true, nil
				}
			}
			return false, nil
		})
		killed := time.Now()
		c.signal(c.machines[victim], syscall.SIGKILL)
		t.Logf("killed agent %s mid-upgrade", victim)
		// Its session expires; its step record does not: it is still a
		// member mid-step, and nobody else may go down while it is dead.
		zktest.WaitFor(t, 20*time.Second, victim+"'s session to expire, its step record kept", func() (bool, error) {
			m := c.w.Now("web")[victim]
			return !m.Present && m.Down, nil
		})
		settle := time.Now().Add(2500 * time.Millisecond) // two poll intervals for the others to misbehave
		zktest.WaitFor(t, 5*time.Second, "two poll intervals", func() (bool, error) { return time.Now().After(settle), nil })
		if n, f := c.w.MaxUnavailable("web", killed, time.Now()); n > 1 {
			t.Errorf("%d web machines unavailable while %s was dead (at %s)\n%s", n, victim, f.At.Format("15:04:05.000"), c.w.Dump("web", from, time.Now()))
		}
		q, err := coordinator.ReadQueue(c.conn)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range q {
			if e.Service == "web" && e.State == znodes.DeployDone {
				t.Errorf("web entry done while member %s is dead mid-step", victim)
			}
		}
		c.start(c.machines[victim])
		c.waitConverged("every machine on v4 once the killed agent is back", v4ID, v4, all())
		to := time.Now()
		if n, _ := c.w.MaxDownMarkers("web", from, to); n > 1 {
			t.Errorf("web had %d down markers at once, max_parallel 1\n%s", n, c.w.Dump("web", from, to))
		}
		min := rules["web"].quorum.Min(nMachines)
		if n, f := c.w.MinAvailable("web", from, to); n < min-1 {
			t.Errorf("web: only %d available at %s\n%s", n, f.At.Format("15:04:05.000"), c.w.Dump("web", from, to))
		}
	})
	if !ok {
		return
	}
	t.Logf("kill -9 handled after %s", time.Since(began).Round(time.Millisecond))

	var v5ID string
	ok = t.Run("settings-only push reloads, restarts nothing", func(t *testing.T) {
		before := map[string]examplebuild.HelloStatus{}
		for _, name := range all() {
			for _, s := range services {
				h, err := c.hello(c.machines[name], s)
				if err != nil {
					t.Fatal(err)
				}
				before[s+"/"+name] = h
			}
		}
		v5ID = c.push(c.spec("v5-settings", map[string]svcSpec{"store": {v: "v2", settings: map[string]string{"greeting": "bonjour"}},
			"web": {v: "v1", maxParallel: 1, minHealthy: 1500 * time.Millisecond}}))
		c.waitConverged("settings applied", v5ID, v4, all())
		for _, name := range all() {
			for _, s := range services {
				h, err := c.hello(c.machines[name], s)
				if err != nil {
					t.Fatal(err)
				}
				b := before[s+"/"+name]
				if h.PID != b.PID {
					t.Errorf("%s/%s restarted: pid %d -> %d", s, name, b.PID, h.PID)
				}
				if s == "store" && (h.Reloads <= b.Reloads || h.Settings["greeting"] != "bonjour") {
					t.Errorf("store/%s: reloads %d -> %d, settings %v: want a reload with greeting=bonjour", name, b.Reloads, h.Reloads, h.Settings)
				}
				if s == "web" && h.Reloads != b.Reloads {
					t.Errorf("web/%s reloaded (%d -> %d) though its settings did not change", name, b.Reloads, h.Reloads)
				}
			}
		}
	})
	if !ok {
		return
	}

	t.Run("returning machine runs the most popular version while the rollout has not reached it", func(t *testing.T) {
		m5 := c.machines["m5"]
		c.signal(m5, syscall.SIGTERM)
		c.stopServices(m5)
		// A fresh machine: no local state. Under the parent test's temp dir,
		// so teardown still finds (and stops) the services it starts.
		m5.dir = c.t.TempDir()
		m5.log = filepath.Join(m5.dir, "agent.log")
		zktest.WaitFor(t, 20*time.Second, "m5 unregistered", func() (bool, error) {
			_, a := c.current("store")["m5"]
			_, b := c.current("web")["m5"]
			return !a && !b, nil
		})
		if err := coordinator.Pause(c.conn, "integration", "hold the rollout"); err != nil {
			t.Fatal(err)
		}
		v6ID := c.push(c.spec("v6", map[string]svcSpec{"store": {v: "v2", settings: map[string]string{"greeting": "bonjour"}},
			"web": {v: "v2", maxParallel: 1}}))
		c.start(m5)
		zktest.WaitFor(t, 60*time.Second, "m5 running web", func() (bool, error) {
			x, ok := c.current("web")["m5"]
			if !ok || !x.Healthy || x.State != znodes.StateRunning {
				return false, fmt.Errorf("%+v", x)
			}
			return true, nil
		})
		if x := c.current("web")["m5"]; x.Version != "1.0.0" {
			t.Errorf("returning m5 runs web %s, want the most popular 1.0.0 (HEAD's 2.0.0 is not reached: paused)", x.Version)
		}
		if h, err := c.hello(m5, "web"); err != nil || h.Version != "1.0.0" {
			t.Errorf("m5 web serves %+v (%v), want 1.0.0", h, err)
		}
		if _, err := coordinator.Resume(c.conn, "integration"); err != nil {
			t.Fatal(err)
		}
		c.waitConverged("all on v6 after resume", v6ID, v2, all())
	})
	t.Logf("total %s", time.Since(began).Round(time.Millisecond))
}
