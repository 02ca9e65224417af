package netns

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultPrefix starts the name of every namespace this package creates.
const DefaultPrefix = "dcb-"

// Addresses of the core hosts.
var (
	SeederIP = netip.MustParseAddr("10.77.0.2")
	ZKIP     = netip.MustParseAddr("10.77.0.3")
)

// ErrUnavailable is returned by Available when namespaces cannot be built here.
var ErrUnavailable = errors.New("network namespaces unavailable")

// Rates are link speeds in Mbit/s; 0 leaves a link unshaped.
type Rates struct {
	HostMbit   float64 `json:"host_mbit"`   // every host link, each direction
	UplinkMbit float64 `json:"uplink_mbit"` // every rack uplink, each direction
	SeederMbit float64 `json:"seeder_mbit"` // the seeder's link, each direction
}

// Config describes a topology.
type Config struct {
	// Prefix starts every namespace name (default DefaultPrefix). Use a distinct
	// prefix for topologies that may exist at the same time.
	Prefix string
	// Racks and HostsPerRack size the fabric (each 1..250).
	Racks, HostsPerRack int
	// Seeder and ZK add the seeder host and the ZooKeeper host on the core.
	Seeder, ZK bool
	// Rates shape the links (see Shape).
	Rates Rates
	// MTU of every link (default 1500).
	MTU int
	// Logger receives one line per step (default: discard).
	Logger *slog.Logger
}

// Kind tells what a host is for.
type Kind string

// Host kinds.
const (
	KindHost   Kind = "host"
	KindSeeder Kind = "seeder"
	KindZK     Kind = "zk"
)

// Host is one namespace with one interface, eth0.
type Host struct {
	Kind    Kind
	NS      string     // namespace name, e.g. "dcb-r0h1"
	Machine string     // machine name, e.g. "r0h1", "seeder", "zk"
	Rack    string     // "r0"; empty for core hosts
	IP      netip.Addr // address of eth0 (prefix /16)
	fabIf   string     // the peer interface in the fabric namespace
}

// Topology is a built fabric. Close deletes it.
type Topology struct {
	Config Config
	Racks  []string // rack names in order: r0, r1, ...
	Hosts  []*Host  // rack hosts, rack-major order
	Seeder *Host    // nil unless Config.Seeder
	ZK     *Host    // nil unless Config.ZK
	Fabric string   // the fabric namespace
	log    *slog.Logger
	closed bool
}

// Available reports whether this process can build topologies: root, ip and
// tc present, and namespaces creatable. The error says what is missing.
func Available(ctx context.Context) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: need root", ErrUnavailable)
	}
	for _, tool := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%w: %s not found (install iproute2)", ErrUnavailable, tool)
		}
	}
	probe := DefaultPrefix + "probe-" + strconv.Itoa(os.Getpid())
	if err := run(ctx, "ip", "netns", "add", probe); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if err := run(ctx, "ip", "netns", "del", probe); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return nil
}

// Cleanup deletes every namespace whose name starts with prefix, killing the
// processes still running in them first (they can only be ours). It is what
// Build calls before building, so leftovers of a crashed run disappear.
func Cleanup(ctx context.Context, prefix string) error {
	if prefix == "" {
		return errors.New("netns cleanup: empty prefix would match every namespace")
	}
	names, err := List(ctx, prefix)
	if err != nil {
		return err
	}
	var errs []error
	for _, ns := range names {
		out, _ := output(ctx, "ip", "netns", "pids", ns)
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				_ = unix.Kill(pid, unix.SIGKILL)
			}
		}
		if err := run(ctx, "ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// List returns the namespaces whose name starts with prefix.
func List(ctx context.Context, prefix string) ([]string, error) {
	out, err := output(ctx, "ip", "netns", "list")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], prefix) {
			names = append(names, f[0])
		}
	}
	return names, nil
}

