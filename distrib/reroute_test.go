package distrib

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"dcroll/integration/zktest"
	"dcroll/znodes"
)

// TestStallWatch: when a stalled download re-routes, and how far.
func TestStallWatch(t *testing.T) {
	const after = 2 * time.Second
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	type step struct {
		at         time.Duration
		conns      []string
		progressed bool
		started    bool
		offered    bool
		want       int
	}
	inRack := func(addr string) bool { return addr != "origin" }
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"waiting for the first piece is not a stall", []step{
			{1 * time.Second, []string{"a"}, false, false, false, -1},
			{10 * time.Second, []string{"a"}, false, false, false, -1},
		}},
		{"a peer that has pieces and sends none is frozen, also before the first byte", []step{
			{1 * time.Second, []string{"a"}, false, false, true, -1},
			{5999 * time.Millisecond, []string{"a"}, false, false, true, -1},
			{6 * time.Second, []string{"a"}, false, false, true, levelTracker},
		}},
		{"a lost peer then silence re-routes after RerouteAfter", []step{
			{0, []string{"a", "b"}, true, true, true, -1},
			{500 * time.Millisecond, []string{"b"}, false, true, true, -1},
			{1999 * time.Millisecond, []string{"b"}, false, true, true, -1},
			{2 * time.Second, []string{"b"}, false, true, true, levelTracker},
			{3 * time.Second, []string{"b"}, false, true, true, -1}, // one level per 2 x RerouteAfter
			{6 * time.Second, []string{"b"}, false, true, true, levelRack},
			{10 * time.Second, []string{"b"}, false, true, true, levelRecovering},
			{14 * time.Second, []string{"b"}, false, true, true, levelDC},
			{18 * time.Second, []string{"b"}, false, true, true, levelAll},
			{22 * time.Second, []string{"b"}, false, true, true, levelAll},
		}},
		{"a lost peer with nothing offered by the rest re-routes after RerouteAfter/2", []step{
			{0, []string{"a", "b"}, true, true, true, -1},
			{100 * time.Millisecond, []string{"b"}, false, true, false, -1},
			{999 * time.Millisecond, []string{"b"}, false, true, false, -1},
			{1 * time.Second, []string{"b"}, false, true, false, levelTracker},
		}},
		{"a peer lost in a tick that still brought bytes counts", []step{
			{0, []string{"a", "b"}, true, true, true, -1},
			{250 * time.Millisecond, []string{"b"}, true, true, false, -1},
			{1249 * time.Millisecond, []string{"b"}, false, true, false, -1},
			{1250 * time.Millisecond, []string{"b"}, false, true, false, levelTracker},
		}},
		{"the level stays up after progress", []step{
			{0, []string{"a", "b"}, true, true, true, -1},
			{1 * time.Second, []string{"b"}, false, true, true, -1},
			{2 * time.Second, []string{"b"}, false, true, true, levelTracker},
			{3 * time.Second, []string{"b", "c"}, true, true, true, -1},
			{4 * time.Second, []string{"c"}, false, true, true, -1},
			{5 * time.Second, []string{"c"}, false, true, true, -1}, // 2 x RerouteAfter since the last re-route
			{6 * time.Second, []string{"c"}, false, true, true, levelRack},
		}},
		{"silence without a lost peer waits 3 x RerouteAfter when a peer offers pieces", []step{
			{0, []string{"a"}, true, true, true, -1},
			{5 * time.Second, []string{"a"}, false, true, true, -1},
			{6 * time.Second, []string{"a"}, false, true, true, levelTracker},
		}},
		{"starved downstream of a dead member waits 6 x RerouteAfter, re-announces once, then waits", []step{
			{0, []string{"a"}, true, true, false, -1},
			{6 * time.Second, []string{"a"}, false, true, false, -1},
			{11 * time.Second, []string{"a"}, false, true, false, -1},
			{12 * time.Second, []string{"a"}, false, true, false, levelTracker},
			{16 * time.Second, []string{"a"}, false, true, false, -1},
			{30 * time.Second, []string{"a"}, false, true, false, -1},
		}},
		{"a lost source beyond the rack (the origin) skips the rack", []step{
			{0, []string{"origin", "b"}, true, true, true, -1},
			{100 * time.Millisecond, []string{"b"}, false, true, false, -1},
			{1 * time.Second, []string{"b"}, false, true, false, levelTracker},
			{5 * time.Second, []string{"b"}, false, true, false, levelRecovering},
			{9 * time.Second, []string{"b"}, false, true, false, levelDC},
		}},
		{"a lost peer while bytes flow is no stall", []step{
			{0, []string{"a", "b"}, true, true, true, -1},
			{1 * time.Second, []string{"b"}, true, true, true, -1},
			{2500 * time.Millisecond, []string{"b"}, false, true, true, -1},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newStallWatch(after, t0, inRack)
			for i, s := range tc.steps {
				tk := stallTick{conns: s.conns, progressed: s.progressed, started: s.started, offered: s.offered}
				if got := w.observe(at(s.at), tk); got != s.want {
					t.Fatalf("step %d (%s): level %d, want %d", i, s.at, got, s.want)
				}
			}
		})
	}
}

