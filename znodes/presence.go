package znodes

import (
	"errors"
	"fmt"
	"path"
	"sync"

	"github.com/go-zookeeper/zk"
)

// Presence is an ephemeral marker node that exists exactly while its owner
// says so, in every session: an agent's /dc/up/<service>/<machine>, present
// while the machine is available. A children list of such markers lets a
// reader count a thousand machines in one round trip.
//
// Set records what the owner wants and writes it when connected; Sync
// writes it again in a new session (the old marker ended with the old
// session, or is a leftover of it, which Sync replaces). Both are cheap
// when nothing changed: no ZooKeeper request at all.
type Presence struct {
	c    *Conn
	path string

	mu   sync.Mutex
	want bool
	gen  uint64 // the session whose marker state is known
	have bool   // the marker exists in session gen
}

// NewPresence returns the Presence of the marker at p (absent until Set(true)).
func NewPresence(c *Conn, p string) *Presence {
	return &Presence{c: c, path: p, gen: noGen}
}

const noGen = ^uint64(0)

// Set makes the marker exist (on) or not, now if connected, else at the
// next Sync in a connected session.
func (p *Presence) Set(on bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.want = on
	return p.syncLocked()
}

// Sync writes the wanted state if this session has not got it yet.
func (p *Presence) Sync() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.syncLocked()
}

func (p *Presence) syncLocked() error {
	st, gen, _ := p.c.State()
	if st != Connected {
		return nil // written at the next Sync
	}
	if gen == p.gen && p.have == p.want {
		return nil
	}
	if p.gen != gen {
		p.gen, p.have = gen, false
		// Unknown in a new session: a marker of an earlier session of
		// this machine may still be there until that session expires.
		if err := p.deleteLeftover(); err != nil {
			return err
		}
	}
	var err error
	if p.want {
		err = p.create()
	} else {
		err = p.c.zk.Delete(p.path, -1)
		if errors.Is(err, zk.ErrNoNode) {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("presence %s: %w", p.path, err)
	}
	p.have = p.want
	return nil
}

// deleteLeftover deletes a marker that another session owns (this
// machine's previous one: the path names the machine).
func (p *Presence) deleteLeftover() error {
	ok, st, err := p.c.zk.Exists(p.path)
	if err != nil {
		return fmt.Errorf("presence %s: %w", p.path, err)
	}
	if !ok || st.EphemeralOwner == p.c.SessionID() {
		p.have = ok
		return nil
	}
	if err := p.c.zk.Delete(p.path, st.Version); err != nil && !errors.Is(err, zk.ErrNoNode) {
		return fmt.Errorf("presence %s: delete a previous session's marker: %w", p.path, err)
	}
	return nil
}

// op returns the Multi op that brings the marker to on in session gen
// (nil: it is so already), or known false when the marker's state in that
// session is not known yet (Set then).
func (p *Presence) op(on bool, gen uint64) (op any, known bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if gen != p.gen {
		return nil, false
	}
	switch {
	case p.have == on:
		return nil, true
	case on:
		return p.c.CreateOp(p.path, nil, zk.FlagEphemeral), true
	default:
		return DeleteOp(p.path, -1), true
	}
}

// applied records that a Multi with op(on, gen) landed.
func (p *Presence) applied(on bool, gen uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.want = on
	if gen == p.gen {
		p.have = on
	}
}

func (p *Presence) create() error {
	_, err := p.c.Create(p.path, nil, zk.FlagEphemeral)
	if errors.Is(err, zk.ErrNoNode) {
		if err = p.c.EnsurePath(path.Dir(p.path)); err == nil {
			_, err = p.c.Create(p.path, nil, zk.FlagEphemeral)
		}
	}
	if errors.Is(err, zk.ErrNodeExists) {
		// Ours (an earlier create whose answer was lost) or a leftover:
		// deleteLeftover ran for this session, so it is ours.
		return nil
	}
	return err
}
