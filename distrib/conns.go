package distrib

import (
	"bytes"
	"slices"

	"github.com/anacrolix/torrent"
)

// dropDuplicateConns closes all but one connection to each peer of t. Both
// ends of a chain link dial each other (the tracker hands each to the
// other), and every re-announce dials the handed-out peers again, which
// v1.59.1 does not recognise as connected when the connection came in
// from another port. Kept, duplicates split one link's requests over two
// or three TCP flows: measured on the benchmark fabric, every host fell
// from 1.90 to ~1.65 MB/s after the first re-announce (60 s).
//
// Both ends may run this at once, so the rule picks the same survivor on
// both: a connection dialed by the peer with the smaller peer ID when
// there is one (both ends close those the larger dialed), else one dialed
// by the larger; only a connection's dialer thins several of its own to
// one (the end that accepted them cannot tell them apart). self is this
// client's peer ID. One end suffices, so a fetch running it covers every
// link that matters: to a complete peer or the origin, the fetching end
// does it. It returns the remote addresses of the connections it
// closed that no remaining connection shares (stallWatch.closing).
func dropDuplicateConns(t *torrent.Torrent, self torrent.PeerID) (gone []string) {
	byPeer := map[torrent.PeerID][]*torrent.PeerConn{}
	for _, pc := range t.PeerConns() {
		byPeer[pc.PeerID] = append(byPeer[pc.PeerID], pc)
	}
	for id, pcs := range byPeer {
		if len(pcs) < 2 || id == self {
			continue
		}
		var dialed, accepted []*torrent.PeerConn
		for _, pc := range pcs {
			if pc.Discovery == torrent.PeerSourceIncoming {
				accepted = append(accepted, pc)
			} else {
				dialed = append(dialed, pc)
			}
		}
		// Ours are dialed, theirs accepted. The survivor is one dialed by
		// the smaller ID, else one dialed by the larger.
		var drop []*torrent.PeerConn
		switch smaller := bytes.Compare(self[:], id[:]) < 0; {
		case smaller && len(dialed) > 0:
			drop = append(accepted, dialed[1:]...)
		case smaller:
			// All theirs: their dialer thins them.
		case len(accepted) > 0:
			drop = dialed
		default:
			drop = dialed[1:]
		}
		kept := map[string]bool{}
		for _, pc := range pcs {
			if !slices.Contains(drop, pc) {
				kept[pc.RemoteAddr.String()] = true
			}
		}
		for _, pc := range drop {
			_ = pc.Close() // always nil; the socket closes in the background
			if a := pc.RemoteAddr.String(); !kept[a] {
				gone = append(gone, a)
			}
		}
	}
	return gone
}
