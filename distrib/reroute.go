package distrib

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
)

// DefaultRerouteAfter is how long a download may make no progress, after
// losing a peer, before the node looks for other sources (see reroute). A
// killed peer's sockets close at once, so the loss is seen at the next tick;
// the second is what a live predecessor may pause (measured pauses along a
// healthy chain: well under 1 s at 16 Mbit/s).
const DefaultRerouteAfter = time.Second

// stalledParam marks an announce from a node whose sources went away: the
// tracker then probes the announcer's rack and forgets members that no
// longer accept connections before it ranks (Tracker.ServeHTTP).
const stalledParam = "dcroll_stalled"

// announceTimeout bounds one out-of-band announce; the tracker's probes take
// at most probeTimeout of it.
const announceTimeout = 2 * time.Second

// Reroute levels: what the node adds when its download stalls. Each level
// is tried once per stall, 2 x RerouteAfter apart, until bytes flow again.
const (
	levelTracker    = iota // re-announce as stalled: the tracker drops dead members and re-ranks
	levelRack              // every member of our rack from the rack map (tracker unreachable, or it had nothing new)
	levelRecovering        // join the blob's recovering set: trade with the other hosts that lost the origin (see recovery)
	levelDC                // every agent of our data center (the set had nothing either, or no ZooKeeper)
	levelAll               // every registered agent
)

// stallWatch decides when a fetch re-routes. A chain member legitimately
// waits for its predecessor's next piece, and at the start of a rollout
// every non-gateway waits for the first piece to come down the chain, so
// silence alone is not a reason. It re-routes when a peer it had went away
// and then nothing arrived for RerouteAfter, or for RerouteAfter/2 when no
// remaining peer has a piece it lacks (a dead predecessor or gateway: the
// killed process's sockets close at once, and its successor has nothing
// else to wait for). Without a lost peer it re-routes when nothing arrived
// for 3 x RerouteAfter although a peer has pieces it lacks (a frozen peer;
// also before the first byte: in one benchmark run a rack's chain got no
// byte for 24 s, until the web seed, cause unknown),
// or for 6 x RerouteAfter when none has (starved: everyone downstream of a
// dead chain member waits for the chain to heal upstream; re-routing them
// all made the rack a mesh, measured at 1.5 instead of 1.9 MiB/s per host
// for the rest of the blob). Levels escalate while the stall lasts, one per
// 2 x RerouteAfter: a new source needs a connection, a handshake and an
// unchoke before its first bytes. Two causes skip levels: a starved host
// re-announces once and then waits (its chain is alive; adding the rack
// made it a mesh: after the origin died, every gateway's upload went to all
// seven members, 0.3 MB/s per host), and a host that lost a source beyond
// its rack (the origin, another rack's gateway) skips the rack, which has
// nothing that source had.
type stallWatch struct {
	after        time.Duration
	inRack       func(addr string) bool // whether a peer is a member of our rack (nil: all are)
	peers        map[string]bool        // remote addresses of the last tick's connections
	closing      map[string]int         // connections we closed ourselves: their going is no loss, once each
	lostAt       time.Time              // a connection went away (zero: none since the last progress)
	lostBeyond   bool                   // ... and one of them was not of our rack
	lastProgress time.Time
	lastReroute  time.Time
	level        int
	// fallback is the level to run, for the stall observe last answered,
	// when no tracker answers the re-announce (-1: none, wait).
	fallback int
}

// stallTick is what a fetch saw since the last observation.
type stallTick struct {
	conns      []string // remote addresses of the connections now
	progressed bool     // bytes arrived
	started    bool     // the download has any bytes
	offered    bool     // a connected peer has a piece we lack (steering.offered)
}

func newStallWatch(after time.Duration, now time.Time, inRack func(string) bool) *stallWatch {
	return &stallWatch{after: after, inRack: inRack, peers: map[string]bool{}, closing: map[string]int{}, lastProgress: now, fallback: -1}
}

