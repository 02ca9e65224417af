package znodes

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"sync"

	"github.com/go-zookeeper/zk"
)

// Registration keeps an ephemeral node at one path alive across sessions
// (Curator's PersistentNode): the agent's /dc/agents/<machine> and
// /dc/current/<service>/<machine>.
//
// Run creates the node in every new session. A create failing with
// ErrNodeExists is resolved by the node's owner: this session means an
// earlier create whose response was lost (success), another session means a
// stale node of this machine's previous session (or of a duplicate agent):
// Run watches it and creates its own once it is gone. While registered, Run
// watches the node and re-creates it if someone deletes it.
type Registration struct {
	c    *Conn
	path string
	data func() ([]byte, error)
	log  *slog.Logger

	// opMu serialises the writes of Run and Update.
	opMu sync.Mutex

	mu         sync.Mutex
	latest     []byte // payload of the last Update, nil before
	registered bool
	gen        uint64 // generation the node was created in
	version    int32  // data version of the node as last written
	dirty      bool   // an Update failed with an unknown outcome
	ready      chan struct{}
	wake       chan struct{}

	// marker, if set, follows every written payload (WithMarker).
	marker *Presence
	markOn func(payload []byte) bool
}

// WithMarker makes the registration keep a Presence marker at p that
// exists while on(payload) holds for the payload last written (an agent's
// /dc/up/<service>/<machine>: present while its registration says
// available). The marker is written right after each payload, created
// again in every new session, and deleted when Run ends. Call before Run.
func (r *Registration) WithMarker(p string, on func(payload []byte) bool) *Registration {
	r.marker, r.markOn = NewPresence(r.c, p), on
	return r
}

// written records a payload that landed and has the marker follow it;
// caller holds opMu.
func (r *Registration) written(data []byte) {
	r.clearDirty(data)
	if r.marker == nil {
		return
	}
	if err := r.marker.Set(r.markOn(data)); err != nil {
		r.log.Warn("availability marker not written; retried", "err", err)
		r.wakeRun()
	}
}

// NewRegistration returns a Registration of the ephemeral node at p. data
// produces the payload at each creation until the first Update; from then on
// the latest Update's payload is used.
func NewRegistration(c *Conn, p string, data func() ([]byte, error)) *Registration {
	return &Registration{
		c:     c,
		path:  p,
		data:  data,
		log:   c.Logger().With("component", "registration", "path", p),
		ready: make(chan struct{}),
		wake:  make(chan struct{}, 1),
	}
}

// Path is the registered node's path.
func (r *Registration) Path() string { return r.path }

// Ready returns a channel closed while the node is registered in the current
// session; after a loss, Ready returns a new channel, closed at the next
// registration.
func (r *Registration) Ready() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ready
}

// Registered reports whether the node exists, owned by the live session.
func (r *Registration) Registered() bool {
	r.mu.Lock()
	reg, gen := r.registered, r.gen
	r.mu.Unlock()
	st, cur, _ := r.c.State()
	return reg && st == Connected && cur == gen
}

func (r *Registration) setRegistered(gen uint64, version int32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen, r.version = gen, version
	if !r.registered {
		r.registered = true
		close(r.ready)
	}
}

func (r *Registration) setUnregistered() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.registered {
		r.registered = false
		r.ready = make(chan struct{})
	}
}

func (r *Registration) payload() ([]byte, error) {
	r.mu.Lock()
	latest := r.latest
	r.mu.Unlock()
	if latest != nil {
		return latest, nil
	}
	b, err := r.data()
	if err != nil {
		return nil, fmt.Errorf("registration %s: payload: %w", r.path, err)
	}
	return b, nil
}

// Run keeps the node registered until ctx ends, then deletes it (if the
// connection is down then, the node ends with the session). It returns nil
// when ctx ends, and an error when the payload cannot be produced or the
// Conn is closed.
func (r *Registration) Run(ctx context.Context) error {
	defer r.setUnregistered()
	for {
		s, err := r.c.waitSession(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("registration %s: %w", r.path, err)
		}
		err = r.hold(ctx, s)
		r.setUnregistered()
		switch {
		case ctx.Err() != nil:
			r.remove(s)
			return nil
		case errors.Is(err, ErrSessionLost):
			r.log.Info("session lost; registering again")
		case errors.Is(err, ErrClosed):
			return fmt.Errorf("registration %s: %w", r.path, err)
		case err != nil && !isConnErr(err):
			return err
		}
	}
}

