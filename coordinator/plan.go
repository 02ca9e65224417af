package coordinator

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"dcroll/spec"
	"dcroll/znodes"
)

// PlanStepOverhead is the time a night plan adds to a step beyond the
// service's health min_healthy: stopping the old instance, starting the
// new one, registering, taking the turn. It is a fixed guess: there is no
// history of real step durations yet.
const PlanStepOverhead = 30 * time.Second

// Warning codes of a night plan, stable for scripts.
const (
	WarnWindowClosed   = "window_closed"      // the window is closed now
	WarnPaused         = "paused"             // /dc/control is paused
	WarnUnfinished     = "unfinished_rollout" // a push needs --supersede
	WarnBadBuild       = "bad_build"          // a build halted a rollout; push needs --force
	WarnMissingBlobs   = "missing_blobs"      // blobs not published; push refuses
	WarnQuorum         = "quorum"             // quorum >= members: no machine may step
	WarnNoMembers      = "no_members"         // nothing can complete the entry
	WarnAbsent         = "absent_member"      // a member is not registered: holds the entry back
	WarnUnavailable    = "unavailable_member" // a member is registered but not available
	WarnHeadroom       = "headroom"           // a batch would leave fewer than the quorum: it waits
	WarnStillHalted    = "still_halted"       // the new entry starts halted (same build pushed again)
	WarnWindowTooShort = "window_too_short"   // a step does not fit in one opening of the window
)

// NightPlan is a push of a spec simulated against ZooKeeper as it is now:
// the deploy queue the push would write, each service's members, batches,
// quorum headroom and timing in the window, and what would block it.
type NightPlan struct {
	SpecID string `json:"spec_id"`
	Name   string `json:"name"`
	HeadID string `json:"head_id"` // "" before the first push; dcroll push --if-head takes it
	// Unchanged: HEAD already is this spec; nothing would happen.
	Unchanged bool      `json:"unchanged"`
	Now       time.Time `json:"now"`
	// WindowOpen and Start: whether the window is open now, and when the
	// first step could start (the zero time if never, e.g. nothing to do).
	WindowOpen bool          `json:"window_open"`
	Start      time.Time     `json:"start"`
	Finish     time.Time     `json:"finish"`   // when the last step would end (zero: unknown)
	Duration   time.Duration `json:"duration"` // step time summed (nanoseconds), not counting closed window
	Nights     int           `json:"nights"`   // window openings the rollout spans (1: it fits tonight)
	// Changes is spec.Plan from HEAD's spec (downgrades say so in reasons).
	Changes  []spec.Change        `json:"changes"`
	Entries  []znodes.DeployEntry `json:"entries"` // the deploy queue push would write
	Services []ServicePlan        `json:"services"`
	Warnings []PlanWarning        `json:"warnings"`
}

// PlanWarning is something that would block or hold the rollout back.
type PlanWarning struct {
	Code    string `json:"code"`
	Service string `json:"service,omitempty"`
	Message string `json:"message"`
}

// ServicePlan is one deploy entry of the plan.
type ServicePlan struct {
	Service     string   `json:"service"`
	Kind        string   `json:"kind"`
	From        string   `json:"from"`
	To          string   `json:"to"`
	Reasons     []string `json:"reasons"`
	Downgrade   bool     `json:"downgrade"`
	State       string   `json:"state"` // of the entry push would write: pending or halted
	Quorum      string   `json:"quorum"`
	QuorumMin   int      `json:"quorum_min"` // quorum.Min(members)
	MaxParallel int      `json:"max_parallel"`
	// Step is the expected time of one batch: from the service's measured
	// step times (Measured; the coordinator's night record) when there are
	// any, else min_healthy + PlanStepOverhead (PlanStepOverhead alone for
	// a removal); nanoseconds in JSON.
	Step     time.Duration `json:"step"`
	Measured bool          `json:"measured"`
	Members  []PlanMember  `json:"members"`
	Batches  []PlanBatch   `json:"batches"`
	Start    time.Time     `json:"start"`
	Finish   time.Time     `json:"finish"`
	// Domain is the spec's upgrade domain label ("" without one) and
	// Waves its wave order as written ("dc", "[dc-east, dc-west]"; ""
	// without); WaveOrder the data centers in the order they go, and
	// Domains every domain (or, without a domain, rack) in the order it
	// goes, each with its batches.
	Domain    string       `json:"domain,omitempty"`
	Waves     string       `json:"waves,omitempty"`
	WaveOrder []string     `json:"wave_order,omitempty"`
	Domains   []PlanDomain `json:"domains,omitempty"`
}

