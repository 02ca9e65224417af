package checker

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"dcroll/examples/examplebuild"
	"dcroll/integration/zktest"
)

// fake is a health endpoint answering like hello: {"version": ...} with
// 200 or 500. Closed, it resets every connection (a dead instance); it
// keeps its port meanwhile, so no other test can take it.
type fake struct {
	addr string

	mu      sync.Mutex
	version string
	code    int
	closed  bool
}

func newFake(t *testing.T) *fake {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(zktest.FreePort(t))))
	if err != nil {
		t.Fatal(err)
	}
	f := &fake{addr: ln.Addr().String(), code: 200, closed: true}
	srv := &http.Server{Handler: f}
	served := make(chan struct{})
	go func() {
		srv.Serve(ln)
		close(served)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-served
	})
	return f
}

func (f *fake) url() string { return "http://" + f.addr + "/healthz" }

func (f *fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	v, code, closed := f.version, f.code, f.closed
	f.mu.Unlock()
	if closed {
		if c, _, err := w.(http.Hijacker).Hijack(); err == nil {
			c.(*net.TCPConn).SetLinger(0) // RST
			c.Close()
		}
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"version": v, "healthy": code == 200})
}

func (f *fake) set(version string, code int) {
	f.mu.Lock()
	f.version, f.code = version, code
	f.mu.Unlock()
}

func (f *fake) open() {
	f.mu.Lock()
	f.closed = false
	f.mu.Unlock()
}

func (f *fake) close() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
}

// probedSince reports whether a probe of service/machine that started
// after t has been recorded (so it saw whatever was done before t).
func (c *Checker) probedSince(service, machine string, t time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	ps := c.probes[c.index[key{service, machine}]]
	return len(ps) > 0 && ps[len(ps)-1].start.After(t)
}

// failedProbes lists the failed probes (for a failing test's log).
func (c *Checker) failedProbes() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for i, ps := range c.probes {
		for _, p := range ps {
			if !p.answered200() {
				fmt.Fprintf(&b, "%s/%s %s..%s (known %s): %s\n", c.cfg.Instances[i].Service, c.cfg.Instances[i].Machine,
					c.off(p.start), c.off(p.end), c.off(p.known), p.describe())
			}
		}
	}
	return b.String()
}

// scene is a checker over fake instances and a synthetic event log.
type scene struct {
	t       *testing.T
	log     string
	fakes   map[key]*fake
	current map[key]string // version each fake serves
	c       *Checker
}

// inst is "svc/machine@rack".
func parseInst(s string) (Instance, key) {
	name, rack, _ := strings.Cut(s, "@")
	svc, m, _ := strings.Cut(name, "/")
	return Instance{Service: svc, Machine: m, Rack: rack}, key{svc, m}
}

// newScene starts every instance (as "svc/m@rack" -> version: serving and
// logged up), starts the checker, waits for a probe of each and marks "go".
func newScene(t *testing.T, insts map[string]string, rules map[string]Rules) *scene {
	t.Helper()
	sc := &scene{t: t, log: filepath.Join(t.TempDir(), "events.log"), fakes: map[key]*fake{}, current: map[key]string{}}
	var cfg Config
	for spec, version := range insts {
		in, k := parseInst(spec)
		f := newFake(t)
		in.HealthURL = f.url()
		cfg.Instances = append(cfg.Instances, in)
		sc.fakes[k] = f
		sc.start(k, version)
	}
	cfg.EventLog, cfg.Rules, cfg.ProbeInterval = sc.log, rules, 10*time.Millisecond
	c, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	sc.c = c
	for k := range sc.fakes {
		sc.waitProbe(k, c.start)
	}
	c.Mark("go")
	return sc
}

