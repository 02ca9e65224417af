package distrib

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"
	"golang.org/x/time/rate"
)

// clientOptions are the knobs of one anacrolix client (origin or node).
type clientOptions struct {
	ListenAddr      string        // ip:port; port 0 picks one
	UploadLimiter   *rate.Limiter // nil: unlimited
	DownloadLimit   *rate.Limiter // nil: unlimited
	Logger          *slog.Logger
	OnUsefulData    func(torrent.ReceivedUsefulDataEvent)
	MaxConnsPerBlob int // 0: library default (50)
	// CongestionControl of the client's TCP sockets ("": the default,
	// DefaultCongestionControl; "system": the kernel's).
	CongestionControl string
	// wrapListener, if set, wraps the swarm listener (tests).
	wrapListener func(net.Listener) net.Listener
}

// dialTimeout bounds one outgoing TCP connect (peers, tracker, web seed).
const dialTimeout = 10 * time.Second

// client is an anacrolix client with the TCP listener it was given.
type client struct {
	*torrent.Client
	ln net.Listener
}

// Close closes the client, then its listener (whose accept loop then sees
// the client closed and returns).
func (c *client) Close() []error {
	errs := c.Client.Close()
	if err := c.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		errs = append(errs, err)
	}
	return errs
}

// newClient builds a production-configured anacrolix client. Settings and
// why (see BITTORRENT-NOTES.md):
//   - Seed: every agent uploads for the whole swarm, also after completing.
//   - NoDHT, PEX off, no uTP, no WebTorrent, no UPnP: a data center swarm is
//     found through our tracker only; peers must come from its rack ranking
//     (PEX would leak cross-rack peers around it).
//   - MaxAllocPeerRequestDataPerConn = 16 MiB and KeepAliveTimeout = 1 s:
//     work-arounds for two v1.59.1 stalls (FIFO upload reservations vs map
//     order, and a lost wake-up with UploadRateLimiter).
//   - DropDuplicatePeerIds stays off: fetches drop duplicate connections
//     themselves (dropDuplicateConns), by a rule both ends agree on as the
//     library's does, so that the stall watch knows which connections went
//     because we closed them (one the library replaces looks like a lost
//     peer and can start a re-route).
//   - The TCP listener and dialer are ours (the library's built-in TCP
//     socket is disabled): every socket gets the congestion control of
//     socketControl (see DefaultCongestionControl).
//   - When listening on a specific IP, every outgoing connection (peers,
//     tracker, web seeds) is bound to it, so that peers and the tracker see
//     the address registered in /dc/agents, and a peer banned for bad data
//     is banned by its own IP (several clients on one host differ by IP).
//   - MaxUnverifiedBytes = 0 (no limit): v1.59.1 walks its piece order
//     (partial, then rarest first) and stops after 64 MiB of incomplete
//     pieces, counting pieces that no connected peer has. Rarest first puts
//     pieces held by nobody at the front, so a host never asked its rack
//     peers for the pieces they had. Nodes keep their own window of whole
//     pieces instead, of pieces a peer can send (steering).
//   - DefaultStorage refuses everything: each torrent gets its own storage
//     rooted in a directory named by a verified hash (never by metainfo).
func newClient(o clientOptions) (*client, error) {
	host, portStr, err := net.SplitHostPort(o.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: want ip:port: %w", o.ListenAddr, err)
	}
	if _, err := strconv.Atoi(portStr); err != nil {
		return nil, fmt.Errorf("listen address %q: bad port: %w", o.ListenAddr, err)
	}
	var ip netip.Addr
	if host != "" {
		if ip, err = netip.ParseAddr(host); err != nil {
			return nil, fmt.Errorf("listen address %q: want an IP literal: %w", o.ListenAddr, err)
		}
	}
	cfg := torrent.NewDefaultClientConfig()
	cfg.Seed = true
	cfg.NoDHT = true
	cfg.DisablePEX = true
	cfg.DisableTCP = true // ours, below
	cfg.DialForPeerConns = false
	cfg.DisableUTP = true
	cfg.DisableWebtorrent = true
	cfg.NoDefaultPortForwarding = true
	cfg.MaxAllocPeerRequestDataPerConn = 16 << 20
	cfg.KeepAliveTimeout = time.Second
	cfg.MaxUnverifiedBytes = 0
	cfg.DefaultStorage = refusingStorage{}
	if o.MaxConnsPerBlob > 0 {
		cfg.EstablishedConnsPerTorrent = o.MaxConnsPerBlob
	}
	if o.UploadLimiter != nil {
		cfg.UploadRateLimiter = o.UploadLimiter
	}
	cfg.DownloadRateLimiter = o.DownloadLimit
	if o.Logger != nil {
		cfg.Slogger = o.Logger
	}
	if o.OnUsefulData != nil {
		cfg.Callbacks.ReceivedUsefulData = append(cfg.Callbacks.ReceivedUsefulData, o.OnUsefulData)
	}
	network := "tcp"
	var bindIP net.IP
	if ip.IsValid() {
		if ip.Is4() {
			cfg.DisableIPv6 = true
			network = "tcp4"
		} else {
			cfg.DisableIPv4 = true
			network = "tcp6"
		}
		if !ip.IsUnspecified() {
			bindIP = ip.AsSlice()
		}
	}
	ctl := newSocketControl(o.CongestionControl, o.Logger)
	d := ctl.dialer(bindIP)
	d.KeepAlive = -1 // BitTorrent connections keep themselves alive
	cfg.TrackerDialContext = d.DialContext
	cfg.HTTPDialContext = d.DialContext
	lc := net.ListenConfig{Control: ctl.Control, KeepAlive: -1}
	ln, err := lc.Listen(context.Background(), network, o.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("start bittorrent client: listen on %s: %w", o.ListenAddr, err)
	}
	cl, err := torrent.NewClient(cfg)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("start bittorrent client on %s: %w", o.ListenAddr, err)
	}
	cl.AddDialer(torrent.NetworkDialer{Network: network, Dialer: d})
	if o.wrapListener != nil {
		ln = o.wrapListener(ln)
	}
	cl.AddListener(ln)
	return &client{Client: cl, ln: ln}, nil
}

// clientAddr is the client's listen address with the configured host.
func clientAddr(cl *client, listenAddr string) string {
	host, _, _ := net.SplitHostPort(listenAddr)
	return net.JoinHostPort(host, strconv.Itoa(cl.LocalPort()))
}

// refusingStorage is the client's default storage: every torrent must be
// added with its own storage.
type refusingStorage struct{}

func (refusingStorage) OpenTorrent(context.Context, *metainfo.Info, metainfo.Hash) (storage.TorrentImpl, error) {
	return storage.TorrentImpl{}, errors.New("dcroll: torrent added without its own storage")
}
