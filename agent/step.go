package agent

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/go-zookeeper/zk"

	"dcroll/agent/supervise"
	"dcroll/spec"
	"dcroll/znodes"
)

// spend takes quorum budget for one upgrade in one Multi: fenced by the
// turn node, conditional on the budget version read before the snapshot,
// and creating this machine's ephemeral down marker. Then it marks the
// entry rolling and releases the turn: the down marker guards the step.
func (w *worker) spend(snap Snapshot, m meta, d Decision) error {
	p, zc := w.conn.Paths(), w.conn.ZK()
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
	if w.stage.done == nil || w.stage.done.Build != BuildID(snap.Head) {
		return errRetry
	}
	now := w.rt.now().UTC()
	downPath := p.DownMachine(w.service, w.rt.cfg.Machine)
	ops := []any{
		held.CheckOp(),
		znodes.SetOp(p.Budget(w.service), znodes.MustEncode(&znodes.Budget{Service: w.service, Last: w.rt.cfg.Machine, At: now}), m.budgetVersion),
		w.conn.CreateOp(downPath, znodes.MustEncode(&znodes.Down{Machine: w.rt.cfg.Machine, Rack: w.rt.cfg.Rack,
			From: snap.Local.Version, To: d.Version, At: now}), zk.FlagEphemeral),
	}
	if _, err := w.conn.Multi(ops...); err != nil {
		switch {
		case errors.Is(err, zk.ErrBadVersion), errors.Is(err, zk.ErrNodeExists), errors.Is(err, zk.ErrNoNode):
			w.log.Info("budget spend lost a race; deciding again", "err", err)
			return errRetry
		}
		// Unknown outcome: it was applied if our session owns the marker.
		ok, st, serr := zc.Exists(downPath)
		if serr != nil || !ok || st.EphemeralOwner != w.conn.SessionID() {
			return fmt.Errorf("spend budget: %w", err)
		}
	}
	w.log.Info("budget spent", "from", snap.Local.Version, "to", d.Version, "reason", d.Reason)
	if e := d.Entry; e != nil && e.State == znodes.DeployPending {
		upd := e.DeployEntry
		upd.State, upd.Updated = znodes.DeployRolling, now
		if _, err := zc.Set(p.DeployEntry(e.Node), znodes.MustEncode(&upd), e.ZVersion); err != nil &&
			!errors.Is(err, zk.ErrBadVersion) && !errors.Is(err, zk.ErrNoNode) {
			w.log.Warn("mark entry rolling", "entry", e.Node, "err", err)
		}
	}
	w.dropTurn()
	return nil
}

