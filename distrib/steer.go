package distrib

import (
	"math"
	"slices"
	"sync"
	"time"

	"github.com/anacrolix/missinggo/v2/pubsub"

	"github.com/anacrolix/torrent"
)

// DefaultRequestWindow is the least bytes of pieces a download asks for
// at once (rounded up to whole pieces, at least two; see steering): two
// 128 KiB pieces. The window grows to hold windowSpan of the download's
// measured rate (steering.adapt).
//
// Why a window: an anacrolix v1.59.1 uploader serves a connection's
// outstanding requests in map order, i.e. at random, and a downloader keeps
// up to ~960 requests (15 MiB) outstanding per connection. A 256 KiB piece
// (16 chunks) then completes only when the last of its chunks comes out of
// that random queue, and a piece can be passed on only when complete: at
// 2 MB/s a chain member ended ~6 s after its predecessor (measured: the
// first hop of a rack chain, gateway 18.3 s vs its successor 25.2 s for
// 32 MiB). With a window of a few pieces the queue is short and pieces
// complete in about window/rate, which is each hop's delay along a rack
// chain. Measured on the benchmark fabric (3 racks x 8 hosts, 16 Mbit/s
// hosts, 32 MiB): no window 31.2 s, 2 MiB 27.7 s, 1 MiB 26.0 s, 512 KiB
// 24.7 s for the last host (anacrolix's byte window, a busy machine); then
// with steering, one quiet run each, median host: 256 KiB pieces and a
// 512 KiB window 18.8-18.9 s, 128 KiB pieces 18.6-18.7 s, 128 KiB pieces
// and a 256 KiB window 18.1-18.2 s (64 KiB pieces gained nothing more and
// cost 1.15 cores instead of 0.9). The request depth itself
// (maxLocalToRemoteRequests, from the 32 KiB write buffer) and the serving
// order are constants of the library.
const DefaultRequestWindow = 256 << 10

// windowSpan is how long a download's window lasts at its own measured
// rate, at least: the window must stay above the bandwidth-delay product
// of the host's link, and a fixed one would cap a fast link (256 KiB is
// 500 MB/s at a 0.5 ms round trip). 128 ms at 2 MB/s is the 256 KiB
// default; at 1 GB/s it is 128 MiB.
const windowSpan = 128 * time.Millisecond

// steerEvery is how often a download re-applies its piece priorities: a
// piece a peer has just announced is requested at the latest this much
// later, at every hop of a rack chain (at 100 ms one 32 MiB run was 1.1 s
// slower, within the noise of a busy machine). A call is one pass over the pieces and a
// union of the peers' bitfields.
const steerEvery = 25 * time.Millisecond

// bookEvery is how often a download counts its bytes, watches for a stall
// and reports progress (BytesCompleted walks every piece: 4 % of the
// hosts' CPU when called every steer).
const bookEvery = 250 * time.Millisecond

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
	window           int   // pieces wanted at once (>= minWindow)
	minWindow        int   // the configured window, in pieces (>= 2; huge: no limit)
	pieceLength      int64 // bytes
	webseed          bool  // the web seed can send every piece
	// rotate >= 0 once the download re-routed beyond its rack (the origin
	// is likely gone and the data center exchanges as a mesh): pieces at or
	// after this host's offset, cyclic, come first. Index order is the same
	// on every host, so with a small window every host asked the same few
	// holders for the same pieces (measured: ~0.3 MB/s per host after the
	// origin died, with 23 peers each).
	rotate int

	// What the torrent told us, kept current from its piece state changes
	// (start), so that a steer reads no per-piece state from the library:
	// PieceStateRuns every 25 ms was 10 % of the CPU of 24 hosts on the
	// benchmark fabric (128 MiB, 512 pieces), the steer 14 % in all.
	changes           *pieceChanges
	complete, partial []bool
	set               []torrent.PiecePriority // what we last set (notSet: nothing yet)
	order             []int                   // scratch
	wanted            []bool                  // scratch
}

// newSteering steers a download of pieces of pieceLength with a window of
// windowBytes (at least two pieces; < 0: every sendable piece).
func newSteering(segBegin, segEnd int, pieceLength, windowBytes int64) *steering {
	w := unlimitedWindow
	if windowBytes >= 0 && pieceLength > 0 {
		w = int(max((windowBytes+pieceLength-1)/pieceLength, 2))
	}
	return &steering{segBegin: segBegin, segEnd: segEnd, window: w, minWindow: w, pieceLength: pieceLength, rotate: -1}
}

// adapt sizes the window to hold windowSpan of rate (the download's
// bytes per second, smoothed), never below the configured window. The
// window limits the rate to about window/RTT, so on a link whose round
// trip is shorter than windowSpan the measured rate, and with it the
// window, grows until the link is full.
func (s *steering) adapt(rate float64) {
	if s.minWindow >= unlimitedWindow || s.pieceLength <= 0 || rate <= 0 {
		return
	}
	want := int(math.Ceil(rate * windowSpan.Seconds() / float64(s.pieceLength)))
	s.window = min(max(s.minWindow, want), unlimitedWindow)
}

