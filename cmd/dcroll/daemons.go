package main

import (
	"net/http"
	"time"

	"github.com/urfave/cli/v2"

	"dcroll/coordinator"
	"dcroll/distrib"
	"dcroll/znodes"
)

// daemonConn dials with the daemon's session timeout and its logger.
func daemonConn(c *cli.Context) (*znodes.Conn, error) {
	return dialWith(c, logger(c), c.Duration("session-timeout"))
}

func sessionTimeoutFlag() *cli.DurationFlag {
	return &cli.DurationFlag{Name: "session-timeout", Value: 10 * time.Second, EnvVars: []string{"DCROLL_SESSION_TIMEOUT"}, Usage: "ZooKeeper session timeout: how long a dead process keeps its ephemeral nodes"}
}

func coordinatorCommand() *cli.Command {
	return &cli.Command{
		Name:  "coordinator",
		Usage: "serve the dashboard and metrics; the elected leader advances the deploy queue",
		Description: `Run one or more anywhere: they elect a leader through ZooKeeper. The leader
marks a service's deploy entry done once every machine runs the new version
(agents do it too; the write happens exactly once), runs canary phases
(bake, promotion), and writes the night record /dc/rollout: per service what
blocks it and an ETA from measured step times (dcroll status, the dashboard
and /metrics read it). Every instance serves the live web dashboard at /
(updates over /api/events; /api/night is one JSON snapshot), the status API
at /api/status, Prometheus metrics at /metrics (read from znode state, plus
dcroll_coordinator_leader, dcroll_night_eta_seconds, dcroll_service_blocked,
build info and the Go and process collectors) and /healthz (200 while its
ZooKeeper session is connected, 503 with the reason otherwise). In a secured
tree (dcroll init) run it with the coordinator credential: --zk-auth
coordinator.cred.

The leader also halts the active entry of a service that has no member at all
(no machine ever registered it, or all were removed) for --no-members-after,
so a spec naming a service nobody runs does not block the queue silently:
   dcroll coordinator --no-members-after 30m`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "http", Value: "127.0.0.1:7080", EnvVars: []string{"DCROLL_COORDINATOR_HTTP"}, Usage: "dashboard, metrics and /healthz `ADDR`"},
			&cli.StringFlag{Name: "id", Usage: "candidate id in the election (default host:pid)"},
			&cli.BoolFlag{Name: "tracker", Value: true, Usage: "also serve the rack-aware BitTorrent tracker at /announce (publish with --tracker http://THIS/announce)"},
			&cli.BoolFlag{Name: "members-only", Usage: "close the tracker: an announce from an address that is not a registered agent (/dc/agents) gets no peers"},
			&cli.DurationFlag{Name: "no-members-after", Value: coordinator.DefaultNoMembersAfter, EnvVars: []string{"DCROLL_NO_MEMBERS_AFTER"}, Usage: "halt the active entry of a service no machine has registered for this `DURATION` (0: never)"},
			sessionTimeoutFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.Duration("no-members-after") < 0 {
				return usageError{msg: "coordinator: --no-members-after must not be negative (0: never)"}
			}
			conn, err := daemonConn(c)
			if err != nil {
				return err
			}
			defer conn.Close()
			cfg := coordinator.Config{Conn: conn, ID: c.String("id"), HTTPAddr: c.String("http"), Logger: logger(c), NoMembersAfter: c.Duration("no-members-after")}
			if cfg.NoMembersAfter == 0 {
				cfg.NoMembersAfter = -1 // never
			}
			if c.Bool("tracker") {
				racks := distrib.NewRackMap(conn, logger(c))
				go func() { _ = racks.Run(c.Context) }()
				cfg.Mount = map[string]http.Handler{"/announce": distrib.NewTracker(distrib.TrackerConfig{Racks: racks, Logger: logger(c), MembersOnly: c.Bool("members-only")})}
			}
			return coordinator.Run(c.Context, cfg)
		},
	}
}
