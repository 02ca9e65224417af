package supervise

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"dcroll/spec"
	"dcroll/znodes"
)

// Defaults applied by [New].
const (
	DefaultGrace        = 10 * time.Second
	DefaultBackoffMin   = 200 * time.Millisecond
	DefaultBackoffMax   = 30 * time.Second
	DefaultBackoffReset = 30 * time.Second
	DefaultPollInterval = 250 * time.Millisecond
	// PIDFileName is the PID file's name inside Config.Dir by default.
	PIDFileName = "dcroll.pid"
)

// killWait bounds how long Stop waits for a process after SIGKILL.
const killWait = 5 * time.Second

// Errors callers branch on.
var (
	// ErrNotRunning: there is no live process to signal.
	ErrNotRunning = errors.New("service is not running")
	// ErrStopped: the supervisor was stopped or detached and cannot start again.
	ErrStopped = errors.New("supervisor already stopped")
)

// Config says what to run and how to supervise it.
type Config struct {
	// Dir is the unpacked version directory (see Unpack): the working
	// directory of the process. Required.
	Dir string
	// Run is the command line (the spec's run). Run[0] is relative to Dir
	// when it contains a "/" or names a file in Dir, otherwise it is looked
	// up in PATH; an absolute path is used as is. ${VAR} in every element is
	// expanded from the service environment (see Expand), so that instances
	// on one host can differ, e.g. "--port=${DCROLL_PORT}".
	Run []string

	// Service, Version and Machine are passed as DCROLL_SERVICE,
	// DCROLL_VERSION and DCROLL_MACHINE.
	Service, Version, Machine string
	// SettingsFile is passed as DCROLL_SETTINGS (write it with WriteSettings).
	SettingsFile string
	// Data are the data blob paths, passed colon-separated as DCROLL_DATA.
	Data []string
	// Env are extra "NAME=value" variables; they override everything else
	// (see Config.Environ).
	Env []string

	// LogPath, when set, is opened for appending and becomes the process's
	// stdout and stderr. Prefer it: the process writes to the file directly
	// and keeps doing so after the agent dies.
	LogPath string
	// Stdout and Stderr are used when LogPath is empty (nil: /dev/null). A
	// writer that is not an *os.File is fed through a pipe by the agent, so
	// the service may get SIGPIPE once the agent is gone.
	Stdout, Stderr io.Writer

	// PIDFile records the running process for a restarted agent (see
	// Supervisor.Adopt). Default Dir/dcroll.pid.
	PIDFile string
	// Grace is how long Stop waits after SIGTERM before SIGKILL; default 10s.
	Grace time.Duration
	// BackoffMin and BackoffMax bound the delay before restarting a process
	// that exited on its own: it doubles from BackoffMin with each exit,
	// up to BackoffMax (defaults 200ms, 30s), and starts over once a process
	// has run for BackoffReset (default 30s).
	BackoffMin, BackoffMax, BackoffReset time.Duration
	// PollInterval is how often an adopted process (not our child, so not
	// waitable) is checked for exit; default 250ms.
	PollInterval time.Duration

	// Logger receives the supervisor's logs; default: discarded.
	Logger *slog.Logger
	// Clock drives backoff and grace timers; default real time.
	Clock znodes.Clock
}

func (cfg *Config) applyDefaults() {
	if cfg.PIDFile == "" {
		cfg.PIDFile = filepath.Join(cfg.Dir, PIDFileName)
	}
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultGrace
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = DefaultBackoffMin
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = DefaultBackoffMax
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = cfg.BackoffMin
	}
	if cfg.BackoffReset <= 0 {
		cfg.BackoffReset = DefaultBackoffReset
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = znodes.RealClock{}
	}
}

// Process is one incarnation of the service: a child started by the
// supervisor, or a process adopted from a previous agent.
type Process struct {
	info    PIDInfo
	adopted bool
	done    chan struct{}
	err     error // valid once done is closed
	// stopPoll ends the watcher of an adopted process (Detach).
	stopPoll chan struct{}
}

// PID returns the process id.
func (p *Process) PID() int { return p.info.PID }

// Adopted reports whether the process was adopted rather than started.
func (p *Process) Adopted() bool { return p.adopted }

// Started returns when the process was started.
func (p *Process) Started() time.Time { return p.info.Started }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err returns how the process exited (nil for exit status 0), once Done is
// closed. An adopted process's exit status is unknown.
func (p *Process) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

