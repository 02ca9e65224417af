package distrib

import (
	"slices"
	"time"

	"github.com/anacrolix/torrent"
)

// DefaultRequestWindow is the bytes of pieces a download asks for at once
// (rounded up to whole pieces, at least two; see steering): two 256 KiB
// pieces.
//
// Why a window: an anacrolix v1.59.1 uploader serves a connection's
// outstanding requests in map order, i.e. at random, and a downloader keeps
// up to ~960 requests (15 MiB) outstanding per connection. A 256 KiB piece
// (16 chunks) then completes only when the last of its chunks comes out of
// that random queue, and a piece can be passed on only when complete: at
// 2 MB/s a chain member ended ~6 s after its predecessor (measured: the
// first hop of a rack chain, gateway 18.3 s vs its successor 25.2 s for
// 32 MiB). With a window of a few pieces the queue is short and pieces
// complete in about window/rate. Measured on the benchmark fabric (3 racks
// x 8 hosts, 16 Mbit/s hosts, 32 MiB, one run each on a busy machine, with
// anacrolix's byte window before steering kept its own): no window 31.2 s,
// 2 MiB 27.7 s, 1 MiB 26.0 s, 512 KiB 24.7 s for the last host. The window must stay above the bandwidth-delay product of a
// host's link (512 KiB: 1 GB/s at a 0.5 ms data-center RTT, 200 Mbit/s at
// 20 ms). The request depth itself (maxLocalToRemoteRequests, from the
// 32 KiB write buffer) and the serving order are constants of the library.
const DefaultRequestWindow = 512 << 10

// steerEvery is how often a download re-applies its piece priorities: a
// piece a peer has just announced is requested at the latest this much
// later, at every hop of a rack chain (at 100 ms one 32 MiB run was 1.1 s
// slower, within the noise of a busy machine). A call is one pass over the pieces and a
// union of the peers' bitfields.
const steerEvery = 25 * time.Millisecond

// steering is the request window of one download. It wants (priority >
// none) only the first window pieces that some connected peer (or,
// after the web seed fallback, the web seed) can send, in this order:
// partly downloaded first, then the rack's spread segment
// (Node.spreadSegment) or, once recovering, this host's rotation, then
// index. Every other piece is "none" until it moves into the window. When
// nothing can be sent it wants the first missing piece, so that the torrent
// keeps looking for peers (a torrent that wants nothing stops; measured:
// every host stalled at 0 bytes).
//
// Why not anacrolix's own window (MaxUnverifiedBytes): it counts every
// wanted piece in its order (priority, partial, availability rarest-first,
// index), including pieces nobody connected has, which sort first
// (availability 0), so with a small window a host never asked its rack
// peers for what they had; and it is one byte count per client, so with
// 1 MiB pieces a 512 KiB window held a single piece and three nodes in a
// test stopped for good on it (TestPublishAndFetchThreeNodes, 2 of 5 runs).
// Counting whole pieces per download avoids both.
type steering struct {
	segBegin, segEnd int
	window           int                           // pieces wanted at once (>= 2)
	set              map[int]torrent.PiecePriority // what we last set
	webseed          bool                          // the web seed can send every piece
	// rotate >= 0 once the download re-routed beyond its rack (the origin
	// is likely gone and the data center exchanges as a mesh): pieces at or
	// after this host's offset, cyclic, come first. Index order is the same
	// on every host, so with a small window every host asked the same few
	// holders for the same pieces (measured: ~0.3 MB/s per host after the
	// origin died, with 23 peers each).
	rotate int
}

// newSteering steers a download of pieces of pieceLength with a window of
// windowBytes (at least two pieces; < 0: every sendable piece).
func newSteering(segBegin, segEnd int, pieceLength, windowBytes int64) *steering {
	w := 1 << 30
	if windowBytes >= 0 && pieceLength > 0 {
		w = int(max((windowBytes+pieceLength-1)/pieceLength, 2))
	}
	return &steering{segBegin: segBegin, segEnd: segEnd, window: w, set: map[int]torrent.PiecePriority{}, rotate: -1}
}

// steer applies the rule for the current connections (call it often: a
// piece a peer just got is wanted only from the next call on).
func (s *steering) steer(t *torrent.Torrent) {
	pcs := t.PeerConns()
	var union interface {
		Contains(uint32) bool
	}
	if len(pcs) > 0 {
		u := pcs[0].PeerPieces()
		for _, pc := range pcs[1:] {
			u.Or(pc.PeerPieces())
		}
		union = u
	}
	n := t.NumPieces()
	complete := make([]bool, n)
	partial := make([]bool, n)
	i := 0
	for _, run := range t.PieceStateRuns() {
		for range run.Length {
			if i < n {
				complete[i], partial[i] = run.Complete, run.Partial
			}
			i++
		}
	}
	sendable := func(i int) bool { return s.webseed || (union != nil && union.Contains(uint32(i))) }
	// Candidates in preference order: partial, then preferred, then the rest.
	var order []int
	add := func(pred func(int) bool) {
		for k := range n {
			j := k
			if s.rotate >= 0 {
				j = (s.rotate + k) % n
			}
			if !complete[j] && sendable(j) && pred(j) && !slices.Contains(order, j) {
				order = append(order, j)
				if len(order) >= s.window {
					return
				}
			}
		}
	}
	add(func(j int) bool { return partial[j] })
	if len(order) < s.window && s.rotate < 0 && s.segEnd > s.segBegin {
		add(func(j int) bool { return j >= s.segBegin && j < s.segEnd })
	}
	if len(order) < s.window {
		add(func(int) bool { return true })
	}
	wanted := make(map[int]bool, len(order))
	for _, j := range order {
		wanted[j] = true
	}
	if len(order) == 0 {
		for j := range n {
			if !complete[j] {
				wanted[j] = true // keep wanting peers
				break
			}
		}
	}
	for j := range n {
		if complete[j] {
			continue
		}
		p := torrent.PiecePriorityNone
		if wanted[j] {
			p = torrent.PiecePriorityNormal
		}
		s.apply(t, j, p)
	}
}

// recover switches to the per-host rotated order (see rotate), from
// offset on.
func (s *steering) recover(offset int) {
	if s.rotate < 0 {
		s.rotate = max(offset, 0)
	}
}

func (s *steering) apply(t *torrent.Torrent, i int, p torrent.PiecePriority) {
	if cur, ok := s.set[i]; ok && cur == p {
		return
	}
	s.set[i] = p
	t.Piece(i).SetPriority(p)
}
