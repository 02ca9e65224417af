package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"dcroll/distrib"
	"dcroll/integration/netns"
)

// Ports used inside the namespaces (every host has its own address).
const (
	peerPort   = 6881
	originHTTP = 8080
	zkPort     = 2181
)

// event is one JSON line printed by a host, origin or zk subprocess.
type event struct {
	Event   string `json:"event"` // ready, done, verified
	Machine string `json:"machine,omitempty"`
	ID      string `json:"id,omitempty"`       // blob id (origin ready)
	URL     string `json:"url,omitempty"`      // web seed URL (origin ready)
	Addr    string `json:"addr,omitempty"`     // listen address (zk ready)
	Bytes   int64  `json:"bytes,omitempty"`    // bytes held (done, verified)
	FetchNS int64  `json:"fetch_ns,omitempty"` // fetch duration measured by the host
	SHA256  string `json:"sha256,omitempty"`   // hex digest of the blob on disk (verified)
	Err     string `json:"err,omitempty"`
	// Where a host's bytes came from (done): distrib's source (swarm,
	// webseed) or http, and its per-class byte counts.
	Source    string `json:"source,omitempty"`
	FromRack  int64  `json:"from_rack,omitempty"`
	FromDC    int64  `json:"from_dc,omitempty"`
	FromOther int64  `json:"from_other,omitempty"`
	// progress lines (swarm hosts, every 250 ms)
	Peers   int    `json:"peers,omitempty"`
	Gateway bool   `json:"gateway,omitempty"` // connected to the origin
	Have    string `json:"have,omitempty"`    // kill-origin: complete pieces, hex bitfield
}

// proc is a subprocess in a namespace that talks JSON lines on stdout.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	events chan event
	logf   *os.File
	done   chan struct{} // closed when the process has exited
	err    error         // exit error, valid after done

	mu       sync.Mutex
	progress func(event) // sees "progress" lines
}

// onProgress sets the callback for the process's progress lines.
func (p *proc) onProgress(f func(event)) {
	p.mu.Lock()
	p.progress = f
	p.mu.Unlock()
}

func startProc(ctx context.Context, topo *netns.Topology, h *netns.Host, logPath string, args ...string) (*proc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := topo.Command(ctx, h, exe, args...)
	cmd.Stderr = logf
	// "ip netns exec" execs in place, so this reaches the subprocess: it
	// dies with the benchmark even when the benchmark is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Kill() }
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s on %s: %w", args[0], h.Machine, err)
	}
	p := &proc{name: h.Machine, cmd: cmd, stdin: stdin, events: make(chan event, 8), logf: logf, done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				fmt.Fprintf(logf, "bench: unparsable stdout line: %s\n", sc.Text())
				continue
			}
			ev.Machine = h.Machine
			if ev.Event == "progress" {
				// Progress lines go to the callback, never into events:
				// nobody may be reading events while a host downloads.
				p.mu.Lock()
				f := p.progress
				p.mu.Unlock()
				if f != nil {
					f(ev)
				}
				continue
			}
			p.events <- ev
		}
		p.err = cmd.Wait()
		logf.Close()
		close(p.events)
		close(p.done)
	}()
	return p, nil
}

// next waits for the next event of kind want.
func (p *proc) next(ctx context.Context, want string) (event, error) {
	for {
		select {
		case ev, ok := <-p.events:
			if !ok {
				<-p.done
				return event{}, fmt.Errorf("%s exited before %q: %v (log %s)", p.name, want, p.err, p.logf.Name())
			}
			if ev.Err != "" {
				return ev, fmt.Errorf("%s: %s (log %s)", p.name, ev.Err, p.logf.Name())
			}
			if ev.Event == want {
				return ev, nil
			}
		case <-ctx.Done():
			return event{}, fmt.Errorf("%s: waiting for %q: %w", p.name, want, ctx.Err())
		}
	}
}

func (p *proc) send(line string) error {
	_, err := io.WriteString(p.stdin, line+"\n")
	return err
}

