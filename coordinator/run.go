package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"

	"dcroll/spec"
	"dcroll/znodes"
)

// Config configures Run.
type Config struct {
	// Conn is the ZooKeeper connection (owned by the caller).
	Conn *znodes.Conn
	// ID names this coordinator in the election (default hostname:pid).
	ID string
	// HTTPAddr serves the dashboard, /api/status and /metrics ("" = off).
	HTTPAddr string
	// Interval is the leader's clock for its deadlines (progress, no
	// members, canary bake, window; default 1s). The queue and the fleets
	// are watched: a change is acted on at once, and a tick with nothing
	// changed reads nothing from ZooKeeper.
	Interval time.Duration
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// Listening, if set, receives the dashboard's bound address.
	Listening func(addr string)
	// Mount adds handlers to the dashboard's server (e.g. "/announce": a
	// rack-aware tracker, so the tracker runs wherever coordinators run).
	Mount map[string]http.Handler
	// NoMembersAfter halts the active deploy entry of a service that has no
	// member at all (no member record, registration or step record) for
	// this long, so that a spec naming a service nobody runs does not
	// block the queue silently. It is measured from when the leader first
	// saw that entry active with no members (a new leader starts over).
	// Default DefaultNoMembersAfter; negative: never.
	NoMembersAfter time.Duration
	// Now is the leader's clock (default time.Now).
	Now func() time.Time
}

// ProgressDeadlinePrefix starts the reason of an entry halted because its
// service made no progress for its spec's progress_deadline.
const ProgressDeadlinePrefix = "no progress for "

// DefaultNoMembersAfter is the default Config.NoMembersAfter.
const DefaultNoMembersAfter = 10 * time.Minute

// ElectionName is the election every coordinator joins.
const ElectionName = "coordinator"