func (sc *scene) logLine(line string) {
	sc.t.Helper()
	f, err := os.OpenFile(sc.log, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		sc.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(line + "\n"); err != nil {
		sc.t.Fatal(err)
	}
}

func (sc *scene) event(k key, version, ev string) {
	sc.logLine(fmt.Sprintf("%s %s %s %s %s pid=%d", now().UTC().Format(time.RFC3339Nano), k.service, k.machine, version, ev, 4242))
}

// start is a hello start: serving, then `up`.
func (sc *scene) start(k key, version string) {
	f := sc.fakes[k]
	f.set(version, 200)
	f.open()
	sc.current[k] = version
	sc.event(k, version, evUp)
}

// waitProbe waits until the checker probed k after t.
func (sc *scene) waitProbe(k key, t time.Time) {
	sc.t.Helper()
	zktest.WaitFor(sc.t, 10*time.Second, "a probe of "+k.String(), func() (bool, error) {
		return sc.c.probedSince(k.service, k.machine, t), nil
	})
}

// run executes a script, one step per line:
//
//	start svc/m V   serve V (200), then log up V       (a healthy start)
//	stop svc/m      log down, then close                (a clean stop)
//	kill svc/m      close, log nothing                  (SIGKILL)
//	serve svc/m V   serve V (200), log nothing
//	sick svc/m      log unhealthy, then answer 500
//	well svc/m      answer 200, then log up
//	log LINE        append LINE to the event log as is
//	excuse svc/m on|off
//	mark LABEL
//
// After every step it waits until every instance has been probed since
// (the min_healthy of a real agent): a probe cut short when an instance
// goes away counts from its start, so without the wait a probe of the
// next instance started during the previous step could overlap it.
func (sc *scene) run(script string) {
	sc.t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(script), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		var k key
		if len(f) > 1 {
			_, k = parseInst(f[1])
		}
		fk := sc.fakes[k]
		if fk == nil && f[0] != "log" && f[0] != "mark" {
			sc.t.Fatalf("step %q: no instance %s", line, k)
		}
		switch f[0] {
		case "start":
			sc.start(k, f[2])
		case "stop":
			sc.event(k, sc.current[k], evDown)
			fk.close()
		case "kill":
			fk.close()
		case "serve":
			fk.set(f[2], 200)
			fk.open()
			sc.current[k] = f[2]
		case "sick":
			sc.event(k, sc.current[k], evUnhealthy)
			fk.set(sc.current[k], 500)
		case "well":
			fk.set(sc.current[k], 200)
			sc.event(k, sc.current[k], evUp)
		case "log":
			sc.logLine(strings.TrimPrefix(line, "log "))
		case "excuse":
			sc.c.Excuse(k.service, k.machine, f[2] == "on")
		case "mark":
			sc.c.Mark(f[1])
		default:
			sc.t.Fatalf("unknown step %q", line)
		}
		sc.settle()
	}
}

// settle waits, twice, until every instance has been probed from now on.
// The first round lets a change be seen (a good probe clears a failure only
// at its end); the second makes every probe in flight at the next step
// start after that.
func (sc *scene) settle() {
	sc.t.Helper()
	for range 2 {
		t := now()
		for k := range sc.fakes {
			sc.waitProbe(k, t)
		}
	}
}