// TestStallWatchFallback: what a re-route runs when no tracker answers, by
// the stall's cause, and that a level reroute ran instead is skipped next.
func TestStallWatchFallback(t *testing.T) {
	const after = time.Second
	t0 := time.Unix(1000, 0)
	inRack := func(addr string) bool { return addr != "origin" }
	for _, tc := range []struct {
		name         string
		before, then []string
		offered      bool
		quiet        time.Duration
		want         int
	}{
		{"lost a rack member: the rack map", []string{"a", "b"}, []string{"b"}, false, time.Second, levelRack},
		{"lost the origin: the recovering set", []string{"origin", "b"}, []string{"b"}, false, time.Second, levelRecovering},
		{"frozen: the rack map", []string{"a"}, []string{"a"}, true, 3 * time.Second, levelRack},
		{"starved: nothing", []string{"a"}, []string{"a"}, false, 6 * time.Second, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newStallWatch(after, t0, inRack)
			w.observe(t0, stallTick{conns: tc.before, progressed: true, started: true, offered: true})
			if lv := w.observe(t0.Add(tc.quiet), stallTick{conns: tc.then, started: true, offered: tc.offered}); lv != levelTracker {
				t.Fatalf("level %d, want the tracker first", lv)
			}
			if w.fallback != tc.want {
				t.Fatalf("fallback %d, want %d", w.fallback, tc.want)
			}
		})
	}
	w := newStallWatch(after, t0, inRack)
	w.observe(t0, stallTick{conns: []string{"a", "b"}, progressed: true, started: true, offered: true})
	w.observe(t0.Add(time.Second), stallTick{conns: []string{"b"}, started: true})
	w.ran(levelRack) // no tracker answered
	if lv := w.observe(t0.Add(3*time.Second), stallTick{conns: []string{"b"}, started: true}); lv != levelRecovering {
		t.Fatalf("after the rack map ran: level %d, want %d", lv, levelRecovering)
	}
}

// TestRankRemoteOrigin: in a data center without an origin only the DC
// gateway (the earliest rack gateway) gets the origin; the DC's other rack
// gateways get the DC gateway; the origin hands itself to its own DC's
// gateways and to the DC gateway of the other.
func TestRankRemoteOrigin(t *testing.T) {
	t0 := time.Unix(1000, 0)
	loc := func(addr, m, rack, dc string, s int) PeerLoc {
		return PeerLoc{Addr: netip.MustParseAddrPort(addr), Machine: m, Rack: rack, DC: dc, Since: t0.Add(time.Duration(s) * time.Second)}
	}
	org := PeerLoc{Addr: netip.MustParseAddrPort("10.0.0.1:6881"), Origin: true, DC: "dc1"}
	a1 := loc("10.0.1.1:6881", "a1", "ra", "dc1", 0)
	a2 := loc("10.0.1.2:6881", "a2", "ra", "dc1", 1)
	b1 := loc("10.1.1.1:6881", "b1", "rb", "dc2", 2) // dc2's DC gateway: earliest rack gateway
	b2 := loc("10.1.1.2:6881", "b2", "rb", "dc2", 3)
	c1 := loc("10.1.2.1:6881", "c1", "rc", "dc2", 4)
	c2 := loc("10.1.2.2:6881", "c2", "rc", "dc2", 5)
	all := []PeerLoc{org, a1, a2, b1, b2, c1, c2}
	names := func(ps []PeerLoc) []string {
		var out []string
		for _, p := range ps {
			n := p.Machine
			if p.Origin {
				n = "origin"
			}
			out = append(out, n)
		}
		return out
	}
	for _, tc := range []struct {
		self PeerLoc
		want string
	}{
		{a1, "[a2 origin]"},
		{b1, "[b2 c1 origin]"},
		{c1, "[c2 b1]"},
		{c2, "[c1]"},
		{org, "[a1 b1]"},
	} {
		got := fmt.Sprint(names(DefaultRanking.Rank(tc.self, all, 10)))
		if tc.self.Origin {
			// hash order: compare as a set
			if got != "[a1 b1]" && got != "[b1 a1]" {
				t.Errorf("origin: got %s, want a1 and b1", got)
			}
			continue
		}
		if got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.self.Machine, got, tc.want)
		}
	}
}

