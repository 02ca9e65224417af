// Command hello is the example service of dcroll's demo and integration
// tests: a tiny HTTP server that reports what it runs.
//
//	GET /healthz -> 200 {"service","version","machine","broken","healthy","settings","reloads","pid"}
//	                (500 with the same body when it is not healthy)
//
// It listens on 127.0.0.1:$DCROLL_PORT (or --port / --addr). The version is
// fixed at build time with -ldflags "-X main.version=2.0.0" (default "dev");
// -X main.broken=true builds a version whose /healthz always answers 500 (the
// demo's "never healthy" v3). On SIGHUP it reloads the JSON settings file
// named by $DCROLL_SETTINGS and counts the reloads (a file that cannot be
// read or parsed is logged and the old settings kept); on SIGTERM or SIGINT
// it shuts down cleanly. $DCROLL_SERVICE and $DCROLL_MACHINE (set by the
// agent) only label its answers and events.
//
// # Bad configurations
//
// Two settings let tests push a bad config:
//
//	"healthy": "false"  /healthz answers 500 (from startup, or from the reload
//	                    that sets it until the reload that clears it)
//	"crash": "true"     exit with code 3, at startup (before listening) or on
//	                    the reload that sets it: a crash-looping config
//
// # Event log
//
// If $HELLO_EVENT_LOG names a file (shared by every instance of a test), hello
// appends one line per event, each with a single write(2) on a file opened
// O_APPEND, so lines of concurrent instances never interleave:
//
//	<time RFC3339Nano UTC> <service> <machine> <version> <event> pid=<pid>
//
// (an empty service or machine is written "-"). The events, and when each is
// written, so that the log never claims more health than /healthz shows:
//
//	up         listening and /healthz answers 200: right after the listener
//	           is bound, before the first request is served; after a reload
//	           that makes it healthy again, once /healthz already answers 200
//	unhealthy  listening but /healthz answers 500 (broken build, or settings
//	           "healthy": "false"): at startup, or before a reload makes
//	           /healthz answer 500
//	down       it stops serving: before the listener is closed (SIGTERM,
//	           SIGINT, a serve error) and before the exit of a "crash" reload
//
// A crash at startup writes nothing (nothing was up); SIGKILL writes nothing
// either, which is why dcroll/integration/checker also probes /healthz.
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
	"strings"
	"sync"
	"syscall"
	"time"
)

// Set with -ldflags "-X main.version=... -X main.broken=true".
var (
	version = "dev"
	broken  = "false"
)

// Environment variables hello reads (besides DCROLL_PORT, read by main).
const (
	envService  = "DCROLL_SERVICE"
	envMachine  = "DCROLL_MACHINE"
	envSettings = "DCROLL_SETTINGS"
	envEventLog = "HELLO_EVENT_LOG"
)

// Event names of the event log.
const (
	eventUp        = "up"
	eventUnhealthy = "unhealthy"
	eventDown      = "down"
)

// exitCrash is the exit code of a "crash" config.
const exitCrash = 3

// errCrash is returned by run when the settings say "crash".
var errCrash = errors.New(`settings say "crash": "true"`)

type status struct {
	Service  string            `json:"service"`
	Version  string            `json:"version"`
	Machine  string            `json:"machine"`
	Settings map[string]string `json:"settings"`
	Reloads  int               `json:"reloads"`
	PID      int               `json:"pid"`
	Broken   bool              `json:"broken"`
	Healthy  bool              `json:"healthy"`
}

// eventLog appends event lines to $HELLO_EVENT_LOG; the zero value (no
// file) writes nothing.
type eventLog struct {
	f                *os.File
	service, machine string
}

func openEventLog(path, service, machine string) (*eventLog, error) {
	l := &eventLog{service: logField(service), machine: logField(machine)}
	if path == "" {
		return l, nil
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open event log: %w", err)
	}
	l.f = f
	return l, nil
}

// logField keeps a value one space-free field of the line.
func logField(s string) string {
	if s = strings.Join(strings.Fields(s), "_"); s == "" {
		return "-"
	}
	return s
}

// line formats one event line, newline included.
func (l *eventLog) line(at time.Time, event string) []byte {
	return fmt.Appendf(nil, "%s %s %s %s %s pid=%d\n",
		at.UTC().Format(time.RFC3339Nano), l.service, l.machine, logField(version), event, os.Getpid())
}

// write appends the event as one write(2) of the whole line.
func (l *eventLog) write(event string) error {
	if l.f == nil {
		return nil
	}
	if _, err := l.f.Write(l.line(time.Now(), event)); err != nil {
		return fmt.Errorf("event log: %w", err)
	}
	return nil
}

