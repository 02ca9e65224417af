package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Config is one benchmark run.
type Config struct {
	Sizes          []int         `json:"sizes"`          // in-process agents per size
	Real           int           `json:"real"`           // real dcroll agent processes per size
	Racks          int           `json:"racks"`          // racks (at most; at least two machines per rack)
	Steps          int           `json:"steps"`          // measure only the first K steps of the one-at-a-time rollout (0: all)
	StepsMinN      int           `json:"steps_min_n"`    // ...at sizes of at least this many in-process agents
	MinHealthy     time.Duration `json:"min_healthy_ns"` // the spec's min_healthy
	SessionTimeout time.Duration `json:"session_timeout_ns"`
	PollInterval   time.Duration `json:"poll_interval_ns"`   // agents' (0: agent default)
	HealthInterval time.Duration `json:"health_interval_ns"` // agents' (0: agent default)
	ZKHeap         string        `json:"zk_heap"`
	RTTN           int           `json:"rtt_n"`
	Settle         time.Duration `json:"settle_ns"` // after bootstrap, before the rest window
	Rest           time.Duration `json:"rest_ns"`   // the at-rest window
	BootTimeout    time.Duration `json:"-"`         // 0: 3m + 0.5s per machine
	RolloutTimeout time.Duration `json:"-"`         // 0: 3m + (min_healthy + 3s) per measured step
	Dcroll         string        `json:"-"`
	Out            string        `json:"-"`
	Work           string        `json:"-"`
	Keep           bool          `json:"-"`
}

func main() {
	if err := benchMain(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "bench scale: %v\n", err)
		os.Exit(1)
	}
}

func benchMain(args []string) error {
	fs := flag.NewFlagSet("scale", flag.ContinueOnError)
	var cfg Config
	sizes := fs.String("sizes", "10,100,1000", "in-process agents per size, comma separated")
	render := fs.String("render", "", "re-render the markdown of a stored scale-*.json (no run)")
	debug := fs.Bool("v", false, "debug logging")
	fs.IntVar(&cfg.Real, "real", 2, "real `dcroll agent` processes per size")
	fs.IntVar(&cfg.Racks, "racks", 20, "racks (at most; smaller sizes get fewer, two machines per rack at least)")
	fs.IntVar(&cfg.Steps, "steps", 0, "measure only the first K steps of the one-at-a-time rollout and extrapolate (0: all), at sizes of at least -steps-min-n")
	fs.IntVar(&cfg.StepsMinN, "steps-min-n", 500, "apply -steps only at sizes with at least this many in-process agents (smaller sizes are measured whole)")
	fs.DurationVar(&cfg.MinHealthy, "min-healthy", 50*time.Millisecond, "the spec's min_healthy: how long a started instance takes to count as healthy")
	fs.DurationVar(&cfg.SessionTimeout, "session-timeout", 10*time.Second, "agents' ZooKeeper session timeout")
	fs.DurationVar(&cfg.PollInterval, "poll-interval", 0, "agents' poll interval (0: the agent default, 5s)")
	fs.DurationVar(&cfg.HealthInterval, "health-interval", 0, "agents' health probe interval (0: the agent default, 1s)")
	fs.StringVar(&cfg.ZKHeap, "zk-heap", "2g", "ZooKeeper JVM heap (-Xmx)")
	fs.IntVar(&cfg.RTTN, "rtt-n", 200, "sequential Sets (and Gets) for the round-trip measurement")
	fs.DurationVar(&cfg.Settle, "settle", 5*time.Second, "wait after bootstrap before measuring the rest window")
	fs.DurationVar(&cfg.Rest, "rest", 10*time.Second, "at-rest window (background rates, watches)")
	fs.DurationVar(&cfg.BootTimeout, "boot-timeout", 0, "bootstrap deadline per size (0: 3m + 0.5s per machine)")
	fs.DurationVar(&cfg.RolloutTimeout, "rollout-timeout", 0, "deadline per rollout (0: 3m + (min_healthy+3s) per measured step)")
	fs.StringVar(&cfg.Dcroll, "dcroll", "", "dcroll binary for the real agents (default: go build ./cmd/dcroll into the scratch dir)")
	fs.StringVar(&cfg.Out, "out", "bench/results", "directory for scale-<date>.{json,md} (empty: print only)")
	fs.StringVar(&cfg.Work, "work", "", "scratch directory (default: a new temp dir, removed afterwards)")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the scratch directory (logs, event log, data dirs)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *render != "" {
		return renderJSON(*render)
	}
	var err error
	if cfg.Sizes, err = parseSizes(*sizes); err != nil {
		return err
	}
	if cfg.Steps == 1 {
		return errors.New("-steps: measure at least 2 steps (or 0 for all)")
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := raiseFileLimit(log); err != nil {
		return err
	}
	work, cleanup, err := scratch(cfg)
	if err != nil {
		return err
	}
	defer cleanup()
	cfg.Work = work
	if cfg.Dcroll == "" && cfg.Real > 0 {
		cfg.Dcroll = filepath.Join(work, "dcroll")
		log.Info("building dcroll for the real agents", "out", cfg.Dcroll)
		bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		out, err := exec.CommandContext(bctx, "go", "build", "-o", cfg.Dcroll, "./cmd/dcroll").CombinedOutput()
		cancel()
		if err != nil {
			return fmt.Errorf("go build ./cmd/dcroll: %w: %s", err, out)
		}
	}

	res := &Result{Date: time.Now().UTC(), Config: cfg,
		Host: HostInfo{CPUs: runtime.NumCPU(), Load1Start: load1(), GoVersion: runtime.Version()}}
	for _, n := range cfg.Sizes {
		if ctx.Err() != nil {
			break
		}
		log.Info("size", "n", n, "real", cfg.Real)
		res.Sizes = append(res.Sizes, runSize(ctx, cfg, n, log))
	}
	res.Host.Load1End = load1()
	if ctx.Err() != nil {
		res.Notes = append(res.Notes, "interrupted: "+ctx.Err().Error())
	}
	res.finish()
	fmt.Println(res.Markdown())
	if cfg.Out != "" && len(res.Sizes) > 0 {
		base, err := res.Write(cfg.Out)
		if err != nil {
			return err
		}
		log.Info("results written", "json", base+".json", "md", base+".md")
	}
	return ctx.Err()
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-sizes: %q is not a positive number", f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("-sizes: give at least one size")
	}
	return out, nil
}