// PlanDomain is one upgrade domain of a service with a domain or waves:
// its members go in Batches batches of at most AtOnce (max_parallel,
// capped by the quorum for a domain).
type PlanDomain struct {
	Wave    string `json:"wave,omitempty"`
	Value   string `json:"value"`
	Members int    `json:"members"`
	AtOnce  int    `json:"at_once"`
	Batches int    `json:"batches"`
}

// PlanMember is one member of a service and its state now.
type PlanMember struct {
	Machine   string `json:"machine"`
	Rack      string `json:"rack"`
	Version   string `json:"version"`
	Available bool   `json:"available"`
	Why       string `json:"why,omitempty"` // MemberState.Why when unavailable
}

// PlanBatch is up to max_parallel machines of one rack stepping together.
type PlanBatch struct {
	Machines []string `json:"machines"`
	Rack     string   `json:"rack"`
	// Wave and Domain: the batch's data center (with waves) and domain
	// value (with a domain).
	Wave   string `json:"wave,omitempty"`
	Domain string `json:"domain,omitempty"`
	// Unavailable are the batch's machines that are unavailable now
	// (absent, mid-step, unhealthy): they hold the batch back.
	Unavailable []string `json:"unavailable"`
	// Headroom is available members after the batch minus quorum.Min
	// (negative: the batch would wait); nil for a removal (no quorum).
	Headroom *int      `json:"headroom"`
	Start    time.Time `json:"start"`
	Finish   time.Time `json:"finish"`
	// Resumes: the window closes before this batch; it starts at the
	// next opening.
	Resumes bool `json:"resumes"`
}

// HasChanges reports whether the push would queue anything.
func (p *NightPlan) HasChanges() bool { return !p.Unchanged && len(p.Entries) > 0 }

