package faults

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"dcroll/agent/supervise"
	"dcroll/coordinator"
	"dcroll/distrib"
	"dcroll/examples/examplebuild"
	"dcroll/integration/checker"
	"dcroll/integration/zkserver"
	"dcroll/integration/zktest"
	"dcroll/internal/sign"
	"dcroll/spec"
	"dcroll/znodes"
)

// Timings of every scenario: as fast as two shared cores allow.
const (
	// SessionTimeout is the most the test servers allow (20 ticks of 200ms).
	SessionTimeout = 4 * time.Second
	// MinHealthy and HealthDeadline are the specs' defaults (Svc overrides).
	MinHealthy     = 300 * time.Millisecond
	HealthDeadline = 4 * time.Second
	pollInterval   = time.Second
	healthInterval = 100 * time.Millisecond
	stopGrace      = time.Second
	probeInterval  = 150 * time.Millisecond
	// NoMembersAfter is the coordinator's --no-members-after.
	NoMembersAfter = 3 * time.Second
	// Converge bounds a rollout of both services on five machines.
	Converge = 60 * time.Second
)

// Racks places the five machines: r1 holds m1..m3, r2 holds m4 and m5.
var Racks = map[string]string{"m1": "r1", "m2": "r1", "m3": "r1", "m4": "r2", "m5": "r2"}

// Services every agent runs; web depends on store.
var Services = []string{"store", "web"}

// Rules are a service's rollout rules, shared by the specs a scenario
// pushes and by its checker.
type Rules struct {
	Quorum      spec.Quorum
	MaxParallel int
	DependsOn   []string
}

// DefaultRules: store quorum 3 max_parallel 1; web 60% max_parallel 2.
func DefaultRules() map[string]Rules {
	return map[string]Rules{
		"store": {Quorum: spec.Quorum{Count: 3}, MaxParallel: 1},
		"web":   {Quorum: spec.Quorum{Percent: 60}, MaxParallel: 2, DependsOn: []string{"store"}},
	}
}

// Builds of examples/hello published in every scenario, by short name.
var Builds = map[string]struct {
	Version string
	Broken  bool // /healthz always answers 500
}{
	"v1": {"1.0.0", false},
	"v2": {"2.0.0", false},
	"v3": {"3.0.0-broken", true},
	"v4": {"4.0.0", false},
}

// Version returns the version label of build b ("v2" -> "2.0.0").
func Version(b string) string { return Builds[b].Version }

// Agent log messages the suite waits for (JSON slog "msg" values).
const (
	MsgSpendDelay = "test hook: delaying spend"
	MsgSpent      = "budget spent"
	MsgStepBegins = "step begins"
	MsgStepDone   = "step done"
	MsgStepFailed = "step failed"
	MsgReverted   = "reverted"
)

// Test-hook environment variables of the agent process.
const (
	EnvUnsafeRules = "DCROLL_TEST_UNSAFE_RULES"
	EnvSpendDelay  = "DCROLL_TEST_SPEND_DELAY"
)

// Cluster is what sequential scenarios share: a three-node ZooKeeper
// ensemble, the dcroll binary and the example builds.
type Cluster struct {
	Ens       *zkserver.Ensemble
	bin       string
	artifacts map[string]string // build name -> tar.gz
	coordHelp string            // `dcroll coordinator --help`, to probe optional flags
}

// NewCluster builds dcroll (without -race) while the ensemble starts.
func NewCluster(t *testing.T) *Cluster {
	t.Helper()
	c := &Cluster{artifacts: map[string]string{}}
	dir := t.TempDir()
	c.bin = filepath.Join(dir, "dcroll")
	built := make(chan error, 1)
	go func() {
		out, err := exec.Command("go", "build", "-o", c.bin, "dcroll/cmd/dcroll").CombinedOutput()
		if err != nil {
			err = fmt.Errorf("go build dcroll/cmd/dcroll: %v\n%s", err, out)
		}
		built <- err
	}()
	c.Ens = zktest.StartEnsemble(t, 3)
	for _, b := range sortedKeys(Builds) {
		c.artifacts[b] = examplebuild.TarGzForTest(t, Builds[b].Version, Builds[b].Broken)
	}
	if err := <-built; err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command(c.bin, "coordinator", "--help").CombinedOutput()
	c.coordHelp = string(out)
	return c
}

// ConnectString names every ensemble member.
func (c *Cluster) ConnectString() string { return c.Ens.ConnectString() }

// KillLeader kill -9s the ensemble's leader and returns its index; it
// stays down until Heal.
func (c *Cluster) KillLeader(t *testing.T) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	i, err := c.Ens.WaitLeader(ctx)
	if err != nil {
		t.Fatalf("kill leader: %v", err)
	}
	if err := c.Ens.Servers[i].Kill(); err != nil {
		t.Logf("kill zookeeper leader %d: %v", i+1, err)
	}
	t.Logf("killed zookeeper leader (server %d)", i+1)
	return i
}

// LoseQuorum stops two of the three servers (the leader among them) for
// outage, then restarts them. The outage length is the fault itself
// (longer than SessionTimeout makes every client declare its session
// lost), not a wait for some state.
func (c *Cluster) LoseQuorum(t *testing.T, outage time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	lead, err := c.Ens.WaitLeader(ctx)
	cancel()
	if err != nil {
		t.Fatalf("lose quorum: %v", err)
	}
	victims := []int{lead, (lead + 1) % len(c.Ens.Servers)}
	for _, i := range victims {
		if err := c.Ens.Servers[i].Kill(); err != nil {
			t.Logf("kill zookeeper %d: %v", i+1, err)
		}
	}
	t.Logf("zookeeper quorum lost (servers %d and %d down) for %s", victims[0]+1, victims[1]+1, outage)
	timer := time.NewTimer(outage)
	<-timer.C
	c.Heal(t)
	t.Logf("zookeeper quorum back")
}

