package distrib

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/go-zookeeper/zk"

	"dcroll/znodes"
)

// progressRewrite forces a rewrite of an unchanged progress node, so
// dashboards can tell a stuck agent from a dead one.
const progressRewrite = 30 * time.Second

func sortProgress(ps []znodes.BlobProgress) {
	sort.Slice(ps, func(i, j int) bool { return ps[i].Blob < ps[j].Blob })
}

// RunProgress writes the node's progress to /dc/progress/<machine>
// (ephemeral) at most once a second, when it changed (or every 30 s),
// until ctx ends.
func (n *Node) RunProgress(ctx context.Context) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last []byte
	var lastAt time.Time
	for {
		blobs := n.Progress()
		cmp, _ := znodes.Encode(&znodes.Progress{Machine: n.cfg.Machine, Blobs: blobs})
		if !bytes.Equal(cmp, last) || time.Since(lastAt) >= progressRewrite {
			p := &znodes.Progress{Machine: n.cfg.Machine, Blobs: blobs, At: time.Now().UTC()}
			if err := n.writeProgress(p); err != nil {
				n.log.Warn("writing progress failed", "err", err)
			} else {
				last, lastAt = cmp, time.Now()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func (n *Node) writeProgress(p *znodes.Progress) error {
	c := n.cfg.Conn
	data, err := znodes.Encode(p)
	if err != nil {
		return err
	}
	path := c.Paths().Progress(n.cfg.Machine)
	_, err = c.Create(path, data, zk.FlagEphemeral)
	if errors.Is(err, zk.ErrNoNode) {
		if err := c.EnsurePath(c.Paths().ProgressRoot()); err != nil {
			return err
		}
		_, err = c.Create(path, data, zk.FlagEphemeral)
	}
	if errors.Is(err, zk.ErrNodeExists) {
		// Ours, or left by our previous session (it vanishes when that
		// session expires; the next write re-creates it).
		if _, err := c.ZK().Set(path, data, -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
			return fmt.Errorf("set %s: %w", path, err)
		}
		return nil
	}
	return err
}
