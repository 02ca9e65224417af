package znodes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
)

// ErrNoLeader is returned by Leader when there is no candidate.
var ErrNoLeader = errors.New("no leader")

// Election is leader election among candidates under Paths.Election(name)
// (Curator's LeaderLatch and LeaderSelector): each candidate is a protected
// ephemeral sequential node holding the candidate's JSON [Candidate]; the lowest sequence
// leads; every other candidate watches only its predecessor.
//
// Leadership is conditional: the leader's context is cancelled as soon as
// the session is suspended (it may not be leader any more) or lost (it is
// not). After a suspension the candidate keeps its place and leads again if
// its node is still first; after a loss it joins again with a new node.
type Election struct {
	c   *Conn
	dir string
	id  string
	log *slog.Logger

	mu      sync.Mutex
	leading bool
}

// Candidate is the payload of an election node: who campaigns, since when.
type Candidate struct {
	V     int       `json:"v"`
	ID    string    `json:"id"`   // the candidate's id (NewElection), e.g. host:pid
	Host  string    `json:"host"` // hostname of the candidate's process
	PID   int       `json:"pid"`
	Since time.Time `json:"since"` // when this node was created
}

func (x *Candidate) setV() { x.V = SchemaVersion }

// NewElection returns the election name for a candidate called id (the
// payload of its node, what Leader returns).
func NewElection(c *Conn, name, id string) *Election {
	return &Election{
		c:   c,
		dir: c.Paths().Election(name),
		id:  id,
		log: c.Logger().With("component", "election", "election", name, "id", id),
	}
}

// IsLeader reports whether this candidate is running as leader now.
func (e *Election) IsLeader() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leading
}

// Run campaigns until ctx ends, calling lead each time this candidate
// becomes leader. lead must return promptly once leaderCtx is cancelled.
// When lead returns nil while still leader, the candidate resigns and joins
// again at the back of the queue; when it returns an error, Run resigns and
// returns that error. Run returns nil when ctx ends, after deleting its node.
func (e *Election) Run(ctx context.Context, lead func(leaderCtx context.Context) error) error {
	for {
		s, err := e.c.waitSession(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("election %s: %w", e.dir, err)
		}
		host, _ := os.Hostname()
		payload, err := Encode(&Candidate{ID: e.id, Host: host, PID: os.Getpid(), Since: e.c.opts.Clock.Now().UTC()})
		if err != nil {
			return fmt.Errorf("election %s: %w", e.dir, err)
		}
		own, err := e.c.createProtected(s, path.Join(e.dir, ElectionPrefix), payload)
		if err == nil {
			e.log.Debug("candidate", "node", own)
			err = e.campaign(ctx, s, own, lead)
			if delErr := e.c.deleteOwn(s, own); delErr != nil {
				e.log.Debug("resign", "err", delErr)
			}
		}
		var resigned *resignation
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.As(err, &resigned):
			if resigned.err != nil {
				return fmt.Errorf("election %s: leader: %w", e.dir, resigned.err)
			}
			e.log.Info("resigned; joining again")
		case errors.Is(err, ErrSessionLost):
			e.log.Info("session lost; joining again")
		case errors.Is(err, errNodeGone):
			e.log.Warn("candidate node deleted by someone else; joining again")
		case errors.Is(err, ErrClosed):
			return fmt.Errorf("election %s: %w", e.dir, err)
		case err != nil && !isConnErr(err):
			return fmt.Errorf("election %s: %w", e.dir, err)
		}
	}
}

// resignation ends a campaign because lead returned while still leader.
type resignation struct{ err error }

func (r *resignation) Error() string { return fmt.Sprintf("resigned: %v", r.err) }

// campaign waits for own to be first, leads, and repeats after a suspension.
func (e *Election) campaign(ctx context.Context, s session, own string, lead func(context.Context) error) error {
	for {
		if err := e.c.waitFirst(ctx, s, e.dir, ElectionPrefix, own, nil); err != nil {
			return err
		}
		if err := e.lead(ctx, s, lead); err != nil {
			return err
		}
		// Suspended while leading: wait for the session to come back, then
		// check the queue again (still first = still leader).
		if err := e.c.awaitSession(ctx, s); err != nil {
			return err
		}
	}
}

// lead runs lead until the session is suspended (returns nil), lost, or lead returns.
func (e *Election) lead(ctx context.Context, s session, lead func(context.Context) error) error {
	leaderCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Leadership needs a connected session of the same generation: check
	// after taking the change channel, so no transition is missed.
	changed := e.c.Changed()
	if cur, err := e.c.session(); err != nil || cur.gen != s.gen {
		return nil // campaign waits for the session and re-checks
	}
	e.setLeading(true)
	e.log.Info("leading")
	done := make(chan error, 1)
	go func() { done <- lead(leaderCtx) }()
	stepDown := func() {
		e.setLeading(false)
		cancel()
		<-done
	}
	for {
		select {
		case err := <-done:
			e.setLeading(false)
			return &resignation{err: err}
		case <-changed:
			changed = e.c.Changed()
			if cur, err := e.c.session(); err == nil && cur.gen == s.gen {
				continue
			}
			e.log.Warn("session suspended or lost; stepping down")
			stepDown()
			return nil
		case <-ctx.Done():
			stepDown()
			return ctx.Err()
		}
	}
}

func (e *Election) setLeading(v bool) {
	e.mu.Lock()
	e.leading = v
	e.mu.Unlock()
}

// Leader returns the id of the current leader of the election name, or an
// error wrapping ErrNoLeader when there is no candidate.
func (e *Election) Leader() (string, error) {
	l, err := leaderOf(e.c, e.dir)
	return l.ID, err
}

// LeaderOf returns the id of the current leader of the election name, or an
// error wrapping ErrNoLeader when there is no candidate.
func LeaderOf(c *Conn, name string) (string, error) {
	l, err := leaderOf(c, c.Paths().Election(name))
	return l.ID, err
}

// LeaderCandidate returns the payload of the current leader of the
// election name, or an error wrapping ErrNoLeader when there is no
// candidate.
func LeaderCandidate(c *Conn, name string) (Candidate, error) {
	return leaderOf(c, c.Paths().Election(name))
}

func leaderOf(c *Conn, dir string) (Candidate, error) {
	for {
		queue, err := c.queue(dir, ElectionPrefix)
		if errors.Is(err, zk.ErrNoNode) || (err == nil && len(queue) == 0) {
			return Candidate{}, fmt.Errorf("election %s: %w", dir, ErrNoLeader)
		}
		if err != nil {
			return Candidate{}, err
		}
		b, _, err := c.zk.Get(path.Join(dir, queue[0]))
		if errors.Is(err, zk.ErrNoNode) {
			continue // the leader just left: read again
		}
		if err != nil {
			return Candidate{}, fmt.Errorf("get leader of %s: %w", dir, err)
		}
		var l Candidate
		if err := Decode(b, &l); err != nil {
			return Candidate{}, fmt.Errorf("leader of %s: %w", dir, err)
		}
		return l, nil
	}
}
