package coordinator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"

	"dcroll/spec"
	"dcroll/znodes"
)

// ReadRollout reads the leading coordinator's night record (/dc/rollout):
// per service blocked-by and ETA, the night's ETA and the measured step
// times. It returns nil and no error when no coordinator has written one.
func ReadRollout(c *znodes.Conn) (*znodes.Rollout, error) {
	var r znodes.Rollout
	_, err := c.GetJSON(c.Paths().Rollout(), &r)
	if errors.Is(err, zk.ErrNoNode) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read rollout record: %w", err)
	}
	return &r, nil
}

// stepAlpha is the weight of a new sample in the moving average of a
// service's step time: recent steps count most (a fleet warms up, a
// night's later steps look like its earlier ones), one odd step does not
// move the ETA much. Samples are per member: with max_parallel > 1 the
// members of a batch finish close together, and the average of their
// short and long intervals is the time per member.
const stepAlpha = 0.3

// nightRefresh is how often the leader rewrites an unchanged record, so
// that readers can tell a live leader from a dead one by its At.
const nightRefresh = 30 * time.Second

// entryView is what the leader knows of one queue entry at a tick.
type entryView struct {
	e      QueueEntry
	svc    *spec.Service // the entry's service in its spec; nil for a removal
	states []znodes.MemberState
}

// blockedBy says why entry e may not progress now: a stable code and a
// one-line reason, both empty while it progresses (or is done). active is
// the queue's active entry; w the spec's window; it never reads the clock
// but now. The checks run from what an operator must act on (a halt, a
// pause) to what resolves by itself (the window, an earlier service, the
// canary's bake), then to the members: nobody there, too few available to
// take one down, absent members holding completion back, staging.
func blockedBy(v entryView, active *QueueEntry, w *spec.Window, ctl znodes.Control, now time.Time) (code, reason string) {
	e := v.e
	switch {
	case e.State == znodes.DeployDone:
		return "", ""
	case e.State == znodes.DeployHalted:
		r := "halted"
		if e.Machine != "" {
			r += " on " + e.Machine
		}
		return znodes.BlockedHalted, r + ": " + firstLine(e.Reason, 160)
	case active != nil && active.Node != e.Node:
		r := "waiting for " + active.Service
		if active.State == znodes.DeployHalted {
			r += " (halted)"
		}
		return znodes.BlockedDependency, r
	case ctl.Paused:
		r := "paused by " + dash(ctl.By)
		if ctl.Reason != "" {
			r += ": " + ctl.Reason
		}
		return znodes.BlockedPaused, r
	case !w.Open(now):
		next := w.NextOpen(now)
		if next.IsZero() {
			return znodes.BlockedWindow, "outside the window, which never opens"
		}
		return znodes.BlockedWindow, fmt.Sprintf("outside window until %s %s", next.Format("15:04"), next.Location())
	case len(v.states) == 0:
		if e.Kind == znodes.KindRemoved {
			return "", ""
		}
		return znodes.BlockedNoMembers, "no machine has registered " + e.Service
	}
	if c, r := canaryBlocked(v, now); c != "" {
		return c, r
	}
	var pending, absent, staging []string
	total, available := len(v.states), 0
	for _, s := range v.states {
		if s.Available {
			available++
		}
		if s.Down != nil {
			return "", "" // a step is under way: progressing
		}
		if e.DoneBy(s) {
			continue
		}
		switch {
		case s.Current == nil:
			absent = append(absent, absentSince(s))
		case s.Current.State == znodes.StateStaging:
			staging = append(staging, s.Machine)
		case s.Available:
			pending = append(pending, s.Machine)
		}
	}
	if len(pending) > 0 && v.svc != nil && e.Kind != znodes.KindRemoved {
		need := v.svc.Quorum.Min(total)
		if available-1 < need {
			r := fmt.Sprintf("quorum %d/%d available, min %d", available, total, need)
			if len(absent) > 0 {
				r += "; " + strings.Join(absent, ", ")
			}
			return znodes.BlockedQuorum, r
		}
	}
	switch {
	case len(pending) > 0:
		return "", ""
	case len(staging) > 0:
		return znodes.BlockedStaging, strings.Join(staging, ",") + " staging"
	case len(absent) > 0:
		return znodes.BlockedAbsent, strings.Join(absent, ", ")
	}
	return "", ""
}

