package znodes

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
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
	// ran out while disconnected). Treat every ephemeral of it as gone and
	// re-register; the next session is a new generation.
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

var (
	// ErrUnreachable is returned by Dial when no session could be established in time.
	ErrUnreachable = errors.New("zookeeper unreachable")
	// ErrSessionLost is returned by recipes when the session they worked in
	// was lost (expired, or disconnected longer than the session timeout):
	// every ephemeral node of it must be considered gone.
	ErrSessionLost = errors.New("zookeeper session lost")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("zookeeper connection closed")
)

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
	// TLS, when set, wraps every connection to a server (its certificate
	// and host name verified; see Security and LoadTLS).
	TLS *tls.Config
	// Auth are digest credentials (user:password) added to every session
	// (the library sends them again after each reconnect).
	Auth []string

	// onState, if set, sees every state change (tests: no transition is
	// missed, unlike polling State). Called with the Conn's lock held.
	onState func(st SessionState, gen uint64)
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

// session is one generation of a Conn's session.
type session struct {
	gen  uint64
	id   int64
	lost <-chan struct{}
}

// Conn is a ZooKeeper connection that tracks its session honestly: it uses
// the event callback (the library's event channel drops events), tells a
// suspended connection from a lost session, and declares the session lost
// locally when a disconnection outlasts the negotiated session timeout.
//
// A session declared lost locally can still be alive on the server (a quorum
// outage longer than the timeout: the new ZooKeeper leader renews sessions).
// The client then reconnects with the same session id; the Conn starts a new
// generation anyway, and the recipes hand the nodes they abandoned in the old
// generation to the Conn, which deletes them once reconnected (see reap.go).
type Conn struct {
	zk    *zk.Conn
	paths Paths
	opts  Options
	log   *slog.Logger // the connection's own records: component zk

	mu         sync.Mutex
	state      SessionState
	sessionID  int64
	gen        uint64        // bumped on every new session
	lost       chan struct{} // closed when the session of gen is lost
	changed    chan struct{} // closed and replaced on every state change
	timer      Timer         // local expiry timer while suspended
	negotiated time.Duration // session timeout granted by the server (0 until known)
	handshake  struct {      // values of the last connect response, see sniffConn
		timeout time.Duration
		id      int64
	}
	acl     *ACLTable     // the tree's identities (nil: open tree), read at Dial
	connErr error         // why the last connection attempt got no session, see noteConnErr
	orphans []orphan      // abandoned ephemerals to delete, see reap.go
	kick    chan struct{} // wakes the reaper
	done    chan struct{} // closed by Close
	wg      sync.WaitGroup
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
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	// The default host provider resolves names to addresses before
	// dialing: TLS would then check the certificate against an IP.
	var hosts zk.HostProvider = zk.NewDNSHostProvider()
	if opts.TLS != nil {
		hosts = &namedHosts{}
	}
	conn, _, err := zk.Connect(servers, opts.SessionTimeout,
		zk.WithEventCallback(c.onEvent),
		zk.WithDialer(c.dial),
		zk.WithHostProvider(hosts),
		zk.WithLogger(zkLogger{c.log}),
		zk.WithMaxBufferSize(1<<20),
		zk.WithMaxConnBufferSize(1<<20),
	)
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %v", ErrUnreachable, opts.Servers, err)
	}
	c.zk = conn
	wctx, cancel := context.WithTimeout(ctx, opts.ConnectTimeout)
	defer cancel()
	if err := c.WaitConnected(wctx); err != nil {
		c.markClosed()
		// zk.Conn.Close can wait a second for the answer to its close
		// request when there never was a connection (its reconnect loop may
		// flush the request queue just before the request lands in it).
		// Dial must fail within ConnectTimeout, so that bounded wait
		// finishes in the background; no session exists to clean up.
		go conn.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("connect to zookeeper at %s: %w", opts.Servers, ctx.Err())
		}
		c.mu.Lock()
		why := c.connErr
		c.mu.Unlock()
		if why != nil {
			return nil, fmt.Errorf("%w at %s: no session within %s: %v", ErrUnreachable, opts.Servers, opts.ConnectTimeout, why)
		}
		return nil, fmt.Errorf("%w at %s: no session within %s (%s)", ErrUnreachable, opts.Servers, opts.ConnectTimeout, UnreachableHint(opts.Servers))
	}
	for _, cred := range opts.Auth {
		if err := conn.AddAuth("digest", []byte(cred)); err != nil {
			c.Close()
			user, _, _ := strings.Cut(cred, ":")
			return nil, fmt.Errorf("zookeeper: authenticate as %s: %w", user, err)
		}
	}
	acl, err := c.loadACLTable()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("zookeeper: %w", err)
	}
	c.acl = acl
	c.wg.Add(1)
	go c.reap()
	return c, nil
}

