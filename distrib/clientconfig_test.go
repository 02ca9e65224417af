package distrib

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"

	"dcroll/integration/zktest"
)

// heldListener hands accepted connections over only once release is
// closed, so that when two clients dial each other both handshakes run at
// the same time at both ends, as across a loaded fabric.
type heldListener struct {
	net.Listener
	accepted chan<- struct{} // one send per accepted connection (buffered)
	release  <-chan struct{}
}

func (l heldListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		select {
		case l.accepted <- struct{}{}:
		default:
		}
		<-l.release
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
			accepted, release := make(chan struct{}, 8), make(chan struct{})
			held := func(ln net.Listener) net.Listener { return heldListener{ln, accepted, release} }
			releaseAll := sync.OnceFunc(func() { close(release) })
			ih := metainfo.Hash{1, 2, 3, byte(pair)}
			for i := range cls {
				cl, err := newClient(clientOptions{ListenAddr: "127.0.0.1:0", Logger: testLogger(), wrapListener: held})
				if err != nil {
					t.Fatal(err)
				}
				defer cl.Close()
				tor, _ := cl.AddTorrentInfoHash(ih) // no info: both want peers for metadata
				cls[i], tors[i] = cl, tor
			}
			defer releaseAll() // runs before the clients close, also on failure
			for round := range 2 {
				for i, tor := range tors {
					other := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(cls[1-i].LocalPort()))
					tor.AddPeers([]torrent.PeerInfo{{Addr: net.TCPAddrFromAddrPort(other), Source: torrent.PeerSourceTracker, Trusted: true}})
				}
				if round == 0 {
					for range 2 { // both dials are in (one per listener): now handshake together
						select {
						case <-accepted:
						case <-time.After(10 * time.Second):
							t.Fatal("the two clients did not dial each other within 10s")
						}
					}
					releaseAll()
				}
				zktest.WaitFor(t, 10*time.Second, fmt.Sprintf("round %d: the same one connection at both ends", round), func() (bool, error) {
					for i, tor := range tors {
						dropDuplicateConns(tor, cls[i].PeerID())
					}
					s0, s1 := tors[0].Stats(), tors[1].Stats()
					c0, c1 := tors[0].PeerConns(), tors[1].PeerConns()
					// One connection has one dialer: the other end accepted it.
					return s0.HalfOpenPeers == 0 && s1.HalfOpenPeers == 0 && len(c0) == 1 && len(c1) == 1 &&
						(c0[0].Discovery == torrent.PeerSourceIncoming) != (c1[0].Discovery == torrent.PeerSourceIncoming), nil
				})
			}
		})
	}
}
