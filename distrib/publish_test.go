package distrib

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"dcroll/integration/zktest"
)

// TestPublishChecksOriginFirst: Publish records nothing unless the origin
// serves every blob from the store it was given.
func TestPublishChecksOriginFirst(t *testing.T) {
	c := testConn(t)
	o := startOrigin(t, c, OriginConfig{DisableBitTorrent: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	f1, id1 := writeRandom(t, dir, 10_000)
	f2, id2 := writeRandom(t, dir, 20_000)
	other, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	noRecord := func(what string) {
		t.Helper()
		kids, _, err := c.ZK().Children(c.Paths().Blobs())
		if err != nil && !errors.Is(err, zk.ErrNoNode) {
			t.Fatal(err)
		}
		if len(kids) != 0 {
			t.Errorf("%s: recorded %v", what, kids)
		}
	}

	start := time.Now()
	_, err = Publish(ctx, c, other, []string{f1, f2}, PublishOptions{OriginURL: o.URL(), OriginWait: 300 * time.Millisecond})
	want := fmt.Sprintf("origin %s answers 404 for %s: is --store %s the directory `dcroll origin --store` serves?", o.URL(), id1, other.Dir())
	if !errors.Is(err, ErrOriginNotServing) || err.Error() != want {
		t.Fatalf("wrong store: %v; want %s", err, want)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("wrong store: gave up after %v", d)
	}
	noRecord("wrong store")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	_, err = Publish(ctx, c, o.cfg.Store, []string{f1}, PublishOptions{OriginURL: dead, OriginWait: 300 * time.Millisecond})
	if !errors.Is(err, ErrOriginNotServing) || !strings.HasPrefix(err.Error(), "origin "+dead+" unreachable (") ||
		!strings.HasSuffix(err.Error(), "while checking "+id1+": is `dcroll origin` running there?") {
		t.Fatalf("no origin: %v", err)
	}
	noRecord("no origin")

	blobs, err := Publish(ctx, c, o.cfg.Store, []string{f1, f2}, PublishOptions{OriginURL: o.URL() + "/"})
	if err != nil {
		t.Fatalf("origin's store: %v", err)
	}
	if len(blobs) != 2 || blobs[0].ID != id1 || blobs[1].ID != id2 || blobs[0].URLs[0] != WebSeedURL(o.URL(), strings.TrimPrefix(id1, "sha256:")) {
		t.Fatalf("origin's store: %+v", blobs)
	}
}

// TestPublishWaitsForStartingOrigin: an origin that starts while Publish
// waits (docker compose starts both at once) is not an error.
func TestPublishWaitsForStartingOrigin(t *testing.T) {
	c := testConn(t)
	st, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	file, id := writeRandom(t, t.TempDir(), 5000)
	addr := fmt.Sprintf("127.0.0.1:%d", zktest.FreePort(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := Publish(ctx, c, st, []string{file}, PublishOptions{OriginURL: "http://" + addr, OriginWait: 20 * time.Second})
		done <- err
	}()
	startOrigin(t, c, OriginConfig{Store: st, HTTPAddr: addr, DisableBitTorrent: true})
	if err := <-done; err != nil {
		t.Fatalf("publish while the origin starts: %v", err)
	}
	if _, err := LookupBlob(c, id); err != nil {
		t.Fatal(err)
	}
}