// stop closes stdin (the process's signal to exit) and waits, killing it
// after grace.
func (p *proc) stop(grace time.Duration) {
	_ = p.stdin.Close()
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func machines(topo *netns.Topology) []string {
	var names []string
	for _, h := range topo.Hosts {
		names = append(names, h.Machine)
	}
	return names
}

// blob is the benchmark's random blob.
type blob struct {
	Path   string
	Size   int64
	SHA256 string
}

func makeBlob(path string, size int64) (blob, error) {
	f, err := os.Create(path)
	if err != nil {
		return blob{}, err
	}
	var seed [32]byte
	binary := uint64(time.Now().UnixNano())
	for i := range 8 {
		seed[i] = byte(binary >> (8 * i))
	}
	h := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	if _, err := io.CopyN(w, rand.NewChaCha8(seed), size); err != nil {
		f.Close()
		return blob{}, err
	}
	if err := errors.Join(w.Flush(), f.Close()); err != nil {
		return blob{}, err
	}
	return blob{Path: path, Size: size, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// Run builds the fabric, runs every mode of cfg and returns the results
// gathered so far (also on error).
func Run(ctx context.Context, cfg Config, log *slog.Logger) (*Result, error) {
	work, cleanup, err := scratch(cfg)
	if err != nil {
		return nil, fmt.Errorf("scratch dir: %w", err)
	}
	defer cleanup()
	log.Info("scratch", "dir", work)
	b, err := makeBlob(filepath.Join(work, "blob"), cfg.Size)
	if err != nil {
		return nil, fmt.Errorf("make blob: %w", err)
	}
	needZK := slices.ContainsFunc(cfg.Modes, swarmMode)
	topo, err := netns.Build(ctx, netns.Config{
		Racks: cfg.Racks, HostsPerRack: cfg.Hosts, Seeder: true, ZK: needZK, MTU: cfg.MTU, Logger: log,
		Rates: netns.Rates{HostMbit: cfg.HostMbit, UplinkMbit: cfg.UplinkMbit, SeederMbit: cfg.SeederMbit},
	})
	if err != nil {
		return nil, fmt.Errorf("build fabric: %w", err)
	}
	defer topo.Close()
	if cfg.NotSentLowat > 0 {
		for _, h := range append([]*netns.Host{topo.Seeder}, topo.Hosts...) {
			if out, err := topo.Exec(ctx, h, "sysctl", "-w", "net.ipv4.tcp_notsent_lowat="+strconv.FormatInt(cfg.NotSentLowat, 10)); err != nil {
				return nil, fmt.Errorf("tcp_notsent_lowat on %s: %v: %s", h.Machine, err, out)
			}
		}
	}

	res := newResult(cfg)
	var zkAddr string
	if needZK {
		zk, err := startProc(ctx, topo, topo.ZK, filepath.Join(work, "zk.log"), "zk", "-dir", filepath.Join(work, "zk"),
			"-listen", net.JoinHostPort(topo.ZK.IP.String(), strconv.Itoa(zkPort)))
		if err != nil {
			return res, err
		}
		defer zk.stop(10 * time.Second)
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		ev, err := zk.next(wctx, "ready")
		cancel()
		if err != nil {
			return res, fmt.Errorf("start zookeeper: %w", err)
		}
		zkAddr = ev.Addr
		log.Info("zookeeper up", "addr", zkAddr)
	}
	for i, mode := range cfg.Modes {
		log.Info("mode start", "mode", mode)
		mctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		mr, err := runMode(mctx, topo, cfg, mode, b, zkAddr, filepath.Join(work, mode), log)
		cancel()
		if !cfg.Keep || i < len(cfg.Modes)-1 {
			// The mode's copies of the blob (logs stay): the next mode needs
			// the room (a tmpfs holds one mode's copies; with -keep, a full
			// tmpfs killed ZooKeeper in the second mode). -keep keeps the
			// last mode's.
			if derr := dropCopies(filepath.Join(work, mode)); derr != nil {
				log.Warn("remove the mode's data", "mode", mode, "err", derr)
			}
		}
		if err != nil {
			mr.Err = err.Error()
			log.Error("mode failed", "mode", mode, "err", err)
		} else {
			log.Info("mode done", "mode", mode, "seconds", mr.Seconds, "into_racks_bytes", mr.IntoRacksBytes)
		}
		res.Modes = append(res.Modes, mr)
		if ctx.Err() != nil {
			res.finish()
			return res, ctx.Err()
		}
	}
	res.finish()
	return res, nil
}

// dropCopies removes every file under dir but the logs.
func dropCopies(dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, ".log") {
			return err
		}
		return os.Remove(path)
	})
}