// raiseFileLimit sets RLIMIT_NOFILE to its hard limit: every in-process
// agent holds a ZooKeeper connection, log and PID files, and the pipes
// of its service.
func raiseFileLimit(log *slog.Logger) error {
	var l unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &l); err != nil {
		return err
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &l); err != nil {
			return fmt.Errorf("raise open-file limit: %w", err)
		}
	}
	log.Info("open-file limit", "limit", l.Cur)
	return nil
}

// scratch makes the run's scratch directory; leftovers of crashed runs
// (scale-bench-* in the temp dir: their processes, then the files) are
// removed first.
func scratch(cfg Config) (string, func(), error) {
	if cfg.Work != "" {
		dir, err := filepath.Abs(cfg.Work)
		if err != nil {
			return "", nil, err
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", nil, err
		}
		return dir, func() { killUnder(dir) }, nil
	}
	old, _ := filepath.Glob(filepath.Join(os.TempDir(), "scale-bench-*"))
	for _, d := range old {
		killUnder(d)
		_ = os.RemoveAll(d)
	}
	dir, err := os.MkdirTemp("", "scale-bench-")
	if err != nil {
		return "", nil, err
	}
	return dir, func() {
		killUnder(dir)
		if !cfg.Keep {
			_ = os.RemoveAll(dir)
		}
	}, nil
}

func load1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// renderJSON rewrites FILE.md from a stored FILE.json with this code.
func renderJSON(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var r Result
	if err := json.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("render %s: %w", path, err)
	}
	r.finish()
	return os.WriteFile(strings.TrimSuffix(path, ".json")+".md", []byte(r.Markdown()), 0o644)
}
