package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"dcroll/agent"
	"dcroll/coordinator"
	"dcroll/distrib"
	"dcroll/integration/zkserver"
	"dcroll/znodes"
)

// Service is the one service every machine of the benchmark runs.
const Service = "svc"

// serviceScript is the service: a shell script (a plain-executable
// artifact) that appends "up <unix.ns> <machine> <version> <pid>" to
// $SCALE_EVENT_LOG when it starts and "down ..." when it gets SIGTERM
// (the supervisor signals its process group: sleep dies too), and
// otherwise sleeps. build differs per version, so every version is a
// different blob.
func serviceScript(build string) string {
	return `#!/bin/sh
# dcroll bench/scale service, build ` + build + `
log="${SCALE_EVENT_LOG:-/dev/null}"
ev() { echo "$1 $(date +%s.%N) $DCROLL_MACHINE $DCROLL_VERSION $$" >>"$log"; }
trap 'ev down; exit 0' TERM INT
ev up
sleep 100000 &
wait $!
ev down
`
}

// env is one size's world: a ZooKeeper server, an origin (for the real
// agents' BitTorrent), a coordinator, the health endpoint, N in-process
// agents and the real agent processes.
type env struct {
	cfg  Config
	n    int // in-process agents
	dir  string
	log  *slog.Logger
	zk   *zkserver.Server
	conn *znodes.Conn // the benchmark's own session (pushes, reads, RTT)

	ctx    context.Context
	cancel context.CancelFunc
	bg     sync.WaitGroup

	blobDir    string            // blobs by hex, for agent.DirFetcher
	blobs      map[string]string // build ("1", "2", "3") -> blob id
	events     *eventLog
	healthAddr string
	agentLog   *os.File

	mu        sync.Mutex
	instances []*instance
	reals     []*realAgent
}

type instance struct {
	machine, rack string
	cancel        context.CancelFunc
	done          chan error
}

type realAgent struct {
	machine, rack string
	cmd           *exec.Cmd
	done          chan struct{}
}

// machineName is the name of in-process agent i (0-based) and realName
// of real agent j.
func machineName(i int) string { return fmt.Sprintf("m%04d", i+1) }
func realName(j int) string    { return fmt.Sprintf("real%d", j+1) }

// rackOf spreads machines over racks round-robin: rack r holds machines
// r, r+racks, ... (real agents continue the sequence).
func rackOf(i, racks int) string { return fmt.Sprintf("r%02d", i%racks) }

func newEnv(ctx context.Context, cfg Config, n int, dir string, log *slog.Logger) (*env, error) {
	e := &env{cfg: cfg, n: n, dir: dir, log: log, blobs: map[string]string{}}
	e.ctx, e.cancel = context.WithCancel(ctx)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return e, err
	}
	e.events = &eventLog{path: filepath.Join(dir, "events.log")}
	f, err := os.OpenFile(filepath.Join(dir, "agents.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return e, err
	}
	e.agentLog = f

	zkDir := filepath.Join(dir, "zk")
	e.zk, err = zkserver.Start(ctx, zkserver.Options{Dir: zkDir,
		MaxSessionTimeout: 4 * cfg.SessionTimeout,
		ExtraConfig:       map[string]string{"maxClientCnxns": "0", "globalOutstandingLimit": "10000"},
		JVMArgs:           []string{"-Xmx" + cfg.ZKHeap}})
	if err != nil {
		return e, fmt.Errorf("start zookeeper: %w", err)
	}
	e.conn, err = znodes.Dial(ctx, znodes.Options{Servers: e.zk.Addr(), SessionTimeout: cfg.SessionTimeout,
		ConnectTimeout: 20 * time.Second, Logger: discard()})
	if err != nil {
		return e, fmt.Errorf("dial zookeeper: %w", err)
	}
	if err := e.conn.EnsureSkeleton(); err != nil {
		return e, err
	}
	return e, nil
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// startHealth serves the services' health check: a TCP port that accepts
// and closes every connection. With it the spec's health is a real probe
// that always passes, so an instance counts as healthy min_healthy after
// it started, and min_healthy is the configurable "turns healthy" time.
// (A spec without health uses the Running checker but a fixed
// min_healthy of 2s.)
func (e *env) startHealth() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	e.healthAddr = ln.Addr().String()
	e.bg.Go(func() {
		<-e.ctx.Done()
		ln.Close()
	})
	e.bg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				if e.ctx.Err() != nil {
					return
				}
				continue
			}
			c.Close()
		}
	})
	return nil
}

