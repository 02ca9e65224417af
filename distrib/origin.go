package distrib

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/go-zookeeper/zk"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"dcroll/internal/obs"
	"dcroll/znodes"
)

// OriginConfig configures the origin: the build machine's seeder, web seed
// and tracker.
type OriginConfig struct {
	// MembersOnly closes the origin's tracker to addresses that are not
	// registered fleet members (TrackerConfig.MembersOnly).
	MembersOnly bool
	Store       *Store
	Conn        *znodes.Conn
	// ListenAddr is the BitTorrent ip:port (port 0 picks one). Use the
	// machine's data-center IP: the tracker hands it to every peer.
	ListenAddr string
	// HTTPAddr serves GET /blobs/<hex> (web seed, Range supported), the
	// tracker at /announce, Prometheus metrics at /metrics and /healthz
	// (200 "ok" while the ZooKeeper session is connected, 503 otherwise).
	HTTPAddr string
	Logger   *slog.Logger
	// UploadRateLimiter throttles BitTorrent uploads (nil: unlimited). The
	// web seed is not throttled.
	UploadRateLimiter *rate.Limiter
	// DisableBitTorrent serves HTTP only (web seed and tracker).
	DisableBitTorrent bool
	// CongestionControl of the seeder's sockets (see NodeConfig).
	CongestionControl string
	// DC is the origin's data center ("" unknown): racks of other data
	// centers then pull the blob across the WAN through one DC gateway.
	DC string
	// Ranking and MaxPeers configure the tracker (zero: rack-aware defaults).
	Ranking  Ranking
	MaxPeers int
	// OnAnswer sees every tracker answer (tests).
	OnAnswer func(Answer)
}

// Origin seeds every published blob present in its store, serves them over
// HTTP and runs the tracker. Make one with NewOrigin, then Run it.
type Origin struct {
	seen    sync.Map // blob hex -> true: published (see published)
	cfg     OriginConfig
	log     *slog.Logger
	cl      *client
	racks   *RackMap
	tracker *Tracker
	ln      net.Listener
	srv     *http.Server
	nudge   chan struct{}

	mu      sync.Mutex
	seeding map[string]*torrent.Torrent // by hex
	bad     map[string]string           // hex -> why it is not seeded
}

// NewOrigin starts listening (BitTorrent and HTTP); Run serves.
func NewOrigin(cfg OriginConfig) (*Origin, error) {
	if cfg.Store == nil || cfg.Conn == nil {
		return nil, errors.New("origin: Store and Conn are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	o := &Origin{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "origin"),
		racks:   NewRackMap(cfg.Conn, cfg.Logger),
		nudge:   make(chan struct{}, 1),
		seeding: map[string]*torrent.Torrent{},
		bad:     map[string]string{},
	}
	var origins []netip.AddrPort
	if !cfg.DisableBitTorrent {
		cl, err := newClient(clientOptions{ListenAddr: cfg.ListenAddr, UploadLimiter: cfg.UploadRateLimiter, Logger: cfg.Logger.With("component", "origin-bt"),
			CongestionControl: cfg.CongestionControl})
		if err != nil {
			return nil, fmt.Errorf("origin: %w", err)
		}
		o.cl = cl
		if ap, err := netip.ParseAddrPort(o.PeerAddr()); err == nil && !ap.Addr().IsUnspecified() {
			origins = append(origins, ap)
		} else {
			o.log.Warn("origin listens on an unspecified address; the tracker cannot hand it out", "addr", cfg.ListenAddr)
		}
	}
	o.tracker = NewTracker(TrackerConfig{Racks: o.racks, Origins: origins, OriginDC: cfg.DC, MaxPeers: cfg.MaxPeers, Ranking: cfg.Ranking, OnAnswer: cfg.OnAnswer, Logger: cfg.Logger,
		MembersOnly: cfg.MembersOnly})
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		o.closeClient()
		return nil, fmt.Errorf("origin: listen http %s: %w", cfg.HTTPAddr, err)
	}
	o.ln = ln
	mux := http.NewServeMux()
	mux.Handle("/announce", o.tracker)
	mux.HandleFunc("GET /blobs/{hex}", o.serveBlob)
	mux.Handle("GET /metrics", obs.MetricsHandler(o.registry()))
	mux.Handle("GET /healthz", obs.Healthz(obs.ZooKeeper(func() *znodes.Conn { return cfg.Conn })))
	o.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return o, nil
}

