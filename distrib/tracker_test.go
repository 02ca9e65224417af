package distrib

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"

	"dcroll/znodes"
)

// staticRacks is a RackMap filled in memory (no ZooKeeper).
func staticRacks(agents ...znodes.Agent) *RackMap {
	m := NewRackMap(nil, testLogger())
	for _, a := range agents {
		ap := netip.MustParseAddrPort(a.PeerAddr)
		m.byAddr[ap] = a
		m.byIP[ap.Addr()] = append(m.byIP[ap.Addr()], a)
		m.byMachine[a.Machine] = a
	}
	return m
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type announceResp struct {
	Failure  string `bencode:"failure reason"`
	Interval int    `bencode:"interval"`
	Peers    string `bencode:"peers"`
}

// announce sends an HTTP announce from ip (the test server sees 127.0.0.1,
// so the tracker is wrapped to rewrite RemoteAddr).
func announce(t *testing.T, srv *httptest.Server, ih string, ip string, port int, event string, left int) ([]netip.AddrPort, bool) {
	t.Helper()
	q := url.Values{}
	q.Set("info_hash", ih)
	q.Set("peer_id", fmt.Sprintf("%-20s", fmt.Sprintf("p%d", port)))
	q.Set("port", fmt.Sprint(port))
	q.Set("left", fmt.Sprint(left))
	q.Set("compact", "1")
	if event != "" {
		q.Set("event", event)
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/announce?"+q.Encode(), nil)
	req.Header.Set("X-Test-IP", ip)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if strings.Contains(string(body), "failure reason") {
		var r announceResp
		_ = bencode.Unmarshal(body, &r)
		return nil, false
	}
	var r announceResp
	if err := bencode.Unmarshal(body, &r); err != nil {
		t.Fatalf("decode %q: %v", body, err)
	}
	if r.Interval != 60 {
		t.Fatalf("interval %d", r.Interval)
	}
	var out []netip.AddrPort
	for p := r.Peers; len(p) >= 6; p = p[6:] {
		a := netip.AddrFrom4([4]byte{p[0], p[1], p[2], p[3]})
		out = append(out, netip.AddrPortFrom(a, uint16(p[4])<<8|uint16(p[5])))
	}
	return out, true
}

func testTrackerServer(t *testing.T, cfg TrackerConfig) *httptest.Server {
	tr := NewTracker(cfg)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.RemoteAddr = r.Header.Get("X-Test-IP") + ":40000"
		tr.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestTrackerAnnounces(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1e9, 0)}
	racks := staticRacks(
		znodes.Agent{Machine: "a1", Rack: "ra", DC: "d", PeerAddr: "10.0.0.1:6881"},
		znodes.Agent{Machine: "a2", Rack: "ra", DC: "d", PeerAddr: "10.0.0.2:6881"},
		znodes.Agent{Machine: "b1", Rack: "rb", DC: "d", PeerAddr: "10.0.1.1:6881"},
		znodes.Agent{Machine: "b2", Rack: "rb", DC: "d", PeerAddr: "10.0.1.2:6881"},
	)
	org := netip.MustParseAddrPort("10.9.0.1:7000")
	srv := testTrackerServer(t, TrackerConfig{Racks: racks, Origins: []netip.AddrPort{org}, Now: clk.Now})
	ih := strings.Repeat("x", 20)

	// b1 first (gateway of rb), then a1 (gateway of ra), a2, b2.
	if got, _ := announce(t, srv, ih, "10.0.1.1", 6881, "started", 100); fmt.Sprint(got) != "[10.9.0.1:7000]" {
		t.Fatalf("first announcer got %v, want only the origin", got)
	}
	clk.Add(time.Second)
	if got, _ := announce(t, srv, ih, "10.0.0.1", 6881, "started", 100); fmt.Sprint(got) != "[10.9.0.1:7000]" {
		t.Fatalf("a1 (gateway) got %v, want only the origin (it feeds every gateway; no cross-rack peers)", got)
	}
	clk.Add(time.Second)
	if got, _ := announce(t, srv, ih, "10.0.0.2", 6881, "started", 100); fmt.Sprint(got) != "[10.0.0.1:6881]" {
		t.Fatalf("a2 got %v, want its chain predecessor (gateway a1) only", got)
	}
	clk.Add(time.Second)
	if got, _ := announce(t, srv, ih, "10.0.1.2", 6881, "started", 100); fmt.Sprint(got) != "[10.0.1.1:6881]" {
		t.Fatalf("b2 got %v, want its chain predecessor (gateway b1) only", got)
	}
	// Same IP, other port: a different peer (several clients per host).
	if got, _ := announce(t, srv, ih, "10.0.1.2", 7777, "", 100); len(got) != 5 {
		t.Fatalf("unregistered announcer got %v, want all 4 peers and the origin", got)
	}
	// Stopped removes the peer at once.
	announce(t, srv, ih, "10.0.1.2", 7777, "stopped", 100)
	if got, _ := announce(t, srv, ih, "10.0.0.9", 1, "", 100); len(got) != 5 {
		t.Fatalf("after stop: %v", got)
	}
	// Peers that do not re-announce within 2x the interval expire.
	clk.Add(2*time.Minute + time.Second)
	if got, _ := announce(t, srv, ih, "10.0.0.1", 6881, "", 0); fmt.Sprint(got) != "[10.9.0.1:7000]" {
		t.Fatalf("after expiry a1 got %v, want only the origin", got)
	}
	// Malformed announces get a failure reason, not a crash.
	if _, ok := announce(t, srv, "short", "10.0.0.1", 6881, "", 0); ok {
		t.Fatal("short info_hash accepted")
	}
	if _, ok := announce(t, srv, ih, "10.0.0.1", 0, "", 0); ok {
		t.Fatal("port 0 accepted")
	}
}

// TestTrackerMembersOnly: a closed tracker hands out only registered
// members and origins, and never hands out a stranger: an announce from
// an address that is not a fleet member gets nobody and is not recorded.
func TestTrackerMembersOnly(t *testing.T) {
	racks := staticRacks(
		znodes.Agent{Machine: "a1", Rack: "ra", DC: "d", PeerAddr: "10.0.0.1:6881"},
		znodes.Agent{Machine: "a2", Rack: "ra", DC: "d", PeerAddr: "10.0.0.2:6881"},
	)
	org := netip.MustParseAddrPort("10.9.0.1:7000")
	srv := testTrackerServer(t, TrackerConfig{Racks: racks, Origins: []netip.AddrPort{org}, MembersOnly: true})
	ih := strings.Repeat("y", 20)
	if got, _ := announce(t, srv, ih, "10.0.0.1", 6881, "started", 100); fmt.Sprint(got) != "[10.9.0.1:7000]" {
		t.Fatalf("member a1 got %v, want the origin", got)
	}
	for _, stranger := range []struct {
		ip   string
		port int
	}{{"10.6.6.6", 6881}, {"10.0.0.1", 9999}} { // unknown host; a member's IP, another port
		if got, _ := announce(t, srv, ih, stranger.ip, stranger.port, "started", 100); len(got) != 0 {
			t.Errorf("stranger %s:%d got %v, want nobody", stranger.ip, stranger.port, got)
		}
	}
	if got, _ := announce(t, srv, ih, "10.0.0.2", 6881, "started", 100); fmt.Sprint(got) != "[10.0.0.1:6881]" {
		t.Fatalf("member a2 got %v, want a1 only (no stranger recorded)", got)
	}
}