// UnreachableHint says how to check the first server of a connect string
// and where the address comes from, for the errors of an unreachable
// ZooKeeper.
func UnreachableHint(servers string) string {
	first, _, _ := strings.Cut(servers, ",")
	host, port, err := net.SplitHostPort(zk.FormatServers([]string{first})[0])
	if err != nil {
		host, port = first, "2181"
	}
	return fmt.Sprintf("is ZooKeeper running there? check with: echo ruok | nc %s %s; or point --zk / DCROLL_ZK at your ensemble", host, port)
}

// dial opens a TCP connection that reports the connect response to the Conn.
func (c *Conn) dial(network, address string, timeout time.Duration) (net.Conn, error) {
	nc, err := net.DialTimeout(network, address, timeout)
	if err != nil {
		return nil, err
	}
	if c.opts.TLS != nil {
		if nc, err = dialTLS(nc, c.opts.TLS, address, timeout); err != nil {
			c.log.Warn("zookeeper TLS", "server", address, "err", err)
			c.noteConnErr(err)
			return nil, err
		}
	}
	return &sniffConn{Conn: nc, done: c.onHandshake, fail: c.noteEarlyClose}, nil
}

// noteConnErr keeps why the last connection attempt failed, for Dial's
// error: the library only logs it, and "no session" alone sends the
// operator looking for a server that is running fine.
func (c *Conn) noteConnErr(err error) {
	var ne net.Error
	c.mu.Lock()
	defer c.mu.Unlock()
	// A timeout (a loaded server, a slow first handshake) says less than
	// the failure before it: keep that one.
	if errors.As(err, &ne) && ne.Timeout() && c.connErr != nil {
		return
	}
	c.connErr = err
}

// noteEarlyClose is a connection that ended before the server's connect
// response: a TLS server refusing the client after the handshake (TLS
// 1.3 checks client certificates then), or a TLS port closing on a plain
// client.
func (c *Conn) noteEarlyClose(addr string, err error) {
	if c.opts.TLS != nil {
		c.noteConnErr(fmt.Errorf("zookeeper TLS with %s: %w (%s)", addr, err, tlsFix(err)))
		return
	}
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
		c.noteConnErr(fmt.Errorf("%s closed the connection before answering: if it is a TLS port (secureClientPort), connect with --zk-tls-ca", addr))
	}
}

// sniffConn reads the connect response that opens every connection to learn
// the negotiated session timeout and the session id: zk.Conn keeps both
// unexported. The response starts with int32 length, int32 protocol version,
// int32 timeout (ms), int64 session id (0 when the session expired).
type sniffConn struct {
	net.Conn
	hdr  [20]byte
	n    int
	done func(timeoutMs int32, id int64)
	fail func(addr string, err error) // the connection ended before the response
}

func (s *sniffConn) Read(b []byte) (int, error) {
	n, err := s.Conn.Read(b)
	if s.n < len(s.hdr) && err != nil && !errors.Is(err, net.ErrClosed) {
		s.fail(s.RemoteAddr().String(), err)
	}
	if s.n < len(s.hdr) && n > 0 {
		s.n += copy(s.hdr[s.n:], b[:n])
		if s.n == len(s.hdr) {
			s.done(int32(binary.BigEndian.Uint32(s.hdr[8:12])), int64(binary.BigEndian.Uint64(s.hdr[12:20])))
		}
	}
	return n, err
}

// onHandshake runs on the library's connection goroutine right before it
// reports StateHasSession (or StateExpired) for the same response.
func (c *Conn) onHandshake(timeoutMs int32, id int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.handshake.timeout = time.Duration(timeoutMs) * time.Millisecond
	c.handshake.id = id
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
		id := c.handshake.id
		if c.state == Lost || (c.sessionID != 0 && id != c.sessionID) {
			c.newGenLocked()
		}
		if c.sessionID != id || c.handshake.timeout != c.negotiated {
			c.log.Info("zookeeper session established", "session", fmt.Sprintf("0x%x", id),
				"gen", c.gen, "timeout", c.handshake.timeout.String())
		}
		c.sessionID = id
		c.connErr = nil
		if c.handshake.timeout > 0 {
			c.negotiated = c.handshake.timeout
		}
		c.stopTimerLocked()
		c.setLocked(Connected)
	case zk.StateExpired:
		c.log.Warn("zookeeper session expired", "session", fmt.Sprintf("0x%x", c.sessionID), "gen", c.gen)
		c.loseLocked()
	case zk.StateDisconnected:
		if c.state == Connected {
			c.log.Warn("zookeeper disconnected; session suspended", "session", fmt.Sprintf("0x%x", c.sessionID))
			c.startTimerLocked()
			c.setLocked(Suspended)
		}
	}
}

