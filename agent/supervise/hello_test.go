package supervise

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"dcroll/examples/examplebuild"
	"dcroll/integration/zktest"
	"dcroll/spec"
)

// The fake agent: this test binary re-executed with fakeAgentEnv set runs a
// supervisor from the JSON Config in that variable, prints "pid N" and waits
// to be killed, like an agent that dies with kill -9.
const fakeAgentEnv = "SUPERVISE_TEST_FAKE_AGENT"

func TestMain(m *testing.M) {
	if c := os.Getenv(fakeAgentEnv); c != "" {
		os.Exit(fakeAgent(c))
	}
	os.Exit(m.Run())
}

func fakeAgent(conf string) int {
	var cfg Config
	if err := json.Unmarshal([]byte(conf), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	s, err := New(cfg)
	if err == nil {
		err = s.Start()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("pid %d\n", s.PID())
	select {} // until killed
}

type helloStatus struct {
	Service  string            `json:"service"`
	Version  string            `json:"version"`
	Settings map[string]string `json:"settings"`
	Reloads  int               `json:"reloads"`
	PID      int               `json:"pid"`
}

func getHello(port string) (helloStatus, error) {
	var st helloStatus
	resp, err := http.Get("http://127.0.0.1:" + port + "/healthz")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("%s: %w", b, err)
	}
	return st, nil
}

var helloHealth = &spec.Health{HTTP: "http://127.0.0.1:${DCROLL_PORT}/healthz", Timeout: dur(time.Second)}

// helloConfig unpacks hello's tar.gz artifact (bin/hello) and returns a
// config running it on a free port.
func helloConfig(t *testing.T, version string, broken bool) Config {
	t.Helper()
	tmp := t.TempDir()
	dir, err := Unpack(context.Background(), examplebuild.TarGzForTest(t, version, broken), filepath.Join(tmp, "versions"), version, "./bin/hello")
	if err != nil {
		t.Fatal(err)
	}
	return Config{
		Dir: dir, Run: []string{"./bin/hello", "--port=${DCROLL_PORT}"},
		Service: "web", Version: version, Machine: "m1",
		SettingsFile: filepath.Join(tmp, "settings.json"),
		Env:          []string{"DCROLL_PORT=" + strconv.Itoa(zktest.FreePort(t))},
		LogPath:      filepath.Join(tmp, "web.log"),
		Grace:        5 * time.Second,
		BackoffMin:   20 * time.Millisecond,
		PollInterval: 20 * time.Millisecond,
	}
}

func port(cfg Config) string { return strings.TrimPrefix(cfg.Env[0], "DCROLL_PORT=") }

func TestHelloSettingsReload(t *testing.T) {
	cfg := helloConfig(t, "2.0.0", false)
	if err := WriteSettings(cfg.SettingsFile, map[string]string{"color": "blue"}); err != nil {
		t.Fatal(err)
	}
	s := newSup(t, cfg)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	chk, err := s.Checker(helloHealth)
	if err != nil {
		t.Fatal(err)
	}
	if err := WaitHealthy(context.Background(), chk, s.Exited(), 200*time.Millisecond, 20*time.Second, 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	st, err := getHello(port(cfg))
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != "2.0.0" || st.Service != "web" || st.Settings["color"] != "blue" || st.Reloads != 0 || st.PID != s.PID() {
		t.Fatalf("hello reports %+v", st)
	}

	if err := WriteSettings(cfg.SettingsFile, map[string]string{"color": "red", "size": "L"}); err != nil {
		t.Fatal(err)
	}
	sig, _ := ParseSignal(spec.DefaultReloadSignal)
	if err := s.Reload(sig); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "settings reloaded", func() bool {
		st, err = getHello(port(cfg))
		return err == nil && st.Reloads == 1
	})
	if st.Settings["color"] != "red" || st.Settings["size"] != "L" || st.PID != s.PID() {
		t.Fatalf("after reload hello reports %+v", st)
	}
	p := s.Current()
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := p.Err(); err != nil {
		t.Errorf("hello did not shut down cleanly on SIGTERM: %v", err)
	}
	if err := s.Reload(sig); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Reload after Stop = %v, want ErrNotRunning", err)
	}
}

func TestHelloBrokenNeverHealthy(t *testing.T) {
	cfg := helloConfig(t, "3.0.0-broken", true)
	s := newSup(t, cfg)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	chk, err := s.Checker(helloHealth)
	if err != nil {
		t.Fatal(err)
	}
	err = WaitHealthy(context.Background(), chk, s.Exited(), 100*time.Millisecond, 2*time.Second, 50*time.Millisecond)
	if !errors.Is(err, ErrUnhealthy) || !strings.Contains(err.Error(), "500") {
		t.Fatalf("WaitHealthy = %v, want ErrUnhealthy naming the 500", err)
	}
}