// Heal restarts every stopped server and waits for a leader.
func (c *Cluster) Heal(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i, s := range c.Ens.Servers {
		if s.Running() {
			select {
			case <-s.Done(): // crashed by itself: restart it too
			default:
				continue
			}
		}
		if err := s.Restart(ctx); err != nil {
			t.Errorf("restart zookeeper %d: %v", i+1, err)
		}
	}
	if _, err := c.Ens.WaitLeader(ctx); err != nil {
		t.Errorf("zookeeper ensemble: %v", err)
	}
}

// Options shape one scenario.
type Options struct {
	// AgentEnv is added to every agent process's environment (test hooks).
	AgentEnv []string
	// MachineEnv is added to one machine's agent.
	MachineEnv map[string][]string
	// Rules override DefaultRules (per service) for specs and checker.
	Rules map[string]Rules
	// ExtraServices are services in specs that no agent runs (rules
	// default to store's).
	ExtraServices []string
	// Racks places the scenario's machines (machine -> rack); default
	// Racks, the five machines of the fault matrix.
	Racks map[string]string
	// DCs places machines in data centers (machine -> dc); default dc1.
	DCs map[string]string
	// Trust are public key files every agent trusts (agent --trust): it
	// then runs only signed HEADs. Signer signs Bootstrap's push.
	Trust  []string
	Signer *sign.Signer
	// Secure: the scenario's tree is secured (dcroll init's SecureTree)
	// before anything runs; the operator's connection and the origin use
	// the release credential, the coordinator and the agents their own
	// (Scenario.Creds names the files).
	Secure bool
}

// Scenario is one row's world: its own root znode, origin, five agent
// processes (m1..m5), a coordinator process, the services' shared event
// log and a checker reading it.
type Scenario struct {
	C *Cluster
	// T is the test of the row being run (rows may share a scenario);
	// teardown logs to the test that created the scenario.
	T     *testing.T
	owner *testing.T
	// Shared: several rows use this scenario (each dumps it on failure).
	Shared   bool
	closed   sync.Once
	Name     string
	Root     string
	Dir      string
	Conn     *znodes.Conn // the operator's connection: push, pause, outcome
	Machines map[string]*Machine
	Checker  *checker.Checker
	EventLog string
	Rules    map[string]Rules
	// Creds are the credential files of a secured scenario, by role.
	Creds map[string]string

	opts   Options
	blobs  map[string]string // build name -> blob id
	ctx    context.Context
	cancel context.CancelFunc
	bg     sync.WaitGroup
	coord  *Daemon
	began  time.Time

	mu       sync.Mutex
	excused  map[[2]string]*excuse // {service, machine}
	report   *checker.Report
	dumped   bool
	lastMark string

	bootstrapped bool
}

// excuse is an instance the test broke; released: the test has repaired
// it and it is excused until it is healthy again.
type excuse struct{ released bool }

