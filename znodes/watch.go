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
// means "re-read". Reads of a path whose watch is still armed are plain
// reads, so re-reading after every nudge (or timer) does not pile up
// watchers on paths that never change. Agents, the rack map and the origin
// read through it.
type WatchSet struct {
	zk    *zk.Conn
	ctx   context.Context
	nudge chan<- struct{}

	mu    sync.Mutex
	armed map[string]uint64 // kind+path -> token of the armed watch
	next  uint64
}

// NewWatchSet returns a WatchSet on conn whose events nudge; its
// goroutines end with ctx.
func NewWatchSet(ctx context.Context, conn *zk.Conn, nudge chan<- struct{}) *WatchSet {
	return &WatchSet{zk: conn, ctx: ctx, nudge: nudge, armed: map[string]uint64{}}
}

// Reset forgets every armed watch (after a new session: the old ones ended).
func (w *WatchSet) Reset() {
	w.mu.Lock()
	w.armed = map[string]uint64{}
	w.mu.Unlock()
}

// arm reports whether key needs a new watch and, if so, reserves a token.
func (w *WatchSet) arm(key string) (uint64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.armed[key]; ok {
		return 0, false
	}
	w.next++
	w.armed[key] = w.next
	return w.next, true
}

func (w *WatchSet) disarm(key string, token uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.armed[key] == token {
		delete(w.armed, key)
	}
}

// follow waits for the event of an armed watch in an owned goroutine (it
// ends with ctx) and nudges.
func (w *WatchSet) follow(key string, token uint64, ch <-chan zk.Event) {
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
// with an exists-watch armed, so its creation nudges too.
func (w *WatchSet) Get(p string) ([]byte, *zk.Stat, error) {
	key := "data:" + p
	token, need := w.arm(key)
	if !need {
		b, st, err := w.zk.Get(p)
		if errors.Is(err, zk.ErrNoNode) {
			// Deleted before its watch fired: forget it and arm anew.
			w.mu.Lock()
			delete(w.armed, key)
			w.mu.Unlock()
			return w.Get(p)
		}
		return b, st, err
	}
	b, st, ch, err := w.zk.GetW(p)
	if err == nil {
		w.follow(key, token, ch)
		return b, st, nil
	}
	w.disarm(key, token)
	if !errors.Is(err, zk.ErrNoNode) {
		return nil, nil, err
	}
	ekey := "exists:" + p
	if et, need := w.arm(ekey); need {
		ok, _, ch, err := w.zk.ExistsW(p)
		if err != nil {
			w.disarm(ekey, et)
			return nil, nil, err
		}
		w.follow(ekey, et, ch)
		if ok {
			// Created in between: read it (plainly; the exists watch covers it).
			if b, st, err := w.zk.Get(p); err == nil {
				return b, st, nil
			}
		}
	}
	return nil, nil, zk.ErrNoNode
}

// Children lists p's children, watching the list.
func (w *WatchSet) Children(p string) ([]string, error) {
	key := "children:" + p
	token, need := w.arm(key)
	if !need {
		names, _, err := w.zk.Children(p)
		if errors.Is(err, zk.ErrNoNode) {
			w.mu.Lock()
			delete(w.armed, key)
			w.mu.Unlock()
		}
		return names, err
	}
	names, _, ch, err := w.zk.ChildrenW(p)
	if err != nil {
		w.disarm(key, token)
		return nil, err
	}
	w.follow(key, token, ch)
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
	slices.Sort(names)
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
