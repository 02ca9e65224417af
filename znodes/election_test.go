package znodes

import (
	"context"
	"errors"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"dcroll/integration/zktest"
)

// leaderMon is the independent observer: every lead callback reports to it
// while it runs, and it counts moments with more than one leader.
type leaderMon struct {
	mu       sync.Mutex
	leading  map[string]int // id -> times started minus times ended
	terms    map[string]int // id -> leadership terms started
	overlaps int
	changed  chan struct{}
}

func newLeaderMon() *leaderMon {
	return &leaderMon{leading: map[string]int{}, terms: map[string]int{}, changed: make(chan struct{})}
}

func (m *leaderMon) set(id string, delta int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.leading[id] += delta
	if delta > 0 {
		m.terms[id]++
	}
	if len(m.currentLocked()) > 1 {
		m.overlaps++
	}
	close(m.changed)
	m.changed = make(chan struct{})
}

func (m *leaderMon) currentLocked() []string {
	var ids []string
	for id, n := range m.leading {
		if n > 0 {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// lead is a lead callback that leads until told to stop.
func (m *leaderMon) lead(id string) func(context.Context) error {
	return func(ctx context.Context) error {
		m.set(id, 1)
		defer m.set(id, -1)
		<-ctx.Done()
		return nil
	}
}

// waitLeaders waits until exactly the ids lead (none: no leader).
func (m *leaderMon) waitLeaders(t *testing.T, ids ...string) {
	t.Helper()
	deadline := time.After(waitLong)
	for {
		m.mu.Lock()
		cur, ch := m.currentLocked(), m.changed
		m.mu.Unlock()
		if slices.Equal(cur, ids) {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("leaders %v, want %v within %s", cur, ids, waitLong)
		}
	}
}

func (m *leaderMon) check(t *testing.T) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.overlaps > 0 {
		t.Fatalf("two leaders at once %d time(s)", m.overlaps)
	}
}

func (m *leaderMon) termsOf(id string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.terms[id]
}

func TestElectionFailover(t *testing.T) {
	addr := startZK(t)
	mon := newLeaderMon()
	c1, c2 := dial(t, addr), dial(t, addr)
	e1, e2 := NewElection(c1, "coord", "a"), NewElection(c2, "coord", "b")
	runBG(t, func(ctx context.Context) error { return e1.Run(ctx, mon.lead("a")) })
	mon.waitLeaders(t, "a")
	runBG(t, func(ctx context.Context) error { return e2.Run(ctx, mon.lead("b")) })
	waitFor(t, "b is a candidate", func() (bool, error) {
		q, err := c2.queue(c2.Paths().Election("coord"), ElectionPrefix)
		return len(q) == 2, err
	})
	if id, err := e2.Leader(); err != nil || id != "a" {
		t.Fatalf("Leader() = %q, %v; want a", id, err)
	}
	if !e1.IsLeader() || e2.IsLeader() {
		t.Fatalf("IsLeader: a %v b %v, want a only", e1.IsLeader(), e2.IsLeader())
	}

	c1.Close()
	mon.waitLeaders(t, "b")
	if id, err := LeaderOf(c2, "coord"); err != nil || id != "b" {
		t.Fatalf("LeaderOf = %q, %v; want b", id, err)
	}
	mon.check(t)
}

func TestElectionLeadReturns(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name    string
		ret     error
		wantErr error // from Run
	}{
		{"nil: resign and join again", nil, nil},
		{"error: resign and return it", boom, boom},
	}
	addr := startZK(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mon := newLeaderMon()
			c1, c2 := dial(t, addr), dial(t, addr)
			e1, e2 := NewElection(c1, "coord", "a"), NewElection(c2, "coord", "b")
			release := make(chan struct{})
			first := true
			runErr := make(chan error, 1)
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)
			go func() {
				runErr <- e1.Run(ctx, func(ctx context.Context) error {
					if first {
						first = false
						mon.set("a", 1)
						<-release
						mon.set("a", -1)
						return tt.ret
					}
					return mon.lead("a")(ctx)
				})
			}()
			mon.waitLeaders(t, "a")
			runBG(t, func(ctx context.Context) error { return e2.Run(ctx, mon.lead("b")) })
			waitFor(t, "b is a candidate", func() (bool, error) {
				q, err := c2.queue(c2.Paths().Election("coord"), ElectionPrefix)
				return len(q) == 2, err
			})
			close(release)
			mon.waitLeaders(t, "b")
			if tt.wantErr != nil {
				if err := recv(t, runErr, "Run"); !errors.Is(err, tt.wantErr) {
					t.Fatalf("Run = %v, want %v", err, tt.wantErr)
				}
				return
			}
			// a joined again behind b.
			waitFor(t, "a queued again", func() (bool, error) {
				q, err := c2.queue(c2.Paths().Election("coord"), ElectionPrefix)
				return len(q) == 2, err
			})
			if id, err := e1.Leader(); err != nil || id != "b" {
				t.Fatalf("Leader() = %q, %v; want b", id, err)
			}
			cancel()
			if err := recv(t, runErr, "Run"); err != nil {
				t.Fatalf("Run after cancel = %v, want nil", err)
			}
			mon.check(t)
		})
	}
}

