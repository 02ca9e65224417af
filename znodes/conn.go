package znodes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
)

// SessionState is the connection's view of its ZooKeeper session.
type SessionState int

const (
	// Connected: a live session; ephemerals and watches are valid.
	Connected SessionState = iota
	// Suspended: disconnected; the session may still be alive on the server.
	// Start nothing new that needs a lock or a quorum spend.
	Suspended
	// Lost: the session expired (learned from the server, or the local timer
	// ran out while disconnected). Every ephemeral of it is gone: re-register.
	Lost
	// Closed: Close was called.
	Closed
)

func (s SessionState) String() string {
	switch s {
	case Connected:
		return "connected"
	case Suspended:
		return "suspended"
	case Lost:
		return "lost"
	case Closed:
		return "closed"
	}
	return fmt.Sprintf("SessionState(%d)", int(s))
}

// ErrUnreachable is returned by Dial when no session could be established in time.
var ErrUnreachable = errors.New("zookeeper unreachable")

// Options configure Dial.
type Options struct {
	// Servers is a comma-separated connect string: "host:port,host:port".
	Servers string
	// Root is the dcroll root znode (default /dc).
	Root string
	// SessionTimeout requested from the server (default 10s; the server clamps
	// it to 2x..20x its tickTime; the negotiated value is used locally).
	SessionTimeout time.Duration
	// ConnectTimeout bounds Dial's wait for the first session (default 5s).
	ConnectTimeout time.Duration
	// Logger receives connection events (default slog.Default()).
	Logger *slog.Logger
	// ACL applied to every node created through Create (default world:anyone all).
	ACL []zk.ACL
	// Clock drives the local expiry timer (default real time).
	Clock Clock
}

func (o *Options) defaults() {
	if o.Root == "" {
		o.Root = DefaultRoot
	}
	if o.SessionTimeout == 0 {
		o.SessionTimeout = 10 * time.Second
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ACL == nil {
		o.ACL = zk.WorldACL(zk.PermAll)
	}
	if o.Clock == nil {
		o.Clock = RealClock{}
	}
}

// Conn is a ZooKeeper connection that tracks its session honestly: it uses
// the event callback (the library's event channel drops events), tells a
// suspended connection from a lost session, and declares the session lost
// locally when a disconnection outlasts the negotiated session timeout.
type Conn struct {
	zk    *zk.Conn
	paths Paths
	opts  Options
	log   *slog.Logger

	mu        sync.Mutex
	state     SessionState
	sessionID int64
	gen       uint64        // bumped on every new session
	lost      chan struct{} // closed when the session of gen is lost
	changed   chan struct{} // closed and replaced on every state change
	timer     Timer         // local expiry timer while suspended
}

// Dial connects and waits for a session. It fails within ConnectTimeout with
// an error wrapping ErrUnreachable that says how to fix it.
func Dial(ctx context.Context, opts Options) (*Conn, error) {
	opts.defaults()
	servers := strings.Split(opts.Servers, ",")
	c := &Conn{
		paths:   NewPaths(opts.Root),
		opts:    opts,
		log:     opts.Logger.With("component", "zk"),
		state:   Suspended,
		lost:    make(chan struct{}),
		changed: make(chan struct{}),
	}
	conn, _, err := zk.Connect(servers, opts.SessionTimeout,
		zk.WithEventCallback(c.onEvent),
		zk.WithLogger(zkLogger{c.log}),
		zk.WithMaxBufferSize(1<<20),
		zk.WithMaxConnBufferSize(1<<20),
	)
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %v", ErrUnreachable, opts.Servers, err)
	}
	c.mu.Lock()
	c.zk = conn
	if c.state == Connected && c.sessionID == 0 {
		c.sessionID = conn.SessionID()
	}
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, opts.ConnectTimeout)
	defer cancel()
	if err := c.WaitConnected(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w at %s: no session within %s (is it running? start one with `make zk`, or point --zk / DCROLL_ZK at your ensemble)", ErrUnreachable, opts.Servers, opts.ConnectTimeout)
	}
	return c, nil
}