// RunOrigin is NewOrigin followed by Run.
func RunOrigin(ctx context.Context, cfg OriginConfig) error {
	o, err := NewOrigin(cfg)
	if err != nil {
		return err
	}
	return o.Run(ctx)
}

// URL is the HTTP base, e.g. http://10.0.0.1:7070 (PublishOptions.OriginURL).
func (o *Origin) URL() string { return "http://" + o.ln.Addr().String() }

// PeerAddr is the BitTorrent address ("" when disabled).
func (o *Origin) PeerAddr() string {
	if o.cl == nil {
		return ""
	}
	return clientAddr(o.cl, o.cfg.ListenAddr)
}

// Tracker is the origin's tracker.
func (o *Origin) Tracker() *Tracker { return o.tracker }

// Racks is the origin's view of /dc/agents.
func (o *Origin) Racks() *RackMap { return o.racks }

// Seeding returns the ids being seeded (verified), sorted.
func (o *Origin) Seeding() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var ids []string
	for h := range o.seeding {
		ids = append(ids, IDOf(h))
	}
	sort.Strings(ids)
	return ids
}

// Nudge asks Run to rescan /dc/blobs now.
func (o *Origin) Nudge() {
	select {
	case o.nudge <- struct{}{}:
	default:
	}
}

// Run serves until ctx ends, then closes everything.
func (o *Origin) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	wg.Add(3)
	go func() {
		defer wg.Done()
		if err := o.srv.Serve(o.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			select {
			case errc <- fmt.Errorf("origin http: %w", err):
			default:
			}
			cancel()
		}
	}()
	go func() {
		defer wg.Done()
		_ = o.racks.Run(ctx)
	}()
	go func() {
		defer wg.Done()
		o.watchBlobs(ctx)
	}()
	o.log.Info("origin running", "http", o.URL(), "bittorrent", o.PeerAddr())
	<-ctx.Done()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = o.srv.Shutdown(sctx)
	scancel()
	wg.Wait()
	o.closeClient()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

func (o *Origin) closeClient() {
	if o.cl != nil {
		for _, err := range o.cl.Close() {
			o.log.Warn("closing bittorrent client", "err", err)
		}
	}
}

// watchBlobs seeds new published blobs: watch /dc/blobs children, rescan
// on every event, nudge, and every 30 s (a blob imported into the store
// after being published is picked up then).
func (o *Origin) watchBlobs(ctx context.Context) {
	if o.cl == nil {
		return
	}
	p := o.cfg.Conn.Paths()
	changed := make(chan struct{}, 1)
	ws := znodes.NewWatchSet(ctx, o.cfg.Conn.ZK(), changed) // one armed watch, whatever wakes the loop
	for {
		names, err := ws.Children(p.Blobs())
		if errors.Is(err, zk.ErrNoNode) {
			err = o.cfg.Conn.EnsurePath(p.Blobs())
			if err == nil {
				continue
			}
		}
		if err != nil {
			o.log.Warn("listing published blobs failed; retrying", "err", err)
		} else {
			o.sync(ctx, names)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-o.nudge:
		case <-time.After(30 * time.Second):
		}
	}
}

