package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"dcroll/examples/examplebuild"
	"dcroll/integration/zktest"
	"dcroll/internal/obs/obstest"
)

// lockedBuffer is an io.Writer several daemons log into.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// daemon runs dcroll (this test binary re-executed as main) as a separate
// process until the test ends, as the daemons run in production. In one
// process, concurrent urfave/cli apps would share its global help flag.
func daemon(t *testing.T, logs io.Writer, args ...string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Args[0] = "dcroll"
	cmd.Env = append(os.Environ(), "DCROLL_TEST_AS_MAIN=1")
	cmd.Stdout, cmd.Stderr = io.Discard, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("dcroll %s: %v", strings.Join(args, " "), err)
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("dcroll %s did not stop on SIGTERM", strings.Join(args, " "))
		}
	})
}

func waitHealthy(t *testing.T, base string) {
	t.Helper()
	zktest.WaitFor(t, 30*time.Second, base+"/healthz answers 200", func() (bool, error) {
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Errorf("%s", resp.Status)
		}
		return true, nil
	})
}

// TestDaemonsObservable runs the three daemons as `dcroll` runs them
// (coordinator, origin, agent, JSON logs) against a real ZooKeeper and
// rolls out two builds of the example service: each serves /healthz and a /metrics that promtool
// accepts, and every log line is a JSON object with each key once and
// durations as strings ("4s"), never integer nanoseconds.
func TestDaemonsObservable(t *testing.T) {
	obstest.Promtool(t)
	_, zkf := zkWithBlob(t)
	logs := &lockedBuffer{}
	global := []string{zkf, "--log-format=json", "--log-level=debug"}
	addr := func() string { return fmt.Sprintf("127.0.0.1:%d", zktest.FreePort(t)) }
	coord, origin, agentHTTP := addr(), addr(), addr()
	store := t.TempDir()
	// The logs are checked however far the run got.
	defer func() { checkJSONLogs(t, logs.String()) }()

	daemon(t, logs, append(global, "coordinator", "--http="+coord, "--session-timeout=4s")...)
	daemon(t, logs, append(global, "origin", "--store="+store, "--listen=127.0.0.1:0", "--http="+origin, "--session-timeout=4s")...)
	daemon(t, logs, append(global, "agent", "--machine=m1", "--rack=r1", "--dc=dc1", "--service=web",
		"--data-dir="+t.TempDir(), "--peer-listen=127.0.0.1:0", "--http="+agentHTTP,
		fmt.Sprintf("--env=web:DCROLL_PORT=%d", zktest.FreePort(t)), "--stop-services-on-exit")...)
	for _, a := range []string{coord, origin, agentHTTP} {
		waitHealthy(t, "http://"+a)
	}

	// Two builds of the example service, published through the origin
	// (which verifies and seeds them, and logs how long that took), rolled
	// out one after the other: the agent fetches, starts, and upgrades.
	ids := map[string]string{}
	for _, v := range []string{"1.0.0", "2.0.0"} {
		out, errs, code := run(t, append(global, "blob", "publish", "--store="+store, "--origin=http://"+origin, examplebuild.ForTest(t, v, false))...)
		if code != 0 {
			t.Fatalf("blob publish: %s", errs)
		}
		ids[v] = strings.Fields(out)[0]
	}
	zktest.WaitFor(t, 30*time.Second, "the origin seeds the published blobs", func() (bool, error) {
		_, text := obstest.Get(t, "http://"+origin+"/metrics")
		return strings.Contains(text, "\ndcroll_origin_seeding_blobs 2\n"), nil
	})
	for _, v := range []string{"1.0.0", "2.0.0"} {
		sp := writeSpec(t, fmt.Sprintf(`name: v%s
services:
  web:
    version: "%s"
    artifact: %s
    run: ["./hello"]
    quorum: 0
    health: {http: "http://127.0.0.1:${DCROLL_PORT}/healthz", timeout: 1s, min_healthy: 300ms, deadline: 20s}
`, v, v, ids[v]))
		if _, errs, code := run(t, append(global, "push", sp)...); code != 0 {
			t.Fatalf("push %s: %s", v, errs)
		}
		zktest.WaitFor(t, 60*time.Second, "the agent runs "+v, func() (bool, error) {
			_, body := obstest.Get(t, "http://"+agentHTTP+"/status")
			var st struct {
				Services []struct {
					Version string `json:"version"`
					State   string `json:"state"`
					Healthy bool   `json:"healthy"`
				} `json:"services"`
			}
			if err := json.Unmarshal([]byte(body), &st); err != nil {
				return false, err
			}
			if len(st.Services) != 1 || st.Services[0].Version != v || !st.Services[0].Healthy || st.Services[0].State != "running" {
				return false, fmt.Errorf("%s", body)
			}
			return true, nil
		})
	}
	zktest.WaitFor(t, 30*time.Second, "the coordinator leads", func() (bool, error) {
		_, text := obstest.Get(t, "http://"+coord+"/metrics")
		return strings.Contains(text, "\ndcroll_coordinator_leader 1\n"), nil
	})

	// The agent observes the step's duration right after it publishes the
	// step's end: wait for the series rather than race it.
	zktest.WaitFor(t, 30*time.Second, "the agent's step histogram", func() (bool, error) {
		_, text := obstest.Get(t, "http://"+agentHTTP+"/metrics")
		return strings.Contains(text, "dcroll_agent_step_duration_seconds_count"), nil
	})
	obstest.Scrape(t, "http://"+coord, obstest.With(map[string]string{"dcroll_coordinator_leader": "gauge"}))
	obstest.Scrape(t, "http://"+origin, obstest.Common)
	obstest.Scrape(t, "http://"+agentHTTP, obstest.With(map[string]string{
		"dcroll_agent_step_duration_seconds": "histogram", "dcroll_agent_fetch_duration_seconds": "histogram",
		"dcroll_agent_fetch_bytes_total": "counter", "dcroll_agent_mlocked_bytes": "gauge",
	}), "dcroll_agent_locked_bytes")

}