func (p *Process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Supervisor runs one service version: it starts the process in its own
// process group, restarts it with exponential backoff when it exits on its
// own, signals it, and stops it with SIGTERM then SIGKILL. The process
// survives the agent (no parent-death signal); a restarted agent adopts it
// from the PID file (Adopt). A Supervisor is used once: Start or Adopt, then
// Stop or Detach.
type Supervisor struct {
	cfg  Config
	log  *slog.Logger
	argv []string
	env  []string

	mu       sync.Mutex
	cur      *Process
	restarts int
	lastExit error
	started  bool
	closed   bool
	quit     chan struct{} // closed by Stop / Detach: no more restarts
	loopDone chan struct{} // closed when the restart loop has returned
}

// New checks cfg, applies defaults and returns a supervisor that runs
// nothing yet.
func New(cfg Config) (*Supervisor, error) {
	if cfg.Dir == "" {
		return nil, errors.New("supervise: Config.Dir is required")
	}
	if len(cfg.Run) == 0 {
		return nil, errors.New("supervise: Config.Run is empty")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("supervise: %w", err)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("supervise: version directory %s does not exist; unpack the artifact first", dir)
	}
	cfg.Dir = dir
	cfg.applyDefaults()
	env := cfg.Environ()
	argv, err := ExpandAll("run", cfg.Run, env)
	if err != nil {
		return nil, fmt.Errorf("supervise %s: %w", cfg.Service, err)
	}
	exe, err := resolveCommand(dir, argv[0])
	if err != nil {
		return nil, fmt.Errorf("supervise %s: %w", cfg.Service, err)
	}
	argv[0] = exe
	return &Supervisor{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "supervise", "service", cfg.Service, "version", cfg.Version),
		argv:     argv,
		env:      env,
		quit:     make(chan struct{}),
		loopDone: make(chan struct{}),
	}, nil
}

// resolveCommand finds the executable named by run[0] (see Config.Run).
func resolveCommand(dir, name string) (string, error) {
	if filepath.IsAbs(name) {
		return name, nil
	}
	local := filepath.Join(dir, name)
	if strings.Contains(name, "/") {
		return local, nil
	}
	if _, err := os.Stat(local); err == nil {
		return local, nil
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("run[0] %q is neither in %s nor in PATH", name, dir)
	}
	return p, nil
}

// Argv returns the command line the supervisor executes (expanded, argv[0]
// resolved).
func (s *Supervisor) Argv() []string { return append([]string(nil), s.argv...) }

// Env returns the environment the process gets (see Config.Environ).
func (s *Supervisor) Env() []string { return append([]string(nil), s.env...) }

// Dir returns the process's working directory.
func (s *Supervisor) Dir() string { return s.cfg.Dir }

// Checker builds the health checker of h for this process: same directory
// and environment (see NewChecker).
func (s *Supervisor) Checker(h *spec.Health) (Checker, error) {
	return NewChecker(h, s.cfg.Dir, s.env)
}

// Start starts the process and the restart loop. An error means the first
// start failed (nothing runs).
func (s *Supervisor) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.started {
		return fmt.Errorf("start %s: %w", s.cfg.Service, ErrStopped)
	}
	p, err := s.spawn()
	if err != nil {
		return err
	}
	s.cur = p
	s.started = true
	go s.loop(p)
	return nil
}

// Adopt looks for the process recorded in the PID file and, if it is still
// alive and was started with this supervisor's command in this directory,
// supervises it as if it had started it: Stop stops it, and if it exits on
// its own a new one is started. It returns false (and no error) when there
// is nothing to adopt; call Start then.
func (s *Supervisor) Adopt() (bool, error) {
	info, err := ReadPIDFile(s.cfg.PIDFile)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		s.log.Warn("ignoring unreadable pid file", "path", s.cfg.PIDFile, "err", err)
		return false, nil
	}
	if ok, why := info.Alive(); !ok {
		s.log.Info("not adopting", "reason", why)
		return false, nil
	}
	if info.Dir != s.cfg.Dir || !slices.Equal(info.Argv, s.argv) {
		s.log.Info("not adopting: process runs another command", "pid", info.PID, "argv", info.Argv, "dir", info.Dir)
		return false, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.started {
		return false, fmt.Errorf("adopt %s: %w", s.cfg.Service, ErrStopped)
	}
	p := &Process{info: info, adopted: true, done: make(chan struct{}), stopPoll: make(chan struct{})}
	go s.watchAdopted(p)
	s.cur = p
	s.started = true
	go s.loop(p)
	s.log.Info("adopted running process", "pid", info.PID)
	return true, nil
}

