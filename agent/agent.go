package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"dcroll/distrib"
	"dcroll/internal/obs"
	"dcroll/spec"
	"dcroll/znodes"
)

// AgentVersion is reported in /dc/agents.
const AgentVersion = "dcroll-agent/1"

// runtime is what the workers of one agent share.
type runtime struct {
	cfg Config
	// log is the agent's own logger (component agent); base carries only
	// the machine, for components that name themselves (supervise, zk):
	// deriving those from log would repeat the component key.
	log     *slog.Logger
	base    *slog.Logger
	metrics *metrics
	// gate accepts or refuses HEAD (Config.Trust); it has its own lock.
	gate *headGate

	mu       sync.Mutex
	f        Fetcher
	specs    map[string]*spec.Spec
	workers  []*worker
	conn     *znodes.Conn
	peerAddr string
	started  time.Time

	// stagingJobs counts running prepares: blobs are not garbage-collected
	// while one may have fetched a blob it has not recorded yet.
	stagingJobs atomic.Int32
}

func (rt *runtime) now() time.Time { return rt.cfg.Clock.Now() }

func (rt *runtime) fetcher() (Fetcher, error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.f == nil {
		return nil, errors.New("blob distribution not started yet")
	}
	return rt.f, nil
}

// loadSpec reads /dc/specs/<id> (immutable, so cached).
func (rt *runtime) loadSpec(c *znodes.Conn, id string) (*spec.Spec, error) {
	rt.mu.Lock()
	sp := rt.specs[id]
	rt.mu.Unlock()
	if sp != nil {
		return sp, nil
	}
	b, _, err := c.ZK().Get(c.Paths().Spec(id))
	if err != nil {
		return nil, fmt.Errorf("load spec %s: %w", spec.ShortID(id), err)
	}
	if sp, err = spec.FromStored(id, b); err != nil {
		return nil, err
	}
	rt.mu.Lock()
	rt.specs[id] = sp
	rt.mu.Unlock()
	return sp, nil
}

// keepBlobs garbage-collects the blob store down to what the workers run,
// stage or may revert to.
func (rt *runtime) keepBlobs() {
	rt.mu.Lock()
	f, workers := rt.f, rt.workers
	rt.mu.Unlock()
	k, ok := f.(blobKeeper)
	if !ok || rt.stagingJobs.Load() > 0 {
		return
	}
	var ids, prev []string
	for _, w := range workers {
		i, p := w.neededBlobs()
		ids, prev = append(ids, i...), append(prev, p...)
	}
	if err := k.Keep(ids, prev); err != nil {
		rt.log.Warn("blob garbage collection", "err", err)
	}
}

func (rt *runtime) agentPayload() ([]byte, error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	a := znodes.Agent{Machine: rt.cfg.Machine, Rack: rt.cfg.Rack, DC: rt.cfg.DC, Services: rt.cfg.Services,
		PeerAddr: rt.peerAddr, HTTPAddr: rt.cfg.HTTPAddr, Version: AgentVersion, Since: rt.started.UTC()}
	if n, ok := rt.f.(*distrib.Node); ok {
		a.LockedBytes = n.Locker().Locked()
	}
	return znodes.Encode(&a)
}

// publishLocked keeps /dc/agents/<machine> locked_bytes true: it rewrites
// the registration whenever the mlocked total changes (checked every 2 s).
func (rt *runtime) publishLocked(ctx context.Context, reg *znodes.Registration, node *distrib.Node) {
	last := node.Locker().Locked()
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := node.Locker().Locked()
		if n == last {
			continue
		}
		b, err := rt.agentPayload()
		if err == nil {
			err = reg.Update(b)
		}
		if err != nil {
			rt.log.Warn("update agent registration", "err", err)
			continue
		}
		last = n
	}
}