// closed records connections the node closed itself (duplicates): their
// disappearing is not a lost peer.
func (w *stallWatch) closed(addrs []string) {
	for _, a := range addrs {
		w.closing[a]++
	}
}

// observe records the tick's connections and progress; it returns the
// reroute level to run now, or -1.
func (w *stallWatch) observe(now time.Time, tk stallTick) int {
	cur := make(map[string]bool, len(tk.conns))
	for _, c := range tk.conns {
		cur[c] = true
	}
	lostNow, beyondNow := false, false
	for c := range w.peers {
		if !cur[c] && w.closing[c] > 0 {
			w.closing[c]--
			continue
		}
		if !cur[c] {
			lostNow = true
			beyondNow = beyondNow || (w.inRack != nil && !w.inRack(c))
		}
	}
	for c := range w.closing {
		if !cur[c] {
			delete(w.closing, c) // gone (consumed above) or never seen
		}
	}
	w.peers = cur
	if tk.progressed {
		// The level stays: peers added at a level stay connected, and a
		// download that only trickles after the origin died (0.1-0.3 MB/s
		// from its rack) must still get to its data center's peers
		// (measured: resetting here kept every host at the rack level and
		// the fleet needed 126 s for 32 MiB). A peer lost in this tick is
		// still lost: its bytes came before it went (forgetting it made
		// every successor of a killed chain member wait 6 s, not 0.5 s).
		w.lastProgress, w.lostAt, w.lostBeyond = now, time.Time{}, false
		if lostNow {
			w.lostAt, w.lostBeyond = now, beyondNow
		}
		return -1
	}
	if lostNow {
		if w.lostAt.IsZero() {
			w.lostAt = now
		}
		w.lostBeyond = w.lostBeyond || beyondNow
	}
	quiet := now.Sub(w.lastProgress)
	lost := !w.lostAt.IsZero() && (quiet >= w.after || (!tk.offered && quiet >= w.after/2))
	frozen := tk.offered && quiet >= 3*w.after // also before the first byte
	starved := tk.started && quiet >= 6*w.after
	if !lost && !frozen && !starved {
		return -1
	}
	if !w.lastReroute.IsZero() && now.Sub(w.lastReroute) < 2*w.after {
		return -1
	}
	lv := w.level
	switch {
	case !lost && !frozen:
		// Starved: re-announce (the tracker may know better), then wait.
		if lv > levelTracker {
			return -1
		}
		w.fallback = -1
	case lost && w.lostBeyond:
		if lv == levelRack {
			lv = levelRecovering
		}
		w.fallback = levelRecovering
	default:
		w.fallback = levelRack
	}
	w.lastReroute = now
	w.level = min(lv+1, levelAll)
	return lv
}

// ran records that a re-route ran level (reroute may run a higher one than
// observe asked for: with no tracker answering it goes to the rack map at
// once), so the next starts above it.
func (w *stallWatch) ran(level int) {
	w.level = max(w.level, min(level+1, levelAll))
}

// inRack reports whether a connection's remote address is a member of
// this node's rack (stallWatch.inRack). Without a rack of its own every
// peer is.
func (n *Node) inRack(addr string) bool {
	self, ok := n.racks.Machine(n.cfg.Machine)
	if !ok || self.Rack == "" {
		return true
	}
	ap, err := netip.ParseAddrPort(addr)
	return err != nil || n.racks.InRack(ap, self.DC, self.Rack)
}

// peerConnAddrs lists the remote addresses of t's BitTorrent connections.
func peerConnAddrs(t *torrent.Torrent) []string {
	var out []string
	for _, pc := range t.PeerConns() {
		if pc.RemoteAddr != nil {
			out = append(out, pc.RemoteAddr.String())
		}
	}
	return out
}

