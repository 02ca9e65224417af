package znodes

import (
	"context"
	"errors"
	"path"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"
)

// FleetCache keeps the Fleet of the services it tracks in memory, kept
// current by watches (a WatchSet per tracked service, read through GetFn
// and ChildrenFn): one children watch per directory (Paths.Members,
// Current and Down of the service) and one data watch per child. When a
// watch fires only what it names is read again: a child whose data
// changed is read (one request), a deleted child is dropped (none), a
// directory whose list changed is listed and only its new children are
// read. So a change of one machine costs O(1) ZooKeeper requests however
// large the service, and an unchanged fleet costs none.
//
// A directory that does not exist yet is watched through its parent's
// children (one watch per parent, shared by every tracked service), never
// with an exists-watch that would stay on the server if it is never
// created. A new session (a new generation of the Conn) resets
// everything: fleets are not ready again until re-read. Its goroutines
// (one loop, one per armed watch) end with the context given to
// NewFleetCache; those of an untracked service end at Untrack.
type FleetCache struct {
	c       *Conn
	ctx     context.Context
	changed chan struct{} // buffer 1: a fleet changed (or went not ready)
	wake    chan struct{} // buffer 1: work for the loop
	done    chan struct{}
	reads   atomic.Uint64

	mu      sync.Mutex
	tracked map[string]bool   // what Track/Untrack asked for
	snaps   map[string]*Fleet // ready fleets
	events  []fcEvent         // fired watches the loop has not handled
	wsets   map[string]*WatchSet

	// Owned by the loop goroutine.
	gen       uint64
	insts     map[string]*fcInst
	top       *WatchSet // parent directories of missing service directories
	topCancel context.CancelFunc
}

// The three directories of a service's fleet.
const (
	fcMembers = iota
	fcCurrent
	fcDown
	fcDirs
)

// fcEvent is one fired watch: of a directory's list (child == ""), of a
// child's data, or of a parent directory's list (inst == nil).
type fcEvent struct {
	inst   *fcInst
	dir    int
	child  string
	parent string
	typ    zk.EventType
}

// fcInst is a tracked service within one session generation.
type fcInst struct {
	svc    string
	cancel context.CancelFunc
	ws     *WatchSet
	dirs   [fcDirs]fcDir
	ready  bool // every directory read once: published
	dirty  bool // changed since published
}

type fcDir struct {
	path, parent, name string
	listed             bool // read once in this generation
	relist             bool // its list is to be read (again)
	missing            bool
	kids               map[string]any  // decoded *Member, *Current or *Down (nil: unreadable)
	stale              map[string]bool // children to read (again)
	// unwatched: children last read while a watch of an earlier node of
	// the same name was still armed (deleted, its event not handled yet):
	// that event must re-read the child, not drop it.
	unwatched map[string]bool
}

// fcParallel bounds the reads of new children in flight (the first read
// of a large service: requests are pipelined on the one connection).
const fcParallel = 16

// fcRetry paces retries after a failed read while the session looks live.
const fcRetry = 500 * time.Millisecond

// NewFleetCache starts a cache on c that tracks nothing yet; it runs
// until ctx ends.
func NewFleetCache(ctx context.Context, c *Conn) *FleetCache {
	fc := &FleetCache{
		c: c, ctx: ctx,
		changed: make(chan struct{}, 1),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		tracked: map[string]bool{},
		snaps:   map[string]*Fleet{},
		wsets:   map[string]*WatchSet{},
		insts:   map[string]*fcInst{},
	}
	go fc.run()
	return fc
}

// Track starts keeping svc's fleet (no-op if tracked). Fleet(svc) is
// ready once it has been read.
func (fc *FleetCache) Track(svc string) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.tracked[svc] {
		return
	}
	fc.tracked[svc] = true
	nudgeChan(fc.wake)
}

// Untrack stops keeping svc's fleet: its watches are ignored when they
// fire and their goroutines end.
func (fc *FleetCache) Untrack(svc string) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if !fc.tracked[svc] {
		return
	}
	delete(fc.tracked, svc)
	delete(fc.snaps, svc)
	nudgeChan(fc.wake)
}

