package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"

	"dcroll/agent/supervise"
	"dcroll/distrib/mlock"
	"dcroll/spec"
	"dcroll/znodes"
)

// errRetry: re-read and decide again at once (lost a race, or created a
// missing node).
var errRetry = errors.New("re-read and decide again")

// worker runs one service on this machine: it boots the local version,
// then loops read snapshot -> Decide -> act, woken by watch nudges.
//
// Its state has two owners. The embedded *localState (local.go: state
// file, process, checker, health, phase, last decision, staged copy) has
// its own lock and is shared with the health loop, the registration
// payload and /status. The fields after it are the driver's and belong
// to the run loop (boot, run, and what they call) alone: no lock, and no
// other goroutine touches them (the staging and turn goroutines get what
// they need as arguments and answer on a channel).
type worker struct {
	rt      *runtime
	service string
	dir     string
	log     *slog.Logger
	nudge   chan struct{}

	*localState

	// pubMu orders publications of the /dc/current entry: the payload is
	// built and written under it, so a stale "healthy" never lands after a
	// newer "unhealthy".
	pubMu sync.Mutex
	// reg is this machine's registration, set once connected (read by
	// whoever publishes: the run loop and the health loop).
	reg atomic.Pointer[znodes.Registration]

	// Owned by the run loop.
	conn *znodes.Conn
	ws   *znodes.WatchSet
	gen  uint64
	// sessionReady: this session joined the service and re-established
	// an unfinished step's record; nothing else happens before.
	sessionReady bool
	turn         turnState
	stage        stageState
}

type turnState struct {
	pending bool
	cancel  context.CancelFunc
	res     chan turnResult
	held    *znodes.HeldTurn
}

type turnResult struct {
	held *znodes.HeldTurn
	err  error
}

type stageState struct {
	build  string // build being prepared
	entry  string // the deploy entry it is prepared for ("" when none)
	cancel context.CancelFunc
	res    chan stageResult
	done   *Release // prepared release
	node   string   // its staging znode ("" when not announced in this session)
	gen    uint64
}

type stageResult struct {
	rel *Release
	err error
}

func newWorker(rt *runtime, service string) (*worker, error) {
	dir := filepath.Join(rt.cfg.DataDir, service)
	for _, d := range []string{dir, filepath.Join(dir, "versions"), filepath.Join(dir, "logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("service %s: %w", service, err)
		}
	}
	st, err := LoadState(dir, service)
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", service, err)
	}
	return &worker{
		rt:         rt,
		service:    service,
		dir:        dir,
		log:        rt.log.With("service", service),
		nudge:      make(chan struct{}, 1),
		localState: newLocalState(dir, st, rt.cfg.HealthInterval, rt.now()),
	}, nil
}

func (w *worker) settingsPath() string { return filepath.Join(w.dir, "settings.json") }
func (w *worker) versionsDir() string  { return filepath.Join(w.dir, "versions") }
func (w *worker) logPath(r *Release) string {
	return filepath.Join(w.dir, "logs", r.Version+".log")
}

// commit changes the local state and writes state.json before returning:
// the crash-safety record of every step, and the only way the local state
// changes. On error nothing changed (on disk or in memory) and the caller
// stops: it must not act on a change whose commit failed.
func (w *worker) commit(change func(st *State)) error {
	if err := w.localState.commit(change, w.rt.now()); err != nil {
		w.log.Error("cannot write local state", "err", err)
		w.rt.metrics.stateErrors.Inc()
		return err
	}
	return nil
}

func (w *worker) setPhase(phase, detail string) {
	w.localState.setPhase(phase, detail, w.rt.now())
}

func (w *worker) setHealthy(h bool) {
	w.localState.setHealthy(h, w.rt.now())
	w.rt.metrics.healthy.WithLabelValues(w.service).Set(b2f(h))
}

// currentPayload is this machine's /dc/current/<service>/<machine> entry.
func (w *worker) currentPayload() ([]byte, error) {
	l := w.snapshot()
	c := znodes.Current{Machine: w.rt.cfg.Machine, Service: w.service, Rack: w.rt.cfg.Rack, DC: w.rt.cfg.DC, Labels: w.rt.cfg.Labels,
		State: l.Phase, Healthy: l.Healthy, Since: l.Since.UTC(), Detail: l.Detail, PID: l.PID}
	if r := l.Current; r != nil {
		c.Version, c.SpecID = r.Version, r.SpecID
	}
	return znodes.Encode(&c)
}

