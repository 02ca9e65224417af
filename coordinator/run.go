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
	// Interval is how often the leader re-reads the queue (default 1s).
	Interval time.Duration
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// Listening, if set, receives the dashboard's bound address.
	Listening func(addr string)
	// Mount adds handlers to the dashboard's server (e.g. "/announce": a
	// rack-aware tracker, so the tracker runs wherever coordinators run).
	Mount map[string]http.Handler
	// NoMembersAfter halts the active deploy entry of a service that has no
	// member at all (no member record, registration or step record) for
	// this long, so that a spec naming a service nobody runs does not
	// block the queue silently. It is measured from when the leader first
	// saw that entry active with no members (a new leader starts over).
	// Default DefaultNoMembersAfter; negative: never.
	NoMembersAfter time.Duration
	// Now is the leader's clock (default time.Now).
	Now func() time.Time
}

// DefaultNoMembersAfter is the default Config.NoMembersAfter.
const DefaultNoMembersAfter = 10 * time.Minute

// ElectionName is the election every coordinator joins.
const ElectionName = "coordinator"

// Run serves the dashboard and, while elected leader, advances the deploy
// queue: it marks the active entry done once its service is complete (every
// member, absent ones included, runs the target: DeployEntry.CompletedBy),
// and halts it when the service has had no member for NoMembersAfter. All
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
	if cfg.NoMembersAfter == 0 {
		cfg.NoMembersAfter = DefaultNoMembersAfter
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger.With("component", "coordinator", "id", cfg.ID)
	c := cfg.Conn
	if err := c.EnsureSkeleton(); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	errc := make(chan error, 1)
	el := znodes.NewElection(c, ElectionName, cfg.ID)
	if cfg.HTTPAddr != "" {
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("coordinator: dashboard listen %s: %w", cfg.HTTPAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/", dashboard(c, el))
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
	go func() {
		errc <- el.Run(ctx, func(leaderCtx context.Context) error {
			log.Info("elected leader: advancing the deploy queue")
			a := &advancer{c: c, log: log, now: cfg.Now, noMembersAfter: cfg.NoMembersAfter}
			return a.run(leaderCtx, cfg.Interval)
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

// advancer is the leader's queue driver: it polls the queue and the active
// entry's fleet with plain reads (no watches) once per tick.
type advancer struct {
	c   *znodes.Conn
	log *slog.Logger
	now func() time.Time
	// noMembersAfter: see Config.NoMembersAfter (negative: never).
	noMembersAfter time.Duration

	// The active entry last seen with no members, and since when: the
	// no-members deadline runs from there, so a new leader starts the
	// clock again (it halts later, never earlier) and no clock but the
	// leader's is involved.
	emptyNode  string
	emptySince time.Time
}

// run advances the queue every tick until ctx ends.
func (a *advancer) run(ctx context.Context, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := a.once(); err != nil {
			a.log.Warn("advance deploy queue", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// once marks the active entry done if its service is complete, and repeats
// for the next one; it halts an active entry whose service has had no
// member for longer than the deadline. A removal with no member is done:
// nothing runs the service.
func (a *advancer) once() error {
	for {
		q, err := ReadQueue(a.c)
		if err != nil {
			return err
		}
		e := Active(q)
		if e == nil || e.State == znodes.DeployHalted {
			a.emptyNode = ""
			return nil
		}
		f, err := a.c.ReadFleet(e.Service)
		if err != nil {
			return err
		}
		states := f.States()
		if len(states) == 0 && e.Kind != znodes.KindRemoved {
			return a.noMembers(*e)
		}
		a.emptyNode = ""
		if len(states) > 0 && !e.CompletedBy(f) {
			return nil
		}
		ok, err := MarkDone(a.c, *e)
		if err != nil {
			return err
		}
		if ok {
			a.log.Info("service rolled out", "service", e.Service, "version", e.Version, "kind", e.Kind, "members", len(states))
		}
	}
}

// noMembers starts or checks the no-members deadline of the active entry e.
func (a *advancer) noMembers(e QueueEntry) error {
	now := a.now()
	if a.emptyNode != e.Node {
		a.emptyNode, a.emptySince = e.Node, now
		return nil
	}
	if a.noMembersAfter < 0 || now.Sub(a.emptySince) < a.noMembersAfter {
		return nil
	}
	reason := fmt.Sprintf("no machine has registered service %s for %s: start agents with --service %s, or remove %s from the spec",
		e.Service, a.noMembersAfter, e.Service, e.Service)
	ok, err := Halt(a.c, e, reason, "")
	if err != nil {
		return err
	}
	if ok {
		a.log.Warn("halted the rollout: no members", "service", e.Service, "entry", e.Node, "after", a.noMembersAfter)
	}
	a.emptyNode = ""
	return nil
}
