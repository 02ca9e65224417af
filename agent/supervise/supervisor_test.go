package supervise

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func newSup(t *testing.T, cfg Config) *Supervisor {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Stop(ctx)
	})
	return s
}

func TestStartStopEnvironment(t *testing.T) {
	dir := t.TempDir()
	// "$$" reaches the shell as "$": the shell reads the environment itself.
	script := `printf '%s\n' "$$1" "$$DCROLL_VERSION" "$$DCROLL_SERVICE" "$$DCROLL_MACHINE" "$$DCROLL_SETTINGS" "$$DCROLL_DATA" "$$EXTRA" > env.tmp; mv env.tmp env.txt; exec sleep 1000`
	s := newSup(t, Config{
		Dir: dir, Run: []string{"/bin/sh", "-c", script, "sh", "--port=${DCROLL_PORT}"},
		Service: "web", Version: "2.0.0", Machine: "m1", SettingsFile: "/s.json",
		Data: []string{"/d/a", "/d/b"}, Env: []string{"DCROLL_PORT=7001", "EXTRA=x y"},
		LogPath: filepath.Join(dir, "log", "web.log"),
		Grace:   30 * time.Second, // SIGTERM must be enough: Stop must not take this long
	})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	pid := s.PID()
	if pid == 0 || !s.Running() {
		t.Fatalf("after Start: pid %d running %v", pid, s.Running())
	}
	if pgid, _ := syscall.Getpgid(pid); pgid != pid {
		t.Errorf("process group %d, want its own (%d)", pgid, pid)
	}
	envFile := filepath.Join(dir, "env.txt")
	waitFor(t, 5*time.Second, "env.txt", func() bool { _, err := os.Stat(envFile); return err == nil })
	b, _ := os.ReadFile(envFile)
	want := "--port=7001\n2.0.0\nweb\nm1\n/s.json\n/d/a:/d/b\nx y\n"
	if string(b) != want {
		t.Errorf("service saw\n%s\nwant\n%s", b, want)
	}
	info, err := ReadPIDFile(filepath.Join(dir, PIDFileName))
	if err != nil || info.PID != pid || info.StartTime == 0 || len(info.Cmdline) == 0 {
		t.Fatalf("pid file %+v, %v", info, err)
	}

	start := time.Now()
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("Stop took %s: SIGTERM did not stop sleep", el)
	}
	if !gone(pid) || s.Running() {
		t.Errorf("process %d still running after Stop", pid)
	}
	if _, err := os.Stat(filepath.Join(dir, PIDFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pid file left after Stop: %v", err)
	}
	if s.Restarts() != 0 {
		t.Errorf("Restarts = %d after a clean stop", s.Restarts())
	}
	if err := s.Start(); !errors.Is(err, ErrStopped) {
		t.Errorf("Start after Stop: %v, want ErrStopped", err)
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no dir", Config{Run: []string{"x"}}, "Dir"},
		{"missing dir", Config{Dir: filepath.Join(dir, "nope"), Run: []string{"x"}}, "unpack"},
		{"no run", Config{Dir: dir}, "Run"},
		{"unset var", Config{Dir: dir, Run: []string{"/bin/true", "${DCROLL_PORT}"}}, "DCROLL_PORT"},
		{"unknown command", Config{Dir: dir, Run: []string{"no-such-command-xyz"}}, "PATH"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
	if _, err := New(Config{Dir: dir, Run: []string{"./missing"}}); err != nil {
		t.Fatalf("New with a relative command: %v", err)
	}
	s, _ := New(Config{Dir: dir, Run: []string{"./missing"}})
	if err := s.Start(); err == nil {
		t.Fatal("Start of a missing executable succeeded")
	}
}

func TestStopEscalatesToSIGKILL(t *testing.T) {
	dir := t.TempDir()
	const grace = 300 * time.Millisecond
	// An ignored signal stays ignored across exec: sleep ignores SIGTERM.
	s := newSup(t, Config{Dir: dir, Run: []string{"/bin/sh", "-c", `trap "" TERM; : > ready; exec sleep 1000`}, Grace: grace})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "ready", func() bool { _, err := os.Stat(filepath.Join(dir, "ready")); return err == nil })
	p := s.Current()
	start := time.Now()
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < grace {
		t.Errorf("Stop returned after %s, before the grace period %s", el, grace)
	}
	if err := p.Err(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("exit = %v, want killed by SIGKILL", err)
	}
	if !gone(p.PID()) {
		t.Errorf("pid %d survived", p.PID())
	}
}

func TestStopKillsWholeGroup(t *testing.T) {
	dir := t.TempDir()
	s := newSup(t, Config{Dir: dir, Run: []string{"/bin/sh", "-c", `sleep 1000 & echo $$! > child; wait`}, Grace: 5 * time.Second})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	var child int
	waitFor(t, 5*time.Second, "child pid", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "child"))
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		child = n
		return err == nil && child > 0
	})
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "child gone", func() bool { return gone(child) })
}