// publish writes the three builds, publishes them on an origin (for the
// real agents) and copies them into blobDir (for the in-process agents).
func (e *env) publish() error {
	st, err := distrib.OpenStore(filepath.Join(e.dir, "origin"))
	if err != nil {
		return err
	}
	origin, err := distrib.NewOrigin(distrib.OriginConfig{Store: st, Conn: e.conn, ListenAddr: "127.0.0.1:0",
		HTTPAddr: "127.0.0.1:0", Logger: discard()})
	if err != nil {
		return fmt.Errorf("origin: %w", err)
	}
	e.bg.Go(func() {
		if err := origin.Run(e.ctx); err != nil && e.ctx.Err() == nil {
			e.log.Warn("origin ended", "err", err)
		}
	})
	e.blobDir = filepath.Join(e.dir, "blobs")
	if err := os.MkdirAll(e.blobDir, 0o755); err != nil {
		return err
	}
	for _, b := range []string{"1", "2", "3"} {
		src := filepath.Join(e.dir, "service-"+b+".sh")
		body := []byte(serviceScript(b))
		if err := os.WriteFile(src, body, 0o755); err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		hx := hex.EncodeToString(sum[:])
		if err := os.WriteFile(filepath.Join(e.blobDir, hx), body, 0o755); err != nil {
			return err
		}
		pctx, cancel := context.WithTimeout(e.ctx, time.Minute)
		bs, err := distrib.Publish(pctx, e.conn, st, []string{src}, distrib.PublishOptions{OriginURL: origin.URL()})
		cancel()
		if err != nil {
			return fmt.Errorf("publish build %s: %w", b, err)
		}
		if bs[0].ID != "sha256:"+hx {
			return fmt.Errorf("publish build %s: id %s, want sha256:%s", b, bs[0].ID, hx)
		}
		e.blobs[b] = bs[0].ID
	}
	origin.Nudge()
	return nil
}

// startCoordinator runs coordinator.Run (it marks deploy entries done) on
// its own session.
func (e *env) startCoordinator() error {
	c, err := znodes.Dial(e.ctx, znodes.Options{Servers: e.zk.Addr(), SessionTimeout: e.cfg.SessionTimeout,
		ConnectTimeout: 20 * time.Second, Logger: discard()})
	if err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	e.bg.Go(func() {
		defer c.Close()
		err := coordinator.Run(e.ctx, coordinator.Config{Conn: c, ID: "bench-scale", Logger: e.agentLogger("coordinator")})
		if err != nil && e.ctx.Err() == nil {
			e.log.Error("coordinator ended", "err", err)
		}
	})
	return nil
}

// agentLogger logs warnings and errors of a component to agents.log.
func (e *env) agentLogger(who string) *slog.Logger {
	return slog.New(slog.NewTextHandler(e.agentLog, &slog.HandlerOptions{Level: slog.LevelWarn})).With("who", who)
}

func (e *env) eventEnv() string { return "SCALE_EVENT_LOG=" + e.events.path }

