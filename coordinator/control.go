package coordinator

import (
	"errors"
	"fmt"
	"time"

	"github.com/go-zookeeper/zk"

	"dcroll/spec"
	"dcroll/znodes"
)

// ReadControl returns the operator switches (zero value when never set).
func ReadControl(c *znodes.Conn) (znodes.Control, *zk.Stat, error) {
	var ctl znodes.Control
	st, err := c.GetJSON(c.Paths().Control(), &ctl)
	if errors.Is(err, zk.ErrNoNode) {
		return ctl, nil, nil
	}
	if err != nil {
		return ctl, nil, fmt.Errorf("read control: %w", err)
	}
	return ctl, st, nil
}

func writeControl(c *znodes.Conn, ctl znodes.Control, st *zk.Stat) error {
	if st == nil {
		if _, err := c.Create(c.Paths().Control(), znodes.MustEncode(&ctl), 0); err != nil {
			return err
		}
		return nil
	}
	if _, err := c.ZK().Set(c.Paths().Control(), znodes.MustEncode(&ctl), st.Version); err != nil {
		return fmt.Errorf("write control: %w", err)
	}
	return nil
}

// Pause stops every machine from starting a new upgrade step; steps under
// way finish.
func Pause(c *znodes.Conn, by, reason string) error {
	if err := c.EnsureSkeleton(); err != nil {
		return fmt.Errorf("pause: %w", err)
	}
	ctl, st, err := ReadControl(c)
	if err != nil {
		return fmt.Errorf("pause: %w", err)
	}
	if by == "" {
		by = whoAmI()
	}
	ctl.Paused, ctl.Reason, ctl.By, ctl.At = true, reason, by, time.Now().UTC()
	if err := writeControl(c, ctl, st); err != nil {
		return fmt.Errorf("pause: %w", err)
	}
	return nil
}

// ResumeResult says what Resume changed.
type ResumeResult struct {
	Unpaused bool     `json:"unpaused"`
	Retried  []string `json:"retried"` // services whose halted entry goes back to rolling
	// Cleared are the bad-build records of the retried entries, deleted:
	// resuming a halted rollout is trusting its build again.
	Cleared []string `json:"cleared,omitempty"`
}

// Resume lifts a pause and retries halted deploy entries, in one
// transaction: the bad-build records those entries left are deleted with
// them (an operator who resumes trusts the build again).
func Resume(c *znodes.Conn, by string) (*ResumeResult, error) {
	if err := c.EnsureSkeleton(); err != nil {
		return nil, fmt.Errorf("resume: %w", err)
	}
	if by == "" {
		by = whoAmI()
	}
	ctl, st, err := ReadControl(c)
	if err != nil {
		return nil, fmt.Errorf("resume: %w", err)
	}
	q, err := ReadQueue(c)
	if err != nil {
		return nil, fmt.Errorf("resume: %w", err)
	}
	res := &ResumeResult{}
	var ops []any
	now := time.Now().UTC()
	bad, err := BadBuilds(c)
	if err != nil {
		return nil, fmt.Errorf("resume: %w", err)
	}
	cleared := map[string]bool{}
	for _, e := range q {
		if e.State != znodes.DeployHalted {
			continue
		}
		for _, b := range bad {
			if cleared[b.Key] {
				continue
			}
			if b.Entry == e.Node || b.Service == e.Service && b.Build != "" && b.Build == e.Build {
				cleared[b.Key] = true
				ops = append(ops, znodes.DeleteOp(c.Paths().Bad(b.Key), -1))
				res.Cleared = append(res.Cleared, b.Key)
			}
		}
		d := e.DeployEntry
		d.State, d.Reason, d.Machine, d.Updated = znodes.DeployRolling, "", "", now
		d.BakeSince = time.Time{} // a canary phase bakes again from the retry
		ops = append(ops, &zk.SetDataRequest{Path: c.Paths().DeployEntry(e.Node), Data: znodes.MustEncode(&d), Version: e.ZVersion})
		// The retry starts the canary count again: the spends before the
		// halt are no canaries of it.
		var b znodes.Budget
		if bst, err := c.GetJSON(c.Paths().Budget(e.Service), &b); err == nil && b.Entry == e.Node {
			b.Entry, b.Steps, b.First = "", 0, nil
			ops = append(ops, znodes.SetOp(c.Paths().Budget(e.Service), znodes.MustEncode(&b), bst.Version))
		} else if err != nil && !errors.Is(err, zk.ErrNoNode) {
			return nil, fmt.Errorf("resume: read the budget of %s: %w", e.Service, err)
		}
		res.Retried = append(res.Retried, e.Service)
	}
	if ctl.Paused || st == nil {
		res.Unpaused = ctl.Paused
		ctl.Paused, ctl.Reason, ctl.By, ctl.At = false, "", by, now
		if st == nil {
			ops = append(ops, c.CreateOp(c.Paths().Control(), znodes.MustEncode(&ctl), 0))
		} else {
			ops = append(ops, &zk.SetDataRequest{Path: c.Paths().Control(), Data: znodes.MustEncode(&ctl), Version: st.Version})
		}
	}
	if len(ops) == 0 {
		return res, nil
	}
	if _, err := c.Multi(ops...); err != nil {
		return nil, fmt.Errorf("resume: nothing changed, run it again: %w", err)
	}
	return res, nil
}