// NewScenario starts the scenario's world (agents not started yet).
func (c *Cluster) NewScenario(t *testing.T, name string, o Options) *Scenario {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Scenario{C: c, T: t, owner: t, Name: name, Root: "/dc-" + name, Dir: dir, Machines: map[string]*Machine{},
		EventLog: filepath.Join(dir, "events.log"), Rules: DefaultRules(), opts: o, blobs: map[string]string{},
		ctx: ctx, cancel: cancel, excused: map[[2]string]*excuse{}, began: time.Now()}
	for svc, r := range o.Rules {
		s.Rules[svc] = r
	}
	for _, svc := range o.ExtraServices {
		if _, ok := s.Rules[svc]; !ok {
			s.Rules[svc] = s.Rules["store"]
		}
	}
	t.Cleanup(s.Close)
	c.Heal(t)

	var auth []string
	if o.Secure {
		auth = []string{s.secure()}
	}
	conn, err := znodes.Dial(ctx, znodes.Options{Servers: c.ConnectString(), Root: s.Root, SessionTimeout: SessionTimeout,
		ConnectTimeout: 20 * time.Second, Logger: slog.New(slog.DiscardHandler), Auth: auth})
	if err != nil {
		t.Fatalf("dial zookeeper: %v", err)
	}
	s.Conn = conn
	if err := conn.EnsureSkeleton(); err != nil {
		t.Fatal(err)
	}
	s.startOrigin()

	var insts []checker.Instance
	racks := o.Racks
	if racks == nil {
		racks = Racks
	}
	for _, name := range sortedKeys(racks) {
		m := &Machine{s: s, Name: name, Rack: racks[name], Dir: filepath.Join(dir, name), Ports: map[string]int{},
			httpAddr: fmt.Sprintf("127.0.0.1:%d", zktest.FreePort(t))}
		m.Log = filepath.Join(m.Dir, "agent.log")
		if err := os.MkdirAll(m.Dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, svc := range Services {
			m.Ports[svc] = zktest.FreePort(t)
			insts = append(insts, checker.Instance{Service: svc, Machine: name, Rack: m.Rack,
				HealthURL: fmt.Sprintf("http://127.0.0.1:%d/healthz", m.Ports[svc])})
		}
		for _, srv := range c.Ens.Servers {
			p, err := zkserver.NewProxy(srv.Addr())
			if err != nil {
				t.Fatal(err)
			}
			m.proxies = append(m.proxies, p)
		}
		s.Machines[name] = m
	}
	rules := map[string]checker.Rules{}
	for _, svc := range Services { // only services with members: the others cannot be judged
		r := s.Rules[svc]
		rules[svc] = checker.Rules{QuorumCount: r.Quorum.Count, QuorumPercent: r.Quorum.Percent, MaxParallel: r.MaxParallel, DependsOn: r.DependsOn}
	}
	s.Checker, err = checker.Start(ctx, checker.Config{EventLog: s.EventLog, Instances: insts, Rules: rules, ProbeInterval: probeInterval})
	if err != nil {
		t.Fatalf("start checker: %v", err)
	}
	s.bg.Go(s.healer)
	s.StartCoordinator()
	return s
}

// secure secures the scenario's tree with fresh credentials, writes them
// to Dir/creds/ROLE.cred (mode 600) and returns the release credential.
func (s *Scenario) secure() string {
	t := s.T
	dir := filepath.Join(s.Dir, "creds")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	table := &znodes.ACLTable{Roles: map[string]string{}, By: "faults"}
	creds := map[string]string{}
	s.Creds = map[string]string{}
	for _, r := range znodes.Roles {
		cred, err := znodes.NewCredential(r)
		if err != nil {
			t.Fatal(err)
		}
		creds[r], table.Roles[r] = cred, znodes.DigestID(cred)
		s.Creds[r] = filepath.Join(dir, r+".cred")
		if err := os.WriteFile(s.Creds[r], []byte(cred+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	admin, err := znodes.Dial(s.ctx, znodes.Options{Servers: s.C.ConnectString(), Root: s.Root, SessionTimeout: SessionTimeout,
		ConnectTimeout: 20 * time.Second, Logger: slog.New(slog.DiscardHandler), Auth: []string{creds[znodes.RoleAdmin]}})
	if err != nil {
		t.Fatalf("dial zookeeper as admin: %v", err)
	}
	defer admin.Close()
	if _, err := admin.SecureTree(table); err != nil {
		t.Fatalf("secure %s: %v", s.Root, err)
	}
	return creds[znodes.RoleRelease]
}

func (s *Scenario) startOrigin() {
	t := s.T
	st, err := distrib.OpenStore(filepath.Join(s.Dir, "origin"))
	if err != nil {
		t.Fatal(err)
	}
	origin, err := distrib.NewOrigin(distrib.OriginConfig{Store: st, Conn: s.Conn, ListenAddr: "127.0.0.1:0",
		HTTPAddr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	s.bg.Go(func() {
		if err := origin.Run(s.ctx); err != nil && s.ctx.Err() == nil {
			t.Errorf("origin: %v", err)
		}
	})
	for _, b := range sortedKeys(Builds) {
		bs, err := distrib.Publish(s.ctx, s.Conn, st, []string{s.C.artifacts[b]}, distrib.PublishOptions{OriginURL: origin.URL()})
		if err != nil {
			t.Fatalf("publish %s: %v", b, err)
		}
		s.blobs[b] = bs[0].ID
	}
	origin.Nudge()
}

// StartCoordinator runs the `dcroll coordinator` daemon of the scenario.
func (s *Scenario) StartCoordinator() {
	args := []string{"--log-format", "json", "--zk", s.C.ConnectString(), "--root", s.Root}
	if s.opts.Secure {
		args = append(args, "--zk-auth", s.Creds[znodes.RoleCoordinator])
	}
	args = append(args, "coordinator",
		"--http", "127.0.0.1:0", "--tracker=false", "--session-timeout", SessionTimeout.String(), "--id", "coord-"+s.Name)
	if strings.Contains(s.C.coordHelp, "--no-members-after") {
		args = append(args, "--no-members-after", NoMembersAfter.String())
	}
	d, err := startDaemon(s.C.bin, args, nil, filepath.Join(s.Dir, "coordinator.log"))
	if err != nil {
		s.T.Fatal(err)
	}
	s.coord = d
}

// Bootstrap starts every agent, pushes v1 of both services and waits until
// it is rolled out and every instance serves it, then marks "bootstrapped".
func (s *Scenario) Bootstrap() string {
	s.T.Helper()
	for _, name := range sortedKeys(s.Machines) {
		s.Machines[name].Start()
	}
	id := s.MustPush(s.Spec("v1", map[string]Svc{"store": {Build: "v1"}, "web": {Build: "v1"}}), coordinator.PushOptions{Signer: s.opts.Signer})
	s.WaitCompleted(Converge)
	s.WaitServing(30*time.Second, map[string]string{"store": Version("v1"), "web": Version("v1")})
	s.Mark("bootstrapped")
	s.bootstrapped = true
	s.T.Logf("bootstrapped after %s", time.Since(s.began).Round(time.Millisecond))
	return id
}

// Mark marks the checker's timeline; a failure's dump judges since the
// last mark.
func (s *Scenario) Mark(label string) {
	s.Checker.Mark(label)
	s.mu.Lock()
	s.lastMark, s.report = label, nil
	s.mu.Unlock()
}

// Svc is one service of a test spec; zero fields take the defaults.
type Svc struct {
	Build       string // "v1", "v2", "v3" (broken), "v4"
	Settings    map[string]string
	MaxParallel int
	Quorum      *spec.Quorum
	MinHealthy  time.Duration
	Deadline    time.Duration
	Canary      *spec.Canary
	Domain      string      // spec domain
	Waves       *spec.Waves // spec waves
}

// Spec builds a valid spec; web depends on store when both are in it.
func (s *Scenario) Spec(name string, svcs map[string]Svc) *spec.Spec {
	s.T.Helper()
	sp := &spec.Spec{Name: name, Services: map[string]*spec.Service{}}
	for svc, x := range svcs {
		r := s.Rules[svc]
		q := r.Quorum
		if x.Quorum != nil {
			q = *x.Quorum
		}
		mp := r.MaxParallel
		if x.MaxParallel != 0 {
			mp = x.MaxParallel
		}
		sp.Services[svc] = &spec.Service{
			Version: Version(x.Build), Artifact: s.blobs[x.Build], Run: []string{"./bin/hello"},
			Health: &spec.Health{HTTP: "http://127.0.0.1:${DCROLL_PORT}/healthz", Timeout: spec.Duration{Duration: time.Second},
				MinHealthy: spec.Duration{Duration: or(x.MinHealthy, MinHealthy)}, Deadline: spec.Duration{Duration: or(x.Deadline, HealthDeadline)}},
			Quorum: q, MaxParallel: mp, Settings: x.Settings, Canary: x.Canary, Domain: x.Domain, Waves: x.Waves,
		}
	}
	for svc, x := range sp.Services {
		for _, dep := range s.Rules[svc].DependsOn {
			if _, ok := sp.Services[dep]; ok {
				x.DependsOn = append(x.DependsOn, dep)
			}
		}
	}
	sp.ApplyDefaults()
	if _, err := spec.FromCanonical(sp.Canonical()); err != nil {
		s.T.Fatalf("spec %s: %v", name, err)
	}
	return sp
}

func or(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Push pushes sp with o (By defaults to "faults").
func (s *Scenario) Push(sp *spec.Spec, o coordinator.PushOptions) (*coordinator.PushResult, error) {
	if o.By == "" {
		o.By = "faults"
	}
	return coordinator.Push(s.ctx, s.Conn, sp, o)
}

// MustPush pushes sp and returns its spec id. A push that lost a race
// (ErrConcurrentPush: nothing was changed) is retried, a few times.
func (s *Scenario) MustPush(sp *spec.Spec, o coordinator.PushOptions) string {
	s.T.Helper()
	res, err := s.Push(sp, o)
	for i := 0; i < 5 && errors.Is(err, coordinator.ErrConcurrentPush); i++ {
		s.T.Logf("push %s: %v; again", sp.Name, err)
		res, err = s.Push(sp, o)
	}
	if err != nil {
		s.T.Fatalf("push %s: %v", sp.Name, err)
	}
	s.T.Logf("pushed %s (%s)", sp.Name, spec.ShortID(res.SpecID))
	return res.SpecID
}

// Rollback moves HEAD back to toID ("" = previous).
func (s *Scenario) Rollback(toID string, o coordinator.PushOptions) (*coordinator.PushResult, error) {
	if o.By == "" {
		o.By = "faults"
	}
	return coordinator.Rollback(s.ctx, s.Conn, toID, o)
}

// Head returns HEAD's spec id.
func (s *Scenario) Head() string {
	h, _, err := coordinator.ReadHead(s.Conn)
	if err != nil || h == nil {
		return ""
	}
	return h.SpecID
}

// Outcome is the operator-visible state of the rollout: every entry done,
// or an entry halted (with its reason).
type Outcome struct {
	Completed bool
	Halted    *coordinator.QueueEntry
	Queue     []coordinator.QueueEntry
}

func (o Outcome) String() string {
	var parts []string
	for _, e := range o.Queue {
		p := fmt.Sprintf("%s %s %s", e.Service, e.Version, e.State)
		switch {
		case e.Reason != "" && e.Machine != "":
			p += fmt.Sprintf(" (%s, halted by %s)", e.Reason, e.Machine)
		case e.Reason != "":
			p += fmt.Sprintf(" (%s)", e.Reason)
		}
		parts = append(parts, p)
	}
	switch {
	case o.Completed:
		return "completed: " + strings.Join(parts, "; ")
	case o.Halted != nil:
		return "halted: " + strings.Join(parts, "; ")
	}
	return "unfinished: " + strings.Join(parts, "; ")
}

// ReadOutcome reads the deploy queue once.
func (s *Scenario) ReadOutcome() (Outcome, error) {
	q, err := coordinator.ReadQueue(s.Conn)
	if err != nil {
		return Outcome{}, err
	}
	o := Outcome{Queue: q, Completed: true}
	for i, e := range q {
		if e.State != znodes.DeployDone {
			o.Completed = false
		}
		if e.State == znodes.DeployHalted && e.Reason != "" && o.Halted == nil {
			o.Halted = &q[i]
		}
	}
	return o, nil
}

// WaitOutcome waits until the rollout completed or halted with a reason.
func (s *Scenario) WaitOutcome(timeout time.Duration) Outcome {
	s.T.Helper()
	var o Outcome
	zktest.WaitFor(s.T, timeout, "the rollout to complete or halt", func() (bool, error) {
		var err error
		o, err = s.ReadOutcome()
		if err != nil {
			return false, err
		}
		if o.Completed || o.Halted != nil {
			return true, nil
		}
		return false, errors.New(o.String())
	})
	return o
}

// WaitCompleted waits until every deploy entry is done.
func (s *Scenario) WaitCompleted(timeout time.Duration) {
	s.T.Helper()
	zktest.WaitFor(s.T, timeout, "the rollout to complete", func() (bool, error) {
		o, err := s.ReadOutcome()
		if err != nil {
			return false, err
		}
		if o.Completed {
			return true, nil
		}
		return false, errors.New(o.String())
	})
}

// WaitHalted waits until an entry is halted with a reason containing want.
func (s *Scenario) WaitHalted(timeout time.Duration, want string) coordinator.QueueEntry {
	s.T.Helper()
	var h coordinator.QueueEntry
	zktest.WaitFor(s.T, timeout, "the rollout to halt ("+want+")", func() (bool, error) {
		o, err := s.ReadOutcome()
		if err != nil {
			return false, err
		}
		if o.Halted != nil && strings.Contains(o.Halted.Reason, want) {
			h = *o.Halted
			return true, nil
		}
		return false, errors.New(o.String())
	})
	return h
}

// Never fails the test if bad returns true within d: an observation window
// ("nothing happens while ..."), polled every 50ms.
func (s *Scenario) Never(d time.Duration, what string, bad func() (bool, string)) {
	s.T.Helper()
	end := time.Now().Add(d)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(end) {
		if b, why := bad(); b {
			s.T.Fatalf("%s: %s", what, why)
		}
		<-tick.C
	}
}

// NotCompleted is a Never condition: the rollout completed.
func (s *Scenario) NotCompleted() (bool, string) {
	o, err := s.ReadOutcome()
	return err == nil && o.Completed, o.String()
}

// WaitServing waits until every instance's /healthz answers 200 with the
// given version per service (the services' own word, not ZooKeeper's).
func (s *Scenario) WaitServing(timeout time.Duration, versions map[string]string) {
	s.T.Helper()
	zktest.WaitFor(s.T, timeout, fmt.Sprintf("every instance serving %v", versions), func() (bool, error) {
		for _, name := range sortedKeys(s.Machines) {
			for svc, v := range versions {
				h, err := s.Machines[name].Hello(svc)
				if err != nil {
					return false, fmt.Errorf("%s/%s: %v", svc, name, err)
				}
				if h.Version != v || !h.Healthy {
					return false, fmt.Errorf("%s/%s serves %s healthy=%v", svc, name, h.Version, h.Healthy)
				}
			}
		}
		return true, nil
	})
}

// Judge asks the checker, logs the report and keeps it for teardown.
func (s *Scenario) Judge(e checker.Expect) checker.Report {
	r := s.Checker.Judge(e)
	s.mu.Lock()
	s.report = &r
	s.mu.Unlock()
	s.T.Logf("checker report:\n%s", r.String())
	return r
}

// Final says every machine ends on versions (service -> version).
func Final(versions map[string]string) map[string]map[string]string {
	out := map[string]map[string]string{}
	for svc, v := range versions {
		out[svc] = map[string]string{}
		for m := range Racks {
			out[svc][m] = v
		}
	}
	return out
}

// Event is one line of the services' event log.
type Event struct {
	At                        time.Time
	Service, Machine, Version string
	Kind                      string // up, unhealthy, down
	PID                       int
}

// Events reads the event log from byte offset since; it returns the
// events and the offset after the last complete line.
func (s *Scenario) Events(since int64) ([]Event, int64) {
	f, err := os.Open(s.EventLog)
	if err != nil {
		return nil, since
	}
	defer f.Close()
	if _, err := f.Seek(since, io.SeekStart); err != nil {
		return nil, since
	}
	var out []Event
	r := bufio.NewReader(f)
	off := since
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return out, off // an incomplete last line is read next time
		}
		off += int64(len(line))
		fs := strings.Fields(line)
		if len(fs) != 6 {
			continue
		}
		at, _ := time.Parse(time.RFC3339Nano, fs[0])
		pid, _ := strconv.Atoi(strings.TrimPrefix(fs[5], "pid="))
		out = append(out, Event{At: at, Service: fs[1], Machine: fs[2], Version: fs[3], Kind: fs[4], PID: pid})
	}
}

// EventMark is the event log's current size (for WaitEvent).
func (s *Scenario) EventMark() int64 {
	fi, err := os.Stat(s.EventLog)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// WaitEvent waits for an event after mark matching service, kind and
// version ("" matches any) and returns it.
func (s *Scenario) WaitEvent(mark int64, timeout time.Duration, service, kind, version string) Event {
	s.T.Helper()
	var got Event
	off := mark
	zktest.WaitFor(s.T, timeout, fmt.Sprintf("event %s %s %s", service, version, kind), func() (bool, error) {
		evs, next := s.Events(off)
		off = next
		for _, e := range evs {
			if (service == "" || e.Service == service) && (kind == "" || e.Kind == kind) && (version == "" || e.Version == version) {
				got = e
				return true, nil
			}
		}
		return false, nil
	})
	return got
}

// Tried returns the machines that ran version of service (any event) after mark.
func (s *Scenario) Tried(mark int64, service, version string) []string {
	evs, _ := s.Events(mark)
	set := map[string]bool{}
	for _, e := range evs {
		if e.Service == service && e.Version == version {
			set[e.Machine] = true
		}
	}
	return sortedKeys(set)
}

// LogMarks returns every agent log's current size.
func (s *Scenario) LogMarks() map[string]int64 {
	out := map[string]int64{}
	for name, m := range s.Machines {
		out[name] = m.LogMark()
	}
	return out
}

// WaitAnyLog waits until some agent logs msg (for service, "" = any)
// after its mark, and returns that machine and the record.
func (s *Scenario) WaitAnyLog(marks map[string]int64, timeout time.Duration, msg, service string) (*Machine, LogRecord) {
	s.T.Helper()
	var who *Machine
	var rec LogRecord
	offs := map[string]int64{}
	for k, v := range marks {
		offs[k] = v
	}
	zktest.WaitFor(s.T, timeout, fmt.Sprintf("an agent to log %q for %q", msg, service), func() (bool, error) {
		for _, name := range sortedKeys(s.Machines) {
			m := s.Machines[name]
			recs, next := m.Records(offs[name])
			offs[name] = next
			for _, r := range recs {
				if r.Match(msg, service) {
					who, rec = m, r
					return true, nil
				}
			}
		}
		return false, nil
	})
	return who, rec
}

// Excuse tells the checker the test broke this instance from now on.
func (s *Scenario) Excuse(service, machine string) {
	s.mu.Lock()
	s.excused[[2]string{service, machine}] = &excuse{}
	s.mu.Unlock()
	s.Checker.Excuse(service, machine, true)
}

// release: the test repaired the instance; the healer lifts the excuse
// once the instance's /healthz answers 200.
func (s *Scenario) release(service, machine string) {
	s.mu.Lock()
	if e := s.excused[[2]string{service, machine}]; e != nil {
		e.released = true
	}
	s.mu.Unlock()
}

// healer lifts released excuses once their instance is healthy.
func (s *Scenario) healer() {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
		}
		s.mu.Lock()
		var keys [][2]string
		for k, e := range s.excused {
			if e.released {
				keys = append(keys, k)
			}
		}
		s.mu.Unlock()
		for _, k := range keys {
			if h, err := s.Machines[k[1]].Hello(k[0]); err == nil && h.Healthy {
				s.mu.Lock()
				delete(s.excused, k)
				s.mu.Unlock()
				s.Checker.Excuse(k[0], k[1], false)
			}
		}
	}
}

// WaitExcusesLifted waits until every repaired instance is healthy again.
func (s *Scenario) WaitExcusesLifted(timeout time.Duration) {
	s.T.Helper()
	zktest.WaitFor(s.T, timeout, "repaired instances healthy again", func() (bool, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		var left []string
		for k := range s.excused {
			left = append(left, k[0]+"/"+k[1])
		}
		sort.Strings(left)
		if len(left) == 0 {
			return true, nil
		}
		return false, fmt.Errorf("still excused: %v", left)
	})
}

// Close tears the scenario down (also at the end of the test that
// created it): kill -9 the coordinator, agents and services, stop the
// checker, and on failure print what explains it.
func (s *Scenario) Close() { s.closed.Do(s.teardown) }

func (s *Scenario) teardown() {
	t := s.owner
	if s.Checker != nil {
		s.Checker.Stop() // what teardown kills is no rollout's doing
	}
	if s.coord != nil {
		s.coord.Kill()
	}
	// A scenario shared by rows is dumped by its failing rows; one's own
	// scenario when its test failed.
	failed := s.dumped || (!s.Shared && t.Failed())
	if failed && !s.dumped {
		s.Dump(t)
	}
	for _, name := range sortedKeys(s.Machines) {
		m := s.Machines[name]
		if failed {
			// A goroutine dump in the agent's log (kept with the logs): why
			// was it stuck?
			m.signal(syscall.SIGQUIT)
		}
		m.signal(syscall.SIGKILL)
		killUnder(m.Dir)
	}
	s.keepLogs()
	s.cancel()
	if s.Conn != nil {
		s.Conn.Close()
	}
	s.bg.Wait()
	for _, m := range s.Machines {
		for _, p := range m.proxies {
			p.Close()
		}
	}
	s.C.Heal(t)
}

// Dump logs to t what explains a failure: the checker report, the
// outcome, and the end of every log (copied to $DCROLL_IT_KEEP_LOGS/<name>
// if set).
func (s *Scenario) Dump(t testing.TB) {
	s.dumped = true
	s.mu.Lock()
	r, since := s.report, s.lastMark
	s.mu.Unlock()
	if r == nil && s.Checker != nil {
		rr := s.Checker.Judge(checker.Expect{Since: since})
		r = &rr
	}
	if r != nil {
		t.Logf("--- checker report ---\n%s", r.String())
	}
	if s.Conn != nil {
		if o, err := s.ReadOutcome(); err == nil {
			t.Logf("--- outcome: %s", o)
		}
	}
	for _, name := range sortedKeys(s.Machines) {
		m := s.Machines[name]
		t.Logf("--- last lines of agent %s ---\n%s", name, tail(m.Log, 30))
		if st := m.Status(); st != "" {
			t.Logf("--- /status of agent %s ---\n%s", name, st)
		}
	}
	t.Logf("--- last lines of the coordinator ---\n%s", tail(filepath.Join(s.Dir, "coordinator.log"), 15))
	t.Logf("--- last lines of the event log ---\n%s", tail(s.EventLog, 30))
	s.keepLogs()
}

// keepLogs copies the logs to $DCROLL_IT_KEEP_LOGS/<name> after a failure.
func (s *Scenario) keepLogs() {
	if keep := os.Getenv("DCROLL_IT_KEEP_LOGS"); keep != "" && s.dumped {
		dst := filepath.Join(keep, s.Name)
		_ = os.MkdirAll(dst, 0o755)
		copyFile(s.EventLog, filepath.Join(dst, "events.log"))
		copyFile(filepath.Join(s.Dir, "coordinator.log"), filepath.Join(dst, "coordinator.log"))
		for name, m := range s.Machines {
			copyFile(m.Log, filepath.Join(dst, name+".log"))
		}
	}
}

// Machine is one "machine": an agent process (started and stopped by the
// test) with its data dir, service ports and ZooKeeper proxies.
type Machine struct {
	s          *Scenario
	Name, Rack string
	Dir, Log   string
	Ports      map[string]int
	httpAddr   string
	proxies    []*zkserver.Proxy // one per ensemble member
	Env        []string          // extra agent env for the next Start

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	frozen bool
}

// Start runs the machine's agent.
func (m *Machine) Start() {
	t := m.s.T
	t.Helper()
	cfgPath := filepath.Join(m.Dir, "agent.yaml")
	if err := os.WriteFile(cfgPath, m.configYAML(), 0o644); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), m.s.opts.AgentEnv...)
	env = append(env, m.s.opts.MachineEnv[m.Name]...)
	env = append(env, m.Env...)
	d, err := startDaemon(m.s.C.bin, []string{"--log-format", "json", "--zk", m.zkAddr(), "--root", m.s.Root,
		"agent", "--config", cfgPath}, env, m.Log)
	if err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	m.cmd, m.done, m.frozen = d.cmd, d.done, false
	m.mu.Unlock()
}

func (m *Machine) zkAddr() string {
	addrs := make([]string, len(m.proxies))
	for i, p := range m.proxies {
		addrs[i] = p.Addr()
	}
	return strings.Join(addrs, ",")
}

func (m *Machine) configYAML() []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "machine: %s\nrack: %s\ndc: %s\ndata_dir: %q\nzk: %q\nroot: %q\n", m.Name, m.Rack, machineDC(m.s.opts, m.Name), filepath.Join(m.Dir, "data"), m.zkAddr(), m.s.Root)
	fmt.Fprintf(&b, "session_timeout: %s\npeer_listen: \"127.0.0.1:0\"\nhttp_addr: %q\nmlock_budget: %d\n", SessionTimeout, m.httpAddr, 64<<20)
	fmt.Fprintf(&b, "poll_interval: %s\nhealth_interval: %s\nstop_grace: %s\nservices:\n", pollInterval, healthInterval, stopGrace)
	for _, svc := range Services {
		fmt.Fprintf(&b, "  - %s\n", svc)
	}
	if m.s.opts.Secure {
		fmt.Fprintf(&b, "zk_auth: %q\n", m.s.Creds[znodes.RoleAgent])
	}
	if len(m.s.opts.Trust) > 0 {
		b.WriteString("trust:\n")
		for _, k := range m.s.opts.Trust {
			fmt.Fprintf(&b, "  - %q\n", k)
		}
	}
	fmt.Fprintf(&b, "env:\n  \"*\":\n    - %q\n", "HELLO_EVENT_LOG="+m.s.EventLog)
	for _, svc := range Services {
		fmt.Fprintf(&b, "  %s:\n    - %q\n", svc, fmt.Sprintf("DCROLL_PORT=%d", m.Ports[svc]))
	}
	return []byte(b.String())
}

