package znodes

import (
	"errors"
	"fmt"
	"path"

	"github.com/go-zookeeper/zk"
)

// ACLFor returns the ACL of a node created at p. Every create in dcroll goes
// through Create, CreateOp or CreateProtected, so per-path ACLs (release
// identity for specs and deploy, agents for their own nodes) go here.
func (c *Conn) ACLFor(p string) []zk.ACL { return c.opts.ACL }

// Create creates a znode with the ACL for its path.
func (c *Conn) Create(p string, data []byte, flags int32) (string, error) {
	got, err := c.zk.Create(p, data, flags, c.ACLFor(p))
	if err != nil {
		return "", fmt.Errorf("create %s: %w", p, err)
	}
	return got, nil
}

// CreateProtected creates a protected ephemeral sequential node (GUID prefix,
// found again after a lost create response, so a retry never duplicates it).
func (c *Conn) CreateProtected(prefix string, data []byte) (string, error) {
	got, err := c.zk.CreateProtectedEphemeralSequential(prefix, data, c.ACLFor(prefix))
	if err != nil {
		return "", fmt.Errorf("create %s: %w", prefix, err)
	}
	return got, nil
}

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

// EnsureSkeleton creates the persistent containers of the layout.
func (c *Conn) EnsureSkeleton() error {
	for _, p := range c.paths.Skeleton() {
		if err := c.EnsurePath(p); err != nil {
			return err
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