// publish rewrites the /dc/current entry from local state.
func (w *worker) publish() {
	w.pubMu.Lock()
	defer w.pubMu.Unlock()
	reg := w.reg.Load()
	if reg == nil {
		return // not connected yet: registered with the latest state later
	}
	b, err := w.currentPayload()
	if err == nil {
		err = reg.Update(b)
	}
	if err != nil {
		w.log.Warn("publish current state", "err", err)
	}
}

// publishClearing publishes the end of a step and deletes its step
// record in the same transaction: the turn holder waiting for this
// machine sees it available in one change. (Not connected: the record is
// cleared by the next loop's ClearDown.)
func (w *worker) publishClearing() {
	w.pubMu.Lock()
	defer w.pubMu.Unlock()
	reg := w.reg.Load()
	if reg == nil {
		return
	}
	b, err := w.currentPayload()
	if err == nil {
		err = reg.UpdateWith(b, znodes.DeleteOp(w.conn.Paths().DownMachine(w.service, w.rt.cfg.Machine), -1))
	}
	switch {
	case err == nil:
		w.log.Info("step record cleared")
	case errors.Is(err, zk.ErrNoNode):
	default:
		w.log.Warn("publish the end of the step", "err", err)
	}
}

// newSupervisor builds (not starts) the supervisor of r.
func (w *worker) newSupervisor(r *Release) (*supervise.Supervisor, supervise.Checker, error) {
	sup, err := supervise.New(supervise.Config{
		Dir: r.Dir, Run: r.Run, Service: w.service, Version: r.Version, Machine: w.rt.cfg.Machine,
		SettingsFile: w.settingsPath(), Data: r.Data, Env: w.rt.cfg.envFor(w.service),
		LogPath: w.logPath(r), Grace: w.rt.cfg.StopGrace,
		Logger: w.rt.base, Clock: w.rt.cfg.Clock,
	})
	if err != nil {
		return nil, nil, err
	}
	chk, err := sup.Checker(r.Health)
	if err != nil {
		return nil, nil, fmt.Errorf("health check of %s: %w", r.Version, err)
	}
	return sup, chk, nil
}

// startRelease writes r's settings and starts (or, with adopt, takes over
// from its PID file) r. Unsupervised processes of the service left by a
// killed agent are stopped first: only one instance may run.
func (w *worker) startRelease(ctx context.Context, r *Release, adopt bool) error {
	if err := supervise.WriteSettings(w.settingsPath(), r.Settings); err != nil {
		return fmt.Errorf("write settings of %s: %w", r.Version, err)
	}
	sup, chk, err := w.newSupervisor(r)
	if err != nil {
		return err
	}
	adopted := false
	if adopt {
		if adopted, err = sup.Adopt(); err != nil {
			return fmt.Errorf("adopt %s: %w", r.Version, err)
		}
	}
	keep := map[int]bool{}
	if adopted {
		keep[sup.PID()] = true
	}
	if pids := killOrphans(ctx, w.versionsDir(), keep, w.rt.cfg.StopGrace); len(pids) > 0 {
		w.log.Warn("stopped unsupervised processes of the service (left by a killed agent)", "pids", pids)
	}
	if !adopted {
		if err := sup.Start(); err != nil {
			return fmt.Errorf("start %s: %w", r.Version, err)
		}
	}
	w.setRunning(sup, chk)
	w.log.Info("service started", "version", r.Version, "pid", sup.PID(), "adopted", adopted)
	return nil
}

// stopCurrent stops the running process (SIGTERM, grace, SIGKILL).
func (w *worker) stopCurrent(ctx context.Context) {
	sup := w.takeRunning()
	if sup == nil {
		return
	}
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.rt.cfg.StopGrace+DefaultStopSlack)
	defer cancel()
	if err := sup.Stop(stopCtx); err != nil {
		w.log.Warn("stop service", "err", err)
	}
}