// ErrNothingToPromote: the service has no unfinished entry with a canary
// phase that is not promoted yet.
var ErrNothingToPromote = errors.New("nothing to promote")

// Promote ends the canary phase of service's unfinished deploy entry: the
// rest of its members may step without waiting for the bake time. It
// refuses (ErrNothingToPromote, with the reason) when the service has no
// unfinished entry, its spec has no canary, or it was promoted already.
func Promote(c *znodes.Conn, service, by string) (QueueEntry, error) {
	if by == "" {
		by = whoAmI()
	}
	q, err := ReadQueue(c)
	if err != nil {
		return QueueEntry{}, fmt.Errorf("promote: %w", err)
	}
	var e *QueueEntry
	var services []string
	for i := range q {
		services = append(services, q[i].Service)
		if q[i].Service == service && q[i].State != znodes.DeployDone {
			e = &q[i]
		}
	}
	if e == nil {
		hint := "the deploy queue is empty"
		if len(services) > 0 {
			hint = spec.Suggest(service, services, "queued")
		}
		return QueueEntry{}, fmt.Errorf("promote: %w: %s has no unfinished deploy entry (%s); see dcroll status",
			ErrNothingToPromote, service, hint)
	}
	sp, err := LoadSpec(c, e.SpecID)
	if err != nil {
		return QueueEntry{}, fmt.Errorf("promote: %w", err)
	}
	if svc := sp.Services[service]; svc == nil || svc.Canary == nil {
		return QueueEntry{}, fmt.Errorf("promote: %w: %s has no canary phase in spec %s", ErrNothingToPromote, service, spec.ShortID(e.SpecID))
	}
	if e.Promoted {
		return QueueEntry{}, fmt.Errorf("promote: %w: %s %s was promoted by %s at %s", ErrNothingToPromote, service, e.Version,
			dash(e.PromotedBy), e.PromotedAt.UTC().Format(time.DateTime))
	}
	ok, err := c.SetEntry(*e, func(d *znodes.DeployEntry) {
		d.Promoted, d.PromotedBy, d.PromotedAt = true, by, time.Now().UTC()
	})
	if err != nil {
		return QueueEntry{}, fmt.Errorf("promote: %w", err)
	}
	if !ok {
		return QueueEntry{}, fmt.Errorf("promote: the deploy entry of %s changed while promoting: nothing was changed, run it again", service)
	}
	return *e, nil
}

// MarkDone marks entry e done if it is still at the version read (exactly
// once: a concurrent marker loses, which is not an error).
func MarkDone(c *znodes.Conn, e QueueEntry) (bool, error) {
	return c.SetEntry(e, func(d *znodes.DeployEntry) { d.State, d.Updated = znodes.DeployDone, time.Now().UTC() })
}

// Halt marks entry e halted with reason (machine: the machine that halted
// it, "" for the coordinator) if it is still at the version read; false
// when someone else changed it first.
func Halt(c *znodes.Conn, e QueueEntry, reason, machine string) (bool, error) {
	return c.SetEntry(e, func(d *znodes.DeployEntry) {
		d.State, d.Reason, d.Machine, d.Updated = znodes.DeployHalted, reason, machine, time.Now().UTC()
	})
}
