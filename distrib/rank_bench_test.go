package distrib

import (
	"fmt"
	"testing"
)

// BenchmarkRankPeers ranks 3 racks x 100 peers for one announce: the
// tracker's per-announce work.
func BenchmarkRankPeers(b *testing.B) {
	var peers []PeerLoc
	for r := range 3 {
		for h := range 100 {
			peers = append(peers, loc(fmt.Sprintf("10.0.%d.%d:6881", r+1, h+1), fmt.Sprintf("r%d-h%d", r, h), fmt.Sprintf("r%d", r), "dc1", r*100+h))
		}
	}
	self := peers[150]
	b.ReportAllocs()
	for b.Loop() {
		_ = RankPeers(self, peers, 10)
	}
}