// hold registers the node in session s and watches it until s is lost or ctx ends.
func (r *Registration) hold(ctx context.Context, s session) error {
	for {
		if err := r.register(ctx, s); err != nil {
			if isConnErr(err) {
				if err := r.c.awaitSession(ctx, s); err != nil {
					return err
				}
				continue
			}
			return err
		}
		// Registered: watch the node; re-create it if it is deleted.
		for {
			ok, ch, err := r.watch(s)
			if err != nil {
				if !isConnErr(err) {
					return err
				}
				if err := r.c.awaitSession(ctx, s); err != nil {
					return err
				}
				continue
			}
			if !ok {
				r.log.Warn("registered node deleted by someone else; creating it again")
				r.setUnregistered()
				break
			}
			select {
			case <-ch:
			case <-r.wake:
			case <-s.lost:
				return ErrSessionLost
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

// watch checks that the node is there (rewriting it if an Update's outcome
// was unknown) and sets a watch on it.
func (r *Registration) watch(s session) (bool, <-chan zk.Event, error) {
	r.opMu.Lock()
	defer r.opMu.Unlock()
	r.mu.Lock()
	dirty, latest := r.dirty, r.latest
	r.mu.Unlock()
	if dirty {
		if _, err := r.write(s, latest); err != nil {
			return false, nil, err
		}
	}
	if r.marker != nil {
		if err := r.marker.Sync(); isConnErr(err) {
			return false, nil, err
		} else if err != nil {
			r.log.Warn("availability marker not written; retried at the next change", "err", err)
		}
	}
	ok, st, ch, err := r.c.zk.ExistsW(r.path)
	if err != nil {
		return false, nil, fmt.Errorf("watch %s: %w", r.path, err)
	}
	if ok && st.EphemeralOwner != s.id {
		// Deleted and re-created by another session: not ours any more.
		return false, nil, nil
	}
	return ok, ch, nil
}

// register creates the node in session s, resolving ErrNodeExists by owner.
func (r *Registration) register(ctx context.Context, s session) error {
	for {
		r.opMu.Lock()
		err := r.create(s)
		r.opMu.Unlock()
		var stale *staleNode
		switch {
		case err == nil:
			r.log.Info("registered", "session", fmt.Sprintf("0x%x", s.id))
			return nil
		case errors.As(err, &stale):
			r.log.Info("node held by another session; waiting for it to go", "owner", fmt.Sprintf("0x%x", stale.owner))
			if err := r.c.waitDeleted(ctx, s, r.path, nil); err != nil {
				return err
			}
		default:
			return err
		}
	}
}

type staleNode struct{ owner int64 }

func (e *staleNode) Error() string { return fmt.Sprintf("node owned by session 0x%x", e.owner) }

// create makes one attempt; caller holds opMu.
func (r *Registration) create(s session) error {
	data, err := r.payload()
	if err != nil {
		return err
	}
	_, err = r.c.Create(r.path, data, zk.FlagEphemeral)
	if errors.Is(err, zk.ErrNoNode) {
		if err := r.c.EnsurePath(path.Dir(r.path)); err != nil {
			return err
		}
		_, err = r.c.Create(r.path, data, zk.FlagEphemeral)
	}
	if err == nil {
		r.setRegistered(s.gen, 0)
		r.written(data)
		return nil
	}
	if !errors.Is(err, zk.ErrNodeExists) {
		return err
	}
	cur, st, err := r.c.zk.Get(r.path)
	if errors.Is(err, zk.ErrNoNode) {
		return r.create(s) // deleted meanwhile
	}
	if err != nil {
		return fmt.Errorf("get %s: %w", r.path, err)
	}
	switch st.EphemeralOwner {
	case s.id: // ours: an earlier create whose response was lost
		version := st.Version
		if !bytes.Equal(cur, data) {
			st, err := r.c.zk.Set(r.path, data, st.Version)
			if err != nil {
				return fmt.Errorf("set %s: %w", r.path, err)
			}
			version = st.Version
		}
		r.setRegistered(s.gen, version)
		r.written(data)
		return nil
	case 0:
		return fmt.Errorf("registration %s: a persistent node is in the way: delete it (zkCli.sh delete %s)", r.path, r.path)
	default:
		return &staleNode{owner: st.EphemeralOwner}
	}
}

func (r *Registration) clearDirty(written []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.latest == nil || bytes.Equal(r.latest, written) {
		r.dirty = false
	}
}

// Update sets the payload: it rewrites the node now if registered (a Set
// conditional on the version this Registration last wrote; re-created if it
// is missing) and is used for every later re-creation. When the connection
// fails mid-write, the error is returned and Run rewrites the payload once
// reconnected.
func (r *Registration) Update(payload []byte) error {
	return r.UpdateWith(payload)
}

// UpdateWith is Update with extra Multi ops that land in the same
// transaction as the payload (an agent's step record deleted with its
// "running" payload): when they cannot go together (not registered in
// this session, or the combined Multi failed), the payload is written as
// by Update and then extra on its own. It returns the error of extra (for
// example zk.ErrNoNode: already done), or of the payload.
func (r *Registration) UpdateWith(payload []byte, extra ...any) error {
	if len(payload) > MaxPayload {
		return fmt.Errorf("registration %s: payload of %d bytes exceeds %d", r.path, len(payload), MaxPayload)
	}
	payload = bytes.Clone(payload)
	r.opMu.Lock()
	defer r.opMu.Unlock()
	r.mu.Lock()
	r.latest = payload
	r.dirty = true
	reg, gen := r.registered, r.gen
	r.mu.Unlock()
	alone := func() error {
		if len(extra) == 0 {
			return nil
		}
		_, err := r.c.Multi(extra...)
		return err
	}
	s, err := r.c.session()
	if !reg || err != nil || s.gen != gen {
		// Written at the next registration, or, if this session is only
		// suspended, by Run once it is connected again.
		r.wakeRun()
		return alone()
	}
	landed, err := r.write(s, payload, extra...)
	if err != nil {
		// Outcome unknown (connection lost mid-write): Run rewrites the
		// dirty payload once this session is connected again.
		r.wakeRun()
		return err
	}
	if landed {
		return nil
	}
	return alone()
}

// wakeRun makes Run look at the node again (and rewrite a dirty payload).
// Without it, Run sits on a watch that survives a reconnect and never
// fires, and a payload written while suspended would be lost.
func (r *Registration) wakeRun() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// write sets payload on the registered node; caller holds opMu. The
// marker's op and extra ops (UpdateWith) go in the same Multi: one round
// trip, and nobody sees one without the other. landed reports that extra
// landed with it; when it cannot (a missing directory, a version or a
// marker left by another session, an extra op that fails) the payload
// takes the long way below, without extra.
func (r *Registration) write(s session, payload []byte, extra ...any) (landed bool, err error) {
	r.mu.Lock()
	version := r.version
	r.mu.Unlock()
	ops := []any{SetOp(r.path, payload, version)}
	on := r.marker != nil && r.markOn(payload)
	mark := false
	if r.marker != nil {
		op, known := r.marker.op(on, s.gen)
		if !known && len(extra) == 0 {
			ops = nil // the long way: Set, then the marker
		} else if op != nil {
			ops, mark = append(ops, op), true
		}
	}
	if ops != nil && (mark || len(extra) > 0) {
		res, err := r.c.Multi(append(ops, extra...)...)
		if err == nil {
			if mark {
				r.marker.applied(on, s.gen)
			}
			r.mu.Lock()
			r.version = res[0].Stat.Version
			r.mu.Unlock()
			r.written(payload)
			return true, nil
		}
		if isConnErr(err) {
			return false, fmt.Errorf("update %s: %w", r.path, err)
		}
	}
	st, err := r.c.zk.Set(r.path, payload, version)
	if errors.Is(err, zk.ErrBadVersion) {
		// Our earlier write whose response was lost, or another writer:
		// overwrite only if the node is still ours.
		var ok bool
		ok, st, err = r.c.zk.Exists(r.path)
		if err == nil && ok && st.EphemeralOwner == s.id {
			st, err = r.c.zk.Set(r.path, payload, st.Version)
		} else if err == nil {
			err = zk.ErrNoNode
		}
	}
	if errors.Is(err, zk.ErrNoNode) {
		// Deleted (by someone else, or its session ended): Run re-creates it.
		r.setUnregistered()
		r.wakeRun()
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("update %s: %w", r.path, err)
	}
	r.mu.Lock()
	r.version = st.Version
	r.mu.Unlock()
	r.written(payload)
	return false, nil
}

// remove deletes the node if it is still this session's (best effort).
func (r *Registration) remove(s session) {
	r.opMu.Lock()
	defer r.opMu.Unlock()
	if st, _, _ := r.c.State(); st != Connected {
		return // the node ends with the session
	}
	ok, st, err := r.c.zk.Exists(r.path)
	if err != nil || !ok || st.EphemeralOwner != s.id {
		return
	}
	if r.marker != nil {
		if err := r.marker.Set(false); err != nil {
			r.log.Warn("delete availability marker on stop", "err", err)
		}
	}
	if err := r.c.zk.Delete(r.path, st.Version); err != nil && !errors.Is(err, zk.ErrNoNode) {
		r.log.Warn("delete registration on stop", "err", err)
		return
	}
	r.log.Info("unregistered")
}
