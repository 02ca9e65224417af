package znodes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"sync/atomic"

	"github.com/go-zookeeper/zk"
)

// TurnLock is a herd-free turn-taking lock (Curator's InterProcessMutex,
// zk.Lock done with timeouts and loss detection): each contender creates a
// protected ephemeral sequential node dir/_c_<guid>-t-<seq>; the lowest
// sequence holds the turn; every other one watches only its immediate
// predecessor, so a release wakes exactly one waiter.
type TurnLock struct {
	c       *Conn
	dir     string
	payload []byte
	log     *slog.Logger

	// OnWatch, if set before Acquire, is called with the path of each node
	// Acquire is about to watch (tests use it to prove there is no herd).
	OnWatch func(path string)
}

// NewTurnLock returns a lock whose queue lives under dir (Paths.Turns(service));
// payload (an encoded Turn) is stored in the contender's node.
func NewTurnLock(c *Conn, dir string, payload []byte) *TurnLock {
	return &TurnLock{c: c, dir: dir, payload: payload, log: c.Logger().With("component", "turnlock", "dir", dir)}
}

// HeldTurn is a held turn (Turn is the payload of its node). Writes made on
// behalf of the turn must be fenced with CheckOp in the same Multi, so a
// holder deposed by session loss cannot write. While the Conn is Suspended
// the turn may already be lost: start nothing new until it is Connected.
type HeldTurn struct {
	c       *Conn
	path    string
	session int64
	stat    zk.Stat
	lost    <-chan struct{}
	// released: a Multi with ReleaseOp deleted the node.
	released atomic.Bool
}

// Acquire queues for the turn and blocks until it is held, ctx ends
// (ctx.Err()), or the session is lost (an error wrapping ErrSessionLost). It
// needs a live session to start. On every failure it deletes its own node;
// when the connection is down it hands the node to the Conn's reaper (it ends
// with the session anyway unless the session survives).
func (l *TurnLock) Acquire(ctx context.Context) (*HeldTurn, error) {
	s, err := l.c.waitSession(ctx)
	if err != nil {
		return nil, fmt.Errorf("turn %s: %w", l.dir, err)
	}
	own, err := l.c.createProtected(s, path.Join(l.dir, TurnPrefix), l.payload)
	if err != nil {
		return nil, fmt.Errorf("turn %s: %w", l.dir, err)
	}
	t, err := l.wait(ctx, s, own)
	if err != nil {
		if delErr := l.c.deleteOwn(s, own); delErr != nil {
			l.log.Debug("give up turn", "err", delErr)
		}
		return nil, fmt.Errorf("turn %s: %w", l.dir, err)
	}
	l.log.Debug("turn held", "node", own)
	return t, nil
}

// wait blocks until own is first in the queue and returns the held turn.
func (l *TurnLock) wait(ctx context.Context, s session, own string) (*HeldTurn, error) {
	for {
		if err := l.c.waitFirst(ctx, s, l.dir, TurnPrefix, own, l.OnWatch); err != nil {
			return nil, err
		}
		ok, st, err := l.c.zk.Exists(own)
		switch {
		case err != nil && isConnErr(err):
			if err := l.c.awaitSession(ctx, s); err != nil {
				return nil, err
			}
			continue
		case err != nil:
			return nil, fmt.Errorf("stat %s: %w", own, err)
		case closed(s.lost):
			return nil, fmt.Errorf("%s: %w", own, ErrSessionLost)
		case !ok || st.EphemeralOwner != s.id:
			return nil, fmt.Errorf("%s: %w", own, errNodeGone)
		}
		return &HeldTurn{c: l.c, path: own, session: s.id, stat: *st, lost: s.lost}, nil
	}
}

// Waiters lists the turn queue under dir in order: the holder first.
func Waiters(c *Conn, dir string) ([]string, error) {
	return c.queue(dir, TurnPrefix)
}

// Path is the turn's node.
func (t *HeldTurn) Path() string { return t.path }

// Version is the data version of the turn's node when it was acquired.
func (t *HeldTurn) Version() int32 { return t.stat.Version }

// Fence is a fencing token: the zxid that created the turn's node, larger
// for every later holder of any turn.
func (t *HeldTurn) Fence() int64 { return t.stat.Czxid }

// CheckOp is a Multi op that fails unless the turn's node still exists
// unchanged: put it first in every Multi made on behalf of the turn.
func (t *HeldTurn) CheckOp() *zk.CheckVersionRequest {
	return CheckOp(t.path, t.stat.Version)
}

// ReleaseOp is a Multi op that gives the turn up as part of the Multi,
// saving the round trip of Release: like CheckOp, it fails the Multi
// unless the turn's node still exists unchanged. Call Released once the
// Multi succeeded.
func (t *HeldTurn) ReleaseOp() *zk.DeleteRequest {
	return DeleteOp(t.path, t.stat.Version)
}

// Released records that a Multi with ReleaseOp applied: Release does
// nothing more.
func (t *HeldTurn) Released() { t.released.Store(true) }

// Lost returns a channel closed when the session that holds the turn is lost
// (or the Conn closed): the turn is over; stop and call Release.
func (t *HeldTurn) Lost() <-chan struct{} { return t.lost }

// Release gives the turn up: it deletes the node (the next waiter is woken).
// After a session loss the node is already gone, or is deleted once the
// session reconnects; Release then returns nil.
func (t *HeldTurn) Release() error {
	if t.released.Load() {
		return nil
	}
	select {
	case <-t.lost:
		t.c.deleteLater(orphan{session: t.session, path: t.path})
		return nil
	default:
	}
	err := t.c.zk.Delete(t.path, -1)
	if err == nil || errors.Is(err, zk.ErrNoNode) {
		return nil
	}
	if isConnErr(err) {
		t.c.deleteLater(orphan{session: t.session, path: t.path})
	}
	return fmt.Errorf("release turn %s: %w", t.path, err)
}
