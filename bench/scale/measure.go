package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"

	"dcroll/integration/zkserver"
)

// ---- pure helpers (unit-tested) ----

// percentile returns the p-th percentile (0..100) of v by linear
// interpolation between closest ranks; NaN for no values.
func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if p <= 0 {
		return s[0]
	}
	if p >= 100 {
		return s[len(s)-1]
	}
	r := p / 100 * float64(len(s)-1)
	lo := int(math.Floor(r))
	hi := int(math.Ceil(r))
	return s[lo] + (s[hi]-s[lo])*(r-float64(lo))
}

// ratio is a/b, NaN when b is not positive.
func ratio(a, b float64) float64 {
	if b <= 0 || math.IsNaN(b) {
		return math.NaN()
	}
	return a / b
}

// mntr is the parsed answer of the four-letter word mntr.
type mntr map[string]float64

// parseMntr reads "key\tvalue" lines; non-numeric values are skipped.
func parseMntr(s string) mntr {
	m := mntr{}
	for line := range strings.SplitSeq(s, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "\t")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			continue
		}
		m[k] = f
	}
	return m
}

// notifications is the number of watch notifications the server has
// fired: watchers triggered by node creation, deletion, data change and
// children change (ZooKeeper 3.6+ summary metrics).
func (m mntr) notifications() float64 {
	return m["zk_sum_node_created_watch_count"] + m["zk_sum_node_deleted_watch_count"] +
		m["zk_sum_node_changed_watch_count"] + m["zk_sum_node_children_watch_count"]
}

// reads counts requests without a transaction (reads, exists, children,
// and also pings and setWatches); writes counts transactions (creates,
// sets, deletes, multis, session creation and closing).
func (m mntr) reads() float64  { return m["zk_cnt_readlatency"] }
func (m mntr) writes() float64 { return m["zk_cnt_updatelatency"] }

// parseProcStatCPU returns utime+stime (clock ticks) from the contents of
// /proc/<pid>/stat.
func parseProcStatCPU(s string) (int64, error) {
	i := strings.LastIndexByte(s, ')') // the command may hold spaces
	if i < 0 {
		return 0, fmt.Errorf("proc stat: no command field in %q", s)
	}
	f := strings.Fields(s[i+1:])
	// after the command: state(3) ppid(4) ... utime(14) stime(15)
	if len(f) < 13 {
		return 0, fmt.Errorf("proc stat: %d fields", len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("proc stat: %w", err)
	}
	return u + st, nil
}

// parseVmRSS returns VmRSS in bytes from the contents of /proc/<pid>/status.
func parseVmRSS(s string) (int64, error) {
	for line := range strings.SplitSeq(s, "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, err
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmRSS line")
}

// clockTicks is sysconf(_SC_CLK_TCK) on Linux.
const clockTicks = 100

func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	t, err := parseProcStatCPU(string(b))
	return time.Duration(t) * time.Second / clockTicks, err
}

func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseVmRSS(string(b))
}

// ---- service event log ----

// event is one line of the services' event log: "up|down <unix.ns>
// <machine> <version> <pid>", written by the wrapper script (service.sh).
type event struct {
	Kind    string // up, down
	At      time.Time
	Machine string
	Version string
}

// parseEvent parses one event line.
func parseEvent(line string) (event, bool) {
	f := strings.Fields(line)
	if len(f) < 4 || (f[0] != "up" && f[0] != "down") {
		return event{}, false
	}
	sec, frac, _ := strings.Cut(f[1], ".")
	s, err := strconv.ParseInt(sec, 10, 64)
	if err != nil {
		return event{}, false
	}
	var ns int64
	if frac != "" {
		frac = (frac + "000000000")[:9]
		if ns, err = strconv.ParseInt(frac, 10, 64); err != nil {
			return event{}, false
		}
	}
	return event{Kind: f[0], At: time.Unix(s, ns), Machine: f[2], Version: f[3]}, true
}

// eventLog reads the event log incrementally.
type eventLog struct {
	path string
	mu   sync.Mutex
	off  int64
	part []byte
	all  []event
}