// signal sends sig to the agent and, unless it is SIGSTOP/SIGCONT, waits
// for it to exit (SIGKILL after 20s).
func (m *Machine) signal(sig syscall.Signal) {
	m.mu.Lock()
	cmd, done, frozen := m.cmd, m.done, m.frozen
	if sig != syscall.SIGSTOP && sig != syscall.SIGCONT {
		m.cmd = nil
	}
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	if frozen && sig != syscall.SIGSTOP && sig != syscall.SIGKILL {
		_ = cmd.Process.Signal(syscall.SIGCONT)
	}
	_ = cmd.Process.Signal(sig)
	if sig == syscall.SIGSTOP || sig == syscall.SIGCONT {
		m.mu.Lock()
		m.frozen = sig == syscall.SIGSTOP
		m.mu.Unlock()
		return
	}
	timer := time.NewTimer(20 * time.Second)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		_ = cmd.Process.Kill()
		<-done
		m.s.T.Errorf("agent %s ignored %v for 20s", m.Name, sig)
	}
}

// Stop stops the agent (SIGTERM); its services keep running.
func (m *Machine) Stop() { m.signal(syscall.SIGTERM) }

// Kill kill -9s the agent; its services keep running.
func (m *Machine) Kill() {
	m.signal(syscall.SIGKILL)
	m.s.T.Logf("kill -9 agent %s", m.Name)
}

