package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"dcroll/examples/examplebuild"
	"dcroll/integration/zktest"
)

// lineRE is the event line format; the groups are time, service, machine,
// version, event and pid.
var lineRE = regexp.MustCompile(`^(\S+) (\S+) (\S+) (\S+) (up|unhealthy|down) pid=(\d+)$`)

type event struct {
	At                        time.Time
	Service, Machine, Version string
	Event                     string
	PID                       int
}

func parseEvents(t *testing.T, path string) []event {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []event
	for i, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if l == "" && i == 0 {
			continue
		}
		m := lineRE.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("event log line %d %q does not match %s", i+1, l, lineRE)
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil || at.Location() != time.UTC {
			t.Fatalf("event log line %d: time %q: %v (location %v)", i+1, m[1], err, at.Location())
		}
		pid, _ := strconv.Atoi(m[6])
		out = append(out, event{at, m[2], m[3], m[4], m[5], pid})
	}
	return out
}

func eventNames(evs []event) string {
	var names []string
	for _, e := range evs {
		names = append(names, e.Event)
	}
	return strings.Join(names, ",")
}

// instance is one hello process of a test.
type instance struct {
	t        *testing.T
	cmd      *exec.Cmd
	port     int
	settings string
	log      string
	exited   chan struct{}
	err      error // of Wait, after exited
}

// start runs hello (version, broken) as web on m1 with the given settings
// and the event log at logPath.
func start(t *testing.T, version string, broken bool, settings map[string]string, logPath string) *instance {
	t.Helper()
	exe := examplebuild.ForTest(t, version, broken)
	dir := t.TempDir()
	in := &instance{t: t, port: zktest.FreePort(t), settings: filepath.Join(dir, "settings.json"), log: logPath, exited: make(chan struct{})}
	in.writeSettings(settings)
	in.cmd = exec.Command(exe)
	in.cmd.Env = append(os.Environ(),
		"DCROLL_PORT="+strconv.Itoa(in.port), "DCROLL_SERVICE=web", "DCROLL_MACHINE=m1",
		"DCROLL_SETTINGS="+in.settings, "HELLO_EVENT_LOG="+logPath)
	in.cmd.Stderr = &tWriter{t: t}
	if err := in.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { in.err = in.cmd.Wait(); close(in.exited) }()
	t.Cleanup(func() {
		in.cmd.Process.Kill()
		<-in.exited
	})
	return in
}

func (in *instance) writeSettings(m map[string]string) {
	in.t.Helper()
	b, _ := json.Marshal(m)
	tmp := in.settings + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		in.t.Fatal(err)
	}
	if err := os.Rename(tmp, in.settings); err != nil {
		in.t.Fatal(err)
	}
}

func (in *instance) signal(sig syscall.Signal) {
	in.t.Helper()
	if err := in.cmd.Process.Signal(sig); err != nil {
		in.t.Fatal(err)
	}
}

// wait waits for the exit and returns its code.
func (in *instance) wait() int {
	in.t.Helper()
	select {
	case <-in.exited:
	case <-time.After(20 * time.Second):
		in.t.Fatal("hello did not exit")
	}
	var ee *exec.ExitError
	if errors.As(in.err, &ee) {
		return ee.ExitCode()
	}
	if in.err != nil {
		in.t.Fatal(in.err)
	}
	return 0
}

func (in *instance) healthz() (int, status, error) {
	var st status
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", in.port))
	if err != nil {
		return 0, st, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&st)
	return resp.StatusCode, st, err
}

// waitEvents waits until the event log holds exactly want (comma-separated).
func (in *instance) waitEvents(want string) []event {
	in.t.Helper()
	var evs []event
	zktest.WaitFor(in.t, 20*time.Second, "events "+want, func() (bool, error) {
		evs = parseEvents(in.t, in.log)
		if got := eventNames(evs); got != want {
			return false, fmt.Errorf("events %q", got)
		}
		return true, nil
	})
	return evs
}

// waitHealthz waits until /healthz answers code with healthy as given.
func (in *instance) waitHealthz(code int, healthy bool) status {
	in.t.Helper()
	var st status
	zktest.WaitFor(in.t, 20*time.Second, fmt.Sprintf("/healthz %d healthy=%t", code, healthy), func() (bool, error) {
		c, s, err := in.healthz()
		if err != nil {
			return false, err
		}
		st = s
		return c == code && s.Healthy == healthy, nil
	})
	return st
}