// upgrade is one machine's step, after the budget is spent: stop the old
// version, start the staged one, wait until healthy; revert and halt the
// rollout on failure. state.json is written before every change.
func (w *worker) upgrade(ctx context.Context, snap Snapshot, d Decision) {
	ctx = context.WithoutCancel(ctx) // a step, once begun, is finished
	next := w.stage.done
	w.mu.Lock()
	prev := w.st.Current
	w.stepping = true
	entry := ""
	if d.Entry != nil {
		entry = d.Entry.Node
	}
	w.st.InFlight = &Step{From: versionOf(prev), To: next.Version, SpecID: next.SpecID, Entry: entry, Since: w.rt.now().UTC()}
	w.st.Previous, w.st.Current = prev, next
	w.st.remember(next)
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.stepping = false
		w.mu.Unlock()
	}()
	_ = w.saveState()
	w.setHealthy(false)
	w.setPhase(znodes.StateUpgrading, fmt.Sprintf("%s -> %s", versionOf(prev), next.Version))
	w.publish()
	w.log.Info("upgrade: stopping old version", "from", versionOf(prev), "to", next.Version)

	w.stopCurrent(ctx)
	err := w.startRelease(ctx, next, false)
	if err == nil {
		err = w.waitHealthy(ctx, next)
	}
	if err == nil {
		w.mu.Lock()
		w.st.InFlight = nil
		w.mu.Unlock()
		_ = w.saveState()
		w.setHealthy(true)
		w.setPhase(znodes.StateRunning, "")
		w.finishStep()
		w.rt.metrics.steps.WithLabelValues(w.service, "ok").Inc()
		w.log.Info("upgrade: done", "version", next.Version)
		return
	}

	reason := truncate(fmt.Sprintf("%s: %v", next.Version, err), 300)
	w.log.Error("upgrade failed; halting the rollout and reverting", "version", next.Version, "err", err)
	if d.Entry != nil {
		if herr := w.haltEntry(d.Entry.Node, reason); herr != nil {
			w.log.Error("cannot mark the rollout halted", "entry", d.Entry.Node, "err", herr)
		}
	}
	w.setPhase(znodes.StateReverting, reason)
	w.publish()
	w.stopCurrent(ctx)
	if prev == nil {
		w.mu.Lock()
		w.st.InFlight = nil
		w.mu.Unlock()
		_ = w.saveState()
		w.setPhase(znodes.StateFailed, reason)
		w.publish()
		w.rt.metrics.steps.WithLabelValues(w.service, "failed").Inc()
		return
	}
	w.mu.Lock()
	w.st.Current, w.st.Previous = prev, next
	w.mu.Unlock()
	_ = w.saveState()
	err = w.startRelease(ctx, prev, false)
	if err == nil {
		err = w.waitHealthy(ctx, prev)
	}
	w.mu.Lock()
	w.st.InFlight = nil
	w.mu.Unlock()
	_ = w.saveState()
	if err != nil {
		// The down marker stays: this machine is down for real.
		w.log.Error("revert failed: the previous version is not healthy either", "version", prev.Version, "err", err)
		w.setPhase(znodes.StateFailed, truncate("revert to "+prev.Version+" failed: "+err.Error(), 300))
		w.publish()
		w.rt.metrics.steps.WithLabelValues(w.service, "failed").Inc()
		return
	}
	w.setHealthy(true)
	w.setPhase(znodes.StateRunning, "reverted: "+reason)
	w.finishStep()
	w.rt.metrics.steps.WithLabelValues(w.service, "reverted").Inc()
	w.log.Warn("reverted", "version", prev.Version)
}

// finishStep publishes the current entry and deletes the down marker in
// one Multi (falling back to two writes when the session changed).
func (w *worker) finishStep() {
	p := w.conn.Paths()
	payload, err := w.currentPayload()
	if err != nil {
		w.log.Error("encode current", "err", err)
		return
	}
	_, err = w.conn.Multi(
		znodes.SetOp(p.CurrentMachine(w.service, w.rt.cfg.Machine), payload, -1),
		znodes.DeleteOp(p.DownMachine(w.service, w.rt.cfg.Machine), -1),
	)
	if err != nil {
		w.log.Info("finish step in one transaction failed; writing separately", "err", err)
	}
	w.publish() // keeps the registration's payload (and version) in step
	if err != nil {
		if _, cerr := w.clearDown(); cerr != nil {
			w.log.Warn("delete down marker", "err", cerr)
		}
	}
	nudge(w.nudge)
}

// haltEntry marks a deploy entry halted (versioned read-modify-write; a
// missing or finished entry is left alone).
func (w *worker) haltEntry(node, reason string) error {
	p, zc := w.conn.Paths().DeployEntry(node), w.conn.ZK()
	for range 20 {
		b, st, err := zc.Get(p)
		if errors.Is(err, zk.ErrNoNode) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("halt %s: %w", node, err)
		}
		var e znodes.DeployEntry
		if err := znodes.Decode(b, &e); err != nil {
			return fmt.Errorf("halt %s: %w", node, err)
		}
		if e.State == znodes.DeployDone || e.State == znodes.DeployHalted {
			return nil
		}
		e.State, e.Reason, e.Machine, e.Updated = znodes.DeployHalted, reason, w.rt.cfg.Machine, w.rt.now().UTC()
		_, err = zc.Set(p, znodes.MustEncode(&e), st.Version)
		if errors.Is(err, zk.ErrBadVersion) {
			continue
		}
		if err != nil {
			return fmt.Errorf("halt %s: %w", node, err)
		}
		w.log.Warn("rollout halted", "entry", node, "reason", reason)
		return nil
	}
	return fmt.Errorf("halt %s: too much contention", node)
}

