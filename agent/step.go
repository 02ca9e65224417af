package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/go-zookeeper/zk"

	"dcroll/agent/supervise"
	"dcroll/spec"
	"dcroll/znodes"
)

// spend takes the budget for one step in one Multi: fenced by the turn
// node (deleted by the same Multi: the turn is given up with the spend,
// the step record guards the step), by the budget version read before the
// snapshot (the budget counts the entry's spends: its canaries) and by the
// versions of HEAD, the control node and the active entry that the
// decision read (so a pause, a halt or a push landing in between aborts
// it), marking a pending entry rolling, and creating this machine's
// persistent step record.
func (w *worker) spend(snap Snapshot, m meta, d Decision) error {
	p := w.conn.Paths()
	held := w.turn.held
	if held == nil {
		return errRetry
	}
	if m.budgetVersion < 0 {
		b := znodes.MustEncode(&znodes.Budget{Service: w.service, At: w.rt.now().UTC()})
		if _, err := w.conn.Create(p.Budget(w.service), b, 0); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			return fmt.Errorf("create budget node: %w", err)
		}
		return errRetry
	}
	if d.Kind == StepUpgrade && (w.stage.done == nil || w.stage.done.Build != BuildID(snap.Head)) {
		return errRetry
	}
	if d.Entry == nil || m.headVersion < 0 || m.controlVersion < 0 {
		return errRetry
	}
	if delay := w.rt.cfg.testSpendDelay; delay > 0 {
		w.log.Warn("test hook: delaying spend", "delay", delay.String())
		time.Sleep(delay)
	}
	now := w.rt.now().UTC()
	token := newToken()
	downPath := p.DownMachine(w.service, w.rt.cfg.Machine)
	e := d.Entry
	entryOp := any(znodes.CheckOp(p.DeployEntry(e.Node), e.ZVersion))
	if e.State == znodes.DeployPending {
		upd := e.DeployEntry
		upd.State, upd.Updated = znodes.DeployRolling, now
		entryOp = znodes.SetOp(p.DeployEntry(e.Node), znodes.MustEncode(&upd), e.ZVersion)
	}
	ops := []any{
		held.ReleaseOp(), // the turn is given up in the spend: the step record guards the step
		znodes.CheckOp(p.Head(), m.headVersion),
		znodes.CheckOp(p.Control(), m.controlVersion),
		entryOp,
		znodes.SetOp(p.Budget(w.service), znodes.MustEncode(ptr(snap.Budget.Spent(w.rt.cfg.Machine, e.Node, now))), m.budgetVersion),
		w.conn.CreateOp(downPath, znodes.MustEncode(&znodes.Down{Machine: w.rt.cfg.Machine, Rack: w.rt.cfg.Rack, DC: w.rt.cfg.DC, Labels: w.rt.cfg.Labels,
			Kind: d.Kind, From: snap.Local.Version, To: d.Version, Entry: e.Node, Token: token, At: now}), 0),
	}
	if _, err := w.conn.Multi(ops...); err != nil {
		switch {
		case errors.Is(err, zk.ErrBadVersion), errors.Is(err, zk.ErrNodeExists), errors.Is(err, zk.ErrNoNode):
			w.log.Info("spend fenced off (a peer, a pause, a halt or a push came first); deciding again", "err", err)
			return errRetry
		}
		// Unknown outcome (connection lost): applied iff the record holds our token.
		var got znodes.Down
		if _, gerr := w.conn.GetJSON(downPath, &got); gerr != nil || got.Token != token {
			return fmt.Errorf("spend budget: %w", err)
		}
	}
	held.Released()
	w.log.Info("budget spent", "kind", d.Kind, "from", snap.Local.Version, "to", d.Version, "reason", d.Reason)
	w.dropTurn()
	return nil
}

var errNotMember = errors.New("no member record")

