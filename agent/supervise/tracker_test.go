package supervise

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// healthObs is one probe fed to a Tracker and what it must say then.
type healthObs struct {
	at    time.Duration // since the start
	probe string        // "ok", "fail: <error>", "dead" (process not running), "reset+"/"reset-" (a step's verdict)
	// want: "healthy" or "unhealthy", with "!" when it just changed; or
	// "failed: <substring>" (the step's wait ends with that error).
	want string
}

func ok(ms int, want string) healthObs { return healthObs{ms2d(ms), "ok", want} }
func fail(ms int, err, want string) healthObs {
	return healthObs{ms2d(ms), "fail: " + err, want}
}
func dead(ms int, want string) healthObs { return healthObs{ms2d(ms), "dead", want} }
func reset(ms int, h bool) healthObs {
	return healthObs{ms2d(ms), map[bool]string{true: "reset+", false: "reset-"}[h], ""}
}
func ms2d(ms int) time.Duration { return time.Duration(ms) * time.Millisecond }
func stepWait(minMs, deadlineMs int) func(time.Time) Tracker {
	return func(t0 time.Time) Tracker {
		return NewStepTracker("GET http://x/healthz", ms2d(minMs), 100*time.Millisecond, ms2d(deadlineMs), t0)
	}
}
func steady(minMs int) func(time.Time) Tracker {
	return func(time.Time) Tracker { return NewTracker(ms2d(minMs), time.Second) }
}

type healthRow struct {
	name    string
	tracker func(t0 time.Time) Tracker
	obs     []healthObs
}

// TestHealthTracker: the health rule, one sequence of probes per row, for
// a step's wait (min_healthy and a deadline) and the steady state.
func TestTracker(t *testing.T) {
	tests := []healthRow{
		// A step's wait.
		{"min_healthy 0: healthy at the first passing probe", stepWait(0, 1000), []healthObs{
			fail(0, "connection refused", "unhealthy"), ok(10, "healthy!")}},
		{"healthy once passing for min_healthy", stepWait(300, 1000), []healthObs{
			ok(0, "unhealthy"), ok(200, "unhealthy"), ok(300, "healthy!")}},
		{"a failed probe restarts the run (no tolerance before healthy)", stepWait(300, 1000), []healthObs{
			ok(0, "unhealthy"), ok(250, "unhealthy"), fail(280, "500 Internal Server Error", "unhealthy"),
			ok(300, "unhealthy"), ok(500, "unhealthy"), ok(600, "healthy!")}},
		{"deadline: fails naming the last failure", stepWait(300, 1000), []healthObs{
			fail(0, "connection refused", "unhealthy"), fail(500, "503 Service Unavailable", "unhealthy"),
			fail(1000, "503 Service Unavailable", "failed: not healthy within 1s: last check: 503 Service Unavailable")}},
		{"deadline: a passing run too short", stepWait(300, 1000), []healthObs{
			fail(0, "connection refused", "unhealthy"), ok(900, "unhealthy"),
			ok(1000, "failed: not healthy within 1s: healthy for only 100ms of the required 300ms; last failure: connection refused")}},
		{"deadline: min_healthy longer than the deadline", stepWait(2000, 1000), []healthObs{
			ok(0, "unhealthy"), ok(999, "unhealthy"),
			ok(1000, "failed: not healthy within 1s: healthy for only 1s of the required 2s (GET http://x/healthz)")}},
		{"deadline: healthy at the deadline wins", stepWait(300, 1000), []healthObs{
			ok(700, "unhealthy"), ok(1000, "healthy!")}},
		{"process dies: fails at once", stepWait(300, 60000), []healthObs{
			ok(0, "unhealthy"), dead(100, "failed: process exited before becoming healthy (GET http://x/healthz)")}},

		// The steady state.
		{"steady: healthy once passing for min_healthy", steady(300), []healthObs{
			ok(0, "unhealthy"), ok(299, "unhealthy"), ok(300, "healthy!"), ok(1300, "healthy")}},
		{"steady: one failed probe of a healthy service is tolerated", steady(300), []healthObs{
			ok(0, "unhealthy"), ok(300, "healthy!"), fail(1300, "timeout", "healthy"), ok(2300, "healthy"),
			fail(3300, "timeout", "healthy"), ok(4300, "healthy")}},
		{"steady: two consecutive failed probes make it unhealthy", steady(300), []healthObs{
			ok(0, "unhealthy"), ok(300, "healthy!"), fail(1300, "timeout", "healthy"), fail(2300, "timeout", "unhealthy!"),
			fail(3300, "timeout", "unhealthy")}},
		{"steady: a dead process is unhealthy at once", steady(300), []healthObs{
			ok(0, "unhealthy"), ok(300, "healthy!"), dead(400, "unhealthy!"), dead(1400, "unhealthy")}},
		{"steady: back after an outage needs min_healthy again", steady(300), []healthObs{
			ok(0, "unhealthy"), ok(300, "healthy!"), dead(400, "unhealthy!"), ok(1400, "unhealthy"),
			ok(1600, "unhealthy"), ok(1700, "healthy!")}},
		{"steady: never fails, however long unhealthy", steady(300), []healthObs{
			fail(0, "connection refused", "unhealthy"), fail(3600000, "connection refused", "unhealthy"), dead(7200000, "unhealthy")}},
		{"steady: a step's verdict is taken over", steady(300), []healthObs{
			reset(0, true), ok(100, "healthy"), reset(200, false), ok(300, "unhealthy"), ok(600, "healthy!")}},
		{"steady: healthy from a step, then one failure is tolerated", steady(300), []healthObs{
			reset(0, true), fail(1000, "timeout", "healthy"), fail(2000, "timeout", "unhealthy!")}},
	}
	t0 := time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)
	seen := map[string]bool{}
	for _, tt := range tests {
		if seen[tt.name] {
			t.Fatalf("duplicate row %q", tt.name)
		}
		seen[tt.name] = true
		t.Run(tt.name, func(t *testing.T) {
			tr := tt.tracker(t0)
			was := false
			for i, o := range tt.obs {
				now := t0.Add(o.at)
				var healthy, changed bool
				switch {
				case o.probe == "reset+" || o.probe == "reset-":
					tr.Reset(o.probe == "reset+", now)
					was = o.probe == "reset+"
					continue
				case o.probe == "ok":
					healthy, changed = tr.Observe(nil, false, now)
				case o.probe == "dead":
					healthy, changed = tr.Observe(nil, true, now)
				case strings.HasPrefix(o.probe, "fail: "):
					healthy, changed = tr.Observe(errors.New(strings.TrimPrefix(o.probe, "fail: ")), false, now)
				default:
					t.Fatalf("obs %d: unknown probe %q", i, o.probe)
				}
				if changed != (healthy != was) {
					t.Fatalf("obs %d (%s at %s): changed %v, but healthy went %v -> %v", i, o.probe, o.at, changed, was, healthy)
				}
				was = healthy
				failed := tr.Failed(now)
				got := map[bool]string{true: "healthy", false: "unhealthy"}[healthy]
				if changed {
					got += "!"
				}
				if failed != nil {
					got = "failed: " + failed.Error()
				}
				if want, ok := strings.CutPrefix(o.want, "failed: "); ok {
					if failed == nil || !strings.Contains(failed.Error(), want) {
						t.Fatalf("obs %d (%s at %s): %s, want failed: ...%s...", i, o.probe, o.at, got, want)
					}
					if !errors.Is(failed, ErrUnhealthy) && !errors.Is(failed, ErrExited) {
						t.Errorf("obs %d: %v wraps neither ErrUnhealthy nor ErrExited", i, failed)
					}
					if i != len(tt.obs)-1 {
						t.Fatalf("row goes on after the wait failed")
					}
					continue
				}
				if got != o.want {
					t.Fatalf("obs %d (%s at %s): %s, want %s", i, o.probe, o.at, got, o.want)
				}
			}
		})
	}
}

