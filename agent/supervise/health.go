package supervise

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"dcroll/spec"
)

// Errors WaitHealthy wraps, for callers that branch.
var (
	// ErrUnhealthy: the deadline passed before the checks passed for long enough.
	ErrUnhealthy = errors.New("not healthy")
	// ErrExited: the process exited while being checked.
	ErrExited = errors.New("process exited")
)

// Checker probes a service once.
type Checker interface {
	// Check returns nil if the service is healthy now. It bounds itself by
	// the check's timeout.
	Check(ctx context.Context) error
	// String describes the check for logs ("GET http://...").
	String() string
}

// NewChecker builds the checker of h: an HTTP GET answered 2xx, a TCP
// connect, or a command exiting 0 (run in dir, with env, in its own process
// group killed at the timeout). ${VAR} in the URL, address and command is
// expanded from env (see Expand). Nil h gives a checker that always passes:
// the process running counts as healthy.
func NewChecker(h *spec.Health, dir string, env []string) (Checker, error) {
	if h == nil {
		return Running{}, nil
	}
	timeout := h.Timeout.Duration
	if timeout <= 0 {
		timeout = spec.DefaultHealthTimeout
	}
	switch {
	case h.HTTP != "":
		u, err := Expand(h.HTTP, env)
		if err != nil {
			return nil, fmt.Errorf("health.http: %w", err)
		}
		return &HTTPChecker{URL: u, Timeout: timeout}, nil
	case h.TCP != "":
		a, err := Expand(h.TCP, env)
		if err != nil {
			return nil, fmt.Errorf("health.tcp: %w", err)
		}
		return &TCPChecker{Addr: a, Timeout: timeout}, nil
	case len(h.Command) > 0:
		args, err := ExpandAll("health.command", h.Command, env)
		if err != nil {
			return nil, err
		}
		exe, err := resolveCommand(dir, args[0])
		if err != nil {
			return nil, fmt.Errorf("health.command: %w", err)
		}
		args[0] = exe
		return &CommandChecker{Args: args, Dir: dir, Env: env, Timeout: timeout}, nil
	}
	return Running{}, nil
}

// Running is the checker of a service without a health check: always
// healthy (WaitHealthy still fails when the process exits).
type Running struct{}

func (Running) Check(context.Context) error { return nil }
func (Running) String() string              { return "process running" }

// HTTPChecker: GET URL answers 2xx within Timeout.
type HTTPChecker struct {
	URL     string
	Timeout time.Duration
}

func (c *HTTPChecker) String() string { return "GET " + c.URL }

func (c *HTTPChecker) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", c.URL, err)
	}
	// A fresh connection per probe: nothing lingers to a stopped process.
	tr := &http.Transport{DisableKeepAlives: true, Proxy: nil}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", c.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET %s: %s: %s", c.URL, resp.Status, oneLine(body))
	}
	return nil
}

// TCPChecker: Addr accepts a connection within Timeout.
type TCPChecker struct {
	Addr    string
	Timeout time.Duration
}

func (c *TCPChecker) String() string { return "tcp " + c.Addr }

func (c *TCPChecker) Check(ctx context.Context) error {
	d := net.Dialer{Timeout: c.Timeout}
	conn, err := d.DialContext(ctx, "tcp", c.Addr)
	if err != nil {
		return fmt.Errorf("tcp %s: %w", c.Addr, err)
	}
	return conn.Close()
}

// CommandChecker: Args exits 0 within Timeout.
type CommandChecker struct {
	Args    []string
	Dir     string
	Env     []string
	Timeout time.Duration
}

func (c *CommandChecker) String() string { return "command " + strings.Join(c.Args, " ") }

func (c *CommandChecker) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Args[0], c.Args[1:]...)
	cmd.Dir, cmd.Env = c.Dir, c.Env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil && err != nil {
		return fmt.Errorf("%s: no answer within %s", c, c.Timeout)
	}
	if err != nil {
		if len(out) > 512 {
			out = out[len(out)-512:]
		}
		return fmt.Errorf("%s: %w: %s", c, err, oneLine(out))
	}
	return nil
}

func oneLine(b []byte) string {
	return strings.Join(strings.Fields(string(b)), " ")
}

// WaitHealthy probes c until it has passed continuously for minHealthy
// (nil), deadline has passed since the call (an ErrUnhealthy error naming
// the last failure), exited is closed (an ErrExited error, at once), or
// ctx is done: the Tracker's rule for a step, on the wall clock, probing
// at most interval apart (FirstProbe doubling after the call). exited is
// typically Supervisor.Exited(); nil means not watched.
func WaitHealthy(ctx context.Context, c Checker, exited <-chan struct{}, minHealthy, deadline, interval time.Duration) error {
	if interval <= 0 {
		interval = 500 * time.Millisecond
	}
	t := NewStepTracker(c.String(), minHealthy, interval, deadline, time.Now())
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for {
		err := c.Check(ctx)
		gone := isClosed(exited)
		if ctx.Err() != nil {
			return fmt.Errorf("wait healthy: %w", ctx.Err())
		}
		now := time.Now()
		if healthy, _ := t.Observe(err, gone, now); healthy {
			return nil
		}
		if err := t.Failed(now); err != nil {
			return err
		}
		timer.Reset(t.Next(now))
		select {
		case <-timer.C:
		case <-exited:
			return fmt.Errorf("%w before becoming healthy (%s)", ErrExited, c)
		case <-ctx.Done():
			return fmt.Errorf("wait healthy: %w", ctx.Err())
		}
	}
}

// FirstProbe is the first delay between health probes after a start; it
// doubles up to the probe interval while the service is not healthy yet,
// so a service healthy 50ms after its start is seen healthy about 50ms
// after it (plus min_healthy), not one probe interval later.
const FirstProbe = 2 * time.Millisecond

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
