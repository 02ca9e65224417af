package distrib

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"

	"dcroll/znodes"
)

// rackRefresh re-reads /dc/agents even without a watch event: a children
// watch does not fire when an agent rewrites its payload.
const rackRefresh = 30 * time.Second

// nudgeGap is the least time between two re-reads caused by Nudge.
const nudgeGap = 2 * time.Second

// RackMap caches where every registered agent is (/dc/agents/*: machine,
// rack, dc, peer address). A watch on the children and Nudge trigger a
// re-read; lookups never block on ZooKeeper.
type RackMap struct {
	conn  *znodes.Conn
	log   *slog.Logger
	nudge chan struct{} // lookups of unknown peers (throttled)
	// changed is nudged by the watch on /dc/agents (through ws, the one
	// watch recipe: re-reading never arms a second watch).
	changed chan struct{}
	ws      *znodes.WatchSet

	mu        sync.RWMutex
	byAddr    map[netip.AddrPort]znodes.Agent
	byIP      map[netip.Addr][]znodes.Agent
	byMachine map[string]znodes.Agent
	loaded    chan struct{}
	loadOnce  sync.Once
}

// NewRackMap returns an empty map; Run fills it.
func NewRackMap(c *znodes.Conn, logger *slog.Logger) *RackMap {
	if logger == nil {
		logger = slog.Default()
	}
	return &RackMap{
		conn:      c,
		log:       logger.With("component", "rackmap"),
		nudge:     make(chan struct{}, 1),
		changed:   make(chan struct{}, 1),
		byAddr:    map[netip.AddrPort]znodes.Agent{},
		byIP:      map[netip.Addr][]znodes.Agent{},
		byMachine: map[string]znodes.Agent{},
		loaded:    make(chan struct{}),
	}
}

// Nudge asks Run to re-read soon (non-blocking).
func (m *RackMap) Nudge() {
	select {
	case m.nudge <- struct{}{}:
	default:
	}
}

// Loaded is closed after the first successful read.
func (m *RackMap) Loaded() <-chan struct{} { return m.loaded }

// Run keeps the map current until ctx ends.
func (m *RackMap) Run(ctx context.Context) error {
	backoff := time.Second
	ws := znodes.NewWatchSet(ctx, m.conn.ZK(), m.changed)
	m.mu.Lock()
	m.ws = ws
	m.mu.Unlock()
	for {
		err := m.load()
		if err != nil {
			m.log.Warn("reading agents failed; retrying", "err", err, "in", backoff)
		}
		var retry <-chan time.Time
		if err != nil {
			retry = time.After(backoff)
		}
		loaded := time.Now()
		select {
		case <-ctx.Done():
			return nil
		case <-m.changed:
		case <-m.nudge:
			// Lookups of unknown peers nudge on every miss: re-read at most
			// every nudgeGap.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Until(loaded.Add(nudgeGap))):
			}
		case <-retry:
		case <-time.After(rackRefresh):
		}
	}
}

// Refresh re-reads the agents now.
func (m *RackMap) Refresh() error {
	return m.load()
}

// load reads /dc/agents: through the watch set once Run started (one
// armed watch at most), plainly before.
func (m *RackMap) load() error {
	p := m.conn.Paths()
	m.mu.RLock()
	ws := m.ws
	m.mu.RUnlock()
	list := func() ([]string, error) {
		if ws != nil {
			return ws.Children(p.Agents())
		}
		names, _, err := m.conn.ZK().Children(p.Agents())
		return names, err
	}
	names, err := list()
	if errors.Is(err, zk.ErrNoNode) {
		if err := m.conn.EnsurePath(p.Agents()); err != nil {
			return err
		}
		names, err = list()
	}
	if err != nil {
		return fmt.Errorf("list %s: %w", p.Agents(), err)
	}
	byAddr := map[netip.AddrPort]znodes.Agent{}
	byIP := map[netip.Addr][]znodes.Agent{}
	byMachine := map[string]znodes.Agent{}
	for _, n := range names {
		var a znodes.Agent
		if _, err := m.conn.GetJSON(p.Agent(n), &a); err != nil {
			if errors.Is(err, zk.ErrNoNode) {
				continue
			}
			return err
		}
		if a.Machine == "" {
			a.Machine = n
		}
		byMachine[a.Machine] = a
		if ap, err := netip.ParseAddrPort(a.PeerAddr); err == nil {
			ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
			byAddr[ap] = a
			byIP[ap.Addr()] = append(byIP[ap.Addr()], a)
		}
	}
	m.mu.Lock()
	m.byAddr, m.byIP, m.byMachine = byAddr, byIP, byMachine
	m.mu.Unlock()
	m.loadOnce.Do(func() { close(m.loaded) })
	return nil
}

// Lookup finds the agent at addr: by exact ip:port, else by IP when only
// one agent has it (incoming connections come from ephemeral ports).
func (m *RackMap) Lookup(addr netip.AddrPort) (znodes.Agent, bool) {
	if m == nil {
		return znodes.Agent{}, false
	}
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	m.mu.RLock()
	defer m.mu.RUnlock()
	if a, ok := m.byAddr[addr]; ok {
		return a, true
	}
	if as := m.byIP[addr.Addr()]; len(as) == 1 {
		return as[0], true
	}
	return znodes.Agent{}, false
}

// InRack reports whether the peer at addr is an agent of rack in data
// center dc: the agent registered with exactly addr, else any agent with
// its IP (incoming connections come from ephemeral ports; test hosts may
// share one). An address no agent has (an origin, a stranger) is not.
func (m *RackMap) InRack(addr netip.AddrPort, dc, rack string) bool {
	if m == nil {
		return false
	}
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	m.mu.RLock()
	defer m.mu.RUnlock()
	if a, ok := m.byAddr[addr]; ok {
		return a.DC == dc && a.Rack == rack
	}
	return slices.ContainsFunc(m.byIP[addr.Addr()], func(a znodes.Agent) bool { return a.DC == dc && a.Rack == rack })
}

// LookupExact finds the agent registered with exactly addr (ip:port): how
// the tracker identifies announcers, since several clients may share an IP.
func (m *RackMap) LookupExact(addr netip.AddrPort) (znodes.Agent, bool) {
	if m == nil {
		return znodes.Agent{}, false
	}
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	m.mu.RLock()
	defer m.mu.RUnlock()
	a, ok := m.byAddr[addr]
	return a, ok
}

// agents returns every registered agent, sorted by machine.
func (m *RackMap) agents() []znodes.Agent {
	if m == nil {
		return nil
	}
	m.mu.RLock()
	out := make([]znodes.Agent, 0, len(m.byMachine))
	for _, a := range m.byMachine {
		out = append(out, a)
	}
	m.mu.RUnlock()
	slices.SortFunc(out, func(a, b znodes.Agent) int { return strings.Compare(a.Machine, b.Machine) })
	return out
}

// Machine returns the agent registered as name.
func (m *RackMap) Machine(name string) (znodes.Agent, bool) {
	if m == nil {
		return znodes.Agent{}, false
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	a, ok := m.byMachine[name]
	return a, ok
}