func (o *Origin) sync(ctx context.Context, names []string) {
	want := map[string]bool{}
	for _, h := range names {
		if _, err := ParseID(h); err != nil {
			continue
		}
		want[h] = true
		o.mu.Lock()
		_, ok := o.seeding[h]
		o.mu.Unlock()
		if ok || !o.cfg.Store.Has(IDOf(h)) {
			continue
		}
		if err := o.seed(ctx, h); err != nil {
			if ctx.Err() != nil {
				return
			}
			o.log.Error("not seeding blob", "blob", IDOf(h), "err", err)
			o.mu.Lock()
			o.bad[h] = err.Error()
			o.mu.Unlock()
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for h, t := range o.seeding {
		if !want[h] {
			o.log.Info("blob unpublished; stop seeding", "blob", IDOf(h))
			t.Drop()
			delete(o.seeding, h)
		}
	}
}

func (o *Origin) seed(ctx context.Context, h string) error {
	b, err := LookupBlob(o.cfg.Conn, IDOf(h))
	if err != nil {
		return err
	}
	ct, err := checkBlob(b)
	if err != nil {
		return err
	}
	start := time.Now()
	t, err := addStored(ctx, o.cl.Client, o.cfg.Store, ct)
	if err != nil {
		return err
	}
	o.mu.Lock()
	o.seeding[h] = t
	delete(o.bad, h)
	o.mu.Unlock()
	o.log.Info("seeding blob", "blob", IDOf(h), "size", b.Size, "infohash", b.InfoHash, "verified_in", time.Since(start).Round(time.Millisecond))
	return nil
}

// registry holds the origin's metrics (dcroll_build_info, Go and process
// collectors, and what it seeds), read on each scrape.
func (o *Origin) registry() *prometheus.Registry {
	reg := obs.NewRegistry()
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dcroll_origin_seeding_blobs", Help: "Published blobs the origin seeds (verified against their sha256).",
	}, func() float64 {
		o.mu.Lock()
		defer o.mu.Unlock()
		return float64(len(o.seeding))
	}), prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dcroll_origin_unseeded_blobs", Help: "Published blobs the origin cannot seed (missing from its store or failing verification).",
	}, func() float64 {
		o.mu.Lock()
		defer o.mu.Unlock()
		return float64(len(o.bad))
	}), prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dcroll_origin_zookeeper_connected", Help: "1 while the ZooKeeper session is live.",
	}, func() float64 {
		if st, _, _ := o.cfg.Conn.State(); st == znodes.Connected {
			return 1
		}
		return 0
	}))
	return reg
}

// published reports whether blob hex has a record in /dc/blobs. Records
// are never rewritten to another blob, so a yes is remembered (the web seed
// answers many Range requests per blob).
func (o *Origin) published(hex string) bool {
	if _, ok := o.seen.Load(hex); ok {
		return true
	}
	ok, _, err := o.cfg.Conn.ZK().Exists(o.cfg.Conn.Paths().Blob(hex))
	if err != nil || !ok {
		return false
	}
	o.seen.Store(hex, true)
	return true
}

// serveBlob is the web seed: the exact file URL of WebSeedURL, with Range.
func (o *Origin) serveBlob(w http.ResponseWriter, r *http.Request) {
	h := r.PathValue("hex")
	if _, err := ParseID(h); err != nil || strings.ContainsAny(h, "/.") {
		http.Error(w, "bad blob id", http.StatusBadRequest)
		return
	}
	// Only published blobs: the store may hold files nobody published.
	// HEAD (no content) answers for the whole store: dcroll blob publish
	// asks it, before writing the record, whether this origin has the file.
	if r.Method != http.MethodHead && !o.published(h) {
		http.Error(w, "blob not published", http.StatusNotFound)
		return
	}
	p, _ := o.cfg.Store.Path(IDOf(h))
	f, err := os.Open(p)
	if err != nil {
		http.Error(w, "blob not found", http.StatusNotFound)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		http.Error(w, "blob unreadable", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("ETag", `"`+h+`"`)
	http.ServeContent(w, r, "", fi.ModTime(), f)
}