// reroute adds sources for a stalled download. Level levelTracker
// re-announces to every tracker of the blob with the stalled flag; when no
// tracker answers (the origin, which runs it, is gone) it runs fallback at
// once (< 0: nothing). levelRecovering joins rec (its members are added as they
// come). Returns the level it ran.
func (n *Node) reroute(ctx context.Context, t *torrent.Torrent, ct *checkedTorrent, trackers []string, rec *recovery, level, fallback int) int {
	if level == levelTracker {
		var peers []netip.AddrPort
		var errs []error
		for _, tr := range trackers {
			ps, err := n.announceStalled(ctx, tr, ct.infoHash, t.BytesMissing())
			if err != nil {
				errs = append(errs, err)
				continue
			}
			peers = append(peers, ps...)
		}
		if len(trackers) > 0 && len(errs) < len(trackers) {
			added := n.addPeers(t, peers)
			n.log.Info("stalled: re-announced", "blob", IDOf(ct.hex), "peers", len(peers), "added", added)
			return level
		}
		if fallback < 0 {
			n.log.Info("stalled and no tracker answered; waiting for the rack's chain", "blob", IDOf(ct.hex), "err", errors.Join(errs...))
			return levelTracker
		}
		n.log.Warn("stalled and no tracker answered; using the rack map", "blob", IDOf(ct.hex), "level", levelName(fallback), "err", errors.Join(errs...))
		level = fallback
	}
	if level == levelRecovering {
		err := rec.join(ctx)
		if err == nil {
			n.log.Info("stalled beyond the rack: joined the blob's recovering set", "blob", IDOf(ct.hex))
			return level // its members come from the set's watch (fetch)
		}
		n.log.Warn("cannot join the blob's recovering set; adding the data center's agents", "blob", IDOf(ct.hex), "err", err)
		level = levelDC
	}
	peers := n.mapPeers(level)
	added := n.addPeers(t, peers)
	n.log.Info("stalled: adding peers from the rack map", "blob", IDOf(ct.hex), "level", levelName(level), "peers", len(peers), "added", added)
	return level
}

func levelName(l int) string {
	switch l {
	case levelTracker:
		return "tracker"
	case levelRack:
		return "rack"
	case levelRecovering:
		return "recovering"
	case levelDC:
		return "dc"
	}
	return "all"
}

// mapPeers returns the registered agents of our rack (levelRack), data
// center (levelDC) or all of them, never ourselves.
func (n *Node) mapPeers(level int) []netip.AddrPort {
	self, ok := n.racks.Machine(n.cfg.Machine)
	var out []netip.AddrPort
	for _, a := range n.racks.agents() {
		if a.Machine == n.cfg.Machine {
			continue
		}
		switch {
		case !ok || level >= levelAll:
		case level == levelRack && (a.DC != self.DC || a.Rack != self.Rack):
			continue
		case level == levelDC && a.DC != self.DC:
			continue
		}
		if ap, err := netip.ParseAddrPort(a.PeerAddr); err == nil {
			out = append(out, ap)
		}
	}
	return out
}

// addPeers hands addresses to the client (it skips those it is connected
// to or already trying).
func (n *Node) addPeers(t *torrent.Torrent, peers []netip.AddrPort) int {
	var pis []torrent.PeerInfo
	for _, p := range peers {
		if p.String() == n.peerAddr {
			continue
		}
		pis = append(pis, torrent.PeerInfo{Addr: net.TCPAddrFromAddrPort(p), Source: torrent.PeerSourceTracker, Trusted: true})
	}
	if len(pis) == 0 {
		return 0
	}
	return t.AddPeers(pis)
}

