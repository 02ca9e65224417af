package zkserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// errPortInUse marks a server that exited because a port was taken between
// freePorts and the bind; Start and StartEnsemble retry on other ports.
var errPortInUse = errors.New("port already in use")

// Server is one ZooKeeper process: a standalone server (Start) or a member of
// an Ensemble. Its methods are safe for concurrent use.
type Server struct {
	cfg  nodeConfig
	inst installation
	tail *tailBuffer // end of the log, across restarts

	mu   sync.Mutex
	proc *process // nil when stopped
}

// process is one run of the JVM.
type process struct {
	os       *os.Process
	done     chan struct{} // closed once the process has exited and its output is copied
	err      error         // cmd.Wait's result; read only after done is closed
	signaled atomic.Bool   // Stop or Kill sent a signal: the exit is expected
}

// Start starts a standalone server in opts.Dir on a free loopback port (or
// opts.Port) and returns once it serves clients, after at most 30s or when
// ctx ends. ctx bounds only the start: the server runs until Stop or Kill, or
// until this process dies.
func Start(ctx context.Context, opts Options) (*Server, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	inst, err := findInstallation(opts.Java)
	if err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		port, securePort, err := startPorts(opts)
		if err != nil {
			return nil, err
		}
		s := newServer(nodeConfig{opts: opts, dir: opts.Dir, clientPort: port, securePort: securePort}, inst)
		err = s.launch()
		if err == nil {
			err = s.waitServing(ctx, startTimeout)
		}
		if err == nil {
			return s, nil
		}
		s.Kill()
		if errors.Is(err, errPortInUse) && (opts.Port == 0 || (opts.TLS != nil && opts.SecurePort == 0)) && attempt < bindAttempts {
			continue
		}
		return nil, err
	}
}

// startPorts is the client port and, with TLS, the secure client port of a
// standalone server: the ones in opts, free ones where opts has 0.
func startPorts(opts Options) (port, securePort int, err error) {
	port, securePort = opts.Port, opts.SecurePort
	if opts.TLS == nil {
		securePort = 0
	}
	if port != 0 && (opts.TLS == nil || securePort != 0) {
		return port, securePort, nil // nothing to pick
	}
	ports, err := pickPorts(2)
	if err != nil {
		return 0, 0, err
	}
	if port == 0 {
		port = ports[0]
	}
	if opts.TLS == nil {
		return port, 0, nil
	}
	if securePort == 0 {
		securePort = ports[1]
		if securePort == port { // opts.Port was given and happens to be ports[1]
			securePort = ports[0]
		}
	}
	return port, securePort, nil
}

func newServer(cfg nodeConfig, inst installation) *Server {
	return &Server{cfg: cfg, inst: inst, tail: newTailBuffer(64 << 10)}
}

// Addr is the client address, "127.0.0.1:PORT".
func (s *Server) Addr() string { return s.cfg.addr() }

// SecureAddr is the TLS client address, "127.0.0.1:PORT" (the
// secureClientPort), or "" for a server started without Options.TLS.
func (s *Server) SecureAddr() string { return s.cfg.secureAddr() }

// ID is the server's myid in an ensemble (1..n), 0 for a standalone server.
func (s *Server) ID() int { return s.cfg.id }

// PID is the process id of the running JVM (0 when stopped), e.g. to read
// its CPU time from /proc/<pid>/stat.
func (s *Server) PID() int {
	if p := s.current(); p != nil && p.os != nil {
		return p.os.Pid
	}
	return 0
}

// Dir is the server's directory (zoo.cfg, data/, zookeeper.log).
func (s *Server) Dir() string { return s.cfg.dir }

// LogTail returns the last 64 KiB of the server's output, across restarts.
func (s *Server) LogTail() string { return s.tail.String() }

// Running reports whether the process was started and not stopped or killed
// through this Server. A process that crashed still counts as running until
// Stop or Kill.
func (s *Server) Running() bool { return s.current() != nil }

// Done is closed when the current process exits (for any reason). It is
// already closed when the server is not running.
func (s *Server) Done() <-chan struct{} {
	if p := s.current(); p != nil {
		return p.done
	}
	c := make(chan struct{})
	close(c)
	return c
}

// Stop sends SIGTERM, then SIGKILL if the process is still there after 5s,
// and waits for it to exit. Stopping a stopped server does nothing. The error
// says whether the process had died by itself before Stop.
func (s *Server) Stop() error { return s.halt(syscall.SIGTERM, stopGrace) }

// Kill sends SIGKILL and waits for the process to exit.
func (s *Server) Kill() error { return s.halt(syscall.SIGKILL, 0) }

// Restart stops the server if it runs, starts it again on the same port with
// the same data, and waits until it serves (at most 30s, or until ctx ends).
// A restarted ensemble member serves once it has rejoined a quorum.
func (s *Server) Restart(ctx context.Context) error {
	if err := s.Stop(); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	err := s.launch()
	if err == nil {
		err = s.waitServing(ctx, startTimeout)
	}
	if err != nil {
		s.Kill()
		return fmt.Errorf("restart: %w", err)
	}
	return nil
}

// Mode asks the server (four-letter word srvr) for its mode: "standalone",
// "leader", "follower" or "observer". It returns ErrNotServing while the
// server is up but not serving.
func (s *Server) Mode(ctx context.Context) (string, error) {
	out, err := FourLetter(ctx, s.Addr(), "srvr")
	if err != nil {
		return "", err
	}
	return parseMode(out)
}

func parseMode(srvr string) (string, error) {
	if strings.Contains(srvr, "not currently serving") {
		return "", ErrNotServing
	}
	for line := range strings.SplitSeq(srvr, "\n") {
		if m, ok := strings.CutPrefix(line, "Mode: "); ok {
			return strings.TrimSpace(m), nil
		}
	}
	return "", fmt.Errorf("zkserver: no Mode in srvr answer %q", srvr)
}