// waitHealthy waits until the running process of r has passed its checks
// for min_healthy, failing at the deadline or when the process exits (the
// health rule: supervise.Tracker).
func (w *worker) waitHealthy(ctx context.Context, r *Release) error {
	sup, chk := w.running()
	if sup == nil {
		return errors.New("not running")
	}
	minHealthy, deadline := healthTimes(r.Health)
	t := supervise.NewStepTracker(chk.String(), minHealthy, stepProbeInterval(minHealthy), deadline, w.rt.now())
	exited := sup.Exited()
	for {
		var err error
		gone := isClosed(exited)
		if !gone {
			err = chk.Check(ctx)
			gone = isClosed(exited)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("wait healthy: %w", ctx.Err())
		}
		now := w.rt.now()
		if healthy, _ := t.Observe(err, gone, now); healthy {
			return nil
		}
		if err := t.Failed(now); err != nil {
			return err
		}
		if !w.rt.sleep(ctx, t.Next(now), exited) && ctx.Err() != nil {
			return fmt.Errorf("wait healthy: %w", ctx.Err())
		}
	}
}

// boot starts the locally remembered version without ZooKeeper and
// finishes a step interrupted by kill -9 on a healthy version: the new
// build if it becomes healthy, else the previous one (recording the halt
// it owes). A step interrupted while reverting never goes back to the
// build that failed.
func (w *worker) boot(ctx context.Context) {
	l := w.snapshot()
	cur, prev, inflight := l.Current, l.Previous, l.InFlight
	if cur == nil {
		if inflight != nil { // an interrupted removal: already stopped
			if err := w.commit(func(st *State) { st.InFlight = nil }); err != nil {
				w.setPhase(znodes.StateFailed, "cannot record the end of the interrupted removal: "+err.Error())
				return
			}
		}
		w.log.Info("no local version; waiting for ZooKeeper to say what to run")
		return
	}
	w.setPhase(znodes.StateStarting, "boot")
	err := w.startRelease(ctx, cur, true)
	if err != nil {
		w.log.Error("boot: cannot start the remembered version", "version", cur.Version, "err", err)
		w.setPhase(znodes.StateFailed, err.Error())
		if inflight == nil {
			return
		}
	}
	if inflight == nil {
		return // the health loop reports it healthy
	}
	w.log.Warn("boot: finishing an interrupted step", "kind", inflight.Kind, "from", inflight.From, "to", inflight.To,
		"running", cur.Version, "reverting", inflight.Reverting)
	if err == nil {
		err = w.waitHealthy(ctx, cur)
	}
	if err != nil && !inflight.Reverting && prev != nil && prev.Build != cur.Build {
		w.log.Warn("boot: interrupted version is not healthy; going back", "version", cur.Version, "err", err, "back_to", prev.Version)
		reason := truncate(fmt.Sprintf("%s %s on %s: %v (step interrupted, finished at boot)", orDefault(inflight.Kind, StepUpgrade), cur.Version, w.rt.cfg.Machine, err), 300)
		bad := &znodes.BadBuild{Key: znodes.BadKey(cur.Build, ""), Service: w.service, Version: cur.Version, Build: cur.Build,
			Kind: StepUpgrade, SpecID: cur.SpecID, Reason: reason, Machine: w.rt.cfg.Machine, Entry: inflight.Entry, At: w.rt.now().UTC()}
		failed := cur
		// The revert is recorded before it begins: without the record a
		// kill -9 could boot the failed build again. No record, no revert
		// (the step stays in flight and the machine says why).
		if cerr := w.commit(func(st *State) {
			st.Current, st.Previous = prev, failed
			st.InFlight.Reverting = true
			if inflight.Entry != "" {
				st.PendingHalt = &PendingHalt{Entry: inflight.Entry, Reason: reason, Bad: bad}
			}
		}); cerr != nil {
			w.setPhase(znodes.StateFailed, "interrupted step: cannot record the revert: "+cerr.Error())
			return
		}
		w.stopCurrent(ctx)
		if err = w.startRelease(ctx, prev, true); err == nil {
			err = w.waitHealthy(ctx, prev)
		}
		cur = prev
	}
	if cerr := w.commit(func(st *State) { st.InFlight = nil }); cerr != nil {
		w.setPhase(znodes.StateFailed, "cannot record the end of the interrupted step: "+cerr.Error())
		return
	}
	if err != nil {
		w.setPhase(znodes.StateStarting, "not healthy: "+err.Error())
		return
	}
	w.setHealthy(true)
	w.setPhase(znodes.StateRunning, "")
	w.log.Info("boot: step finished", "version", cur.Version)
}

