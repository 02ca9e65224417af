package agent

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"dcroll/agent/supervise"
	"dcroll/spec"
	"dcroll/znodes"
)

// testWorker is a worker of service web with a real state directory and
// no ZooKeeper.
func testWorker(t *testing.T) *worker {
	t.Helper()
	cfg := Config{Machine: "m1", Services: []string{"web"}, DataDir: t.TempDir(), ZK: "unused:2181",
		HealthInterval: 5 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}
	cfg.applyDefaults()
	rt := &runtime{cfg: cfg, log: cfg.Logger, base: cfg.Logger, metrics: newMetrics()}
	w, err := newWorker(rt, "web")
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// startSleeper supervises a long sleep as the service's process.
func startSleeper(t *testing.T, w *worker) *supervise.Supervisor {
	t.Helper()
	dir := t.TempDir()
	sup, err := supervise.New(supervise.Config{Dir: dir, Run: []string{"/bin/sleep", "1000"}, Service: w.service,
		LogPath: filepath.Join(dir, "log"), Grace: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := sup.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = sup.Stop(ctx) // cleanup of a test process
	})
	return sup
}

// TestLocalSnapshotIsACopy: what snapshot returns is not changed by later
// commits, and changing it changes nothing.
func TestLocalSnapshotIsACopy(t *testing.T) {
	w := testWorker(t)
	r1 := &Release{Version: "1.0.0", Build: "b1", Dir: t.TempDir()}
	if err := w.commit(func(st *State) {
		st.Current = r1
		st.remember(r1)
		st.InFlight = &Step{To: "1.0.0"}
		st.PendingHalt = &PendingHalt{Entry: "deploy-1"}
	}); err != nil {
		t.Fatal(err)
	}
	s := w.snapshot()
	s.InFlight.Reverting = true
	s.PendingHalt.Reason = "changed"
	delete(s.Known, "1.0.0")
	again := w.snapshot()
	if again.InFlight.Reverting || again.PendingHalt.Reason != "" || again.Known["1.0.0"] != r1 {
		t.Fatalf("changing a snapshot changed the local state: %+v", again)
	}
	if err := w.commit(func(st *State) { st.InFlight.Reverting = true; st.PendingHalt = nil }); err != nil {
		t.Fatal(err)
	}
	if again.InFlight.Reverting || again.PendingHalt == nil {
		t.Fatalf("a commit changed an earlier snapshot: %+v", again)
	}
	l := w.local()
	if _, known := l.Known["1.0.0"]; l.Version != "1.0.0" || l.InFlight == nil || !l.InFlight.Reverting || !known {
		t.Fatalf("local() = %+v", l)
	}
}

// TestLocalCommitFailureChangesNothing: a state.json that cannot be
// written leaves the local state as it was (no step acts on it).
func TestLocalCommitFailureChangesNothing(t *testing.T) {
	w := testWorker(t)
	r1 := &Release{Version: "1.0.0", Build: "b1"}
	if err := w.commit(func(st *State) { st.Current = r1 }); err != nil {
		t.Fatal(err)
	}
	// state.json's directory replaced by a file: the temp file cannot be created.
	if err := os.RemoveAll(w.dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(w.dir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err := w.commit(func(st *State) {
		st.Current, st.Previous = &Release{Version: "2.0.0"}, st.Current
		st.InFlight = &Step{To: "2.0.0"}
	})
	if err == nil {
		t.Fatal("commit into a missing directory succeeded")
	}
	if s := w.snapshot(); s.Current != r1 || s.Previous != nil || s.InFlight != nil {
		t.Fatalf("failed commit changed the local state: %+v", s)
	}
}

// TestLocalSnapshotWhileHealthLoopRuns: the health loop changes the health
// verdict and phase while the run loop commits and readers (/status, the
// registration payload, read's local()) take snapshots; run with -race.
func TestLocalSnapshotWhileHealthLoopRuns(t *testing.T) {
	w := testWorker(t)
	sup := startSleeper(t, w)
	chk, err := sup.Checker(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &Release{Version: "1.0.0", Build: "b1", Dir: t.TempDir(), Health: &spec.Health{MinHealthy: spec.Duration{Duration: 20 * time.Millisecond}}}
	if err := w.commit(func(st *State) { st.Current = r; st.remember(r) }); err != nil {
		t.Fatal(err)
	}
	w.setRunning(sup, chk)
	w.setPhase(znodes.StateStarting, "boot")

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.healthLoop(ctx)
	}()
	stop := make(chan struct{})
	readers := 3
	wg.Add(readers)
	for range readers {
		go func() {
			defer wg.Done()
			// Paced, so that readers do not starve the health loop on a small machine.
			pace := time.NewTicker(100 * time.Microsecond)
			defer pace.Stop()
			for {
				select {
				case <-stop:
					return
				case <-pace.C:
				}
				s := w.snapshot()
				if s.Current == nil || !s.Running {
					t.Errorf("snapshot lost the running release: %+v", s)
					return
				}
				_ = w.local()
				if _, err := w.currentPayload(); err != nil {
					t.Errorf("currentPayload: %v", err)
					return
				}
			}
		}()
	}
	// The run loop meanwhile: commits, decisions, a step's verdicts.
	deadline := time.Now().Add(10 * time.Second)
	pace := time.NewTicker(time.Millisecond) // the writer's pace; the health loop probes every 5ms
	defer pace.Stop()
	for i := 0; ; i++ {
		if i%10 == 0 { // a commit fsyncs: not every round
			if err := w.commit(func(st *State) { st.Updated = time.Time{} }); err != nil {
				t.Fatal(err)
			}
		}
		w.record(Decision{Action: Wait, Reason: "quorum"})
		if i%50 == 0 && i <= 200 {
			w.setStepping(true)
			w.setHealthy(false)
			w.setStepping(false)
		}
		if s := w.snapshot(); s.Healthy && s.Phase == znodes.StateRunning && i > 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never healthy and running: %+v", w.snapshot())
		}
		<-pace.C
	}
	close(stop)
	cancel()
	wg.Wait()
}
