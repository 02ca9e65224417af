package distrib

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/go-zookeeper/zk"

	"dcroll/znodes"
)

// recovery is one download's membership of its blob's recovering set,
// /dc/recovering/<hex>/<machine> (ephemeral): the hosts that lost every
// source beyond their rack. When the origin dies, each rack's gateway is
// such a host (its chain has nothing it lacks), and the rack spread
// (spreadSegment) left the racks holding different pieces, so the
// gateways trade with each other and pass what they get down their
// chains: about one more copy into each rack. Before the set, a stalled
// host added every agent of its data center; the other racks' members then
// pulled from it too, and the fleet moved 2.7-3.3 copies per rack after
// the origin died (330 s for 128 MiB, against 72 s without the fault).
//
// The set lives in ZooKeeper, not the tracker: the tracker is usually the
// origin's and dies with it. Members are found by a children watch; each
// is handed to the client once.
//
// The fetch loop owns a recovery (join, newPeers, leave); the watch
// goroutine only sends on updates.
type recovery struct {
	conn    *znodes.Conn
	log     *slog.Logger
	hex     string
	machine string

	// updates carries the set's latest member list (capacity one; a newer
	// list replaces an unread one). The fetch loop receives it.
	updates chan []string
	added   map[netip.AddrPort]bool // handed to the client already

	joined bool
	cancel context.CancelFunc // stops the watch
	done   chan struct{}      // closed when the watch goroutine ends
}

func newRecovery(conn *znodes.Conn, log *slog.Logger, hex, machine string) *recovery {
	return &recovery{conn: conn, log: log, hex: hex, machine: machine,
		updates: make(chan []string, 1), added: map[netip.AddrPort]bool{}}
}

// join marks this host recovering (once) and starts watching the set.
// An error means no marker: the caller falls back to its data center's
// agents.
func (r *recovery) join(ctx context.Context) error {
	if r.joined {
		return nil
	}
	p := r.conn.Paths()
	dir := p.Recovering(r.hex)
	if err := r.conn.EnsurePath(dir); err != nil {
		return err
	}
	if _, err := r.conn.Create(p.RecoveringMachine(r.hex, r.machine), nil, zk.FlagEphemeral); err != nil && !errors.Is(err, zk.ErrNodeExists) {
		return err
	}
	wctx, cancel := context.WithCancel(ctx)
	r.joined, r.cancel, r.done = true, cancel, make(chan struct{})
	go r.watch(wctx, dir)
	return nil
}

// watch sends the set's members on every change until ctx ends.
func (r *recovery) watch(ctx context.Context, dir string) {
	defer close(r.done)
	changed := make(chan struct{}, 1)
	ws := znodes.NewWatchSet(ctx, r.conn.ZK(), changed)
	for {
		names, err := ws.Children(dir)
		if err != nil {
			r.log.Warn("reading the recovering set failed; retrying", "path", dir, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		select {
		case <-r.updates: // replaced by the newer list
		default:
		}
		r.updates <- slices.Clone(names)
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// newPeers returns the peer addresses of the members in names that are
// agents of the data center dc ("" any) other than this host, and were not
// returned before.
func (r *recovery) newPeers(racks *RackMap, names []string, dc string) []netip.AddrPort {
	var out []netip.AddrPort
	for _, name := range names {
		if name == r.machine {
			continue
		}
		a, ok := racks.Machine(name)
		if !ok || (dc != "" && a.DC != dc) {
			continue
		}
		ap, err := netip.ParseAddrPort(a.PeerAddr)
		if err != nil || r.added[ap] {
			continue
		}
		r.added[ap] = true
		out = append(out, ap)
	}
	slices.SortFunc(out, netip.AddrPort.Compare)
	return out
}

// leave removes the marker and stops the watch (the download ended).
func (r *recovery) leave() {
	if !r.joined {
		return
	}
	r.joined = false
	r.cancel()
	<-r.done
	p := r.conn.Paths().RecoveringMachine(r.hex, r.machine)
	if err := r.conn.ZK().Delete(p, -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
		// Ephemeral: it goes with the session at the latest.
		r.log.Warn("leaving the recovering set failed", "path", p, "err", err)
	}
}