// Build creates the namespaces, links and shaping of cfg. On error it removes
// what it created.
func Build(ctx context.Context, cfg Config) (_ *Topology, err error) {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.MTU == 0 {
		cfg.MTU = 1500
	}
	if cfg.Racks < 1 || cfg.Racks > 250 || cfg.HostsPerRack < 1 || cfg.HostsPerRack > 250 {
		return nil, fmt.Errorf("netns build: racks=%d hosts=%d: each must be 1..250", cfg.Racks, cfg.HostsPerRack)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := Cleanup(ctx, cfg.Prefix); err != nil {
		return nil, fmt.Errorf("netns build: remove leftovers: %w", err)
	}
	t := &Topology{Config: cfg, Fabric: cfg.Prefix + "fab", log: log}
	defer func() {
		if err != nil {
			_ = t.Close()
		}
	}()
	mtu := strconv.Itoa(cfg.MTU)
	fab := t.Fabric
	if err := run(ctx, "ip", "netns", "add", fab); err != nil {
		return nil, err
	}
	// Bridged frames must not traverse iptables of the fabric (costs CPU).
	for _, k := range []string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables", "bridge-nf-call-arptables"} {
		_ = run(ctx, "ip", "netns", "exec", fab, "sh", "-c", "echo 0 > /proc/sys/net/bridge/"+k)
	}
	steps := [][]string{
		{"ip", "-n", fab, "link", "set", "lo", "up"},
		{"ip", "-n", fab, "link", "add", "br-core", "mtu", mtu, "type", "bridge", "stp_state", "0"},
		{"ip", "-n", fab, "link", "set", "br-core", "up"},
	}
	for r := 0; r < cfg.Racks; r++ {
		rack := "r" + strconv.Itoa(r)
		t.Racks = append(t.Racks, rack)
		br, up, dn := "br-"+rack, "up-"+rack, "dn-"+rack
		steps = append(steps,
			[]string{"ip", "-n", fab, "link", "add", br, "mtu", mtu, "type", "bridge", "stp_state", "0"},
			[]string{"ip", "-n", fab, "link", "add", up, "mtu", mtu, "type", "veth", "peer", "name", dn, "mtu", mtu},
			[]string{"ip", "-n", fab, "link", "set", up, "master", br, "up"},
			[]string{"ip", "-n", fab, "link", "set", dn, "master", "br-core", "up"},
			[]string{"ip", "-n", fab, "link", "set", br, "up"},
		)
		for h := 0; h < cfg.HostsPerRack; h++ {
			machine := fmt.Sprintf("%sh%d", rack, h)
			t.Hosts = append(t.Hosts, &Host{Kind: KindHost, NS: cfg.Prefix + machine, Machine: machine, Rack: rack,
				IP: netip.AddrFrom4([4]byte{10, 77, byte(r + 1), byte(h + 1)}), fabIf: "h-" + machine})
		}
	}
	if err := runAll(ctx, steps); err != nil {
		return nil, err
	}
	all := append([]*Host(nil), t.Hosts...)
	if cfg.Seeder {
		t.Seeder = &Host{Kind: KindSeeder, NS: cfg.Prefix + "seeder", Machine: "seeder", IP: SeederIP, fabIf: "seed"}
		all = append(all, t.Seeder)
	}
	if cfg.ZK {
		t.ZK = &Host{Kind: KindZK, NS: cfg.Prefix + "zk", Machine: "zk", IP: ZKIP, fabIf: "zk"}
		all = append(all, t.ZK)
	}
	for _, h := range all {
		bridge := "br-core"
		if h.Rack != "" {
			bridge = "br-" + h.Rack
		}
		if err := runAll(ctx, [][]string{
			{"ip", "netns", "add", h.NS},
			{"ip", "-n", fab, "link", "add", h.fabIf, "mtu", mtu, "type", "veth", "peer", "name", "eth0", "netns", h.NS, "mtu", mtu},
			{"ip", "-n", fab, "link", "set", h.fabIf, "master", bridge, "up"},
			{"ip", "-n", h.NS, "link", "set", "lo", "up"},
			{"ip", "-n", h.NS, "addr", "add", h.IP.String() + "/16", "dev", "eth0"},
			{"ip", "-n", h.NS, "link", "set", "eth0", "up"},
		}); err != nil {
			return nil, err
		}
	}
	if err := t.Shape(ctx, cfg.Rates); err != nil {
		return nil, err
	}
	log.Info("topology built", "racks", cfg.Racks, "hosts_per_rack", cfg.HostsPerRack,
		"host_mbit", cfg.Rates.HostMbit, "uplink_mbit", cfg.Rates.UplinkMbit, "seeder_mbit", cfg.Rates.SeederMbit)
	return t, nil
}

// Shape (re)applies link rates: a tbf qdisc on the egress of both ends of
// every link; a zero rate removes shaping from that kind of link. The ZooKeeper
// host is never shaped.
func (t *Topology) Shape(ctx context.Context, r Rates) error {
	var steps [][]string
	for _, h := range t.Hosts {
		steps = append(steps, qdisc(h.NS, "eth0", r.HostMbit), qdisc(t.Fabric, h.fabIf, r.HostMbit))
	}
	for _, rack := range t.Racks {
		steps = append(steps, qdisc(t.Fabric, "up-"+rack, r.UplinkMbit), qdisc(t.Fabric, "dn-"+rack, r.UplinkMbit))
	}
	if t.Seeder != nil {
		steps = append(steps, qdisc(t.Seeder.NS, "eth0", r.SeederMbit), qdisc(t.Fabric, t.Seeder.fabIf, r.SeederMbit))
	}
	if err := runAll(ctx, steps); err != nil {
		return fmt.Errorf("shape links: %w", err)
	}
	t.Config.Rates = r
	return nil
}

