package zkserver

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestZooCfg(t *testing.T) {
	opts, err := Options{Dir: "/z"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	single := nodeConfig{opts: opts, dir: "/z", clientPort: 4000}.zooCfg()
	for _, want := range []string{
		"tickTime=200\n", "dataDir=/z/data\n", "clientPort=4000\n", "clientPortAddress=127.0.0.1\n",
		"minSessionTimeout=400\n", "maxSessionTimeout=4000\n", "admin.enableServer=false\n",
		"maxClientCnxns=0\n", "4lw.commands.whitelist=srvr,ruok,mntr,cons,wchs,conf\n",
		"standaloneEnabled=true\n", "reconfigEnabled=false\n", "initLimit=10\n", "syncLimit=5\n",
	} {
		if !strings.Contains(single, want) {
			t.Errorf("standalone zoo.cfg lacks %q:\n%s", want, single)
		}
	}
	if strings.Contains(single, "server.") {
		t.Errorf("standalone zoo.cfg has server lines:\n%s", single)
	}

	peers := []peer{{id: 1, clientPort: 1, quorumPort: 2, electPort: 3}, {id: 2, clientPort: 4, quorumPort: 5, electPort: 6}}
	node := nodeConfig{opts: opts, dir: "/z/node2", clientPort: 4, id: 2, peers: peers}.zooCfg()
	for _, want := range []string{"server.1=127.0.0.1:2:3\n", "server.2=127.0.0.1:5:6\n", "clientPort=4\n", "dataDir=/z/node2/data\n"} {
		if !strings.Contains(node, want) {
			t.Errorf("ensemble zoo.cfg lacks %q:\n%s", want, node)
		}
	}
}

func TestOptionsDefaults(t *testing.T) {
	if _, err := (Options{}).withDefaults(); err == nil {
		t.Error("no error without Dir")
	}
	o, err := Options{Dir: "rel", TickTime: time.Second, MaxSessionTimeout: time.Minute}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(o.Dir, "/") || o.Java != "java" || o.MinSessionTimeout != 2*time.Second || o.MaxSessionTimeout != time.Minute {
		t.Errorf("defaults: %+v", o)
	}
	if _, err := (Options{Dir: "/z", TickTime: time.Microsecond}).withDefaults(); err == nil {
		t.Error("no error for a sub-millisecond tick")
	}
}

func TestNotInstalled(t *testing.T) {
	_, err := Start(context.Background(), Options{Dir: t.TempDir(), Java: "/nonexistent/java"})
	if !errors.Is(err, ErrNotInstalled) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %v, want a one-line ErrNotInstalled", err)
	}
	if !strings.Contains(err.Error(), "apt-get install -y zookeeper") {
		t.Fatalf("err = %v, want the install command", err)
	}
}

func TestParseMode(t *testing.T) {
	srvr := "Zookeeper version: 3.8.0\nLatency min/avg/max: 0/0.0/0\nMode: follower\nNode count: 5\n"
	if m, err := parseMode(srvr); m != "follower" || err != nil {
		t.Errorf("parseMode = %q, %v", m, err)
	}
	if _, err := parseMode("This ZooKeeper instance is not currently serving requests\n"); !errors.Is(err, ErrNotServing) {
		t.Errorf("parseMode(not serving) err = %v", err)
	}
}

// echoServer echoes lines back until the test ends.
func echoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// roundTrip sends a line and reads it back within d.
func roundTrip(c net.Conn, d time.Duration) error {
	c.SetDeadline(time.Now().Add(d))
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "ping\n" {
		return errors.New("bad echo " + line)
	}
	return nil
}

func TestProxyCutRestore(t *testing.T) {
	p, err := NewProxy(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	before := dial()
	if err := roundTrip(before, 5*time.Second); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}

	p.Cut()
	if err := roundTrip(before, 5*time.Second); err == nil {
		t.Fatal("a connection from before the cut still works")
	}
	during := dial() // accepted, then black-holed
	var ne net.Error
	if err := roundTrip(during, 200*time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("during the cut: err = %v, want a timeout", err)
	}

	p.Restore()
	if err := roundTrip(during, 5*time.Second); err == nil {
		t.Fatal("a connection from during the cut works after Restore; want it closed")
	}
	if err := roundTrip(dial(), 5*time.Second); err != nil {
		t.Fatalf("after Restore: %v", err)
	}

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.Dial("tcp", p.Addr()); err == nil {
		c.Close()
		t.Fatal("proxy still listens after Close")
	}
}

// clashingPorts makes the first call of pickPorts return ports that are
// taken (the first, or the one at index taken), and later calls real ones.
func clashingPorts(t *testing.T, taken int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	calls := 0
	pickPorts = func(n int) ([]int, error) {
		calls++
		ports, err := FreePorts(n)
		if err == nil && calls == 1 {
			ports[taken] = ln.Addr().(*net.TCPAddr).Port
		}
		return ports, err
	}
	t.Cleanup(func() {
		pickPorts = FreePorts
		if calls < 2 {
			t.Errorf("pickPorts called %d times, want a retry", calls)
		}
	})
}

func TestStartRetriesOnPortClash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a JVM")
	}
	clashingPorts(t, 0)
	s, err := Start(context.Background(), Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
}

func TestStartEnsembleRetriesOnPortClash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a JVM")
	}
	clashingPorts(t, 0) // the client port of node 1
	e, err := StartEnsemble(context.Background(), 1, Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if mode, err := e.Servers[0].Mode(context.Background()); err != nil || mode != "leader" {
		t.Errorf("one-node ensemble: Mode() = %q, %v; want leader", mode, err)
	}
	if err := e.Stop(); err != nil {
		t.Fatal(err)
	}
}
