package main

import (
	"dcroll/internal/units"
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"dcroll/agent"
	"dcroll/distrib"
)

func agentCommand() *cli.Command {
	return &cli.Command{
		Name:  "agent",
		Usage: "run the machine agent: run services, stage new versions, upgrade in turn",
		Description: `One agent per machine. It registers the machine in /dc/agents and each of its
services in /dc/current/<service>/<machine>, runs the HEAD version of every
service, and when HEAD changes: fetches and verifies the new blobs through the
swarm, mlocks data blobs, enters /dc/staging, and upgrades when the deploy
queue reaches its service, it holds the service's turn and the quorum holds
without it. A failed upgrade reverts this machine and halts the rollout.

Services keep running when the agent exits or ZooKeeper is unreachable; a new
agent adopts them. Configuration comes from --config (YAML, the fields of
agent.Config by their yaml names: machine, rack, dc, services, data_dir, zk,
root, session_timeout, zk_auth, zk_tls_ca, zk_tls_cert, zk_tls_key, trust,
peer_listen, http_addr, mlock_budget, env, poll_interval, health_interval,
stop_grace, stop_services_on_exit), then
environment variables, then flags. Unknown fields are errors. Durations are Go
durations (poll_interval: 5s); sizes (mlock_budget, --mlock-budget) are plain
bytes, 8GiB/512MiB/64KiB (binary) or 8GB/512MB/64KB (decimal),
case-insensitive.

Signed releases: with --trust KEY.pub (repeatable) the agent runs only what
a HEAD signed by one of those keys names (dcroll push --sign KEY); an
unsigned, wrongly signed, unknown-key or replayed HEAD is refused before
anything is downloaded, and the machine keeps running what it runs, with the
reason in /status and the logs.

Example (two services on one machine, each on its own port):
   dcroll agent --machine r1-m1 --rack r1 --dc par1 --service store --service web \
       --data-dir /var/lib/dcroll/agent --env store:DCROLL_PORT=7001 --env web:DCROLL_PORT=8001`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", EnvVars: []string{"DCROLL_AGENT_CONFIG"}, Usage: "YAML config `FILE` (flags override it)"},
			&cli.StringFlag{Name: "machine", EnvVars: []string{"DCROLL_MACHINE"}, Usage: "machine name (default hostname)"},
			&cli.StringFlag{Name: "rack", EnvVars: []string{"DCROLL_RACK"}, Usage: "rack of this machine"},
			&cli.StringFlag{Name: "dc", EnvVars: []string{"DCROLL_DC"}, Usage: "data center of this machine"},
			&cli.StringSliceFlag{Name: "service", EnvVars: []string{"DCROLL_SERVICES"}, Usage: "a `SERVICE` this machine runs (repeat)"},
			&cli.StringFlag{Name: "data-dir", EnvVars: []string{"DCROLL_DATA_DIR"}, Usage: "state, blobs, unpacked versions and logs `DIR`"},
			&cli.StringFlag{Name: "peer-listen", EnvVars: []string{"DCROLL_PEER_LISTEN"}, Usage: "BitTorrent listen `ADDR` (the machine's data-center IP)"},
			&cli.StringFlag{Name: "http", EnvVars: []string{"DCROLL_AGENT_HTTP"}, Usage: "serve /metrics and /status on `ADDR`"},
			&cli.StringFlag{Name: "congestion-control", EnvVars: []string{"DCROLL_CONGESTION_CONTROL"}, Usage: "TCP congestion control of the blob swarm's sockets: `NAME` of a kernel algorithm (default cubic, reno where refused), or system for the kernel's default"},
			&cli.StringFlag{Name: "mlock-budget", EnvVars: []string{"DCROLL_MLOCK_BUDGET"}, Usage: "max `SIZE` of data blobs kept mlocked: " + units.SizeForms + " (0: only RLIMIT_MEMLOCK applies; -1: do not lock)"},
			&cli.StringSliceFlag{Name: "env", Usage: "`SERVICE:NAME=VALUE` for a service's environment (SERVICE * for all; repeat)"},
			&cli.BoolFlag{Name: "stop-services-on-exit", Usage: "stop the services when the agent exits"},
			&cli.StringSliceFlag{Name: "trust", EnvVars: []string{"DCROLL_TRUST"}, Usage: "accept only HEADs signed by the public key `KEY.pub` (dcroll keygen; repeat for key rotation)"},
			sessionTimeoutFlag(),
		},
		Action: func(c *cli.Context) error {
			cfg, err := agentConfig(c)
			if err != nil {
				return err
			}
			return agent.Run(c.Context, cfg)
		},
	}
}

func agentConfig(c *cli.Context) (agent.Config, error) {
	var cfg agent.Config
	if f := c.String("config"); f != "" {
		var err error
		if cfg, err = agent.LoadConfig(f); err != nil {
			return cfg, err
		}
	}
	set := func(name string, dst *string) {
		if c.IsSet(name) || *dst == "" {
			if v := c.String(name); v != "" {
				*dst = v
			}
		}
	}
	set("machine", &cfg.Machine)
	set("rack", &cfg.Rack)
	set("dc", &cfg.DC)
	set("data-dir", &cfg.DataDir)
	set("peer-listen", &cfg.PeerListen)
	set("congestion-control", &cfg.CongestionControl)
	set("http", &cfg.HTTPAddr)
	set("zk-auth", &cfg.ZKAuth)
	set("zk-tls-ca", &cfg.ZKTLSCA)
	set("zk-tls-cert", &cfg.ZKTLSCert)
	set("zk-tls-key", &cfg.ZKTLSKey)
	if t := c.StringSlice("trust"); len(t) > 0 {
		cfg.Trust = t
	}
	if cfg.Machine == "" {
		cfg.Machine, _ = os.Hostname()
	}
	if s := c.StringSlice("service"); len(s) > 0 {
		cfg.Services = nil
		for _, v := range s {
			cfg.Services = append(cfg.Services, strings.Split(v, ",")...)
		}
	}
	if cfg.ZK == "" || c.IsSet("zk") {
		cfg.ZK = c.String("zk")
	}
	if cfg.Root == "" || c.IsSet("root") {
		cfg.Root = c.String("root")
	}
	if cfg.SessionTimeout == 0 || c.IsSet("session-timeout") {
		cfg.SessionTimeout = c.Duration("session-timeout")
	}
	if err := distrib.CheckCongestionControl(cfg.CongestionControl); err != nil {
		return cfg, usageError{msg: "--congestion-control: " + err.Error()}
	}
	if v := c.String("mlock-budget"); v != "" {
		n, err := agent.ParseMlockBudget(v)
		if err != nil {
			return cfg, usageError{msg: fmt.Sprintf("--mlock-budget: %v; sizes are %s", err, units.SizeForms)}
		}
		cfg.MlockBudget = n
	}
	for _, e := range c.StringSlice("env") {
		svc, kv, ok := strings.Cut(e, ":")
		if !ok || !strings.Contains(kv, "=") {
			return cfg, usageError{msg: fmt.Sprintf("--env %q: want SERVICE:NAME=VALUE, e.g. web:DCROLL_PORT=8001", e)}
		}
		if cfg.Env == nil {
			cfg.Env = map[string][]string{}
		}
		cfg.Env[svc] = append(cfg.Env[svc], kv)
	}
	if c.Bool("stop-services-on-exit") {
		cfg.StopServicesOnExit = true
	}
	cfg.Logger = logger(c)
	if cfg.DataDir == "" {
		return cfg, usageError{msg: "agent: --data-dir is required (where state, blobs and versions live)"}
	}
	return cfg, nil
}