// TestAdoptAfterAgentKill: an agent (a child process) starts hello and is
// killed with SIGKILL; hello keeps serving; a new supervisor adopts it from
// the PID file, signals it, restarts it when it dies, and stops it.
func TestAdoptAfterAgentKill(t *testing.T) {
	cfg := helloConfig(t, "1.0.0", false)
	conf, _ := json.Marshal(cfg)
	agent := exec.Command(os.Args[0], "-test.run=^$")
	agent.Env = append(os.Environ(), fakeAgentEnv+"="+string(conf))
	agent.Stderr = os.Stderr
	out, err := agent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		agent.Process.Kill()
		agent.Wait()
		t.Fatalf("fake agent: %v", err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "pid ")))
	t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) }) // in case the test fails early

	if err := agent.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	agent.Wait()

	// The service survived its agent.
	chk, _ := NewChecker(helloHealth, cfg.Dir, []string{cfg.Env[0]})
	if err := WaitHealthy(context.Background(), chk, nil, 100*time.Millisecond, 20*time.Second, 20*time.Millisecond); err != nil {
		t.Fatalf("hello after the agent's death: %v", err)
	}
	if st, err := getHello(port(cfg)); err != nil || st.PID != pid {
		t.Fatalf("hello reports %+v, %v; want pid %d", st, err, pid)
	}

	// A stale PID file (this test process, wrong start time) is not adopted.
	stale := cfg
	stale.PIDFile = filepath.Join(t.TempDir(), "stale.pid")
	writePIDFile(stale.PIDFile, PIDInfo{PID: os.Getpid(), StartTime: 1, Cmdline: []string{"x"}})
	if ok, err := newSup(t, stale).Adopt(); ok || err != nil {
		t.Fatalf("adopted a stale pid file: %v, %v", ok, err)
	}

	// The restarted agent adopts it.
	s := newSup(t, cfg)
	adopted, err := s.StartOrAdopt()
	if err != nil || !adopted {
		t.Fatalf("StartOrAdopt = %v, %v; want adopted", adopted, err)
	}
	if st := s.Status(); st.PID != pid || !st.Running || !st.Adopted {
		t.Fatalf("status %+v, want adopted pid %d running", st, pid)
	}
	if err := s.Reload(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "reload of the adopted process", func() bool {
		st, err := getHello(port(cfg))
		return err == nil && st.Reloads == 1
	})

	// It dies: the supervisor notices (by polling) and starts a new one.
	exited := s.Exited()
	syscall.Kill(pid, syscall.SIGKILL)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the adopted process's death went unnoticed")
	}
	waitFor(t, 10*time.Second, "restart", func() bool { return s.Restarts() == 1 && s.Running() })
	newPID := s.PID()
	if newPID == pid || s.Status().Adopted {
		t.Fatalf("after restart: %+v", s.Status())
	}
	if err := WaitHealthy(context.Background(), chk, s.Exited(), 100*time.Millisecond, 20*time.Second, 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !gone(newPID) {
		t.Errorf("pid %d survived Stop", newPID)
	}
}

// TestAdoptThenStop: adopted processes are stopped with SIGTERM like
// children, and StopPIDFile stops what a PID file names.
func TestAdoptThenStop(t *testing.T) {
	for _, viaPIDFile := range []bool{false, true} {
		t.Run(fmt.Sprintf("StopPIDFile=%v", viaPIDFile), func(t *testing.T) {
			cfg := helloConfig(t, "1.0.0", false)
			first := newSup(t, cfg)
			if err := first.Start(); err != nil {
				t.Fatal(err)
			}
			pid := first.PID()
			first.Detach() // agent shutdown: the service keeps running
			if gone(pid) {
				t.Fatal("Detach stopped the process")
			}
			if viaPIDFile {
				stopped, err := StopPIDFile(context.Background(), filepath.Join(cfg.Dir, PIDFileName), time.Second, testLogger(t))
				if err != nil || !stopped {
					t.Fatalf("StopPIDFile = %v, %v", stopped, err)
				}
			} else {
				s := newSup(t, cfg)
				if ok, err := s.Adopt(); !ok || err != nil {
					t.Fatalf("Adopt = %v, %v", ok, err)
				}
				if err := s.Stop(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			// Our own child: reaped by the first supervisor's Wait.
			waitFor(t, 5*time.Second, "exit", func() bool { return gone(pid) })
			if _, err := os.Stat(filepath.Join(cfg.Dir, PIDFileName)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("pid file left: %v", err)
			}
		})
	}
}
