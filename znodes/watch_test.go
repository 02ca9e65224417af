package znodes

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"dcroll/integration/zkserver"
	"dcroll/integration/zktest"

	"github.com/go-zookeeper/zk"
)

// consRE matches one connection of the four-letter word cons.
var consRE = regexp.MustCompile(`recved=(\d+),.*sid=0x([0-9a-f]+)`)

// requestsOf returns how many packets the server has received from
// session sid (four-letter word cons; pings included).
func requestsOf(t *testing.T, addr string, sid int64) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := zkserver.FourLetter(ctx, addr, "cons")
	if err != nil {
		t.Fatalf("cons: %v", err)
	}
	for _, m := range consRE.FindAllStringSubmatch(out, -1) {
		id, _ := strconv.ParseUint(m[2], 16, 64)
		if int64(id) == sid {
			n, _ := strconv.Atoi(m[1])
			return n
		}
	}
	t.Fatalf("session 0x%x not in cons:\n%s", sid, out)
	return 0
}

// TestWatchSetAnswersFromArmedWatches: an unchanged watched path costs no
// round trip, a change (by this connection or another) is seen by the very
// next read, and exactly one watch per path is armed on the server.
func TestWatchSetAnswersFromArmedWatches(t *testing.T) {
	addr := startZK(t)
	// A long session: pings (counted by cons) every ~7 s only.
	conn := zktest.Connect(t, addr, 20*time.Second)
	other := zktest.Connect(t, addr, 20*time.Second)
	root := fmt.Sprintf("/ws-%d", time.Now().UnixNano())
	for _, p := range []string{root, root + "/dir"} {
		if _, err := conn.Create(p, []byte("v0"), 0, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nudge := make(chan struct{}, 1)
	ws := NewWatchSet(ctx, conn, nudge)

	read := func() {
		t.Helper()
		if _, _, err := ws.Get(root); err != nil {
			t.Fatal(err)
		}
		if _, err := ws.Children(root + "/dir"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := ws.Get(root + "/absent"); !errors.Is(err, zk.ErrNoNode) {
			t.Fatalf("absent node: %v", err)
		}
	}
	read()
	if _, _, err := ws.Get(root + "/missing"); !errors.Is(err, zk.ErrNoNode) {
		t.Fatalf("missing node: %v", err)
	}
	before := requestsOf(t, addr, conn.SessionID())
	for range 100 {
		read()
	}
	if got := requestsOf(t, addr, conn.SessionID()) - before; got > 2 {
		t.Errorf("300 reads of 3 unchanged watched paths cost %d requests, want none (a ping at most)", got)
	}

	// A change by this connection: seen by the next read, no nudge needed.
	if _, err := conn.Set(root, []byte("v1"), -1); err != nil {
		t.Fatal(err)
	}
	if b, _, err := ws.Get(root); err != nil || string(b) != "v1" {
		t.Fatalf("after own Set: %q, %v; want v1", b, err)
	}
	if _, err := conn.Create(root+"/dir/a", nil, 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	if names, err := ws.Children(root + "/dir"); err != nil || len(names) != 1 {
		t.Fatalf("after own create: %v, %v; want [a]", names, err)
	}
	if _, err := conn.Create(root+"/missing", []byte("here"), 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	if b, _, err := ws.Get(root + "/missing"); err != nil || string(b) != "here" {
		t.Fatalf("after own create of a missing node: %q, %v", b, err)
	}

	// A change by another client nudges, and the read after it is fresh.
	drain(nudge)
	if _, err := other.Set(root, []byte("v2"), -1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-nudge:
	case <-time.After(waitLong):
		t.Fatal("no nudge after another client's change")
	}
	if b, _, err := ws.Get(root); err != nil || string(b) != "v2" {
		t.Fatalf("after another client's Set: %q, %v; want v2", b, err)
	}

	// One watch per path on the server, however often it is read.
	read()
	armed := totalWatches(t, addr)
	for range 20 {
		read()
	}
	if n := totalWatches(t, addr); n != armed {
		t.Errorf("server watches went from %d to %d over 20 re-reads of unchanged paths", armed, n)
	}
}

// TestWatchSetSeesChangesAcrossExpiry: a session that expired took every
// watch with it; the cached answers are dropped and re-read.
func TestWatchSetSeesChangesAcrossExpiry(t *testing.T) {
	addr := startZK(t)
	proxy := zktest.NewProxy(t, addr)
	conn := zktest.Connect(t, proxy.Addr(), testSession)
	other := zktest.Connect(t, addr, 10*time.Second)
	root := fmt.Sprintf("/ws-exp-%d", time.Now().UnixNano())
	if _, err := other.Create(root, []byte("v0"), 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ws := NewWatchSet(ctx, conn, make(chan struct{}, 1))
	if b, _, err := ws.Get(root); err != nil || string(b) != "v0" {
		t.Fatalf("%q %v", b, err)
	}
	zktest.ExpireSession(t, proxy, conn, waitLong)
	if _, err := other.Set(root, []byte("v1"), -1); err != nil {
		t.Fatal(err)
	}
	zktest.WaitFor(t, waitLong, "a read after the expiry to show the change", func() (bool, error) {
		b, _, err := ws.Get(root)
		return err == nil && string(b) == "v1", err
	})
}

var watchesRE = regexp.MustCompile(`Total watches:(\d+)`)

// totalWatches is the server's watch count (four-letter word wchs).
func totalWatches(t *testing.T, addr string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := zkserver.FourLetter(ctx, addr, "wchs")
	if err != nil {
		t.Fatal(err)
	}
	m := watchesRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("wchs: %q", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func drain(ch chan struct{}) {
	select {
	case <-ch:
	default:
	}
}
