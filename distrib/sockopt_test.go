package distrib

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// congestionOf reads a connection's TCP_CONGESTION.
func congestionOf(t *testing.T, c net.Conn) string {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var cc string
	var gerr error
	if err := rc.Control(func(fd uintptr) { cc, gerr = unix.GetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return strings.TrimRight(cc, "\x00")
}

// pair connects a dialer and a listener made with ctl and returns both ends.
func pair(t *testing.T, ctl *socketControl) (dialed, accepted net.Conn) {
	t.Helper()
	lc := net.ListenConfig{Control: ctl.Control}
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dialed, err = ctl.dialer(nil).Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dialed.Close() })
	accepted, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { accepted.Close() })
	return dialed, accepted
}

func TestSocketControlSetsCongestionControl(t *testing.T) {
	for _, cc := range []string{"reno", DefaultCongestionControl} {
		t.Run(cc, func(t *testing.T) {
			d, a := pair(t, newSocketControl(cc, nil))
			// reno is always there; cubic may be refused (no CAP_NET_ADMIN
			// and not allowed): then the fallback, reno.
			for name, c := range map[string]net.Conn{"dialed": d, "accepted": a} {
				if got := congestionOf(t, c); got != cc && got != fallbackCongestionControl {
					t.Errorf("%s socket: congestion control %q, want %q", name, got, cc)
				}
			}
		})
	}
}

func TestSocketControlFallsBackAndWarnsOnce(t *testing.T) {
	var buf bytes.Buffer
	ctl := newSocketControl("no-such-algorithm", slog.New(slog.NewTextHandler(&buf, nil)))
	d, a := pair(t, ctl)
	pair(t, ctl)
	for name, c := range map[string]net.Conn{"dialed": d, "accepted": a} {
		if got := congestionOf(t, c); got != fallbackCongestionControl {
			t.Errorf("%s socket: congestion control %q, want the fallback %q", name, got, fallbackCongestionControl)
		}
	}
	if n := strings.Count(buf.String(), "tcp congestion control refused"); n != 1 {
		t.Errorf("want one warning, got %d:\n%s", n, buf.String())
	}
}

func TestSocketControlSystemLeavesKernelDefault(t *testing.T) {
	d, _ := pair(t, newSocketControl("system", nil))
	// A plain socket shows the kernel's default for this namespace.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	plain, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if got, want := congestionOf(t, d), congestionOf(t, plain); got != want {
		t.Errorf("system: congestion control %q, want the kernel's %q", got, want)
	}
}

// The client's peer sockets are ours: its listener carries the control
// (accepted sockets inherit the listener's congestion control).
func TestClientListenerHasCongestionControl(t *testing.T) {
	cl, err := newClient(clientOptions{ListenAddr: "127.0.0.1:0", CongestionControl: "reno"})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if cl.LocalPort() == 0 {
		t.Fatal("client has no listen port")
	}
	rc, err := cl.ln.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var cc string
	if err := rc.Control(func(fd uintptr) { cc, err = unix.GetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION) }); err != nil {
		t.Fatal(err)
	}
	if cc = strings.TrimRight(cc, "\x00"); err != nil || cc != "reno" {
		t.Fatalf("listener congestion control %q (%v), want reno", cc, err)
	}
}
