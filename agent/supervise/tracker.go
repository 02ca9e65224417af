package supervise

import (
	"fmt"
	"time"
)

// The health rule, written once. A Tracker is fed one observation per
// probe and says whether the service is healthy; it does no I/O and reads
// no clock (tracker_test.go checks it table by table). It drives a step's
// wait (the agent's step and WaitHealthy: healthy, or failed at the
// deadline or when the process dies) and the steady-state health loop
// (the agent's: health changes are published).
//
//   - Healthy once the probes have passed continuously for min_healthy
//     (from the first passing probe of the run; min_healthy 0: at once).
//   - A healthy service turns unhealthy after UnhealthyAfter consecutive
//     failed probes (one slow probe on a loaded machine is not an outage),
//     at once when its process is dead.
//   - A not-yet-healthy service: any failed probe restarts the run.
//   - A step's wait fails when the process dies, or at its deadline if it
//     is not healthy by then.
//   - Probe schedule (next): after a start, FirstProbe doubling up to the
//     interval until the first probe passes; then the interval, but no
//     later than when min_healthy falls due; never past the deadline.

// UnhealthyAfter is how many consecutive failed probes of a running
// process make a healthy service unhealthy (a dead process: at once).
const UnhealthyAfter = 2

// Tracker is the state of the health rule for one process.
type Tracker struct {
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

// NewTracker is the tracker of the steady state (no deadline).
func NewTracker(minHealthy, interval time.Duration) Tracker {
	return Tracker{minHealthy: minHealthy, interval: interval}
}

// NewStepTracker is the tracker of a step's wait: check must pass for
// minHealthy within wait from start.
func NewStepTracker(check string, minHealthy, interval, wait time.Duration, start time.Time) Tracker {
	return Tracker{minHealthy: minHealthy, interval: interval, check: check, start: start, wait: wait}
}

// Healthy is the current verdict.
func (t *Tracker) Healthy() bool { return t.healthy }

// Interval is the longest gap between probes.
func (t *Tracker) Interval() time.Duration { return t.interval }

// SetMinHealthy changes min_healthy (the running release changed).
func (t *Tracker) SetMinHealthy(d time.Duration) { t.minHealthy = d }

// Observe records one probe at now: err is its result (nil: passed);
// exited says the process is not running (then err is not looked at).
// It returns whether the service is healthy and whether that changed.
func (t *Tracker) Observe(err error, exited bool, now time.Time) (healthy, changed bool) {
	was := t.healthy
	switch {
	case exited:
		t.exited, t.healthy, t.passSince, t.fails = true, false, time.Time{}, 0
	case err != nil:
		t.exited, t.lastErr = false, err
		if t.fails++; t.healthy && t.fails < UnhealthyAfter {
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

// Reset forces the verdict: a step begins (unhealthy; the next probes
// come fast) or ends healthy (healthy since now).
func (t *Tracker) Reset(healthy bool, now time.Time) {
	t.healthy, t.fails, t.exited, t.lastErr, t.delay = healthy, 0, false, nil, 0
	t.passSince = time.Time{}
	if healthy {
		t.passSince = now
	}
}

// Failed is why a step's wait ends without the service healthy: its
// process died (wrapping ErrExited) or the deadline passed
// (ErrUnhealthy, naming the last failure); nil while it may
// still become healthy, and always in the steady state.
func (t *Tracker) Failed(now time.Time) error {
	switch {
	case t.healthy || t.wait <= 0:
		return nil
	case t.exited:
		return fmt.Errorf("%w before becoming healthy (%s)", ErrExited, t.check)
	case now.Before(t.start.Add(t.wait)):
		return nil
	}
	switch {
	case t.lastErr == nil:
		return fmt.Errorf("%w within %s: healthy for only %s of the required %s (%s)", ErrUnhealthy, t.wait, t.PassedFor(now), t.minHealthy, t.check)
	case t.passSince.IsZero():
		return fmt.Errorf("%w within %s: last check: %w", ErrUnhealthy, t.wait, t.lastErr)
	}
	return fmt.Errorf("%w within %s: healthy for only %s of the required %s; last failure: %w", ErrUnhealthy, t.wait, t.PassedFor(now), t.minHealthy, t.lastErr)
}

func (t *Tracker) PassedFor(now time.Time) time.Duration {
	if t.passSince.IsZero() {
		return 0
	}
	return now.Sub(t.passSince).Round(time.Millisecond)
}

// Next is the delay before the probe after the one observed at now.
func (t *Tracker) Next(now time.Time) time.Duration {
	d := t.interval
	switch {
	case t.exited:
		// Nothing to probe until the supervisor restarts it; then fast
		// again, as after a start.
		t.delay = 0
	case t.healthy:
	case t.passSince.IsZero():
		d = min(max(2*t.delay, FirstProbe), t.interval)
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