func (l *eventLog) close() {
	if l.f != nil {
		l.f.Close()
	}
}

// healthyWith: not a broken build, and the settings do not say unhealthy.
func healthyWith(settings map[string]string) bool {
	return broken != "true" && settings["healthy"] != "false"
}

func crashWith(settings map[string]string) bool { return settings["crash"] == "true" }

type server struct {
	log          *slog.Logger
	settingsPath string
	events       *eventLog

	mu       sync.Mutex
	settings map[string]string
	reloads  int
	healthy  bool
}

// readSettings reads the settings file; a missing file (or none named) is
// no settings.
func (s *server) readSettings() (map[string]string, error) {
	m := map[string]string{}
	if s.settingsPath == "" {
		return m, nil
	}
	b, err := os.ReadFile(s.settingsPath)
	if errors.Is(err, os.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read settings: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("parse settings %s: %w", s.settingsPath, err)
	}
	return m, nil
}

// event writes an event line; a failure is logged, not fatal (the checker
// then sees stale events, which only makes it stricter).
func (s *server) event(name string) {
	if err := s.events.write(name); err != nil {
		s.log.Error("write event", "event", name, "err", err)
	}
}

// apply installs new settings after a reload and logs a health change so
// that the log is never more optimistic than /healthz: `unhealthy` before
// /healthz starts answering 500, `up` after it answers 200 again.
func (s *server) apply(settings map[string]string) (reloads int) {
	healthy := healthyWith(settings)
	s.mu.Lock()
	was := s.healthy
	s.mu.Unlock()
	if was && !healthy {
		s.event(eventUnhealthy)
	}
	s.mu.Lock()
	s.settings = settings
	s.healthy = healthy
	s.reloads++
	reloads = s.reloads
	s.mu.Unlock()
	if !was && healthy {
		s.event(eventUp)
	}
	return reloads
}

func (s *server) healthz(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	st := status{
		Service:  os.Getenv(envService),
		Version:  version,
		Machine:  os.Getenv(envMachine),
		Settings: s.settings,
		Reloads:  s.reloads,
		PID:      os.Getpid(),
		Broken:   broken == "true",
		Healthy:  s.healthy,
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if !st.Healthy {
		w.WriteHeader(http.StatusInternalServerError)
	}
	_ = json.NewEncoder(w).Encode(st)
}

func main() {
	port := flag.String("port", os.Getenv("DCROLL_PORT"), "TCP port on 127.0.0.1 (default $DCROLL_PORT)")
	addr := flag.String("addr", "", "listen address host:port (overrides --port)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("service", os.Getenv(envService), "version", version, "pid", os.Getpid())
	if *addr == "" {
		if *port == "" {
			fmt.Fprintln(os.Stderr, "hello: no port: set DCROLL_PORT or pass --port")
			os.Exit(2)
		}
		*addr = net.JoinHostPort("127.0.0.1", *port)
	}
	err := run(log, *addr)
	switch {
	case errors.Is(err, errCrash):
		log.Error("crashing", "err", err)
		os.Exit(exitCrash)
	case err != nil:
		log.Error("exiting", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, addr string) error {
	s := &server{log: log, settingsPath: os.Getenv(envSettings)}
	settings, err := s.readSettings()
	if err != nil {
		return err
	}
	if crashWith(settings) {
		return errCrash // before listening: nothing was up, no event
	}
	s.settings, s.healthy = settings, healthyWith(settings)
	if s.events, err = openEventLog(os.Getenv(envEventLog), os.Getenv(envService), os.Getenv(envMachine)); err != nil {
		return err
	}
	defer s.events.close()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", s.healthz)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	// Bound: connections queue from now on and are answered as /healthz
	// says, so the event goes out before the first request is served.
	if s.healthy {
		s.event(eventUp)
	} else {
		s.event(eventUnhealthy)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "broken", broken == "true", "healthy", s.healthy)
	for {
		select {
		case err := <-served:
			s.event(eventDown)
			return fmt.Errorf("serve: %w", err)
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				settings, err := s.readSettings()
				if err != nil {
					log.Error("reload failed; keeping old settings", "err", err)
					continue
				}
				if crashWith(settings) {
					s.event(eventDown)
					return errCrash
				}
				n := s.apply(settings)
				log.Info("settings reloaded", "reloads", n, "healthy", healthyWith(settings))
				continue
			}
			log.Info("shutting down", "signal", sig.String())
			s.event(eventDown)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := srv.Shutdown(ctx)
			cancel()
			<-served
			return err
		}
	}
}