// StartOrAdopt adopts the process of the PID file if possible (see Adopt),
// otherwise starts a new one.
func (s *Supervisor) StartOrAdopt() (adopted bool, err error) {
	if ok, err := s.Adopt(); ok || err != nil {
		return ok, err
	}
	return false, s.Start()
}

// spawn starts one incarnation. Callers hold s.mu or own the loop.
func (s *Supervisor) spawn() (*Process, error) {
	cmd := exec.Command(s.argv[0], s.argv[1:]...)
	cmd.Dir = s.cfg.Dir
	cmd.Env = s.env
	// Own process group: signals go to the whole service, and the agent's
	// terminal signals do not. No Pdeathsig: the service outlives the agent.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = time.Second
	var logf *os.File
	if s.cfg.LogPath != "" {
		if err := os.MkdirAll(filepath.Dir(s.cfg.LogPath), 0o755); err != nil {
			return nil, fmt.Errorf("start %s: log file: %w", s.cfg.Service, err)
		}
		f, err := os.OpenFile(s.cfg.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("start %s: log file: %w", s.cfg.Service, err)
		}
		logf = f
		cmd.Stdout, cmd.Stderr = f, f
	} else {
		cmd.Stdout, cmd.Stderr = s.cfg.Stdout, s.cfg.Stderr
	}
	err := cmd.Start()
	if logf != nil {
		logf.Close() // the child has its own copy
	}
	if err != nil {
		return nil, fmt.Errorf("start %s %s: %w", s.cfg.Service, s.cfg.Version, err)
	}
	pid := cmd.Process.Pid
	p := &Process{
		info: PIDInfo{PID: pid, Argv: s.argv, Dir: s.cfg.Dir, Started: s.cfg.Clock.Now()},
		done: make(chan struct{}),
	}
	if _, st, err := procStat(pid); err == nil {
		p.info.StartTime = st
	}
	p.info.Cmdline = settledCmdline(pid)
	go func() {
		err := cmd.Wait()
		p.err = err
		close(p.done)
	}()
	if err := writePIDFile(s.cfg.PIDFile, p.info); err != nil {
		s.log.Warn("cannot write pid file; a restarted agent will not adopt this process", "path", s.cfg.PIDFile, "err", err)
	}
	s.log.Info("started", "pid", pid, "argv", s.argv)
	return p, nil
}

