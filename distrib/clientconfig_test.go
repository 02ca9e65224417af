package distrib

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
)

// Two peers that dial each other, twice (both ends get each other from the
// tracker, and every re-announce hands the same peers out again), keep one
// connection: duplicates split one link's requests over several flows.
func TestOneConnectionPerPeer(t *testing.T) {
	var cls [2]*client
	var tors [2]*torrent.Torrent
	ih := metainfo.Hash{1, 2, 3}
	for i := range cls {
		cl, err := newClient(clientOptions{ListenAddr: "127.0.0.1:0", Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		tor, _ := cl.AddTorrentInfoHash(ih) // no info: both want peers for metadata
		cls[i], tors[i] = cl, tor
	}
	for round := range 2 {
		for i, tor := range tors {
			other := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(cls[1-i].LocalPort()))
			tor.AddPeers([]torrent.PeerInfo{{Addr: net.TCPAddrFromAddrPort(other), Source: torrent.PeerSourceTracker, Trusted: true}})
		}
		// Every dial has ended (added or refused, under the client lock
		// together) once neither side has one half-open.
		deadline := time.Now().Add(10 * time.Second)
		for {
			s0, s1 := tors[0].Stats(), tors[1].Stats()
			c0, c1 := tors[0].PeerConns(), tors[1].PeerConns()
			if s0.HalfOpenPeers == 0 && s1.HalfOpenPeers == 0 && len(c0) > 0 && len(c1) > 0 {
				if len(c0) != 1 || len(c1) != 1 {
					t.Fatalf("round %d: %d and %d connections, want one each", round, len(c0), len(c1))
				}
				// One connection has one dialer: the other end accepted it.
				if in0, in1 := c0[0].Discovery == torrent.PeerSourceIncoming, c1[0].Discovery == torrent.PeerSourceIncoming; in0 == in1 {
					t.Fatalf("round %d: the two ends kept different connections (accepted: %v, %v)", round, in0, in1)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: no connection within 10s (half-open %d, %d)", round, s0.HalfOpenPeers, s1.HalfOpenPeers)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