// healthLoop probes the running service (the health rule and its
// schedule: supervise.Tracker) and publishes health changes. A step owns the
// verdict while it runs.
func (w *worker) healthLoop(ctx context.Context) {
	for {
		if !w.rt.sleep(ctx, w.nextProbe(w.rt.now()), nil) {
			return
		}
		sup, chk, stepping := w.probeTarget()
		if stepping {
			continue
		}
		var err error
		exited := sup == nil || chk == nil || !sup.Running()
		if !exited {
			err = probe(ctx, chk)
		}
		if ctx.Err() != nil {
			return
		}
		healthy, changed, _ := w.observeHealth(sup, err, exited, w.rt.now())
		if changed {
			w.log.Info("health changed", "healthy", healthy)
			w.rt.metrics.healthy.WithLabelValues(w.service).Set(b2f(healthy))
			w.publish()
			nudge(w.nudge)
		}
	}
}

// run is the worker's loop once ZooKeeper is reachable.
func (w *worker) run(ctx context.Context, conn *znodes.Conn) error {
	w.conn = conn
	p := conn.Paths()
	reg := znodes.NewRegistration(conn, p.CurrentMachine(w.service, w.rt.cfg.Machine), w.currentPayload).
		WithMarker(p.UpMachine(w.service, w.rt.cfg.Machine), znodes.CurrentAvailable) // /dc/up: counted by turn holders
	w.reg.Store(reg)
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := reg.Run(ctx); err != nil {
			w.log.Error("registration ended", "err", err)
		}
	}()
	w.ws = znodes.NewWatchSet(ctx, conn.ZK(), w.nudge)
	w.gen = noSession
	poll := w.rt.ticker(ctx, w.rt.cfg.PollInterval)
	defer w.dropTurn()
	defer w.cancelStage()
	var lastErr string
	retries := 0
	for {
		if ctx.Err() != nil {
			return nil
		}
		state, gen, _ := conn.State()
		if state == znodes.Closed {
			return znodes.ErrClosed
		}
		if state != znodes.Connected {
			// Suspended or lost: start nothing new until a session is back.
			select {
			case <-conn.Changed():
			case <-ctx.Done():
			}
			continue
		}
		if gen != w.gen {
			w.newSession(gen)
		}
		if !w.sessionReady {
			w.sessionReady = w.establish() == nil
		}
		again, err := w.step(ctx)
		if err != nil && !errors.Is(err, errRetry) {
			if msg := err.Error(); msg != lastErr {
				w.log.Warn("rollout step failed; will retry", "err", err)
				lastErr = msg
			}
		} else {
			lastErr = ""
		}
		if again || errors.Is(err, errRetry) {
			if retries++; retries < 5 {
				continue
			}
		}
		retries = 0
		select {
		case <-ctx.Done():
		case <-w.nudge:
		case <-poll:
		case <-conn.Changed():
		case r := <-w.turn.res:
			w.onTurn(r)
		case r := <-w.stage.res:
			w.onStaged(r)
		}
	}
}

// newSession resets what a lost session took with it.
func (w *worker) newSession(gen uint64) {
	if w.gen != noSession {
		w.log.Warn("new zookeeper session: watches, turn and staging entry are gone; re-registering")
	}
	w.gen = gen
	w.ws.Reset()
	w.dropTurn()
	if w.stage.node != "" {
		// Gone with the old session, unless the server kept it alive after
		// we declared it lost: then it is ours again and must not linger.
		if ok, st, err := w.conn.ZK().Exists(w.stage.node); err == nil && ok && st.EphemeralOwner == w.conn.SessionID() {
			if err := w.conn.ZK().Delete(w.stage.node, -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
				w.log.Warn("delete the staging entry the old session left", "node", w.stage.node, "err", err)
			}
		}
		w.stage.node = ""
	}
	for _, d := range []string{w.conn.Paths().Current(w.service), w.conn.Paths().Down(w.service),
		w.conn.Paths().Staging(w.service), w.conn.Paths().Turns(w.service), w.conn.Paths().Members(w.service)} {
		if err := w.conn.EnsurePath(d); err != nil {
			w.log.Warn("ensure path", "path", d, "err", err)
		}
	}
	w.sessionReady = w.establish() == nil
}