func newToken() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// takeStep is one machine's step, after the budget is spent: an upgrade
// (stop the old build, start the staged one), a settings change (new
// settings file, reload signal) or a removal (stop). It waits until
// healthy for min_healthy within the deadline; on failure it records the
// halt it owes, reverts, and writes the halt before its step record goes.
// state.json is committed before every change; if it cannot be written the
// step does not begin.
func (w *worker) takeStep(ctx context.Context, snap Snapshot, d Decision) {
	ctx = context.WithoutCancel(ctx) // a step, once begun, is finished
	prev := w.snapshot().Current
	next, err := w.nextRelease(snap, d, prev)
	if err == nil {
		err = w.commit(func(st *State) {
			st.InFlight = &Step{Kind: d.Kind, From: versionOf(prev), To: d.Version, SpecID: d.SpecID, Entry: d.Entry.Node, Since: w.rt.now().UTC()}
			if d.Kind == StepUpgrade {
				st.Previous = prev
			}
			st.Current = next
			st.remember(next)
		})
	}
	if err != nil {
		// Nothing changed on the machine: give the budget back.
		w.log.Error("step not begun", "kind", d.Kind, "to", d.Version, "err", err)
		w.setPhaseDetail("step not begun: " + err.Error())
		if _, cerr := w.clearDown(); cerr != nil {
			w.log.Warn("clear step record", "err", cerr)
		}
		return
	}
	w.setStepping(true)
	defer w.setStepping(false)
	w.rt.metrics.stepBegan(w.service, w.rt.now())
	w.setHealthy(false)
	what := fmt.Sprintf("%s %s -> %s", d.Kind, versionOf(prev), orNone(d.Version))
	phase := znodes.StateUpgrading
	if d.Kind == StepRemove {
		phase = znodes.StateStopped
	}
	w.setPhase(phase, what)
	w.log.Info("step begins", "kind", d.Kind, "from", versionOf(prev), "to", d.Version)

	switch d.Kind {
	case StepRemove:
		w.stopPublishing(ctx)
		w.finish(func(st *State) { st.InFlight, st.Previous = nil, prev }, znodes.StateStopped, "removed from the spec")
		w.rt.metrics.stepDone(w.service, d.Kind, "removed", w.rt.now())
		return
	case StepSettings:
		w.publish()
		err = w.reload(next, snap.Head)
	default:
		w.stopPublishing(ctx)
		err = w.startRelease(ctx, next, false)
	}
	if err == nil {
		err = w.waitHealthy(ctx, next)
	}
	if err == nil {
		w.setHealthy(true)
		w.finish(func(st *State) { st.InFlight = nil }, znodes.StateRunning, "")
		w.rt.metrics.stepDone(w.service, d.Kind, "ok", w.rt.now())
		if d.Kind == StepSettings {
			w.addReload()
			w.rt.metrics.reloads.WithLabelValues(w.service).Inc()
		}
		w.log.Info("step done", "kind", d.Kind, "version", next.Version)
		return
	}
	w.revert(ctx, d, prev, next, err)
}

// stopPublishing stops the running process while the new phase is
// published: the step record (written by the spend) already makes the
// machine unavailable to every reader, so the stop need not wait for the
// registration's round trip.
func (w *worker) stopPublishing(ctx context.Context) {
	published := make(chan struct{})
	go func() {
		defer close(published)
		w.publish()
	}()
	w.stopCurrent(ctx)
	<-published
}

// nextRelease is what the step installs: the staged release (upgrade),
// the running one with HEAD's settings (settings), nothing (removal).
func (w *worker) nextRelease(snap Snapshot, d Decision, cur *Release) (*Release, error) {
	switch d.Kind {
	case StepRemove:
		return nil, nil
	case StepSettings:
		if cur == nil {
			return nil, errors.New("settings step: nothing running")
		}
		upd := *cur
		upd.Version, upd.SpecID = snap.Head.Version, snap.HeadID
		upd.Settings, upd.ReloadSignal, upd.Health = snap.Head.Settings, snap.Head.ReloadSignal, snap.Head.Health
		return &upd, nil
	}
	if w.stage.done == nil {
		return nil, errors.New("upgrade step: nothing staged")
	}
	return w.stage.done, nil
}