// A suspended leader steps down at once, and leads again when its session
// comes back with its node still first.
func TestElectionSuspendedLeaderStepsDown(t *testing.T) {
	addr := startZK(t)
	proxy := zktest.NewProxy(t, addr)
	mon := newLeaderMon()
	rec := newStateRec()
	c := dial(t, proxy.Addr(), withSession(4*time.Second), withStates(rec))
	_, gen, _ := c.State()
	e := NewElection(c, "coord", "a")
	runBG(t, func(ctx context.Context) error { return e.Run(ctx, mon.lead("a")) })
	mon.waitLeaders(t, "a")
	mark := rec.len()

	proxy.Cut()
	rec.waitFor(t, mark, stateAt{Suspended, gen})
	mon.waitLeaders(t)
	if e.IsLeader() {
		t.Fatal("IsLeader() while suspended")
	}
	proxy.Restore()
	mon.waitLeaders(t, "a")
	if _, g, _ := c.State(); g != gen {
		t.Fatalf("generation %d -> %d: the session was meant to survive", gen, g)
	}
	if n := mon.termsOf("a"); n != 2 {
		t.Fatalf("a led %d terms, want 2 (before and after the suspension)", n)
	}
}

func TestElectionSessionExpiry(t *testing.T) {
	addr := startZK(t)
	proxy := zktest.NewProxy(t, addr)
	mon := newLeaderMon()
	c1 := dial(t, proxy.Addr())
	c2 := dial(t, addr)
	e1, e2 := NewElection(c1, "coord", "a"), NewElection(c2, "coord", "b")
	runBG(t, func(ctx context.Context) error { return e1.Run(ctx, mon.lead("a")) })
	mon.waitLeaders(t, "a")
	runBG(t, func(ctx context.Context) error { return e2.Run(ctx, mon.lead("b")) })
	waitFor(t, "b is a candidate", func() (bool, error) {
		q, err := c2.queue(c2.Paths().Election("coord"), ElectionPrefix)
		return len(q) == 2, err
	})

	zktest.ExpireSession(t, proxy, c1.ZK(), waitLong)

	mon.waitLeaders(t, "b")
	waitFor(t, "a rejoined behind b", func() (bool, error) {
		q, err := c2.queue(c2.Paths().Election("coord"), ElectionPrefix)
		return len(q) == 2, err
	})
	if id, err := e1.Leader(); err != nil || id != "b" {
		t.Fatalf("Leader() = %q, %v; want b", id, err)
	}
	mon.check(t)
}

// Stopping the ZooKeeper leader of a 3-node ensemble leaves exactly one
// dcroll leader once the ensemble has recovered.
func TestElectionSurvivesZooKeeperLeaderLoss(t *testing.T) {
	ens := zktest.StartEnsemble(t, 3)
	mon := newLeaderMon()
	ids := []string{"a", "b", "c"}
	var elections []*Election
	var conns []*Conn
	for _, id := range ids {
		c := dial(t, ens.ConnectString(), withSession(4*time.Second))
		e := NewElection(c, "coord", id)
		runBG(t, func(ctx context.Context) error { return e.Run(ctx, mon.lead(id)) })
		elections = append(elections, e)
		conns = append(conns, c)
	}
	waitFor(t, "one dcroll leader", func() (bool, error) { return leadersOf(elections) == 1, nil })

	ctx := ctxT(t)
	zkLeader, err := ens.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ens.Servers[zkLeader].Stop()

	var leader string
	waitFor(t, "exactly one dcroll leader after the ZooKeeper leader stopped", func() (bool, error) {
		if leadersOf(elections) != 1 {
			return false, nil
		}
		for i, e := range elections {
			if e.IsLeader() {
				leader = ids[i]
			}
		}
		for _, c := range conns {
			id, err := LeaderOf(c, "coord")
			if err != nil || id != leader {
				return false, nil
			}
		}
		return true, nil
	})
	t.Logf("dcroll leader %s, %s after stopping ZooKeeper server %d", leader, time.Since(start).Round(time.Millisecond), zkLeader)
	mon.check(t)
}

func leadersOf(es []*Election) int {
	n := 0
	for _, e := range es {
		if e.IsLeader() {
			n++
		}
	}
	return n
}