// TestHealthSchedule: after a start the probes come FirstProbe apart,
// doubling up to the interval until one passes; then no later than when
// min_healthy falls due; the interval once healthy; never past a step's
// deadline; a dead process is looked at every interval, and probed fast
// again once back.
func TestTrackerSchedule(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)
	const interval = 500 * time.Millisecond
	delays := func(tr *Tracker, n int, now time.Time) string {
		var out []string
		for range n {
			out = append(out, tr.Next(now).String())
		}
		return strings.Join(out, " ")
	}
	tests := []struct {
		name string
		feed func(tr *Tracker) time.Time // observations; returns now
		n    int
		want string
	}{
		{"after a start: doubling up to the interval", func(tr *Tracker) time.Time { return t0 }, 9,
			"2ms 4ms 8ms 16ms 32ms 64ms 128ms 256ms 500ms"},
		{"failing: the backoff goes on", func(tr *Tracker) time.Time {
			tr.Next(t0)
			tr.Observe(errors.New("refused"), false, t0.Add(10*time.Millisecond))
			return t0.Add(10 * time.Millisecond)
		}, 2, "4ms 8ms"},
		{"passing for 800ms of min_healthy 1s: in 200ms", func(tr *Tracker) time.Time {
			tr.Observe(nil, false, t0)
			tr.Observe(nil, false, t0.Add(800*time.Millisecond))
			return t0.Add(800 * time.Millisecond)
		}, 1, "200ms"},
		{"passing for 100ms of min_healthy 1s: the interval", func(tr *Tracker) time.Time {
			tr.Observe(nil, false, t0)
			return t0.Add(100 * time.Millisecond)
		}, 1, "500ms"},
		{"healthy: the interval", func(tr *Tracker) time.Time {
			tr.Reset(true, t0)
			return t0
		}, 2, "500ms 500ms"},
		{"dead: the interval, then fast again", func(tr *Tracker) time.Time {
			for range 8 {
				tr.Next(t0)
			}
			tr.Observe(nil, true, t0)
			if d := tr.Next(t0); d != interval {
				panic(fmt.Sprintf("dead: %s", d))
			}
			tr.Observe(errors.New("refused"), false, t0)
			return t0
		}, 3, "2ms 4ms 8ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTracker(time.Second, interval)
			now := tt.feed(&tr)
			if got := delays(&tr, tt.n, now); got != tt.want {
				t.Fatalf("delays %s, want %s", got, tt.want)
			}
		})
	}
	// A step's deadline in 30ms: probe then, whatever the schedule says.
	tr := NewStepTracker("x", time.Second, interval, time.Minute, t0)
	if d := tr.Next(t0.Add(time.Minute - 30*time.Millisecond)); d != FirstProbe {
		t.Fatalf("first probe near the deadline: %s", d)
	}
	for range 5 {
		tr.Next(t0)
	}
	if d := tr.Next(t0.Add(time.Minute - 30*time.Millisecond)); d != 30*time.Millisecond {
		t.Fatalf("near the deadline: %s, want 30ms", d)
	}

}