// PlanNight simulates pushing sp at now against the live state of c: it
// reads HEAD, the queue, the control node, /dc/bad, the blobs and every
// service's fleet, and writes nothing. The queue is the one Push would
// write (computed by the same newQueue, superseding an unfinished rollout
// as --supersede would, and saying that it needs it).
func PlanNight(ctx context.Context, c *znodes.Conn, sp *spec.Spec, now time.Time) (*NightPlan, error) {
	id := sp.ID()
	wrap := func(err error) error { return fmt.Errorf("plan %s: %w", spec.ShortID(id), err) }
	head, _, err := ReadHead(c)
	if err != nil {
		return nil, wrap(err)
	}
	np := &NightPlan{SpecID: id, Name: sp.Name, Now: now, WindowOpen: sp.Window.Open(now),
		Changes: []spec.Change{}, Entries: []znodes.DeployEntry{}, Services: []ServicePlan{}, Warnings: []PlanWarning{}}
	var cur *spec.Spec
	if head != nil {
		np.HeadID = head.SpecID
		if head.SpecID == id {
			np.Unchanged = true
			return np, nil
		}
		if cur, err = LoadSpec(c, head.SpecID); err != nil {
			return nil, wrap(err)
		}
	}
	warn := func(code, svc, format string, a ...any) {
		np.Warnings = append(np.Warnings, PlanWarning{Code: code, Service: svc, Message: fmt.Sprintf(format, a...)})
	}

	changes, err := spec.Plan(cur, sp)
	if err != nil {
		return nil, wrap(err)
	}
	if changes != nil {
		np.Changes = changes
	}
	queue, err := ReadQueue(c)
	if err != nil {
		return nil, wrap(err)
	}
	unfinished := unfinishedEntries(queue)
	if len(unfinished) > 0 {
		warn(WarnUnfinished, "", "a rollout is unfinished: %s; push needs --supersede to replace it", strings.Join(unfinished, ", "))
	}
	entries, _, err := newQueue(cur, sp, id, changes, queue, haltedSpecs(c, head, cur, queue), false, now.UTC())
	if err != nil {
		return nil, wrap(err)
	}
	if entries != nil {
		np.Entries = entries
	}
	if len(entries) == 0 {
		return np, nil // nothing would step: no warnings either
	}

	if !np.WindowOpen {
		if next := sp.Window.NextOpen(now); next.IsZero() {
			warn(WarnWindowClosed, "", "the window never opens")
		} else {
			warn(WarnWindowClosed, "", "the window is closed now; it opens at %s", stamp(next))
		}
	}
	ctl, _, err := ReadControl(c)
	if err != nil {
		return nil, wrap(err)
	}
	if ctl.Paused {
		why := ""
		if ctl.Reason != "" {
			why = ": " + ctl.Reason
		}
		warn(WarnPaused, "", "rollouts are paused by %s since %s%s; dcroll resume lifts it", dash(ctl.By), stamp(ctl.At), why)
	}
	missing, err := MissingBlobs(c, sp.Blobs())
	if err != nil {
		return nil, wrap(err)
	}
	if len(missing) > 0 {
		warn(WarnMissingBlobs, "", "blobs not published: %s (dcroll blob publish FILE)", strings.Join(missing, ", "))
	}
	if err := badBuildWarnings(c, sp, warn); err != nil {
		return nil, wrap(err)
	}

	reasons := map[string][]string{}
	for _, ch := range changes {
		reasons[ch.Service] = ch.Reasons
	}
	night, err := ReadRollout(c)
	if err != nil {
		return nil, wrap(err)
	}
	var steps map[string]znodes.StepStat
	if night != nil {
		steps = night.Steps
	}
	t := now
	if !np.WindowOpen {
		t = sp.Window.NextOpen(now)
	}
	np.Start, np.Nights = t, 1
	stuck := t.IsZero()
	for _, e := range entries {
		s, err := planService(c, sp, cur, e, reasons, steps, warn)
		if err != nil {
			return nil, wrap(err)
		}
		if e.State == znodes.DeployHalted {
			warn(WarnStillHalted, e.Service, "%s", e.Reason+"; dcroll resume retries it, push --force does not keep it halted")
		}
		s.Start = t
		for i := range s.Batches {
			b := &s.Batches[i]
			if stuck {
				break
			}
			start, resumed, ok := fit(sp.Window, t, s.Step)
			if !ok {
				warn(WarnWindowTooShort, e.Service, "a step (%s) does not fit in an opening of the window", s.Step)
				stuck = true
				break
			}
			if resumed {
				np.Nights++
			}
			b.Start, b.Finish, b.Resumes = start, start.Add(s.Step), resumed
			t = b.Finish
			np.Duration += s.Step
		}
		if stuck {
			s.Start = time.Time{}
		} else {
			s.Finish = t
		}
		np.Services = append(np.Services, s)
	}
	if !stuck {
		np.Finish = t
	} else {
		np.Start = time.Time{}
	}
	return np, nil
}

// fit returns when a step of length d starting at t or later can start:
// agents only start a step when the window is open with the step's time
// left. resumed says it waits for a later opening; !ok: it never fits.
func fit(w *spec.Window, t time.Time, d time.Duration) (start time.Time, resumed, ok bool) {
	if w == nil {
		return t, false, true
	}
	for range 8 {
		if w.Open(t) && w.Remaining(t) >= d {
			return t, resumed, true
		}
		next := w.NextOpen(t.Add(w.Remaining(t)))
		if next.IsZero() || !next.After(t) {
			return time.Time{}, false, false
		}
		t, resumed = next, true
	}
	return time.Time{}, false, false
}