// startInstances runs n in-process agents (agent.Run, each with its own
// ZooKeeper session, data dir, machine name and rack), in batches so the
// sessions do not all connect in the same millisecond.
func (e *env) startInstances(racks int) {
	for i := 0; i < e.n; i++ {
		m, rack := machineName(i), rackOf(i, racks)
		cfg := agent.Config{
			Machine: m, Rack: rack, DC: "dc1", Services: []string{Service},
			DataDir: filepath.Join(e.dir, "agents", m), ZK: e.zk.Addr(), SessionTimeout: e.cfg.SessionTimeout,
			PollInterval: e.cfg.PollInterval, HealthInterval: e.cfg.HealthInterval, StopGrace: 5 * time.Second,
			StopServicesOnExit: true, MlockBudget: -1,
			Env:     map[string][]string{"*": {e.eventEnv()}},
			Fetcher: agent.DirFetcher{Dir: e.blobDir}, Logger: e.agentLogger(m),
		}
		ctx, cancel := context.WithCancel(e.ctx)
		in := &instance{machine: m, rack: rack, cancel: cancel, done: make(chan error, 1)}
		go func() { in.done <- agent.Run(ctx, cfg) }()
		e.mu.Lock()
		e.instances = append(e.instances, in)
		e.mu.Unlock()
		if i%50 == 49 {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// startReal runs the real `dcroll agent` processes (BitTorrent from the
// origin, their own logs).
func (e *env) startReal(racks int) error {
	for j := 0; j < e.cfg.Real; j++ {
		m, rack := realName(j), rackOf(e.n+j, racks)
		dir := filepath.Join(e.dir, "real", m)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		cfgPath := filepath.Join(dir, "agent.yaml")
		var b strings.Builder
		fmt.Fprintf(&b, "machine: %s\nrack: %s\ndc: dc1\ndata_dir: %q\nzk: %q\n", m, rack, filepath.Join(dir, "data"), e.zk.Addr())
		fmt.Fprintf(&b, "session_timeout: %s\npeer_listen: \"127.0.0.1:0\"\nmlock_budget: -1\nstop_grace: 5s\nstop_services_on_exit: true\n", e.cfg.SessionTimeout)
		if e.cfg.PollInterval > 0 {
			fmt.Fprintf(&b, "poll_interval: %s\n", e.cfg.PollInterval)
		}
		if e.cfg.HealthInterval > 0 {
			fmt.Fprintf(&b, "health_interval: %s\n", e.cfg.HealthInterval)
		}
		fmt.Fprintf(&b, "services: [%s]\nenv:\n  \"*\":\n    - %q\n", Service, e.eventEnv())
		if err := os.WriteFile(cfgPath, []byte(b.String()), 0o644); err != nil {
			return err
		}
		logf, err := os.OpenFile(filepath.Join(dir, "agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		cmd := exec.Command(e.cfg.Dcroll, "--log-format", "json", "--zk", e.zk.Addr(), "agent", "--config", cfgPath)
		cmd.Stdout, cmd.Stderr = logf, logf
		// Its own process group: a Ctrl-C reaches only the benchmark,
		// which stops the agent (and so its service) in order.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			logf.Close()
			return fmt.Errorf("start %s: %w", m, err)
		}
		ra := &realAgent{machine: m, rack: rack, cmd: cmd, done: make(chan struct{})}
		go func() {
			_ = cmd.Wait()
			logf.Close()
			close(ra.done)
		}()
		e.mu.Lock()
		e.reals = append(e.reals, ra)
		e.mu.Unlock()
	}
	return nil
}

// domains maps every machine to its rack.
func (e *env) domains() map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]string{}
	for _, in := range e.instances {
		out[in.machine] = in.rack
	}
	for _, r := range e.reals {
		out[r.machine] = r.rack
	}
	return out
}

// realPIDs are the real agents' process ids.
func (e *env) realPIDs() []int {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []int
	for _, r := range e.reals {
		out = append(out, r.cmd.Process.Pid)
	}
	return out
}

// close stops everything this size started, each with a deadline, then
// kills whatever still runs in the size's directory (services outlive
// their agents) and stops ZooKeeper.
func (e *env) close() {
	e.mu.Lock()
	ins, reals := e.instances, e.reals
	e.mu.Unlock()
	for _, r := range reals {
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, in := range ins {
		in.cancel()
	}
	deadline := time.After(60 * time.Second)
	stuck := 0
	for _, in := range ins {
		select {
		case <-in.done:
		case <-deadline:
			stuck++
		}
	}
	for _, r := range reals {
		select {
		case <-r.done:
		case <-time.After(15 * time.Second):
			_ = r.cmd.Process.Kill()
			<-r.done
		}
	}
	if stuck > 0 {
		e.log.Warn("in-process agents did not stop in time", "count", stuck)
	}
	e.cancel()
	waited := make(chan struct{})
	go func() { e.bg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(15 * time.Second):
		e.log.Warn("background tasks did not stop in time")
	}
	if e.conn != nil {
		e.conn.Close()
	}
	if e.zk != nil {
		if err := e.zk.Stop(); err != nil {
			e.log.Warn("stop zookeeper", "err", err)
		}
	}
	if n := killUnder(e.dir); n > 0 {
		e.log.Warn("killed leftover service processes", "count", n)
	}
	if e.agentLog != nil {
		e.agentLog.Close()
	}
}

// killUnder SIGKILLs every process (other than this one) whose working
// directory is under dir: the services, which run in their unpacked
// version directories. It returns how many it signalled.
func killUnder(dir string) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	self, n := os.Getpid(), 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err != nil {
			continue
		}
		if cwd == dir || strings.HasPrefix(cwd, dir+string(filepath.Separator)) {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				n++
			}
		}
	}
	return n
}

// waitFor polls cond every interval until it returns true, an error, ctx
// ends or timeout passes.
func waitFor(ctx context.Context, timeout, every time.Duration, what string, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(every)
	defer t.Stop()
	var last error
	for {
		ok, err := cond()
		if err != nil {
			last = err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), last)
			}
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}

var errUnsupported = errors.New("not supported by this version of spec")