// Freeze SIGSTOPs the agent (its services keep serving); Thaw SIGCONTs it.
func (m *Machine) Freeze() {
	m.signal(syscall.SIGSTOP)
	m.s.T.Logf("froze agent %s", m.Name)
}

func (m *Machine) Thaw() {
	m.signal(syscall.SIGCONT)
	m.s.T.Logf("thawed agent %s", m.Name)
}

// Running reports whether the agent process is running (frozen counts).
func (m *Machine) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cmd != nil
}

// ServicePID reads the live PID of service from its PID files.
func (m *Machine) ServicePID(service string) (int, error) {
	files, _ := filepath.Glob(filepath.Join(m.Dir, "data", service, "versions", "*", supervise.PIDFileName))
	for _, f := range files {
		info, err := supervise.ReadPIDFile(f)
		if err != nil {
			continue
		}
		if ok, _ := info.Alive(); ok {
			return info.PID, nil
		}
	}
	return 0, fmt.Errorf("%s/%s: no live process in %d pid files", service, m.Name, len(files))
}

// KillService kill -9s the service process (excused until the agent has
// it healthy again).
func (m *Machine) KillService(service string) {
	t := m.s.T
	t.Helper()
	pid, err := m.ServicePID(service)
	if err != nil {
		t.Fatal(err)
	}
	m.s.Excuse(service, m.Name)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	m.s.release(service, m.Name)
	t.Logf("kill -9 %s/%s (pid %d)", service, m.Name, pid)
}