// swarmFixture is an origin (throttled, so a download takes a few
// seconds), one published blob and nodes in racks, announcing in order so
// the tracker's chains are known: the first node of a rack is its gateway,
// then m1, m2, ... along the chain.
type swarmFixture struct {
	c       *znodes.Conn
	o       *Origin
	stopO   func()
	id      string
	nodes   []*Node
	racks   []string
	mu      sync.Mutex
	answers map[string]int // machine -> answers seen
}

func newSwarmFixture(t *testing.T, size int, racks, perRack int) *swarmFixture {
	t.Helper()
	f := &swarmFixture{c: testConn(t), answers: map[string]int{}}
	st, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := OriginConfig{Store: st, Conn: f.c, ListenAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Logger:            testLogger().With("test", t.Name()),
		UploadRateLimiter: rate.NewLimiter(2<<20, 256<<10),
		OnAnswer: func(a Answer) {
			f.mu.Lock()
			f.answers[a.Self.Machine]++
			f.mu.Unlock()
		}}
	o, err := NewOrigin(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()
	var once sync.Once
	f.o = o
	f.stopO = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("origin: %v", err)
			}
		})
	}
	t.Cleanup(f.stopO)
	file, id := writeRandom(t, t.TempDir(), size)
	pctx, pcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer pcancel()
	if _, err := Publish(pctx, f.c, st, []string{file}, PublishOptions{OriginURL: o.URL(), PieceLength: 32 << 10}); err != nil {
		t.Fatal(err)
	}
	waitSeeding(t, o, id)
	f.id = id
	for r := range racks {
		for i := range perRack {
			machine := fmt.Sprintf("r%d-m%d", r, i)
			n := startNode(t, f.c, machine, fmt.Sprintf("127.0.%d.%d", 40+r, 10+i), fmt.Sprintf("r%d", r), "dc1", func(nc *NodeConfig) {
				// Far beyond the test: a completion with source "swarm"
				// proves the node re-routed instead of falling back.
				nc.StallTimeout = 2 * time.Minute
				nc.RequestWindow = 256 << 10
			})
			f.nodes = append(f.nodes, n)
			f.racks = append(f.racks, fmt.Sprintf("r%d", r))
		}
	}
	if err := o.Racks().Refresh(); err != nil {
		t.Fatal(err)
	}
	for _, n := range f.nodes {
		if err := n.Racks().Refresh(); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

type fetchResult struct {
	path string
	err  error
}

// start starts node i's Fetch and waits until the tracker answered it, so
// announce order (and the chains) follow i.
func (f *swarmFixture) start(t *testing.T, ctx context.Context, i int) <-chan fetchResult {
	t.Helper()
	res := make(chan fetchResult, 1)
	n := f.nodes[i]
	go func() {
		p, err := n.Fetch(ctx, f.id, nil)
		res <- fetchResult{p, err}
	}()
	zktest.WaitFor(t, 20*time.Second, "first announce of "+n.cfg.Machine, func() (bool, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.answers[n.cfg.Machine] > 0, nil
	})
	return res
}

func (f *swarmFixture) bytes(i int) int64 {
	for _, t := range f.nodes[i].Client().Torrents() {
		return t.BytesCompleted()
	}
	return 0
}

// TestDeadPeerReroute kills a rack's gateway or a chain member once it
// holds a quarter of the blob: the nodes behind it must re-route (stalled
// re-announce; the tracker probes the rack, forgets the dead node and hands
// out the next gateway or predecessor) and finish from the swarm, without
// the web seed fallback.
func TestDeadPeerReroute(t *testing.T) {
	for _, tc := range []struct {
		name   string
		victim int // index in announce order: 0 is the gateway
	}{{"gateway", 0}, {"chain member", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			const size = 4 << 20
			f := newSwarmFixture(t, size, 1, 4)
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			vctx, vcancel := context.WithCancel(ctx)
			defer vcancel()
			var results []<-chan fetchResult
			for i := range f.nodes {
				c := ctx
				if i == tc.victim {
					c = vctx
				}
				results = append(results, f.start(t, c, i))
			}
			zktest.WaitFor(t, 60*time.Second, "victim holds a quarter", func() (bool, error) {
				return f.bytes(tc.victim) >= size/4, nil
			})
			if f.bytes(tc.victim) >= size {
				t.Fatalf("victim completed before it could be killed: throttle the origin harder")
			}
			t.Logf("killing %s at %d of %d bytes", f.nodes[tc.victim].cfg.Machine, f.bytes(tc.victim), size)
			// Closing the client closes its sockets, like a killed process.
			vcancel()
			if err := f.nodes[tc.victim].Close(); err != nil {
				t.Logf("close victim: %v", err)
			}
			for i, rc := range results {
				if i == tc.victim {
					continue
				}
				r := <-rc
				n := f.nodes[i]
				if r.err != nil {
					t.Fatalf("%s: %v", n.cfg.Machine, r.err)
				}
				if got := sha256File(t, r.path); got != f.id {
					t.Fatalf("%s holds %s, want %s", n.cfg.Machine, got, f.id)
				}
				if src := n.Progress()[0].Source; src != SourceSwarm {
					t.Errorf("%s finished from %q, want %q (re-routed within the swarm)", n.cfg.Machine, src, SourceSwarm)
				}
			}
		})
	}
}