// Tracked reports whether svc is tracked.
func (fc *FleetCache) Tracked(svc string) bool {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.tracked[svc]
}

// Fleet returns a copy of svc's fleet as last read, and false when svc is
// not tracked or not read yet in this session.
func (fc *FleetCache) Fleet(svc string) (Fleet, bool) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	f := fc.snaps[svc]
	if f == nil {
		return Fleet{}, false
	}
	return Fleet{Members: slices.Clone(f.Members), Current: slices.Clone(f.Current), Down: slices.Clone(f.Down)}, true
}

// Changed is nudged (buffer 1) whenever a fleet changed, became ready or
// stopped being ready (a new session).
func (fc *FleetCache) Changed() <-chan struct{} { return fc.changed }

// Done is closed when the cache's loop has ended (after ctx ended).
func (fc *FleetCache) Done() <-chan struct{} { return fc.done }

// Reads is the number of ZooKeeper requests the cache has sent (every one
// is a read: a list or a get, with or without a watch).
func (fc *FleetCache) Reads() uint64 { return fc.reads.Load() }

// Watches is the number of watches the cache holds armed now.
func (fc *FleetCache) Watches() int {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	n := 0
	for _, ws := range fc.wsets {
		n += ws.Armed()
	}
	return n
}

// event queues a fired watch for the loop (called by the watch goroutines,
// which nudge the loop next).
func (fc *FleetCache) event(ev fcEvent) {
	fc.mu.Lock()
	fc.events = append(fc.events, ev)
	fc.mu.Unlock()
}

func (fc *FleetCache) run() {
	defer close(fc.done)
	defer func() {
		for _, in := range fc.insts {
			in.cancel()
		}
		if fc.topCancel != nil {
			fc.topCancel()
		}
	}()
	_, fc.gen, _ = fc.c.State()
	fc.newTop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		changed := fc.c.Changed() // before State: a change after State closes it
		st, gen, _ := fc.c.State()
		if gen != fc.gen {
			fc.newSession(gen)
		}
		if st == Connected {
			if err := fc.work(); err != nil {
				retry.Reset(fcRetry)
			}
		}
		select {
		case <-fc.ctx.Done():
			return
		case <-fc.wake:
		case <-changed:
		case <-retry.C:
		}
	}
}

// newTop starts the WatchSet of the parent directories (per generation).
func (fc *FleetCache) newTop() {
	if fc.topCancel != nil {
		fc.topCancel()
	}
	ctx, cancel := context.WithCancel(fc.ctx)
	fc.top, fc.topCancel = NewWatchSet(ctx, fc.c.zk, fc.wake), cancel
	fc.mu.Lock()
	fc.wsets[""] = fc.top
	fc.mu.Unlock()
}

// newSession forgets everything of the previous generation: its watches
// ended with its session (or, if the session survived a local expiry,
// fire into instances that are gone).
func (fc *FleetCache) newSession(gen uint64) {
	fc.gen = gen
	fc.newTop()
	for svc, in := range fc.insts {
		in.cancel()
		delete(fc.insts, svc)
	}
	fc.mu.Lock()
	fc.events = nil
	hadSnaps := len(fc.snaps) > 0
	clear(fc.snaps)
	for k := range fc.wsets {
		if k != "" {
			delete(fc.wsets, k)
		}
	}
	fc.mu.Unlock()
	if hadSnaps {
		nudgeChan(fc.changed)
	}
}

// work brings the instances in line with what is tracked, handles the
// fired watches, reads what they made stale and publishes what changed.
func (fc *FleetCache) work() error {
	fc.mu.Lock()
	tracked := make([]string, 0, len(fc.tracked))
	for svc := range fc.tracked {
		tracked = append(tracked, svc)
	}
	events := fc.events
	fc.events = nil
	fc.mu.Unlock()

	for svc, in := range fc.insts {
		if !slices.Contains(tracked, svc) {
			in.cancel()
			delete(fc.insts, svc)
			fc.mu.Lock()
			delete(fc.wsets, svc)
			fc.mu.Unlock()
		}
	}
	for _, svc := range tracked {
		if fc.insts[svc] == nil {
			fc.insts[svc] = fc.newInst(svc)
		}
	}
	for _, ev := range events {
		fc.apply(ev)
	}

	var first error
	for _, svc := range tracked {
		in := fc.insts[svc]
		if err := fc.refresh(in); err != nil && first == nil {
			first = err
		}
		if first != nil && isConnErr(first) {
			break
		}
	}
	fc.publish()
	return first
}

