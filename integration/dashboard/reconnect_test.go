package dashboard_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"dcroll/coordinator"
	"dcroll/integration/zktest"
	"dcroll/znodes"
)

// TestDashboardReconnectsAfterServerRestart: when the dashboard server
// itself goes away (a coordinator restarting), the open page says so and
// keeps its data; once a server answers on the same address again, the
// page's stream reconnects by itself and the data is live, no reload.
func TestDashboardReconnectsAfterServerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts ZooKeeper and Chromium")
	}
	b := newBrowser(t)
	zks := zktest.Start(t)
	c, err := znodes.Dial(context.Background(), znodes.Options{Servers: zks.Addr(), Root: "/dc-reconnect", SessionTimeout: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.EnsureSkeleton(); err != nil {
		t.Fatal(err)
	}
	addMember := func(m string) {
		t.Helper()
		if err := c.EnsurePath(c.Paths().Members("store")); err != nil {
			t.Fatal(err)
		}
		rec := &znodes.Member{Machine: m, Service: "store", Rack: "r1", DC: "dc1", Version: "1.0.0", Joined: time.Now(), Seen: time.Now()}
		if _, err := c.Create(c.Paths().Member("store", m), znodes.MustEncode(rec), 0); err != nil {
			t.Fatal(err)
		}
	}
	addMember("m1")

	// serve runs one dashboard server on addr ("" picks a port) until stop.
	serve := func(addr string) (string, func()) {
		t.Helper()
		if addr == "" {
			addr = "127.0.0.1:0"
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: coordinator.Dashboard(c), ReadHeaderTimeout: 5 * time.Second}
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ln) }()
		return ln.Addr().String(), func() {
			if err := srv.Close(); err != nil { // drops the open stream, as a dying process would
				t.Errorf("close dashboard server: %v", err)
			}
			if err := <-done; !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("dashboard server: %v", err)
			}
		}
	}
	addr, stop := serve("")
	b.navigate("http://" + addr + "/")
	marker := eval[float64](b, `window.__loaded = Date.now()`)
	b.waitJS(20*time.Second, "m1's tile", `document.querySelectorAll('#fleet .tile').length === 1`)

	stop()
	b.waitJS(20*time.Second, "the page to notice its server is gone", `
		document.body.classList.contains('stale') &&
		document.getElementById('stale-banner').textContent.includes('dashboard server unreachable')`)
	if n := eval[int](b, `document.querySelectorAll('#fleet .tile').length`); n != 1 {
		t.Errorf("%d tiles while the server is gone, want the last data (1)", n)
	}
	b.screenshot("server-gone")

	addMember("m2") // changed while the page could not see it
	_, stop = serve(addr)
	t.Cleanup(func() { b.close(); stop() })
	b.waitJS(30*time.Second, "the page to reconnect with the new data", `
		!document.body.classList.contains('stale') && document.querySelectorAll('#fleet .tile').length === 2`)
	if got := eval[float64](b, `window.__loaded`); got != marker {
		t.Fatalf("the page reloaded (marker %v, now %v)", marker, got)
	}
}
