// Command dczk runs one real ZooKeeper server in the foreground for the local
// demo (`make zk`): it prints the connect string on stdout and stops the
// server on SIGINT or SIGTERM.
//
//	go run ./cmd/dczk [-port 2181] [-dir DIR] [-tick 200ms] [-max-session 60s] [-v]
//
// Data persists in DIR across runs; without -dir a temporary directory is
// used and removed on exit.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"dcroll/integration/zkserver"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "dczk: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dczk", flag.ContinueOnError)
	fs.SetOutput(stderr)
	port := fs.Int("port", 2181, "client port on 127.0.0.1 (0: any free port)")
	dir := fs.String("dir", "", "data directory, kept across runs (default: a temporary directory)")
	tick := fs.Duration("tick", zkserver.DefaultTickTime, "ZooKeeper tickTime; the minimum session timeout is 2x")
	maxSession := fs.Duration("max-session", 60*time.Second, "maximum negotiated session timeout")
	verbose := fs.Bool("v", false, "copy the server's log to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("component", "dczk")

	if *dir == "" {
		tmp, err := os.MkdirTemp("", "dczk-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		*dir = tmp
	}
	opts := zkserver.Options{Dir: *dir, Port: *port, TickTime: *tick, MaxSessionTimeout: *maxSession}
	if *verbose {
		opts.Log = stderr
	}
	s, err := zkserver.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer s.Stop()

	fmt.Fprintln(stdout, s.Addr())
	log.Info("zookeeper serving", "addr", s.Addr(), "dir", s.Dir(), "log", filepath.Join(s.Dir(), "zookeeper.log"))

	select {
	case <-ctx.Done():
		log.Info("stopping zookeeper", "addr", s.Addr())
		return s.Stop()
	case <-s.Done():
		err := s.Stop()
		if err == nil {
			err = errors.New("zookeeper exited")
		}
		return err
	}
}