// reload writes r's settings and sends its reload signal to the running
// process (a settings step).
func (w *worker) reload(r *Release, svc *spec.Service) error {
	sup, _ := w.running()
	if sup == nil {
		return errors.New("reload: nothing running")
	}
	sigName := svc.ReloadSignal
	if sigName == "" {
		sigName = spec.DefaultReloadSignal
	}
	sig, err := supervise.ParseSignal(sigName)
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	if err := supervise.WriteSettings(w.settingsPath(), r.Settings); err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	w.rebuildChecker(r)
	if err := sup.Reload(sig); err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	w.log.Info("settings written; reload signal sent", "signal", sigName)
	return nil
}

// revert handles a failed step: the halt it owes is committed first (a
// kill -9 from here on boots prev and still writes the halt), then prev is
// started again, then the halt is written; the step record is cleared only
// after both. No record, no revert: if the commit fails the halt is still
// written (so no peer steps to the failing build) and the machine stays
// mid-step, failed, with its step record, as state.json says (the next
// agent finishes the step at boot).
func (w *worker) revert(ctx context.Context, d Decision, prev, next *Release, cause error) {
	reason := truncate(fmt.Sprintf("%s %s on %s: %v", d.Kind, orNone(d.Version), w.rt.cfg.Machine, cause), 300)
	w.log.Error("step failed; reverting and halting the rollout", "kind", d.Kind, "version", d.Version, "err", cause)
	bad := &znodes.BadBuild{Service: w.service, Version: next.Version, Build: next.Build, Kind: d.Kind,
		SpecID: next.SpecID, Reason: reason, Machine: w.rt.cfg.Machine, Entry: d.Entry.Node, At: w.rt.now().UTC()}
	bad.Key = znodes.BadKey(next.Build, "")
	if d.Kind == StepSettings {
		bad.Key = znodes.BadKey(next.Build, znodes.SettingsHash(next.Settings))
	}
	halt := &PendingHalt{Entry: d.Entry.Node, Reason: reason, Bad: bad}
	if err := w.commit(func(st *State) {
		st.PendingHalt = halt
		st.InFlight.Reverting = true
		st.Current = prev
		if d.Kind == StepUpgrade {
			st.Previous = next
		}
	}); err != nil {
		w.log.Error("step failed and its revert cannot be recorded: not reverting", "err", err)
		if herr := w.putHalt(halt); herr != nil {
			w.log.Error("halt not written either", "err", herr)
		}
		w.setPhase(znodes.StateFailed, truncate(reason+"; cannot record the revert: "+err.Error(), 300))
		w.publish()
		w.rt.metrics.stepDone(w.service, d.Kind, "failed", w.rt.now())
		return
	}
	w.setPhase(znodes.StateReverting, reason)
	w.publish()
	// Halt now, before the revert's health wait, so that no peer steps to
	// the failing build meanwhile; finish retries it if this attempt fails.
	if err := w.writeHalt(); err != nil {
		w.log.Warn("halt not written yet; retrying after the revert", "err", err)
	}
	w.stopCurrent(ctx)
	if prev == nil {
		w.finish(func(st *State) { st.InFlight = nil }, znodes.StateFailed, reason)
		w.rt.metrics.stepDone(w.service, d.Kind, "failed", w.rt.now())
		return
	}
	err := w.startRelease(ctx, prev, false)
	if err == nil {
		err = w.waitHealthy(ctx, prev)
	}
	if err != nil {
		// The step record stays: this machine is down for real.
		w.log.Error("revert failed: the previous version is not healthy either", "version", prev.Version, "err", err)
		w.finish(func(st *State) { st.InFlight = nil }, znodes.StateFailed, truncate("revert to "+prev.Version+" failed: "+err.Error(), 300))
		w.rt.metrics.stepDone(w.service, d.Kind, "failed", w.rt.now())
		return
	}
	w.setHealthy(true)
	w.finish(func(st *State) { st.InFlight = nil }, znodes.StateRunning, "reverted: "+reason)
	w.rt.metrics.stepDone(w.service, d.Kind, "reverted", w.rt.now())
	w.log.Warn("reverted", "version", prev.Version)
}