func TestCrashRestartsWithBackoff(t *testing.T) {
	dir := t.TempDir()
	s := newSup(t, Config{
		Dir: dir, Run: []string{"/bin/sh", "-c", `echo run >> runs; exit 3`},
		BackoffMin: 10 * time.Millisecond, BackoffMax: 40 * time.Millisecond,
	})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "4 restarts", func() bool { return s.Restarts() >= 4 })
	st := s.Status()
	if st.LastExit == nil || !strings.Contains(st.LastExit.Error(), "exit status 3") {
		t.Errorf("LastExit = %v, want exit status 3", st.LastExit)
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	n := s.Restarts()
	b, _ := os.ReadFile(filepath.Join(dir, "runs"))
	// The last restart may be stopped before its shell wrote its line.
	if runs := strings.Count(string(b), "run"); runs != n+1 && runs != n {
		t.Errorf("%d runs for %d restarts", runs, n)
	}
}

// TestBackoffSchedule drives the restart loop with a fake clock: the delay
// doubles from BackoffMin up to BackoffMax, and starts over after a process
// has run for BackoffReset.
func TestBackoffSchedule(t *testing.T) {
	dir := t.TempDir()
	clk := newFakeClock()
	s := newSup(t, Config{
		Dir: dir, Run: []string{"/bin/sh", "-c", `if [ -e stay ]; then : > up; exec sleep 1000; fi; exit 1`},
		BackoffMin: time.Second, BackoffMax: 4 * time.Second, BackoffReset: time.Minute,
		Clock: clk,
	})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	expectTimer := func(want time.Duration) {
		t.Helper()
		waitFor(t, 5*time.Second, "backoff timer of "+want.String(), func() bool {
			p := clk.pending()
			return len(p) == 1 && p[0] == want
		})
	}
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		expectTimer(want)
		if s.Restarts() != i {
			t.Fatalf("restarts = %d before timer %d fired", s.Restarts(), i)
		}
		clk.Advance(want)
	}
	expectTimer(4 * time.Second) // capped at BackoffMax
	// The next run stays up; after BackoffReset of running, a crash backs
	// off from the minimum again.
	mustWrite(t, filepath.Join(dir, "stay"), "")
	clk.Advance(4 * time.Second)
	waitFor(t, 5*time.Second, "long run", func() bool { _, err := os.Stat(filepath.Join(dir, "up")); return err == nil })
	clk.Advance(2 * time.Minute)
	os.Remove(filepath.Join(dir, "stay"))
	syscall.Kill(s.PID(), syscall.SIGKILL)
	expectTimer(time.Second)
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		failures int
		want     time.Duration
	}{
		{1, 200 * time.Millisecond}, {2, 400 * time.Millisecond}, {3, 800 * time.Millisecond},
		{8, 25600 * time.Millisecond}, {9, 30 * time.Second}, {1000, 30 * time.Second},
	}
	for _, tc := range tests {
		if got := backoff(DefaultBackoffMin, DefaultBackoffMax, tc.failures); got != tc.want {
			t.Errorf("backoff(%d) = %s, want %s", tc.failures, got, tc.want)
		}
	}
}

func TestParseSignal(t *testing.T) {
	tests := []struct {
		in   string
		want syscall.Signal
		ok   bool
	}{
		{"SIGHUP", syscall.SIGHUP, true}, {"hup", syscall.SIGHUP, true}, {"SIGUSR2", syscall.SIGUSR2, true},
		{"10", syscall.Signal(10), true}, {"SIGNOPE", 0, false}, {"", 0, false}, {"99", 0, false},
	}
	for _, tc := range tests {
		got, err := ParseSignal(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseSignal(%q) = %v, %v", tc.in, got, err)
		}
	}
}

func TestExpand(t *testing.T) {
	env := []string{"A=1", "DCROLL_PORT=8080", "A=2"}
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"http://127.0.0.1:${DCROLL_PORT}/healthz", "http://127.0.0.1:8080/healthz", true},
		{"$A-$$A", "2-$A", true},
		{"plain", "plain", true},
		{"${NOPE}", "", false},
	}
	for _, tc := range tests {
		got, err := Expand(tc.in, env)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("Expand(%q) = %q, %v", tc.in, got, err)
		}
	}
}

func TestWriteSettings(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "settings.json")
	if err := WriteSettings(p, map[string]string{"b": "2", "a": "1"}); err != nil {
		t.Fatal(err)
	}
	if err := WriteSettings(p, map[string]string{"a": "3"}); err != nil {
		t.Fatal(err)
	}
	m, err := ReadSettings(p)
	if err != nil || len(m) != 1 || m["a"] != "3" {
		t.Fatalf("ReadSettings = %v, %v", m, err)
	}
	ents, _ := os.ReadDir(filepath.Dir(p))
	if len(ents) != 1 {
		t.Errorf("temp files left: %v", ents)
	}
}
