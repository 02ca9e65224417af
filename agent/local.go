package agent

import (
	"maps"
	"strings"
	"sync"
	"time"

	"dcroll/agent/supervise"
	"dcroll/znodes"
)

// localState is this machine's own state of one service: state.json, the
// process (its supervisor) and health checker, the health verdict, the
// phase published in /dc/current, the last decision and a copy of the
// staged release. It has its own lock: the run loop changes it, and the
// health loop, the registration payload (worker.currentPayload), /status
// and the blob garbage collector read it. Every reader outside its
// methods takes a value copy (snapshot); nothing else touches its fields
// (except runtime.shutdown in agent.go, which still takes sup under mu
// itself: takeRunning is that).
//
// Releases (*Release) are never changed once built: a change is a new
// Release, so they are shared by pointer; the State around them is
// replaced whole by commit.
type localState struct {
	dir string // <data-dir>/<service>: where state.json lives

	mu      sync.Mutex
	st      *State // as last written to state.json (commit)
	sup     *supervise.Supervisor
	checker supervise.Checker
	// health is the steady-state verdict (the health loop's, or the
	// step's when one ends).
	health   supervise.Tracker
	phase    string
	since    time.Time
	detail   string
	last     Decision
	stepping bool
	reloads  int
	staged   *Release // copy of the run loop's stage.done
}

// localSnapshot is a value copy of localState (see snapshot).
type localSnapshot struct {
	Current, Previous *Release
	InFlight          *Step        // a copy
	PendingHalt       *PendingHalt // a copy
	Known             map[string]*Release
	// Running: supervised (counts as running even while the supervisor
	// restarts a crashed process). PID and Restarts are the supervisor's.
	Running       bool
	PID, Restarts int
	Healthy       bool
	Phase, Detail string
	Since         time.Time
	Last          Decision
	Stepping      bool
	Reloads       int
	Staged        *Release
}

func newLocalState(dir string, st *State, healthInterval time.Duration, now time.Time) *localState {
	return &localState{dir: dir, st: st, health: supervise.NewTracker(minHealthyOf(st.Current), healthInterval),
		phase: znodes.StateStopped, since: now}
}

// snapshot returns a copy of the local state that later changes do not
// touch.
func (l *localState) snapshot() localSnapshot {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := localSnapshot{Current: l.st.Current, Previous: l.st.Previous, Known: maps.Clone(l.st.Known),
		Running: l.sup != nil, Healthy: l.health.Healthy(), Phase: l.phase, Detail: l.detail, Since: l.since,
		Last: l.last, Stepping: l.stepping, Reloads: l.reloads, Staged: l.staged}
	if f := l.st.InFlight; f != nil {
		c := *f
		s.InFlight = &c
	}
	if h := l.st.PendingHalt; h != nil {
		c := *h
		s.PendingHalt = &c
	}
	if l.sup != nil {
		st := l.sup.Status()
		s.PID, s.Restarts = st.PID, st.Restarts
	}
	return s
}

// knownVersions maps the known version labels whose unpacked directory
// still exists to their spec ids (Local.Known).
func (s localSnapshot) knownVersions() map[string]string {
	return (&State{Known: s.Known}).knownVersions()
}

// commit applies change to a copy of the state and writes it to
// state.json; only once it is written does it become the local state. On
// error nothing changed, on disk or in memory: the caller must not act on
// the change.
func (l *localState) commit(change func(st *State), now time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := l.st.clone()
	if change != nil {
		change(next)
	}
	next.prune(8)
	if err := next.Save(l.dir, now); err != nil {
		return err
	}
	l.st = next
	return nil
}

// running is the supervised process and its checker (nil: none).
func (l *localState) running() (*supervise.Supervisor, supervise.Checker) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sup, l.checker
}

// setRunning records a started (or adopted) process.
func (l *localState) setRunning(sup *supervise.Supervisor, chk supervise.Checker) {
	l.mu.Lock()
	l.sup, l.checker = sup, chk
	l.mu.Unlock()
}

// takeRunning forgets the supervised process and returns it, to be
// stopped or detached by the caller (nil: none).
func (l *localState) takeRunning() *supervise.Supervisor {
	l.mu.Lock()
	defer l.mu.Unlock()
	sup := l.sup
	l.sup, l.checker = nil, nil
	return sup
}