// Run serves the dashboard and, while elected leader, advances the deploy
// queue: it marks the active entry done once its service is complete (every
// member, absent ones included, runs the target: DeployEntry.CompletedBy),
// halts it when the service has had no member for NoMembersAfter, and
// halts it when the service made no progress for its spec's
// progress_deadline (see advancer.noProgress). All
// progress lives in ZooKeeper, so a new leader resumes where the old one
// stopped; agents advance the queue too, and the versioned write makes each
// advance happen once.
func Run(ctx context.Context, cfg Config) error {
	if cfg.ID == "" {
		host, _ := os.Hostname()
		cfg.ID = fmt.Sprintf("%s:%d", host, os.Getpid())
	}
	if cfg.Interval == 0 {
		cfg.Interval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.NoMembersAfter == 0 {
		cfg.NoMembersAfter = DefaultNoMembersAfter
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger.With("component", "coordinator", "id", cfg.ID)
	c := cfg.Conn
	if err := c.EnsureSkeleton(); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	errc := make(chan error, 1)
	el := znodes.NewElection(c, ElectionName, cfg.ID)
	if cfg.HTTPAddr != "" {
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("coordinator: dashboard listen %s: %w", cfg.HTTPAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/", dashboard(c, el))
		for p, h := range cfg.Mount {
			mux.Handle(p, h)
		}
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("coordinator: dashboard: %w", err)
			}
		}()
		defer srv.Close()
		log.Info("dashboard listening", "addr", "http://"+ln.Addr().String()+"/")
		if cfg.Listening != nil {
			cfg.Listening(ln.Addr().String())
		}
	}
	go func() {
		errc <- el.Run(ctx, func(leaderCtx context.Context) error {
			log.Info("elected leader: advancing the deploy queue")
			a := &advancer{c: c, log: log, now: cfg.Now, noMembersAfter: cfg.NoMembersAfter, night: newNightWriter(c, cfg.ID)}
			return a.run(leaderCtx, cfg.Interval)
		})
	}()
	select {
	case err := <-errc:
		if ctx.Err() != nil {
			return nil
		}
		return err
	case <-ctx.Done():
		return nil
	}
}

// advancer is the leader's queue driver. Under Run it reads through a
// leaderView (the queue, HEAD and the control node through one WatchSet,
// fleets from a FleetCache): a tick with nothing changed reads nothing
// from ZooKeeper, and it runs at every change as well as every tick (the
// tick is the clock of the deadlines: progress, no members, canary bake,
// window). Built without a view (tests driving once), it reads plainly.
type advancer struct {
	c   *znodes.Conn
	log *slog.Logger
	now func() time.Time
	// view is the watched read model (nil: plain reads every tick).
	view *leaderView
	// onTick, if set, is called after every round (tests count rounds).
	onTick func()
	// lastPlain is when a round last read plainly (see checkRead), and
	// plainFleet the active entry's fleet (of activeSvc) it read.
	lastPlain  time.Time
	plainFleet *znodes.Fleet
	activeSvc  string
	// noMembersAfter: see Config.NoMembersAfter (negative: never).
	noMembersAfter time.Duration

	// The active entry last seen with no members, and since when: the
	// no-members deadline runs from there, so a new leader starts the
	// clock again (it halts later, never earlier) and no clock but the
	// leader's is involved.
	emptyNode  string
	emptySince time.Time

	// The active entry being watched for progress, its last progress
	// fingerprint and since when it has not changed: like the no-members
	// deadline, a new leader starts the clock again.
	progressNode  string
	progressPrint string
	progressSince time.Time
	// spec caches the last spec loaded for a deadline (specs are immutable).
	spec   *spec.Spec
	specID string

	// night writes the night record (/dc/rollout) after every tick.
	night *nightWriter
}

// run advances the queue at every change of what it watches and every
// tick, until ctx ends (the view's goroutines end with it).
func (a *advancer) run(ctx context.Context, every time.Duration) error {
	a.view = newLeaderView(ctx, a.c)
	if a.night != nil {
		a.night.view = a.view
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := a.once(); err != nil {
			a.log.Warn("advance deploy queue", "err", err)
		}
		if a.onTick != nil {
			a.onTick()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-a.view.nudge:
			a.view.stale()
		case <-a.view.fleets.Changed():
		}
	}
}

// once advances the queue, then writes the night record.
func (a *advancer) once() error {
	// Every checkRead, one round reads plainly, the way a leader without
	// a cache would: if the watched view missed a change, the rollout is
	// late by that much, never stuck, and the log says so.
	if a.view != nil && a.now().Sub(a.lastPlain) >= checkRead {
		a.lastPlain = a.now()
		view := a.view
		a.view = nil
		defer func() { a.view = view }()
		defer func() { view.check(a.activeSvc, a.plainFleet, a.log) }()
	}
	f, err := a.advance()
	if a.view == nil {
		a.plainFleet = f // this round read plainly: compared with the view
	}
	if errors.Is(err, errNotRead) {
		return nil // the fleet cache nudges once it has read it
	}
	if err != nil {
		return err
	}
	if a.night == nil {
		return nil
	}
	return a.night.tick(a.now(), f)
}

// checkRead is how often the leader reads the queue and the fleets of
// its active entry plainly, besides its watched view.
const checkRead = 15 * time.Second

// check compares the view's fleet of service with plain, the fleet a
// plain round just read (nil: none), and says when they differ: a missed
// watch event would show here.
func (v *leaderView) check(service string, plain *znodes.Fleet, log *slog.Logger) {
	if plain == nil || service == "" {
		return
	}
	if cached, ok := v.fleets.Fleet(service); ok && fleetKey(cached) != fleetKey(*plain) {
		log.Warn("the watched fleet differed from a plain read: this round used the plain read", "service", service)
	}
}

// fleetKey is what the leader's rules look at in a fleet, as a string.
func fleetKey(f znodes.Fleet) string {
	var b strings.Builder
	for _, s := range f.States() {
		fmt.Fprintf(&b, "%s/%v/%q;", s.Machine, s.Down != nil, s.Why())
		if c := s.Current; c != nil {
			fmt.Fprintf(&b, "%s/%s/%s/%v;", c.Version, c.SpecID, c.State, c.Healthy)
		}
	}
	return b.String()
}

// errNotRead: a fleet the round needs is not in the cache yet.
var errNotRead = errors.New("fleet not read yet")

// readQueue is the deploy queue, from the view when there is one.
func (a *advancer) readQueue() ([]QueueEntry, error) {
	if a.view == nil {
		return ReadQueue(a.c)
	}
	if err := a.view.refresh(); err != nil {
		return nil, err
	}
	return a.view.queue, nil
}

// readFleet is service's fleet, from the cache when there is one
// (errNotRead until it has been read).
func (a *advancer) readFleet(service string) (znodes.Fleet, error) {
	if a.view == nil {
		return a.c.ReadFleet(service)
	}
	return a.view.fleet(service)
}

// readControl is the control node, from the view when there is one.
func (a *advancer) readControl() (znodes.Control, error) {
	if a.view == nil {
		ctl, _, err := ReadControl(a.c)
		return ctl, err
	}
	if err := a.view.refresh(); err != nil {
		return znodes.Control{}, err
	}
	return a.view.ctl, nil
}

// wrote says the advancer wrote a deploy entry: the view re-reads the
// queue before it is used again (the entry's watch fires too, but maybe
// after the next read).
func (a *advancer) wrote() {
	if a.view != nil {
		a.view.stale()
	}
}

// leaderView is the leader's watched read model: HEAD, the control node
// and the deploy queue (list and entries) through one WatchSet, re-read
// only after one of their watches fired (O(entries) reads per change,
// none otherwise), and the fleets of the unfinished entries' services in
// a FleetCache (O(1) reads per change of a machine). The advancer's
// goroutine owns it.
type leaderView struct {
	c      *znodes.Conn
	ws     *znodes.WatchSet
	nudge  chan struct{} // the WatchSet's
	fleets *znodes.FleetCache

	gen   uint64 // session generation the watches belong to
	fresh bool   // nothing changed since the last read
	head  *znodes.Head
	ctl   znodes.Control
	queue []QueueEntry
}

func newLeaderView(ctx context.Context, c *znodes.Conn) *leaderView {
	nudge := make(chan struct{}, 1)
	_, gen, _ := c.State()
	return &leaderView{c: c, ws: znodes.NewWatchSet(ctx, c.ZK(), nudge), nudge: nudge,
		fleets: znodes.NewFleetCache(ctx, c), gen: gen}
}

// stale makes the next read go to ZooKeeper.
func (v *leaderView) stale() { v.fresh = false }

// refresh re-reads HEAD, the control node and the queue if a watch fired
// (or the session is new) since the last read, and tracks the fleets of
// the unfinished entries.
func (v *leaderView) refresh() error {
	if _, gen, _ := v.c.State(); gen != v.gen {
		v.ws.Reset() // the old session's watches are gone
		v.gen, v.fresh = gen, false
	}
	select {
	case <-v.nudge:
		v.fresh = false
	default:
	}
	if v.fresh {
		return nil
	}
	p := v.c.Paths()
	var head *znodes.Head
	b, _, err := v.ws.Get(p.Head())
	switch {
	case errors.Is(err, zk.ErrNoNode):
	case err != nil:
		return fmt.Errorf("read HEAD: %w", err)
	default:
		head = &znodes.Head{}
		if err := znodes.Decode(b, head); err != nil {
			return fmt.Errorf("read HEAD: %w", err)
		}
	}
	var ctl znodes.Control
	b, _, err = v.ws.Get(p.Control())
	switch {
	case errors.Is(err, zk.ErrNoNode):
	case err != nil:
		return fmt.Errorf("read control: %w", err)
	default:
		if err := znodes.Decode(b, &ctl); err != nil {
			return fmt.Errorf("read control: %w", err)
		}
	}
	byName := map[string]QueueEntry{}
	var names []string
	err = v.ws.Each(p.Deploy(), func(name string, b []byte, st *zk.Stat) error {
		var e znodes.DeployEntry
		if err := znodes.Decode(b, &e); err != nil {
			return fmt.Errorf("%s: %w", p.DeployEntry(name), err)
		}
		byName[name] = QueueEntry{Node: name, ZVersion: st.Version, DeployEntry: e}
		names = append(names, name)
		return nil
	})
	if err != nil {
		return fmt.Errorf("read deploy queue: %w", err)
	}
	znodes.SortSequential(names) // ReadQueue's order
	q := make([]QueueEntry, 0, len(names))
	for _, n := range names {
		q = append(q, byName[n])
	}
	want := map[string]bool{}
	for _, e := range q {
		if e.State != znodes.DeployDone {
			want[e.Service] = true
			v.fleets.Track(e.Service)
		}
	}
	for _, e := range v.queue {
		if !want[e.Service] {
			v.fleets.Untrack(e.Service)
		}
	}
	v.head, v.ctl, v.queue, v.fresh = head, ctl, q, true
	return nil
}

// fleet is service's cached fleet (tracking it if the queue did not).
func (v *leaderView) fleet(service string) (znodes.Fleet, error) {
	v.fleets.Track(service)
	f, ok := v.fleets.Fleet(service)
	if !ok {
		return f, errNotRead
	}
	return f, nil
}

// canaryFailed: member s finished its step of entry e (no step record,
// not mid-step) and is not running healthy on the target.
func canaryFailed(e QueueEntry, s znodes.MemberState) bool {
	c := s.Current
	if c == nil || s.Down != nil || c.Version != e.Version || c.SpecID != e.SpecID {
		return false
	}
	switch c.State {
	case znodes.StateStarting, znodes.StateUpgrading:
		return false // still in its step
	}
	return c.State != znodes.StateRunning || !c.Healthy
}

// confirm re-reads one member of service plainly before an irreversible
// verdict on it (a halt): the cache may hold one node of a transaction
// without the other for the moment between their events.
func (a *advancer) confirm(service, machine string, still func(znodes.MemberState) bool) bool {
	if a.view == nil {
		return true // plain reads already
	}
	f, err := a.c.ReadFleet(service)
	if err != nil {
		a.log.Warn("confirm before halting", "service", service, "machine", machine, "err", err)
		return false
	}
	for _, s := range f.States() {
		if s.Machine == machine {
			return still(s)
		}
	}
	return false
}

// advance marks the active entry done if its service is complete, and
// repeats for the next one; it halts an active entry whose service has had
// no member for longer than the deadline, or no progress for its
// progress deadline, and runs its canary phase. A removal with no member
// is done: nothing runs the service. It returns the fleet of the entry
// left active (nil: none, or halted).
func (a *advancer) advance() (*znodes.Fleet, error) {
	for {
		q, err := a.readQueue()
		if err != nil {
			return nil, err
		}
		e := Active(q)
		a.activeSvc = ""
		if e == nil || e.State == znodes.DeployHalted {
			a.emptyNode, a.progressNode = "", ""
			return nil, nil
		}
		a.activeSvc = e.Service
		f, err := a.readFleet(e.Service)
		if err != nil {
			return nil, err
		}
		states := f.States()
		if len(states) == 0 && e.Kind != znodes.KindRemoved {
			return &f, a.noMembers(*e)
		}
		a.emptyNode = ""
		if len(states) > 0 && !e.CompletedBy(f) {
			sp, err := a.loadSpec(e.SpecID)
			if err != nil {
				return nil, err
			}
			v := entryView{e: *e, svc: sp.Services[e.Service], states: states}
			baking, err := a.canary(v)
			if err != nil {
				return nil, err
			}
			if err := a.domains(v); err != nil {
				return nil, err
			}
			return &f, a.noProgress(*e, states, baking)
		}
		ok, err := MarkDone(a.c, *e)
		a.wrote()
		if err != nil {
			return nil, err
		}
		if ok {
			a.log.Info("service rolled out", "service", e.Service, "version", e.Version, "kind", e.Kind, "members", len(states))
		}
	}
}

// canary runs the canary phase of the active entry v: once its canaries
// are all healthy on the target it records since when (BakeSince), after
// the bake time it promotes the entry, and it halts the entry when a
// canary that finished its step is registered and unhealthy on the target
// (the canary failed after its health wait). A canary that goes absent
// restarts the bake. baking reports that the rest of the service is held
// on purpose (the progress deadline does not run).
func (a *advancer) canary(v entryView) (baking bool, err error) {
	cs := canaryState(v)
	if cs == nil || cs.Promoted {
		return false, nil
	}
	e := v.e
	for _, s := range v.states {
		if !canaryFailed(e, s) {
			continue
		}
		if !a.confirm(e.Service, s.Machine, func(s znodes.MemberState) bool { return canaryFailed(e, s) }) {
			continue // the cache had half of a transaction: seen again at the next change
		}
		c := s.Current
		reason := fmt.Sprintf("canary %s %s on %s after its step: %s; dcroll rollback, or dcroll resume to retry",
			s.Machine, dash(c.State), e.Version, firstLine(dash(c.Detail), 160))
		if c.State == znodes.StateRunning {
			reason = fmt.Sprintf("canary %s unhealthy on %s after its step: %s; dcroll rollback, or dcroll resume to retry",
				s.Machine, e.Version, firstLine(dash(c.Detail), 160))
		}
		ok, err := Halt(a.c, e, reason, s.Machine)
		a.wrote()
		if err != nil {
			return false, err
		}
		if ok {
			a.log.Warn("halted the rollout: canary failed", "service", e.Service, "machine", s.Machine, "version", e.Version)
		}
		return false, nil
	}
	now := a.now()
	need := min(cs.Machines, len(v.states))
	switch {
	case cs.Done < need:
		if !e.BakeSince.IsZero() { // a canary fell out: the bake starts over
			_, err := a.c.SetEntry(e, func(d *znodes.DeployEntry) { d.BakeSince = time.Time{} })
			a.wrote()
			return false, err
		}
		return false, nil
	case cs.Done >= len(v.states):
		return false, nil // every member is a canary: nothing to hold
	case e.BakeSince.IsZero():
		ok, err := a.c.SetEntry(e, func(d *znodes.DeployEntry) { d.BakeSince = now.UTC() })
		a.wrote()
		if ok {
			a.log.Info("canaries healthy: bake starts", "service", e.Service, "canaries", cs.Done, "bake", cs.Bake)
		}
		return true, err
	case cs.Bake > 0 && !now.Before(cs.BakeUntil):
		ok, err := a.c.SetEntry(e, func(d *znodes.DeployEntry) {
			d.Promoted, d.PromotedBy, d.PromotedAt = true, PromotedByBake, now.UTC()
		})
		a.wrote()
		if ok {
			a.log.Info("canaries baked: promoted", "service", e.Service, "canaries", cs.Done, "bake", cs.Bake)
		}
		return false, err
	}
	return true, nil
}

// PromotedByBake is DeployEntry.PromotedBy when the bake time promoted it.
const PromotedByBake = "bake"

// noMembers starts or checks the no-members deadline of the active entry e.
func (a *advancer) noMembers(e QueueEntry) error {
	now := a.now()
	if a.emptyNode != e.Node {
		a.emptyNode, a.emptySince = e.Node, now
		return nil
	}
	if a.noMembersAfter < 0 || now.Sub(a.emptySince) < a.noMembersAfter {
		return nil
	}
	reason := fmt.Sprintf("no machine has registered service %s for %s: start agents with --service %s, or remove %s from the spec",
		e.Service, a.noMembersAfter, e.Service, e.Service)
	ok, err := Halt(a.c, e, reason, "")
	a.wrote()
	if err != nil {
		return err
	}
	if ok {
		a.log.Warn("halted the rollout: no members", "service", e.Service, "entry", e.Node, "after", a.noMembersAfter)
	}
	a.emptyNode = ""
	return nil
}

// fingerprint is what counts as progress of entry e: its state, and every
// member's version, state, health and step record. Any change restarts the
// progress clock.
func fingerprint(e QueueEntry, states []znodes.MemberState) string {
	var b strings.Builder
	b.WriteString(e.State)
	for _, s := range states { // sorted by machine
		b.WriteString("|" + s.Machine + ":")
		if c := s.Current; c != nil {
			b.WriteString(c.Version + ":" + c.SpecID + ":" + c.State + ":" + strconv.FormatBool(c.Healthy))
		} else {
			b.WriteString("absent")
		}
		if s.Down != nil {
			b.WriteString(":step")
		}
	}
	return b.String()
}

// noProgress starts, restarts or checks the progress deadline of the active,
// unfinished entry e whose members are states. The clock restarts whenever
// the fingerprint changes, and does not run while the rollout may not
// progress anyway (dcroll pause, the spec's window closed, canaries
// baking).
func (a *advancer) noProgress(e QueueEntry, states []znodes.MemberState, baking bool) error {
	now := a.now()
	sp, err := a.loadSpec(e.SpecID)
	if err != nil {
		return err
	}
	ctl, err := a.readControl()
	if err != nil {
		return err
	}
	fp := fingerprint(e, states)
	if a.progressNode != e.Node || a.progressPrint != fp || ctl.Paused || !sp.Window.Open(now) || baking {
		a.progressNode, a.progressPrint, a.progressSince = e.Node, fp, now
		return nil
	}
	deadline := sp.Services[e.Service].Deadline() // a removal: the default
	if now.Sub(a.progressSince) < deadline {
		return nil
	}
	reason := fmt.Sprintf("%s%s on %s: %s: see dcroll status; dcroll resume to retry",
		ProgressDeadlinePrefix, deadline, e.Service, strings.Join(stuck(e, states), ", "))
	ok, err := Halt(a.c, e, reason, "")
	a.wrote()
	if err != nil {
		return err
	}
	if ok {
		a.log.Warn("halted the rollout: no progress", "service", e.Service, "entry", e.Node, "after", deadline)
	}
	a.progressNode = ""
	return nil
}

// stuck describes the members of e's service that have not reached its
// target: "m3 staging", "m5 absent (last seen 1.0.0 at ...)", "m2 runs 1.0.0".
func stuck(e QueueEntry, states []znodes.MemberState) []string {
	var out []string
	for _, s := range states {
		c := s.Current
		switch {
		case !s.Available:
			out = append(out, s.Machine+" "+s.Why())
		case e.Kind == znodes.KindRemoved:
			out = append(out, s.Machine+" still runs "+dash(c.Version))
		case c.Version != e.Version || c.SpecID != e.SpecID:
			out = append(out, s.Machine+" runs "+dash(c.Version))
		}
	}
	if len(out) == 0 {
		out = append(out, "no member moved")
	}
	return out
}

// loadSpec returns the stored spec id, from the cache when it is the last.
func (a *advancer) loadSpec(id string) (*spec.Spec, error) {
	if a.spec != nil && a.specID == id {
		return a.spec, nil
	}
	sp, err := LoadSpec(a.c, id)
	if err != nil {
		return nil, err
	}
	a.spec, a.specID = sp, id
	return sp, nil
}