// establish is what a new session does before anything else: join the
// service as a member, and re-create this machine's step record if a step
// (or a halt it owes) is unfinished and the record is missing.
func (w *worker) establish() error {
	if err := w.ensureMember(); err != nil {
		w.log.Warn("cannot join the service as a member; retrying", "err", err)
		return err
	}
	l := w.snapshot()
	inflight, halt := l.InFlight, l.PendingHalt
	if inflight == nil && halt == nil {
		return nil
	}
	p := w.conn.Paths().DownMachine(w.service, w.rt.cfg.Machine)
	d := znodes.Down{Machine: w.rt.cfg.Machine, Rack: w.rt.cfg.Rack, DC: w.rt.cfg.DC, Labels: w.rt.cfg.Labels, Token: newToken(), At: w.rt.now().UTC()}
	if inflight != nil {
		d.Kind, d.From, d.To, d.Entry = inflight.Kind, inflight.From, inflight.To, inflight.Entry
	} else {
		d.Entry = halt.Entry
	}
	if _, err := w.conn.Create(p, znodes.MustEncode(&d), 0); err != nil && !errors.Is(err, zk.ErrNodeExists) {
		w.log.Warn("cannot re-establish the step record; retrying", "err", err)
		return err
	}
	return nil
}

// noSession is the worker's session generation before the first session.
const noSession = ^uint64(0)

// step reads a snapshot, decides and acts once. again asks for an
// immediate re-read.
func (w *worker) step(ctx context.Context) (again bool, err error) {
	if !w.sessionReady {
		return false, errors.New("session not established yet (member record, step record)")
	}
	snap, m, err := w.read()
	if err != nil {
		return false, err
	}
	w.tidyStage(snap)
	snap.Local.Staged = w.stagedBuild()
	d := Decide(snap)
	w.record(d)
	return w.act(ctx, d, snap, m)
}

// waitingPrefix marks a Current.Detail that says why the machine waits.
const waitingPrefix = "waiting: "

func (w *worker) record(d Decision) {
	// Dashboards read /dc/current: say there why the machine waits.
	prev, changed := w.localState.record(d)
	if changed {
		w.publish()
	}
	if prev.Action != d.Action || prev.Reason != d.Reason || prev.Version != d.Version {
		lvl := slog.LevelInfo
		if d.Action == Wait && prev.Action == Wait {
			lvl = slog.LevelDebug
		}
		w.log.Log(context.Background(), lvl, "decision", "action", d.Action.String(), "version", d.Version, "reason", d.Reason)
		w.rt.metrics.decisions.WithLabelValues(w.service, d.Action.String()).Inc()
	}
}

// local is the Local part of a snapshot.
func (w *worker) local() Local {
	s := w.snapshot()
	// Supervised counts as running even while the supervisor restarts a
	// crashed process: starting it again would only add churn.
	l := Local{Healthy: s.Healthy, Running: s.Running, InFlight: s.InFlight, PendingHalt: s.PendingHalt, Known: s.knownVersions()}
	if r := s.Current; r != nil {
		l.Version, l.Build, l.SpecID, l.Settings = r.Version, r.Build, r.SpecID, r.Settings
	}
	return l
}

// act carries out a decision.
func (w *worker) act(ctx context.Context, d Decision, snap Snapshot, m meta) (bool, error) {
	switch d.Action {
	case Wait:
		return false, nil
	case TakeTurn:
		w.startTurn(ctx)
		return false, nil
	case SpendAndStep:
		if err := w.spend(snap, m, d); err != nil {
			return false, err
		}
		w.takeStep(ctx, snap, d)
		return true, nil
	}
	// Every other decision needs no turn.
	w.dropTurn()
	switch d.Action {
	case Stage:
		return false, w.startStage(ctx, d)
	case Adopt:
		return true, w.adopt(snap)
	case StartVersion:
		return true, w.startVersion(ctx, d)
	case MarkDone:
		return true, w.markDone(d)
	case ClearDown:
		return w.clearDown()
	case WriteHalt:
		return true, w.writeHalt()
	case ReleaseTurn:
		return true, nil
	}
	return false, nil
}

// --- turn ---

func (w *worker) holdsTurn() bool {
	if w.turn.held == nil {
		return false
	}
	select {
	case <-w.turn.held.Lost():
		w.log.Warn("turn lost with the session")
		w.turn.held = nil
		return false
	default:
		return true
	}
}

func (w *worker) startTurn(ctx context.Context) {
	if w.turn.pending || w.turn.held != nil {
		return
	}
	payload := znodes.MustEncode(&znodes.Turn{Machine: w.rt.cfg.Machine, Rack: w.rt.cfg.Rack, At: w.rt.now().UTC()})
	lock := znodes.NewTurnLock(w.conn, w.conn.Paths().Turns(w.service), payload)
	actx, cancel := context.WithCancel(ctx)
	res := make(chan turnResult, 1)
	w.turn = turnState{pending: true, cancel: cancel, res: res}
	w.log.Info("queueing for a turn")
	go func() {
		h, err := lock.Acquire(actx)
		res <- turnResult{held: h, err: err}
	}()
}

