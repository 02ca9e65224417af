package agent

import (
	"context"
	"time"

	"dcroll/agent/supervise"
	"dcroll/spec"
)

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
