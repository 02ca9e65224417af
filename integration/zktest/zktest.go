// Package zktest wraps dcroll/integration/zkserver for tests: a real
// ZooKeeper (or ensemble) per test with cleanup, client connections that log
// through the test, a proxy to force session expiry, and a polling wait.
//
// Tests that use it start JVMs; under `go test -short` Start and
// StartEnsemble skip the test, so short runs stay fast.
//
//	func TestX(t *testing.T) {
//		s := zktest.Start(t)
//		p := zktest.NewProxy(t, s.Addr())
//		c := zktest.Connect(t, p.Addr(), time.Second)
//		...
//		zktest.ExpireSession(t, p, c, 10*time.Second)
//	}
package zktest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"dcroll/integration/zkserver"

	"github.com/go-zookeeper/zk"
)

// connectTimeout bounds Connect's wait for a session.
const connectTimeout = 20 * time.Second

// logTailLines is how much of a server's log a failed test prints.
const logTailLines = 60

// Start starts a standalone server in a fresh t.TempDir and stops it when the
// test ends. It skips the test under -short and fails it if the server does
// not start.
func Start(t testing.TB) *zkserver.Server {
	t.Helper()
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := zkserver.Start(ctx, zkserver.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("start zookeeper: %v", err)
	}
	t.Cleanup(func() { stop(t, s) })
	return s
}

// StartEnsemble starts n servers forming a quorum, stopped when the test
// ends. It skips the test under -short.
func StartEnsemble(t testing.TB, n int) *zkserver.Ensemble {
	t.Helper()
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := zkserver.StartEnsemble(ctx, n, zkserver.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("start zookeeper ensemble of %d: %v", n, err)
	}
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, s := range e.Servers {
			wg.Go(func() { stop(t, s) })
		}
		wg.Wait()
	})
	return e
}

func skipShort(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a real ZooKeeper: skipped with -short")
	}
}

// stop stops s at cleanup and, if the test failed, prints the end of its log.
func stop(t testing.TB, s *zkserver.Server) {
	if err := s.Stop(); err != nil {
		t.Errorf("stop zookeeper %s: %v", s.Addr(), err)
	}
	if t.Failed() {
		t.Logf("last lines of zookeeper %s (id %d) log:\n%s", s.Addr(), s.ID(), lastLines(s.LogTail(), logTailLines))
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// NewProxy starts a proxy to target, closed when the test ends.
func NewProxy(t testing.TB, target string) *zkserver.Proxy {
	t.Helper()
	p, err := zkserver.NewProxy(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// Connect opens a go-zookeeper connection to addr (one address or a
// comma-separated connect string) and waits up to 20s for a session. The
// connection logs through t.Logf until the test ends and is closed at
// cleanup. opts are zk connection options (zk.WithEventCallback, ...);
// a zk.WithLogger among them replaces the test logger.
func Connect(t testing.TB, addr string, sessionTimeout time.Duration, opts ...func(*zk.Conn)) *zk.Conn {
	t.Helper()
	logger := &tbLogger{t: t, prefix: "zk client " + addr + ": "}
	// Registered first, so it runs last: the library's goroutines may log
	// while and after the connection closes, and t.Logf panics once the
	// test has ended.
	t.Cleanup(logger.stop)
	options := connOptions(zk.WithLogger(logger), zk.WithMaxBufferSize(1<<20))
	for _, o := range opts {
		options = append(options, o)
	}
	conn, _, err := zk.Connect(strings.Split(addr, ","), sessionTimeout, options...)
	if err != nil {
		t.Fatalf("connect to zookeeper %s: %v", addr, err)
	}
	t.Cleanup(conn.Close)
	if err := waitSession(conn, connectTimeout); err != nil {
		t.Fatalf("connect to zookeeper %s: %v", addr, err)
	}
	return conn
}

// connOptions makes a slice of go-zookeeper's unexported option type, so
// that Connect can take options as plain funcs.
func connOptions[O ~func(*zk.Conn)](opts ...O) []O { return opts }

// waitSession polls until conn has a session.
func waitSession(conn *zk.Conn, timeout time.Duration) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for conn.State() != zk.StateHasSession {
		select {
		case <-deadline.C:
			return fmt.Errorf("no session after %v (state %v)", timeout, conn.State())
		case <-tick.C:
		}
	}
	return nil
}

// tbLogger sends go-zookeeper's logs to t.Logf until stop.
type tbLogger struct {
	t      testing.TB
	prefix string

	mu      sync.Mutex
	stopped bool
}

func (l *tbLogger) Printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.stopped {
		l.t.Logf(l.prefix+format, args...)
	}
}

func (l *tbLogger) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
}

// ExpireSession makes the server expire conn's session, which must go
// through p: it marks the session with an ephemeral probe node, cuts the
// proxy, waits (up to timeout) until a second client connected directly to
// p.Target() sees the probe deleted, which happens only when the server has
// expired the session, and restores the proxy. conn learns of the expiry
// (StateExpired, then a new session) when it reconnects, about a second after
// the restore.
//
// The probe is /zktest-expire-<session id in hex>; it disappears with the
// session.
func ExpireSession(t testing.TB, p *zkserver.Proxy, conn *zk.Conn, timeout time.Duration) {
	t.Helper()
	WaitFor(t, timeout, "the connection to have a session before expiring it", func() (bool, error) {
		return conn.State() == zk.StateHasSession, nil
	})
	sid := conn.SessionID()
	probe := fmt.Sprintf("/zktest-expire-%016x", sid)
	if _, err := conn.Create(probe, nil, zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
		t.Fatalf("expire session 0x%x: create probe %s: %v", sid, probe, err)
	}
	observer := Connect(t, p.Target(), 10*time.Second)
	defer observer.Close()
	ok, st, err := observer.Exists(probe)
	if err != nil {
		t.Fatalf("expire session 0x%x: %v", sid, err)
	}
	if !ok || st.EphemeralOwner != sid {
		t.Fatalf("expire session 0x%x: probe %s not owned by the session (exists %v, owner 0x%x)", sid, probe, ok, st.EphemeralOwner)
	}

	p.Cut()
	defer p.Restore()
	WaitFor(t, timeout, fmt.Sprintf("session 0x%x to expire on the server (is the connection going through proxy %s?)", sid, p.Addr()),
		func() (bool, error) {
			ok, _, err := observer.Exists(probe)
			return !ok, err
		})
}

// WaitFor calls cond every 20ms until it returns true, and fails the test
// with t.Fatalf naming what if that does not happen within timeout. An error
// from cond counts as "not yet" (the last one is reported on timeout). Call
// it from the test's goroutine.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		ok, err := cond()
		if err == nil && ok {
			return
		}
		if err != nil {
			lastErr = err
		}
		if time.Now().After(deadline) {
			if lastErr != nil {
				t.Fatalf("timed out after %v waiting for %s (last error: %v)", timeout, what, lastErr)
			}
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ports, err := zkserver.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return ports[0]
}