// TestDeadOrigin stops the origin (seeder, web seed and tracker in one
// process) as soon as the fleet as a whole holds every piece: 2 racks x 2
// nodes, each rack fetching its half of the pieces first (spreadSegment).
// With the tracker gone the stalled nodes take peers from the rack map
// (their rack, then their data center) and every node completes.
func TestDeadOrigin(t *testing.T) {
	const size = 4 << 20
	f := newSwarmFixture(t, size, 2, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var results []<-chan fetchResult
	for i := range f.nodes {
		results = append(results, f.start(t, ctx, i))
	}
	numPieces := size / (32 << 10)
	zktest.WaitFor(t, 60*time.Second, "every piece somewhere in the fleet", func() (bool, error) {
		have := make([]bool, numPieces)
		for _, n := range f.nodes {
			for _, tt := range n.Client().Torrents() {
				i := 0
				for _, run := range tt.PieceStateRuns() {
					for range run.Length {
						if run.Complete && i < numPieces {
							have[i] = true
						}
						i++
					}
				}
			}
		}
		for _, h := range have {
			if !h {
				return false, nil
			}
		}
		return true, nil
	})
	var held int64
	for i := range f.nodes {
		held += f.bytes(i)
	}
	f.stopO()
	t.Logf("origin stopped with the fleet holding %.0f %% of %d copies", 100*float64(held)/float64(size*int64(len(f.nodes))), len(f.nodes))
	if held >= size*int64(len(f.nodes)) {
		t.Fatalf("every node had completed before the origin stopped: throttle the origin harder")
	}
	for i, rc := range results {
		r := <-rc
		n := f.nodes[i]
		if r.err != nil {
			t.Fatalf("%s: %v", n.cfg.Machine, r.err)
		}
		if got := sha256File(t, r.path); got != f.id {
			t.Fatalf("%s holds %s, want %s", n.cfg.Machine, got, f.id)
		}
	}
	// The nodes that lost the origin found each other through the blob's
	// recovering set, and left it when done.
	hex, _ := ParseID(f.id)
	c := f.nodes[0].cfg.Conn
	names, _, err := c.ZK().Children(c.Paths().Recovering(hex))
	if err != nil {
		t.Fatalf("recovering set: %v (no node joined it)", err)
	}
	if len(names) != 0 {
		t.Fatalf("recovering set after every fetch ended: %v, want empty", names)
	}
}
