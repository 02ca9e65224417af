package main

import (
	"context"
	"encoding/json"
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

	"golang.org/x/sys/unix"

	"dcroll/distrib"
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
	// ModeAria2 is the stock swarm: aria2c + opentracker (Debian packages).
	ModeAria2 = "aria2c"
	// Fault scenarios, all the rack-aware swarm: a chain member (not a
	// gateway) of rack r1 killed at 30 %, rack r1's gateway killed at 30 %,
	// the origin (seeder, web seed and tracker) killed when the gateways hold
	// half the blob on average.
	ModeKillChain  = "kill-chain"
	ModeKillGW     = "kill-gw"
	ModeKillOrigin = "kill-origin"
	// ModeWAN is the rack-aware swarm on two data centers: rack r0 and the
	// origin in dc1, the other racks in dc2 behind a WAN link (WANMbit,
	// WANDelay each way), shaped with tbf and netem.
	ModeWAN = "wan"
)

// defaultModes run in this order; central and random are left out by
// default (central alone takes ~9.5 min; both are in results/ before
// 2026-12).
const defaultModes = "rack,aria2c,kill-chain,kill-gw,kill-origin,wan"

// swarmMode reports whether mode runs distrib's origin and nodes.
func swarmMode(m string) bool {
	switch m {
	case ModeRack, ModeRandom, ModeRackGW, ModeKillChain, ModeKillGW, ModeKillOrigin, ModeWAN:
		return true
	}
	return false
}

