package coordinator

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/go-zookeeper/zk"

	"dcroll/spec"
	"dcroll/znodes"
)

// QueueEntry is a deploy queue entry with its znode name and version.
type QueueEntry = znodes.QueuedEntry

// ReadHead returns HEAD and its stat, or nil when nothing was pushed yet.
func ReadHead(c *znodes.Conn) (*znodes.Head, *zk.Stat, error) {
	var h znodes.Head
	st, err := c.GetJSON(c.Paths().Head(), &h)
	if errors.Is(err, zk.ErrNoNode) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read HEAD: %w", err)
	}
	return &h, st, nil
}

// LoadSpec reads the immutable spec id.
func LoadSpec(c *znodes.Conn, id string) (*spec.Spec, error) {
	b, _, err := c.ZK().Get(c.Paths().Spec(id))
	if errors.Is(err, zk.ErrNoNode) {
		return nil, fmt.Errorf("%w %s: see dcroll history for known ids", ErrUnknownSpec, id)
	}
	if err != nil {
		return nil, fmt.Errorf("load spec %s: %w", spec.ShortID(id), err)
	}
	return spec.FromStored(id, b)
}

// ResolveSpecID expands a unique prefix (at least 4 hex digits) of a stored spec id.
func ResolveSpecID(c *znodes.Conn, prefix string) (string, error) {
	prefix = strings.TrimPrefix(strings.ToLower(prefix), "sha256:")
	if len(prefix) < 4 {
		return "", fmt.Errorf("%w %q: give at least 4 hex digits of the id (see dcroll history)", ErrUnknownSpec, prefix)
	}
	ids, _, err := c.ZK().Children(c.Paths().Specs())
	if err != nil && !errors.Is(err, zk.ErrNoNode) {
		return "", fmt.Errorf("list specs: %w", err)
	}
	var found []string
	for _, id := range ids {
		if strings.HasPrefix(id, prefix) {
			found = append(found, id)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("%w %q: no stored spec has that id (see dcroll history)", ErrUnknownSpec, prefix)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("%w %q: ambiguous, matches %d specs: give more digits", ErrUnknownSpec, prefix, len(found))
}

// ReadQueue returns the deploy queue in order.
func ReadQueue(c *znodes.Conn) ([]QueueEntry, error) {
	p := c.Paths()
	names, _, err := c.ZK().Children(p.Deploy())
	if errors.Is(err, zk.ErrNoNode) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read deploy queue: %w", err)
	}
	znodes.SortSequential(names)
	out := make([]QueueEntry, 0, len(names))
	for _, n := range names {
		var e znodes.DeployEntry
		st, err := c.GetJSON(p.DeployEntry(n), &e)
		if errors.Is(err, zk.ErrNoNode) {
			continue // removed by a concurrent push
		}
		if err != nil {
			return nil, fmt.Errorf("read deploy queue: %w", err)
		}
		out = append(out, QueueEntry{Node: n, ZVersion: st.Version, DeployEntry: e})
	}
	return out, nil
}

// Active returns the first unfinished entry of the queue, or nil.
func Active(q []QueueEntry) *QueueEntry {
	for i := range q {
		if q[i].State != znodes.DeployDone {
			return &q[i]
		}
	}
	return nil
}

// MissingBlobs returns the blob ids of ids that are not published.
func MissingBlobs(c *znodes.Conn, ids []string) ([]string, error) {
	var missing []string
	for _, id := range ids {
		hex, ok := strings.CutPrefix(id, "sha256:")
		if !ok {
			return nil, fmt.Errorf("blob id %q: want sha256:<64 hex>", id)
		}
		ok, _, err := c.ZK().Exists(c.Paths().Blob(hex))
		if err != nil {
			return nil, fmt.Errorf("check blob %s: %w", id, err)
		}
		if !ok {
			missing = append(missing, id)
		}
	}
	sort.Strings(missing)
	return missing, nil
}

// History returns every HEAD move, oldest first.
func History(c *znodes.Conn) ([]znodes.HistoryEntry, error) {
	p := c.Paths()
	names, _, err := c.ZK().Children(p.History())
	if errors.Is(err, zk.ErrNoNode) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	znodes.SortSequential(names)
	out := make([]znodes.HistoryEntry, 0, len(names))
	for _, n := range names {
		var h znodes.HistoryEntry
		if _, err := c.GetJSON(p.HistoryEntry(n), &h); err != nil {
			return nil, fmt.Errorf("read history: %w", err)
		}
		out = append(out, h)
	}
	return out, nil
}