// absentSince is "m5 absent since 20:31 UTC" (its last registration).
func absentSince(s znodes.MemberState) string {
	if s.Member == nil || s.Member.Seen.IsZero() {
		return s.Machine + " absent"
	}
	return s.Machine + " absent since " + s.Member.Seen.UTC().Format("15:04 MST")
}

// canaryState is the canary phase of entry v (nil without one): the
// canaries done with it, and the bake.
func canaryState(v entryView) *znodes.CanaryState {
	if v.svc == nil || v.svc.Canary == nil || v.e.Kind == znodes.KindRemoved || v.e.Kind == string(spec.ChangeNew) {
		return nil
	}
	c := v.svc.Canary
	cs := &znodes.CanaryState{Machines: c.Machines, Bake: c.Bake.Duration, BakeSince: v.e.BakeSince,
		Promoted: v.e.Promoted, By: v.e.PromotedBy}
	for _, s := range v.states {
		if v.e.DoneBy(s) {
			cs.Done++
		}
	}
	if !cs.BakeSince.IsZero() && c.Bake.Duration > 0 {
		cs.BakeUntil = cs.BakeSince.Add(c.Bake.Duration)
	}
	return cs
}

// canaryBlocked: the canaries are out and the entry is not promoted.
func canaryBlocked(v entryView, now time.Time) (code, reason string) {
	cs := canaryState(v)
	if cs == nil || cs.Promoted || cs.Done < min(cs.Machines, len(v.states)) || cs.Done >= len(v.states) {
		return "", ""
	}
	switch {
	case cs.Bake == 0:
		return znodes.BlockedCanary, fmt.Sprintf("canary: %d on %s, waiting for dcroll promote %s", cs.Done, v.e.Version, v.e.Service)
	case cs.BakeSince.IsZero():
		return znodes.BlockedCanary, fmt.Sprintf("canary: %d on %s, bake %s starting", cs.Done, v.e.Version, cs.Bake)
	}
	left := cs.BakeUntil.Sub(now).Round(time.Second)
	return znodes.BlockedCanary, fmt.Sprintf("canary: %d on %s baking until %s (%s left; dcroll promote %s skips it)",
		cs.Done, v.e.Version, cs.BakeUntil.UTC().Format("15:04:05 MST"), max(left, 0), v.e.Service)
}

// stepClock times the active entry's steps from the members' own
// timestamps: a member is done at its registration's Since (when it went
// running on the target, the agent's clock), so the leader's polling
// interval does not quantize the samples. Each member done is one sample:
// from the member done before it (or the entry's first step record) to
// it. The clock stops while the entry is blocked, so a pause, a closed
// window or a bake never counts as step time.
type stepClock struct {
	entry string
	seen  map[string]bool // members counted done
	last  time.Time       // when the last sample ended (zero: not timing)
	start time.Time       // the entry's first step seen
}

// observe updates the clock with entry v at now and returns the samples
// (seconds per member step) of the members done since the last call.
func (c *stepClock) observe(v entryView, blocked string, now time.Time) []float64 {
	if c.entry != v.e.Node {
		*c = stepClock{entry: v.e.Node, seen: map[string]bool{}}
		for _, s := range v.states { // done before we looked: not timed
			if v.e.DoneBy(s) {
				c.seen[s.Machine] = true
			}
		}
	}
	var first time.Time
	var finished []time.Time
	for _, s := range v.states {
		if d := s.Down; d != nil && d.Entry == v.e.Node && (first.IsZero() || d.At.Before(first)) {
			first = d.At
		}
		if v.e.DoneBy(s) && !c.seen[s.Machine] {
			c.seen[s.Machine] = true
			finished = append(finished, clamp(s.Current.Since, now))
		}
	}
	first = clamp(first, now)
	if c.start.IsZero() && !first.IsZero() {
		c.start = first
	}
	if c.last.IsZero() && !first.IsZero() {
		c.last = first
	}
	sort.Slice(finished, func(i, j int) bool { return finished[i].Before(finished[j]) })
	var samples []float64
	for _, at := range finished {
		if !c.last.IsZero() && !at.Before(c.last) {
			samples = append(samples, at.Sub(c.last).Seconds())
		}
		if at.After(c.last) {
			c.last = at
		}
	}
	if blocked != "" {
		c.last = time.Time{}
	}
	return samples
}