// poll reads what was appended since the last poll and returns every
// event so far (the slice is shared: do not modify).
func (l *eventLog) poll() []event {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := os.Open(l.path)
	if err != nil {
		return l.all
	}
	defer f.Close()
	if _, err := f.Seek(l.off, 0); err != nil {
		return l.all
	}
	var buf bytes.Buffer
	n, _ := buf.ReadFrom(f)
	l.off += n
	data := append(l.part, buf.Bytes()...)
	last := bytes.LastIndexByte(data, '\n')
	if last < 0 {
		l.part = data
		return l.all
	}
	l.part = slices.Clone(data[last+1:])
	sc := bufio.NewScanner(bytes.NewReader(data[:last+1]))
	for sc.Scan() {
		if e, ok := parseEvent(sc.Text()); ok {
			l.all = append(l.all, e)
		}
	}
	return l.all
}

// since returns the events at or after t, in time order.
func eventsSince(evs []event, t time.Time) []event {
	var out []event
	for _, e := range evs {
		if !e.At.Before(t) {
			out = append(out, e)
		}
	}
	slices.SortStableFunc(out, func(a, b event) int { return a.At.Compare(b.At) })
	return out
}

// runningVersion returns, per machine, the version of its last "up" when
// that is its last event (a machine whose last event is "down" runs
// nothing).
func runningVersion(evs []event) map[string]string {
	last := map[string]event{}
	for _, e := range evs {
		if p, ok := last[e.Machine]; !ok || !e.At.Before(p.At) {
			last[e.Machine] = e
		}
	}
	out := map[string]string{}
	for m, e := range last {
		if e.Kind == "up" {
			out[m] = e.Version
		}
	}
	return out
}

// step is one machine's upgrade in a rollout, from its service's events.
type step struct {
	Machine string
	Down    time.Time // old version got SIGTERM
	Up      time.Time // new version started (zero: not yet)
}

// steps pairs, per machine, the first "down" of a version other than
// target with the first later "up" of target, in the order of the downs.
func steps(evs []event, target string) []step {
	byMachine := map[string]*step{}
	var order []string
	for _, e := range evs {
		s := byMachine[e.Machine]
		switch {
		case e.Kind == "down" && e.Version != target && s == nil:
			byMachine[e.Machine] = &step{Machine: e.Machine, Down: e.At}
			order = append(order, e.Machine)
		case e.Kind == "up" && e.Version == target && s != nil && s.Up.IsZero():
			s.Up = e.At
		}
	}
	out := make([]step, 0, len(order))
	for _, m := range order {
		out = append(out, *byMachine[m])
	}
	slices.SortStableFunc(out, func(a, b step) int { return a.Down.Compare(b.Down) })
	return out
}

// overheads are, for consecutive steps i, i+1 (in down order), the time
// from machine i serving the new version (its "up" plus minHealthy, the
// earliest the agent may count it healthy) to machine i+1 going down.
// Only pairs where machine i is up are counted.
func overheads(st []step, minHealthy time.Duration) []time.Duration {
	var out []time.Duration
	for i := 0; i+1 < len(st); i++ {
		if st[i].Up.IsZero() {
			continue
		}
		out = append(out, st[i+1].Down.Sub(st[i].Up)-minHealthy)
	}
	return out
}

// busyPeriods counts the stretches of time during which at least one
// machine is between its down and its up (a "step" of the fleet: one
// machine in a one-at-a-time rollout, one domain with domain: rack), and
// the most machines down at once.
func busyPeriods(st []step) (periods, maxDown int) {
	type edge struct {
		at    time.Time
		delta int
	}
	var es []edge
	for _, s := range st {
		es = append(es, edge{s.Down, +1})
		if !s.Up.IsZero() {
			es = append(es, edge{s.Up, -1})
		}
	}
	// ups before downs at the same instant: a hand-over is not an overlap
	slices.SortStableFunc(es, func(a, b edge) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.delta - b.delta
	})
	down := 0
	for _, e := range es {
		if down == 0 && e.delta > 0 {
			periods++
		}
		down += e.delta
		maxDown = max(maxDown, down)
	}
	return periods, maxDown
}

