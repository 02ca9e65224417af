package distrib

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	"golang.org/x/time/rate"

	"dcroll/distrib/mlock"
	"dcroll/znodes"
)

// DefaultStallTimeout is how long a download may make no progress in the
// swarm before the node falls back to the origin's web seed.
const DefaultStallTimeout = 20 * time.Second

// webSeedGrace extends the stall timeout once the web seed is added:
// anacrolix v1.59.1 starts web seed requests on a 5 s timer.
const webSeedGrace = 10 * time.Second

// Progress sources (znodes.BlobProgress.Source).
const (
	SourceLocal   = "local"   // already in the store
	SourceSwarm   = "swarm"   // BitTorrent peers
	SourceWebSeed = "webseed" // the swarm stalled; the origin's HTTP web seed was added
)

// NodeConfig configures an agent's distribution node.
// DefaultMaxBlobSize is NodeConfig.MaxBlobSize's default.
const DefaultMaxBlobSize int64 = 64 << 30

type NodeConfig struct {
	// DataDir holds the store (blobs/, partial/, tmp/).
	DataDir string
	// ListenAddr is the BitTorrent ip:port (port 0 picks one). Use the IP
	// registered in /dc/agents: outgoing connections are bound to it.
	ListenAddr string
	Conn       *znodes.Conn
	// Machine is this agent's name in /dc/agents and /dc/progress.
	Machine string
	// MlockBudget bounds the bytes FetchLocked/Lock may lock (0: only
	// RLIMIT_MEMLOCK applies).
	MlockBudget int64
	// MaxBlobSize refuses, before downloading, a blob whose published
	// record says it is larger (0: DefaultMaxBlobSize): a tampered record
	// cannot make every machine fill its disk.
	MaxBlobSize int64
	Logger      *slog.Logger
	// StallTimeout before falling back to the web seed (default 20 s).
	StallTimeout time.Duration
	// RerouteAfter: after losing a peer, how long a download may make no
	// progress before the node re-announces as stalled and then adds peers
	// from the rack map (default DefaultRerouteAfter; see stallWatch).
	RerouteAfter time.Duration
	// RequestWindow is the least bytes of pieces a download asks for at
	// once, rounded up to whole pieces, at least two (default
	// DefaultRequestWindow; < 0: no limit); it grows with the download's
	// rate (windowSpan). See steering.
	RequestWindow int64
	// UploadRateLimiter and DownloadRateLimiter throttle BitTorrent traffic
	// (nil: unlimited).
	UploadRateLimiter   *rate.Limiter
	DownloadRateLimiter *rate.Limiter
	// CongestionControl is the TCP congestion control of the node's swarm
	// and web seed sockets ("": DefaultCongestionControl; "system": the
	// kernel's default).
	CongestionControl string
}

// Node fetches blobs through the swarm into its store, seeds them, keeps
// them locked in memory on request, and reports progress.
type Node struct {
	cfg      NodeConfig
	log      *slog.Logger
	store    *Store
	cl       *client
	racks    *RackMap
	locker   *mlock.Locker
	peerAddr string
	httpc    *http.Client // out-of-band announces, from the node's IP

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	blobs   map[string]*blobState // by hex
	regions map[string]*mlock.Region
	byIH    sync.Map // metainfo.Hash -> *blobState (read from client callbacks)
}

type blobState struct {
	id, hex string
	size    int64

	fromRack, fromDC, fromOther atomic.Int64

	mu       sync.Mutex // guards the rest
	t        *torrent.Torrent
	fetching bool
	done     chan struct{} // closed when the current fetch ends
	path     string
	err      error
	source   string
	rate     float64
	lastErr  string
}