// planService lays out one entry: members, batches, headroom, and the
// warnings about them.
func planService(c *znodes.Conn, sp *spec.Spec, cur *spec.Spec, e znodes.DeployEntry, reasons map[string][]string,
	steps map[string]znodes.StepStat, warn func(code, svc, format string, a ...any)) (ServicePlan, error) {
	s := ServicePlan{Service: e.Service, Kind: e.Kind, From: e.FromVersion, To: e.Version, State: e.State,
		Reasons: reasons[e.Service], Members: []PlanMember{}, Batches: []PlanBatch{}}
	if s.Reasons == nil {
		s.Reasons = []string{"unfinished in the superseded rollout"}
	}
	for _, r := range s.Reasons {
		if strings.HasPrefix(r, "downgrade ") {
			s.Downgrade = true
		}
	}
	svc := sp.Services[e.Service]
	if svc == nil && cur != nil {
		svc = cur.Services[e.Service] // a removal: its old settings steer it
	}
	if svc != nil {
		s.Quorum, s.MaxParallel = svc.Quorum.String(), max(svc.MaxParallel, 1)
	}
	removal := e.Kind == znodes.KindRemoved
	s.Step = batchEstimate(svc, e.Kind)
	var perMember time.Duration
	if st, ok := steps[e.Service]; ok && st.Samples > 0 {
		// Measured per member step: a batch of max_parallel machines.
		perMember = time.Duration(st.Seconds * float64(time.Second))
		s.Step = perMember * time.Duration(max(s.MaxParallel, 1))
		s.Measured = true
	}

	f, err := c.ReadFleet(e.Service)
	if err != nil {
		return s, err
	}
	states := f.States()
	n, available := len(states), 0
	for _, m := range states {
		pm := PlanMember{Machine: m.Machine, Rack: m.Rack, Available: m.Available, Why: m.Why()}
		switch {
		case m.Current != nil:
			pm.Version = m.Current.Version
		case m.Member != nil:
			pm.Version = m.Member.Version
		}
		s.Members = append(s.Members, pm)
		if m.Available {
			available++
			continue
		}
		code := WarnUnavailable
		if m.Current == nil && m.Down == nil {
			code = WarnAbsent
		}
		warn(code, e.Service, "%s is %s: it holds the entry back", m.Machine, m.Why())
	}
	if svc != nil {
		s.QuorumMin = svc.Quorum.Min(n)
	}
	if e.Kind == string(spec.ChangeNew) {
		return s, nil // machines start a new service; nothing steps
	}
	if n == 0 {
		warn(WarnNoMembers, e.Service, "no members: no machine can complete the entry")
		return s, nil
	}
	if !removal && svc != nil {
		names := make([]string, n)
		for i, m := range states {
			names[i] = m.Machine
		}
		switch {
		case svc.Quorum.Percent == 0 && svc.Quorum.Count > n:
			warn(WarnQuorum, e.Service, "quorum %d is larger than its %d members (%s): push refuses it", svc.Quorum.Count, n, strings.Join(names, ","))
		case s.QuorumMin >= n:
			warn(WarnQuorum, e.Service, "quorum %s of its %d members (%s) leaves none free to step: push refuses it", svc.Quorum, n, strings.Join(names, ","))
		}
	}

	// Batches: racks one after another (sorted), max_parallel machines of
	// one rack at a time; with waves, data center after data center; with
	// a domain, its values instead of racks, as many machines of one at a
	// time as max_parallel and the quorum allow (planGroups).
	groups, per := planGroups(&s, svc, states, removal, warn)
	if s.Measured && s.Domain != "" {
		s.Step = perMember * time.Duration(per)
	}
	headroomWarned := false
	for _, g := range groups {
		ms := g.members
		for i := 0; i < len(ms); i += per {
			b := PlanBatch{Rack: g.rack(ms[i:min(i+per, len(ms))]), Wave: g.wave, Domain: g.domain, Machines: []string{}, Unavailable: []string{}}
			down := 0
			for _, m := range ms[i:min(i+per, len(ms))] {
				b.Machines = append(b.Machines, m.Machine)
				if m.Available {
					down++
				} else {
					b.Unavailable = append(b.Unavailable, m.Machine)
				}
			}
			if !removal {
				h := available - down - s.QuorumMin
				b.Headroom = &h
				if h < 0 && !headroomWarned {
					headroomWarned = true
					warn(WarnHeadroom, e.Service, "batch %s would leave %d available, below the quorum %d: it waits for machines to come back",
						strings.Join(b.Machines, ","), available-down, s.QuorumMin)
				}
			}
			s.Batches = append(s.Batches, b)
		}
	}
	return s, nil
}

// badBuildWarnings warns about every build of sp recorded in /dc/bad (the
// keys push checks).
func badBuildWarnings(c *znodes.Conn, sp *spec.Spec, warn func(code, svc, format string, a ...any)) error {
	bad, err := readSpecBad(c, sp)
	if err != nil {
		return err
	}
	for _, b := range bad {
		warn(WarnBadBuild, b.service, "%s; push needs a fixed build, or --force", b.line)
	}
	return nil
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format("2006-01-02 15:04 MST")
}

