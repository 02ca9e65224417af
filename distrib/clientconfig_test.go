package distrib

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
)

// slowAccept hands accepted connections over 50 ms late, so that when two
// clients dial each other at once both handshakes complete at about the
// same time at both ends, as across a loaded fabric.
func slowAccept(ln net.Listener) net.Listener { return slowListener{ln} }

type slowListener struct{ net.Listener }

func (l slowListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		time.Sleep(50 * time.Millisecond) // the delay under test, not a wait for state
	}
	return c, err
}

// Two peers that dial each other at the same moment (both got the other
// from the tracker), and again (a re-announce hands the same peers out),
// end with one connection, the same one at both ends, when both run
// dropDuplicateConns: never none (both ends closing different ones), never
// two. Without dropDuplicateConns it fails: both ends keep two.
func TestOneConnectionPerPeer(t *testing.T) {
	for pair := range 10 {
		t.Run(fmt.Sprint("pair", pair), func(t *testing.T) {
			var cls [2]*client
			var tors [2]*torrent.Torrent
			ih := metainfo.Hash{1, 2, 3, byte(pair)}
			for i := range cls {
				cl, err := newClient(clientOptions{ListenAddr: "127.0.0.1:0", Logger: testLogger(), wrapListener: slowAccept})
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
				deadline := time.Now().Add(10 * time.Second)
				for {
					for i, tor := range tors {
						dropDuplicateConns(tor, cls[i].PeerID())
					}
					s0, s1 := tors[0].Stats(), tors[1].Stats()
					c0, c1 := tors[0].PeerConns(), tors[1].PeerConns()
					// One connection has one dialer: the other end accepted it.
					if s0.HalfOpenPeers == 0 && s1.HalfOpenPeers == 0 && len(c0) == 1 && len(c1) == 1 &&
						(c0[0].Discovery == torrent.PeerSourceIncoming) != (c1[0].Discovery == torrent.PeerSourceIncoming) {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("round %d: %d and %d connections (half-open %d, %d), want the same one at both ends",
							round, len(c0), len(c1), s0.HalfOpenPeers, s1.HalfOpenPeers)
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
		})
	}
}