func (w *worker) onTurn(r turnResult) {
	w.turn.pending = false
	w.turn.cancel()
	if r.err != nil {
		if !errors.Is(r.err, context.Canceled) {
			w.log.Warn("turn not acquired", "err", r.err)
		}
		return
	}
	w.log.Info("turn held", "node", r.held.Path())
	w.turn.held = r.held
}

// dropTurn cancels a pending acquisition and releases a held turn.
func (w *worker) dropTurn() {
	if w.turn.pending {
		w.turn.cancel()
		w.onTurn(<-w.turn.res)
	}
	if h := w.turn.held; h != nil {
		w.turn.held = nil
		if err := h.Release(); err != nil {
			w.log.Warn("release turn", "err", err)
		} else {
			w.log.Info("turn released")
		}
	}
}

// --- staging ---

func (w *worker) stagedBuild() string {
	if w.stage.done == nil || w.stage.node == "" || w.stage.gen != w.gen {
		return ""
	}
	return w.stage.done.Build
}

func (w *worker) cancelStage() {
	if w.stage.cancel != nil {
		w.stage.cancel()
		w.onStaged(<-w.stage.res)
	}
}

func (w *worker) startStage(ctx context.Context, d Decision) error {
	if done := w.stage.done; done != nil && done.Version == d.Version && done.SpecID == d.SpecID {
		return w.announce() // prepared before; announce in this session
	}
	if w.stage.cancel != nil {
		if w.stage.build == d.SpecID+"/"+d.Version {
			return nil // in progress
		}
		w.cancelStage()
	}
	sctx, cancel := context.WithCancel(ctx)
	res := make(chan stageResult, 1)
	w.stage.build, w.stage.cancel, w.stage.res = d.SpecID+"/"+d.Version, cancel, res
	w.stage.entry = ""
	if d.Entry != nil {
		w.stage.entry = d.Entry.Node
	}
	w.log.Info("staging", "version", d.Version, "spec", spec.ShortID(d.SpecID))
	conn := w.conn
	w.rt.stagingJobs.Add(1)
	go func() {
		defer w.rt.stagingJobs.Add(-1)
		rel, err := w.prepare(sctx, conn, d.SpecID, d.Version)
		res <- stageResult{rel: rel, err: err}
	}()
	return nil
}

func (w *worker) onStaged(r stageResult) {
	w.stage.cancel()
	w.stage.cancel, w.stage.build = nil, ""
	entry := w.stage.entry
	w.stage.entry = ""
	if r.err != nil {
		if !errors.Is(r.err, context.Canceled) {
			w.log.Error("staging failed", "err", r.err)
			w.setPhaseDetail("staging failed: " + r.err.Error())
			if errors.Is(r.err, mlock.ErrBudget) || errors.Is(r.err, mlock.ErrLimit) {
				// Retrying cannot help until someone changes the machine.
				w.haltOwn(entry, truncate(fmt.Sprintf("cannot stage on %s: %v", w.rt.cfg.Machine, r.err), 300))
			}
		}
		return
	}
	if err := w.commit(func(st *State) { st.remember(r.rel) }); err != nil {
		return // staged again on the next decision
	}
	w.setStaged(r.rel)
	if err := w.announce(); err != nil {
		w.log.Warn("announce staged version", "err", err)
	}
}

func (w *worker) setPhaseDetail(detail string) {
	w.setDetail(detail)
	w.publish()
}

// announce creates this machine's staging entry for the prepared release.
func (w *worker) announce() error {
	r := w.stage.done
	if r == nil || (w.stage.node != "" && w.stage.gen == w.gen) {
		return nil
	}
	p := w.conn.Paths()
	data := znodes.MustEncode(&znodes.StagingEntry{Machine: w.rt.cfg.Machine, Rack: w.rt.cfg.Rack,
		Version: r.Version, SpecID: r.SpecID, At: w.rt.now().UTC()})
	node, err := w.conn.CreateProtected(p.StagingPrefixOf(w.service), data)
	if errors.Is(err, zk.ErrNoNode) {
		if err = w.conn.EnsurePath(p.Staging(w.service)); err == nil {
			node, err = w.conn.CreateProtected(p.StagingPrefixOf(w.service), data)
		}
	}
	if err != nil {
		return fmt.Errorf("announce staged %s: %w", r.Version, err)
	}
	w.stage.node, w.stage.gen = node, w.gen
	w.log.Info("staged", "version", r.Version, "node", node)
	nudge(w.nudge)
	return nil
}

