package distrib

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"dcroll/integration/zktest"
	"dcroll/znodes"
)

// testLogger logs to stderr when DISTRIB_TEST_LOG is set (a level name).
func testLogger() *slog.Logger {
	lv := os.Getenv("DISTRIB_TEST_LOG")
	if lv == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(lv))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

var rootSeq struct {
	sync.Mutex
	n int
}

// testConn connects to the test ZooKeeper under a fresh root, skeleton made.
func testConn(t *testing.T) *znodes.Conn {
	t.Helper()
	addr := zkAddr(t)
	rootSeq.Lock()
	rootSeq.n++
	root := fmt.Sprintf("/distrib-%d-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6, rootSeq.n)
	rootSeq.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := znodes.Dial(ctx, znodes.Options{Servers: addr, Root: root, SessionTimeout: 10 * time.Second, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.EnsureSkeleton(); err != nil {
		t.Fatal(err)
	}
	return c
}

// registerAgent writes /dc/agents/<machine> as an agent would.
func registerAgent(t *testing.T, c *znodes.Conn, machine, rack, dc, peerAddr string) {
	t.Helper()
	a := &znodes.Agent{Machine: machine, Rack: rack, DC: dc, PeerAddr: peerAddr, Since: time.Now()}
	if _, err := c.Create(c.Paths().Agent(machine), znodes.MustEncode(a), zk.FlagEphemeral); err != nil {
		t.Fatal(err)
	}
}

// writeRandom writes a file of size random bytes and returns its path and id.
func writeRandom(t *testing.T, dir string, size int) (string, string) {
	t.Helper()
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, fmt.Sprintf("payload-%d.bin", size))
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return p, IDOf(hex.EncodeToString(sum[:]))
}

func sha256File(t *testing.T, p string) string {
	t.Helper()
	h, err := hashFile(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return IDOf(h)
}

// startOrigin runs an origin until the test ends.
func startOrigin(t *testing.T, c *znodes.Conn, cfg OriginConfig) *Origin {
	t.Helper()
	if cfg.Store == nil {
		st, err := OpenStore(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		cfg.Store = st
	}
	cfg.Conn = c
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = "127.0.0.1:0"
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger().With("test", t.Name())
	}
	o, err := NewOrigin(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("origin: %v", err)
		}
	})
	return o
}

// startNode starts a node listening on ip and registers it in rack/dc.
func startNode(t *testing.T, c *znodes.Conn, machine, ip, rack, dc string, mod func(*NodeConfig)) *Node {
	t.Helper()
	cfg := NodeConfig{DataDir: t.TempDir(), ListenAddr: ip + ":0", Conn: c, Machine: machine, Logger: testLogger().With("test", t.Name())}
	if mod != nil {
		mod(&cfg)
	}
	n, err := NewNode(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Logf("close node %s: %v", machine, err)
		}
	})
	registerAgent(t, c, machine, rack, dc, n.PeerAddr())
	return n
}

// waitSeeding waits until the origin seeds id.
func waitSeeding(t *testing.T, o *Origin, id string) {
	t.Helper()
	o.Nudge()
	zktest.WaitFor(t, 30*time.Second, "origin seeding "+id, func() (bool, error) {
		for _, s := range o.Seeding() {
			if s == id {
				return true, nil
			}
		}
		return false, nil
	})
}