// Run is the agent: it boots the locally remembered version of every
// service (no ZooKeeper needed), serves /metrics and /status, connects to
// ZooKeeper (retrying forever; services keep running meanwhile), starts
// blob distribution, registers /dc/agents/<machine> and runs one worker per
// service until ctx ends. On return the services are left running (to be
// adopted by the next agent) unless Config.StopServicesOnExit.
func Run(ctx context.Context, cfg Config) error {
	cfg.applyDefaults()
	if err := cfg.validate(); err != nil {
		return err
	}
	base := cfg.Logger.With("machine", cfg.Machine)
	gate, err := newHeadGate(cfg)
	if err != nil {
		return err
	}
	rt := &runtime{cfg: cfg, log: base.With("component", "agent"), base: base, gate: gate,
		metrics: newMetrics(), specs: map[string]*spec.Spec{}, started: cfg.Clock.Now()}
	rt.metrics.register(rt)
	for _, s := range cfg.Services {
		w, err := newWorker(rt, s)
		if err != nil {
			return err
		}
		rt.workers = append(rt.workers, w)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		rt.shutdown()
	}()

	if cfg.HTTPAddr != "" {
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("agent http %s: %w", cfg.HTTPAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/", rt.handler())
		mux.Handle("GET /healthz", obs.Healthz(obs.ZooKeeper(func() *znodes.Conn {
			rt.mu.Lock()
			defer rt.mu.Unlock()
			return rt.conn
		})))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				rt.log.Error("http server", "err", err)
			}
		}()
		go func() {
			defer wg.Done()
			<-ctx.Done()
			sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
			defer c()
			_ = srv.Shutdown(sctx)
		}()
	}

	for _, w := range rt.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.healthLoop(ctx)
		}()
	}
	for _, w := range rt.workers {
		w.boot(ctx)
	}

	conn := rt.dial(ctx)
	if conn == nil {
		return nil
	}
	defer conn.Close()
	rt.mu.Lock()
	rt.conn = conn
	rt.mu.Unlock()

	if err := conn.EnsureSkeleton(); err != nil {
		rt.log.Warn("ensure znode skeleton", "err", err)
	}
	f := cfg.Fetcher
	if f == nil {
		node, err := distrib.NewNode(ctx, distrib.NodeConfig{
			DataDir: filepath.Join(cfg.DataDir, "blobs"), ListenAddr: cfg.PeerListen, Conn: conn,
			Machine: cfg.Machine, MlockBudget: max(cfg.MlockBudget, 0), Logger: cfg.Logger,
			CongestionControl: cfg.CongestionControl,
		})
		if err != nil {
			return fmt.Errorf("agent: start blob distribution: %w", err)
		}
		defer node.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := node.RunProgress(ctx); err != nil && ctx.Err() == nil {
				rt.log.Warn("progress reporting ended", "err", err)
			}
		}()
		rt.mu.Lock()
		rt.peerAddr = node.PeerAddr()
		rt.mu.Unlock()
		f = node
	}
	rt.mu.Lock()
	rt.f = f
	rt.mu.Unlock()
	rt.keepBlobs()

	reg := znodes.NewRegistration(conn, conn.Paths().Agent(cfg.Machine), rt.agentPayload)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := reg.Run(ctx); err != nil {
			rt.log.Error("agent registration ended", "err", err)
		}
	}()
	rt.log.Info("agent running", "services", cfg.Services, "peer", rt.peerAddr, "rack", cfg.Rack)
	if node, ok := f.(*distrib.Node); ok {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rt.publishLocked(ctx, reg, node)
		}()
	}

	errc := make(chan error, len(rt.workers))
	for _, w := range rt.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- w.run(ctx, conn)
		}()
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("agent: %w", err)
	}
}

// dial connects to ZooKeeper, retrying until ctx ends (nil then). The
// services booted from local state keep running meanwhile.
func (rt *runtime) dial(ctx context.Context) *znodes.Conn {
	for {
		o := znodes.Options{Servers: rt.cfg.ZK, Root: rt.cfg.Root, SessionTimeout: rt.cfg.SessionTimeout, Logger: rt.base}
		err := rt.cfg.zkSecurity().Apply(&o)
		var conn *znodes.Conn
		if err == nil {
			conn, err = znodes.Dial(ctx, o)
		}
		if err == nil {
			return conn
		}
		rt.log.Warn("zookeeper unreachable; services keep running their local version", "err", err, "retry_in", DefaultDialRetry.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(DefaultDialRetry):
		}
	}
}

// shutdown leaves every service running for the next agent (or stops it).
func (rt *runtime) shutdown() {
	for _, w := range rt.workers {
		sup := w.takeRunning()
		if sup == nil {
			continue
		}
		if rt.cfg.StopServicesOnExit {
			ctx, cancel := context.WithTimeout(context.Background(), rt.cfg.StopGrace+DefaultStopSlack)
			if err := sup.Stop(ctx); err != nil {
				w.log.Warn("stop service on exit", "err", err)
			}
			cancel()
			continue
		}
		sup.Detach()
	}
	rt.log.Info("agent stopped")
}
