package distrib

import (
	"context"
	"encoding/hex"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/anacrolix/generics"
	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/tracker"
	trackerServer "github.com/anacrolix/torrent/tracker/server"
	"github.com/anacrolix/torrent/tracker/udp"
)

// DefaultMaxPeers is the handout size: Kraken keeps about 10 connections
// per torrent, enough to spread pieces and small enough that a rack's
// members fill it before peers from elsewhere do.
const DefaultMaxPeers = 10

// TrackerConfig configures NewTracker.
type TrackerConfig struct {
	// Racks locates announcers and peers (nil: every location is unknown).
	Racks *RackMap
	// Origins are the origin seeders' BitTorrent addresses: handed, last,
	// to each rack's gateways (see Ranking) whether or not they announced.
	Origins []netip.AddrPort
	// OriginDC is the data center of the origins ("" unknown). With it, a
	// data center without an origin gets the origin through one DC gateway
	// only, so one copy crosses the WAN (see Ranking.Rank).
	OriginDC string
	// MaxPeers per answer (default DefaultMaxPeers; origins come on top).
	MaxPeers int
	// Ranking options; Ranking.Random disables rack ordering.
	Ranking Ranking
	// Interval told to clients (default 60 s, the minimum anacrolix honours).
	// Peers that do not re-announce within 2x Interval are forgotten.
	Interval time.Duration
	// MembersOnly closes the swarm: an announce from an address that is
	// neither an origin nor a registered agent's peer address (/dc/agents)
	// is not recorded and gets no peers. dcroll coordinator and dcroll origin
	// run their trackers with it when given --members-only.
	MembersOnly bool
	// OnAnswer, if set, sees every answer (tests, debugging).
	OnAnswer func(Answer)
	Logger   *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Answer is one announce and the peers handed back.
type Answer struct {
	InfoHash string // hex
	Self     PeerLoc
	Peers    []PeerLoc
}

// Tracker is a rack-aware BitTorrent HTTP tracker with an in-memory peer
// store. It is an http.Handler for the announce URL.
type Tracker struct {
	cfg      TrackerConfig
	log      *slog.Logger
	announce *trackerServer.AnnounceHandler

	mu     sync.Mutex
	swarms map[[20]byte]map[netip.AddrPort]*peerEntry
}

type peerEntry struct {
	first, expires time.Time
	seeder         bool
}

var _ trackerServer.AnnounceTracker = (*Tracker)(nil)

// NewTracker returns a tracker; mount it at /announce.
func NewTracker(cfg TrackerConfig) *Tracker {
	if cfg.MaxPeers <= 0 {
		cfg.MaxPeers = DefaultMaxPeers
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	t := &Tracker{cfg: cfg, log: cfg.Logger.With("component", "tracker"), swarms: map[[20]byte]map[netip.AddrPort]*peerEntry{}}
	t.announce = &trackerServer.AnnounceHandler{AnnounceTracker: t}
	return t
}

// ServeHTTP answers announces (BEP 3, compact BEP 23). It parses requests
// like anacrolix's tracker/http/server but encodes the answer itself:
// v1.59.1's handler always sends an empty "failure reason" key, which
// aria2 (and libtorrent) read as a failed announce.
func (t *Tracker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var event tracker.AnnounceEvent
	if err := event.UnmarshalText([]byte(q.Get("event"))); err != nil {
		announceFailure(w, "bad event")
		return
	}
	ih, ok1 := param20(q.Get("info_hash"))
	peerID, ok2 := param20(q.Get("peer_id"))
	if !ok1 || !ok2 {
		announceFailure(w, "info_hash and peer_id must be 20 bytes")
		return
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	ip, err2 := netip.ParseAddr(host)
	if err != nil || err2 != nil {
		announceFailure(w, "cannot determine your IP")
		return
	}
	port, err := strconv.ParseUint(q.Get("port"), 10, 16)
	if err != nil || port == 0 {
		announceFailure(w, "bad port")
		return
	}
	left, err := strconv.ParseInt(q.Get("left"), 10, 64)
	if err != nil {
		left = -1
	}
	addr := netip.AddrPortFrom(ip.Unmap(), uint16(port))
	if q.Get(stalledParam) != "" {
		t.pruneDead(r.Context(), ih, addr)
	}
	res := t.announce.Serve(r.Context(), tracker.AnnounceRequest{
		InfoHash: ih, PeerId: peerID, Event: event, Port: uint16(port), NumWant: -1, Left: left,
	}, addr, trackerServer.GetPeersOpts{MaxCount: generics.Some[uint](200)})
	if res.Err != nil {
		t.log.Warn("announce failed", "peer", addr, "err", res.Err)
		announceFailure(w, "internal error")
		return
	}
	var peers4, peers6 []byte
	for _, p := range res.Peers {
		a := p.Addr().Unmap()
		b := append(a.AsSlice(), byte(p.Port()>>8), byte(p.Port()))
		if a.Is4() {
			peers4 = append(peers4, b...)
		} else {
			peers6 = append(peers6, b...)
		}
	}
	resp := map[string]any{
		"interval":   res.Interval.UnwrapOr(60),
		"complete":   res.Seeders.Value,
		"incomplete": res.Leechers.Value,
		"peers":      peers4,
	}
	if len(peers6) > 0 {
		resp["peers6"] = peers6
	}
	writeBencode(w, resp)
}

func param20(s string) (ret [20]byte, ok bool) {
	if len(s) != 20 {
		return ret, false
	}
	copy(ret[:], s)
	return ret, true
}

func announceFailure(w http.ResponseWriter, reason string) {
	writeBencode(w, map[string]any{"failure reason": reason})
}

func writeBencode(w http.ResponseWriter, v any) {
	b, err := bencode.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write(b)
}

// TrackAnnounce records or removes a peer.
func (t *Tracker) TrackAnnounce(_ context.Context, req udp.AnnounceRequest, addr trackerServer.AnnounceAddr) error {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	if !t.member(addr) {
		return nil // a stranger is never handed out
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	// The clock is read under the lock so that first-announce times follow
	// the order in which announcers are recorded: an announce answered
	// with predecessor P must never be ordered before P's other successor
	// later. (Measured: two announces 0.1 ms apart were recorded in one
	// order and timed in the other; one member then fed two successors at
	// half rate each, and the rack's last three hosts took 32.8 s vs 21 s.)
	now := t.cfg.Now()
	swarm := t.swarms[req.InfoHash]
	if req.Event == tracker.Stopped {
		delete(swarm, addr)
		return nil
	}
	if swarm == nil {
		swarm = map[netip.AddrPort]*peerEntry{}
		t.swarms[req.InfoHash] = swarm
	}
	e := swarm[addr]
	if e == nil {
		e = &peerEntry{first: now}
		swarm[addr] = e
		t.log.Debug("peer joined", "infohash", hex.EncodeToString(req.InfoHash[:]), "peer", addr)
	}
	e.expires = now.Add(2 * t.cfg.Interval)
	e.seeder = req.Left == 0
	return nil
}

// Scrape is not supported (answers zeros).
func (t *Tracker) Scrape(_ context.Context, ihs []trackerServer.InfoHash) ([]udp.ScrapeInfohashResult, error) {
	return make([]udp.ScrapeInfohashResult, len(ihs)), nil
}

// GetPeers ranks the swarm for the announcer at remote (its IP and
// announced port).
func (t *Tracker) GetPeers(_ context.Context, ih trackerServer.InfoHash, opts trackerServer.GetPeersOpts, remote trackerServer.AnnounceAddr) trackerServer.ServerAnnounceResult {
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	if !t.member(remote) {
		t.log.Warn("announce from an address that is not a fleet member: no peers", "peer", remote,
			"infohash", hex.EncodeToString(ih[:]))
		return trackerServer.ServerAnnounceResult{Interval: generics.Some(int32(t.cfg.Interval / time.Second)),
			Seeders: generics.Some(int32(0)), Leechers: generics.Some(int32(0))}
	}
	now := t.cfg.Now()
	var peers []PeerLoc
	var self PeerLoc
	seeders, leechers := int32(0), int32(0)
	t.mu.Lock()
	swarm := t.swarms[ih]
	for addr, e := range swarm {
		if now.After(e.expires) {
			delete(swarm, addr)
			continue
		}
		if e.seeder {
			seeders++
		} else {
			leechers++
		}
		loc := t.locate(addr)
		loc.Since, loc.Seeder = e.first, e.seeder
		if addr == remote {
			self = loc
			continue
		}
		peers = append(peers, loc)
	}
	t.mu.Unlock()
	if !self.Addr.IsValid() {
		self = t.locate(remote)
		self.Since = now
	}
	for _, o := range t.cfg.Origins {
		found := false
		for _, p := range peers {
			found = found || p.Addr == o
		}
		if !found && o != remote {
			peers = append(peers, PeerLoc{Addr: o, Origin: true, DC: t.cfg.OriginDC})
		}
	}
	n := t.cfg.MaxPeers
	if opts.MaxCount.Ok && int(opts.MaxCount.Value) < n {
		n = int(opts.MaxCount.Value)
	}
	ranked := t.cfg.Ranking.Rank(self, peers, n)
	if t.cfg.OnAnswer != nil {
		t.cfg.OnAnswer(Answer{InfoHash: hex.EncodeToString(ih[:]), Self: self, Peers: ranked})
	}
	res := trackerServer.ServerAnnounceResult{
		Interval: generics.Some(int32(t.cfg.Interval / time.Second)),
		Seeders:  generics.Some(seeders),
		Leechers: generics.Some(leechers),
	}
	for _, p := range ranked {
		res.Peers = append(res.Peers, trackerServer.PeerInfo{AnnounceAddr: p.Addr})
	}
	return res
}

// probeTimeout bounds the connection attempt that tells a live member from
// a dead one (same data center: a live peer accepts within milliseconds).
const probeTimeout = 500 * time.Millisecond

// pruneDead is the tracker's liveness check, run when a node announces
// that its sources went away (stalledParam): every other swarm member of
// the announcer's rack (all members when the announcer's rack is unknown)
// gets one TCP connection attempt, in parallel, and those that refuse or do
// not answer within probeTimeout are forgotten, as if they had announced
// "stopped". The ranking is then computed without them: a dead gateway's
// successor becomes the gateway and gets the origin, a dead chain member's
// successor gets its predecessor. Without this a dead member stays in the
// swarm for 2 x Interval and keeps being handed out.
func (t *Tracker) pruneDead(ctx context.Context, ih [20]byte, announcer netip.AddrPort) {
	self := t.locate(announcer)
	t.mu.Lock()
	var cands []netip.AddrPort
	for addr := range t.swarms[ih] {
		if addr == announcer {
			continue
		}
		loc := t.locate(addr)
		if self.Rack == "" || (loc.Rack == self.Rack && loc.DC == self.DC) {
			cands = append(cands, addr)
		}
	}
	t.mu.Unlock()
	dead := make([]bool, len(cands))
	var wg sync.WaitGroup
	for i, a := range cands {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, probeTimeout)
			defer cancel()
			var d net.Dialer
			c, err := d.DialContext(pctx, "tcp", a.String())
			if err != nil {
				dead[i] = ctx.Err() == nil // our own request ending proves nothing
				return
			}
			_ = c.Close() // a probe: nothing was written
		})
	}
	wg.Wait()
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, a := range cands {
		if dead[i] {
			delete(t.swarms[ih], a)
			t.log.Info("forgot a dead peer", "infohash", hex.EncodeToString(ih[:]), "peer", a, "reported_by", announcer)
		}
	}
}

// member reports whether addr may take part in the swarm: always, unless
// MembersOnly; then an origin or a registered agent's peer address.
func (t *Tracker) member(addr netip.AddrPort) bool {
	if !t.cfg.MembersOnly {
		return true
	}
	for _, o := range t.cfg.Origins {
		if o == addr {
			return true
		}
	}
	if _, ok := t.cfg.Racks.LookupExact(addr); ok {
		return true
	}
	if t.cfg.Racks != nil {
		t.cfg.Racks.Nudge() // registered a moment ago? the next announce will tell
	}
	return false
}

func (t *Tracker) locate(addr netip.AddrPort) PeerLoc {
	loc := PeerLoc{Addr: addr}
	for _, o := range t.cfg.Origins {
		if o == addr {
			loc.Origin, loc.DC = true, t.cfg.OriginDC
			return loc
		}
	}
	if a, ok := t.cfg.Racks.LookupExact(addr); ok {
		loc.Machine, loc.Rack, loc.DC = a.Machine, a.Rack, a.DC
	} else if t.cfg.Racks != nil {
		t.cfg.Racks.Nudge()
	}
	return loc
}
