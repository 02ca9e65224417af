package faults

import (
	"fmt"
	"math"
	"testing"
	"time"

	"dcroll/coordinator"
	"dcroll/integration/checker"
	"dcroll/integration/zktest"
	"dcroll/znodes"
)

// TestETA: the night ETA the leading coordinator writes, read right after
// the first member step of a rollout of 24 member steps (12 machines in 3
// racks, store one at a time and web two at a time), is within ±30 % of
// when the rollout really finished. The step times behind it are the ones
// the coordinator measured in the rollout before (v1 -> v2), as they would
// be from the night before. The services' own event log judges that the
// rollouts were safe, as in the fault matrix.
func TestETA(t *testing.T) {
	if testing.Short() {
		t.Skip("ETA: ZooKeeper ensemble and 12 agent processes")
	}
	c := NewCluster(t)
	racks := map[string]string{}
	for i := 1; i <= 12; i++ {
		racks[fmt.Sprintf("n%02d", i)] = fmt.Sprintf("r%d", (i-1)/4+1)
	}
	s := c.NewScenario(t, "eta", Options{Racks: racks})
	defer func() {
		if t.Failed() {
			s.Dump(t)
		}
	}()
	s.Bootstrap()
	record := func() *znodes.Rollout {
		r, err := coordinator.ReadRollout(s.Conn)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	// The night before: v1 -> v2 measures the step times.
	began := time.Now()
	s.MustPush(s.Spec("v2", both("v2", "v2")), coordinator.PushOptions{})
	s.WaitCompleted(3 * Converge)
	first := time.Since(began)
	r := record()
	if r == nil || r.Steps["store"].Samples < 6 || r.Steps["web"].Samples < 3 {
		t.Fatalf("measured step times after the first rollout: %+v", r)
	}
	t.Logf("first rollout (v1 -> v2) took %s; measured per member step: store %.2fs (%d samples), web %.2fs (%d samples)",
		first.Round(time.Millisecond), r.Steps["store"].Seconds, r.Steps["store"].Samples, r.Steps["web"].Seconds, r.Steps["web"].Samples)

	// Tonight: v2 -> v4. Read the ETA once the first member is done.
	id := s.MustPush(s.Spec("v4", both("v4", "v4")), coordinator.PushOptions{})
	var eta, readAt time.Time
	zktest.WaitFor(t, Converge, "the night record's ETA after the first step", func() (bool, error) {
		r := record()
		if r == nil || r.HeadID != id || r.ETA.IsZero() || len(r.Services) == 0 {
			return false, fmt.Errorf("record: %+v", r)
		}
		for _, sv := range r.Services {
			if sv.Service == "store" && sv.Done >= 1 && sv.State != znodes.DeployDone {
				eta, readAt = r.ETA, time.Now()
				return true, nil
			}
		}
		return false, fmt.Errorf("store not started: %+v", r.Services)
	})
	s.WaitCompleted(3 * Converge)
	doneAt := time.Now()
	predicted, actual := eta.Sub(readAt), doneAt.Sub(readAt)
	errPct := 100 * math.Abs(predicted.Seconds()-actual.Seconds()) / actual.Seconds()
	t.Logf("ETA read after the first step: predicted %s to go, took %s (error %.0f%%)",
		predicted.Round(100*time.Millisecond), actual.Round(100*time.Millisecond), errPct)
	if errPct > 30 {
		t.Errorf("ETA off by %.0f%% (predicted %s, actual %s): want within 30%%", errPct, predicted, actual)
	}
	zktest.WaitFor(t, 10*time.Second, "the night record to say done", func() (bool, error) {
		r := record()
		if r.State != znodes.NightDone || !r.ETA.IsZero() || r.Remaining != 0 {
			return false, fmt.Errorf("record after the rollout: state %s ETA %v remaining %d", r.State, r.ETA, r.Remaining)
		}
		return true, nil
	})

	final := map[string]map[string]string{"store": {}, "web": {}}
	for m := range racks {
		final["store"][m], final["web"][m] = Version("v4"), Version("v4")
	}
	if rep := s.Judge(checker.Expect{Since: "bootstrapped", Final: final}); !rep.OK() {
		t.Errorf("checker: %d violations, first: %s", len(rep.Violations), rep.Violations[0])
	}
}
