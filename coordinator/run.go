package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/go-zookeeper/zk"

	"dcroll/znodes"
)

// Config configures Run.
type Config struct {
	// Conn is the ZooKeeper connection (owned by the caller).
	Conn *znodes.Conn
	// ID names this coordinator in the election (default hostname:pid).
	ID string
	// HTTPAddr serves the dashboard, /api/status and /metrics ("" = off).
	HTTPAddr string
	// Interval is the fallback re-check period besides watches (default 1s).
	Interval time.Duration
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// Listening, if set, receives the dashboard's bound address.
	Listening func(addr string)
	// Mount adds handlers to the dashboard's server (e.g. "/announce": a
	// rack-aware tracker, so the tracker runs wherever coordinators run).
	Mount map[string]http.Handler
}

// ElectionName is the election every coordinator joins.
const ElectionName = "coordinator"

// Run serves the dashboard and, while elected leader, advances the deploy
// queue: it marks the active entry done once its service is complete. All
// progress lives in ZooKeeper, so a new leader resumes where the old one
// stopped; agents advance the queue too, and the versioned write makes each
// advance happen once.
func Run(ctx context.Context, cfg Config) error {
	if cfg.ID == "" {
		host, _ := os.Hostname()
		cfg.ID = fmt.Sprintf("%s:%d", host, os.Getpid())
	}
	if cfg.Interval == 0 {
		cfg.Interval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("component", "coordinator", "id", cfg.ID)
	c := cfg.Conn
	if err := c.EnsureSkeleton(); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	errc := make(chan error, 1)
	if cfg.HTTPAddr != "" {
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("coordinator: dashboard listen %s: %w", cfg.HTTPAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/", Dashboard(c))
		for p, h := range cfg.Mount {
			mux.Handle(p, h)
		}
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("coordinator: dashboard: %w", err)
			}
		}()
		defer srv.Close()
		log.Info("dashboard listening", "addr", "http://"+ln.Addr().String()+"/")
		if cfg.Listening != nil {
			cfg.Listening(ln.Addr().String())
		}
	}
	el := znodes.NewElection(c, ElectionName, cfg.ID)
	go func() {
		errc <- el.Run(ctx, func(leaderCtx context.Context) error {
			log.Info("elected leader: advancing the deploy queue")
			return advance(leaderCtx, c, cfg.Interval, log)
		})
	}()
	select {
	case err := <-errc:
		if ctx.Err() != nil {
			return nil
		}
		return err
	case <-ctx.Done():
		return nil
	}
}

// advance marks completed entries done until ctx ends.
func advance(ctx context.Context, c *znodes.Conn, every time.Duration, log *slog.Logger) error {
	nudge := make(chan struct{}, 1)
	poke := func(ev <-chan zk.Event) {
		go func() {
			select {
			case <-ev:
				select {
				case nudge <- struct{}{}:
				default:
				}
			case <-ctx.Done():
			}
		}()
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if _, _, ev, err := c.ZK().ChildrenW(c.Paths().Deploy()); err == nil {
			poke(ev)
		}
		if err := advanceOnce(c, log); err != nil {
			log.Warn("advance deploy queue", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-nudge:
		case <-t.C:
		}
	}
}

// advanceOnce marks the active entry done if its service is complete, and
// repeats for the next one.
func advanceOnce(c *znodes.Conn, log *slog.Logger) error {
	for {
		q, err := ReadQueue(c)
		if err != nil {
			return err
		}
		e := Active(q)
		if e == nil || e.State == znodes.DeployHalted {
			return nil
		}
		cur, downs, err := ServiceMachines(c, e.Service)
		if err != nil {
			return err
		}
		if !e.CompletedBy(cur, len(downs)) {
			return nil
		}
		ok, err := MarkDone(c, *e)
		if err != nil {
			return err
		}
		if ok {
			log.Info("service rolled out", "service", e.Service, "version", e.Version, "machines", len(cur))
		}
	}
}

// ServiceMachines reads /dc/current/<service> and the names in /dc/down/<service>.
func ServiceMachines(c *znodes.Conn, service string) ([]znodes.Current, []string, error) {
	p := c.Paths()
	names, err := children(c, p.Current(service))
	if err != nil {
		return nil, nil, err
	}
	var out []znodes.Current
	for _, m := range names {
		var cur znodes.Current
		if _, err := c.GetJSON(p.CurrentMachine(service, m), &cur); err != nil {
			if errors.Is(err, zk.ErrNoNode) {
				continue
			}
			return nil, nil, err
		}
		out = append(out, cur)
	}
	downs, err := children(c, p.Down(service))
	if err != nil {
		return nil, nil, err
	}
	return out, downs, nil
}
