package main

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"strconv"
	"strings"

	"dcroll/integration/netns"
)

// The wan mode splits the fabric into two data centers: rack r0, the
// origin and ZooKeeper stay on the core bridge (dc1); every other rack's
// uplink moves to a second core bridge, br-dc2, joined to the first by one
// veth pair, wan-a (dc1 side) / wan-b (dc2 side), shaped in each direction
// with tbf at WANMbit and a netem delay of WANDelay below it. The rest of
// the fabric (host links, rack uplinks) is unchanged.
type wanLink struct {
	topo    *netns.Topology
	dc2     []string // racks of dc2
	delayed bool     // netem applied (the kernel may lack sch_netem)
}

const dc2 = "dc2"

func buildWAN(ctx context.Context, topo *netns.Topology, cfg Config) (*wanLink, error) {
	if len(topo.Racks) < 2 {
		return nil, fmt.Errorf("the wan mode needs at least 2 racks (have %d)", len(topo.Racks))
	}
	w := &wanLink{topo: topo, dc2: topo.Racks[1:]}
	fab, mtu := topo.Fabric, strconv.Itoa(topo.Config.MTU)
	steps := [][]string{
		{"ip", "-n", fab, "link", "add", "br-dc2", "mtu", mtu, "type", "bridge", "stp_state", "0"},
		{"ip", "-n", fab, "link", "set", "br-dc2", "up"},
		{"ip", "-n", fab, "link", "add", "wan-a", "mtu", mtu, "type", "veth", "peer", "name", "wan-b", "mtu", mtu},
		{"ip", "-n", fab, "link", "set", "wan-a", "master", "br-core", "up"},
		{"ip", "-n", fab, "link", "set", "wan-b", "master", "br-dc2", "up"},
	}
	for _, rack := range w.dc2 {
		steps = append(steps, []string{"ip", "-n", fab, "link", "set", "dn-" + rack, "master", "br-dc2"})
	}
	bytesPerSec := cfg.WANMbit * 1e6 / 8
	burst := strconv.Itoa(max(int(bytesPerSec*0.010), 128<<10))
	rate := strconv.FormatFloat(cfg.WANMbit*1000, 'f', 0, 64) + "kbit"
	delay := strconv.FormatFloat(float64(cfg.WANDelay.Microseconds())/1000, 'f', 3, 64) + "ms"
	var netem [][]string
	for _, dev := range []string{"wan-a", "wan-b"} {
		steps = append(steps,
			[]string{"tc", "-n", fab, "qdisc", "replace", "dev", dev, "root", "handle", "1:", "tbf", "rate", rate, "burst", burst, "latency", "50ms"})
		// tbf is classful (one class, 1:1): netem below it delays what tbf
		// lets through. The netem queue must hold a delay's worth of
		// packets at the rate (10000 is plenty).
		netem = append(netem, []string{"tc", "-n", fab, "qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:", "netem", "delay", delay, "limit", "10000"})
	}
	for _, st := range steps {
		if out, err := exec.CommandContext(ctx, st[0], st[1:]...).CombinedOutput(); err != nil {
			_ = w.remove(context.Background())
			return nil, fmt.Errorf("%s: %v: %s", strings.Join(st, " "), err, out)
		}
	}
	if cfg.WANDelay <= 0 {
		return w, nil
	}
	w.delayed = true
	for _, st := range netem {
		if out, err := exec.CommandContext(ctx, st[0], st[1:]...).CombinedOutput(); err != nil {
			// This machine's kernel has no sch_netem (CONFIG_NET_SCH_NETEM
			// is not set): run rate-limited only and say so in the result.
			w.delayed = false
			slog.Warn("no WAN delay: netem unavailable", "cmd", strings.Join(st, " "), "err", err, "out", strings.TrimSpace(string(out)))
			break
		}
	}
	return w, nil
}

// dcOf is a rack's data center in the wan mode.
func (w *wanLink) dcOf(rack string) string {
	for _, r := range w.dc2 {
		if r == rack {
			return dc2
		}
	}
	return dataCenter
}

// bytesIntoDC2 is what crossed the WAN toward dc2 (wan-a transmits into
// the pair; headers included).
func (w *wanLink) bytesIntoDC2(ctx context.Context) (int64, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", w.topo.Fabric, "cat", "/sys/class/net/wan-a/statistics/tx_bytes").Output()
	if err != nil {
		return 0, fmt.Errorf("wan counters: %w", err)
	}
	return strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
}

// remove puts every rack back on the core bridge and deletes the WAN.
func (w *wanLink) remove(ctx context.Context) error {
	fab := w.topo.Fabric
	var errs []string
	for _, rack := range w.dc2 {
		if out, err := exec.CommandContext(ctx, "ip", "-n", fab, "link", "set", "dn-"+rack, "master", "br-core").CombinedOutput(); err != nil {
			errs = append(errs, fmt.Sprintf("%v: %s", err, out))
		}
	}
	for _, dev := range []string{"wan-a", "br-dc2"} {
		if out, err := exec.CommandContext(ctx, "ip", "-n", fab, "link", "del", dev).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Sprintf("%v: %s", err, out))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("remove wan: %s", strings.Join(errs, "; "))
	}
	return nil
}
