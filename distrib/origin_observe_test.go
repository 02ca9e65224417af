package distrib

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"dcroll/internal/obs/obstest"
	"dcroll/znodes"
)

// TestOriginMetricsAndHealth: the origin serves /metrics (passing
// promtool, with the build, Go and process families) and /healthz on its
// web seed's HTTP server: 200 "ok" while its session is connected, 503
// with the reason otherwise.
func TestOriginMetricsAndHealth(t *testing.T) {
	obstest.Promtool(t)
	c := testConn(t)
	o := startOrigin(t, c, OriginConfig{})
	obstest.Scrape(t, o.URL(), obstest.With(map[string]string{
		"dcroll_origin_seeding_blobs":       "gauge",
		"dcroll_origin_zookeeper_connected": "gauge",
	}))
	obstest.Healthz(t, o.URL(), http.StatusOK)

	gone, err := znodes.Dial(context.Background(), znodes.Options{Servers: zkAddr(t), SessionTimeout: 10 * time.Second, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	gone.Close()
	st, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	o2, err := NewOrigin(OriginConfig{Store: st, Conn: gone, HTTPAddr: "127.0.0.1:0", DisableBitTorrent: true, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer o2.ln.Close()
	srv := httptest.NewServer(o2.srv.Handler)
	defer srv.Close()
	if body := obstest.Healthz(t, srv.URL, http.StatusServiceUnavailable); !strings.Contains(body, "zookeeper") {
		t.Errorf("/healthz of an origin without a session says %q, want the reason", body)
	}
}
