package znodes

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/go-zookeeper/zk"
)

// SetOp is a Multi op writing data at p if its version is version (-1: any).
func SetOp(p string, data []byte, version int32) *zk.SetDataRequest {
	return &zk.SetDataRequest{Path: p, Data: data, Version: version}
}

// CheckOp is a Multi op that fails unless p exists at version.
func CheckOp(p string, version int32) *zk.CheckVersionRequest {
	return &zk.CheckVersionRequest{Path: p, Version: version}
}

// DeleteOp is a Multi op deleting p if its version is version (-1: any).
func DeleteOp(p string, version int32) *zk.DeleteRequest {
	return &zk.DeleteRequest{Path: p, Version: version}
}

// updateAttempts bounds Update's retries under contention.
const updateAttempts = 100

// Update is a read-modify-write of the JSON payload at p: it reads and
// decodes it, calls fn on it, and writes the result with a Set conditional
// on the version read, starting over when another writer got in between
// (ErrBadVersion). A missing node is created (persistent) from fn applied to
// the zero value. Nothing is written when fn leaves the payload unchanged;
// an error from fn aborts. fn may run several times: keep it free of side
// effects. A connection error leaves the outcome unknown (the write may have
// been applied); calling Update again then applies fn again.
func Update[T any](c *Conn, p string, fn func(*T) error) error {
	for range updateAttempts {
		var v T
		cur, st, err := c.zk.Get(p)
		exists := err == nil
		switch {
		case errors.Is(err, zk.ErrNoNode):
		case err != nil:
			return fmt.Errorf("update %s: get: %w", p, err)
		case len(cur) > 0:
			if err := Decode(cur, &v); err != nil {
				return fmt.Errorf("update %s: %w", p, err)
			}
		}
		if err := fn(&v); err != nil {
			return fmt.Errorf("update %s: %w", p, err)
		}
		b, err := Encode(&v)
		if err != nil {
			return fmt.Errorf("update %s: %w", p, err)
		}
		if exists {
			if bytes.Equal(b, cur) {
				return nil
			}
			_, err = c.zk.Set(p, b, st.Version)
		} else {
			_, err = c.zk.Create(p, b, 0, c.ACLFor(p))
		}
		switch {
		case err == nil:
			return nil
		case errors.Is(err, zk.ErrBadVersion), errors.Is(err, zk.ErrNodeExists), errors.Is(err, zk.ErrNoNode) && exists:
			continue // another writer got in between: read again
		default:
			return fmt.Errorf("update %s: write: %w", p, err)
		}
	}
	return fmt.Errorf("update %s: still conflicting after %d attempts", p, updateAttempts)
}