// clamp keeps another machine's timestamp from being after ours.
func clamp(t, now time.Time) time.Time {
	if t.After(now) {
		return now
	}
	return t
}

// addSample folds a sample into a service's moving average.
func addSample(st znodes.StepStat, sample float64, now time.Time) znodes.StepStat {
	if st.Samples == 0 {
		st.Seconds = sample
	} else {
		st.Seconds = stepAlpha*sample + (1-stepAlpha)*st.Seconds
	}
	st.Samples++
	st.At = now
	return st
}

// perMember is the expected time of one member step of entry v: the
// measured average, else the plan's estimate from the health settings
// spread over max_parallel.
func perMember(v entryView, steps map[string]znodes.StepStat) (time.Duration, bool) {
	if st, ok := steps[v.e.Service]; ok && st.Samples > 0 {
		return time.Duration(st.Seconds * float64(time.Second)), true
	}
	return batchEstimate(v.svc, v.e.Kind) / time.Duration(atOnce(v)), false
}

// atOnce is how many members of entry v step together: max_parallel, and
// for a service with an upgrade domain at most what its quorum spares
// (as the plan's batches: planGroups).
func atOnce(v entryView) int {
	if v.svc == nil {
		return 1
	}
	n := max(v.svc.MaxParallel, 1)
	if v.svc.Domain != "" && v.e.Kind != znodes.KindRemoved {
		n = max(1, min(n, len(v.states)-v.svc.Quorum.Min(len(v.states))))
	}
	return n
}

// batchEstimate is the expected time of one batch without measurements:
// min_healthy plus PlanStepOverhead (the overhead alone for a removal).
func batchEstimate(svc *spec.Service, kind string) time.Duration {
	if kind == znodes.KindRemoved {
		return PlanStepOverhead
	}
	minHealthy := spec.DefaultHealthMinHealthy
	if svc != nil && svc.Health != nil && svc.Health.MinHealthy.Duration > 0 {
		minHealthy = svc.Health.MinHealthy.Duration
	}
	return minHealthy + PlanStepOverhead
}

// nightInput is one tick of the leader: the queue's entries with their
// fleets, the spec's window, the control node, the measured step times and
// the active entry's clock.
type nightInput struct {
	now    time.Time
	headID string
	views  []entryView
	window *spec.Window
	ctl    znodes.Control
	steps  map[string]znodes.StepStat
	clock  stepClock
}

