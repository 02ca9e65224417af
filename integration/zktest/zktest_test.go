package zktest_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"dcroll/integration/zktest"

	"github.com/go-zookeeper/zk"
)

const wait = 20 * time.Second

var acl = zk.WorldACL(zk.PermAll)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestServerRestartKeepsData(t *testing.T) {
	t.Parallel()
	s := zktest.Start(t)
	if mode, err := s.Mode(ctxT(t)); err != nil || mode != "standalone" {
		t.Fatalf("Mode() = %q, %v; want standalone", mode, err)
	}
	c := zktest.Connect(t, s.Addr(), 2*time.Second)
	if _, err := c.Create("/kept", []byte("v1"), 0, acl); err != nil {
		t.Fatal(err)
	}
	c.Close()

	start := time.Now()
	if err := s.Restart(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	t.Logf("restart took %v", time.Since(start).Round(time.Millisecond))

	c = zktest.Connect(t, s.Addr(), 2*time.Second)
	b, _, err := c.Get("/kept")
	if err != nil || string(b) != "v1" {
		t.Fatalf("after restart: Get(/kept) = %q, %v; want v1", b, err)
	}

	// A killed server keeps its data too.
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	c = zktest.Connect(t, s.Addr(), 2*time.Second)
	if b, _, err := c.Get("/kept"); err != nil || string(b) != "v1" {
		t.Fatalf("after kill and restart: Get(/kept) = %q, %v; want v1", b, err)
	}
}

func TestEnsembleFailover(t *testing.T) {
	start := time.Now()
	e := zktest.StartEnsemble(t, 3)
	t.Logf("ensemble of 3 serving after %v", time.Since(start).Round(time.Millisecond))
	leader, err := e.Leader(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	c := zktest.Connect(t, e.ConnectString(), 4*time.Second)
	if _, err := c.Create("/before", nil, 0, acl); err != nil {
		t.Fatal(err)
	}
	sid := c.SessionID()

	start = time.Now()
	if err := e.Servers[leader].Stop(); err != nil {
		t.Fatal(err)
	}
	newLeader := -1
	zktest.WaitFor(t, wait, "a new leader", func() (bool, error) {
		i, err := e.Leader(ctxT(t))
		newLeader = i
		return err == nil, err
	})
	if newLeader == leader {
		t.Fatalf("leader %d stopped but still leads", leader)
	}
	t.Logf("leader %d stopped, %d elected after %v", leader, newLeader, time.Since(start).Round(time.Millisecond))

	// A write whose response is lost may still have been applied, so
	// ErrNodeExists on a retry is a success.
	zktest.WaitFor(t, wait, "a write through the connect string", func() (bool, error) {
		_, err := c.Create("/after", nil, 0, acl)
		return err == nil || errors.Is(err, zk.ErrNodeExists), err
	})
	t.Logf("write after failover %v after the stop (session kept: %v)", time.Since(start).Round(time.Millisecond), c.SessionID() == sid)

	// The old leader rejoins as a follower.
	if err := e.Servers[leader].Restart(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if mode, err := e.Servers[leader].Mode(ctxT(t)); err != nil || mode != "follower" {
		t.Fatalf("restarted old leader: Mode() = %q, %v; want follower", mode, err)
	}
	if ok, _, err := zktest.Connect(t, e.Servers[leader].Addr(), 2*time.Second).Exists("/after"); err != nil || !ok {
		t.Fatalf("restarted old leader: Exists(/after) = %v, %v", ok, err)
	}
}

func TestSessionExpiryThroughProxy(t *testing.T) {
	t.Parallel()
	s := zktest.Start(t)
	p := zktest.NewProxy(t, s.Addr())
	var expired atomic.Bool
	c := zktest.Connect(t, p.Addr(), time.Second, zk.WithEventCallback(func(ev zk.Event) {
		if ev.Type == zk.EventSession && ev.State == zk.StateExpired {
			expired.Store(true)
		}
	}))
	if _, err := c.Create("/eph", nil, zk.FlagEphemeral, acl); err != nil {
		t.Fatal(err)
	}
	old := c.SessionID()
	other := zktest.Connect(t, s.Addr(), 2*time.Second)

	start := time.Now()
	zktest.ExpireSession(t, p, c, wait)
	t.Logf("session expired on the server after %v", time.Since(start).Round(time.Millisecond))
	if ok, _, err := other.Exists("/eph"); err != nil || ok {
		t.Fatalf("ephemeral of the expired session: Exists = %v, %v; want gone", ok, err)
	}
	zktest.WaitFor(t, wait, "the client to see StateExpired", func() (bool, error) { return expired.Load(), nil })
	zktest.WaitFor(t, wait, "a new session", func() (bool, error) {
		return c.State() == zk.StateHasSession && c.SessionID() != old, nil
	})
	t.Logf("client saw the expiry and has a new session after %v", time.Since(start).Round(time.Millisecond))
	if _, err := c.Create("/eph", nil, zk.FlagEphemeral, acl); err != nil {
		t.Fatalf("create with the new session: %v", err)
	}
}
