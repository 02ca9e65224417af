package agent

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	"github.com/go-zookeeper/zk"

	"dcroll/spec"
	"dcroll/znodes"
)

// meta is what the driver reads besides the Snapshot.
type meta struct {
	budgetVersion  int32 // -1: no budget node
	headVersion    int32 // -1: no HEAD
	controlVersion int32 // -1: no control node
}

// read builds a Snapshot. The budget version is read first: a spend is a
// Multi conditional on it (and on the versions of HEAD, the control node
// and the active entry read here), so anything read after it is fenced.
func (w *worker) read() (Snapshot, meta, error) {
	c, p, zc := w.conn, w.conn.Paths(), w.conn.ZK()
	m := meta{budgetVersion: -1, headVersion: -1, controlVersion: -1}
	snap := Snapshot{Now: w.rt.now(), Machine: w.rt.cfg.Machine, Rack: w.rt.cfg.Rack, DC: w.rt.cfg.DC, Labels: w.rt.cfg.Labels, Service: w.service,
		StopGrace: w.rt.cfg.StopGrace, UnsafeRules: w.rt.cfg.testUnsafeRules}

	// A plain read: every spend changes it, and a watch would wake every
	// machine of the service at every step.
	bb, bst, err := zc.Get(p.Budget(w.service))
	switch {
	case errors.Is(err, zk.ErrNoNode):
	case err != nil:
		return snap, m, fmt.Errorf("read budget: %w", err)
	default:
		m.budgetVersion = bst.Version
		if err := znodes.Decode(bb, &snap.Budget); err != nil {
			w.log.Warn("unreadable budget node: no canary counted", "err", err)
		}
	}

	b, st, err := w.ws.Get(p.Head())
	switch {
	case errors.Is(err, zk.ErrNoNode):
	case err != nil:
		return snap, m, fmt.Errorf("read head: %w", err)
	default:
		var h znodes.Head
		if err := znodes.Decode(b, &h); err != nil {
			return snap, m, fmt.Errorf("read head: %w", err)
		}
		if err := w.rt.gate.check(&h); err != nil {
			// Refused before anything of it is read or fetched: the
			// machine keeps running what it runs.
			snap.HeadRefused = err.Error()
			break
		}
		sp, err := w.rt.loadSpec(c, h.SpecID)
		if errors.Is(err, spec.ErrAltered) {
			snap.HeadRefused = err.Error() // whoever altered it cannot make anything run
			break
		}
		if err != nil {
			return snap, m, err
		}
		m.headVersion = st.Version
		snap.HeadID, snap.PrevID = h.SpecID, h.Prev
		snap.Head = sp.Services[w.service]
		snap.Window = sp.Window
	}

	b, st, err = w.ws.Get(p.Control())
	switch {
	case errors.Is(err, zk.ErrNoNode):
	case err != nil:
		return snap, m, fmt.Errorf("read control: %w", err)
	default:
		var ctl znodes.Control
		if len(b) > 0 {
			if err := znodes.Decode(b, &ctl); err != nil {
				return snap, m, fmt.Errorf("read control: %w", err)
			}
		}
		m.controlVersion = st.Version
		snap.Paused, snap.PauseReason = ctl.Paused, ctl.Reason
	}

	err = w.ws.Each(p.Deploy(), func(n string, b []byte, st *zk.Stat) error {
		if !znodes.HasPrefixSeq(n, znodes.DeployPrefix) {
			return nil
		}
		e := Entry{Node: n, ZVersion: st.Version}
		if err := znodes.Decode(b, &e.DeployEntry); err != nil {
			return fmt.Errorf("deploy entry %s: %w", n, err)
		}
		snap.Queue = append(snap.Queue, e)
		return nil
	})
	if err != nil {
		return snap, m, fmt.Errorf("read deploy queue: %w", err)
	}
	slices.SortFunc(snap.Queue, func(a, b Entry) int {
		x, _ := znodes.SeqOf(a.Node)
		y, _ := znodes.SeqOf(b.Node)
		return cmp.Compare(x, y)
	})

	if err := w.readFleet(&snap); err != nil {
		return snap, m, err
	}

	err = w.ws.Each(p.BadRoot(), func(n string, b []byte, _ *zk.Stat) error {
		var bad znodes.BadBuild
		if err := znodes.Decode(b, &bad); err != nil {
			return fmt.Errorf("bad-build record %s: %w", n, err)
		}
		if snap.Bad == nil {
			snap.Bad = map[string]znodes.BadBuild{}
		}
		snap.Bad[n] = bad
		return nil
	})
	if err != nil {
		return snap, m, fmt.Errorf("read bad builds: %w", err)
	}

	snap.HoldsTurn = w.holdsTurn()
	snap.Local = w.local()
	return snap, m, nil
}

// readFleet fills the snapshot's view of the service's fleet. What a
// machine reads depends on what it may do, so that another machine's step
// costs a bystander nothing:
//   - every machine reads (and watches) its own member record,
//     registration and step record; the snapshot says FleetPartial;
//   - the turn holder also counts the service (znodes.ReadAvailability:
//     four watched children lists, the unavailable members in full), for
//     quorum, max_parallel and one domain at a time;
//   - a machine that runs nothing while its service's rollout is
//     unfinished (and the service is not new in it) reads the whole fleet
//     once, plainly: it starts the version most peers run.
//
// Nobody else reads the fleet: the leading coordinator completes entries.
func (w *worker) readFleet(snap *Snapshot) error {
	p := w.conn.Paths()
	if !w.local().Running {
		// (A service new in this entry has no older version to prefer:
		// its machines start the target without counting their peers.)
		if own := EntryFor(snap.Queue, w.service); own != nil && own.State != znodes.DeployDone && own.Kind != string(spec.ChangeNew) {
			f, err := w.conn.ReadFleet(w.service)
			if err != nil {
				return err
			}
			snap.Members, snap.Current, snap.Down = f.Members, f.Current, f.Down
			return nil
		}
	}
	snap.FleetPartial = true
	own, err := znodes.ReadMemberState(w.ws, p, w.service, w.rt.cfg.Machine)
	if err != nil {
		return err
	}
	if own.Member != nil {
		snap.Members = []znodes.Member{*own.Member}
	}
	if own.Current != nil {
		snap.Current = []znodes.Current{*own.Current}
	}
	if own.Down != nil {
		snap.Down = []znodes.Down{*own.Down}
	}
	if w.holdsTurn() {
		a, err := znodes.ReadAvailability(w.ws, p, w.service)
		if err != nil {
			return err
		}
		snap.Avail = &a
	}
	return nil
}