// applySettings writes HEAD's settings and signals the process: no turn,
// no budget, no restart.
func (w *worker) applySettings(snap Snapshot) error {
	svc := snap.Head
	w.mu.Lock()
	cur, sup := w.st.Current, w.sup
	w.mu.Unlock()
	if cur == nil || sup == nil {
		return errors.New("apply settings: nothing running")
	}
	sigName := svc.ReloadSignal
	if sigName == "" {
		sigName = spec.DefaultReloadSignal
	}
	sig, err := supervise.ParseSignal(sigName)
	if err != nil {
		return fmt.Errorf("apply settings: %w", err)
	}
	if err := supervise.WriteSettings(w.settingsPath(), svc.Settings); err != nil {
		return fmt.Errorf("apply settings: %w", err)
	}
	if err := sup.Reload(sig); err != nil {
		return fmt.Errorf("apply settings: %w", err)
	}
	upd := *cur
	upd.Settings, upd.SpecID, upd.ReloadSignal, upd.Health = svc.Settings, snap.HeadID, svc.ReloadSignal, svc.Health
	w.mu.Lock()
	w.st.Current = &upd
	w.st.remember(&upd)
	w.reloads++
	w.mu.Unlock()
	_ = w.saveState()
	w.rebuildChecker(&upd)
	w.publish()
	w.rt.metrics.reloads.WithLabelValues(w.service).Inc()
	w.log.Info("settings applied", "signal", sigName, "spec", spec.ShortID(snap.HeadID))
	return nil
}

// adopt records HEAD's spec id for the version already running (and takes
// over HEAD's health check and reload signal, which need no restart).
func (w *worker) adopt(snap Snapshot) error {
	w.mu.Lock()
	cur := w.st.Current
	w.mu.Unlock()
	if cur == nil {
		return errors.New("adopt: nothing running")
	}
	upd := *cur
	upd.SpecID, upd.Health, upd.ReloadSignal = snap.HeadID, snap.Head.Health, snap.Head.ReloadSignal
	w.mu.Lock()
	w.st.Current = &upd
	w.st.remember(&upd)
	w.mu.Unlock()
	_ = w.saveState()
	w.rebuildChecker(&upd)
	w.publish()
	w.log.Info("adopted HEAD", "version", upd.Version, "spec", spec.ShortID(snap.HeadID))
	return nil
}

func (w *worker) rebuildChecker(r *Release) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sup == nil {
		return
	}
	if chk, err := w.sup.Checker(r.Health); err == nil {
		w.checker = chk
	} else {
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
	w.stopCurrent(ctx)
	w.mu.Lock()
	if c := w.st.Current; c != nil && c.Build != rel.Build {
		w.st.Previous = c
	}
	w.st.Current = rel
	w.st.remember(rel)
	w.mu.Unlock()
	_ = w.saveState()
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
	return nil
}

// releaseFor returns the release of version from spec specID: the local
// copy when it is the same build, else a freshly prepared one.
func (w *worker) releaseFor(ctx context.Context, specID, version string) (*Release, error) {
	w.mu.Lock()
	known := w.st.Known[version]
	w.mu.Unlock()
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

// markDone marks a complete entry done, conditional on the version read.
func (w *worker) markDone(d Decision) error {
	e := d.Entry
	upd := e.DeployEntry
	upd.State, upd.Updated = znodes.DeployDone, w.rt.now().UTC()
	_, err := w.conn.ZK().Set(w.conn.Paths().DeployEntry(e.Node), znodes.MustEncode(&upd), e.ZVersion)
	switch {
	case err == nil:
		w.log.Info("rollout entry done", "entry", e.Node, "version", e.Version)
		return nil
	case errors.Is(err, zk.ErrBadVersion), errors.Is(err, zk.ErrNoNode):
		return nil // someone else did, or the queue moved: re-read
	}
	return fmt.Errorf("mark %s done: %w", e.Node, err)
}

// clearDown deletes this machine's down marker if this session owns it.
// again is false when the marker belongs to an older session (it goes
// when that session expires; its deletion nudges).
func (w *worker) clearDown() (again bool, err error) {
	p, zc := w.conn.Paths().DownMachine(w.service, w.rt.cfg.Machine), w.conn.ZK()
	ok, st, err := zc.Exists(p)
	if err != nil {
		return false, fmt.Errorf("clear down marker: %w", err)
	}
	if !ok {
		return true, nil
	}
	if st.EphemeralOwner != w.conn.SessionID() {
		return false, nil
	}
	if err := zc.Delete(p, st.Version); err != nil && !errors.Is(err, zk.ErrNoNode) {
		return false, fmt.Errorf("clear down marker: %w", err)
	}
	w.log.Info("down marker cleared")
	return true, nil
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
