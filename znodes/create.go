package znodes

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/go-zookeeper/zk"
)

// ACLFor returns the ACL of a node created at p. Every create in dcroll goes
// through Create, CreateOp, CreateProtected or EnsurePath, so the role table
// (acl.go) is applied here: in a tree secured by dcroll init, each node
// gets its roles' permissions; an open tree keeps Options.ACL.
func (c *Conn) ACLFor(p string) []zk.ACL {
	if t := c.ACLTable(); t != nil {
		return t.ACL(c.paths.Root, p)
	}
	return c.opts.ACL
}

// Create creates a znode with the ACL for its path.
func (c *Conn) Create(p string, data []byte, flags int32) (string, error) {
	got, err := c.zk.Create(p, data, flags, c.ACLFor(p))
	if err != nil {
		return "", fmt.Errorf("create %s: %w", p, err)
	}
	return got, nil
}

// CreateProtected creates a protected ephemeral sequential node: its name is
// "_c_<guid>-" + the last element of prefix + 10 digits, the same form as
// zk.CreateProtectedEphemeralSequential. When the create fails with a
// connection error (it may have been applied), it waits for the session to
// reconnect and looks for its GUID among the children before trying again,
// so a lost response never leaves a duplicate. A missing parent directory is
// created. It needs a live session, and returns an error wrapping
// ErrSessionLost when that session is lost meanwhile (a node it may have
// created is then handed to the reaper, see reap.go).
func (c *Conn) CreateProtected(prefix string, data []byte) (string, error) {
	s, err := c.session()
	if err != nil {
		return "", fmt.Errorf("create %s: %w", prefix, err)
	}
	return c.createProtected(s, prefix, data)
}

func (c *Conn) createProtected(s session, prefix string, data []byte) (string, error) {
	var g [16]byte
	if _, err := rand.Read(g[:]); err != nil {
		return "", fmt.Errorf("create %s: guid: %w", prefix, err)
	}
	guid := hex.EncodeToString(g[:])
	dir, base := path.Split(prefix)
	dir = path.Clean(dir)
	protected := path.Join(dir, protectedPrefix+guid+"-"+base)
	ensured := false
	for {
		got, err := c.zk.Create(protected, data, zk.FlagEphemeral|zk.FlagSequence, c.ACLFor(prefix))
		if errors.Is(err, zk.ErrNoNode) && !ensured {
			ensured = true
			if err = c.EnsurePath(dir); err == nil {
				continue
			}
		}
		if err == nil {
			return got, nil
		}
		if !isConnErr(err) {
			return "", fmt.Errorf("create %s: %w", prefix, err)
		}
		// Unknown outcome: find the node once reconnected to the same session.
		for {
			if err := c.awaitSession(context.Background(), s); err != nil {
				c.deleteLater(orphan{session: s.id, path: dir, guid: guid})
				return "", fmt.Errorf("create %s: %w", prefix, err)
			}
			children, _, err := c.zk.Children(dir)
			if err == nil {
				for _, name := range children {
					if strings.HasPrefix(name, protectedPrefix+guid+"-") {
						return path.Join(dir, name), nil
					}
				}
				break // not created: try again
			}
			if !isConnErr(err) {
				c.deleteLater(orphan{session: s.id, path: dir, guid: guid})
				return "", fmt.Errorf("create %s: list %s: %w", prefix, dir, err)
			}
		}
	}
}

// protectedPrefix starts the name of a protected node (as in zk and Curator).
const protectedPrefix = "_c_"

// CreateOp is a create for use inside Multi.
func (c *Conn) CreateOp(p string, data []byte, flags int32) *zk.CreateRequest {
	return &zk.CreateRequest{Path: p, Data: data, Flags: flags, Acl: c.ACLFor(p)}
}

// EnsurePath creates p and its missing parents as empty persistent nodes.
func (c *Conn) EnsurePath(p string) error {
	if p == "/" || p == "" {
		return nil
	}
	ok, _, err := c.zk.Exists(p)
	if err != nil {
		return fmt.Errorf("ensure %s: %w", p, err)
	}
	if ok {
		return nil
	}
	if err := c.EnsurePath(path.Dir(p)); err != nil {
		return err
	}
	if _, err := c.zk.Create(p, nil, 0, c.ACLFor(p)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
		return fmt.Errorf("ensure %s: %w", p, err)
	}
	return nil
}