// tidyStage removes the staging entry once it is pointless: this machine
// runs it, or HEAD moved to something else.
func (w *worker) tidyStage(snap Snapshot) {
	r := w.stage.done
	if r == nil {
		return
	}
	target := ""
	if snap.Head != nil {
		target = BuildID(snap.Head)
	}
	cur := w.snapshot().Current
	running := cur != nil && cur.Build == r.Build
	if r.Build == target && !running {
		return
	}
	if w.stage.node != "" && w.stage.gen == w.gen {
		if err := w.conn.ZK().Delete(w.stage.node, -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
			w.log.Warn("delete staging entry", "err", err)
			return
		}
	}
	w.setStaged(nil)
	w.keepBlobs()
}

// prepare fetches, verifies, locks and unpacks version of the service as
// defined by spec specID.
func (w *worker) prepare(ctx context.Context, conn *znodes.Conn, specID, version string) (*Release, error) {
	if specID == "" {
		return nil, fmt.Errorf("prepare %s: no spec defines it", version)
	}
	sp, err := w.rt.loadSpec(conn, specID)
	if err != nil {
		return nil, err
	}
	svc := sp.Services[w.service]
	if svc == nil {
		return nil, fmt.Errorf("prepare %s: spec %s has no service %s", version, spec.ShortID(specID), w.service)
	}
	if version != "" && svc.Version != version {
		return nil, fmt.Errorf("prepare %s: spec %s defines %s %s", version, spec.ShortID(specID), w.service, svc.Version)
	}
	f, err := w.rt.meteredFetcher()
	if err != nil {
		return nil, err
	}
	art, err := f.Fetch(ctx, svc.Artifact, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch artifact of %s %s: %w", w.service, svc.Version, err)
	}
	r := &Release{Version: svc.Version, Build: BuildID(svc), SpecID: specID, Run: svc.Run, Artifact: svc.Artifact,
		DataIDs: svc.Data, Health: svc.Health, Settings: svc.Settings, ReloadSignal: svc.ReloadSignal}
	for _, id := range svc.Data {
		var p string
		if fl, ok := f.(fetchLocker); ok && w.rt.cfg.MlockBudget >= 0 {
			// Data blobs are locked in memory: the budget and RLIMIT_MEMLOCK
			// are checked before downloading.
			p, _, err = fl.FetchLocked(ctx, id, nil)
		} else {
			p, err = f.Fetch(ctx, id, nil)
		}
		if err != nil {
			return nil, fmt.Errorf("fetch data of %s %s: %w", w.service, svc.Version, err)
		}
		r.Data = append(r.Data, p)
	}
	exe := ""
	if len(svc.Run) > 0 {
		exe = svc.Run[0]
	}
	r.Dir, err = supervise.Unpack(ctx, art, w.versionsDir(), svc.Version, exe)
	if err != nil {
		return nil, fmt.Errorf("unpack %s %s: %w", w.service, svc.Version, err)
	}
	return r, nil
}

// setStaged records the prepared release (not yet announced).
func (w *worker) setStaged(r *Release) {
	w.stage.done, w.stage.node = r, ""
	w.localState.setStaged(r)
}

// keepBlobs tells the fetcher which blobs this service still needs.
func (w *worker) keepBlobs() {
	w.rt.keepBlobs()
}

// ticker nudges the returned channel (buffer 1) every d on the agent's
// clock until ctx ends.
func (rt *runtime) ticker(ctx context.Context, d time.Duration) <-chan struct{} {
	ch := make(chan struct{}, 1)
	var mu sync.Mutex
	var t znodes.Timer
	var fire func()
	fire = func() {
		nudge(ch)
		mu.Lock()
		defer mu.Unlock()
		if ctx.Err() == nil {
			t = rt.cfg.Clock.AfterFunc(d, fire)
		}
	}
	mu.Lock()
	t = rt.cfg.Clock.AfterFunc(d, fire)
	mu.Unlock()
	context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		t.Stop()
	})
	return ch
}

// nudge wakes a loop waiting on ch (non-blocking; buffer 1).
func nudge(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