// hostState is what the benchmark knows of a host during a mode, from its
// progress lines (swarm modes).
type hostState struct {
	bytes          int64
	timeline       []int64 // bytes held at each whole second since start
	have           []byte  // complete pieces (kill-origin)
	peers          int
	gateway        bool
	firstByte      time.Duration // since start; 0: none yet
	half           time.Duration // reached S/2
	killed         bool
	killedAtBytes  int64
	killedAtSecond float64
}

func runMode(ctx context.Context, topo *netns.Topology, cfg Config, mode string, b blob, zkAddr, dir string, log *slog.Logger) (ModeResult, error) {
	mr := ModeResult{Mode: mode}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return mr, err
	}
	dcOf := func(rack string) string { return dataCenter }
	if mode == ModeWAN {
		wan, err := buildWAN(ctx, topo, cfg)
		if err != nil {
			return mr, fmt.Errorf("build the wan: %w", err)
		}
		defer func() {
			if err := wan.remove(ctx); err != nil {
				log.Warn("remove the wan", "err", err)
			}
		}()
		dcOf = wan.dcOf
		mr.wan, mr.WANDelayed = wan, wan.delayed
	}
	origin, err := startProc(ctx, topo, topo.Seeder, filepath.Join(dir, "origin.log"), "origin",
		"-mode", mode, "-file", b.Path, "-dir", filepath.Join(dir, "origin"), "-zk", zkAddr, "-dc", dataCenter,
		"-listen", net.JoinHostPort(topo.Seeder.IP.String(), strconv.Itoa(peerPort)),
		"-http", net.JoinHostPort(topo.Seeder.IP.String(), strconv.Itoa(originHTTP)),
		"-piece-length", strconv.FormatInt(cfg.PieceLength, 10), "-chain-span", strconv.Itoa(cfg.ChainSpan), "-cc", cfg.CC, "-agents", strings.Join(machines(topo), ","))
	if err != nil {
		return mr, err
	}
	defer origin.stop(10 * time.Second)
	ready, err := origin.next(ctx, "ready")
	if err != nil {
		return mr, fmt.Errorf("origin: %w", err)
	}
	if want := "sha256:" + b.SHA256; ready.ID != want {
		return mr, fmt.Errorf("origin published %s, want %s", ready.ID, want)
	}

	hosts := make([]*proc, len(topo.Hosts))
	defer func() {
		for _, p := range hosts {
			if p != nil {
				p.stop(10 * time.Second)
			}
		}
	}()
	for i, h := range topo.Hosts {
		p, err := startProc(ctx, topo, h, filepath.Join(dir, h.Machine+".log"), "host",
			"-mode", mode, "-machine", h.Machine, "-rack", h.Rack, "-dc", dcOf(h.Rack), "-dir", filepath.Join(dir, h.Machine),
			"-listen", net.JoinHostPort(h.IP.String(), strconv.Itoa(peerPort)),
			"-zk", zkAddr, "-id", ready.ID, "-url", ready.URL, "-size", strconv.FormatInt(b.Size, 10),
			"-request-window", strconv.FormatInt(cfg.Window, 10), "-cc", cfg.CC)
		if err != nil {
			return mr, err
		}
		hosts[i] = p
	}
	for _, p := range hosts {
		if _, err := p.next(ctx, "ready"); err != nil {
			return mr, err
		}
	}
	if err := origin.send("sync"); err != nil {
		return mr, fmt.Errorf("origin: %w", err)
	}
	synced, err := origin.next(ctx, "synced")
	if err != nil {
		return mr, fmt.Errorf("origin: wait until the tracker knows every agent: %w", err)
	}
	log.Info("hosts ready", "mode", mode, "hosts", len(hosts), "tracker_synced_after", time.Duration(synced.FetchNS))

	upBefore, err := topo.Uplinks(ctx)
	if err != nil {
		return mr, err
	}
	seedBefore, err := topo.HostLink(ctx, topo.Seeder)
	if err != nil {
		return mr, err
	}
	var wanBefore int64
	if mr.wan != nil {
		if wanBefore, err = mr.wan.bytesIntoDC2(ctx); err != nil {
			return mr, err
		}
	}
	cpuBefore := readCPU()
	procTicksBefore := treeCPUTicks(append([]*proc{origin}, hosts...))
	var stMu sync.Mutex
	states := make([]hostState, len(hosts))
	start := time.Now()
	for i, p := range hosts {
		p.onProgress(func(ev event) {
			stMu.Lock()
			defer stMu.Unlock()
			st := &states[i]
			st.bytes, st.peers, st.gateway = ev.Bytes, ev.Peers, ev.Gateway
			if h, err := hex.DecodeString(ev.Have); err == nil && len(h) > 0 {
				st.have = h
			}
			el := time.Since(start)
			for sec := int(el / time.Second); len(st.timeline) <= sec; {
				st.timeline = append(st.timeline, ev.Bytes)
			}
			if st.firstByte == 0 && ev.Bytes > 0 {
				st.firstByte = el
			}
			if st.half == 0 && ev.Bytes >= b.Size/2 {
				st.half = el
			}
		})
	}
	for _, p := range hosts {
		if err := p.send("go"); err != nil {
			return mr, fmt.Errorf("start %s: %w", p.name, err)
		}
	}
	type doneEv struct {
		i   int
		ev  event
		at  time.Time
		err error
	}
	dones := make(chan doneEv, len(hosts))
	var wg sync.WaitGroup
	for i, p := range hosts {
		wg.Go(func() {
			ev, err := p.next(ctx, "done")
			dones <- doneEv{i: i, ev: ev, at: time.Now(), err: err}
		})
	}
	mr.Hosts = make([]HostResult, len(hosts))
	var errs []error
	progress := time.NewTicker(15 * time.Second)
	defer progress.Stop()
	faultTick := time.NewTicker(100 * time.Millisecond)
	defer faultTick.Stop()
	faultDone := faultKind(mode) == ""
	for n := 0; n < len(hosts); {
		select {
		case d := <-dones:
			n++
			h := topo.Hosts[d.i]
			mr.Hosts[d.i] = HostResult{Machine: h.Machine, Rack: h.Rack, DC: dcOf(h.Rack), Seconds: d.at.Sub(start).Seconds(),
				FetchSeconds: float64(d.ev.FetchNS) / 1e9, Source: d.ev.Source,
				FromRack: d.ev.FromRack, FromDC: d.ev.FromDC, FromOther: d.ev.FromOther}
			stMu.Lock()
			st := states[d.i]
			stMu.Unlock()
			mr.Hosts[d.i].FirstByteSeconds, mr.Hosts[d.i].HalfSeconds = st.firstByte.Seconds(), st.half.Seconds()
			mr.Hosts[d.i].Timeline = st.timeline
			if st.killed {
				mr.Hosts[d.i].Killed, mr.Hosts[d.i].Seconds = true, 0
				mr.Hosts[d.i].KilledAtSeconds, mr.Hosts[d.i].KilledAtBytes = st.killedAtSecond, st.killedAtBytes
				continue
			}
			if d.err != nil {
				errs = append(errs, d.err)
				mr.Hosts[d.i].Err = d.err.Error()
			}
		case <-faultTick.C:
			if faultDone {
				continue
			}
			stMu.Lock()
			victim, what := pickVictim(mode, topo, states, b.Size)
			if victim >= 0 {
				states[victim].killed = true
				states[victim].killedAtBytes = states[victim].bytes
				states[victim].killedAtSecond = time.Since(start).Seconds()
			}
			stMu.Unlock()
			switch {
			case what == "origin":
				faultDone = true
				stMu.Lock()
				held, total := fleetPieces(states, b.Size, cfg.PieceLength)
				stMu.Unlock()
				mr.Fault = fmt.Sprintf("origin killed at %.1f s; the fleet held %d of %d pieces", time.Since(start).Seconds(), held, total)
				log.Info("fault: killing the origin", "mode", mode, "at", time.Since(start).Round(time.Millisecond))
				if err := origin.cmd.Process.Kill(); err != nil {
					return mr, fmt.Errorf("kill the origin: %w", err)
				}
			case victim >= 0:
				faultDone = true
				h := topo.Hosts[victim]
				mr.Fault = fmt.Sprintf("%s %s killed at %.1f s (%.0f %% held)", what, h.Machine, time.Since(start).Seconds(),
					100*float64(states[victim].killedAtBytes)/float64(b.Size))
				log.Info("fault: killing a host", "mode", mode, "host", h.Machine, "role", what, "at", time.Since(start).Round(time.Millisecond))
				if err := hosts[victim].cmd.Process.Kill(); err != nil {
					return mr, fmt.Errorf("kill %s: %w", h.Machine, err)
				}
			}
		case <-progress.C:
			log.Info("waiting", "mode", mode, "done", n, "of", len(hosts), "elapsed", time.Since(start).Round(time.Second))
		}
	}
	wg.Wait()
	var last time.Duration
	for _, h := range mr.Hosts {
		if !h.Killed && h.Err == "" {
			last = max(last, time.Duration(h.Seconds*float64(time.Second)))
		}
	}
	cpuAfter := readCPU()
	procTicks := treeCPUTicks(append([]*proc{origin}, hosts...))
	upAfter, err := topo.Uplinks(ctx)
	if err != nil {
		return mr, err
	}
	seedAfter, err := topo.HostLink(ctx, topo.Seeder)
	if err != nil {
		return mr, err
	}
	if mr.wan != nil {
		after, err := mr.wan.bytesIntoDC2(ctx)
		if err != nil {
			return mr, err
		}
		mr.WANBytes = after - wanBefore
	}
	if err := errors.Join(errs...); err != nil {
		return mr, err
	}
	mr.Seconds = last.Seconds()
	mr.PerRack = netns.Sub(upAfter, upBefore)
	for _, l := range mr.PerRack {
		mr.IntoRacksBytes += l.Down
	}
	mr.SeederSentBytes = seedAfter.Up - seedBefore.Up
	mr.CPUBusy = cpuAfter.busySince(cpuBefore)
	mr.ProcCPUSeconds = float64(procTicks-procTicksBefore) / clockTicks

	// Independent check: every host re-hashes what it holds.
	for i, p := range hosts {
		if mr.Hosts[i].Killed {
			continue
		}
		if err := p.send("stop"); err != nil {
			return mr, fmt.Errorf("stop %s: %w", p.name, err)
		}
	}
	for i, p := range hosts {
		if mr.Hosts[i].Killed {
			continue
		}
		ev, err := p.next(ctx, "verified")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ev.SHA256 != b.SHA256 || ev.Bytes != b.Size {
			errs = append(errs, fmt.Errorf("%s holds %d bytes with sha256 %s, want %d bytes %s", p.name, ev.Bytes, ev.SHA256, b.Size, b.SHA256))
			continue
		}
		mr.Hosts[i].Verified = true
		mr.Verified++
	}
	return mr, errors.Join(errs...)
}

