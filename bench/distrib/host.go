package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// hostFlags configure one host process.
type hostFlags struct {
	mode, machine, rack, dc, dir, listen, zk, id, url, cc string
	size, window                                          int64
}

// fetcher gets the blob onto one host. It is built (connected, registered)
// before the start signal so that only the transfer is timed.
type fetcher interface {
	// Fetch returns the path of the complete, verified blob.
	Fetch(ctx context.Context) (string, error)
	Close() error
}

var (
	stdoutMu sync.Mutex
	stdout   = json.NewEncoder(os.Stdout)
)

// emit prints one JSON event line for the benchmark.
func emit(ev event) {
	stdoutMu.Lock()
	defer stdoutMu.Unlock()
	_ = stdout.Encode(ev)
}

func hostMain(args []string) error {
	fs := flag.NewFlagSet("host", flag.ContinueOnError)
	var f hostFlags
	fs.StringVar(&f.mode, "mode", "", "rack, random or central")
	fs.StringVar(&f.machine, "machine", "", "machine name")
	fs.StringVar(&f.rack, "rack", "", "rack name")
	fs.StringVar(&f.dc, "dc", dataCenter, "data center name")
	fs.StringVar(&f.dir, "dir", "", "data directory")
	fs.StringVar(&f.listen, "listen", "", "peer listen address ip:port")
	fs.StringVar(&f.zk, "zk", "", "ZooKeeper address")
	fs.StringVar(&f.id, "id", "", "blob id sha256:<hex>")
	fs.StringVar(&f.url, "url", "", "web seed URL of the blob")
	fs.Int64Var(&f.size, "size", 0, "blob size")
	fs.Int64Var(&f.window, "request-window", 0, "distrib request window (0: default)")
	fs.StringVar(&f.cc, "cc", "", "distrib.NodeConfig.CongestionControl")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("machine", f.machine)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return err
	}

	var (
		fe  fetcher
		err error
	)
	switch f.mode {
	case ModeCentral:
		fe = &httpFetcher{url: f.url, id: f.id, dir: f.dir}
	case ModeAria2:
		fe = &aria2Fetcher{id: f.id, dir: f.dir, torrent: f.url}
	default:
		if swarmMode(f.mode) {
			fe, err = newSwarmFetcher(ctx, f, log)
			break
		}
		err = fmt.Errorf("unknown mode %q", f.mode)
	}
	if err != nil {
		emit(event{Event: "ready", Err: err.Error()})
		return err
	}
	defer fe.Close()

	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- strings.TrimSpace(sc.Text())
		}
	}()
	emit(event{Event: "ready"})
	if !waitLine(ctx, lines, "go") {
		return nil
	}
	start := time.Now()
	stopProgress := func() {}
	if st, ok := fe.(interface {
		Status() (int64, int, bool)
	}); ok {
		// Timelines and the fault scenarios' triggers: a line every 250 ms.
		pctx, pcancel := context.WithCancel(ctx)
		stopProgress = pcancel
		go func() {
			tick := time.NewTicker(250 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-pctx.Done():
					return
				case <-tick.C:
				}
				b, peers, gw := st.Status()
				ev := event{Event: "progress", Bytes: b, Peers: peers, Gateway: gw}
				if h, ok := fe.(interface{ Have() string }); ok && f.mode == ModeKillOrigin {
					ev.Have = h.Have() // the fleet's union when the origin dies
				}
				emit(ev)
			}
		}()
	}
	path, err := fe.Fetch(ctx)
	took := time.Since(start)
	stopProgress()
	if err != nil {
		emit(event{Event: "done", Err: err.Error()})
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		emit(event{Event: "done", Err: err.Error()})
		return err
	}
	done := event{Event: "done", Bytes: fi.Size(), FetchNS: took.Nanoseconds(), Source: "http"}
	if f.mode == ModeAria2 {
		done.Source = "aria2c"
	}
	if src, ok := fe.(interface {
		Source() (string, int64, int64, int64)
	}); ok {
		done.Source, done.FromRack, done.FromDC, done.FromOther = src.Source()
	}
	emit(done)
	log.Info("fetched", "took", took, "bytes", fi.Size())

	// Keep serving peers until the benchmark says stop (or goes away).
	waitLine(ctx, lines, "stop")
	sum, n, err := hashFile(path)
	if err != nil {
		emit(event{Event: "verified", Err: err.Error()})
		return err
	}
	emit(event{Event: "verified", SHA256: sum, Bytes: n})
	return nil
}

// waitLine waits for want on lines; false when stdin closed or ctx ended.
func waitLine(ctx context.Context, lines <-chan string, want string) bool {
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				return false
			}
			if l == want {
				return true
			}
		case <-ctx.Done():
			return false
		}
	}
}

func hashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", n, fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// httpFetcher is central copy: one plain GET from the seeder, hashed while
// written, renamed into place only when the digest matches.
type httpFetcher struct{ url, id, dir string }

func (h *httpFetcher) Fetch(ctx context.Context) (string, error) {
	want := strings.TrimPrefix(h.id, "sha256:")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("get %s: %w", h.url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("get %s: %s", h.url, resp.Status)
	}
	tmp := filepath.Join(h.dir, want+".part")
	f, err := os.Create(tmp)
	if err != nil {
		return "", err
	}
	sum := sha256.New()
	_, err = io.Copy(io.MultiWriter(f, sum), resp.Body)
	if err = errors.Join(err, f.Close()); err != nil {
		return "", fmt.Errorf("download %s: %w", h.url, err)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != want {
		return "", fmt.Errorf("download %s: sha256 %s, want %s", h.url, got, want)
	}
	dst := filepath.Join(h.dir, want)
	if err := os.Rename(tmp, dst); err != nil {
		return "", err
	}
	return dst, nil
}

func (h *httpFetcher) Close() error { return nil }