// finish ends a step: commits the local state, publishes the machine's
// entry, writes any halt it owes and, once that has landed, deletes the
// step record (the decision loop retries both if they fail now). If the
// end cannot be recorded the step record stays: state.json still says the
// step is in flight, and the next agent finishes it at boot.
func (w *worker) finish(change func(st *State), phase, detail string) {
	if err := w.commit(change); err != nil {
		w.log.Error("cannot record the end of the step; the step record stays and the next agent re-checks it at boot", "err", err)
		w.setPhase(znodes.StateFailed, truncate("cannot record the end of the step: "+err.Error(), 300))
		w.publish()
		if herr := w.writeHalt(); herr != nil {
			w.log.Error("halt not written yet", "err", herr)
		}
		nudge(w.nudge)
		return
	}
	w.setPhase(phase, detail)
	over := phase == znodes.StateRunning || phase == znodes.StateStopped
	if over && w.snapshot().PendingHalt == nil {
		w.publishClearing() // nothing owed: the record goes with the payload
		w.touchMember()
		nudge(w.nudge)
		return
	}
	w.publish()
	w.touchMember()
	if err := w.writeHalt(); err != nil {
		w.log.Error("halt not written yet; the step record stays until it is", "err", err)
		nudge(w.nudge)
		return
	}
	if over {
		if _, err := w.clearDown(); err != nil {
			w.log.Warn("clear step record", "err", err)
		}
	}
	nudge(w.nudge)
}

// writeHalt writes the halt this machine owes (state.json's PendingHalt):
// the entry halted (versioned read-modify-write; a missing, finished or
// already halted entry is left alone) and the bad-build record, in one
// Multi; then clears PendingHalt. Nothing owed: nil.
func (w *worker) writeHalt() error {
	h := w.snapshot().PendingHalt
	if h == nil {
		return nil
	}
	if err := w.putHalt(h); err != nil {
		return err
	}
	return w.commit(func(st *State) { st.PendingHalt = nil })
}

// putHalt writes the halt h to ZooKeeper: the entry halted and the
// bad-build record, in one Multi.
func (w *worker) putHalt(h *PendingHalt) error {
	p, zc := w.conn.Paths(), w.conn.ZK()
	for attempt := 0; ; attempt++ {
		if attempt == 20 {
			return fmt.Errorf("halt %s: too much contention", h.Entry)
		}
		var ops []any
		b, st, err := zc.Get(p.DeployEntry(h.Entry))
		switch {
		case errors.Is(err, zk.ErrNoNode):
		case err != nil:
			return fmt.Errorf("halt %s: %w", h.Entry, err)
		default:
			var e znodes.DeployEntry
			if err := znodes.Decode(b, &e); err != nil {
				return fmt.Errorf("halt %s: %w", h.Entry, err)
			}
			if e.State != znodes.DeployDone && e.State != znodes.DeployHalted {
				e.State, e.Reason, e.Machine, e.Updated = znodes.DeployHalted, h.Reason, w.rt.cfg.Machine, w.rt.now().UTC()
				ops = append(ops, znodes.SetOp(p.DeployEntry(h.Entry), znodes.MustEncode(&e), st.Version))
			}
		}
		if h.Bad != nil {
			ok, _, err := zc.Exists(p.Bad(h.Bad.Key))
			if err != nil {
				return fmt.Errorf("halt %s: %w", h.Entry, err)
			}
			if !ok {
				ops = append(ops, w.conn.CreateOp(p.Bad(h.Bad.Key), znodes.MustEncode(h.Bad), 0))
			}
		}
		if len(ops) > 0 {
			_, err = w.conn.Multi(ops...)
			if errors.Is(err, zk.ErrBadVersion) || errors.Is(err, zk.ErrNodeExists) || errors.Is(err, zk.ErrNoNode) {
				continue
			}
			if err != nil {
				return fmt.Errorf("halt %s: %w", h.Entry, err)
			}
			w.log.Warn("rollout halted", "entry", h.Entry, "reason", h.Reason)
		}
		return nil
	}
}

// haltOwn records that this machine's own entry must halt (a failure of
// the machine, not of a build: e.g. a data blob that cannot be locked).
func (w *worker) haltOwn(entry, reason string) {
	if entry == "" {
		return
	}
	if err := w.commit(func(st *State) { st.PendingHalt = &PendingHalt{Entry: entry, Reason: reason} }); err != nil {
		return
	}
	nudge(w.nudge)
}

