package znodes

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"dcroll/integration/zktest"
)

func TestDialUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()

	tests := []struct {
		name           string
		connectTimeout time.Duration
		ctxTimeout     time.Duration
		wantErr        error
	}{
		{"connect timeout", 700 * time.Millisecond, time.Minute, ErrUnreachable},
		{"caller's deadline first", time.Minute, 700 * time.Millisecond, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tt.ctxTimeout)
			defer cancel()
			start := time.Now()
			c, err := Dial(ctx, Options{Servers: dead, ConnectTimeout: tt.connectTimeout, Logger: discardLog()})
			elapsed := time.Since(start)
			if err == nil {
				c.Close()
				t.Fatal("Dial to a dead address succeeded")
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want it to wrap %v", err, tt.wantErr)
			}
			if limit := 700*time.Millisecond + 250*time.Millisecond; elapsed > limit {
				t.Fatalf("Dial took %s, want at most %s", elapsed, limit)
			}
			t.Logf("failed after %s: %v", elapsed.Round(time.Millisecond), err)
		})
	}
}

func TestNegotiatedSessionTimeout(t *testing.T) {
	addr := startZK(t)
	// zktest runs ZooKeeper with tickTime 200ms: sessions are clamped to 400ms..4s.
	tests := []struct {
		requested, want time.Duration
	}{
		{1200 * time.Millisecond, 1200 * time.Millisecond},
		{100 * time.Millisecond, 400 * time.Millisecond},
		{time.Minute, 4 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.requested.String(), func(t *testing.T) {
			c := dial(t, addr, withSession(tt.requested))
			if got := c.SessionTimeout(); got != tt.want {
				t.Fatalf("SessionTimeout() = %s, want %s (requested %s)", got, tt.want, tt.requested)
			}
		})
	}
}

