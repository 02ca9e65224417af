package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"dcroll/integration/netns"
)

// Modes, in the order they run.
const (
	ModeRack    = "rack"    // rack-aware swarm
	ModeRandom  = "random"  // swarm with random peers
	ModeCentral = "central" // every host GETs from the seeder
	// ModeRackGW is an experiment, not distrib's behaviour: rack-aware, but
	// the origin is handed out only to rack gateways (see gatewayTracker).
	ModeRackGW = "rack-gw"
)

// Config is one benchmark run.
type Config struct {
	Size        int64         `json:"size"`         // blob size in bytes
	Racks       int           `json:"racks"`        // racks of hosts
	Hosts       int           `json:"hosts"`        // hosts per rack
	HostMbit    float64       `json:"host_mbit"`    // host link, each direction
	UplinkMbit  float64       `json:"uplink_mbit"`  // rack uplink, each direction
	SeederMbit  float64       `json:"seeder_mbit"`  // seeder link, each direction
	PieceLength int64         `json:"piece_length"` // torrent piece length (0: distrib's default)
	MTU         int           `json:"mtu"`          // link MTU
	Modes       []string      `json:"modes"`        // modes to run, in order
	Timeout     time.Duration `json:"-"`            // per mode
	Out         string        `json:"-"`            // results directory ("" = print only)
	Work        string        `json:"-"`            // scratch directory (default: a temp dir)
	Keep        bool          `json:"-"`            // keep the scratch directory
}

func main() {
	if len(os.Args) > 1 {
		var err error
		switch os.Args[1] {
		case "host":
			err = hostMain(os.Args[2:])
		case "origin":
			err = originMain(os.Args[2:])
		case "zk":
			err = zkMain(os.Args[2:])
		default:
			err = benchMain(os.Args[1:])
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "distrib %s: %v\n", os.Args[1], err)
			os.Exit(1)
		}
		return
	}
	if err := benchMain(nil); err != nil {
		fmt.Fprintf(os.Stderr, "bench distrib: %v\n", err)
		os.Exit(1)
	}
}

func benchMain(args []string) error {
	fs := flag.NewFlagSet("distrib", flag.ContinueOnError)
	var (
		cfg   Config
		size  = fs.String("size", "128MiB", "blob size (B, KiB, MiB, GiB)")
		piece = fs.String("piece-length", "0", "torrent piece length (0: distrib's default)")
		modes = fs.String("modes", "rack,random,central", "modes to run, comma separated")
		quick = fs.Bool("quick", false, "small run to develop with: 2 racks x 3 hosts, 32 MiB")
		debug = fs.Bool("v", false, "debug logging")
	)
	fs.IntVar(&cfg.Racks, "racks", 3, "racks")
	fs.IntVar(&cfg.Hosts, "hosts", 8, "hosts per rack")
	fs.Float64Var(&cfg.HostMbit, "host-mbit", 16, "host link Mbit/s, each direction")
	fs.Float64Var(&cfg.UplinkMbit, "uplink-mbit", 32, "rack uplink Mbit/s, each direction")
	fs.Float64Var(&cfg.SeederMbit, "seeder-mbit", 48, "seeder link Mbit/s, each direction (default with -host-mbit: racks x host link)")
	fs.IntVar(&cfg.MTU, "mtu", 1500, "link MTU")
	fs.DurationVar(&cfg.Timeout, "timeout", 15*time.Minute, "give up on a mode after this long")
	fs.StringVar(&cfg.Out, "out", "bench/results", "directory for distrib-<date>.{json,md} (empty: print only)")
	fs.StringVar(&cfg.Work, "work", "", "scratch directory (default: a new temp dir, removed afterwards)")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the scratch directory (logs, data dirs)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *quick {
		if !set["racks"] {
			cfg.Racks = 2
		}
		if !set["hosts"] {
			cfg.Hosts = 3
		}
		if !set["size"] {
			*size = "32MiB"
		}
	}
	if !set["seeder-mbit"] && (set["host-mbit"] || set["racks"] || *quick) {
		cfg.SeederMbit = float64(cfg.Racks) * cfg.HostMbit
	}
	var err error
	if cfg.Size, err = parseSize(*size); err != nil {
		return err
	}
	if cfg.PieceLength, err = parseSize(*piece); err != nil {
		return err
	}
	for _, m := range strings.Split(*modes, ",") {
		switch m = strings.TrimSpace(m); m {
		case ModeRack, ModeRandom, ModeCentral, ModeRackGW:
			cfg.Modes = append(cfg.Modes, m)
		case "":
		default:
			return fmt.Errorf("unknown mode %q: use rack, random, central or rack-gw", m)
		}
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := netns.Available(ctx); err != nil {
		return fmt.Errorf("%w (run as root: sudo go run ./bench/distrib)", err)
	}
	res, err := Run(ctx, cfg, log)
	if res != nil {
		fmt.Println(res.Markdown())
		if cfg.Out != "" {
			if werr := res.Write(cfg.Out); werr != nil {
				err = errors.Join(err, werr)
			}
		}
	}
	return err
}

// parseSize parses "128MiB", "1GiB", "512KiB", "4MB" or plain bytes.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mul    int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}}
	mul := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mul = strings.TrimSuffix(s, u.suffix), u.mul
			break
		}
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid size %q: want e.g. 128MiB", s)
	}
	return int64(n * float64(mul)), nil
}

// scratch makes the run's scratch directory; leftovers of crashed runs
// (dcb-bench-* in the temp dir) are removed first.
func scratch(cfg Config) (string, func(), error) {
	if cfg.Work != "" {
		if err := os.MkdirAll(cfg.Work, 0o755); err != nil {
			return "", nil, err
		}
		return cfg.Work, func() {}, nil
	}
	old, _ := filepath.Glob(filepath.Join(os.TempDir(), "dcb-bench-*"))
	for _, d := range old {
		_ = os.RemoveAll(d)
	}
	dir, err := os.MkdirTemp("", "dcb-bench-")
	if err != nil {
		return "", nil, err
	}
	return dir, func() {
		if !cfg.Keep {
			_ = os.RemoveAll(dir)
		}
	}, nil
}
