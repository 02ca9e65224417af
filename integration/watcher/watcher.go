package watcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
)

// Machine is what the watcher knows about one machine of a service.
type Machine struct {
	Present bool   // its /dc/current entry exists
	Rack    string // from the entry (kept after it disappears)
	Version string // from the entry
	SpecID  string
	State   string
	Healthy bool
	Down    bool // a /dc/down marker exists
}

// Available: present, running, healthy and not marked down.
func (m Machine) Available() bool {
	return m.Present && m.State == "running" && m.Healthy && !m.Down
}

func (m Machine) String() string {
	if !m.Present {
		if m.Down {
			return "absent+down"
		}
		return "absent"
	}
	s := fmt.Sprintf("%s/%s", m.Version, m.State)
	if m.Healthy {
		s += "+healthy"
	}
	if m.Down {
		s += "+down"
	}
	return s
}

// Frame is the state of one service's machines from At until the next frame.
type Frame struct {
	At       time.Time
	Service  string
	Machines map[string]Machine // every machine ever seen for the service
}

// Watcher records frames; make one with Start.
type Watcher struct {
	conn     *zk.Conn
	root     string
	services []string
	poll     time.Duration

	mu     sync.Mutex
	frames []Frame
	last   map[string]map[string]Machine // service -> machine -> state
	armed  map[string]bool
	errs   int

	nudge chan struct{}
	done  chan struct{}
	stop  context.CancelFunc
}

