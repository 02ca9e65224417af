package agent

import (
	"context"
	"fmt"
	"time"

	"dcroll/agent/supervise"
	"dcroll/spec"
)

// The health rule, written once. A healthTracker is fed one observation
// per probe and says whether the service is healthy; it does no I/O and
// reads no clock (health_test.go checks it table by table). Two drivers
// use it: a step's wait (worker.waitHealthy: healthy, or failed at the
// deadline or when the process dies) and the steady-state health loop
// (worker.healthLoop: healthy changes are published).
//
//   - Healthy once the probes have passed continuously for min_healthy
//     (from the first passing probe of the run; min_healthy 0: at once).
//   - A healthy service turns unhealthy after unhealthyAfter consecutive
//     failed probes (one slow probe on a loaded machine is not an outage),
//     at once when its process is dead.
//   - A not-yet-healthy service: any failed probe restarts the run.
//   - A step's wait fails when the process dies, or at its deadline if it
//     is not healthy by then.
//   - Probe schedule (next): after a start, FirstProbe doubling up to the
//     interval until the first probe passes; then the interval, but no
//     later than when min_healthy falls due; never past the deadline.

// unhealthyAfter is how many consecutive failed probes of a running
// process make a healthy service unhealthy (a dead process: at once).
const unhealthyAfter = 2

// healthTracker is the state of the health rule for one process.
type healthTracker struct {
	minHealthy time.Duration
	interval   time.Duration // the longest gap between probes
	check      string        // what is probed, for reasons ("GET http://...")
	// start and wait: a step's wait began at start and fails at
	// start+wait; wait 0: no deadline (the steady state).
	start time.Time
	wait  time.Duration

	healthy   bool
	passSince time.Time // first probe of the current passing run; zero: none
	fails     int       // consecutive failed probes
	exited    bool      // the process was dead at the last observation
	lastErr   error     // the last failed probe
	delay     time.Duration
}

// newHealthTracker is the tracker of the steady state (no deadline).
func newHealthTracker(minHealthy, interval time.Duration) healthTracker {
	return healthTracker{minHealthy: minHealthy, interval: interval}
}

// newStepTracker is the tracker of a step's wait: check must pass for
// minHealthy within wait from start.
func newStepTracker(check string, minHealthy, interval, wait time.Duration, start time.Time) healthTracker {
	return healthTracker{minHealthy: minHealthy, interval: interval, check: check, start: start, wait: wait}
}

// observe records one probe at now: err is its result (nil: passed);
// exited says the process is not running (then err is not looked at).
// It returns whether the service is healthy and whether that changed.
func (t *healthTracker) observe(err error, exited bool, now time.Time) (healthy, changed bool) {
	was := t.healthy
	switch {
	case exited:
		t.exited, t.healthy, t.passSince, t.fails = true, false, time.Time{}, 0
	case err != nil:
		t.exited, t.lastErr = false, err
		if t.fails++; t.healthy && t.fails < unhealthyAfter {
			break // tolerated
		}
		t.healthy, t.passSince = false, time.Time{}
	default:
		t.exited, t.fails = false, 0
		if t.healthy {
			break
		}
		if t.passSince.IsZero() {
			t.passSince = now
		}
		if now.Sub(t.passSince) >= t.minHealthy {
			t.healthy = true
		}
	}
	return t.healthy, t.healthy != was
}

// reset forces the verdict: a step begins (unhealthy; the next probes
// come fast) or ends healthy (healthy since now).
func (t *healthTracker) reset(healthy bool, now time.Time) {
	t.healthy, t.fails, t.exited, t.lastErr, t.delay = healthy, 0, false, nil, 0
	t.passSince = time.Time{}
	if healthy {
		t.passSince = now
	}
}

// failed is why a step's wait ends without the service healthy: its
// process died (wrapping supervise.ErrExited) or the deadline passed
// (supervise.ErrUnhealthy, naming the last failure); nil while it may
// still become healthy, and always in the steady state.
func (t *healthTracker) failed(now time.Time) error {
	switch {
	case t.healthy || t.wait <= 0:
		return nil
	case t.exited:
		return fmt.Errorf("%w before becoming healthy (%s)", supervise.ErrExited, t.check)
	case now.Before(t.start.Add(t.wait)):
		return nil
	}
	switch {
	case t.lastErr == nil:
		return fmt.Errorf("%w within %s: healthy for only %s of the required %s (%s)", supervise.ErrUnhealthy, t.wait, t.passedFor(now), t.minHealthy, t.check)
	case t.passSince.IsZero():
		return fmt.Errorf("%w within %s: last check: %w", supervise.ErrUnhealthy, t.wait, t.lastErr)
	}
	return fmt.Errorf("%w within %s: healthy for only %s of the required %s; last failure: %w", supervise.ErrUnhealthy, t.wait, t.passedFor(now), t.minHealthy, t.lastErr)
}

func (t *healthTracker) passedFor(now time.Time) time.Duration {
	if t.passSince.IsZero() {
		return 0
	}
	return now.Sub(t.passSince).Round(time.Millisecond)
}

// next is the delay before the probe after the one observed at now.
func (t *healthTracker) next(now time.Time) time.Duration {
	d := t.interval
	switch {
	case t.exited:
		// Nothing to probe until the supervisor restarts it; then fast
		// again, as after a start.
		t.delay = 0
	case t.healthy:
	case t.passSince.IsZero():
		d = min(max(2*t.delay, DefaultFirstProbe), t.interval)
		t.delay = d
	default:
		if left := t.passSince.Add(t.minHealthy).Sub(now); left > 0 {
			d = min(d, left)
		}
	}
	if t.wait > 0 {
		if left := t.start.Add(t.wait).Sub(now); left > 0 {
			d = min(d, left)
		}
	}
	return max(d, time.Millisecond)
}

// healthTimes are a release's min_healthy and deadline (spec defaults).
func healthTimes(h *spec.Health) (minHealthy, deadline time.Duration) {
	minHealthy, deadline = spec.DefaultHealthMinHealthy, spec.DefaultHealthDeadline
	if h != nil {
		if h.MinHealthy.Duration > 0 {
			minHealthy = h.MinHealthy.Duration
		}
		if h.Deadline.Duration > 0 {
			deadline = h.Deadline.Duration
		}
	}
	return minHealthy, deadline
}

// stepProbeInterval is the longest gap between the probes of a step's
// wait: a quarter of min_healthy, within [DefaultStepProbeMin,
// DefaultStepProbeMax].
func stepProbeInterval(minHealthy time.Duration) time.Duration {
	return min(max(minHealthy/4, DefaultStepProbeMin), DefaultStepProbeMax)
}

// probe runs one check, bounded by DefaultProbeTimeout (each checker
// also bounds itself by its own timeout).
func probe(ctx context.Context, chk supervise.Checker) error {
	if chk == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, DefaultProbeTimeout)
	defer cancel()
	return chk.Check(ctx)
}

// sleep waits d on the agent's clock; false when ctx ended or stop closed
// first.
func (rt *runtime) sleep(ctx context.Context, d time.Duration, stop <-chan struct{}) bool {
	fired := make(chan struct{})
	t := rt.cfg.Clock.AfterFunc(d, func() { close(fired) })
	defer t.Stop()
	select {
	case <-fired:
		return true
	case <-stop:
	case <-ctx.Done():
	}
	return false
}

// isClosed says whether ch (nil: never) is closed.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
