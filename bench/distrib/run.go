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
	needZK := slices.ContainsFunc(cfg.Modes, func(m string) bool { return m != ModeCentral })
	topo, err := netns.Build(ctx, netns.Config{
		Racks: cfg.Racks, HostsPerRack: cfg.Hosts, Seeder: true, ZK: needZK, MTU: cfg.MTU, Logger: log,
		Rates: netns.Rates{HostMbit: cfg.HostMbit, UplinkMbit: cfg.UplinkMbit, SeederMbit: cfg.SeederMbit},
	})
	if err != nil {
		return nil, fmt.Errorf("build fabric: %w", err)
	}
	defer topo.Close()

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
	for _, mode := range cfg.Modes {
		log.Info("mode start", "mode", mode)
		mctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		mr, err := runMode(mctx, topo, cfg, mode, b, zkAddr, filepath.Join(work, mode), log)
		cancel()
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

func runMode(ctx context.Context, topo *netns.Topology, cfg Config, mode string, b blob, zkAddr, dir string, log *slog.Logger) (ModeResult, error) {
	mr := ModeResult{Mode: mode}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return mr, err
	}
	origin, err := startProc(ctx, topo, topo.Seeder, filepath.Join(dir, "origin.log"), "origin",
		"-mode", mode, "-file", b.Path, "-dir", filepath.Join(dir, "origin"), "-zk", zkAddr,
		"-listen", net.JoinHostPort(topo.Seeder.IP.String(), strconv.Itoa(peerPort)),
		"-http", net.JoinHostPort(topo.Seeder.IP.String(), strconv.Itoa(originHTTP)),
		"-piece-length", strconv.FormatInt(cfg.PieceLength, 10), "-agents", strings.Join(machines(topo), ","))
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
			"-mode", mode, "-machine", h.Machine, "-rack", h.Rack, "-dir", filepath.Join(dir, h.Machine),
			"-listen", net.JoinHostPort(h.IP.String(), strconv.Itoa(peerPort)),
			"-zk", zkAddr, "-id", ready.ID, "-url", ready.URL, "-size", strconv.FormatInt(b.Size, 10))
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
	cpuBefore := readCPU()
	var procTicksBefore int64
	for _, p := range append([]*proc{origin}, hosts...) {
		procTicksBefore += p.cpuTicks()
	}
	start := time.Now()
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
	for n := 0; n < len(hosts); {
		select {
		case d := <-dones:
			n++
			h := topo.Hosts[d.i]
			mr.Hosts[d.i] = HostResult{Machine: h.Machine, Rack: h.Rack, Seconds: d.at.Sub(start).Seconds(),
				FetchSeconds: float64(d.ev.FetchNS) / 1e9, Source: d.ev.Source,
				FromRack: d.ev.FromRack, FromDC: d.ev.FromDC, FromOther: d.ev.FromOther}
			if d.err != nil {
				errs = append(errs, d.err)
				mr.Hosts[d.i].Err = d.err.Error()
			}
		case <-progress.C:
			log.Info("waiting", "mode", mode, "done", n, "of", len(hosts), "elapsed", time.Since(start).Round(time.Second))
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpuAfter := readCPU()
	var procTicks int64
	for _, p := range append([]*proc{origin}, hosts...) {
		procTicks += p.cpuTicks()
	}
	upAfter, err := topo.Uplinks(ctx)
	if err != nil {
		return mr, err
	}
	seedAfter, err := topo.HostLink(ctx, topo.Seeder)
	if err != nil {
		return mr, err
	}
	if err := errors.Join(errs...); err != nil {
		return mr, err
	}
	mr.Seconds = elapsed.Seconds()
	mr.PerRack = netns.Sub(upAfter, upBefore)
	for _, l := range mr.PerRack {
		mr.IntoRacksBytes += l.Down
	}
	mr.SeederSentBytes = seedAfter.Up - seedBefore.Up
	mr.CPUBusy = cpuAfter.busySince(cpuBefore)
	mr.ProcCPUSeconds = float64(procTicks-procTicksBefore) / clockTicks

	// Independent check: every host re-hashes what it holds.
	for _, p := range hosts {
		if err := p.send("stop"); err != nil {
			return mr, fmt.Errorf("stop %s: %w", p.name, err)
		}
	}
	for i, p := range hosts {
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

// clockTicks is USER_HZ, the unit of /proc CPU times (100 on Linux).
const clockTicks = 100

// cpuTicks returns the user+system CPU time the process has used so far
// ("ip netns exec" execs in place, so the pid is the benchmark's subprocess).
func (p *proc) cpuTicks() int64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the ")" that ends the command name; utime and stime are
	// fields 14 and 15 of the whole line.
	_, rest, ok := strings.Cut(string(data), ") ")
	if !ok {
		return 0
	}
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
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