func (c *Conn) startTimerLocked() {
	c.stopTimerLocked()
	timeout := c.sessionTimeoutLocked()
	gen := c.gen
	c.timer = c.opts.Clock.AfterFunc(timeout, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.gen == gen && c.state == Suspended {
			c.log.Warn("disconnected longer than the session timeout; treating session as lost", "timeout", timeout.String(), "gen", gen)
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
	closeOnce(c.lost)
	c.setLocked(Lost)
}

func (c *Conn) newGenLocked() {
	c.gen++
	closeOnce(c.lost)
	c.lost = make(chan struct{})
}

func (c *Conn) setLocked(s SessionState) {
	c.state = s
	if c.opts.onState != nil {
		c.opts.onState(s, c.gen)
	}
	close(c.changed)
	c.changed = make(chan struct{})
}

func closeOnce(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
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
	s, err := c.session()
	if err != nil {
		return 0, nil, err
	}
	return s.gen, s.lost, nil
}

// session returns the live session, or an error saying why there is none.
func (c *Conn) session() (session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case Connected:
		return session{gen: c.gen, id: c.sessionID, lost: c.lost}, nil
	case Closed:
		return session{}, ErrClosed
	}
	return session{}, fmt.Errorf("zookeeper session %s", c.state)
}

// WaitConnected blocks until the session is Connected or ctx ends.
func (c *Conn) WaitConnected(ctx context.Context) error {
	_, err := c.waitSession(ctx)
	return err
}

// waitSession waits for a live session and returns it.
func (c *Conn) waitSession(ctx context.Context) (session, error) {
	for {
		c.mu.Lock()
		st, ch := c.state, c.changed
		s := session{gen: c.gen, id: c.sessionID, lost: c.lost}
		c.mu.Unlock()
		switch st {
		case Connected:
			return s, nil
		case Closed:
			return session{}, ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return session{}, ctx.Err()
		}
	}
}

// retryDelay paces retries after a connection error: the library reports the
// disconnection before failing requests, so waiting for Connected is what
// matters; the delay only keeps a flapping connection from spinning.
const retryDelay = 20 * time.Millisecond

// awaitSession waits after a connection error until s is connected again. It
// returns ErrSessionLost when s is lost meanwhile, ErrClosed after Close and
// ctx.Err() when ctx ends. Without a deadline in ctx, the wait lasts at most
// as long as the session: the local expiry timer bounds it.
func (c *Conn) awaitSession(ctx context.Context, s session) error {
	ctxDone := ctx.Done()
	t := time.NewTimer(retryDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.lost:
	case <-ctxDone:
		return ctx.Err()
	}
	for {
		c.mu.Lock()
		st, gen, ch := c.state, c.gen, c.changed
		c.mu.Unlock()
		select {
		case <-s.lost:
			if st == Closed {
				return ErrClosed
			}
			return ErrSessionLost
		default:
		}
		if st == Connected && gen == s.gen {
			return nil
		}
		select {
		case <-ch:
		case <-s.lost:
		case <-ctxDone:
			return ctx.Err()
		}
	}
}

// isConnErr reports errors after which a request's outcome is unknown or the
// request never reached a server: retry once reconnected.
func isConnErr(err error) bool {
	var ne net.Error
	return errors.Is(err, zk.ErrConnectionClosed) || errors.Is(err, zk.ErrNoServer) ||
		errors.Is(err, zk.ErrSessionExpired) || errors.Is(err, zk.ErrSessionMoved) ||
		errors.Is(err, zk.ErrClosing) || errors.As(err, &ne)
}

// SessionTimeout is the session timeout the server granted, read from its
// connect response; the requested value until the first session.
func (c *Conn) SessionTimeout() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sessionTimeoutLocked()
}

func (c *Conn) sessionTimeoutLocked() time.Duration {
	if c.negotiated > 0 {
		return c.negotiated
	}
	return c.opts.SessionTimeout
}

// SessionID is the id of the current (or last) session, 0 before the first.
func (c *Conn) SessionID() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sessionID
}

// ZK exposes the underlying connection for operations without a helper here.
func (c *Conn) ZK() *zk.Conn { return c.zk }

// Paths returns the path builder of this connection's root.
func (c *Conn) Paths() Paths { return c.paths }

// Logger returns the logger the connection was given (Options.Logger),
// without the connection's own component key: recipes built on the
// connection (election, registration, turn lock) add their own, and slog
// would otherwise repeat the key in every record.
func (c *Conn) Logger() *slog.Logger { return c.opts.Logger }

// Close ends the session; its ephemerals disappear at once. It waits for the
// Conn's own goroutine.
func (c *Conn) Close() {
	if !c.markClosed() {
		return
	}
	c.zk.Close()
	c.wg.Wait()
}

// markClosed moves to Closed, once; it reports whether it did.
func (c *Conn) markClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == Closed {
		return false
	}
	c.stopTimerLocked()
	closeOnce(c.lost)
	c.setLocked(Closed)
	close(c.done)
	return true
}

type zkLogger struct{ l *slog.Logger }

func (z zkLogger) Printf(format string, args ...any) {
	z.l.Debug(fmt.Sprintf(format, args...))
}