// Crash kills the whole machine: agent and services, kill -9. Its
// instances are excused until Recover brings them back healthy.
func (m *Machine) Crash() {
	for _, svc := range Services {
		m.s.Excuse(svc, m.Name)
	}
	m.signal(syscall.SIGKILL)
	killUnder(m.Dir)
	m.s.T.Logf("crashed machine %s", m.Name)
}

// Recover restarts a crashed machine's agent; the excuses of its
// instances are lifted once they are healthy.
func (m *Machine) Recover() {
	m.Start()
	for _, svc := range Services {
		m.s.release(svc, m.Name)
	}
	m.s.T.Logf("machine %s back", m.Name)
}

// Partition cuts the agent off ZooKeeper (its proxies black-hole);
// Reconnect ends the partition.
func (m *Machine) Partition() {
	for _, p := range m.proxies {
		p.Cut()
	}
}

func (m *Machine) Reconnect() {
	for _, p := range m.proxies {
		p.Restore()
	}
}

// ExpireSession partitions the agent until ZooKeeper has expired its
// session (its /agents registration is gone), then reconnects it.
func (m *Machine) ExpireSession() {
	t := m.s.T
	t.Helper()
	c := m.s.Conn
	p := c.Paths().Agent(m.Name)
	var owner int64
	zktest.WaitFor(t, 20*time.Second, m.Name+" registered", func() (bool, error) {
		ok, st, err := c.ZK().Exists(p)
		if ok {
			owner = st.EphemeralOwner
		}
		return ok && owner != 0, err
	})
	m.Partition()
	defer m.Reconnect()
	zktest.WaitFor(t, 3*SessionTimeout+10*time.Second, m.Name+"'s session to expire", func() (bool, error) {
		ok, st, err := c.ZK().Exists(p)
		return err == nil && (!ok || st.EphemeralOwner != owner), err
	})
	t.Logf("expired the session of agent %s", m.Name)
}