func (fc *FleetCache) newInst(svc string) *fcInst {
	ctx, cancel := context.WithCancel(fc.ctx)
	in := &fcInst{svc: svc, cancel: cancel, dirty: true}
	in.ws = NewWatchSet(ctx, fc.c.zk, fc.wake)
	p := fc.c.paths
	for i, dir := range [fcDirs]string{p.Members(svc), p.Current(svc), p.Down(svc)} {
		in.dirs[i] = fcDir{path: dir, parent: path.Dir(dir), name: path.Base(dir), relist: true,
			kids: map[string]any{}, stale: map[string]bool{}, unwatched: map[string]bool{}}
	}
	fc.mu.Lock()
	fc.wsets[svc] = in.ws
	fc.mu.Unlock()
	return in
}

// apply marks what a fired watch made stale.
func (fc *FleetCache) apply(ev fcEvent) {
	if ev.inst == nil { // a parent's list: its missing service directories may exist now
		for _, in := range fc.insts {
			for i := range in.dirs {
				if d := &in.dirs[i]; d.missing && d.parent == ev.parent {
					d.relist = true
				}
			}
		}
		return
	}
	if fc.insts[ev.inst.svc] != ev.inst {
		return // untracked, or of an older session
	}
	d := &ev.inst.dirs[ev.dir]
	switch {
	case ev.child == "":
		d.relist = true
	case d.unwatched[ev.child]:
		// The event of the earlier node's watch: read the child again,
		// arming its own watch.
		delete(d.unwatched, ev.child)
		if _, ok := d.kids[ev.child]; ok {
			d.stale[ev.child] = true
		}
	case ev.typ == zk.EventNodeDeleted:
		if _, ok := d.kids[ev.child]; ok {
			delete(d.kids, ev.child)
			ev.inst.dirty = true
		}
		delete(d.stale, ev.child)
	default:
		if _, ok := d.kids[ev.child]; ok {
			d.stale[ev.child] = true
		}
	}
}

// refresh lists the directories of in that are to be listed and reads
// their stale children.
func (fc *FleetCache) refresh(in *fcInst) error {
	for i := range in.dirs {
		d := &in.dirs[i]
		for attempt := 0; d.relist; attempt++ {
			fc.reads.Add(1)
			names, err := in.ws.ChildrenFn(d.path, fc.listFn(in, i))
			if errors.Is(err, zk.ErrNoNode) {
				again, err := fc.missing(in, d)
				if err != nil {
					return err
				}
				if again && attempt < 3 {
					continue // created meanwhile
				}
				d.relist = false
				break
			}
			if err != nil {
				return err
			}
			d.relist, d.missing, d.listed = false, false, true
			set := make(map[string]bool, len(names))
			for _, n := range names {
				set[n] = true
				if _, ok := d.kids[n]; !ok {
					d.stale[n] = true
				}
			}
			for n := range d.kids {
				if !set[n] {
					delete(d.kids, n)
					in.dirty = true
				}
			}
			for n := range d.stale {
				if !set[n] {
					delete(d.stale, n)
				}
			}
		}
		if err := fc.readKids(in, i); err != nil {
			return err
		}
	}
	return nil
}

// missing records that d does not exist and watches its parent's list; it
// reports whether the parent lists d after all (created in between).
func (fc *FleetCache) missing(in *fcInst, d *fcDir) (bool, error) {
	if len(d.kids) > 0 || !d.missing {
		in.dirty = true
	}
	clear(d.kids)
	clear(d.stale)
	d.missing, d.listed = true, true
	fc.reads.Add(1)
	parent := d.parent
	names, err := fc.top.ChildrenFn(parent, func(zk.Event) { fc.event(fcEvent{parent: parent}) })
	if err != nil {
		return false, err
	}
	return slices.Contains(names, d.name), nil
}

