package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/urfave/cli/v2"

	"dcroll/coordinator"
)

// dashboardCommand serves the coordinator's dashboard for any ZooKeeper,
// without joining the election: a read-only window on a data center.
func dashboardCommand() *cli.Command {
	return &cli.Command{
		Name:  "dashboard",
		Usage: "serve the live web dashboard of a data center (read-only; no coordinator needed)",
		Description: `Serves the same dashboard every coordinator serves, for the data center at
--zk/--root, from any machine: it only reads ZooKeeper, takes no part in the
election and advances nothing.

   dcroll --zk zk1:2181 --root /dc dashboard --listen 127.0.0.1:7081
   # then open http://127.0.0.1:7081/ (or ssh -L 7081:127.0.0.1:7081 host)

The page updates itself without reloading (server-sent events at
/api/events): the rack map (a tile per machine, grouped by data center and
rack, coloured by version; hover a tile for its machine, version, state and
why), the deploy queue with blocked-by and ETA, a banner with the exact next
commands on a halt or a pause, downloads in flight, history with outcomes and
the rollback target. When ZooKeeper is unreachable the page keeps the last
data greyed with "stale since ..." and recovers by itself once it is back.

Endpoints: / (the page), /api/events (the stream), /api/night (one snapshot:
status, night record and history, JSON), /api/status (dcroll status --json),
/metrics (Prometheus) and /healthz (200 while the ZooKeeper session is
connected, 503 with the reason otherwise).

It binds to 127.0.0.1 by default: the page shows the whole fleet, so expose
it deliberately (--listen :7081) or behind your proxy.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:7081", EnvVars: []string{"DCROLL_DASHBOARD_LISTEN"}, Usage: "serve the dashboard on `ADDR` (host:port; port 0 picks a free one)"},
			sessionTimeoutFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef(c.Command.HelpName, "unexpected argument %q", c.Args().First())
			}
			conn, err := daemonConn(c)
			if err != nil {
				return err
			}
			defer conn.Close()
			log := logger(c).With("component", "dashboard")
			ln, err := net.Listen("tcp", c.String("listen"))
			if err != nil {
				return fmt.Errorf("dashboard: listen %s: %w", c.String("listen"), err)
			}
			// No WriteTimeout: /api/events is a stream that lasts as long as
			// the page is open.
			srv := &http.Server{Handler: coordinator.Dashboard(conn), ReadHeaderTimeout: 5 * time.Second}
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(ln) }()
			log.Info("dashboard listening", "addr", "http://"+ln.Addr().String()+"/", "root", conn.Paths().Root)
			select {
			case err := <-errc:
				return fmt.Errorf("dashboard: %w", err)
			case <-c.Context.Done():
			}
			// Streams never finish by themselves: give plain requests a
			// moment, then close whatever is left.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				log.Warn("dashboard shutdown", "err", err)
			}
			if err := srv.Close(); err != nil {
				log.Warn("dashboard close", "err", err)
			}
			if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("dashboard: %w", err)
			}
			log.Info("dashboard stopped")
			return nil
		},
	}
}