// buildNight computes the night record: per entry its counts, blocked-by,
// batches and ETA, the entries chained one after another in queue order
// (each starts when the one before it is expected done), each step fitted
// into the window; and the night's state and ETA. An entry blocked on
// something only a person or a machine coming back resolves (halt, pause,
// quorum, absence, a canary waiting for promote) has no ETA, nor has
// anything after it.
func buildNight(in nightInput) znodes.Rollout {
	r := znodes.Rollout{HeadID: in.headID, State: znodes.NightIdle, Services: []znodes.ServiceRollout{}, Steps: in.steps}
	active := activeOf(in.views)
	var t time.Time // when the entry before ends (zero: nothing before)
	known := true
	allDone := len(in.views) > 0
	for i, v := range in.views {
		e := v.e
		s := znodes.ServiceRollout{Service: e.Service, Entry: e.Node, Position: i + 1, Kind: e.Kind, From: e.FromVersion,
			To: e.Version, State: e.State, Members: len(v.states), MaxParallel: 1, Canary: canaryState(v)}
		if in.window != nil {
			s.Window = in.window.String()
		}
		if v.svc != nil {
			s.MaxParallel = max(v.svc.MaxParallel, 1)
			if e.Kind != znodes.KindRemoved {
				s.QuorumMin = v.svc.Quorum.Min(len(v.states))
			}
		}
		// Batches: one rack (or domain) at a time, as many at once as
		// max_parallel allows (and, for a domain, the quorum: planGroups).
		label, together := znodes.LabelRack, atOnce(v)
		if v.svc != nil && v.svc.Domain != "" && e.Kind != znodes.KindRemoved {
			label = v.svc.Domain
		}
		groups := map[string]int{}
		for _, m := range v.states {
			if m.Available {
				s.Available++
			}
			if e.DoneBy(m) {
				s.Done++
			} else {
				groups[m.Label(label)]++
			}
		}
		for _, n := range groups {
			s.Batches += (n + together - 1) / together
		}
		s.Blocked, s.BlockedBy = blockedBy(v, active, in.window, in.ctl, in.now)
		per, measured := perMember(v, in.steps)
		s.StepSeconds, s.Measured = per.Seconds(), measured
		if active != nil && e.Node == active.Node && !in.clock.start.IsZero() && in.clock.entry == e.Node {
			s.Start = in.clock.start
		}
		if e.State != znodes.DeployDone {
			allDone = false
		}
		remaining := len(v.states) - s.Done
		if e.State == znodes.DeployDone || e.Kind == string(spec.ChangeNew) {
			remaining = 0
		}
		r.Remaining += remaining
		if e.State == znodes.DeployDone || !known {
			r.Services = append(r.Services, s)
			continue
		}
		base := in.now
		switch s.Blocked {
		case "", znodes.BlockedDependency, znodes.BlockedStaging:
			if active != nil && e.Node == active.Node && !in.clock.last.IsZero() && in.clock.entry == e.Node {
				base = in.clock.last // timed from the last member done (or the first step)
			}
		case znodes.BlockedWindow:
			base = in.window.NextOpen(in.now)
		case znodes.BlockedCanary:
			if s.Canary == nil || s.Canary.BakeUntil.IsZero() {
				known = false
			} else {
				base = s.Canary.BakeUntil
			}
		default:
			known = false
		}
		if !known {
			r.Services = append(r.Services, s)
			continue
		}
		if base.Before(t) {
			base = t
		}
		end, ok := fitSteps(in.window, base, per, remaining)
		if !ok {
			known = false
			r.Services = append(r.Services, s)
			continue
		}
		if end.Before(in.now) {
			end = in.now // overdue: any moment now
		}
		s.ETA, t = end, end
		r.Services = append(r.Services, s)
	}
	switch {
	case len(in.views) == 0:
		r.State = znodes.NightIdle
	case allDone:
		r.State = znodes.NightDone
	case active != nil && active.State == znodes.DeployHalted:
		r.State = znodes.NightHalted
	default:
		r.State = znodes.NightRolling
		for _, s := range r.Services {
			if s.Entry == active.Node && s.Blocked != "" {
				r.State = znodes.NightBlocked
			}
		}
	}
	if known && r.State != znodes.NightDone && r.State != znodes.NightIdle {
		r.ETA = t
	}
	return r
}

// fitSteps returns when n steps of length d starting at t end, each step
// starting only with its time left in the window (the agents' rule).
func fitSteps(w *spec.Window, t time.Time, d time.Duration, n int) (time.Time, bool) {
	if w == nil || n == 0 {
		return t.Add(time.Duration(n) * d), true
	}
	for range n {
		start, _, ok := fit(w, t, d)
		if !ok {
			return time.Time{}, false
		}
		t = start.Add(d)
	}
	return t, true
}

func activeOf(views []entryView) *QueueEntry {
	for i := range views {
		if views[i].e.State != znodes.DeployDone {
			return &views[i].e
		}
	}
	return nil
}

func firstLine(s string, n int) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}

// nightWriter is the leader's writer of the night record: it keeps the
// measured step times and the active entry's clock between ticks, and
// writes only when the record changed (or every nightRefresh).
type nightWriter struct {
	c  *znodes.Conn
	by string
	// view, when set (under Run), serves HEAD, the queue, the control
	// node and every fleet from memory; nil: plain reads.
	view *leaderView
	// spec caches HEAD's spec, id specID (specs are immutable).
	spec    *spec.Spec
	specID  string
	steps   map[string]znodes.StepStat
	clock   stepClock
	loaded  bool
	last    []byte // the last record written, without By and At
	written time.Time
	// fleets caches, without a view, the fleets of entries that are not
	// active: they do not move during a night until their turn, so they
	// are re-read at most every fleetRefresh.
	fleets map[string]cachedFleet
}

type cachedFleet struct {
	f  znodes.Fleet
	at time.Time
}

const fleetRefresh = 5 * time.Second

func newNightWriter(c *znodes.Conn, by string) *nightWriter {
	return &nightWriter{c: c, by: by, steps: map[string]znodes.StepStat{}, fleets: map[string]cachedFleet{}}
}

