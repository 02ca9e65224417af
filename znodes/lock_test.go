package znodes

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"dcroll/integration/zktest"

	"github.com/go-zookeeper/zk"
)

func TestTurnLockMutualExclusion(t *testing.T) {
	addr := startZK(t)
	conns := []*Conn{dial(t, addr), dial(t, addr), dial(t, addr)}
	dir := conns[0].Paths().Turns("svc")
	counter := conns[0].Paths().Budget("svc")
	if _, err := conns[0].Create(counter, []byte("0"), 0); err != nil {
		t.Fatal(err)
	}
	const waiters, rounds = 5, 3
	var inside, overlaps atomic.Int32
	errs := make(chan error, waiters)
	ctx := ctxT(t)
	for i := range waiters {
		c := conns[i%len(conns)]
		payload := MustEncode(&Turn{Machine: fmt.Sprintf("m%d", i)})
		go func() {
			errs <- func() error {
				for range rounds {
					turn, err := NewTurnLock(c, dir, payload).Acquire(ctx)
					if err != nil {
						return err
					}
					if inside.Add(1) > 1 {
						overlaps.Add(1)
					}
					// A fenced read-modify-write: with exclusion it never conflicts.
					b, st, err := c.ZK().Get(counter)
					if err != nil {
						return err
					}
					n, _ := strconv.Atoi(string(b))
					if _, err := c.Multi(turn.CheckOp(), SetOp(counter, []byte(strconv.Itoa(n+1)), st.Version)); err != nil {
						return err
					}
					inside.Add(-1)
					if err := turn.Release(); err != nil {
						return err
					}
				}
				return nil
			}()
		}()
	}
	for range waiters {
		if err := recv(t, errs, "waiter"); err != nil {
			t.Fatal(err)
		}
	}
	if n := overlaps.Load(); n > 0 {
		t.Fatalf("%d overlapping holders", n)
	}
	b, _, err := conns[0].ZK().Get(counter)
	if err != nil || string(b) != strconv.Itoa(waiters*rounds) {
		t.Fatalf("counter = %q (%v), want %d", b, err, waiters*rounds)
	}
	if q, err := Waiters(conns[0], dir); err != nil || len(q) != 0 {
		t.Fatalf("queue after all released: %v %v", q, err)
	}
}

// contender is one Acquire running in the background, with the watches it set.
type contender struct {
	watched chan string // every path the lock watched, in order
	result  chan acquired
	cancel  context.CancelFunc
}

type acquired struct {
	turn *HeldTurn
	err  error
}

func startContender(t *testing.T, c *Conn, dir string) *contender {
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	t.Cleanup(cancel)
	w := &contender{watched: make(chan string, 16), result: make(chan acquired, 1), cancel: cancel}
	l := NewTurnLock(c, dir, nil)
	l.OnWatch = func(p string) { w.watched <- p }
	go func() {
		turn, err := l.Acquire(ctx)
		w.result <- acquired{turn, err}
	}()
	return w
}

// noMoreWatches asserts that w set no watch besides those already read.
func (w *contender) noMoreWatches(t *testing.T, name string) {
	t.Helper()
	select {
	case p := <-w.watched:
		t.Fatalf("%s watched %s too: each waiter must watch only its predecessor", name, p)
	default:
	}
}