func (c *Conn) onEvent(ev zk.Event) {
	if ev.Type != zk.EventSession {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == Closed {
		return
	}
	switch ev.State {
	case zk.StateHasSession:
		id := int64(0)
		if c.zk != nil {
			id = c.zk.SessionID()
		}
		if c.state == Lost || (c.sessionID != 0 && id != c.sessionID) {
			c.newGenLocked()
		}
		if c.sessionID != id {
			c.log.Info("zookeeper session established", "session", fmt.Sprintf("0x%x", id))
		}
		c.sessionID = id
		c.stopTimerLocked()
		c.setLocked(Connected)
	case zk.StateExpired:
		c.log.Warn("zookeeper session expired", "session", fmt.Sprintf("0x%x", c.sessionID))
		c.loseLocked()
	case zk.StateDisconnected:
		if c.state == Connected {
			c.log.Warn("zookeeper disconnected; session suspended")
			c.setLocked(Suspended)
			c.startTimerLocked()
		}
	}
}

func (c *Conn) startTimerLocked() {
	c.stopTimerLocked()
	timeout := c.SessionTimeout()
	gen := c.gen
	c.timer = c.opts.Clock.AfterFunc(timeout, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.gen == gen && c.state == Suspended {
			c.log.Warn("disconnected longer than the session timeout; treating session as lost", "timeout", timeout)
			c.loseLocked()
		}
	})
}

func (c *Conn) stopTimerLocked() {
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
}

func (c *Conn) loseLocked() {
	if c.state == Lost || c.state == Closed {
		return
	}
	c.stopTimerLocked()
	close(c.lost)
	c.setLocked(Lost)
}

func (c *Conn) newGenLocked() {
	c.gen++
	select {
	case <-c.lost:
	default:
		close(c.lost)
	}
	c.lost = make(chan struct{})
}

func (c *Conn) setLocked(s SessionState) {
	c.state = s
	close(c.changed)
	c.changed = make(chan struct{})
}

// State returns the session state, a generation number that changes with
// every new session, and a channel closed when that session is lost.
func (c *Conn) State() (SessionState, uint64, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state, c.gen, c.lost
}

// Changed returns a channel closed at the next state change.
func (c *Conn) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// Session returns the current session generation and its lost channel, or
// an error when there is no live session.
func (c *Conn) Session() (uint64, <-chan struct{}, error) {
	st, gen, lost := c.State()
	if st != Connected {
		return 0, nil, fmt.Errorf("zookeeper session %s", st)
	}
	return gen, lost, nil
}

// WaitConnected blocks until the session is Connected or ctx ends.
func (c *Conn) WaitConnected(ctx context.Context) error {
	for {
		c.mu.Lock()
		st, ch := c.state, c.changed
		c.mu.Unlock()
		switch st {
		case Connected:
			return nil
		case Closed:
			return errors.New("zookeeper connection closed")
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// SessionTimeout is the negotiated session timeout (the requested one until known).
func (c *Conn) SessionTimeout() time.Duration {
	// zk.Conn does not export the negotiated value; the server clamps to
	// [2,20]x tickTime, so the request is the best local estimate.
	return c.opts.SessionTimeout
}

// SessionID is the current session id (0 before the first session).
func (c *Conn) SessionID() int64 { return c.zk.SessionID() }

// ZK exposes the underlying connection for operations without a helper here.
func (c *Conn) ZK() *zk.Conn { return c.zk }

// Paths returns the path builder of this connection's root.
func (c *Conn) Paths() Paths { return c.paths }

// Logger returns the connection's logger.
func (c *Conn) Logger() *slog.Logger { return c.log }

// Close ends the session; its ephemerals disappear at once.
func (c *Conn) Close() {
	c.mu.Lock()
	if c.state == Closed {
		c.mu.Unlock()
		return
	}
	c.stopTimerLocked()
	select {
	case <-c.lost:
	default:
		close(c.lost)
	}
	c.setLocked(Closed)
	c.mu.Unlock()
	c.zk.Close()
}

type zkLogger struct{ l *slog.Logger }

func (z zkLogger) Printf(format string, args ...any) {
	z.l.Debug(fmt.Sprintf(format, args...))
}
