package znodes

import (
	"bytes"
	"testing"
	"time"

	"dcroll/integration/zktest"

	"github.com/go-zookeeper/zk"
)

func staticData(b []byte) func() ([]byte, error) {
	return func() ([]byte, error) { return b, nil }
}

func TestRegistrationLifecycle(t *testing.T) {
	addr := startZK(t)
	c := dial(t, addr)
	other := dial(t, addr)
	p := c.Paths().Agent("m1")
	r := NewRegistration(c, p, staticData([]byte("v1")))
	if r.Registered() {
		t.Fatal("registered before Run")
	}
	stop := runBG(t, r.Run)
	recv(t, r.Ready(), "ready")

	// Visible to another client, owned by the registering session.
	b, st, err := other.ZK().Get(p)
	if err != nil || string(b) != "v1" || st.EphemeralOwner != c.SessionID() {
		t.Fatalf("node as seen by another client: %q owner 0x%x err %v; want v1 owned by 0x%x", b, st.EphemeralOwner, err, c.SessionID())
	}
	if !r.Registered() {
		t.Fatal("Registered() = false while the node exists")
	}

	// Update rewrites the data.
	if err := r.Update([]byte("v2")); err != nil {
		t.Fatal(err)
	}
	if b, _, err := other.ZK().Get(p); err != nil || string(b) != "v2" {
		t.Fatalf("after Update: %q, %v", b, err)
	}

	// Deleted by someone else: re-created, with the latest payload.
	if err := other.ZK().Delete(p, -1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node re-created with the latest payload", func() (bool, error) {
		b, st, err := other.ZK().Get(p)
		if err == zk.ErrNoNode {
			return false, nil
		}
		return string(b) == "v2" && st.EphemeralOwner == c.SessionID(), err
	})

	// Stopping deletes the node at once (not at session end).
	if err := stop(); err != nil {
		t.Fatalf("Run returned %v, want nil after cancel", err)
	}
	if _, ok := owner(t, other.ZK(), p); ok {
		t.Fatal("node still there after Run ended")
	}
	if r.Registered() {
		t.Fatal("Registered() = true after Run ended")
	}
}

func TestRegistrationSurvivesExpiry(t *testing.T) {
	addr := startZK(t)
	proxy := zktest.NewProxy(t, addr)
	c := dial(t, proxy.Addr())
	other := dial(t, addr)
	p := c.Paths().CurrentMachine("svc", "m1")
	r := NewRegistration(c, p, staticData([]byte("x")))
	runBG(t, r.Run)
	recv(t, r.Ready(), "ready")
	old := c.SessionID()

	zktest.ExpireSession(t, proxy, c.ZK(), waitLong)

	waitFor(t, "node re-created by the new session", func() (bool, error) {
		id := c.SessionID()
		o, ok := owner(t, other.ZK(), p)
		return ok && id != old && o == id && r.Registered(), nil
	})
}

func TestRegistrationWaitsForStaleNode(t *testing.T) {
	addr := startZK(t)
	logs := newLogSink()
	c := dial(t, addr, withLog(logs))
	p := c.Paths().Agent("m1")

	// The node of this machine's previous session, still alive.
	stale := zktest.Connect(t, addr, 4*time.Second)
	if _, err := stale.Create(p, []byte("old"), zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}

	r := NewRegistration(c, p, staticData([]byte("new")))
	runBG(t, r.Run)
	logs.wait(t, "node held by another session")
	if r.Registered() || closed(r.Ready()) {
		t.Fatal("registered while another session holds the node")
	}
	if o, _ := owner(t, c.ZK(), p); o != stale.SessionID() {
		t.Fatalf("owner 0x%x, want the stale session 0x%x", o, stale.SessionID())
	}

	stale.Close() // its ephemerals go at once
	recv(t, r.Ready(), "ready after the stale session closed")
	b, st, err := c.ZK().Get(p)
	if err != nil || string(b) != "new" || st.EphemeralOwner != c.SessionID() {
		t.Fatalf("node: %q owner 0x%x err %v; want new owned by 0x%x", b, st.EphemeralOwner, err, c.SessionID())
	}
}

// A create whose response is lost is found to be our own (same session
// owner) and counts as registered.
func TestRegistrationLostCreateResponse(t *testing.T) {
	addr := startZK(t)
	proxy := newLossyProxy(t, addr)
	c := dial(t, proxy.Addr(), withSession(4*time.Second))
	_, gen, _ := c.State()
	p := c.Paths().Agent("m1")
	dropped := proxy.arm(opCreate)

	r := NewRegistration(c, p, staticData([]byte("x")))
	runBG(t, r.Run)
	recv(t, dropped, "dropped create response")
	recv(t, r.Ready(), "ready")
	if _, g, _ := c.State(); g != gen {
		t.Fatalf("generation %d -> %d: the session was meant to survive", gen, g)
	}
	b, st, err := c.ZK().Get(p)
	if err != nil || !bytes.Equal(b, []byte("x")) || st.EphemeralOwner != c.SessionID() {
		t.Fatalf("node: %q owner 0x%x err %v", b, st.EphemeralOwner, err)
	}
}

// opCreate is ZooKeeper's create opcode (see the lossy proxy).
const opCreate = 1

// opSetData is ZooKeeper's setData opcode.
const opSetData = 5

// TestRegistrationUpdateLostInFlight: an Update whose write never reaches
// the server (the connection breaks with the request in flight, as when
// the ZooKeeper leader dies) lands once the same session is connected
// again, although no watch event fires.
func TestRegistrationUpdateLostInFlight(t *testing.T) {
	addr := startZK(t)
	proxy := newLossyProxy(t, addr)
	c := dial(t, proxy.Addr())
	other := dial(t, addr)
	p := c.Paths().CurrentMachine("svc", "m1")
	r := NewRegistration(c, p, staticData([]byte("v1")))
	runBG(t, r.Run)
	recv(t, r.Ready(), "ready")
	id := c.SessionID()

	lost := proxy.armLost(opSetData)
	err := r.Update([]byte("v2"))
	recv(t, lost, "the set request dropped")
	t.Logf("Update with its request lost: %v", err)
	waitFor(t, "the update to land in the same session", func() (bool, error) {
		b, st, err := other.ZK().Get(p)
		if err != nil {
			return false, err
		}
		return string(b) == "v2" && st.EphemeralOwner == id, nil
	})
	if c.SessionID() != id {
		t.Fatalf("session changed (0x%x -> 0x%x): the test wants a disconnect shorter than the session", id, c.SessionID())
	}
}
