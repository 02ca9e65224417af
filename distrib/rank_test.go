package distrib

import (
	"net/netip"
	"testing"
	"time"
)

var t0 = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

func loc(addr, machine, rack, dc string, since int) PeerLoc {
	return PeerLoc{Addr: netip.MustParseAddrPort(addr), Machine: machine, Rack: rack, DC: dc, Since: t0.Add(time.Duration(since) * time.Second)}
}

func origin(addr string) PeerLoc {
	return PeerLoc{Addr: netip.MustParseAddrPort(addr), Origin: true}
}

func seeder(p PeerLoc) PeerLoc {
	p.Seeder = true
	return p
}

func machines(ps []PeerLoc) []string {
	var out []string
	for _, p := range ps {
		if p.Origin {
			out = append(out, "origin")
		} else {
			out = append(out, p.Machine)
		}
	}
	return out
}

func classes(self PeerLoc, ps []PeerLoc) string {
	s := ""
	for _, p := range ps {
		switch {
		case p.Origin:
			s += "O"
		case p.Rack == self.Rack && p.DC == self.DC:
			s += "R"
		case p.DC == self.DC && p.Rack != "":
			s += "D"
		default:
			s += "X"
		}
	}
	return s
}

func TestRankPeers(t *testing.T) {
	// Rack a1: a1-1 (earliest, gateway), a1-2, a1-3, a1-4; rack a2: a2-1
	// (gateway), a2-2; rack a3: a3-1; dc2 rack b1: b1-1; unknown: 10.9.9.9.
	a11 := loc("10.0.1.1:6881", "a1-1", "a1", "dc1", 0)
	a12 := loc("10.0.1.2:6881", "a1-2", "a1", "dc1", 1)
	a13 := loc("10.0.1.3:6881", "a1-3", "a1", "dc1", 2)
	a14 := loc("10.0.1.4:6881", "a1-4", "a1", "dc1", 3)
	a21 := loc("10.0.2.1:6881", "a2-1", "a2", "dc1", 0)
	a22 := loc("10.0.2.2:6881", "a2-2", "a2", "dc1", 5)
	a31 := loc("10.0.3.1:6881", "a3-1", "a3", "dc1", 7)
	b11 := loc("10.1.1.1:6881", "b1-1", "b1", "dc2", 1)
	unk := PeerLoc{Addr: netip.MustParseAddrPort("10.9.9.9:6881"), Since: t0}
	org := origin("10.0.0.1:6881")
	all := []PeerLoc{org, a11, a12, a13, a14, a21, a22, a31, b11, unk}
	noOrigin := all[1:]

	tests := []struct {
		name    string
		rank    Ranking
		self    PeerLoc
		peers   []PeerLoc
		n       int
		classes string // R same rack, D other rack same dc, X other, O origin
		check   func(t *testing.T, got []PeerLoc)
	}{
		{name: "gateway with an origin: chain successor, then the origin", self: a11, peers: all, n: 10, classes: "RO"},
		{name: "gateway without origin: chain successor, 2 cross-rack gateways, 1 other", self: a11, peers: noOrigin, n: 10, classes: "RDDX",
			check: func(t *testing.T, got []PeerLoc) {
				for _, p := range got {
					if p.Machine == "a2-2" {
						t.Errorf("non-gateway a2-2 handed across racks: %v", machines(got))
					}
				}
			}},
		{name: "non-gateway: its two chain neighbours only, no origin", self: a13, peers: all, n: 10, classes: "RR",
			check: func(t *testing.T, got []PeerLoc) {
				if a, b := got[0].Machine, got[1].Machine; a != "a1-2" || b != "a1-4" {
					t.Errorf("got %v, want a1-2 (predecessor) and a1-4 (successor)", machines(got))
				}
			}},
		{name: "chain tail: predecessor, then the rack's seeders", self: a14, peers: []PeerLoc{org, seeder(a11), a12, a13, a21}, n: 10, classes: "RR",
			check: func(t *testing.T, got []PeerLoc) {
				if a, b := got[0].Machine, got[1].Machine; a != "a1-3" || b != "a1-1" {
					t.Errorf("got %v, want a1-3 then seeder a1-1", machines(got))
				}
			}},
		{name: "chain span 2: both neighbours on each side", rank: Ranking{ChainSpan: 2}, self: a13, peers: all, n: 10, classes: "RRR",
			check: func(t *testing.T, got []PeerLoc) {
				if a, b, c := got[0].Machine, got[1].Machine, got[2].Machine; a != "a1-1" || b != "a1-2" || c != "a1-4" {
					t.Errorf("got %v, want a1-1, a1-2 (two predecessors) and a1-4 (successor)", machines(got))
				}
			}},
		{name: "self excluded by machine even at another address", self: loc("10.0.1.9:1", "a1-2", "a1", "dc1", 1), peers: all, n: 10, classes: "RR"},
		{name: "small n keeps cross-rack quota for the gateway", self: a11, peers: noOrigin, n: 3, classes: "DDX"},
		{name: "n=0 still hands the gateway the origin", self: a11, peers: all, n: 0, classes: "O"},
		{name: "rack quota capped by n", self: a13, peers: all, n: 1, classes: "R"},
		{name: "lone member of a rack is its gateway", self: a31, peers: noOrigin, n: 10, classes: "DDX",
			check: func(t *testing.T, got []PeerLoc) {
				want := map[string]bool{"a1-1": true, "a2-1": true}
				for _, p := range got[:2] {
					if !want[p.Machine] {
						t.Errorf("cross-rack peer %s is not a gateway: %v", p.Machine, machines(got))
					}
				}
			}},
		{name: "custom quotas: 1 cross, no other DC", rank: Ranking{CrossRack: 1, OtherDC: -1}, self: a11, peers: all, n: 10, classes: "RDO"},
		{name: "two gateways per rack: two chains", rank: Ranking{Gateways: 2}, self: a12, peers: all, n: 10, classes: "RO", // a1-2 is a gateway now, a1-4 its successor
			check: func(t *testing.T, got []PeerLoc) {
				if got[0].Machine != "a1-4" {
					t.Errorf("got %v, want a1-4 first", machines(got))
				}
			}},
		{name: "origin gets every rack's gateway only", self: org, peers: all, n: 10, classes: "",
			check: func(t *testing.T, got []PeerLoc) {
				want := map[string]bool{"a1-1": true, "a2-1": true, "a3-1": true, "b1-1": true, "": true} // "": the unknown peer
				if len(got) != len(want) {
					t.Fatalf("got %v, want one gateway per rack", machines(got))
				}
				for _, p := range got {
					if !want[p.Machine] {
						t.Errorf("origin handed non-gateway %s: %v", p.Machine, machines(got))
					}
				}
			}},
		{name: "unknown announcer gets everyone", self: PeerLoc{Addr: netip.MustParseAddrPort("10.8.8.8:1")}, peers: all, n: 20, classes: "",
			check: func(t *testing.T, got []PeerLoc) {
				if len(got) != len(all) || !got[len(got)-1].Origin {
					t.Errorf("got %v, want all %d peers with the origin last", machines(got), len(all))
				}
			}},
		{name: "random ignores racks but keeps the origin", rank: Ranking{Random: true}, self: a13, peers: all, n: 4, classes: "",
			check: func(t *testing.T, got []PeerLoc) {
				if len(got) != 4 || !got[3].Origin {
					t.Errorf("got %v, want 3 peers and the origin", machines(got))
				}
			}},
		{name: "empty swarm", self: a11, peers: nil, n: 10, classes: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.rank.Rank(tc.self, tc.peers, tc.n)
			if tc.classes != "" || tc.check == nil {
				if c := classes(tc.self, got); c != tc.classes {
					t.Fatalf("classes = %q, want %q (%v)", c, tc.classes, machines(got))
				}
			}
			for _, p := range got {
				if p.Addr == tc.self.Addr {
					t.Fatalf("self in answer: %v", machines(got))
				}
			}
			if tc.check != nil {
				tc.check(t, got)
			}
			again := tc.rank.Rank(tc.self, tc.peers, tc.n)
			if machines(again) == nil && got == nil {
				return
			}
			if a, b := machines(got), machines(again); len(a) != len(b) {
				t.Fatalf("not deterministic: %v vs %v", a, b)
			} else {
				for i := range a {
					if a[i] != b[i] {
						t.Fatalf("not deterministic: %v vs %v", a, b)
					}
				}
			}
		})
	}
}

func TestRankChainsRack(t *testing.T) {
	// 40 members of one rack, handout 10: in announce order they form a
	// chain, so every member is handed to at most two others and uploads
	// to one successor (the gateway heads it).
	var rack []PeerLoc
	for i := range 40 {
		rack = append(rack, loc(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 1, byte(i + 1)}), 6881).String(), "m"+string(rune('A'+i)), "r", "dc", i))
	}
	handed := map[string]int{}
	for i, self := range rack {
		got := RankPeers(self, rack, 10)
		var want []string
		if i > 0 {
			want = append(want, rack[i-1].Machine)
		}
		if i < len(rack)-1 {
			want = append(want, rack[i+1].Machine)
		}
		if g := machines(got); len(g) != len(want) || (len(g) > 0 && g[0] != want[0]) || (len(g) > 1 && g[1] != want[1]) {
			t.Fatalf("member %d got %v, want %v", i, g, want)
		}
		for _, p := range got {
			handed[p.Machine]++
		}
	}
	for m, c := range handed {
		if c > 2 {
			t.Fatalf("%s handed to %d announcers, want at most 2", m, c)
		}
	}
}
