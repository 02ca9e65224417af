package netns

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestFabric builds 2 racks x 2 hosts and checks that (1) a 4 MiB transfer
// inside a rack is much slower once host links are shaped to 50 Mbit/s and no
// faster than the shaping allows, and (2) a transfer from rack r0 to rack r1
// shows up on r1's uplink counter in the core->rack direction.
func TestFabric(t *testing.T) {
	if testing.Short() {
		t.Skip("builds network namespaces; skipped in -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := Available(ctx); err != nil {
		t.Skipf("skip: %v", err)
	}
	topo, err := Build(ctx, Config{Prefix: "dcbt-", Racks: 2, HostsPerRack: 2})
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	t.Cleanup(func() {
		if err := topo.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if left, _ := List(context.Background(), "dcbt-"); len(left) > 0 {
			t.Errorf("namespaces left after Close: %v", left)
		}
	})
	const size = 4 << 20
	r0h0, r0h1, r1h0 := topo.Hosts[0], topo.Hosts[1], topo.Hosts[2]

	unshaped := transfer(t, r0h0, r0h1, size)
	const mbit = 50
	if err := topo.Shape(ctx, Rates{HostMbit: mbit}); err != nil {
		t.Fatalf("shape: %v", err)
	}
	shaped := transfer(t, r0h0, r0h1, size)
	rate := float64(size) * 8 / shaped.Seconds() / 1e6
	t.Logf("4 MiB: unshaped %v, shaped %v (%.1f Mbit/s at %d Mbit/s)", unshaped, shaped, rate, mbit)
	if ratio := shaped.Seconds() / unshaped.Seconds(); ratio < 3 {
		t.Errorf("shaped transfer only %.1fx slower than unshaped (%v vs %v); want >= 3x", ratio, shaped, unshaped)
	}
	// Shaping may slow a transfer further on a busy machine, never speed it
	// up: the measured rate must not exceed the configured one by much (the
	// token bucket's burst allows a little).
	if rate > mbit*1.25 {
		t.Errorf("shaped transfer ran at %.1f Mbit/s, above the %d Mbit/s shaping", rate, mbit)
	}

	before, err := topo.Uplinks(ctx)
	if err != nil {
		t.Fatalf("uplinks: %v", err)
	}
	transfer(t, r0h0, r1h0, size)
	after, err := topo.Uplinks(ctx)
	if err != nil {
		t.Fatalf("uplinks: %v", err)
	}
	d := Sub(after, before)
	t.Logf("uplink bytes during r0->r1: %+v", d)
	if got := d["r1"].Down; got < size || got > size*11/10 {
		t.Errorf("bytes into rack r1 = %d, want between %d and %d (payload plus headers)", got, size, size*11/10)
	}
	if got := d["r0"].Up; got < size {
		t.Errorf("bytes out of rack r0 = %d, want >= %d", got, size)
	}
	if got := d["r0"].Down; got > size/10 {
		t.Errorf("bytes into rack r0 = %d, want only ACKs (< %d)", got, size/10)
	}
}

// transfer sends n bytes from src to dst over TCP and returns how long the
// it took from dialing to the receiver's EOF.
func transfer(t *testing.T, src, dst *Host, n int64) time.Duration {
	t.Helper()
	var ln net.Listener
	if err := dst.Do(func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(dst.IP.String(), "0"))
		return err
	}); err != nil {
		t.Fatalf("listen on %s: %v", dst.Machine, err)
	}
	defer ln.Close()
	start := time.Now()
	var conn net.Conn
	if err := src.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
		return err
	}); err != nil {
		t.Fatalf("dial %s from %s: %v", ln.Addr(), src.Machine, err)
	}
	sent := make(chan error, 1)
	go func() {
		_, err := io.Copy(conn, io.LimitReader(zeros{}, n))
		sent <- errors.Join(err, conn.Close())
	}()
	in, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	defer in.Close()
	got, err := io.Copy(io.Discard, in)
	elapsed := time.Since(start)
	if err != nil || got != n {
		t.Fatalf("received %d of %d bytes: %v", got, n, err)
	}
	if err := <-sent; err != nil {
		t.Fatalf("send: %v", err)
	}
	return elapsed
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