func TestConnExpiryStartsNewGeneration(t *testing.T) {
	addr := startZK(t)
	proxy := zktest.NewProxy(t, addr)
	rec := newStateRec()
	c := dial(t, proxy.Addr(), withStates(rec))
	st, gen0, lost0 := c.State()
	id0 := c.SessionID()
	if st != Connected {
		t.Fatalf("state after Dial = %s", st)
	}
	mark := rec.len()

	zktest.ExpireSession(t, proxy, c.ZK(), waitLong)

	rec.waitFor(t, mark, stateAt{Suspended, gen0}, stateAt{Lost, gen0}, stateAt{Connected, gen0 + 1})
	if err := c.WaitConnected(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	st, gen1, lost1 := c.State()
	if st != Connected || gen1 != gen0+1 {
		t.Fatalf("after expiry: %s gen %d, want connected gen %d", st, gen1, gen0+1)
	}
	if !closed(lost0) || closed(lost1) {
		t.Fatalf("lost channels: old closed=%v (want true), new closed=%v (want false)", closed(lost0), closed(lost1))
	}
	if id := c.SessionID(); id == id0 || id == 0 {
		t.Fatalf("session id after expiry = 0x%x, old 0x%x: want a new one", id, id0)
	}
	t.Logf("states: %v", rec.since(mark))
}

func TestConnShortDisconnectKeepsSession(t *testing.T) {
	addr := startZK(t)
	proxy := zktest.NewProxy(t, addr)
	rec := newStateRec()
	// A long session, so that the reconnect (the library retries about once
	// a second) comes well within it.
	c := dial(t, proxy.Addr(), withStates(rec), withSession(4*time.Second))
	_, gen0, lost0 := c.State()
	id0 := c.SessionID()
	mark := rec.len()

	proxy.Cut()
	rec.waitFor(t, mark, stateAt{Suspended, gen0})
	proxy.Restore()
	rec.waitFor(t, mark, stateAt{Suspended, gen0}, stateAt{Connected, gen0})

	for _, s := range rec.since(mark) {
		if s.st == Lost || s.gen != gen0 {
			t.Fatalf("states %v: a short disconnection must not lose the session", rec.since(mark))
		}
	}
	if closed(lost0) || c.SessionID() != id0 {
		t.Fatalf("session changed: lost closed=%v, id 0x%x -> 0x%x", closed(lost0), id0, c.SessionID())
	}
}

// A disconnection longer than the session timeout is a loss even when the
// server cannot say so; if the session turns out to have survived (a quorum
// outage: the new ZooKeeper leader renews sessions), the Conn still starts a
// new generation and deletes what the recipes abandoned in the old one.
func TestConnLocalLossOfSurvivingSession(t *testing.T) {
	addr := startZK(t)
	proxy := zktest.NewProxy(t, addr)
	rec := newStateRec()
	clock := &fakeClock{}
	c := dial(t, proxy.Addr(), withStates(rec), withClock(clock), withSession(4*time.Second))
	other := dial(t, addr)
	dir := c.Paths().Turns("svc")
	_, gen0, _ := c.State()
	id0 := c.SessionID()

	turn, err := NewTurnLock(c, dir, nil).Acquire(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	mark := rec.len()
	proxy.Cut()
	rec.waitFor(t, mark, stateAt{Suspended, gen0})
	clock.fire() // the session timeout ran out while disconnected
	rec.waitFor(t, mark, stateAt{Suspended, gen0}, stateAt{Lost, gen0})
	if !closed(turn.Lost()) {
		t.Fatal("turn not lost after the local session loss")
	}
	if err := turn.Release(); err != nil {
		t.Fatalf("release after loss: %v", err)
	}
	proxy.Restore()
	rec.waitFor(t, mark, stateAt{Lost, gen0}, stateAt{Connected, gen0 + 1})
	if id := c.SessionID(); id != id0 {
		t.Fatalf("session 0x%x replaced by 0x%x: the server was meant to keep it", id0, id)
	}
	// The old turn's node survived with the session: the reaper deletes it,
	// and another contender gets the turn.
	waitFor(t, "abandoned turn deleted", func() (bool, error) {
		q, err := Waiters(other, dir)
		return len(q) == 0, err
	})
	t2, err := NewTurnLock(other, dir, nil).Acquire(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := t2.Release(); err != nil {
		t.Fatal(err)
	}
}

func TestWaitDeleted(t *testing.T) {
	addr := startZK(t)
	c := dial(t, addr)
	p := c.Paths().Agent("gone")
	if _, err := c.Create(p, nil, 0); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	done := make(chan error, 1)
	go func() {
		err := c.WaitDeleted(ctx, p)
		if ok, _, xerr := c.ZK().Exists(p); err == nil && (xerr != nil || ok) {
			err = errors.New("WaitDeleted returned while the node still exists")
		}
		done <- err
	}()
	if err := c.ZK().Delete(p, -1); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, done, "WaitDeleted"); err != nil {
		t.Fatal(err)
	}
	// A missing node returns at once; a cancelled wait returns the ctx error.
	if err := c.WaitDeleted(ctxT(t), p); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(p, nil, 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.WaitDeleted(ctx, p); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled WaitDeleted = %v", err)
	}
}

// fakeClock fires its timers when the test says so.
type fakeClock struct {
	mu     sync.Mutex
	timers []*fakeTimer
}

type fakeTimer struct {
	mu      sync.Mutex
	f       func()
	stopped bool
}

func (t *fakeTimer) Stop() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

func (c *fakeClock) Now() time.Time { return time.Now() }

func (c *fakeClock) AfterFunc(_ time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{f: f}
	c.timers = append(c.timers, t)
	return t
}

// fire runs every pending timer.
func (c *fakeClock) fire() {
	c.mu.Lock()
	timers := c.timers
	c.timers = nil
	c.mu.Unlock()
	for _, t := range timers {
		if !t.Stop() {
			continue
		}
		t.f()
	}
}

// ctxT is a context that ends with the test's wait deadline.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	t.Cleanup(cancel)
	return ctx
}