// announceStalled is an out-of-band announce (anacrolix v1.59.1 has no
// "announce now", and clamps the interval to >= 60 s): the same request
// the client sends, plus stalledParam. It goes out from the node's own IP,
// so the tracker identifies the announcer as usual.
func (n *Node) announceStalled(ctx context.Context, tracker string, ih metainfo.Hash, left int64) ([]netip.AddrPort, error) {
	u, err := url.Parse(tracker)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("announce %s: not an HTTP tracker", tracker)
	}
	_, port, err := net.SplitHostPort(n.peerAddr)
	if err != nil {
		return nil, fmt.Errorf("announce %s: own address %q: %w", tracker, n.peerAddr, err)
	}
	id := n.cl.PeerID()
	q := u.Query()
	q.Set("info_hash", string(ih[:]))
	q.Set("peer_id", string(id[:]))
	q.Set("port", port)
	q.Set("uploaded", "0")
	q.Set("downloaded", "0")
	q.Set("left", strconv.FormatInt(left, 10))
	q.Set("compact", "1")
	q.Set(stalledParam, "1")
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(ctx, announceTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("announce %s: %w", tracker, err)
	}
	resp, err := n.httpc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("announce %s: %w", tracker, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("announce %s: read: %w", tracker, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("announce %s: %s", tracker, resp.Status)
	}
	var ans struct {
		Failure string `bencode:"failure reason"`
		Peers   string `bencode:"peers"`
	}
	if err := bencode.Unmarshal(body, &ans); err != nil {
		return nil, fmt.Errorf("announce %s: decode answer: %w", tracker, err)
	}
	if ans.Failure != "" {
		return nil, fmt.Errorf("announce %s: %s", tracker, ans.Failure)
	}
	return parseCompact4(ans.Peers), nil
}

// parseCompact4 decodes BEP 23 compact IPv4 peers.
func parseCompact4(s string) []netip.AddrPort {
	var out []netip.AddrPort
	for i := 0; i+6 <= len(s); i += 6 {
		ip := netip.AddrFrom4([4]byte{s[i], s[i+1], s[i+2], s[i+3]})
		out = append(out, netip.AddrPortFrom(ip, uint16(s[i+4])<<8|uint16(s[i+5])))
	}
	return out
}

// spreadSegment returns this rack's share of the pieces, [begin, end):
// rack k of the R racks of our data center (sorted by name) fetches pieces
// [k/R, (k+1)/R) of the blob first, then the rest. In a no-fault run that
// changes nothing (each gateway still pulls every piece from the origin at
// its link rate), but the racks hold different pieces early, so when the
// origin dies half way the fleet as a whole holds every piece long before
// any one rack does, and can finish from itself. Without it every gateway
// asks the origin for the same pieces in index order.
func (n *Node) spreadSegment(numPieces int) (int, int) {
	self, ok := n.racks.Machine(n.cfg.Machine)
	if !ok || self.Rack == "" {
		return 0, 0
	}
	var racks []string
	for _, a := range n.racks.agents() {
		if a.DC == self.DC && a.Rack != "" && !slices.Contains(racks, a.Rack) {
			racks = append(racks, a.Rack)
		}
	}
	slices.Sort(racks)
	k := slices.Index(racks, self.Rack)
	if len(racks) < 2 || k < 0 {
		return 0, 0
	}
	return k * numPieces / len(racks), (k + 1) * numPieces / len(racks)
}

// pieceOffset spreads hosts over the pieces (steering.recover).
func pieceOffset(machine string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(machine)) // hash.Hash never fails
	return h.Sum64()
}

// boundDialer dials from the IP of listenAddr (nil when it is unspecified).
func boundDialer(listenAddr string) *net.Dialer {
	host, _, err := net.SplitHostPort(listenAddr)
	if err != nil {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.IsUnspecified() {
		return nil
	}
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip.AsSlice()}, Timeout: dialTimeout}
}

// announceURLs lists the blob's HTTP trackers: the metainfo's, then the
// published ones, without duplicates.
func announceURLs(mi *metainfo.MetaInfo, published []string) []string {
	var out []string
	add := func(u string) {
		if u != "" && !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	add(mi.Announce)
	for _, tier := range mi.AnnounceList {
		for _, u := range tier {
			add(u)
		}
	}
	for _, u := range published {
		add(u)
	}
	return out
}