// Config is one benchmark run.
type Config struct {
	Size         int64         `json:"size"`               // blob size in bytes
	Racks        int           `json:"racks"`              // racks of hosts
	Hosts        int           `json:"hosts"`              // hosts per rack
	HostMbit     float64       `json:"host_mbit"`          // host link, each direction
	UplinkMbit   float64       `json:"uplink_mbit"`        // rack uplink, each direction
	SeederMbit   float64       `json:"seeder_mbit"`        // seeder link, each direction
	PieceLength  int64         `json:"piece_length"`       // torrent piece length (0: distrib's default)
	Window       int64         `json:"request_window"`     // distrib.NodeConfig.RequestWindow (0: default, < 0: none)
	ChainSpan    int           `json:"chain_span"`         // distrib.Ranking.ChainSpan (0: default)
	NotSentLowat int64         `json:"tcp_notsent_lowat"`  // net.ipv4.tcp_notsent_lowat in every host and seeder namespace (0: kernel default)
	CC           string        `json:"congestion_control"` // distrib's TCP congestion control ("": its default; "system": the kernel's)
	MTU          int           `json:"mtu"`                // link MTU
	Modes        []string      `json:"modes"`              // modes to run, in order
	WANMbit      float64       `json:"wan_mbit"`           // wan mode: the link between the data centers
	WANDelay     time.Duration `json:"wan_delay_ns"`       // wan mode: netem delay, each direction
	Timeout      time.Duration `json:"-"`                  // per mode
	Out          string        `json:"-"`                  // results directory ("" = print only)
	Work         string        `json:"-"`                  // scratch directory (default: a temp dir)
	Keep         bool          `json:"-"`                  // keep the scratch directory
	// Tmpfs puts the scratch directory (every host's data dir) on a tmpfs:
	// the 24 hosts of the fabric share one machine's disk, where a fleet
	// has a disk each; writing back 3 GiB to one virtual disk cost CPU the
	// hosts needed (128 MiB: last host 86.3 s on the disk, 79.8 s on
	// tmpfs, the same code).
	Tmpfs bool `json:"tmpfs"`
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
		case "render":
			err = renderMain(os.Args[2:])
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
		cfg    Config
		size   = fs.String("size", "128MiB", "blob size (B, KiB, MiB, GiB)")
		piece  = fs.String("piece-length", "0", "torrent piece length (0: distrib's default)")
		window = fs.String("request-window", "0", "distrib's request window per download (0: its default, -1: no limit)")
		modes  = fs.String("modes", defaultModes, "modes to run, comma separated (rack, aria2c, kill-chain, kill-gw, kill-origin, wan, random, central, rack-gw)")
		quick  = fs.Bool("quick", false, "small run to develop with: 2 racks x 3 hosts, 32 MiB")
		debug  = fs.Bool("v", false, "debug logging")
	)
	fs.IntVar(&cfg.Racks, "racks", 3, "racks")
	fs.IntVar(&cfg.Hosts, "hosts", 8, "hosts per rack")
	fs.Float64Var(&cfg.HostMbit, "host-mbit", 16, "host link Mbit/s, each direction")
	fs.Float64Var(&cfg.UplinkMbit, "uplink-mbit", 32, "rack uplink Mbit/s, each direction")
	fs.Float64Var(&cfg.SeederMbit, "seeder-mbit", 48, "seeder link Mbit/s, each direction (default with -host-mbit: racks x host link)")
	fs.IntVar(&cfg.MTU, "mtu", 1500, "link MTU")
	fs.IntVar(&cfg.ChainSpan, "chain-span", 0, "distrib.Ranking.ChainSpan: chain neighbours on each side (0: distrib's default)")
	fs.Int64Var(&cfg.NotSentLowat, "notsent-lowat", 0, "net.ipv4.tcp_notsent_lowat for every host and the seeder, bytes (0: kernel default, unlimited)")
	fs.StringVar(&cfg.CC, "cc", "", "TCP congestion control of distrib's sockets (empty: distrib's default, "+distrib.DefaultCongestionControl+"; system: the kernel's; reno, cubic, bbr)")
	fs.Float64Var(&cfg.WANMbit, "wan-mbit", 8, "wan mode: Mbit/s between the data centers, each direction")
	fs.DurationVar(&cfg.WANDelay, "wan-delay", 20*time.Millisecond, "wan mode: delay each direction (netem)")
	fs.DurationVar(&cfg.Timeout, "timeout", 15*time.Minute, "give up on a mode after this long")
	fs.StringVar(&cfg.Out, "out", "bench/results", "directory for distrib-<date>.{json,md} (empty: print only)")
	fs.StringVar(&cfg.Work, "work", "", "scratch directory (default: a new temp dir, removed afterwards)")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the scratch directory (every mode's logs, the last mode's data dirs; a tmpfs stays mounted)")
	fs.BoolVar(&cfg.Tmpfs, "tmpfs", true, "put the scratch directory on a tmpfs (the hosts share one disk, a fleet has one each); ignored with -work")
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
	if *window == "-1" {
		cfg.Window = -1
	} else if cfg.Window, err = parseSize(*window); err != nil {
		return err
	}
	for _, m := range strings.Split(*modes, ",") {
		switch m = strings.TrimSpace(m); m {
		case ModeCentral, ModeAria2:
			cfg.Modes = append(cfg.Modes, m)
		case "":
		default:
			if !swarmMode(m) {
				return fmt.Errorf("unknown mode %q: use %s, random, central or rack-gw", m, defaultModes)
			}
			cfg.Modes = append(cfg.Modes, m)
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

// renderMain re-derives the checks and the markdown of stored results
// (distrib-*.json) with this version of the code: "render FILE.json..."
// rewrites FILE.md.
func renderMain(args []string) error {
	if len(args) == 0 {
		return errors.New("render: want distrib-*.json files")
	}
	for _, path := range args {
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var r Result
		if err := json.Unmarshal(data, &r); err != nil {
			return fmt.Errorf("render %s: %w", path, err)
		}
		r.finish()
		md := strings.TrimSuffix(path, ".json") + ".md"
		if err := os.WriteFile(md, []byte(r.Markdown()), 0o644); err != nil {
			return fmt.Errorf("render %s: %w", md, err)
		}
	}
	return nil
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
// (dcb-bench-* in the temp dir) are removed first. With cfg.Tmpfs a tmpfs
// is mounted on it (see Config.Tmpfs), unmounted again by the cleanup.
func scratch(cfg Config) (string, func(), error) {
	if cfg.Work != "" {
		if err := os.MkdirAll(cfg.Work, 0o755); err != nil {
			return "", nil, err
		}
		return cfg.Work, func() {}, nil
	}
	old, _ := filepath.Glob(filepath.Join(os.TempDir(), "dcb-bench-*"))
	for _, d := range old {
		_ = unix.Unmount(d, unix.MNT_DETACH) // a crashed run's tmpfs, if any
		_ = os.RemoveAll(d)
	}
	dir, err := os.MkdirTemp("", "dcb-bench-")
	if err != nil {
		return "", nil, err
	}
	mounted := false
	if cfg.Tmpfs {
		// Every host's copy, the origin's, the blob itself, and room for
		// logs and partial files.
		size := int64(cfg.Racks*cfg.Hosts+2)*cfg.Size + cfg.Size/2 + 256<<20
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.FormatInt(size, 10)+",mode=0755"); err != nil {
			_ = os.RemoveAll(dir)
			return "", nil, fmt.Errorf("mount a tmpfs of %d MiB on %s (run as root, or -tmpfs=false): %w", size>>20, dir, err)
		}
		mounted = true
	}
	return dir, func() {
		if cfg.Keep {
			return
		}
		if mounted {
			if err := unix.Unmount(dir, 0); err != nil {
				slog.Warn("unmount scratch tmpfs", "dir", dir, "err", err)
			}
		}
		_ = os.RemoveAll(dir)
	}, nil
}