type tWriter struct {
	mu sync.Mutex
	t  *testing.T
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Logf("hello: %s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestEventsStartStop(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "events.log")
	in := start(t, "1.0.0", false, map[string]string{"color": "blue"}, logPath)
	evs := in.waitEvents("up")
	// up is written after the bind: /healthz answers at once.
	code, st, err := in.healthz()
	if err != nil || code != 200 {
		t.Fatalf("/healthz right after up: %d %v", code, err)
	}
	if st.Version != "1.0.0" || st.Service != "web" || st.Machine != "m1" || st.Broken || !st.Healthy ||
		st.Settings["color"] != "blue" || st.PID != in.cmd.Process.Pid {
		t.Errorf("/healthz = %+v", st)
	}
	e := evs[0]
	if e.Service != "web" || e.Machine != "m1" || e.Version != "1.0.0" || e.PID != in.cmd.Process.Pid ||
		time.Since(e.At) > time.Minute || time.Since(e.At) < 0 {
		t.Errorf("up event = %+v", e)
	}
	in.signal(syscall.SIGTERM)
	if code := in.wait(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	evs = in.waitEvents("up,down")
	if !evs[1].At.After(evs[0].At) {
		t.Errorf("down %v not after up %v", evs[1].At, evs[0].At)
	}
}

func TestEventsBrokenBuild(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "events.log")
	in := start(t, "3.0.0-broken", true, nil, logPath)
	evs := in.waitEvents("unhealthy")
	if evs[0].Version != "3.0.0-broken" {
		t.Errorf("event = %+v", evs[0])
	}
	if st := in.waitHealthz(500, false); !st.Broken || st.Version != "3.0.0-broken" {
		t.Errorf("/healthz = %+v", st)
	}
	// A reload cannot make a broken build healthy.
	in.writeSettings(map[string]string{"healthy": "true"})
	in.signal(syscall.SIGHUP)
	zktest.WaitFor(t, 20*time.Second, "reload", func() (bool, error) {
		_, st, err := in.healthz()
		return err == nil && st.Reloads == 1, err
	})
	in.signal(syscall.SIGINT)
	if code := in.wait(); code != 0 {
		t.Fatalf("exit code %d after SIGINT", code)
	}
	in.waitEvents("unhealthy,down")
}

func TestEventsReloadHealth(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "events.log")
	in := start(t, "2.0.0", false, nil, logPath)
	in.waitEvents("up")
	in.waitHealthz(200, true)

	in.writeSettings(map[string]string{"healthy": "false"})
	in.signal(syscall.SIGHUP)
	in.waitEvents("up,unhealthy")
	if st := in.waitHealthz(500, false); st.Reloads != 1 || st.Broken {
		t.Errorf("/healthz = %+v", st)
	}

	// A reload that keeps the health writes nothing.
	in.writeSettings(map[string]string{"healthy": "false", "color": "red"})
	in.signal(syscall.SIGHUP)
	zktest.WaitFor(t, 20*time.Second, "second reload", func() (bool, error) {
		_, st, err := in.healthz()
		return err == nil && st.Reloads == 2, err
	})

	in.writeSettings(map[string]string{"color": "red"})
	in.signal(syscall.SIGHUP)
	in.waitEvents("up,unhealthy,up")
	in.waitHealthz(200, true)

	in.signal(syscall.SIGTERM)
	if code := in.wait(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	evs := in.waitEvents("up,unhealthy,up,down")
	for i := 1; i < len(evs); i++ {
		if evs[i].At.Before(evs[i-1].At) || evs[i].PID != evs[0].PID {
			t.Errorf("event %d = %+v after %+v", i, evs[i], evs[i-1])
		}
	}
}

func TestEventsUnhealthySettingsAtStartup(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "events.log")
	in := start(t, "2.0.0", false, map[string]string{"healthy": "false"}, logPath)
	in.waitEvents("unhealthy")
	in.waitHealthz(500, false)
	in.signal(syscall.SIGTERM)
	in.wait()
	in.waitEvents("unhealthy,down")
}

func TestCrashSettings(t *testing.T) {
	t.Run("startup", func(t *testing.T) {
		logPath := filepath.Join(t.TempDir(), "events.log")
		in := start(t, "2.0.0", false, map[string]string{"crash": "true"}, logPath)
		if code := in.wait(); code != exitCrash {
			t.Fatalf("exit code %d, want %d", code, exitCrash)
		}
		if evs := parseEvents(t, logPath); len(evs) != 0 {
			t.Errorf("a crash before listening wrote %v", evs)
		}
	})
	t.Run("reload", func(t *testing.T) {
		logPath := filepath.Join(t.TempDir(), "events.log")
		in := start(t, "2.0.0", false, nil, logPath)
		in.waitEvents("up")
		in.writeSettings(map[string]string{"crash": "true"})
		in.signal(syscall.SIGHUP)
		if code := in.wait(); code != exitCrash {
			t.Fatalf("exit code %d, want %d", code, exitCrash)
		}
		in.waitEvents("up,down")
	})
}

// TestEventLogConcurrentWriters checks that lines from many writers on one
// file never interleave (one write(2) per line, O_APPEND).
func TestEventLogConcurrentWriters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.log")
	const writers, lines = 8, 200
	var wg sync.WaitGroup
	for w := range writers {
		l, err := openEventLog(path, "svc", fmt.Sprintf("m%d", w))
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer l.close()
			for range lines {
				if err := l.write(eventUp); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	evs := parseEvents(t, path)
	if len(evs) != writers*lines {
		t.Fatalf("%d lines, want %d", len(evs), writers*lines)
	}
}

func TestEventLogLine(t *testing.T) {
	l := &eventLog{service: logField(""), machine: logField("rack 1")}
	at := time.Date(2025, 1, 2, 3, 4, 5, 600, time.FixedZone("X", 3600))
	want := fmt.Sprintf("2025-01-02T02:04:05.0000006Z - rack_1 %s down pid=%d\n", version, os.Getpid())
	if got := string(l.line(at, eventDown)); got != want {
		t.Errorf("line = %q, want %q", got, want)
	}
}