// qdisc returns the tc command that shapes dev in ns to mbit (or removes the
// shaping when mbit is 0; "replace" with pfifo is then used so the command is
// idempotent). burst is 10 ms at the rate but at least 128 KiB: tbf splits
// every packet larger than its burst, and veths carry 64 KiB GSO packets, so
// a smaller burst makes the kernel segment everything (softirq CPU). Queue:
// 50 ms.
func qdisc(ns, dev string, mbit float64) []string {
	if mbit <= 0 {
		return []string{"tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "pfifo", "limit", "1000"}
	}
	bytesPerSec := mbit * 1e6 / 8
	burst := max(int(bytesPerSec*0.010), 128<<10)
	return []string{"tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf",
		"rate", strconv.FormatFloat(mbit*1000, 'f', 0, 64) + "kbit",
		"burst", strconv.Itoa(burst), "latency", "50ms"}
}

// Close kills the processes left in the topology's namespaces and deletes
// them (which deletes every interface, bridge and qdisc). Safe to call twice.
func (t *Topology) Close() error {
	if t.closed {
		return nil
	}
	t.closed = true
	// A fresh context: Close usually runs while the caller's is being canceled.
	err := Cleanup(context.Background(), t.Config.Prefix)
	if err != nil {
		t.log.Warn("topology cleanup", "err", err)
	}
	return err
}

// Command returns an exec.Cmd that runs name with args inside h's namespace
// (through "ip netns exec"), like exec.CommandContext.
func (t *Topology) Command(ctx context.Context, h *Host, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
}

// Exec runs argv inside h's namespace to completion and returns its combined
// output; a failure's error includes the output.
func (t *Topology) Exec(ctx context.Context, h *Host, argv ...string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, errors.New("netns exec: empty argv")
	}
	out, err := t.Command(ctx, h, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("on %s: %s: %w: %s", h.Machine, strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// Do runs fn on a fresh OS thread that has joined h's network namespace.
// Sockets that fn creates (net.Listen, net.Dial) belong to that namespace and
// may be used from any goroutine afterwards. fn must not start goroutines
// that create sockets. The thread is discarded when fn returns.
func (h *Host) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// No UnlockOSThread: a goroutine that exits locked takes its thread
		// (and its namespace) with it, so no other goroutine ever runs there.
		runtime.LockOSThread()
		f, err := os.Open("/var/run/netns/" + h.NS)
		if err != nil {
			errc <- fmt.Errorf("open namespace of %s: %w", h.Machine, err)
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter namespace of %s: %w", h.Machine, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// LinkBytes counts the bytes of one link in each direction.
type LinkBytes struct {
	Down int64 `json:"down"` // core -> rack (or toward the host)
	Up   int64 `json:"up"`   // rack -> core (or from the host)
}

// Uplinks returns the byte counters of every rack uplink, by rack name. Take
// one snapshot before and one after a run and subtract (Sub).
func (t *Topology) Uplinks(ctx context.Context) (map[string]LinkBytes, error) {
	stats, err := t.fabricStats(ctx)
	if err != nil {
		return nil, err
	}
	m := make(map[string]LinkBytes, len(t.Racks))
	for _, rack := range t.Racks {
		s, ok := stats["dn-"+rack]
		if !ok {
			return nil, fmt.Errorf("uplink counters: interface dn-%s missing in %s", rack, t.Fabric)
		}
		m[rack] = LinkBytes{Down: s.tx, Up: s.rx}
	}
	return m, nil
}

// HostLink returns the byte counters of h's link (Down: toward h).
func (t *Topology) HostLink(ctx context.Context, h *Host) (LinkBytes, error) {
	stats, err := t.fabricStats(ctx)
	if err != nil {
		return LinkBytes{}, err
	}
	s, ok := stats[h.fabIf]
	if !ok {
		return LinkBytes{}, fmt.Errorf("link counters: interface %s missing in %s", h.fabIf, t.Fabric)
	}
	return LinkBytes{Down: s.tx, Up: s.rx}, nil
}

// Sub returns after - before per key.
func Sub(after, before map[string]LinkBytes) map[string]LinkBytes {
	d := make(map[string]LinkBytes, len(after))
	for k, a := range after {
		b := before[k]
		d[k] = LinkBytes{Down: a.Down - b.Down, Up: a.Up - b.Up}
	}
	return d
}

type ifStats struct{ rx, tx int64 }

func (t *Topology) fabricStats(ctx context.Context) (map[string]ifStats, error) {
	out, err := output(ctx, "ip", "-n", t.Fabric, "-j", "-s", "link", "show")
	if err != nil {
		return nil, err
	}
	var links []struct {
		Name  string `json:"ifname"`
		Stats struct {
			RX struct {
				Bytes int64 `json:"bytes"`
			} `json:"rx"`
			TX struct {
				Bytes int64 `json:"bytes"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		return nil, fmt.Errorf("parse ip -j -s link output: %w", err)
	}
	m := make(map[string]ifStats, len(links))
	for _, l := range links {
		m[l.Name] = ifStats{rx: l.Stats.RX.Bytes, tx: l.Stats.TX.Bytes}
	}
	return m, nil
}

func runAll(ctx context.Context, steps [][]string) error {
	for _, s := range steps {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

func run(ctx context.Context, name string, args ...string) error {
	_, err := output(ctx, name, args...)
	return err
}

func output(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}