// WriteText renders the plan for a terminal: a header, a table per
// service (one row per batch), then the warnings.
func (p *NightPlan) WriteText(w io.Writer) error {
	if p.Unchanged {
		_, err := fmt.Fprintf(w, "HEAD already points to %s (%s): nothing to do\n", spec.ShortID(p.SpecID), p.Name)
		return err
	}
	head := "none"
	if p.HeadID != "" {
		head = spec.ShortID(p.HeadID)
	}
	fmt.Fprintf(w, "plan: HEAD %s -> %s (%s)\n", head, spec.ShortID(p.SpecID), p.Name)
	if len(p.Entries) == 0 {
		fmt.Fprintln(w, "no service changes: agents only record the new spec id")
	} else {
		order := make([]string, len(p.Entries))
		for i, e := range p.Entries {
			order[i] = e.Service + " (" + e.Kind + ")"
		}
		fmt.Fprintf(w, "deploy order: %s\n", strings.Join(order, " -> "))
		switch {
		case p.Start.IsZero():
			fmt.Fprintln(w, "timing: the rollout cannot be scheduled in the window")
		default:
			fmt.Fprintf(w, "timing: start %s, finish %s (%s of steps, %d night(s); measured step times where known, else %s per step beyond min_healthy)\n",
				stamp(p.Start), stamp(p.Finish), p.Duration, p.Nights, PlanStepOverhead)
		}
	}
	for _, s := range p.Services {
		change := s.Kind
		if s.Downgrade {
			change += ", DOWNGRADE"
		}
		if s.State == znodes.DeployHalted {
			change += ", HALTED"
		}
		fmt.Fprintf(w, "\n%s %s -> %s (%s): %s\n", s.Service, dash(s.From), dash(s.To), change, strings.Join(s.Reasons, ", "))
		var avail []string
		for _, m := range s.Members {
			st := "available"
			if !m.Available {
				st = m.Why
			}
			avail = append(avail, fmt.Sprintf("%s[%s %s %s]", m.Machine, dash(m.Rack), dash(m.Version), st))
		}
		if len(avail) == 0 {
			avail = []string{"none"}
		}
		fmt.Fprintf(w, "  members: %s\n", strings.Join(avail, " "))
		if s.Kind == string(spec.ChangeNew) {
			fmt.Fprintln(w, "  new service: its machines start it, nothing steps")
			continue
		}
		if len(s.Batches) == 0 {
			continue
		}
		how := "estimated from the health settings"
		if s.Measured {
			how = "measured"
		}
		fmt.Fprintf(w, "  quorum %s (min %d of %d), max_parallel %d, step ~%s (%s)\n", dash(s.Quorum), s.QuorumMin, len(s.Members), s.MaxParallel, s.Step.Round(100*time.Millisecond), how)
		writeDomains(w, s)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  BATCH\t"+domainHead(s)+"RACK\tMACHINES\tHEADROOM\tSTART\tFINISH\tNOTES")
		for i, b := range s.Batches {
			h := "-"
			if b.Headroom != nil {
				h = fmt.Sprint(*b.Headroom)
			}
			var notes []string
			if b.Resumes {
				notes = append(notes, "window closed before: resumes at next opening")
			}
			if len(b.Unavailable) > 0 {
				notes = append(notes, "unavailable now: "+strings.Join(b.Unavailable, ","))
			}
			if b.Headroom != nil && *b.Headroom < 0 {
				notes = append(notes, "below quorum: waits")
			}
			fmt.Fprintf(tw, "  %d\t%s%s\t%s\t%s\t%s\t%s\t%s\n", i+1, domainCells(s, b), dash(b.Rack), strings.Join(b.Machines, ","), h,
				clock(b.Start), clock(b.Finish), dash(strings.Join(notes, "; ")))
		}
		tw.Flush()
	}
	if len(p.Warnings) > 0 {
		fmt.Fprintf(w, "\nwarnings (%d):\n", len(p.Warnings))
		for _, x := range p.Warnings {
			svc := ""
			if x.Service != "" {
				svc = x.Service + ": "
			}
			fmt.Fprintf(w, "  ! %s%s [%s]\n", svc, x.Message, x.Code)
		}
	}
	return nil
}

func clock(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format("Jan 02 15:04")
}
