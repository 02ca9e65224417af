package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"

	"dcroll/distrib"
	"dcroll/integration/netns"
	"dcroll/znodes"
)

// dataCenter is the DC every benchmark host registers in.
const dataCenter = "dc1"

// zkRoot gives each swarm mode its own dcroll root, so agents and blobs of
// one mode never leak into the next.
func zkRoot(mode string) string { return "/dcb-" + mode }

func dialZK(ctx context.Context, addr, mode string, log *slog.Logger) (*znodes.Conn, error) {
	conn, err := znodes.Dial(ctx, znodes.Options{Servers: addr, Root: zkRoot(mode), Logger: log,
		SessionTimeout: 10 * time.Second, ConnectTimeout: 30 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("dial zookeeper %s: %w", addr, err)
	}
	return conn, nil
}

// runSwarmOrigin publishes the blob and runs distrib's origin (seeder, web
// seed, tracker) with rack ordering on (rack) or off (random).
func runSwarmOrigin(ctx context.Context, f originFlags, log *slog.Logger) error {
	conn, err := dialZK(ctx, f.zk, f.mode, log)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.EnsureSkeleton(); err != nil {
		return fmt.Errorf("zookeeper skeleton: %w", err)
	}
	st, err := distrib.OpenStore(f.dir)
	if err != nil {
		return err
	}
	o, err := distrib.NewOrigin(distrib.OriginConfig{
		Store: st, Conn: conn, ListenAddr: f.listen, HTTPAddr: f.httpAddr, Logger: log, DC: f.dc, CongestionControl: f.cc,
		Ranking: distrib.Ranking{Random: f.mode == ModeRandom, ChainSpan: f.chainSpan}, OnAnswer: logAnswer(log),
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- o.Run(ctx) }()
	var trackers []string
	maps := []*distrib.RackMap{o.Racks()}
	if f.mode == ModeRackGW {
		var gwMap *distrib.RackMap
		if trackers, gwMap, err = gatewayTracker(ctx, conn, o, f, log); err != nil {
			cancel()
			<-errc
			return err
		}
		maps = append(maps, gwMap)
	}
	blobs, err := distrib.Publish(ctx, conn, st, []string{f.file}, distrib.PublishOptions{OriginURL: o.URL(), Trackers: trackers, PieceLength: f.pieceLength})
	if err != nil {
		cancel()
		<-errc
		return fmt.Errorf("publish: %w", err)
	}
	b := blobs[0]
	hexDigest, _ := distrib.ParseID(b.ID)
	// Ready only once the origin seeds the blob (its pieces are verified).
	o.Nudge()
	for !slices.Contains(o.Seeding(), b.ID) {
		select {
		case err := <-errc:
			return fmt.Errorf("origin stopped before seeding: %w", err)
		case <-ctx.Done():
			<-errc
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	emit(event{Event: "ready", ID: b.ID, URL: distrib.WebSeedURL(o.URL(), hexDigest)})
	go serveSyncs(ctx, f, maps)
	log.Info("seeding", "id", b.ID, "piece_length", b.PieceLength, "peer_addr", o.PeerAddr(), "random", f.mode == ModeRandom)
	err = <-errc
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// gatewayTracker is the rack-gw experiment: a second distrib tracker, on
// the next port after the origin's HTTP port, that knows no origin. The
// origin registers as the agent "seeder" of its own rack "core", so the
// ranking hands it out like any other rack's gateway: to each rack's
// gateway only, not to every member. It returns the announce URL to publish.
func gatewayTracker(ctx context.Context, conn *znodes.Conn, o *distrib.Origin, f originFlags, log *slog.Logger) ([]string, *distrib.RackMap, error) {
	data, err := znodes.Encode(&znodes.Agent{Machine: "seeder", Rack: "core", DC: dataCenter, PeerAddr: o.PeerAddr(), Since: time.Now()})
	if err == nil {
		_, err = conn.Create(conn.Paths().Agent("seeder"), data, zk.FlagEphemeral)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("register the seeder as an agent: %w", err)
	}
	host, port, err := net.SplitHostPort(f.httpAddr)
	if err != nil {
		return nil, nil, err
	}
	p, _ := strconv.Atoi(port)
	addr := net.JoinHostPort(host, strconv.Itoa(p+1))
	racks := distrib.NewRackMap(conn, log)
	if err := racks.Refresh(); err != nil {
		return nil, nil, err
	}
	go func() { _ = racks.Run(ctx) }()
	tr := distrib.NewTracker(distrib.TrackerConfig{Racks: racks, Ranking: distrib.Ranking{CrossRack: 16}, Logger: log, OnAnswer: logAnswer(log)})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/announce", tr)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	return []string{"http://" + addr + "/announce"}, racks, nil
}

// serveSyncs answers every "sync" with "synced" once each rack map knows
// every machine of f.agents. Agents of a real data center register long
// before a rollout; without this the first announces (within a second or
// two of registration) find a cold map and get an unranked answer for a
// whole announce interval (60 s).
func serveSyncs(ctx context.Context, f originFlags, maps []*distrib.RackMap) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.syncs:
		}
		start := time.Now()
		for !knowsAll(maps, f.agents) {
			for _, m := range maps {
				m.Nudge()
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
		slog.Default().Debug("rack maps synced", "after", time.Since(start))
		emit(event{Event: "synced", FetchNS: time.Since(start).Nanoseconds()})
	}
}

func knowsAll(maps []*distrib.RackMap, machines []string) bool {
	for _, m := range maps {
		for _, name := range machines {
			if _, ok := m.Machine(name); !ok {
				return false
			}
		}
	}
	return true
}

// logAnswer logs every tracker answer as "answer self=r0h1 peers=r0h2,r1h0,origin"
// (the origin log), to see who was handed which racks.
func logAnswer(log *slog.Logger) func(distrib.Answer) {
	return func(a distrib.Answer) {
		var peers []string
		cross := 0
		for _, p := range a.Peers {
			switch {
			case p.Origin:
				peers = append(peers, "origin")
			case p.Machine != "":
				peers = append(peers, p.Machine)
			default:
				peers = append(peers, p.Addr.String())
			}
			if !p.Origin && p.Rack != a.Self.Rack {
				cross++
			}
		}
		log.Info("answer", "self", a.Self.Machine, "rack", a.Self.Rack, "cross_rack", cross, "peers", strings.Join(peers, ","))
	}
}

// swarmFetcher is one agent: a distrib.Node registered in /dc/agents with
// its rack, so the tracker can rank it.
type swarmFetcher struct {
	conn *znodes.Conn
	node *distrib.Node
	id   string
	log  *slog.Logger

	mu   sync.Mutex
	last znodes.BlobProgress
}

func newSwarmFetcher(ctx context.Context, f hostFlags, log *slog.Logger) (fetcher, error) {
	conn, err := dialZK(ctx, f.zk, f.mode, log)
	if err != nil {
		return nil, err
	}
	node, err := distrib.NewNode(ctx, distrib.NodeConfig{DataDir: f.dir, ListenAddr: f.listen, Conn: conn, Machine: f.machine, Logger: log,
		RequestWindow: f.window, CongestionControl: f.cc})
	if err != nil {
		conn.Close()
		return nil, err
	}
	data, err := znodes.Encode(&znodes.Agent{Machine: f.machine, Rack: f.rack, DC: f.dc, PeerAddr: node.PeerAddr(), Since: time.Now()})
	if err == nil {
		err = conn.EnsurePath(conn.Paths().Agents())
	}
	if err == nil {
		_, err = conn.Create(conn.Paths().Agent(f.machine), data, zk.FlagEphemeral)
	}
	if err != nil {
		_ = node.Close()
		conn.Close()
		return nil, fmt.Errorf("register agent %s: %w", f.machine, err)
	}
	return &swarmFetcher{conn: conn, node: node, id: f.id, log: log}, nil
}

func (s *swarmFetcher) Fetch(ctx context.Context) (string, error) {
	p, err := s.node.Fetch(ctx, s.id, func(p znodes.BlobProgress) {
		s.mu.Lock()
		s.last = p
		s.mu.Unlock()
	})
	s.mu.Lock()
	last := s.last
	s.mu.Unlock()
	s.log.Info("fetch finished", "source", last.Source, "from_rack", last.FromRack, "from_dc", last.FromDC, "from_other", last.FromOther, "err", err)
	return p, err
}

// Status is the host's progress line: bytes held, connections, and whether
// one of them goes to the origin (the host is its rack's gateway).
func (s *swarmFetcher) Status() (bytes int64, peers int, gateway bool) {
	for _, t := range s.node.Client().Torrents() {
		bytes += t.BytesCompleted()
		if t.Info() == nil {
			continue
		}
		for _, pc := range t.PeerConns() {
			peers++
			if pc.RemoteAddr == nil {
				continue
			}
			if ap, err := netip.ParseAddrPort(pc.RemoteAddr.String()); err == nil && ap.Addr() == netns.SeederIP {
				gateway = true
			}
		}
	}
	return bytes, peers, gateway
}

// Have is the host's complete pieces as a hex bitmap (bit i of byte i/8,
// most significant first, as in a BitTorrent bitfield).
func (s *swarmFetcher) Have() string {
	for _, t := range s.node.Client().Torrents() {
		if t.Info() == nil {
			continue
		}
		bits := make([]byte, (t.NumPieces()+7)/8)
		i := 0
		for _, run := range t.PieceStateRuns() {
			for range run.Length {
				if run.Complete {
					bits[i/8] |= 0x80 >> (i % 8)
				}
				i++
			}
		}
		return hex.EncodeToString(bits)
	}
	return ""
}

// Source reports where the bytes came from (see event).
func (s *swarmFetcher) Source() (source string, fromRack, fromDC, fromOther int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last.Source, s.last.FromRack, s.last.FromDC, s.last.FromOther
}

func (s *swarmFetcher) Close() error {
	err := s.node.Close()
	s.conn.Close()
	return err
}