// EnsureSkeleton creates the persistent containers of the layout and the
// control node (its version fences every spend, so it must exist).
func (c *Conn) EnsureSkeleton() error {
	for _, p := range c.paths.Skeleton() {
		if err := c.EnsurePath(p); err != nil {
			if errors.Is(err, zk.ErrNoAuth) && p == c.paths.RecoveringRoot() {
				// A tree secured before the recovering set existed lacks it
				// until dcroll init runs again (or a push creates it); only
				// the recovering set needs it, and it falls back without.
				continue
			}
			return err
		}
	}
	ctl := c.paths.Control()
	if ok, _, err := c.zk.Exists(ctl); err != nil {
		return fmt.Errorf("ensure %s: %w", ctl, err)
	} else if !ok {
		if _, err := c.Create(ctl, MustEncode(&Control{}), 0); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			return fmt.Errorf("ensure %s: %w", ctl, err)
		}
	}
	return nil
}

// GetJSON reads and decodes a payload.
func (c *Conn) GetJSON(p string, v any) (*zk.Stat, error) {
	b, st, err := c.zk.Get(p)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", p, err)
	}
	if err := Decode(b, v); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return st, nil
}

// Multi runs ops atomically. It checks the top-level error first (the
// per-op errors of a failed transaction are misleading: earlier ops report
// nil although everything was rolled back) and names the failing op.
func (c *Conn) Multi(ops ...any) ([]zk.MultiResponse, error) {
	res, err := c.zk.Multi(ops...)
	if err != nil {
		for i, r := range res {
			if r.Error != nil && !errors.Is(r.Error, zk.ErrAPIError) && i < len(ops) {
				return res, fmt.Errorf("transaction failed at op %d (%s): %w", i, opPath(ops[i]), r.Error)
			}
		}
		return res, fmt.Errorf("transaction: %w", err)
	}
	return res, nil
}

func opPath(op any) string {
	switch o := op.(type) {
	case *zk.CreateRequest:
		return "create " + o.Path
	case *zk.SetDataRequest:
		return "set " + o.Path
	case *zk.DeleteRequest:
		return "delete " + o.Path
	case *zk.CheckVersionRequest:
		return "check " + o.Path
	}
	return fmt.Sprintf("%T", op)
}

// WaitDeleted blocks until the node at p does not exist. It watches p only
// and re-checks on every event but deletion; a suspension does not end the
// wait (the watch is restored on reconnect). It returns ErrSessionLost when
// the current session is lost first, and ctx.Err() when ctx ends.
func (c *Conn) WaitDeleted(ctx context.Context, p string) error {
	s, err := c.waitSession(ctx)
	if err != nil {
		return fmt.Errorf("wait for %s to go: %w", p, err)
	}
	return c.waitDeleted(ctx, s, p, nil)
}

// waitDeleted waits, within session s, until p is gone; onWatch, if set, is
// called before each watch is set. It watches with GetW, not ExistsW: on a
// missing node ExistsW would leave a creation watch behind on the server
// (Curator's lock recipe does the same).
func (c *Conn) waitDeleted(ctx context.Context, s session, p string, onWatch func(string)) error {
	for {
		select {
		case <-s.lost:
			return fmt.Errorf("wait for %s to go: %w", p, ErrSessionLost)
		default:
		}
		if onWatch != nil {
			onWatch(p)
		}
		_, _, ch, err := c.zk.GetW(p)
		switch {
		case errors.Is(err, zk.ErrNoNode):
			return nil
		case err != nil && !isConnErr(err):
			return fmt.Errorf("watch %s: %w", p, err)
		case err != nil:
			if err := c.awaitSession(ctx, s); err != nil {
				return fmt.Errorf("wait for %s to go: %w", p, err)
			}
			continue
		}
		select {
		case ev := <-ch:
			if ev.Type == zk.EventNodeDeleted {
				return nil
			}
			// Data changed, or the watch ended: look again.
		case <-s.lost:
			return fmt.Errorf("wait for %s to go: %w", p, ErrSessionLost)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