func (fc *FleetCache) listFn(in *fcInst, dir int) func(zk.Event) {
	return func(ev zk.Event) { fc.event(fcEvent{inst: in, dir: dir, typ: ev.Type}) }
}

func (fc *FleetCache) childFn(in *fcInst, dir int, child string) func(zk.Event) {
	return func(ev zk.Event) { fc.event(fcEvent{inst: in, dir: dir, child: child, typ: ev.Type}) }
}

// readKids reads the stale children of directory i (at most fcParallel
// at a time), arming a data watch on each.
func (fc *FleetCache) readKids(in *fcInst, i int) error {
	d := &in.dirs[i]
	if len(d.stale) == 0 {
		return nil
	}
	names := make([]string, 0, len(d.stale))
	for n := range d.stale {
		names = append(names, n)
	}
	type result struct {
		data  []byte
		armed bool
		err   error
	}
	res := make([]result, len(names))
	sem := make(chan struct{}, fcParallel)
	var wg sync.WaitGroup
	for k, n := range names {
		sem <- struct{}{}
		fc.reads.Add(1)
		wg.Go(func() {
			defer func() { <-sem }()
			b, _, armed, err := in.ws.GetFn(d.path+"/"+n, fc.childFn(in, i, n))
			res[k] = result{b, armed, err}
		})
	}
	wg.Wait()
	var first error
	for k, n := range names {
		r := res[k]
		switch {
		case errors.Is(r.err, zk.ErrNoNode):
			delete(d.stale, n)
			if _, ok := d.kids[n]; ok {
				delete(d.kids, n)
				in.dirty = true
			}
		case r.err != nil:
			if first == nil {
				first = r.err
			}
		default:
			delete(d.stale, n)
			d.kids[n] = decodeFleetChild(i, n, r.data)
			in.dirty = true
			if r.armed {
				delete(d.unwatched, n)
			} else {
				d.unwatched[n] = true
			}
		}
	}
	return first
}

// decodeFleetChild decodes a child like ReadFleet: an unreadable member or
// registration is skipped (nil), an unreadable step record still counts.
func decodeFleetChild(dir int, name string, b []byte) any {
	switch dir {
	case fcMembers:
		var m Member
		if Decode(b, &m) != nil {
			return nil
		}
		m.Machine = name
		return &m
	case fcCurrent:
		var c Current
		if Decode(b, &c) != nil {
			return nil
		}
		c.Machine = name
		return &c
	}
	var d Down
	_ = Decode(b, &d)
	d.Machine = name
	return &d
}

// publish stores the fleet of every ready instance that changed.
func (fc *FleetCache) publish() {
	published := false
	for _, in := range fc.insts {
		if !in.ready {
			in.ready = true
			for i := range in.dirs {
				if d := &in.dirs[i]; !d.listed || d.relist || len(d.stale) > 0 {
					in.ready = false
				}
			}
		}
		if !in.ready || !in.dirty {
			continue
		}
		f := in.fleet()
		in.dirty = false
		fc.mu.Lock()
		if fc.tracked[in.svc] {
			fc.snaps[in.svc] = &f
			published = true
		}
		fc.mu.Unlock()
	}
	if published {
		nudgeChan(fc.changed)
	}
}

// fleet builds the Fleet of in, sorted by machine like ReadFleet.
func (in *fcInst) fleet() Fleet {
	var f Fleet
	for i := range in.dirs {
		d := &in.dirs[i]
		names := make([]string, 0, len(d.kids))
		for n := range d.kids {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			switch v := d.kids[n].(type) {
			case *Member:
				f.Members = append(f.Members, *v)
			case *Current:
				f.Current = append(f.Current, *v)
			case *Down:
				f.Down = append(f.Down, *v)
			}
		}
	}
	return f
}