// adopt records HEAD's spec id and version label for the build and
// settings already running (and takes over HEAD's health check and reload
// signal, which need no restart).
func (w *worker) adopt(snap Snapshot) error {
	cur := w.snapshot().Current
	if cur == nil {
		return errors.New("adopt: nothing running")
	}
	upd := *cur
	upd.Version, upd.SpecID, upd.Health, upd.ReloadSignal = snap.Head.Version, snap.HeadID, snap.Head.Health, snap.Head.ReloadSignal
	if err := w.commit(func(st *State) { st.Current = &upd; st.remember(&upd) }); err != nil {
		return fmt.Errorf("adopt: %w", err)
	}
	w.rebuildChecker(&upd)
	w.publish()
	w.touchMember()
	w.log.Info("adopted HEAD", "version", upd.Version, "spec", spec.ShortID(snap.HeadID))
	return nil
}

// rebuildChecker takes over r's health check for the running process.
func (w *worker) rebuildChecker(r *Release) {
	err := w.localState.rebuildChecker(func(sup *supervise.Supervisor) (supervise.Checker, error) { return sup.Checker(r.Health) })
	if err != nil {
		w.log.Warn("health check of HEAD unusable; keeping the old one", "err", err)
	}
}

// startVersion starts a version on a machine that serves nothing (the
// returning-machine rule), preparing it first if needed.
func (w *worker) startVersion(ctx context.Context, d Decision) error {
	rel, err := w.releaseFor(ctx, d.SpecID, d.Version)
	if err != nil {
		w.setPhaseDetail("cannot start " + d.Version + ": " + err.Error())
		return err
	}
	// Recorded before anything stops: a kill -9 from here on boots rel.
	if err := w.commit(func(st *State) {
		if c := st.Current; c != nil && c.Build != rel.Build {
			st.Previous = c
		}
		st.Current = rel
		st.remember(rel)
	}); err != nil {
		return fmt.Errorf("start %s: %w", rel.Version, err)
	}
	w.stopCurrent(ctx)
	w.setHealthy(false)
	w.setPhase(znodes.StateStarting, d.Reason)
	w.publish()
	w.log.Info("starting", "version", rel.Version, "reason", d.Reason)
	if err := w.startRelease(ctx, rel, true); err != nil {
		w.setPhase(znodes.StateFailed, err.Error())
		w.publish()
		return err
	}
	if err := w.waitHealthy(ctx, rel); err != nil {
		w.log.Warn("started version not healthy yet", "version", rel.Version, "err", err)
		w.setPhase(znodes.StateFailed, truncate(err.Error(), 300))
		w.publish()
		return nil
	}
	w.setHealthy(true)
	w.setPhase(znodes.StateRunning, "")
	w.publish()
	w.touchMember()
	return nil
}

// releaseFor returns the release of version from spec specID: the local
// copy when it is the same build, else a freshly prepared one.
func (w *worker) releaseFor(ctx context.Context, specID, version string) (*Release, error) {
	known := w.snapshot().Known[version]
	if known != nil {
		if allExist(append([]string{known.Dir}, known.Data...)) {
			if specID == "" || specID == known.SpecID {
				return known, nil
			}
			if sp, err := w.rt.loadSpec(w.conn, specID); err == nil {
				if svc := sp.Services[w.service]; svc != nil && BuildID(svc) == known.Build {
					r := *known
					r.SpecID, r.Settings, r.Health, r.ReloadSignal = specID, svc.Settings, svc.Health, svc.ReloadSignal
					return &r, nil
				}
			}
		}
	}
	return w.prepare(ctx, w.conn, specID, version)
}

// markDone marks a complete entry done, conditional on the version read
// (losing to another marker, or to a push, is not an error: re-read).
func (w *worker) markDone(d Decision) error {
	ok, err := w.conn.SetEntry(*d.Entry, func(e *znodes.DeployEntry) { e.State, e.Updated = znodes.DeployDone, w.rt.now().UTC() })
	if ok {
		w.log.Info("rollout entry done", "entry", d.Entry.Node, "version", d.Entry.Version)
	}
	return err
}

