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
//  1. its neighbours in R's chain, then R's seeders (see rackNeighbours),
//     up to the handout size;
//  2. if the announcer is one of R's gateways for this blob, CrossRack
//     gateways of other racks in D, then OtherDC gateways of other data
//     centers (or peers of unknown location);
//  3. if the announcer is a gateway, the origin seeders, last.
//
// A rack's gateways are its Gateways earliest announcers of the blob: they
// are the only members that exchange data with other racks or the origin,
// so a blob crosses each rack uplink about once and the rest of the rack
// pulls it from inside. Earliest-first keeps the choice stable while
// members join; when a gateway leaves (stopped, or expired after 2x the
// announce interval) the next earliest member becomes the gateway and gets
// the origin on its next announce. A member that still stalls falls back to
// the web seed (Node.Fetch).
//
// The origin itself gets every rack's gateways (hash order). An announcer of
// unknown location gets everyone and the origin (hash order). Random hands
// out a hash-ordered sample and the origin regardless of location, for
// benchmarks.
type Ranking struct {
	CrossRack int  // other-rack peers of the same DC per gateway (0: 2, or none when an origin is handed out; <0: none)
	OtherDC   int  // peers of other DCs or unknown location per gateway (0: 1, or none when an origin is handed out; <0: none)
	Gateways  int  // gateways per rack and blob (0: 1)
	ChainSpan int  // chain neighbours on each side (0: 1; 2: also the members two hops away)
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

// Rank returns at most n peers (more only to include every origin, for a
// gateway), never self. It is a pure function of its arguments.
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
	if self.Origin && !r.Random {
		// The origin feeds the gateways only (they connect to it as well):
		// every rack gateway of its own data center, and only the DC
		// gateway of every other one (see dcGateway).
		var gws []PeerLoc
		byDC := map[string][]PeerLoc{}
		for k, g := range r.gatewaysByRack(rest, gw) {
			if self.DC == "" || k[0] == self.DC || k[0] == "?" {
				gws = append(gws, g...)
			} else {
				byDC[k[0]] = append(byDC[k[0]], g...)
			}
		}
		for _, g := range byDC {
			gws = append(gws, dcGateways(g, gw)...)
		}
		byHash(gws)
		return gws[:min(n, len(gws))]
	}
	if r.Random || self.Rack == "" {
		byHash(rest)
		return append(rest[:min(slots, len(rest))], origins...)
	}
	var same, others []PeerLoc
	for _, p := range rest {
		if p.Rack == self.Rack && p.DC == self.DC {
			same = append(same, p)
		} else {
			others = append(others, p)
		}
	}
	var cross, other []PeerLoc
	for k, gs := range r.gatewaysByRack(others, gw) {
		if k[0] == self.DC {
			cross = append(cross, gs...)
		} else {
			other = append(other, gs...)
		}
	}
	isGW := isGateway(self, same, gw)
	same = r.rackNeighbours(self, same, gw, max(r.ChainSpan, 1))
	byHash(cross)
	byHash(other)
	if !isGW {
		return same[:min(len(same), n)]
	}
	if remote := remoteOrigins(self, origins); remote {
		// No origin in our data center: only its DC gateway pulls from the
		// origin across the WAN, every other rack gateway of the DC pulls
		// from the DC gateway, so one copy crosses the WAN.
		if dgw := dcGateways(append(slices.Clone(cross), self), gw); !slices.ContainsFunc(dgw, func(p PeerLoc) bool { return p.Addr == self.Addr }) {
			sameN := min(len(same), max(n-len(dgw), 0))
			return append(same[:sameN:sameN], dgw...)
		}
		// We are a DC gateway: the origin, and the DC's other rack gateways
		// (they will connect to us anyway).
		sameN := min(len(same), slots)
		out := append(same[:sameN:sameN], cross[:min(len(cross), max(slots-sameN, 0))]...)
		return append(out, origins...)
	}
	if len(origins) > 0 && r.CrossRack == 0 && r.OtherDC == 0 {
		// Default quotas with an origin: it feeds every gateway, and a
		// gateway uploading to other racks' gateways starves its own chain
		// (and pulls extra copies across the uplinks).
		crossQ, otherQ = 0, 0
	}
	crossN := min(crossQ, len(cross), slots)
	otherN := min(otherQ, len(other), slots-crossN)
	sameN := min(len(same), slots-crossN-otherN)
	out := make([]PeerLoc, 0, sameN+crossN+otherN+len(origins))
	out = append(out, same[:sameN]...)
	out = append(out, cross[:crossN]...)
	out = append(out, other[:otherN]...)
	return append(out, origins...)
}

// rackNeighbours returns the announcer's neighbours in its rack's chains,
// then the rack's seeders. Members in announce order m0, m1, ... form g
// chains (m_i next to m_{i-g} and m_{i+g}; the gateways m_0..m_{g-1} head
// them). A chain sends every piece over each host link once: in a mesh,
// anacrolix v1.59.1 keeps up to ~1000 requests (15 MiB) outstanding per
// connection and serves them in random order, so every member asks the
// gateway for every piece it has and the gateway's uplink carries each
// piece once per member. Seeders (complete members) are extra sources.
func (r Ranking) rackNeighbours(self PeerLoc, same []PeerLoc, g, span int) []PeerLoc {
	members := append(slices.Clone(same), self)
	slices.SortFunc(members, earliest)
	pos := slices.IndexFunc(members, func(p PeerLoc) bool { return p.Addr == self.Addr })
	var out, seeders []PeerLoc
	for i, p := range members {
		switch {
		case i == pos:
		case (i-pos)%g == 0 && abs(i-pos) <= span*g:
			out = append(out, p)
		case p.Seeder:
			seeders = append(seeders, p)
		}
	}
	slices.SortStableFunc(seeders, func(a, b PeerLoc) int { return cmp.Compare(pairHash(self, a), pairHash(self, b)) })
	return append(out, seeders...)
}

// remoteOrigins reports whether the origins are known to sit in another
// data center than self (TrackerConfig.OriginDC).
func remoteOrigins(self PeerLoc, origins []PeerLoc) bool {
	if len(origins) == 0 || self.DC == "" {
		return false
	}
	for _, o := range origins {
		if o.DC == "" || o.DC == self.DC {
			return false
		}
	}
	return true
}

// dcGateways returns the g earliest of a data center's rack gateways: in a
// data center without an origin they alone talk to the origin.
func dcGateways(rackGateways []PeerLoc, g int) []PeerLoc {
	return gateways(rackGateways, g)
}

// gatewaysByRack groups peers by (DC, rack), a peer of unknown location
// being a rack of its own, and returns each rack's g gateways.
func (r Ranking) gatewaysByRack(peers []PeerLoc, g int) map[[2]string][]PeerLoc {
	racks := map[[2]string][]PeerLoc{}
	for _, p := range peers {
		k := [2]string{p.DC, p.Rack}
		if p.Rack == "" {
			k = [2]string{"?", p.Addr.String()}
		}
		racks[k] = append(racks[k], p)
	}
	for k, members := range racks {
		racks[k] = gateways(members, g)
	}
	return racks
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

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
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