// Health is what an instance's /healthz answered.
type Health struct {
	Code     int               `json:"-"`
	Version  string            `json:"version"`
	Healthy  bool              `json:"healthy"`
	Settings map[string]string `json:"settings"`
	Reloads  int               `json:"reloads"`
	PID      int               `json:"pid"`
}

var probeClient = &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// Status is the agent's /status answer ("" if it does not answer),
// its last decisions and their reasons.
func (m *Machine) Status() string {
	if !m.Running() {
		return ""
	}
	resp, err := probeClient.Get("http://" + m.httpAddr + "/status")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4000))
	return string(b)
}

// WaitUnregistered waits until the agent's /agents registration is gone
// (after a kill -9: until ZooKeeper expired its session).
func (m *Machine) WaitUnregistered() {
	t := m.s.T
	t.Helper()
	p := m.s.Conn.Paths().Agent(m.Name)
	zktest.WaitFor(t, 3*SessionTimeout+10*time.Second, m.Name+" unregistered (session expired)", func() (bool, error) {
		ok, _, err := m.s.Conn.ZK().Exists(p)
		return err == nil && !ok, err
	})
}

// Hello asks service's /healthz on this machine; Healthy means 200 and
// the body says healthy.
func (m *Machine) Hello(service string) (Health, error) {
	var h Health
	resp, err := probeClient.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", m.Ports[service]))
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return h, fmt.Errorf("%s/%s /healthz: %w", service, m.Name, err)
	}
	h.Code = resp.StatusCode
	h.Healthy = h.Healthy && resp.StatusCode == http.StatusOK
	return h, nil
}