// rebuildChecker replaces the health checker by the one of health, built
// by the running supervisor (false: nothing runs). A checker that cannot
// be built leaves the old one (the error is returned).
func (l *localState) rebuildChecker(build func(sup *supervise.Supervisor) (supervise.Checker, error)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sup == nil {
		return nil
	}
	chk, err := build(l.sup)
	if err != nil {
		return err
	}
	l.checker = chk
	return nil
}

// setPhase sets the published phase and detail; since moves when the
// phase changes.
func (l *localState) setPhase(phase, detail string, now time.Time) {
	l.mu.Lock()
	if l.phase != phase {
		l.since = now
	}
	l.phase, l.detail = phase, detail
	l.mu.Unlock()
}

// setDetail sets the published detail only.
func (l *localState) setDetail(detail string) {
	l.mu.Lock()
	l.detail = detail
	l.mu.Unlock()
}

// setHealthy forces the health verdict (a step begins: false; a wait for
// health succeeded: true, healthy since now).
func (l *localState) setHealthy(h bool, now time.Time) {
	l.mu.Lock()
	l.health.Reset(h, now)
	l.mu.Unlock()
}

// setStepping marks a step in progress: the health loop leaves the
// verdict to the step meanwhile.
func (l *localState) setStepping(on bool) {
	l.mu.Lock()
	l.stepping = on
	l.mu.Unlock()
}

func (l *localState) addReload() {
	l.mu.Lock()
	l.reloads++
	l.mu.Unlock()
}

func (l *localState) setStaged(r *Release) {
	l.mu.Lock()
	l.staged = r
	l.mu.Unlock()
}

// record stores the last decision and says whether the published detail
// changed: a machine that waits says why (waitingPrefix + reason), and
// stops saying so once it no longer waits.
func (l *localState) record(d Decision) (prev Decision, detailChanged bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	prev, l.last = l.last, d
	detail := l.detail
	switch {
	case d.Action == Wait && !l.stepping:
		detail = waitingPrefix + d.Reason
	case strings.HasPrefix(l.detail, waitingPrefix):
		detail = ""
	}
	detailChanged = detail != l.detail
	l.detail = detail
	return prev, detailChanged
}

// probeTarget is what the health loop probes: nothing (nil) while a step
// owns the verdict.
func (l *localState) probeTarget() (sup *supervise.Supervisor, chk supervise.Checker, stepping bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sup, l.checker, l.stepping
}

// nextProbe is the delay before the health loop's next probe.
func (l *localState) nextProbe(now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stepping {
		return l.health.Interval()
	}
	return l.health.Next(now)
}

// observeHealth applies a probe of sup by the health loop (err its
// result, exited: sup is nil or not running). A probe overtaken by a step
// or by another process is dropped (applied false). A service that turns
// healthy while starting or failed is running.
func (l *localState) observeHealth(sup *supervise.Supervisor, err error, exited bool, now time.Time) (healthy, changed, applied bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stepping || l.sup != sup {
		return l.health.Healthy(), false, false
	}
	l.health.SetMinHealthy(minHealthyOf(l.st.Current))
	healthy, changed = l.health.Observe(err, exited, now)
	if changed && healthy && (l.phase == znodes.StateStarting || l.phase == znodes.StateFailed) {
		l.phase, l.since, l.detail = znodes.StateRunning, now, ""
	}
	return healthy, changed, true
}

// neededBlobs are the blobs of what runs and is staged (ids) and of the
// revert target (previous).
func (l *localState) neededBlobs() (ids, previous []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range []*Release{l.st.Current, l.staged} {
		if r != nil {
			ids = append(append(ids, r.Artifact), r.DataIDs...)
		}
	}
	if r := l.st.Previous; r != nil {
		previous = append(append(previous, r.Artifact), r.DataIDs...)
	}
	return ids, previous
}

// minHealthyOf is the min_healthy of the release r (0: none runs).
func minHealthyOf(r *Release) time.Duration {
	if r == nil {
		return 0
	}
	m, _ := healthTimes(r.Health)
	return m
}