// Start connects to servers and records the services under root (e.g.
// "/dc") until ctx ends or Close.
func Start(ctx context.Context, servers, root string, services ...string) (*Watcher, error) {
	conn, _, err := zk.Connect(strings.Split(servers, ","), 10*time.Second, zk.WithLogInfo(false))
	if err != nil {
		return nil, fmt.Errorf("watcher: connect: %w", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for conn.State() != zk.StateHasSession {
		if time.Now().After(deadline) {
			conn.Close()
			return nil, errors.New("watcher: no zookeeper session within 20s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	w := &Watcher{conn: conn, root: root, services: services, poll: 25 * time.Millisecond,
		last: map[string]map[string]Machine{}, armed: map[string]bool{},
		nudge: make(chan struct{}, 1), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(ctx)
	w.stop = cancel
	w.observe(ctx)
	go func() {
		defer close(w.done)
		defer cancel()
		w.loop(ctx)
	}()
	return w, nil
}

// Close stops recording and closes the connection.
func (w *Watcher) Close() {
	w.stop()
	<-w.done
	w.conn.Close()
}

func (w *Watcher) loop(ctx context.Context) {
	t := time.NewTicker(w.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.nudge:
		case <-t.C:
		}
		w.observe(ctx)
	}
}

// watch arms a one-shot watch on key unless one is armed.
func (w *Watcher) watch(ctx context.Context, key string, arm func() (<-chan zk.Event, error)) error {
	w.mu.Lock()
	armed := w.armed[key]
	w.mu.Unlock()
	if armed {
		return nil
	}
	ch, err := arm()
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.armed[key] = true
	w.mu.Unlock()
	go func() {
		select {
		case <-ch:
			w.mu.Lock()
			delete(w.armed, key)
			w.mu.Unlock()
			select {
			case w.nudge <- struct{}{}:
			default:
			}
		case <-ctx.Done():
		}
	}()
	return nil
}

type currentPayload struct {
	Rack    string `json:"rack"`
	Version string `json:"version"`
	SpecID  string `json:"spec_id"`
	State   string `json:"state"`
	Healthy bool   `json:"healthy"`
}

// observe reads every service and records a frame where something changed.
func (w *Watcher) observe(ctx context.Context) {
	for _, svc := range w.services {
		cur := path.Join(w.root, "current", svc)
		down := path.Join(w.root, "down", svc)
		state := map[string]Machine{}
		ok := true
		names, _, err := w.conn.Children(cur)
		if err == nil {
			_ = w.watch(ctx, "c:"+cur, func() (<-chan zk.Event, error) {
				_, _, ch, err := w.conn.ChildrenW(cur)
				return ch, err
			})
		} else if !errors.Is(err, zk.ErrNoNode) {
			ok = false
		}
		for _, n := range names {
			p := path.Join(cur, n)
			b, _, err := w.conn.Get(p)
			if errors.Is(err, zk.ErrNoNode) {
				continue
			}
			if err != nil {
				ok = false
				continue
			}
			_ = w.watch(ctx, "d:"+p, func() (<-chan zk.Event, error) {
				_, _, ch, err := w.conn.GetW(p)
				return ch, err
			})
			var c currentPayload
			_ = json.Unmarshal(b, &c)
			state[n] = Machine{Present: true, Rack: c.Rack, Version: c.Version, SpecID: c.SpecID, State: c.State, Healthy: c.Healthy}
		}
		names, _, err = w.conn.Children(down)
		if err == nil {
			_ = w.watch(ctx, "c:"+down, func() (<-chan zk.Event, error) {
				_, _, ch, err := w.conn.ChildrenW(down)
				return ch, err
			})
		} else if !errors.Is(err, zk.ErrNoNode) {
			ok = false
		}
		for _, n := range names {
			m := state[n]
			m.Down = true
			state[n] = m
		}
		if !ok {
			w.mu.Lock()
			w.errs++
			w.mu.Unlock()
			continue
		}
		w.record(svc, state)
	}
}

func (w *Watcher) record(svc string, state map[string]Machine) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	prev := w.last[svc]
	full := map[string]Machine{}
	for m, p := range prev {
		full[m] = Machine{Rack: p.Rack} // seen before, absent unless present now
	}
	for m, s := range state {
		full[m] = s
	}
	same := len(full) == len(prev)
	for m, s := range full {
		if p, ok := prev[m]; !ok || p != s {
			same = false
		}
	}
	if same {
		return
	}
	w.last[svc] = full
	w.frames = append(w.frames, Frame{At: now, Service: svc, Machines: full})
}

// Frames returns the recorded frames of service, oldest first.
func (w *Watcher) Frames(service string) []Frame {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []Frame
	for _, f := range w.frames {
		if f.Service == service {
			out = append(out, f)
		}
	}
	return out
}

// Now returns the latest recorded state of service.
func (w *Watcher) Now(service string) map[string]Machine {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]Machine{}
	for m, s := range w.last[service] {
		out[m] = s
	}
	return out
}

// framesIn returns the frames in effect during [from, to]: the last one
// before from, and every one until to.
func (w *Watcher) framesIn(service string, from, to time.Time) []Frame {
	all := w.Frames(service)
	var out []Frame
	for i, f := range all {
		if f.At.After(to) {
			break
		}
		if f.At.Before(from) && i+1 < len(all) && !all[i+1].At.After(from) {
			continue
		}
		out = append(out, f)
	}
	return out
}

// MaxUnavailable returns the largest number of machines of service that
// were unavailable (absent after being seen, not running, unhealthy, or
// marked down) at once during [from, to], with the frame where it happened.
func (w *Watcher) MaxUnavailable(service string, from, to time.Time) (int, Frame) {
	best, at := 0, Frame{}
	for _, f := range w.framesIn(service, from, to) {
		n := 0
		for _, m := range f.Machines {
			if !m.Available() {
				n++
			}
		}
		if n > best || at.At.IsZero() {
			best, at = n, f
		}
	}
	return best, at
}

// MinAvailable returns the smallest number of available machines of
// service during [from, to], with the frame where it happened.
func (w *Watcher) MinAvailable(service string, from, to time.Time) (int, Frame) {
	best, at := -1, Frame{}
	for _, f := range w.framesIn(service, from, to) {
		n := 0
		for _, m := range f.Machines {
			if m.Available() {
				n++
			}
		}
		if best < 0 || n < best {
			best, at = n, f
		}
	}
	return best, at
}

// MaxDownMarkers returns the largest number of down markers of service at
// once during [from, to].
func (w *Watcher) MaxDownMarkers(service string, from, to time.Time) (int, Frame) {
	best, at := 0, Frame{}
	for _, f := range w.framesIn(service, from, to) {
		n := 0
		for _, m := range f.Machines {
			if m.Down {
				n++
			}
		}
		if n > best {
			best, at = n, f
		}
	}
	return best, at
}

// MaxRacksUnavailable returns the largest number of distinct racks with an
// unavailable machine of service at once during [from, to].
func (w *Watcher) MaxRacksUnavailable(service string, from, to time.Time) (int, Frame) {
	best, at := 0, Frame{}
	for _, f := range w.framesIn(service, from, to) {
		racks := map[string]bool{}
		for _, m := range f.Machines {
			if !m.Available() {
				racks[m.Rack] = true
			}
		}
		if len(racks) > best {
			best, at = len(racks), f
		}
	}
	return best, at
}

// Seen returns the versions each machine of service was seen with (present)
// during [from, to].
func (w *Watcher) Seen(service string, from, to time.Time) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for _, f := range w.framesIn(service, from, to) {
		for name, m := range f.Machines {
			if !m.Present {
				continue
			}
			if out[name] == nil {
				out[name] = map[string]bool{}
			}
			out[name][m.Version] = true
		}
	}
	return out
}

// FirstUnavailable returns when a machine of service first became
// unavailable after from (zero if never).
func (w *Watcher) FirstUnavailable(service string, from time.Time) (time.Time, string) {
	for _, f := range w.Frames(service) {
		if f.At.Before(from) {
			continue
		}
		for name, m := range f.Machines {
			if !m.Available() {
				return f.At, name
			}
		}
	}
	return time.Time{}, ""
}

// FirstDown returns when a machine of service first took itself down
// after from: a down marker, or an upgrading or reverting entry (zero if
// never). Unlike FirstUnavailable it ignores machines that merely vanished
// (a lost session) or turned unhealthy.
func (w *Watcher) FirstDown(service string, from time.Time) (time.Time, string) {
	for _, f := range w.Frames(service) {
		if f.At.Before(from) {
			continue
		}
		for name, m := range f.Machines {
			if m.Down || m.State == "upgrading" || m.State == "reverting" {
				return f.At, name
			}
		}
	}
	return time.Time{}, ""
}

// AllOn returns when every machine of service was first seen available on
// version after from (zero if never).
func (w *Watcher) AllOn(service, version string, from time.Time) time.Time {
	for _, f := range w.Frames(service) {
		if f.At.Before(from) || len(f.Machines) == 0 {
			continue
		}
		all := true
		for _, m := range f.Machines {
			if !m.Available() || m.Version != version {
				all = false
				break
			}
		}
		if all {
			return f.At
		}
	}
	return time.Time{}
}

// Dump renders the frames of service in [from, to] for failure messages.
func (w *Watcher) Dump(service string, from, to time.Time) string {
	var b strings.Builder
	for _, f := range w.framesIn(service, from, to) {
		names := make([]string, 0, len(f.Machines))
		for n := range f.Machines {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(&b, "%s %s:", f.At.Format("15:04:05.000"), service)
		for _, n := range names {
			fmt.Fprintf(&b, " %s[%s]=%s", n, f.Machines[n].Rack, f.Machines[n])
		}
		b.WriteByte('\n')
	}
	return b.String()
}