// durationKey names log keys that hold durations.
var durationKey = regexp.MustCompile(`(?i)(timeout|_in|_after|after|elapsed|took|duration|interval|delay|backoff|grace|wait|age)$`)

// checkJSONLogs fails on a line that is not one JSON object, repeats a key
// (at any depth), or writes a duration as a number.
func checkJSONLogs(t *testing.T, logs string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(logs), "\n")
	if len(lines) < 5 {
		t.Fatalf("only %d log lines:\n%s", len(lines), logs)
	}
	sawTimeout := false
	for _, line := range lines {
		problems, err := lintRecord([]byte(line))
		if err != nil {
			t.Errorf("log line is not a JSON object (%v): %s", err, line)
			continue
		}
		for _, p := range problems {
			t.Errorf("%s: %s", p, line)
		}
		var rec map[string]any
		_ = json.Unmarshal([]byte(line), &rec)
		if rec["msg"] == "zookeeper session established" {
			sawTimeout = true
			if _, ok := rec["timeout"].(string); !ok {
				t.Errorf("session timeout logged as %T %v, want a string like 4s: %s", rec["timeout"], rec["timeout"], line)
			}
		}
	}
	if !sawTimeout {
		t.Errorf("no \"zookeeper session established\" record in:\n%s", logs)
	}
}

// lintRecord decodes one JSON object token by token and reports repeated
// keys and numeric durations.
func lintRecord(line []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	var problems []string
	var object func(prefix string) error
	var value func(key string) error
	value = func(key string) error {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{':
				return object(key + ".")
			case '[':
				for dec.More() {
					if err := value(key + "[]"); err != nil {
						return err
					}
				}
				_, err := dec.Token()
				return err
			}
		case json.Number:
			last := key[strings.LastIndex(key, ".")+1:]
			if durationKey.MatchString(last) {
				problems = append(problems, fmt.Sprintf("duration %q logged as the number %s", key, v))
			}
		}
		return nil
	}
	object = func(prefix string) error {
		seen := map[string]bool{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			k := tok.(string)
			if seen[k] {
				problems = append(problems, fmt.Sprintf("key %q repeated", prefix+k))
			}
			seen[k] = true
			if err := value(prefix + k); err != nil {
				return err
			}
		}
		_, err := dec.Token() // }
		return err
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("starts with %v", tok)
	}
	if err := object(""); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("more than one value")
	}
	return problems, nil
}
