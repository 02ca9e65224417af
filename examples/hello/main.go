// Command hello is the example service of dcroll's demo and integration
// tests: a tiny HTTP server that reports what it runs.
//
//	GET /healthz -> 200 {"service","version","machine","settings","reloads","pid"}
//
// It listens on 127.0.0.1:$DCROLL_PORT (or --port / --addr). The version is
// fixed at build time with -ldflags "-X main.version=2.0.0" (default "dev");
// -X main.broken=true builds a version whose /healthz always answers 500 (the
// demo's "never healthy" v3). On SIGHUP it reloads the JSON settings file
// named by $DCROLL_SETTINGS and counts the reloads; on SIGTERM or SIGINT it
// shuts down cleanly.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// Set with -ldflags "-X main.version=... -X main.broken=true".
var (
	version = "dev"
	broken  = "false"
)

type status struct {
	Service  string            `json:"service"`
	Version  string            `json:"version"`
	Machine  string            `json:"machine"`
	Settings map[string]string `json:"settings"`
	Reloads  int               `json:"reloads"`
	PID      int               `json:"pid"`
	Broken   bool              `json:"broken"`
}

type server struct {
	log          *slog.Logger
	settingsPath string

	mu       sync.Mutex
	settings map[string]string
	reloads  int
}

func (s *server) load() error {
	m := map[string]string{}
	if s.settingsPath != "" {
		b, err := os.ReadFile(s.settingsPath)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("read settings: %w", err)
		}
		if err == nil {
			if err := json.Unmarshal(b, &m); err != nil {
				return fmt.Errorf("parse settings %s: %w", s.settingsPath, err)
			}
		}
	}
	s.mu.Lock()
	s.settings = m
	s.mu.Unlock()
	return nil
}

func (s *server) healthz(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	st := status{
		Service:  os.Getenv("DCROLL_SERVICE"),
		Version:  version,
		Machine:  os.Getenv("DCROLL_MACHINE"),
		Settings: s.settings,
		Reloads:  s.reloads,
		PID:      os.Getpid(),
		Broken:   broken == "true",
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if st.Broken {
		w.WriteHeader(http.StatusInternalServerError)
	}
	_ = json.NewEncoder(w).Encode(st)
}

func main() {
	port := flag.String("port", os.Getenv("DCROLL_PORT"), "TCP port on 127.0.0.1 (default $DCROLL_PORT)")
	addr := flag.String("addr", "", "listen address host:port (overrides --port)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("service", os.Getenv("DCROLL_SERVICE"), "version", version, "pid", os.Getpid())
	if *addr == "" {
		if *port == "" {
			fmt.Fprintln(os.Stderr, "hello: no port: set DCROLL_PORT or pass --port")
			os.Exit(2)
		}
		*addr = net.JoinHostPort("127.0.0.1", *port)
	}
	if err := run(log, *addr); err != nil {
		log.Error("exiting", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, addr string) error {
	s := &server{log: log, settingsPath: os.Getenv("DCROLL_SETTINGS")}
	if err := s.load(); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", s.healthz)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "broken", broken == "true")
	for {
		select {
		case err := <-served:
			return fmt.Errorf("serve: %w", err)
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				err := s.load()
				s.mu.Lock()
				if err == nil {
					s.reloads++
				}
				n := s.reloads
				s.mu.Unlock()
				if err != nil {
					log.Error("reload failed; keeping old settings", "err", err)
				} else {
					log.Info("settings reloaded", "reloads", n)
				}
				continue
			}
			log.Info("shutting down", "signal", sig.String())
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := srv.Shutdown(ctx)
			cancel()
			<-served
			return err
		}
	}
}