// batches groups the steps (in down order) into runs of the same domain
// (rack): a rollout a rack at a time has one batch per rack. gaps are,
// between consecutive batches, the time from the last machine of batch k
// serving (its up + minHealthy) to the first machine of batch k+1 going
// down: the per-domain overhead. Steps of machines without a domain are
// left out.
func batches(st []step, domainOf map[string]string, minHealthy time.Duration) (n int, gaps []time.Duration) {
	cur := ""
	var lastUp time.Time
	for _, s := range st {
		d, ok := domainOf[s.Machine]
		if !ok {
			continue
		}
		if d != cur || n == 0 {
			if n > 0 && !lastUp.IsZero() {
				gaps = append(gaps, s.Down.Sub(lastUp)-minHealthy)
			}
			n++
			cur, lastUp = d, time.Time{}
		}
		if s.Up.After(lastUp) {
			lastUp = s.Up
		}
	}
	return n, gaps
}

func durationsMS(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d) / float64(time.Millisecond)
	}
	return out
}

// ---- ZooKeeper probes ----

// rtt measures n sequential Sets and n sequential Gets of path and
// returns their median and p99 in milliseconds.
func rtt(ctx context.Context, c *zk.Conn, path string, n int) (RTT, error) {
	if _, err := c.Create(path, []byte("0"), 0, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
		return RTT{}, fmt.Errorf("rtt: create %s: %w", path, err)
	}
	payload := bytes.Repeat([]byte("x"), 200) // about a Current payload
	var w, r []float64
	for i := 0; i < n; i++ {
		if ctx.Err() != nil {
			return RTT{}, ctx.Err()
		}
		t := time.Now()
		if _, err := c.Set(path, payload, -1); err != nil {
			return RTT{}, fmt.Errorf("rtt: set: %w", err)
		}
		w = append(w, float64(time.Since(t))/float64(time.Millisecond))
	}
	for i := 0; i < n; i++ {
		t := time.Now()
		if _, _, err := c.Get(path); err != nil {
			return RTT{}, fmt.Errorf("rtt: get: %w", err)
		}
		r = append(r, float64(time.Since(t))/float64(time.Millisecond))
	}
	return RTT{N: n, WriteMS: percentile(w, 50), WriteP99MS: percentile(w, 99), ReadMS: percentile(r, 50), ReadP99MS: percentile(r, 99)}, nil
}

// parseProcStatTotal returns the busy and total jiffies of the "cpu" line
// of /proc/stat (busy: everything but idle and iowait).
func parseProcStatTotal(s string) (busy, total int64, err error) {
	line, _, _ := strings.Cut(s, "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("proc stat: first line %q", line)
	}
	for i, v := range f[1:] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("proc stat: %w", err)
		}
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total, nil
}

// sample is the state of the server (and the watched processes) at one moment.
type sample struct {
	At     time.Time
	M      mntr
	ZKCPU  time.Duration
	hasCPU bool
	// Self is this process's CPU time (the in-process agents);
	// MachineBusy/MachineTotal the whole machine's jiffies.
	Self                      time.Duration
	MachineBusy, MachineTotal int64
}

func takeSample(ctx context.Context, addr string, zkPID int) (sample, error) {
	s := sample{At: time.Now()}
	s.Self, _ = procCPU(os.Getpid())
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		s.MachineBusy, s.MachineTotal, _ = parseProcStatTotal(string(b))
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := zkserver.FourLetter(ctx, addr, "mntr")
	if err != nil {
		return s, err
	}
	s.M = parseMntr(out)
	if zkPID > 0 {
		if c, err := procCPU(zkPID); err == nil {
			s.ZKCPU, s.hasCPU = c, true
		}
	}
	return s, nil
}

// window is what happened between two samples.
type window struct {
	Seconds         float64 `json:"seconds"`
	PacketsReceived float64 `json:"packets_received"`
	PacketsSent     float64 `json:"packets_sent"`
	Reads           float64 `json:"reads"`  // zk_cnt_readlatency delta (includes pings)
	Writes          float64 `json:"writes"` // zk_cnt_updatelatency delta
	Notifications   float64 `json:"notifications"`
	ZKCPUSeconds    float64 `json:"zk_cpu_seconds"`
	// BenchCPUSeconds: this process (the in-process agents); MachineBusy:
	// the fraction of all cores busy (other users of the machine too).
	BenchCPUSeconds float64 `json:"bench_cpu_seconds"`
	MachineBusy     float64 `json:"machine_busy"`
}