// NewNode opens the store and starts the BitTorrent client. Background
// work stops when ctx ends or Close is called.
func NewNode(ctx context.Context, cfg NodeConfig) (*Node, error) {
	if cfg.Conn == nil || cfg.Machine == "" {
		return nil, errors.New("node: Conn and Machine are required")
	}
	if err := znodes.ValidName(cfg.Machine); err != nil {
		return nil, fmt.Errorf("node: machine: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = DefaultStallTimeout
	}
	if cfg.RerouteAfter <= 0 {
		cfg.RerouteAfter = DefaultRerouteAfter
	}
	if cfg.RequestWindow == 0 {
		cfg.RequestWindow = DefaultRequestWindow
	}
	st, err := OpenStore(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	n := &Node{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "distrib", "machine", cfg.Machine),
		store:   st,
		racks:   NewRackMap(cfg.Conn, cfg.Logger),
		locker:  mlock.NewLocker(cfg.MlockBudget),
		blobs:   map[string]*blobState{},
		regions: map[string]*mlock.Region{},
	}
	n.cl, err = newClient(clientOptions{
		ListenAddr:        cfg.ListenAddr,
		UploadLimiter:     cfg.UploadRateLimiter,
		DownloadLimit:     cfg.DownloadRateLimiter,
		Logger:            cfg.Logger.With("component", "bittorrent", "machine", cfg.Machine),
		OnUsefulData:      n.onUsefulData,
		CongestionControl: cfg.CongestionControl,
	})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	n.peerAddr = clientAddr(n.cl, cfg.ListenAddr)
	tr := &http.Transport{DisableKeepAlives: true}
	if d := boundDialer(cfg.ListenAddr); d != nil {
		tr.DialContext = d.DialContext
	}
	n.httpc = &http.Client{Transport: tr, Timeout: announceTimeout}
	if host, port, _ := net.SplitHostPort(n.peerAddr); host == "" || net.ParseIP(host).IsUnspecified() {
		n.peerAddr = net.JoinHostPort(hostIP(), port)
	}
	n.ctx, n.cancel = context.WithCancel(ctx)
	if err := n.racks.Refresh(); err != nil {
		n.log.Warn("reading agents failed; rack statistics start empty", "err", err)
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		_ = n.racks.Run(n.ctx)
	}()
	return n, nil
}

// PeerAddr is the BitTorrent address to register in /dc/agents (ip:port).
func (n *Node) PeerAddr() string { return n.peerAddr }

// Store is the node's blob store.
func (n *Node) Store() *Store { return n.store }

// Racks is the node's view of /dc/agents (refresh it after registering).
func (n *Node) Racks() *RackMap { return n.racks }

// Locker accounts for the node's locked memory.
func (n *Node) Locker() *mlock.Locker { return n.locker }

// Client exposes the BitTorrent client (status pages, benchmarks).
func (n *Node) Client() *torrent.Client { return n.cl.Client }

// Close stops the client and unlocks every region.
func (n *Node) Close() error {
	n.cancel()
	n.wg.Wait()
	var errs []error
	errs = append(errs, n.cl.Close()...)
	n.mu.Lock()
	for h, r := range n.regions {
		errs = append(errs, r.Unlock())
		delete(n.regions, h)
	}
	n.mu.Unlock()
	return errors.Join(errs...)
}

func (n *Node) state(h string) *blobState {
	n.mu.Lock()
	defer n.mu.Unlock()
	bs := n.blobs[h]
	if bs == nil {
		bs = &blobState{id: IDOf(h), hex: h}
		n.blobs[h] = bs
	}
	return bs
}

// Fetch makes blob id available in the store and returns its path. A blob
// already there is returned at once; otherwise it is downloaded from the
// swarm (web seed after StallTimeout without progress), verified against
// its sha256 and kept seeded. onProgress (may be nil) is called about
// every 250 ms and once at the end. Concurrent Fetches of one id share the
// download.
func (n *Node) Fetch(ctx context.Context, id string, onProgress func(znodes.BlobProgress)) (string, error) {
	h, err := ParseID(id)
	if err != nil {
		return "", err
	}
	for {
		if n.store.Has(id) {
			p, _ := n.store.Path(id)
			bs := n.state(h)
			bs.mu.Lock()
			if bs.source == "" {
				bs.source = SourceLocal
			}
			if bs.size == 0 {
				if fi, err := os.Stat(p); err == nil {
					bs.size = fi.Size()
				}
			}
			bs.mu.Unlock()
			if onProgress != nil {
				onProgress(n.progressOf(bs))
			}
			return p, nil
		}
		bs := n.state(h)
		bs.mu.Lock()
		if bs.fetching {
			done := bs.done
			bs.mu.Unlock()
			select {
			case <-done:
				continue // re-check the store; retry ourselves if it failed
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}
		bs.fetching, bs.done, bs.err, bs.lastErr = true, make(chan struct{}), nil, ""
		bs.mu.Unlock()
		p, err := n.fetch(ctx, bs, onProgress)
		bs.mu.Lock()
		bs.fetching, bs.path, bs.err = false, p, err
		if err != nil {
			bs.lastErr = err.Error()
		}
		close(bs.done)
		bs.mu.Unlock()
		if onProgress != nil {
			onProgress(n.progressOf(bs))
		}
		return p, err
	}
}

// FetchLocked checks the mlock budget and RLIMIT_MEMLOCK before
// downloading, fetches, and locks the blob in memory.
func (n *Node) FetchLocked(ctx context.Context, id string, onProgress func(znodes.BlobProgress)) (string, *mlock.Region, error) {
	h, err := ParseID(id)
	if err != nil {
		return "", nil, err
	}
	n.mu.Lock()
	r := n.regions[h]
	n.mu.Unlock()
	if r == nil {
		b, err := LookupBlob(n.cfg.Conn, id)
		if err != nil && !n.store.Has(id) {
			return "", nil, err
		}
		if b != nil {
			if err := n.locker.Check(b.Size); err != nil {
				return "", nil, fmt.Errorf("fetch %s: %w", id, err)
			}
		}
	}
	p, err := n.Fetch(ctx, id, onProgress)
	if err != nil {
		return "", nil, err
	}
	r, err = n.Lock(id)
	return p, r, err
}

// Lock locks a stored blob in memory (idempotent per id).
func (n *Node) Lock(id string) (*mlock.Region, error) {
	h, err := ParseID(id)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if r := n.regions[h]; r != nil {
		return r, nil
	}
	p, _ := n.store.Path(id)
	r, err := n.locker.Lock(p)
	if err != nil {
		return nil, err
	}
	n.regions[h] = r
	return r, nil
}

// Unlock releases the lock on a blob (no-op when not locked).
func (n *Node) Unlock(id string) error {
	h, err := ParseID(id)
	if err != nil {
		return err
	}
	n.mu.Lock()
	r := n.regions[h]
	delete(n.regions, h)
	n.mu.Unlock()
	if r == nil {
		return nil
	}
	return r.Unlock()
}

func (n *Node) fetch(ctx context.Context, bs *blobState, onProgress func(znodes.BlobProgress)) (string, error) {
	b, err := LookupBlob(n.cfg.Conn, bs.id)
	if err != nil {
		return "", err
	}
	if max := cmp.Or(n.cfg.MaxBlobSize, DefaultMaxBlobSize); b.Size > max {
		return "", fmt.Errorf("fetch %s: its record says %d bytes, more than this node's cap of %d: refused before downloading", bs.id, b.Size, max)
	}
	ct, err := checkBlob(b)
	if err != nil {
		return "", err
	}
	n.byIH.Store(ct.infoHash, bs) // before the partial dir exists: gcPartial spares it
	t, err := addDownload(n.cl.Client, n.store, ct)
	if err != nil {
		n.byIH.Delete(ct.infoHash)
		return "", err
	}
	bs.mu.Lock()
	bs.size, bs.t, bs.source = b.Size, t, SourceSwarm
	bs.mu.Unlock()
	start := time.Now()
	n.log.Info("fetching blob", "blob", bs.id, "size", b.Size, "infohash", b.InfoHash)
	<-t.GotInfo()
	t.DownloadAll()
	trackers := announceURLs(ct.mi, b.Trackers)
	segBegin, segEnd := n.spreadSegment(t.NumPieces())
	st := newSteering(segBegin, segEnd, ct.info.PieceLength, n.cfg.RequestWindow)
	defer st.start(t)()

	// The loop steers every steerEvery, so that a piece a peer just
	// announced is wanted soon, and whenever a piece completes (steer);
	// every bookEvery it counts bytes, watches for a stall and reports
	// progress.
	tick := time.NewTicker(steerEvery)
	defer tick.Stop()
	last, lastAt, lastProgress := t.BytesCompleted(), time.Now(), time.Now()
	webseeded := false
	watch := newStallWatch(n.cfg.RerouteAfter, lastProgress, n.inRack)
	rec := newRecovery(n.cfg.Conn, n.log, ct.hex, n.cfg.Machine)
	defer rec.leave()
	for !t.Complete().Bool() {
		select {
		case <-ctx.Done():
			// Keep the partial data for a later Fetch; stop downloading.
			n.dropTorrent(bs, ct.infoHash)
			return "", fmt.Errorf("fetch %s: %w", bs.id, ctx.Err())
		case <-t.Complete().On():
			continue
		case <-st.changes.completed:
		case names := <-rec.updates:
			self, _ := n.racks.Machine(n.cfg.Machine)
			if ps := rec.newPeers(n.racks, names, self.DC); len(ps) > 0 {
				n.log.Info("stalled: adding peers from the recovering set", "blob", bs.id, "peers", len(ps), "added", n.addPeers(t, ps))
			}
		case <-tick.C:
		}
		st.steer(t)
		if time.Since(lastAt) < bookEvery {
			continue
		}
		now, got := time.Now(), t.BytesCompleted()
		bs.mu.Lock()
		if dt := now.Sub(lastAt).Seconds(); dt > 0 {
			bs.rate = 0.7*bs.rate + 0.3*float64(got-last)/dt
		}
		rate := bs.rate
		bs.mu.Unlock()
		st.adapt(rate)
		watch.closed(dropDuplicateConns(t, n.cl.PeerID()))
		if got > last {
			lastProgress = now
		}
		if lv := watch.observe(now, stallTick{conns: peerConnAddrs(t), progressed: got > last, started: got > 0, offered: st.offered()}); lv >= 0 && !t.Complete().Bool() {
			lv = n.reroute(ctx, t, ct, trackers, rec, lv, watch.fallback)
			watch.ran(lv)
			if lv >= levelRecovering {
				st.recover(int(pieceOffset(n.cfg.Machine) % uint64(max(t.NumPieces(), 1))))
			}
			st.steer(t)
		}
		last, lastAt = got, now
		stall := n.cfg.StallTimeout
		if webseeded {
			// anacrolix schedules web seed requests on a 5 s timer.
			stall += webSeedGrace
		}
		if now.Sub(lastProgress) > stall && !t.Complete().Bool() {
			if webseeded || len(b.URLs) == 0 {
				n.dropTorrent(bs, ct.infoHash)
				return "", fmt.Errorf("fetch %s: stalled at %d of %d bytes: no progress from %d peers or the web seed for %s",
					bs.id, got, b.Size, len(t.PeerConns()), stall)
			}
			n.log.Warn("swarm stalled; falling back to the web seed", "blob", bs.id, "bytes", got, "peers", len(t.PeerConns()), "urls", b.URLs)
			// Steering goes on, with every piece sendable: the window
			// moves on whoever (peers or the web seed) sends. Wanting
			// every piece at once instead filled anacrolix's window with
			// pieces only the web seed had: with the origin dead, every
			// host stopped there for good.
			t.AddWebSeeds(b.URLs)
			st.webseed = true
			webseeded, lastProgress = true, now
			bs.mu.Lock()
			bs.source = SourceWebSeed
			bs.mu.Unlock()
		}
		if onProgress != nil {
			onProgress(n.progressOf(bs))
		}
	}
	// Every piece verified; now check the whole blob against its id.
	partial := filepath.Join(n.store.partialDir(ct.infoHash.HexString()), ct.hex)
	got, err := hashFile(ctx, partial)
	if err != nil {
		return "", fmt.Errorf("fetch %s: verify: %w", bs.id, err)
	}
	if got != ct.hex {
		n.dropTorrent(bs, ct.infoHash)
		_ = os.RemoveAll(n.store.partialDir(ct.infoHash.HexString()))
		return "", fmt.Errorf("fetch %s: downloaded data hashes to sha256:%s: the published metainfo does not match the blob id", bs.id, got)
	}
	path, err := n.store.adopt(bs.id, partial)
	if err != nil {
		return "", fmt.Errorf("fetch %s: %w", bs.id, err)
	}
	_ = os.RemoveAll(n.store.partialDir(ct.infoHash.HexString()))
	n.log.Info("fetched blob", "blob", bs.id, "size", b.Size, "in", time.Since(start).Round(time.Millisecond),
		"source", bs.source, "from_rack", bs.fromRack.Load(), "from_dc", bs.fromDC.Load(), "from_other", bs.fromOther.Load())
	return path, nil
}

func (n *Node) dropTorrent(bs *blobState, ih metainfo.Hash) {
	bs.mu.Lock()
	t := bs.t
	bs.t = nil
	bs.mu.Unlock()
	if t != nil {
		t.Drop()
	}
	n.byIH.Delete(ih)
}

// Keep seeds ids and previous (blobs of the running and the previous
// version: a rollback needs no download) and removes every other blob from
// the store, unlocking it first. Blobs being fetched are left alone.
func (n *Node) Keep(ids []string, previous []string) error {
	keep := map[string]bool{}
	for _, id := range append(append([]string(nil), ids...), previous...) {
		h, err := ParseID(id)
		if err != nil {
			return fmt.Errorf("keep: %w", err)
		}
		keep[h] = true
	}
	var errs []error
	for h := range keep {
		if n.store.Has(IDOf(h)) {
			if err := n.seedStored(h); err != nil {
				errs = append(errs, err)
			}
		}
	}
	stored, err := n.store.List()
	if err != nil {
		return err
	}
	for _, id := range stored {
		h, _ := ParseID(id)
		if keep[h] {
			continue
		}
		bs := n.state(h)
		bs.mu.Lock()
		busy := bs.fetching
		bs.mu.Unlock()
		if busy {
			continue
		}
		if t := n.torrentOf(bs); t != nil {
			n.dropTorrent(bs, t.InfoHash())
		}
		if err := n.Unlock(id); err != nil {
			errs = append(errs, err)
		}
		if err := n.store.Remove(id); err != nil {
			errs = append(errs, err)
			continue
		}
		n.mu.Lock()
		delete(n.blobs, h)
		n.mu.Unlock()
		n.log.Info("removed unreferenced blob", "blob", id)
	}
	errs = append(errs, n.gcPartial())
	return errors.Join(errs...)
}

// gcPartial removes partial downloads that no running Fetch owns (a Fetch
// interrupted earlier would resume from them only if retried before Keep).
func (n *Node) gcPartial() error {
	active := map[string]bool{}
	n.byIH.Range(func(k, v any) bool {
		bs := v.(*blobState)
		bs.mu.Lock()
		if bs.fetching {
			active[k.(metainfo.Hash).HexString()] = true
		}
		bs.mu.Unlock()
		return true
	})
	ents, err := os.ReadDir(n.store.partialRoot())
	if err != nil {
		return fmt.Errorf("gc partial downloads: %w", err)
	}
	var errs []error
	for _, e := range ents {
		if active[e.Name()] {
			continue
		}
		if err := os.RemoveAll(filepath.Join(n.store.partialRoot(), e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (n *Node) torrentOf(bs *blobState) *torrent.Torrent {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	return bs.t
}

// seedStored starts seeding a stored blob (verifying it first); a blob that
// fails verification is removed from the store.
func (n *Node) seedStored(h string) error {
	bs := n.state(h)
	bs.mu.Lock()
	if bs.t != nil || bs.fetching {
		bs.mu.Unlock()
		return nil
	}
	bs.mu.Unlock()
	b, err := LookupBlob(n.cfg.Conn, IDOf(h))
	if err != nil {
		return fmt.Errorf("seed %s: %w", IDOf(h), err)
	}
	ct, err := checkBlob(b)
	if err != nil {
		return err
	}
	t, err := addStored(n.ctx, n.cl.Client, n.store, ct)
	if err != nil {
		if n.ctx.Err() == nil {
			n.log.Error("stored blob is corrupt; removing it", "blob", IDOf(h), "err", err)
			_ = n.Unlock(IDOf(h))
			_ = n.store.Remove(IDOf(h))
		}
		return err
	}
	bs.mu.Lock()
	bs.t, bs.size = t, b.Size
	if bs.source == "" {
		bs.source = SourceLocal
	}
	bs.mu.Unlock()
	n.byIH.Store(ct.infoHash, bs)
	return nil
}

// Peer classes for received bytes.
const (
	classRack = iota
	classDC
	classOther
)

func (n *Node) onUsefulData(e torrent.ReceivedUsefulDataEvent) {
	if e.Peer == nil || e.Message == nil {
		return
	}
	t := e.Peer.Torrent()
	if t == nil {
		return
	}
	v, ok := n.byIH.Load(t.InfoHash())
	if !ok {
		return
	}
	bs := v.(*blobState)
	size := int64(len(e.Message.Piece))
	switch n.classify(e.Peer) {
	case classRack:
		bs.fromRack.Add(size)
	case classDC:
		bs.fromDC.Add(size)
	default:
		bs.fromOther.Add(size)
	}
}

func (n *Node) classify(p *torrent.Peer) int {
	if p.Network == "http" || p.RemoteAddr == nil {
		return classOther // web seed
	}
	ap, err := netip.ParseAddrPort(p.RemoteAddr.String())
	if err != nil {
		return classOther
	}
	self, ok := n.racks.Machine(n.cfg.Machine)
	if !ok {
		return classOther
	}
	a, ok := n.racks.Lookup(ap)
	switch {
	case !ok || a.DC != self.DC:
		return classOther
	case a.Rack == self.Rack:
		return classRack
	default:
		return classDC
	}
}

func (n *Node) progressOf(bs *blobState) znodes.BlobProgress {
	bs.mu.Lock()
	t := bs.t
	p := znodes.BlobProgress{
		Blob:      bs.id,
		Total:     bs.size,
		RateBps:   bs.rate,
		Source:    bs.source,
		Error:     bs.lastErr,
		FromRack:  bs.fromRack.Load(),
		FromDC:    bs.fromDC.Load(),
		FromOther: bs.fromOther.Load(),
	}
	fetching := bs.fetching
	bs.mu.Unlock()
	if !fetching && n.store.Has(bs.id) {
		p.Done, p.Bytes, p.RateBps = true, p.Total, 0
	} else if t != nil {
		p.Bytes = t.BytesCompleted()
	}
	if t != nil {
		p.Peers = len(t.PeerConns())
	}
	return p
}

// Progress returns the state of every blob the node knows, sorted by id.
func (n *Node) Progress() []znodes.BlobProgress {
	n.mu.Lock()
	states := make([]*blobState, 0, len(n.blobs))
	for _, bs := range n.blobs {
		states = append(states, bs)
	}
	n.mu.Unlock()
	out := make([]znodes.BlobProgress, 0, len(states))
	for _, bs := range states {
		out = append(out, n.progressOf(bs))
	}
	sortProgress(out)
	return out
}

// hostIP guesses the machine's address when listening on all interfaces.
func hostIP() string {
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
				return ipn.IP.String()
			}
		}
	}
	return "127.0.0.1"
}