// clearDown deletes this machine's step record (persistent: whichever
// session created it).
func (w *worker) clearDown() (again bool, err error) {
	p, zc := w.conn.Paths().DownMachine(w.service, w.rt.cfg.Machine), w.conn.ZK()
	ok, st, err := zc.Exists(p)
	if err != nil {
		return false, fmt.Errorf("clear step record: %w", err)
	}
	if !ok {
		return true, nil
	}
	if err := zc.Delete(p, st.Version); err != nil && !errors.Is(err, zk.ErrNoNode) {
		return false, fmt.Errorf("clear step record: %w", err)
	}
	w.log.Info("step record cleared")
	return true, nil
}

// ensureMember creates this machine's persistent member record of the
// service if it is missing, bumping the budget version in the same Multi
// so that a spend decided without this member is fenced off. Known gap:
// a push creating the budget node between the Exists and the Multi leaves
// that one join unfenced (a window of one round trip at the first push).
func (w *worker) ensureMember() error {
	p := w.conn.Paths()
	ok, _, err := w.conn.ZK().Exists(p.Member(w.service, w.rt.cfg.Machine))
	if err != nil || ok {
		return err
	}
	if err := w.conn.EnsurePath(p.Members(w.service)); err != nil {
		return err
	}
	now := w.rt.now().UTC()
	version := versionOf(w.snapshot().Current)
	m := znodes.Member{Machine: w.rt.cfg.Machine, Service: w.service, Rack: w.rt.cfg.Rack, DC: w.rt.cfg.DC, Labels: w.rt.cfg.Labels,
		Joined: now, Version: version, Seen: now}
	// The budget set keeps the budget's canary count and is versioned: a
	// spend or another machine joining in between makes it fail, and the
	// join is tried again at once with the new version (a fleet joins all
	// at once at its first start). No budget node yet: no spend has read a
	// version to fence (the push creates it; an agent creating it too
	// would race the push).
	for range joinAttempts {
		ops := []any{w.conn.CreateOp(p.Member(w.service, w.rt.cfg.Machine), znodes.MustEncode(&m), 0)}
		var budget znodes.Budget
		if bst, gerr := w.conn.GetJSON(p.Budget(w.service), &budget); gerr == nil {
			budget.Service, budget.Last, budget.At = w.service, w.rt.cfg.Machine, now
			ops = append(ops, znodes.SetOp(p.Budget(w.service), znodes.MustEncode(&budget), bst.Version))
		} else if !errors.Is(gerr, zk.ErrNoNode) {
			return gerr
		}
		_, err = w.conn.Multi(ops...)
		if err == nil || errors.Is(err, zk.ErrNodeExists) {
			w.log.Info("joined the service as a member")
			return nil
		}
		if !errors.Is(err, zk.ErrBadVersion) {
			break
		}
	}
	return fmt.Errorf("join %s as a member: %w", w.service, err)
}

// joinAttempts bounds the immediate retries of a join that raced others.
const joinAttempts = 50

// touchMember records the version this machine serves in its member
// record (what status shows while it is absent).
func (w *worker) touchMember() {
	if w.conn == nil {
		return
	}
	version := versionOf(w.snapshot().Current)
	err := znodes.Update(w.conn, w.conn.Paths().Member(w.service, w.rt.cfg.Machine), func(m *znodes.Member) error {
		if m.Machine == "" {
			return errNotMember
		}
		m.Version, m.Seen, m.Rack, m.DC, m.Labels = version, w.rt.now().UTC(), w.rt.cfg.Rack, w.rt.cfg.DC, w.rt.cfg.Labels
		return nil
	})
	if errors.Is(err, errNotMember) {
		err = w.ensureMember() // removed by an operator while this agent runs: it is back
	}
	if err != nil {
		w.log.Warn("update member record", "err", err)
	}
}

func allExist(paths []string) bool {
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return false
		}
	}
	return true
}

func versionOf(r *Release) string {
	if r == nil {
		return ""
	}
	return r.Version
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

func ptr[T any](v T) *T { return &v }
