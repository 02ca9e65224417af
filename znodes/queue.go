package znodes

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"

	"github.com/go-zookeeper/zk"
)

// The queue of protected ephemeral sequential nodes shared by TurnLock and
// Election: the first node in sequence order holds the turn or leads; every
// other one waits for its immediate predecessor only.

// errNodeGone means a contender's own node disappeared while its session lives.
var errNodeGone = errors.New("own node deleted by someone else")

// queue lists the sequential children of dir made with prefix, in sequence order.
func (c *Conn) queue(dir, prefix string) ([]string, error) {
	children, _, err := c.zk.Children(dir)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	queue := children[:0]
	for _, n := range children {
		if HasPrefixSeq(n, prefix) {
			queue = append(queue, n)
		}
	}
	SortSequential(queue)
	return queue, nil
}

// waitFirst blocks until own, created in session s, is the first of the
// queue under dir, watching only its predecessor each time (onWatch, if set,
// sees every watched path). It returns ctx.Err(), an error wrapping
// ErrSessionLost, or errNodeGone.
func (c *Conn) waitFirst(ctx context.Context, s session, dir, prefix, own string, onWatch func(string)) error {
	name := path.Base(own)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		queue, err := c.queue(dir, prefix)
		if err != nil {
			if !isConnErr(err) {
				return err
			}
			if err := c.awaitSession(ctx, s); err != nil {
				return err
			}
			continue
		}
		switch i := slices.Index(queue, name); {
		case i == 0:
			return nil
		case i < 0 && closed(s.lost):
			return fmt.Errorf("%s: %w", own, ErrSessionLost)
		case i < 0:
			return fmt.Errorf("%s: %w", own, errNodeGone)
		default:
			if err := c.waitDeleted(ctx, s, path.Join(dir, queue[i-1]), onWatch); err != nil {
				return err
			}
		}
	}
}

// deleteOwn deletes an ephemeral node this Conn created in session s, or
// hands it to the reaper when that cannot be done now.
func (c *Conn) deleteOwn(s session, p string) error {
	if cur, err := c.session(); err == nil && cur.gen == s.gen {
		err := c.zk.Delete(p, -1)
		if err == nil || errors.Is(err, zk.ErrNoNode) {
			return nil
		}
		if !isConnErr(err) {
			return fmt.Errorf("delete %s: %w", p, err)
		}
	}
	c.deleteLater(orphan{session: s.id, path: p})
	return fmt.Errorf("delete %s: connection down; deleted once reconnected if the session survived", p)
}

// closed reports whether ch is closed, without blocking.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