// fleetPieces counts the pieces some host holds (the union of the hosts'
// bitfields) and the blob's pieces.
func fleetPieces(states []hostState, size, pieceLength int64) (held, total int) {
	if pieceLength == 0 {
		pieceLength = distrib.ChoosePieceLength(size)
	}
	total = int((size + pieceLength - 1) / pieceLength)
	for i := range total {
		for _, st := range states {
			if i/8 < len(st.have) && st.have[i/8]&(0x80>>(i%8)) != 0 {
				held++
				break
			}
		}
	}
	return held, total
}

// faultKind is what a fault mode kills ("" for none).
func faultKind(mode string) string {
	switch mode {
	case ModeKillChain:
		return "chain member"
	case ModeKillGW:
		return "gateway"
	case ModeKillOrigin:
		return "origin"
	}
	return ""
}

// Fault triggers: a host at killAt of the blob, the origin when the
// gateways hold originKillAt of it on average.
const (
	killAt       = 0.30
	originKillAt = 0.50
)

// faultRack is where host faults happen: the second rack (the first when
// there is one), so rack r0 shows the no-fault pace in the same run.
func faultRack(topo *netns.Topology) string {
	return topo.Racks[min(1, len(topo.Racks)-1)]
}

// pickVictim returns the host to kill now (or -1) and its role, or
// "origin". A gateway is a host connected to the origin; a chain member is
// a non-gateway with two connections (a predecessor and a successor; the
// chain's tail has one), the one furthest ahead, so most of the chain sits
// behind it.
func pickVictim(mode string, topo *netns.Topology, states []hostState, size int64) (int, string) {
	switch mode {
	case ModeKillOrigin:
		var sum int64
		var n int
		for _, st := range states {
			if st.gateway {
				sum += st.bytes
				n++
			}
		}
		if n > 0 && float64(sum)/float64(n) >= originKillAt*float64(size) {
			return -1, "origin"
		}
	case ModeKillGW, ModeKillChain:
		best := -1
		for i, h := range topo.Hosts {
			st := states[i]
			if h.Rack != faultRack(topo) || float64(st.bytes) < killAt*float64(size) || st.bytes >= size {
				continue
			}
			if mode == ModeKillGW && st.gateway {
				return i, "gateway"
			}
			if mode == ModeKillChain && !st.gateway && st.peers >= 2 && (best < 0 || st.bytes > states[best].bytes) {
				best = i
			}
		}
		if best >= 0 {
			return best, "chain member"
		}
	}
	return -1, ""
}

