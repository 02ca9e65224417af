package distrib

import (
	"cmp"
	"hash/fnv"
	"net/netip"
	"slices"
	"time"
)

// PeerLoc is a swarm member as the tracker sees it.
type PeerLoc struct {
	Addr    netip.AddrPort
	Machine string // "" when not a registered agent
	Rack    string // "" when unknown
	DC      string
	Origin  bool      // an origin seeder
	Seeder  bool      // announced it has the whole blob
	Since   time.Time // first announce for this blob
}

// Ranking decides which peers the tracker hands to an announcer.
//
// Rack-aware (the default), for an announcer in rack R of data center D:
//  1. every other member of R (in a per-announcer hash order, which spreads
//     load), up to the handout size;
//  2. if the announcer is one of R's gateways for this blob, CrossRack
//     gateways of other racks in D, then OtherDC gateways of other data
//     centers (or peers of unknown location);
//  3. the origin seeders, always, last.
//
// A rack's gateways are its Gateways earliest announcers of the blob: they
// are the only members that exchange data with other racks, so a blob
// crosses each rack uplink about once and the rest of the rack pulls it
// from inside (the origin stays reachable for every member, as a last
// resort). Earliest-first keeps the choice stable while members join.
//
// An announcer of unknown location gets everyone (hash order). Random hands
// out a hash-ordered sample regardless of location, for benchmarks.
type Ranking struct {
	CrossRack int  // other-rack peers of the same DC per gateway (0: 2; <0: none)
	OtherDC   int  // peers of other DCs or unknown location per gateway (0: 1; <0: none)
	Gateways  int  // gateways per rack and blob (0: 1)
	Random    bool // ignore location
}

// DefaultRanking is the rack-aware ranking with default quotas.
var DefaultRanking = Ranking{}

// RankPeers ranks with DefaultRanking.
func RankPeers(self PeerLoc, peers []PeerLoc, n int) []PeerLoc {
	return DefaultRanking.Rank(self, peers, n)
}

func quota(v, def int) int {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// Rank returns at most n peers (more only to include every origin), never
// self. It is a pure function of its arguments.
func (r Ranking) Rank(self PeerLoc, peers []PeerLoc, n int) []PeerLoc {
	crossQ, otherQ, gw := quota(r.CrossRack, 2), quota(r.OtherDC, 1), quota(r.Gateways, 1)
	var origins, rest []PeerLoc
	for _, p := range peers {
		if p.Addr == self.Addr || (self.Machine != "" && p.Machine == self.Machine) {
			continue
		}
		if p.Origin {
			origins = append(origins, p)
		} else {
			rest = append(rest, p)
		}
	}
	slots := max(n-len(origins), 0)
	byHash := func(ps []PeerLoc) {
		slices.SortStableFunc(ps, func(a, b PeerLoc) int { return cmp.Compare(pairHash(self, a), pairHash(self, b)) })
	}
	byHash(origins)
	if r.Random || self.Rack == "" {
		byHash(rest)
		return append(rest[:min(slots, len(rest))], origins...)
	}
	var same []PeerLoc
	racks := map[[2]string][]PeerLoc{} // other racks (and unknown locations, one "rack" each)
	for _, p := range rest {
		switch {
		case p.Rack == self.Rack && p.DC == self.DC:
			same = append(same, p)
		case p.Rack == "":
			racks[[2]string{"?", p.Addr.String()}] = []PeerLoc{p}
		default:
			k := [2]string{p.DC, p.Rack}
			racks[k] = append(racks[k], p)
		}
	}
	var cross, other []PeerLoc
	for k, members := range racks {
		for _, g := range gateways(members, gw) {
			if k[0] == self.DC {
				cross = append(cross, g)
			} else {
				other = append(other, g)
			}
		}
	}
	byHash(same)
	byHash(cross)
	byHash(other)
	crossN, otherN := 0, 0
	if isGateway(self, same, gw) {
		crossN = min(crossQ, len(cross), slots)
		otherN = min(otherQ, len(other), slots-crossN)
	}
	sameN := min(len(same), slots-crossN-otherN)
	out := make([]PeerLoc, 0, sameN+crossN+otherN+len(origins))
	out = append(out, same[:sameN]...)
	out = append(out, cross[:crossN]...)
	out = append(out, other[:otherN]...)
	return append(out, origins...)
}

// gateways returns the g earliest members of one rack.
func gateways(members []PeerLoc, g int) []PeerLoc {
	ms := slices.Clone(members)
	slices.SortFunc(ms, earliest)
	return ms[:min(g, len(ms))]
}

func isGateway(self PeerLoc, same []PeerLoc, g int) bool {
	earlier := 0
	for _, p := range same {
		if earliest(p, self) < 0 {
			earlier++
		}
	}
	return earlier < g
}

func earliest(a, b PeerLoc) int {
	if c := a.Since.Compare(b.Since); c != 0 {
		return c
	}
	return a.Addr.Compare(b.Addr)
}

func pairHash(self, p PeerLoc) uint64 {
	h := fnv.New64a()
	b, _ := self.Addr.MarshalBinary()
	h.Write(b)
	b, _ = p.Addr.MarshalBinary()
	h.Write(b)
	return h.Sum64()
}