// start reads the torrent's piece states once and follows their changes
// from then on; stop with the returned function.
func (s *steering) start(t *torrent.Torrent) (stop func()) {
	s.changes = followPieces(t)
	n := t.NumPieces()
	s.complete, s.partial = make([]bool, n), make([]bool, n)
	s.set, s.wanted = slices.Repeat([]torrent.PiecePriority{notSet}, n), make([]bool, n)
	i := 0
	for _, run := range t.PieceStateRuns() {
		for range run.Length {
			if i < n {
				s.complete[i], s.partial[i] = run.Complete, run.Partial
			}
			i++
		}
	}
	return s.changes.stop
}

// drain re-reads the pieces whose state changed since the last call. A
// change only names the piece: its state is read now, so that a change
// published before start read the states cannot undo a newer one.
func (s *steering) drain(t *torrent.Torrent) {
	for _, i := range s.changes.take() {
		if i >= 0 && i < len(s.complete) {
			ps := t.PieceState(i)
			s.complete[i], s.partial[i] = ps.Complete, ps.Partial
		}
	}
}

// pieceChanges collects the indexes of a torrent's changed pieces. Its
// goroutine owns the subscription; take hands over what it collected.
// (Receiving the subscription's channel without blocking from the steer
// instead got about one change per 25 ms tick: the library's pubsub hands
// values over one at a time through an unbuffered channel, and the steer
// fell behind by seconds: a rack chain 20 % slower.)
type pieceChanges struct {
	sub *pubsub.Subscription[torrent.PieceStateChange]
	// completed receives (without blocking, capacity one) when a piece
	// completes: the fetch loop steers at once instead of at its next tick,
	// so the window refills while the last chunks of the others arrive.
	completed chan struct{}
	mu        sync.Mutex
	seen      map[int]bool
}

func followPieces(t *torrent.Torrent) *pieceChanges {
	c := &pieceChanges{sub: t.SubscribePieceStateChanges(), completed: make(chan struct{}, 1), seen: map[int]bool{}}
	go func() {
		for ch := range c.sub.Values {
			c.mu.Lock()
			c.seen[ch.Index] = true
			c.mu.Unlock()
			if ch.Complete {
				select {
				case c.completed <- struct{}{}:
				default:
				}
			}
		}
	}()
	return c
}

// take returns the pieces changed since the last take.
func (c *pieceChanges) take() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]int, 0, len(c.seen))
	for i := range c.seen {
		out = append(out, i)
	}
	clear(c.seen)
	return out
}

// stop ends the subscription (its goroutine ends with it).
func (c *pieceChanges) stop() { c.sub.Close() }

// steer applies the rule for the current connections (call it often: a
// piece a peer just got is wanted only from the next call on). Call start
// first.
func (s *steering) steer(t *torrent.Torrent) {
	s.drain(t)
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
	n := len(s.complete)
	sendable := func(i int) bool { return s.webseed || (union != nil && union.Contains(uint32(i))) }
	// Candidates in preference order: partial, then preferred, then the rest.
	order := s.order[:0]
	clear(s.wanted)
	add := func(pred func(int) bool) {
		for k := range n {
			j := k
			if s.rotate >= 0 {
				j = (s.rotate + k) % n
			}
			if !s.complete[j] && !s.wanted[j] && sendable(j) && pred(j) {
				order = append(order, j)
				s.wanted[j] = true
				if len(order) >= s.window {
					return
				}
			}
		}
	}
	add(func(j int) bool { return s.partial[j] })
	if len(order) < s.window && s.rotate < 0 && s.segEnd > s.segBegin {
		add(func(j int) bool { return j >= s.segBegin && j < s.segEnd })
	}
	if len(order) < s.window {
		add(func(int) bool { return true })
	}
	s.order = order
	if len(order) == 0 {
		for j := range n {
			if !s.complete[j] {
				s.wanted[j] = true // keep wanting peers
				break
			}
		}
	}
	for j := range n {
		if s.complete[j] {
			continue
		}
		p := torrent.PiecePriorityNone
		if s.wanted[j] {
			p = torrent.PiecePriorityNormal
		}
		s.apply(t, j, p)
	}
}

// unlimitedWindow is a window of every sendable piece.
const unlimitedWindow = 1 << 30

// notSet marks a piece whose priority steering has not set yet (above
// every priority the library defines).
const notSet torrent.PiecePriority = 255

// offered reports whether, at the last steer, a connected peer (or the web
// seed) could send a piece this download lacks.
func (s *steering) offered() bool { return len(s.order) > 0 }

// recover switches to the per-host rotated order (see rotate), from
// offset on.
func (s *steering) recover(offset int) {
	if s.rotate < 0 {
		s.rotate = max(offset, 0)
	}
}

func (s *steering) apply(t *torrent.Torrent, i int, p torrent.PiecePriority) {
	if s.set[i] == p {
		return
	}
	s.set[i] = p
	t.Piece(i).SetPriority(p)
}