func between(a, b sample) window {
	d := func(f func(mntr) float64) float64 { return f(b.M) - f(a.M) }
	w := window{
		Seconds:         b.At.Sub(a.At).Seconds(),
		PacketsReceived: d(func(m mntr) float64 { return m["zk_packets_received"] }),
		PacketsSent:     d(func(m mntr) float64 { return m["zk_packets_sent"] }),
		Reads:           d(mntr.reads),
		Writes:          d(mntr.writes),
		Notifications:   d(mntr.notifications),
	}
	if a.hasCPU && b.hasCPU {
		w.ZKCPUSeconds = (b.ZKCPU - a.ZKCPU).Seconds()
	}
	w.BenchCPUSeconds = (b.Self - a.Self).Seconds()
	w.MachineBusy = finite(ratio(float64(b.MachineBusy-a.MachineBusy), float64(b.MachineTotal-a.MachineTotal)))
	return w
}

// net subtracts the background (rest) rate over w's duration, never
// below zero: what the rollout itself cost.
func (w window) net(rest window) window {
	if rest.Seconds <= 0 {
		return w
	}
	k := w.Seconds / rest.Seconds
	sub := func(a, b float64) float64 { return max(0, a-b*k) }
	return window{Seconds: w.Seconds, PacketsReceived: sub(w.PacketsReceived, rest.PacketsReceived),
		PacketsSent: sub(w.PacketsSent, rest.PacketsSent), Reads: sub(w.Reads, rest.Reads),
		Writes: sub(w.Writes, rest.Writes), Notifications: sub(w.Notifications, rest.Notifications),
		ZKCPUSeconds: sub(w.ZKCPUSeconds, rest.ZKCPUSeconds), BenchCPUSeconds: sub(w.BenchCPUSeconds, rest.BenchCPUSeconds),
		MachineBusy: w.MachineBusy}
}

// withoutPings subtracts from Reads and PacketsReceived (and the ping
// answers from PacketsSent) the pings of the window between samples a
// and b: go-zookeeper pings every session timeout / 3 (its read timeout
// is 2/3 of the session timeout, and it pings at half of that), whatever
// else it sends; every session of the benchmark negotiates the same
// timeout. Connections are the mean of zk_num_alive_connections at a
// and b.
func (w window) withoutPings(a, b sample, sessionTimeout time.Duration) window {
	if sessionTimeout <= 0 {
		return w
	}
	conns := (a.M["zk_num_alive_connections"] + b.M["zk_num_alive_connections"]) / 2
	pings := conns * w.Seconds / (sessionTimeout.Seconds() / 3)
	w.Reads = max(0, w.Reads-pings)
	w.PacketsReceived = max(0, w.PacketsReceived-pings)
	w.PacketsSent = max(0, w.PacketsSent-pings)
	return w
}

// per divides every count by n (e.g. steps).
func (w window) per(n float64) window {
	if n <= 0 {
		return window{}
	}
	return window{Seconds: w.Seconds / n, PacketsReceived: w.PacketsReceived / n, PacketsSent: w.PacketsSent / n,
		Reads: w.Reads / n, Writes: w.Writes / n, Notifications: w.Notifications / n, ZKCPUSeconds: w.ZKCPUSeconds / n,
		BenchCPUSeconds: w.BenchCPUSeconds / n, MachineBusy: w.MachineBusy}
}

// rssPeak samples the VmRSS of pids every interval until stop, keeping
// the peak of each.
type rssPeak struct {
	mu   sync.Mutex
	peak map[int]int64
}

func watchRSS(ctx context.Context, pids []int, every time.Duration) *rssPeak {
	r := &rssPeak{peak: map[int]int64{}}
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			r.mu.Lock()
			for _, p := range pids {
				if v, err := procRSS(p); err == nil && v > r.peak[p] {
					r.peak[p] = v
				}
			}
			r.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return r
}

func (r *rssPeak) get(pid int) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.peak[pid]
}