// LogRecord is one JSON log record of an agent.
type LogRecord map[string]any

// Str returns field k as a string.
func (r LogRecord) Str(k string) string {
	v, _ := r[k].(string)
	return v
}

// Match: msg contains msg, and the service is service ("" = any).
func (r LogRecord) Match(msg, service string) bool {
	return strings.Contains(r.Str("msg"), msg) && (service == "" || r.Str("service") == service)
}

// LogMark is the agent log's current size.
func (m *Machine) LogMark() int64 {
	fi, err := os.Stat(m.Log)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// Records parses the agent log's JSON records after offset since.
func (m *Machine) Records(since int64) ([]LogRecord, int64) {
	f, err := os.Open(m.Log)
	if err != nil {
		return nil, since
	}
	defer f.Close()
	if _, err := f.Seek(since, io.SeekStart); err != nil {
		return nil, since
	}
	r := bufio.NewReaderSize(f, 1<<16)
	off := since
	var out []LogRecord
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return out, off
		}
		off += int64(len(line))
		var rec LogRecord
		if json.Unmarshal([]byte(line), &rec) == nil {
			out = append(out, rec)
		}
	}
}

// WaitLog waits until the agent logs msg (for service, "" = any) after mark.
func (m *Machine) WaitLog(mark int64, timeout time.Duration, msg, service string) LogRecord {
	m.s.T.Helper()
	_, rec := m.s.WaitAnyLog(map[string]int64{m.Name: mark}, timeout, msg, service)
	return rec
}

// Daemon is a dcroll process the harness started.
type Daemon struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startDaemon(bin string, args, env []string, logPath string) (*Daemon, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s %v: %w", bin, args, err)
	}
	d := &Daemon{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(d.done)
	}()
	return d, nil
}

// Kill kill -9s the daemon and waits for it.
func (d *Daemon) Kill() {
	_ = d.cmd.Process.Kill()
	<-d.done
}

// killUnder kill -9s every process whose working directory is under dir:
// the services the scenario's agents started (they outlive their agents).
func killUnder(dir string) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err != nil {
			continue
		}
		if cwd == dir || strings.HasPrefix(cwd, dir+string(filepath.Separator)) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
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

func copyFile(src, dst string) {
	if b, err := os.ReadFile(src); err == nil {
		_ = os.WriteFile(dst, b, 0o644)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