func TestTurnLockWatchesOnlyPredecessor(t *testing.T) {
	addr := startZK(t)
	conns := []*Conn{dial(t, addr), dial(t, addr)}
	dir := conns[0].Paths().Turns("svc")
	holder, err := NewTurnLock(conns[0], dir, nil).Acquire(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	// Queue four waiters one after another, so that the order is known.
	var ws []*contender
	for i := 1; i <= 4; i++ {
		w := startContender(t, conns[i%2], dir)
		got := recv(t, w.watched, "first watch")
		q, err := Waiters(conns[0], dir)
		if err != nil || len(q) != i+1 {
			t.Fatalf("queue %v (%v), want %d entries", q, err, i+1)
		}
		if want := path.Join(dir, q[i-1]); got != want {
			t.Fatalf("waiter %d watched %s, want its predecessor %s", i, got, want)
		}
		ws = append(ws, w)
	}
	// Each release wakes exactly the next waiter; nobody else re-watches.
	prev := holder
	for i, w := range ws {
		if err := prev.Release(); err != nil {
			t.Fatal(err)
		}
		a := recv(t, w.result, "turn")
		if a.err != nil {
			t.Fatal(a.err)
		}
		for j, other := range ws[i+1:] {
			select {
			case a := <-other.result:
				t.Fatalf("waiter %d got %v before its turn", i+j+2, a)
			default:
			}
		}
		prev = a.turn
	}
	if err := prev.Release(); err != nil {
		t.Fatal(err)
	}
	for i, w := range ws {
		w.noMoreWatches(t, fmt.Sprintf("waiter %d", i+1))
	}
}

func TestTurnLockCancelledWaiterHandsOver(t *testing.T) {
	addr := startZK(t)
	c := dial(t, addr)
	dir := c.Paths().Turns("svc")
	holder, err := NewTurnLock(c, dir, nil).Acquire(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	a := startContender(t, c, dir)
	recv(t, a.watched, "a watches")
	b := startContender(t, c, dir)
	recv(t, b.watched, "b watches")
	cw := startContender(t, c, dir)
	first := recv(t, cw.watched, "c watches")
	q, _ := Waiters(c, dir)
	if len(q) != 4 || first != path.Join(dir, q[2]) {
		t.Fatalf("queue %v: c watches %s, want %s", q, first, q[2])
	}
	nodeA, nodeB := q[1], q[2]

	b.cancel()
	if r := recv(t, b.result, "b gives up"); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled Acquire = %v, %v; want context.Canceled", r.turn, r.err)
	}
	if got := recv(t, cw.watched, "c watches again"); got != path.Join(dir, nodeA) {
		t.Fatalf("after b left, c watches %s, want a's node %s", got, nodeA)
	}
	if q, _ := Waiters(c, dir); len(q) != 3 || q[1] != nodeA || strings.Contains(strings.Join(q, ","), nodeB) {
		t.Fatalf("queue after b left: %v (b was %s)", q, nodeB)
	}

	if err := holder.Release(); err != nil {
		t.Fatal(err)
	}
	ra := recv(t, a.result, "a's turn")
	if ra.err != nil {
		t.Fatal(ra.err)
	}
	select {
	case r := <-cw.result:
		t.Fatalf("c got %v while a holds the turn", r)
	default:
	}
	if err := ra.turn.Release(); err != nil {
		t.Fatal(err)
	}
	rc := recv(t, cw.result, "c's turn")
	if rc.err != nil {
		t.Fatal(rc.err)
	}
	rc.turn.Release()
	a.noMoreWatches(t, "a")
	cw.noMoreWatches(t, "c")
}

// A create whose response is lost (applied by the server, the connection
// dropped before the client heard) is found again by its GUID: one node.
func TestTurnLockLostCreateResponse(t *testing.T) {
	addr := startZK(t)
	proxy := newLossyProxy(t, addr)
	c := dial(t, proxy.Addr(), withSession(4*time.Second))
	other := dial(t, addr)
	dir := c.Paths().Turns("svc")
	if err := c.EnsurePath(dir); err != nil {
		t.Fatal(err)
	}
	_, gen, _ := c.State()
	dropped := proxy.arm(opCreate)

	turn, err := NewTurnLock(c, dir, nil).Acquire(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if !closed(dropped) {
		t.Fatal("the create response was not dropped: the test proved nothing")
	}
	if _, g, _ := c.State(); g != gen {
		t.Fatalf("generation %d -> %d: the session was meant to survive", gen, g)
	}
	q, err := Waiters(other, dir)
	if err != nil || len(q) != 1 || path.Join(dir, q[0]) != turn.Path() {
		t.Fatalf("queue %v (%v), want exactly the turn %s", q, err, turn.Path())
	}
	if err := turn.Release(); err != nil {
		t.Fatal(err)
	}
}

func TestTurnLockSessionExpiryWhileHolding(t *testing.T) {
	addr := startZK(t)
	proxy := zktest.NewProxy(t, addr)
	c := dial(t, proxy.Addr())
	other := dial(t, addr)
	dir := c.Paths().Turns("svc")
	guarded := c.Paths().Budget("svc")
	if _, err := other.Create(guarded, []byte("0"), 0); err != nil {
		t.Fatal(err)
	}
	turn, err := NewTurnLock(c, dir, nil).Acquire(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Multi(turn.CheckOp(), SetOp(guarded, []byte("1"), -1)); err != nil {
		t.Fatalf("fenced write while holding: %v", err)
	}
	next := startContender(t, other, dir)

	zktest.ExpireSession(t, proxy, c.ZK(), waitLong)

	recv(t, turn.Lost(), "turn lost")
	if r := recv(t, next.result, "next holder"); r.err != nil {
		t.Fatal(r.err)
	}
	if err := c.WaitConnected(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	_, err = c.Multi(turn.CheckOp(), SetOp(guarded, []byte("deposed"), -1))
	if !errors.Is(err, zk.ErrNoNode) {
		t.Fatalf("fenced write of the deposed holder: err = %v, want ErrNoNode", err)
	}
	if b, _, _ := other.ZK().Get(guarded); string(b) != "1" {
		t.Fatalf("guarded node = %q: the deposed holder wrote", b)
	}
	if err := turn.Release(); err != nil {
		t.Fatalf("release after loss: %v", err)
	}

	// A waiter whose session is lost gives up with ErrSessionLost.
	waiter := startContender(t, c, dir)
	recv(t, waiter.watched, "waiting")
	zktest.ExpireSession(t, proxy, c.ZK(), waitLong)
	if r := recv(t, waiter.result, "waiter"); !errors.Is(r.err, ErrSessionLost) {
		t.Fatalf("waiter after session loss: %v, %v; want ErrSessionLost", r.turn, r.err)
	}
}
