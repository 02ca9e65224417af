package znodes

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/go-zookeeper/zk"
)

// WatchSet is the one watch recipe of dcroll: it arms at most one
// ZooKeeper watch per (kind, path) and turns every watch event into a
// nudge (a non-blocking send on a channel of buffer 1): an event only
// means "re-read". While a path's watch is armed and has not fired, the
// last read of it is still what the server holds, so WatchSet answers from
// that copy without a round trip: re-reading after every nudge (or timer)
// costs only the paths that changed, and no watcher piles up on paths that
// never change. A cached answer is checked against its watch's channel
// first, so a change whose event has reached this client is never hidden
// (ZooKeeper delivers a watch event before the response of any later
// request). Agents, the rack map and the origin read through it.
type WatchSet struct {
	zk    *zk.Conn
	ctx   context.Context
	nudge chan<- struct{}

	mu    sync.Mutex
	armed map[string]*watched // kind+path -> its armed watch
	next  uint64
}

// watched is one armed watch and the read it guards.
type watched struct {
	token uint64
	ch    <-chan zk.Event
	// The answer of the read that armed it (cached once ch is set).
	data  []byte
	stat  zk.Stat
	names []string
}

// fired reports whether the watch's event has arrived.
func (a *watched) fired() bool {
	if a.ch == nil {
		return false
	}
	select {
	case <-a.ch:
		return true
	default:
		return false
	}
}

// NewWatchSet returns a WatchSet on conn whose events nudge; its
// goroutines end with ctx.
func NewWatchSet(ctx context.Context, conn *zk.Conn, nudge chan<- struct{}) *WatchSet {
	return &WatchSet{zk: conn, ctx: ctx, nudge: nudge, armed: map[string]*watched{}}
}

// Reset forgets every armed watch (after a new session: the old ones ended).
func (w *WatchSet) Reset() {
	w.mu.Lock()
	w.armed = map[string]*watched{}
	w.mu.Unlock()
}

// cached returns the armed, unfired watch of key, or nil.
func (w *WatchSet) cached(key string) *watched {
	w.mu.Lock()
	defer w.mu.Unlock()
	a := w.armed[key]
	if a == nil || a.ch == nil {
		return nil
	}
	if a.fired() {
		delete(w.armed, key)
		return nil
	}
	return a
}

// arm reports whether key needs a new watch and, if so, reserves a token.
// A reserved watch whose read is still in flight (another goroutine) is
// not armed again: the caller reads plainly.
func (w *WatchSet) arm(key string) (uint64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if a, ok := w.armed[key]; ok && !a.fired() {
		return 0, false
	}
	w.next++
	w.armed[key] = &watched{token: w.next}
	return w.next, true
}

func (w *WatchSet) disarm(key string, token uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if a := w.armed[key]; a != nil && a.token == token {
		delete(w.armed, key)
	}
}

// follow records the answer of the read that armed key (set; nil: the
// answer is not cached) and waits for the watch's event in an owned
// goroutine (it ends with ctx), then nudges.
func (w *WatchSet) follow(key string, token uint64, ch <-chan zk.Event, set func(a *watched)) {
	if set != nil {
		w.mu.Lock()
		if a := w.armed[key]; a != nil && a.token == token {
			a.ch = ch
			set(a)
		}
		w.mu.Unlock()
	}
	go func() {
		select {
		case <-ch:
			w.disarm(key, token)
			nudgeChan(w.nudge)
		case <-w.ctx.Done():
		}
	}()
}

func nudgeChan(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Get reads p, watching it for changes. A missing node is (nil, nil, ErrNoNode)
// with an exists-watch armed, so its creation nudges too. The data is the
// caller's to keep but not to modify.
func (w *WatchSet) Get(p string) ([]byte, *zk.Stat, error) {
	key, ekey := "data:"+p, "exists:"+p
	if a := w.cached(key); a != nil {
		st := a.stat
		return a.data, &st, nil
	}
	if a := w.cached(ekey); a != nil {
		return nil, nil, zk.ErrNoNode
	}
	token, need := w.arm(key)
	if !need {
		return w.zk.Get(p) // being armed by another goroutine
	}
	b, st, ch, err := w.zk.GetW(p)
	if err == nil {
		w.follow(key, token, ch, func(a *watched) { a.data, a.stat = b, *st })
		return b, st, nil
	}
	w.disarm(key, token)
	if !errors.Is(err, zk.ErrNoNode) {
		return nil, nil, err
	}
	et, need := w.arm(ekey)
	if !need {
		return nil, nil, zk.ErrNoNode
	}
	ok, _, ch, err := w.zk.ExistsW(p)
	if err != nil {
		w.disarm(ekey, et)
		return nil, nil, err
	}
	if ok {
		// Created in between: the exists watch nudges on its next change;
		// read it plainly, uncached.
		w.follow(ekey, et, ch, nil)
		if b, st, err := w.zk.Get(p); err == nil {
			return b, st, nil
		}
		return nil, nil, zk.ErrNoNode
	}
	w.follow(ekey, et, ch, func(*watched) {}) // cached: absent
	return nil, nil, zk.ErrNoNode
}

// Children lists p's children, watching the list. The slice is the
// caller's to keep but not to modify.
func (w *WatchSet) Children(p string) ([]string, error) {
	key := "children:" + p
	if a := w.cached(key); a != nil {
		return a.names, nil
	}
	token, need := w.arm(key)
	if !need {
		names, _, err := w.zk.Children(p)
		return names, err
	}
	names, _, ch, err := w.zk.ChildrenW(p)
	if err != nil {
		w.disarm(key, token)
		return nil, err
	}
	w.follow(key, token, ch, func(a *watched) { a.names = names })
	return names, nil
}

// Each calls fn for every child of dir that still exists, in name order,
// watching the list and every child (a missing dir has no children).
func (w *WatchSet) Each(dir string, fn func(name string, data []byte, st *zk.Stat) error) error {
	names, err := w.Children(dir)
	if errors.Is(err, zk.ErrNoNode) {
		return nil
	}
	if err != nil {
		return err
	}
	names = slices.Sorted(slices.Values(names))
	for _, n := range names {
		b, st, err := w.Get(dir + "/" + n)
		if errors.Is(err, zk.ErrNoNode) {
			continue
		}
		if err != nil {
			return err
		}
		if err := fn(n, b, st); err != nil {
			return err
		}
	}
	return nil
}
