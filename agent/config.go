package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"dcroll/znodes"
)

// Defaults applied by Config.applyDefaults.
const (
	DefaultSessionTimeout = 10 * time.Second
	DefaultPollInterval   = 5 * time.Second
	DefaultHealthInterval = time.Second
	DefaultStopGrace      = 10 * time.Second
	DefaultDialRetry      = 2 * time.Second
)

// Fetcher puts a blob on local disk, verified against its sha256, and
// returns its path. distrib.Node implements it (see NewDistribFetcher);
// tests may use a directory.
type Fetcher interface {
	Fetch(ctx context.Context, id string, onProgress func(znodes.BlobProgress)) (string, error)
}

// Config configures an agent: one machine, one or more services.
type Config struct {
	// Machine is this machine's name (a znode name). Required.
	Machine string `yaml:"machine" json:"machine"`
	// Rack and DC locate the machine; rack is used by the one-rack-at-a-time rule.
	Rack string `yaml:"rack" json:"rack"`
	DC   string `yaml:"dc" json:"dc"`
	// Services this agent runs, one worker each. Required.
	Services []string `yaml:"services" json:"services"`
	// DataDir holds state.json, unpacked versions, settings and logs per service. Required.
	DataDir string `yaml:"data_dir" json:"data_dir"`

	// ZK is the ZooKeeper connect string "host:port,host:port". Required.
	ZK string `yaml:"zk" json:"zk"`
	// Root is the dcroll root znode (default /dc).
	Root string `yaml:"root" json:"root"`
	// SessionTimeout requested from ZooKeeper (default 10s).
	SessionTimeout time.Duration `yaml:"session_timeout" json:"session_timeout"`

	// PeerListen is the BitTorrent listen address ip:port (port 0: any).
	PeerListen string `yaml:"peer_listen" json:"peer_listen"`
	// HTTPAddr serves /metrics (Prometheus) and /status (JSON); empty: none.
	HTTPAddr string `yaml:"http_addr" json:"http_addr"`
	// MlockBudget bounds the bytes of data blobs kept locked in memory
	// (0: only RLIMIT_MEMLOCK applies; negative: do not lock).
	MlockBudget int64 `yaml:"mlock_budget" json:"mlock_budget"`
	// Env are extra NAME=value variables per service, e.g.
	// {"web": ["DCROLL_PORT=8081"]}; the key "*" applies to every service.
	Env map[string][]string `yaml:"env" json:"env"`

	// PollInterval re-reads ZooKeeper even without a watch event (default 5s).
	PollInterval time.Duration `yaml:"poll_interval" json:"poll_interval"`
	// HealthInterval is how often the running service is probed (default 1s).
	HealthInterval time.Duration `yaml:"health_interval" json:"health_interval"`
	// StopGrace is the SIGTERM-to-SIGKILL delay when stopping a version (default 10s).
	StopGrace time.Duration `yaml:"stop_grace" json:"stop_grace"`

	// StopServicesOnExit stops the services when the agent exits (default:
	// leave them running; the next agent adopts them).
	StopServicesOnExit bool `yaml:"stop_services_on_exit" json:"stop_services_on_exit"`

	// Fetcher overrides blob distribution (default: a distrib node).
	Fetcher Fetcher `yaml:"-" json:"-"`
	// Logger is the agent's logger (default slog.Default()).
	Logger *slog.Logger `yaml:"-" json:"-"`
	// Clock is the time source of decisions (default real time).
	Clock znodes.Clock `yaml:"-" json:"-"`

	// Test hooks, read from the environment only (see testHooksFromEnv);
	// never set in production.
	testUnsafeRules bool
	testSpendDelay  time.Duration
}

// Test-hook environment variables of the fault-matrix suite
// (integration/faults). DCROLL_TEST_UNSAFE_RULES=1 makes the decision core
// ignore quorum, max_parallel and the rack rule, so the suite can show that
// its checker catches a broken rule; DCROLL_TEST_SPEND_DELAY=3s sleeps
// between a decision and its spend (logged as "test hook: delaying spend"),
// so a pause, halt or push can land in between.
const (
	EnvTestUnsafeRules = "DCROLL_TEST_UNSAFE_RULES"
	EnvTestSpendDelay  = "DCROLL_TEST_SPEND_DELAY"
)

func (c *Config) testHooksFromEnv() error {
	c.testUnsafeRules = os.Getenv(EnvTestUnsafeRules) == "1"
	if v := os.Getenv(EnvTestSpendDelay); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%s=%q: %w", EnvTestSpendDelay, v, err)
		}
		c.testSpendDelay = d
	}
	return nil
}

func (c *Config) applyDefaults() {
	if c.Root == "" {
		c.Root = znodes.DefaultRoot
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = DefaultSessionTimeout
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.HealthInterval == 0 {
		c.HealthInterval = DefaultHealthInterval
	}
	if c.StopGrace == 0 {
		c.StopGrace = DefaultStopGrace
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = znodes.RealClock{}
	}
	if c.Rack == "" {
		c.Rack = "default"
	}
	if c.PeerListen == "" {
		c.PeerListen = "127.0.0.1:0"
	}
	if err := c.testHooksFromEnv(); err != nil {
		c.Logger.Warn("ignoring test hook", "err", err)
	}
	if c.testUnsafeRules {
		c.Logger.Warn("TEST HOOK " + EnvTestUnsafeRules + "=1: quorum, max_parallel and the rack rule are IGNORED")
	}
}

func (c *Config) validate() error {
	var errs []error
	if err := znodes.ValidName(c.Machine); err != nil {
		errs = append(errs, fmt.Errorf("machine: %w", err))
	}
	if len(c.Services) == 0 {
		errs = append(errs, errors.New("services: name at least one service this machine runs"))
	}
	seen := map[string]bool{}
	for _, s := range c.Services {
		if err := znodes.ValidName(s); err != nil {
			errs = append(errs, fmt.Errorf("service: %w", err))
		}
		if seen[s] {
			errs = append(errs, fmt.Errorf("service %s listed twice", s))
		}
		seen[s] = true
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data_dir: required (where versions and state.json live)"))
	}
	if c.ZK == "" {
		errs = append(errs, errors.New("zk: required (host:port of ZooKeeper)"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("agent config: %w", err)
	}
	return os.MkdirAll(c.DataDir, 0o755)
}

// envFor returns the extra environment of a service.
func (c *Config) envFor(service string) []string {
	return append(append([]string(nil), c.Env["*"]...), c.Env[service]...)
}