// settledCmdline reads the command line of a just-started process. cmd.Start
// returns once the exec has begun, but the kernel sets up the new argument
// area a little later: until then /proc shows it empty.
func settledCmdline(pid int) []string {
	for i := 0; i < 1000; i++ {
		if c, err := procCmdline(pid); err == nil {
			return c
		}
		if state, _, err := procStat(pid); err != nil || state == 'Z' || state == 'X' {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// watchAdopted polls /proc until the adopted process is gone.
func (s *Supervisor) watchAdopted(p *Process) {
	for {
		if ok, why := p.info.Alive(); !ok {
			p.err = fmt.Errorf("adopted process exited (status unknown): %s", why)
			close(p.done)
			return
		}
		if !s.sleep(s.cfg.PollInterval, p.stopPoll) {
			return
		}
	}
}

// sleep waits d on the clock; false if stop closed first.
func (s *Supervisor) sleep(d time.Duration, stop <-chan struct{}) bool {
	fired := make(chan struct{})
	t := s.cfg.Clock.AfterFunc(d, func() { close(fired) })
	select {
	case <-fired:
		return true
	case <-stop:
		t.Stop()
		return false
	}
}

// loop restarts the process whenever it exits, until quit.
func (s *Supervisor) loop(p *Process) {
	defer close(s.loopDone)
	failures := 0
	for {
		if p != nil {
			select {
			case <-p.done:
			case <-s.quit:
				return
			}
			select {
			case <-s.quit: // exited because we are stopping it
				return
			default:
			}
			ran := s.cfg.Clock.Now().Sub(p.info.Started)
			if ran >= s.cfg.BackoffReset {
				failures = 0
			}
			s.mu.Lock()
			s.lastExit = exitError(p)
			s.mu.Unlock()
			s.log.Warn("process exited", "pid", p.PID(), "err", exitError(p), "ran", ran.Round(time.Millisecond))
		}
		failures++
		delay := backoff(s.cfg.BackoffMin, s.cfg.BackoffMax, failures)
		s.log.Info("restarting", "in", delay, "failures", failures)
		if !s.sleep(delay, s.quit) {
			return
		}
		s.mu.Lock()
		np, err := s.spawn()
		if err == nil {
			s.cur = np
			s.restarts++
		}
		s.mu.Unlock()
		if err != nil {
			s.log.Error("restart failed", "err", err)
		}
		p = np
	}
}

func exitError(p *Process) error {
	if err := p.Err(); err != nil {
		return err
	}
	return errors.New("exit status 0")
}

// backoff returns min * 2^(failures-1), capped at max.
func backoff(minD, maxD time.Duration, failures int) time.Duration {
	d := minD
	for i := 1; i < failures; i++ {
		d *= 2
		if d >= maxD || d <= 0 {
			return maxD
		}
	}
	return min(d, maxD)
}

// Stop ends supervision and stops the process: SIGTERM to its process
// group, SIGKILL after Grace (or when ctx is done), and waits until it has
// exited. The PID file is removed. Stopping a stopped supervisor is a no-op.
func (s *Supervisor) Stop(ctx context.Context) error {
	p := s.shutdown()
	if p == nil {
		return nil
	}
	err := terminate(ctx, p, s.cfg.Grace, s.cfg.Clock, s.log)
	if err != nil {
		return fmt.Errorf("stop %s %s: %w", s.cfg.Service, s.cfg.Version, err)
	}
	s.removePIDFile(p)
	return nil
}

// Detach ends supervision and leaves the process running, with its PID
// file, for a later agent to adopt (agent shutdown without stopping the
// service).
func (s *Supervisor) Detach() {
	p := s.shutdown()
	if p != nil && p.stopPoll != nil {
		close(p.stopPoll)
	}
}

// shutdown stops the restart loop and returns the current process.
func (s *Supervisor) shutdown() *Process {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.quit)
	started := s.started
	s.mu.Unlock()
	if !started {
		return nil
	}
	<-s.loopDone
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

func (s *Supervisor) removePIDFile(p *Process) {
	info, err := ReadPIDFile(s.cfg.PIDFile)
	if err == nil && info.PID == p.PID() && info.StartTime == p.info.StartTime {
		os.Remove(s.cfg.PIDFile)
	}
}

// terminate sends SIGTERM to p's process group, SIGKILL after grace or when
// ctx is done, and waits for p to exit. Group members left behind by the
// leader are killed.
func terminate(ctx context.Context, p *Process, grace time.Duration, clock znodes.Clock, log *slog.Logger) error {
	pid := p.PID()
	if p.exited() {
		return nil
	}
	log.Info("stopping", "pid", pid, "grace", grace)
	if err := signalGroup(p, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("SIGTERM pid %d: %w", pid, err)
	}
	graceUp := make(chan struct{})
	t := clock.AfterFunc(grace, func() { close(graceUp) })
	select {
	case <-p.done:
	case <-graceUp:
		log.Warn("still running after SIGTERM and grace period; sending SIGKILL", "pid", pid, "grace", grace)
	case <-ctx.Done():
		log.Warn("stop cancelled; sending SIGKILL", "pid", pid, "err", ctx.Err())
	}
	t.Stop()
	if !p.exited() {
		if err := signalGroup(p, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("SIGKILL pid %d: %w", pid, err)
		}
		killed := make(chan struct{})
		t := clock.AfterFunc(killWait, func() { close(killed) })
		defer t.Stop()
		select {
		case <-p.done:
		case <-killed:
			return fmt.Errorf("pid %d still there %s after SIGKILL", pid, killWait)
		}
	}
	// Leftovers of the group (children of the service) go too.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	return nil
}

// signalGroup signals p's process group (its pgid is its pid: Setpgid).
// An adopted process is checked first, so a recycled PID is never signalled.
func signalGroup(p *Process, sig syscall.Signal) error {
	if p.adopted {
		if ok, _ := p.info.Alive(); !ok {
			return syscall.ESRCH
		}
	}
	return syscall.Kill(-p.PID(), sig)
}

// StopPIDFile stops the process recorded in a PID file (as Stop does) without
// a supervisor, e.g. a version an earlier agent left running. It reports
// false when the process is no longer there.
func StopPIDFile(ctx context.Context, path string, grace time.Duration, log *slog.Logger) (bool, error) {
	info, err := ReadPIDFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if ok, _ := info.Alive(); !ok {
		os.Remove(path)
		return false, nil
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg := Config{Dir: info.Dir, Run: info.Argv, PIDFile: path, Grace: grace, Logger: log}
	cfg.applyDefaults()
	s := &Supervisor{cfg: cfg, log: cfg.Logger.With("component", "supervise"), argv: info.Argv}
	p := &Process{info: info, adopted: true, done: make(chan struct{}), stopPoll: make(chan struct{})}
	go s.watchAdopted(p)
	defer close(p.stopPoll)
	if err := terminate(ctx, p, cfg.Grace, cfg.Clock, s.log); err != nil {
		return true, fmt.Errorf("stop pid %d from %s: %w", info.PID, path, err)
	}
	s.removePIDFile(p)
	return true, nil
}

// Reload sends sig (e.g. SIGHUP after WriteSettings) to the main process.
func (s *Supervisor) Reload(sig syscall.Signal) error {
	s.mu.Lock()
	p := s.cur
	s.mu.Unlock()
	if p == nil || p.exited() {
		return fmt.Errorf("reload %s: %w", s.cfg.Service, ErrNotRunning)
	}
	if p.adopted {
		if ok, _ := p.info.Alive(); !ok {
			return fmt.Errorf("reload %s: %w", s.cfg.Service, ErrNotRunning)
		}
	}
	if err := syscall.Kill(p.PID(), sig); err != nil {
		return fmt.Errorf("reload %s: signal %v to pid %d: %w", s.cfg.Service, sig, p.PID(), err)
	}
	s.log.Info("sent reload signal", "pid", p.PID(), "signal", sig)
	return nil
}

// Status is a snapshot of a supervisor.
type Status struct {
	PID      int       // current or last process; 0 before Start
	Running  bool      // the process is alive
	Adopted  bool      // the current process was adopted
	Since    time.Time // start of the current process
	Restarts int       // restarts after unexpected exits
	LastExit error     // how the last unexpected exit ended
}

// Status returns a snapshot.
func (s *Supervisor) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Restarts: s.restarts, LastExit: s.lastExit}
	if p := s.cur; p != nil {
		st.PID, st.Running, st.Adopted, st.Since = p.PID(), !p.exited(), p.adopted, p.info.Started
	}
	return st
}

// PID returns the current process id (0 before Start).
func (s *Supervisor) PID() int { return s.Status().PID }

// Running reports whether the current process is alive.
func (s *Supervisor) Running() bool { return s.Status().Running }

// Restarts returns how many times the process was restarted after exiting.
func (s *Supervisor) Restarts() int { return s.Status().Restarts }

// Current returns the current process (nil before Start).
func (s *Supervisor) Current() *Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// Exited returns a channel closed when the current process exits; it is
// already closed if no process is running. Pass it to WaitHealthy.
func (s *Supervisor) Exited() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return s.cur.done
}

// ParseSignal parses a signal name as written in a spec ("SIGHUP", "HUP")
// or number ("1").
func ParseSignal(name string) (syscall.Signal, error) {
	n := strings.ToUpper(strings.TrimSpace(name))
	if v, err := strconv.Atoi(n); err == nil && v > 0 && v < 65 {
		return syscall.Signal(v), nil
	}
	n = strings.TrimPrefix(n, "SIG")
	if sig, ok := signals[n]; ok {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q (e.g. SIGHUP, SIGUSR1)", name)
}

var signals = map[string]syscall.Signal{
	"HUP": syscall.SIGHUP, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT, "USR1": syscall.SIGUSR1,
	"USR2": syscall.SIGUSR2, "TERM": syscall.SIGTERM, "WINCH": syscall.SIGWINCH, "CONT": syscall.SIGCONT,
	"ALRM": syscall.SIGALRM, "PWR": syscall.SIGPWR, "URG": syscall.SIGURG, "IO": syscall.SIGIO,
}