func (s *Server) current() *process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc
}

// launch writes the configuration and starts the JVM, without waiting.
func (s *Server) launch() error {
	if err := s.cfg.write(); err != nil {
		return fmt.Errorf("zkserver: write config in %s: %w", s.cfg.dir, err)
	}
	p, err := s.spawn()
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	return nil
}

// spawn starts the JVM. The child is in its own process group (a Ctrl-C in
// the terminal reaches only us, and we stop it cleanly) and gets SIGKILL when
// its parent thread dies. Pdeathsig is tied to the thread that forked, not to
// the process, so the goroutine that starts the child keeps its OS thread
// locked for as long as the child lives.
func (s *Server) spawn() (*process, error) {
	out := io.Writer(s.tail)
	var logFile *os.File
	if s.cfg.opts.Log != nil {
		out = io.MultiWriter(s.cfg.opts.Log, s.tail)
	} else {
		f, err := os.OpenFile(filepath.Join(s.cfg.dir, "zookeeper.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("zkserver: %w", err)
		}
		logFile = f
		out = io.MultiWriter(f, s.tail)
	}
	cmd := exec.Command(s.inst.java, s.cfg.javaArgs(s.inst)...)
	cmd.Dir = s.cfg.dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	p := &process{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p.os = cmd.Process
		started <- nil
		p.err = cmd.Wait()
		if logFile != nil {
			logFile.Close()
		}
		close(p.done)
	}()
	if err := <-started; err != nil {
		if logFile != nil {
			logFile.Close()
		}
		return nil, fmt.Errorf("zkserver: start %s: %w", s.inst.java, err)
	}
	return p, nil
}

// waitServing polls until the current process serves clients, it exits, ctx
// ends or timeout passes.
func (s *Server) waitServing(ctx context.Context, timeout time.Duration) error {
	p := s.current()
	if p == nil {
		return fmt.Errorf("zookeeper %s is not running", s.Addr())
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var last error
	for {
		last = s.probe(ctx)
		select {
		case <-p.done:
			return s.exitError(p)
		default:
		}
		if last == nil {
			return nil
		}
		select {
		case <-p.done:
			return s.exitError(p)
		case <-ctx.Done():
			return fmt.Errorf("zookeeper %s not serving: %w (last probe: %v); log tail:\n%s",
				s.Addr(), ctx.Err(), last, s.tail.lastLines(20))
		case <-tick.C:
		}
	}
}

// probe returns nil when this server (not another process that took its
// port) serves clients.
func (s *Server) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := s.Mode(ctx); err != nil {
		return err
	}
	conf, err := FourLetter(ctx, s.Addr(), "conf")
	if err != nil {
		return err
	}
	want := "dataDir=" + s.cfg.dataDir()
	for line := range strings.SplitSeq(conf, "\n") {
		line = strings.TrimSpace(line)
		if line == want || strings.HasPrefix(line, want+"/") {
			return s.probeSecure(ctx)
		}
	}
	return fmt.Errorf("port %d answers for another server (conf has no %s)", s.cfg.clientPort, want)
}

// probeSecure returns nil when the secure client port (if any) completes
// TLS handshakes. ZooKeeper binds it after the plain port already answers
// four-letter words, and the first handshake of a fresh JVM takes about a
// second (cold crypto code), as long as go-zookeeper's whole dial timeout:
// one handshake here makes "serving" mean serving TLS clients promptly.
// The probe verifies nothing and sends no data, so it skips verification
// (it does not know which CA clients trust); a server that requires client
// certificates answers with an alert, which is an answer too.
func (s *Server) probeSecure(ctx context.Context) error {
	addr := s.cfg.secureAddr()
	if addr == "" {
		return nil
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("secure client port: %w", err)
	}
	defer nc.Close()
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	err = tls.Client(nc, &tls.Config{InsecureSkipVerify: true}).HandshakeContext(ctx)
	var remote *net.OpError // crypto/tls reports a received alert as Op "remote error"
	if err != nil && !(errors.As(err, &remote) && remote.Op == "remote error") {
		return fmt.Errorf("secure client port: TLS handshake: %w", err)
	}
	return nil
}

// exitError describes a process that exited during start.
func (s *Server) exitError(p *process) error {
	err := fmt.Errorf("zookeeper %s exited during start: %v", s.Addr(), p.err)
	if s.tail.contains("Address already in use") || s.tail.contains("BindException") {
		return fmt.Errorf("%w: %w", err, errPortInUse)
	}
	return fmt.Errorf("%w; log tail:\n%s", err, s.tail.lastLines(20))
}

// halt signals the process, waits for it to exit (escalating to SIGKILL after
// grace) and forgets it.
func (s *Server) halt(sig syscall.Signal, grace time.Duration) error {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	var crashed bool
	select {
	case <-p.done:
		crashed = !p.signaled.Load()
	default:
	}
	p.signal(sig)
	if sig != syscall.SIGKILL {
		timer := time.NewTimer(grace)
		select {
		case <-p.done:
		case <-timer.C:
			p.signal(syscall.SIGKILL)
		}
		timer.Stop()
	}
	<-p.done
	if crashed {
		return fmt.Errorf("zookeeper %s had exited by itself: %v; log tail:\n%s", s.Addr(), p.err, s.tail.lastLines(20))
	}
	return nil
}

// signal sends sig unless the process has exited; os.Process uses a pidfd,
// so a reused pid is never signaled. Errors mean the process is gone, and
// callers wait for done either way.
func (p *process) signal(sig syscall.Signal) {
	p.signaled.Store(true)
	_ = p.os.Signal(sig)
}