func TestRules(t *testing.T) {
	web3 := map[string]string{"web/m1@r1": "1.0.0", "web/m2@r2": "1.0.0", "web/m3@r3": "1.0.0"}
	sameRack := map[string]string{"web/m1@r1": "1.0.0", "web/m2@r1": "1.0.0", "web/m3@r2": "1.0.0"}
	dbAPI := map[string]string{"db/m1@r1": "1.0.0", "db/m2@r2": "1.0.0", "api/m1@r1": "1.0.0", "api/m2@r2": "1.0.0"}
	dbAPIRules := map[string]Rules{"db": {QuorumCount: 1}, "api": {QuorumCount: 1, DependsOn: []string{"db"}}}
	webV2 := map[string]string{"web": "2.0.0"}
	allV2 := map[string]map[string]string{"web": {"m1": "2.0.0", "m2": "2.0.0", "m3": "2.0.0"}}
	upgrade := func(insts ...string) string {
		var b strings.Builder
		for _, in := range insts {
			fmt.Fprintf(&b, "stop %s\nstart %s 2.0.0\n", in, in)
		}
		return b.String()
	}
	tests := []struct {
		name    string
		insts   map[string]string
		rules   map[string]Rules
		script  string
		expect  Expect
		want    []string // substrings of violations; none = OK
		notWant []string
		fig     map[string]Figures // checked if given
	}{
		{
			name:   "sequential rollout passes",
			insts:  web3,
			rules:  map[string]Rules{"web": {QuorumCount: 2}},
			script: upgrade("web/m1", "web/m2", "web/m3"),
			expect: Expect{Since: "go", Targets: webV2, Final: allV2, Bad: []string{"1.0.0"}},
			fig:    map[string]Figures{"web": {Service: "web", Members: 3, Quorum: 2, MinHealthy: 2, MaxUnhealthy: 1, MaxRacksUnhealthy: 1}},
		},
		{
			name:   "dependency order kept passes",
			insts:  dbAPI,
			rules:  dbAPIRules,
			script: upgrade("db/m1", "db/m2", "api/m1", "api/m2"),
			expect: Expect{Since: "go", Targets: map[string]string{"db": "2.0.0", "api": "2.0.0"}},
		},
		{
			name:   "quorum breach",
			insts:  sameRack,
			rules:  map[string]Rules{"web": {QuorumCount: 2, MaxParallel: 2}},
			script: "stop web/m1\nstop web/m2\nstart web/m1 2.0.0\nstart web/m2 2.0.0",
			expect: Expect{Since: "go"},
			// A probe in flight when the fake closes may fail just before
			// its `down` (the failure counts from the probe's start): that
			// adds a note to m1 or m2.
			want: []string{"web below quorum: 1 healthy < 2 of 3 members (not healthy: m1 (", "), m2 ("},
			fig:  map[string]Figures{"web": {Service: "web", Members: 3, Quorum: 2, MinHealthy: 1, MaxUnhealthy: 2, MaxRacksUnhealthy: 1}},
		},
		{
			name:    "two unhealthy with max parallel 1",
			insts:   sameRack,
			rules:   map[string]Rules{"web": {QuorumCount: 1}},
			script:  "stop web/m1\nsick web/m2\nstart web/m1 2.0.0\nwell web/m2",
			expect:  Expect{Since: "go"},
			want:    []string{"web max parallel: 2 unhealthy (not excused) > 1 (m1, m2)"},
			notWant: []string{"quorum", "racks"},
		},
		{
			name:    "two racks at once",
			insts:   web3,
			rules:   map[string]Rules{"web": {QuorumCount: 1, MaxParallel: 2}},
			script:  "stop web/m1\nstop web/m3\nstart web/m1 2.0.0\nstart web/m3 2.0.0",
			expect:  Expect{Since: "go"},
			want:    []string{`web racks: unhealthy instances (not excused) in 2 racks at once > 1 (rack "r1" (m1), rack "r3" (m3))`},
			notWant: []string{"quorum", "parallel"},
		},
		{
			name:   "dependency order breach",
			insts:  dbAPI,
			rules:  dbAPIRules,
			script: upgrade("db/m1", "api/m1", "db/m2", "api/m2"),
			expect: Expect{Since: "go", Targets: map[string]string{"db": "2.0.0", "api": "2.0.0"}},
			want:   []string{"api/m1 up on 2.0.0 (event log line", "before db was done: db not complete on 2.0.0: m2 (1.0.0 healthy)"},
			// api/m2 came up after db finished.
			notWant: []string{"api/m2"},
		},
		{
			name:   "wrong final version",
			insts:  web3,
			rules:  map[string]Rules{"web": {QuorumCount: 2}},
			script: upgrade("web/m1", "web/m2"),
			expect: Expect{Since: "go", Targets: webV2, Final: allV2},
			want:   []string{`web/m3 must serve 2.0.0 healthy: last probe: HTTP 200 version "1.0.0"`},
		},
		{
			name:   "bad version serving",
			insts:  web3,
			rules:  map[string]Rules{"web": {QuorumCount: 2}},
			script: "stop web/m1\nstart web/m1 3.0.0-broken\nsick web/m1",
			expect: Expect{Since: "go", Targets: map[string]string{"web": "3.0.0-broken"}, Bad: []string{"3.0.0-broken"}},
			want:   []string{"web/m1 serves bad version 3.0.0-broken (last probe: HTTP 500"},
		},
		{
			name:   "probe-detected outage without a log line",
			insts:  map[string]string{"web/m1@r1": "1.0.0", "web/m2@r2": "1.0.0"},
			rules:  map[string]Rules{"web": {QuorumCount: 2}},
			script: "kill web/m1\nserve web/m1 1.0.0",
			expect: Expect{Since: "go", Final: map[string]map[string]string{"web": {"m1": "1.0.0", "m2": "1.0.0"}}},
			// The first failed probe may be one cut by the close (EOF, reset).
			want: []string{"web below quorum: 1 healthy < 2 of 2 members (not healthy: m1 (probe: "},
		},
		{
			name:   "a version the log never showed",
			insts:  map[string]string{"web/m1@r1": "1.0.0", "web/m2@r2": "1.0.0"},
			rules:  map[string]Rules{"web": {QuorumCount: 2}},
			script: "serve web/m1 9.9.9",
			expect: Expect{Since: "go"},
			want:   []string{`m1 (probe: version "9.9.9", log says "1.0.0")`},
		},
		{
			name:    "excused instance counts for quorum, not for max parallel",
			insts:   web3,
			rules:   map[string]Rules{"web": {QuorumCount: 2}},
			script:  "excuse web/m1 on\nkill web/m1\nstop web/m2\nstart web/m2 2.0.0\nserve web/m1 1.0.0\nexcuse web/m1 off",
			expect:  Expect{Since: "go"},
			want:    []string{"web below quorum: 1 healthy < 2 of 3 members (not healthy: m1 (probe: ", "excused), m2 ("},
			notWant: []string{"parallel", "racks"},
			fig:     map[string]Figures{"web": {Service: "web", Members: 3, Quorum: 2, MinHealthy: 1, MaxUnhealthy: 1, MaxRacksUnhealthy: 1}},
		},
		{
			name:   "excused fault beside a rollout passes",
			insts:  web3,
			rules:  map[string]Rules{"web": {QuorumCount: 1}},
			script: "excuse web/m1 on\nkill web/m1\nstop web/m2\nstart web/m2 2.0.0\nserve web/m1 1.0.0\nexcuse web/m1 off",
			expect: Expect{Since: "go"},
			fig:    map[string]Figures{"web": {Service: "web", Members: 3, Quorum: 1, MinHealthy: 1, MaxUnhealthy: 1, MaxRacksUnhealthy: 1}},
		},
		{
			name:    "percent quorum of members",
			insts:   map[string]string{"web/m1@r1": "1.0.0", "web/m2@r1": "1.0.0", "web/m3@r1": "1.0.0", "web/m4@r1": "1.0.0"},
			rules:   map[string]Rules{"web": {QuorumPercent: 60, MaxParallel: 2}}, // ceil(2.4) = 3
			script:  "stop web/m1\nstart web/m1 2.0.0\nstop web/m2\nstop web/m3\nstart web/m2 2.0.0\nstart web/m3 2.0.0",
			expect:  Expect{Since: "go"},
			want:    []string{"web below quorum: 2 healthy < 3 of 4 members"},
			notWant: []string{"parallel"},
			fig:     map[string]Figures{"web": {Service: "web", Members: 4, Quorum: 3, MinHealthy: 2, MaxUnhealthy: 2, MaxRacksUnhealthy: 1}},
		},
		{
			name:   "parse errors are violations",
			insts:  map[string]string{"web/m1@r1": "1.0.0"},
			script: "log this is not an event\nlog 2025-01-01T00:00:00Z web m1 1.0.0 exploded pid=1\nlog 2025-01-01T00:00:00Z web m9 1.0.0 up pid=1\nlog 2025-01-01T00:00:00Z other m1 1.0.0 up pid=1",
			expect: Expect{Since: "go"},
			want:   []string{"event log line 2: want 6 space-separated fields", `event log line 3: unknown event "exploded"`, "event log line 4: web/m9 is not a member"},
		},
		{
			name:   "unknown mark",
			insts:  map[string]string{"web/m1@r1": "1.0.0"},
			expect: Expect{Since: "nope"},
			want:   []string{`no mark "nope"`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sc := newScene(t, tc.insts, tc.rules)
			sc.run(tc.script)
			rep := sc.c.Judge(tc.expect)
			t.Logf("report:\n%s", rep)
			defer func() {
				if t.Failed() {
					b, _ := os.ReadFile(sc.log)
					t.Logf("event log:\n%s\nfailed probes:\n%s", b, sc.c.failedProbes())
				}
			}()
			all := strings.Join(rep.Violations, "\n")
			if len(tc.want) == 0 && !rep.OK() {
				t.Errorf("violations, want none:\n%s", all)
			}
			for _, w := range tc.want {
				if !strings.Contains(all, w) {
					t.Errorf("no violation contains %q; violations:\n%s", w, all)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(all, w) {
					t.Errorf("a violation contains %q; violations:\n%s", w, all)
				}
			}
			for svc, want := range tc.fig {
				if got := rep.Services[svc]; got != want {
					t.Errorf("figures of %s = %+v, want %+v", svc, got, want)
				}
			}
		})
	}
}

// TestBreachCoalesced: one outage is one line, however many probes and
// instants it spans.
func TestBreachCoalesced(t *testing.T) {
	sc := newScene(t, map[string]string{"web/m1@r1": "1.0.0", "web/m2@r1": "1.0.0"}, map[string]Rules{"web": {QuorumCount: 2}})
	sc.run("kill web/m1")
	k := key{"web", "m1"}
	// Several more failed probes.
	for range 3 {
		sc.waitProbe(k, now())
	}
	sc.run("serve web/m1 1.0.0\nstop web/m2\nstart web/m2 1.0.0")
	rep := sc.c.Judge(Expect{Since: "go"})
	if len(rep.Violations) != 2 {
		t.Fatalf("want 2 violations (the kill, the stop), got:\n%s", rep)
	}
	if !strings.Contains(rep.Violations[0], "m1 (probe: ") || !strings.Contains(rep.Violations[1], "m2 (") || !strings.Contains(rep.Violations[1], "log: down") {
		t.Errorf("violations:\n%s", rep)
	}
}

// TestSinceAndFinish: a breach before the mark is not judged, but the state
// at the mark comes from earlier events; Finish counts from the mark.
func TestSinceAndFinish(t *testing.T) {
	sc := newScene(t, map[string]string{"web/m1@r1": "1.0.0", "web/m2@r2": "1.0.0"}, map[string]Rules{"web": {QuorumCount: 1}})
	sc.run("stop web/m1\nstop web/m2\nstart web/m1 1.0.0\nstart web/m2 1.0.0\nstop web/m2\nmark push")
	pushed := now()
	sc.run("start web/m2 2.0.0\nstop web/m1\nstart web/m1 2.0.0")
	rep := sc.c.Judge(Expect{Since: "push", Targets: map[string]string{"web": "2.0.0"}})
	if !rep.OK() {
		t.Errorf("violations before the mark were judged:\n%s", rep)
	}
	// m2 was down at the mark: from earlier events.
	if f := rep.Services["web"]; f.MinHealthy != 1 || f.MaxUnhealthy != 1 {
		t.Errorf("figures %+v", f)
	}
	if rep.Finish <= 0 || rep.Finish > time.Since(pushed)+time.Second {
		t.Errorf("Finish = %v", rep.Finish)
	}
	if all := sc.c.Judge(Expect{Since: "go"}); all.OK() {
		t.Errorf("judged from go: no violation, want the double stop:\n%s", all)
	}
}

// TestStopThenJudge: after Stop, Judge ends at the Stop; what happens later
// (a teardown) is not judged, and judging twice gives the same report.
func TestStopThenJudge(t *testing.T) {
	sc := newScene(t, map[string]string{"web/m1@r1": "1.0.0", "web/m2@r2": "1.0.0"}, map[string]Rules{"web": {QuorumCount: 2}})
	sc.c.Stop()
	sc.c.Stop()
	for k := range sc.fakes {
		sc.event(k, "1.0.0", evDown)
		sc.fakes[k].close()
	}
	e := Expect{Since: "go", Final: map[string]map[string]string{"web": {"m1": "1.0.0"}}}
	rep := sc.c.Judge(e)
	if !rep.OK() {
		t.Errorf("teardown after Stop judged:\n%s", rep)
	}
	if again := sc.c.Judge(e); again.String() != rep.String() {
		t.Errorf("second Judge:\n%s\nfirst:\n%s", again, rep)
	}
}

// TestMissingLog: no event log at all is a violation, and nobody is healthy.
func TestMissingLog(t *testing.T) {
	f := newFake(t)
	f.set("1.0.0", 200)
	f.open()
	c, err := Start(context.Background(), Config{EventLog: filepath.Join(t.TempDir(), "none.log"),
		Instances: []Instance{{Service: "web", Machine: "m1", HealthURL: f.url()}}, Rules: map[string]Rules{"web": {QuorumCount: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	rep := c.Judge(Expect{})
	all := strings.Join(rep.Violations, "\n")
	if !strings.Contains(all, "no such file") || !strings.Contains(all, "m1 (no event)") {
		t.Errorf("violations:\n%s", all)
	}
}

func TestStartValidates(t *testing.T) {
	ok := Instance{Service: "web", Machine: "m1", HealthURL: "http://127.0.0.1:1/healthz"}
	for name, cfg := range map[string]Config{
		"no log":       {Instances: []Instance{ok}},
		"no instances": {EventLog: "x"},
		"twice":        {EventLog: "x", Instances: []Instance{ok, ok}},
		"bad url":      {EventLog: "x", Instances: []Instance{{Service: "web", Machine: "m1", HealthURL: "127.0.0.1:1"}}},
		"space":        {EventLog: "x", Instances: []Instance{{Service: "web", Machine: "m 1", HealthURL: ok.HealthURL}}},
		"percent":      {EventLog: "x", Instances: []Instance{ok}, Rules: map[string]Rules{"web": {QuorumPercent: 101}}},
		"no members":   {EventLog: "x", Instances: []Instance{ok}, Rules: map[string]Rules{"db": {QuorumCount: 1}}},
	} {
		if c, err := Start(context.Background(), cfg); err == nil {
			c.Stop()
			t.Errorf("%s: Start accepted %+v", name, cfg)
		}
	}
}

// TestStopOnContext: probing ends with the context.
func TestStopOnContext(t *testing.T) {
	f := newFake(t)
	f.open()
	ctx, cancel := context.WithCancel(context.Background())
	c, err := Start(ctx, Config{EventLog: "x", Instances: []Instance{{Service: "web", Machine: "m1", HealthURL: f.url()}}})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	zktest.WaitFor(t, 10*time.Second, "stopped", func() (bool, error) { return c.isStopped(), nil })
}

// The merging rule on synthetic probes: times are milliseconds.
func TestTimeline(t *testing.T) {
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return base.Add(time.Duration(n) * time.Millisecond) }
	ev := func(at int, version, kind string) logEvent {
		return logEvent{at: ms(at), version: version, kind: kind, pid: 1}
	}
	good := func(from, to int, v string) probe { return probe{start: ms(from), end: ms(to), code: 200, version: v} }
	refused := func(from, to int) probe {
		return probe{start: ms(from), end: ms(to), known: ms(to), err: "connection refused"}
	}
	tests := []struct {
		name    string
		evs     []logEvent
		probes  []probe
		healthy map[int]bool // instant -> healthy
	}{
		{"log only", []logEvent{ev(10, "1", evUp), ev(50, "1", evDown)}, nil,
			map[int]bool{5: false, 10: true, 49: true, 50: false}},
		{"failed probe until the next good one ends",
			[]logEvent{ev(0, "1", evUp)}, []probe{good(5, 6, "1"), refused(10, 11), good(20, 21, "1")},
			map[int]bool{9: true, 10: false, 20: false, 21: true}},
		{"failed probe until the next event after it",
			[]logEvent{ev(0, "1", evUp), ev(15, "2", evUp)}, []probe{refused(10, 11), refused(20, 21)},
			map[int]bool{9: true, 10: false, 15: true, 19: true, 20: false, 99: false}},
		{"an event while the probe ran does not clear it",
			[]logEvent{ev(0, "1", evUp), ev(11, "1", evUp)}, []probe{refused(10, 12), good(20, 25, "1")},
			map[int]bool{11: false, 24: false, 25: true}},
		{"a good probe does not make a down instance healthy",
			[]logEvent{ev(0, "1", evDown)}, []probe{good(5, 6, "1")},
			map[int]bool{7: false}},
		{"a version the log did not show fails",
			[]logEvent{ev(0, "1", evUp)}, []probe{good(10, 11, "2"), good(20, 21, "1")},
			map[int]bool{9: true, 10: false, 21: true}},
		{"a version logged while the probe ran is fine",
			[]logEvent{ev(0, "1", evDown), ev(12, "2", evUp)}, []probe{good(10, 13, "2")},
			map[int]bool{12: true, 13: true}},
		{"a 500 and nothing after: not healthy for good",
			[]logEvent{ev(0, "1", evUp)}, []probe{{start: ms(10), end: ms(11), code: 500, version: "1"}},
			map[int]bool{10: false, 1000000: false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tl := buildTimeline(tc.evs, tc.probes, ms(1<<40))
			for at, want := range tc.healthy {
				if got := tl.at(ms(at)); got.healthy != want {
					t.Errorf("at %dms: %+v, want healthy=%t", at, got, want)
				}
			}
		})
	}
}

func TestReportString(t *testing.T) {
	r := Report{Services: map[string]Figures{"web": {Service: "web", Members: 3, Quorum: 2, MinHealthy: 2, MaxUnhealthy: 1, MaxRacksUnhealthy: 1}},
		Finish: 1234 * time.Millisecond, Violations: []string{"v1"}}
	s := r.String()
	for _, w := range []string{"service  members  quorum  min healthy", "web      3        2       2", "finish 1.234s, 1 violations", "  v1"} {
		if !strings.Contains(s, w) {
			t.Errorf("String() has no %q:\n%s", w, s)
		}
	}
	if r.OK() || !(Report{}).OK() {
		t.Error("OK wrong")
	}
}

// hello is a real examples/hello process of TestWithHello.
type hello struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

func startHello(t *testing.T, exe, machine string, port int, logPath, settings string) *hello {
	t.Helper()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), "DCROLL_PORT="+strconv.Itoa(port), "DCROLL_SERVICE=web", "DCROLL_MACHINE="+machine,
		"DCROLL_SETTINGS="+settings, "HELLO_EVENT_LOG="+logPath)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &hello{cmd: cmd, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(h.exited) }()
	t.Cleanup(func() { h.stop(t, syscall.SIGKILL) })
	return h
}

func (h *hello) stop(t *testing.T, sig syscall.Signal) {
	h.cmd.Process.Signal(sig)
	select {
	case <-h.exited:
	case <-time.After(20 * time.Second):
		t.Errorf("hello %d did not exit on %v", h.cmd.Process.Pid, sig)
	}
}

// TestWithHello runs the checker against real hello processes: a clean
// rolling upgrade passes; two SIGKILLs (which log nothing) and a reload to
// an unhealthy config are caught.
func TestWithHello(t *testing.T) {
	v1, v2 := examplebuild.ForTest(t, "1.0.0", false), examplebuild.ForTest(t, "2.0.0", false)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "events.log")
	machines := []string{"m1", "m2", "m3"}
	ports := map[string]int{}
	procs := map[string]*hello{}
	var insts []Instance
	for i, m := range machines {
		ports[m] = zktest.FreePort(t)
		insts = append(insts, Instance{Service: "web", Machine: m, Rack: fmt.Sprintf("r%d", i+1), HealthURL: fmt.Sprintf("http://127.0.0.1:%d/healthz", ports[m])})
	}
	settings := func(m string) string { return filepath.Join(dir, m+".json") }
	healthy := func(m, version string) { // this very process answers
		t.Helper()
		h := procs[m]
		zktest.WaitFor(t, 20*time.Second, m+" healthy on "+version, func() (bool, error) {
			select {
			case <-h.exited:
				t.Fatalf("hello %s exited (port %d taken?)", m, ports[m])
			default:
			}
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", ports[m]))
			if err != nil {
				return false, err
			}
			defer resp.Body.Close()
			var st struct {
				Version string
				PID     int
			}
			err = json.NewDecoder(resp.Body).Decode(&st)
			return resp.StatusCode == 200 && st.Version == version && st.PID == h.cmd.Process.Pid, err
		})
	}
	for _, m := range machines {
		procs[m] = startHello(t, v1, m, ports[m], logPath, settings(m))
		healthy(m, "1.0.0")
	}
	c, err := Start(context.Background(), Config{EventLog: logPath, Instances: insts,
		Rules: map[string]Rules{"web": {QuorumCount: 2}}, ProbeInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	probed := func(m string, after time.Time) {
		t.Helper()
		zktest.WaitFor(t, 10*time.Second, "a probe of "+m, func() (bool, error) { return c.probedSince("web", m, after), nil })
	}
	for _, m := range machines {
		probed(m, c.start)
	}
	c.Mark("push v2")
	settle := func() { // as scene.settle
		t.Helper()
		for range 2 {
			at := now()
			for _, m := range machines {
				probed(m, at)
			}
		}
	}
	for _, m := range machines {
		procs[m].stop(t, syscall.SIGTERM)
		procs[m] = startHello(t, v2, m, ports[m], logPath, settings(m))
		healthy(m, "2.0.0")
		settle()
	}
	all2 := map[string]map[string]string{"web": {"m1": "2.0.0", "m2": "2.0.0", "m3": "2.0.0"}}
	rep := c.Judge(Expect{Since: "push v2", Targets: map[string]string{"web": "2.0.0"}, Final: all2, Bad: []string{"1.0.0"}})
	t.Logf("rollout:\n%s", rep)
	if !rep.OK() || rep.Finish <= 0 || rep.Services["web"].MinHealthy != 2 {
		t.Errorf("clean rollout judged:\n%s", rep)
	}

	c.Mark("faults")
	procs["m1"].stop(t, syscall.SIGKILL)
	procs["m2"].stop(t, syscall.SIGKILL)
	settle()
	if err := os.WriteFile(settings("m3"), []byte(`{"healthy": "false"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	procs["m3"].cmd.Process.Signal(syscall.SIGHUP)
	zktest.WaitFor(t, 20*time.Second, "m3 unhealthy", func() (bool, error) {
		b, err := os.ReadFile(logPath)
		return strings.Contains(string(b), "web m3 2.0.0 unhealthy"), err
	})
	settle()
	rep = c.Judge(Expect{Since: "faults", Final: all2})
	t.Logf("faults:\n%s", rep)
	all := strings.Join(rep.Violations, "\n")
	for _, w := range []string{
		"web below quorum: 0 healthy < 2 of 3 members",
		"m1 (probe: ", "m2 (probe: ", "log: unhealthy",
		"web max parallel: 3 unhealthy",
		"web/m1 must serve 2.0.0 healthy: last probe: connection refused",
		"web/m3 must serve 2.0.0 healthy: last probe: HTTP 500",
	} {
		if !strings.Contains(all, w) {
			t.Errorf("no violation contains %q", w)
		}
	}
}