// clockTicks is USER_HZ, the unit of /proc CPU times (100 on Linux).
const clockTicks = 100

// treeCPUTicks returns the user+system CPU time used so far by the
// processes and all their descendants ("ip netns exec" execs in place, so
// a proc's pid is the benchmark's subprocess; aria2c, opentracker and the
// ZooKeeper JVM are its children). Children already reaped count through
// the parent's cutime/cstime.
func treeCPUTicks(ps []*proc) int64 {
	type st struct {
		ppid, ticks int
	}
	all := map[int]st{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// Fields after the ")" that ends the command name: ppid is field 4
		// of the whole line, utime..cstime fields 14-17.
		_, rest, ok := strings.Cut(string(data), ") ")
		f := strings.Fields(rest)
		if !ok || len(f) < 15 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		var t int
		for _, k := range []int{11, 12, 13, 14} {
			v, _ := strconv.Atoi(f[k])
			t += v
		}
		all[pid] = st{ppid, t}
	}
	children := map[int][]int{}
	for pid, s := range all {
		children[s.ppid] = append(children[s.ppid], pid)
	}
	var sum int64
	var walk func(pid, depth int)
	walk = func(pid, depth int) {
		if depth > 64 { // /proc is a snapshot: never loop on a reused pid
			return
		}
		sum += int64(all[pid].ticks)
		for _, c := range children[pid] {
			walk(c, depth+1)
		}
	}
	for _, p := range ps {
		if p != nil && p.cmd.Process != nil {
			walk(p.cmd.Process.Pid, 0)
		}
	}
	return sum
}

// cpuStat is the machine-wide line of /proc/stat.
type cpuStat struct{ busy, total int64 }

func readCPU() cpuStat {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuStat{}
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	var s cpuStat
	if len(f) > 9 {
		f = f[:9] // user..steal; guest time is already in user
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		s.total += n
		if i != 3 && i != 4 { // idle, iowait
			s.busy += n
		}
	}
	return s
}

// busySince returns the fraction of all CPUs that was busy between before and s.
func (s cpuStat) busySince(before cpuStat) float64 {
	if s.total <= before.total {
		return 0
	}
	return float64(s.busy-before.busy) / float64(s.total-before.total)
}
