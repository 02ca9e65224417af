package znodes

import (
	"errors"

	"github.com/go-zookeeper/zk"
)

// Per-path callbacks on the one watch recipe: GetFn and ChildrenFn read
// like Get and Children, with the same rule (at most one armed watch per
// kind and path, nothing re-armed while armed, a plain read of a path
// whose watch is armed), and say which watch fired: fn gets the event of
// the watch the call armed, right before the nudge. A reader that keeps
// a model of many nodes (FleetCache) re-reads only the node that changed.
//
// Unlike Get, GetFn arms nothing on a missing node: an exists-watch on a
// node that is never created stays on the server for the whole session.
// Watch the parent's children instead (its list changes when the node is
// created).

// GetFn reads p, arming a data watch whose event goes to fn when none is
// armed (armed reports that this call armed it; false: a watch armed
// before covers p, and its own callback reports the next change). A
// missing node is (nil, nil, false, zk.ErrNoNode) with no watch.
func (w *WatchSet) GetFn(p string, fn func(zk.Event)) (data []byte, st *zk.Stat, armed bool, err error) {
	key := "data:" + p
	token, need := w.arm(key)
	if !need {
		data, st, err = w.zk.Get(p)
		return data, st, false, err
	}
	data, st, ch, err := w.zk.GetW(p)
	if err != nil {
		w.disarm(key, token)
		return nil, nil, false, err
	}
	w.followFn(key, token, ch, fn)
	return data, st, true, nil
}

// ChildrenFn lists p's children, arming a children watch whose event goes
// to fn when none is armed. A missing p is zk.ErrNoNode with no watch.
func (w *WatchSet) ChildrenFn(p string, fn func(zk.Event)) ([]string, error) {
	key := "children:" + p
	token, need := w.arm(key)
	if !need {
		names, _, err := w.zk.Children(p)
		if errors.Is(err, zk.ErrNoNode) {
			// Deleted: the armed watch has fired on the server; its event is
			// on the way and disarms it.
			return nil, err
		}
		return names, err
	}
	names, _, ch, err := w.zk.ChildrenW(p)
	if err != nil {
		w.disarm(key, token)
		return nil, err
	}
	w.followFn(key, token, ch, fn)
	return names, nil
}

// Armed is the number of watches the set holds armed now.
func (w *WatchSet) Armed() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.armed)
}

// followFn is follow with a callback: disarm, tell fn, nudge. It ends
// with the set's context (fn is then not called).
func (w *WatchSet) followFn(key string, token uint64, ch <-chan zk.Event, fn func(zk.Event)) {
	go func() {
		select {
		case ev := <-ch:
			w.disarm(key, token)
			if fn != nil {
				fn(ev)
			}
			nudgeChan(w.nudge)
		case <-w.ctx.Done():
		}
	}()
}
