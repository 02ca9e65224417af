package znodes

import (
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/go-zookeeper/zk"
)

// orphan is an ephemeral node a recipe gave up on while it could not delete
// it (disconnected, or its session declared lost locally). Once the Conn is
// connected again with the same session id, the node may still exist and
// would keep its place in a lock queue or an election: the reaper deletes it.
// A node of another session is gone with that session and is forgotten.
type orphan struct {
	session int64
	path    string // the node, or with guid set, its parent directory
	guid    string // protected create with unknown outcome: match children by GUID
}

// deleteLater hands an abandoned ephemeral node of session id to the reaper.
func (c *Conn) deleteLater(o orphan) {
	if o.session == 0 {
		return
	}
	c.mu.Lock()
	c.orphans = append(c.orphans, o)
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// reap deletes orphans whenever the Conn is connected; it ends with Close.
func (c *Conn) reap() {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		st, id, ch := c.state, c.sessionID, c.changed
		var todo []orphan
		if st == Connected {
			todo, c.orphans = c.orphans, nil
		}
		c.mu.Unlock()
		if st == Closed {
			return
		}
		var retry []orphan
		for _, o := range todo {
			if o.session != id {
				continue
			}
			if err := c.deleteOrphan(o); err != nil {
				c.log.Warn("delete abandoned node", "path", o.path, "err", err)
				if isConnErr(err) {
					retry = append(retry, o)
				}
			}
		}
		if len(retry) > 0 {
			c.mu.Lock()
			c.orphans = append(c.orphans, retry...)
			c.mu.Unlock()
		}
		select {
		case <-ch:
		case <-c.kick:
		case <-c.done:
			return
		}
	}
}

func (c *Conn) deleteOrphan(o orphan) error {
	paths := []string{o.path}
	if o.guid != "" {
		children, _, err := c.zk.Children(o.path)
		if errors.Is(err, zk.ErrNoNode) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("list %s: %w", o.path, err)
		}
		paths = paths[:0]
		for _, name := range children {
			if strings.Contains(name, o.guid) {
				paths = append(paths, path.Join(o.path, name))
			}
		}
	}
	for _, p := range paths {
		ok, st, err := c.zk.Exists(p)
		if err != nil {
			return fmt.Errorf("stat %s: %w", p, err)
		}
		if !ok || st.EphemeralOwner != o.session {
			continue
		}
		if err := c.zk.Delete(p, st.Version); err != nil && !errors.Is(err, zk.ErrNoNode) {
			return fmt.Errorf("delete %s: %w", p, err)
		}
		c.log.Info("deleted node abandoned by an earlier generation of this session", "path", p)
	}
	return nil
}