// tick reads the queue's state, updates the step clock and writes the
// record when it changed. active, when non-nil, is the active entry's
// fleet the caller already read this tick.
func (n *nightWriter) tick(now time.Time, active *znodes.Fleet) error {
	if !n.loaded {
		old, err := ReadRollout(n.c)
		if err != nil {
			return err
		}
		if old != nil {
			for k, v := range old.Steps {
				n.steps[k] = v
			}
		}
		n.loaded = true
	}
	head, q, ctl, err := n.read()
	if err != nil {
		return err
	}
	in := nightInput{now: now, ctl: ctl, steps: n.steps}
	var sp *spec.Spec
	if head != nil {
		in.headID = head.SpecID
		if n.spec == nil || n.specID != head.SpecID {
			if n.spec, err = LoadSpec(n.c, head.SpecID); err != nil {
				return err
			}
			n.specID = head.SpecID
		}
		sp = n.spec
		in.window = sp.Window
	}
	act := Active(q)
	for _, e := range q {
		v := entryView{e: e}
		if sp != nil {
			v.svc = sp.Services[e.Service]
		}
		if e.State != znodes.DeployDone {
			f, err := n.fleet(e.Service, act != nil && act.Node == e.Node, active, now)
			if errors.Is(err, errNotRead) {
				return nil // written once the cache has it
			}
			if err != nil {
				return err
			}
			v.states = f.States()
		}
		in.views = append(in.views, v)
	}
	if act != nil {
		for _, v := range in.views {
			if v.e.Node != act.Node {
				continue
			}
			code, _ := blockedBy(v, act, in.window, ctl, now)
			for _, sample := range n.clock.observe(v, code, now) {
				n.steps[v.e.Service] = addSample(n.steps[v.e.Service], sample, now)
			}
		}
	}
	in.clock = n.clock
	r := buildNight(in)
	return n.write(r, now)
}

// read returns HEAD, the queue and the control node.
func (n *nightWriter) read() (*znodes.Head, []QueueEntry, znodes.Control, error) {
	if n.view != nil {
		if err := n.view.refresh(); err != nil {
			return nil, nil, znodes.Control{}, err
		}
		return n.view.head, n.view.queue, n.view.ctl, nil
	}
	head, _, err := ReadHead(n.c)
	if err != nil {
		return nil, nil, znodes.Control{}, err
	}
	q, err := ReadQueue(n.c)
	if err != nil {
		return nil, nil, znodes.Control{}, err
	}
	ctl, _, err := ReadControl(n.c)
	return head, q, ctl, err
}

// fleet is service's fleet: the active one the advancer read, else from
// the view's cache (errNotRead until it has it), else a plain read at
// most every fleetRefresh.
func (n *nightWriter) fleet(service string, isActive bool, active *znodes.Fleet, now time.Time) (znodes.Fleet, error) {
	if isActive && active != nil {
		return *active, nil
	}
	if n.view != nil {
		return n.view.fleet(service)
	}
	if c, ok := n.fleets[service]; ok && !isActive && now.Sub(c.at) < fleetRefresh {
		return c.f, nil
	}
	f, err := n.c.ReadFleet(service)
	if err != nil {
		return f, err
	}
	n.fleets[service] = cachedFleet{f: f, at: now}
	return f, nil
}

// write stores r unless it equals the last record written less than
// nightRefresh ago.
func (n *nightWriter) write(r znodes.Rollout, now time.Time) error {
	body, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode rollout record: %w", err)
	}
	if bytes.Equal(body, n.last) && now.Sub(n.written) < nightRefresh {
		return nil
	}
	r.By, r.At = n.by, now.UTC()
	data, err := znodes.Encode(&r)
	if err != nil {
		return err
	}
	p := n.c.Paths().Rollout()
	_, err = n.c.ZK().Set(p, data, -1)
	if errors.Is(err, zk.ErrNoNode) {
		_, err = n.c.Create(p, data, 0)
		if errors.Is(err, zk.ErrNodeExists) { // a previous leader's create raced ours
			_, err = n.c.ZK().Set(p, data, -1)
		}
	}
	if err != nil {
		return fmt.Errorf("write rollout record: %w", err)
	}
	n.last, n.written = body, now
	return nil
}
