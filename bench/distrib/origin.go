package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// originFlags configure the seeder process.
type originFlags struct {
	mode, file, dir, zk, listen, httpAddr, dc, cc string
	pieceLength                                   int64
	chainSpan                                     int
	agents                                        []string      // machines the tracker must know before "synced"
	syncs                                         chan struct{} // a "sync" line arrived on stdin
}

func originMain(args []string) error {
	fs := flag.NewFlagSet("origin", flag.ContinueOnError)
	var f originFlags
	fs.StringVar(&f.mode, "mode", "", "rack, random or central")
	fs.StringVar(&f.file, "file", "", "the blob to serve")
	fs.StringVar(&f.dir, "dir", "", "origin store directory")
	fs.StringVar(&f.zk, "zk", "", "ZooKeeper address (swarm modes)")
	fs.StringVar(&f.dc, "dc", dataCenter, "the origin's data center")
	fs.StringVar(&f.listen, "listen", "", "BitTorrent listen address ip:port")
	fs.StringVar(&f.httpAddr, "http", "", "HTTP address ip:port (web seed, tracker)")
	fs.Int64Var(&f.pieceLength, "piece-length", 0, "piece length (0: default)")
	fs.IntVar(&f.chainSpan, "chain-span", 0, "distrib.Ranking.ChainSpan")
	fs.StringVar(&f.cc, "cc", "", "distrib.OriginConfig.CongestionControl")
	agents := fs.String("agents", "", "comma-separated machines to wait for on \"sync\"")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *agents != "" {
		f.agents = strings.Split(*agents, ",")
	}
	f.syncs = make(chan struct{}, 1)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("machine", "seeder")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The origin runs until the benchmark closes stdin; "sync" asks it to
	// answer "synced" once its tracker knows every agent.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "sync" {
				select {
				case f.syncs <- struct{}{}:
				default:
				}
			}
		}
		cancel()
	}()
	var err error
	switch f.mode {
	case ModeCentral:
		err = runHTTPOrigin(ctx, f, log)
	case ModeAria2:
		err = runAria2Origin(ctx, f, log)
	default:
		if swarmMode(f.mode) {
			err = runSwarmOrigin(ctx, f, log)
			break
		}
		err = fmt.Errorf("unknown mode %q", f.mode)
	}
	if err != nil {
		emit(event{Event: "ready", Err: err.Error()})
	}
	return err
}

// runHTTPOrigin serves the blob at /blobs/<hex> (the web seed path) with
// net/http: the central-copy baseline.
func runHTTPOrigin(ctx context.Context, f originFlags, log *slog.Logger) error {
	sum, _, err := hashFile(f.file)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /blobs/"+sum, func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, f.file)
	})
	ln, err := net.Listen("tcp", f.httpAddr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	emit(event{Event: "ready", ID: "sha256:" + sum, URL: "http://" + f.httpAddr + "/blobs/" + sum})
	log.Info("serving", "addr", f.httpAddr)
	go serveSyncs(ctx, f, nil)
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}
