package agent

import (
	"context"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestKillOrphans: a process left in a version directory by a dead agent
// (not our child) is found by its working directory and stopped; processes
// elsewhere are left alone.
func TestKillOrphans(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "2.0.0-abc")
	other := t.TempDir()
	start := func(cwd string) int {
		// The shell exits at once: sleep is reparented, like a dead agent's service.
		out, err := exec.Command("sh", "-c", "mkdir -p '"+cwd+"' && cd '"+cwd+"' && setsid sleep 60 >/dev/null 2>&1 & echo $!").Output()
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { signalTree(pid, 9) })
		return pid
	}
	orphan, bystander := start(dir), start(other)
	// The shell may not have reached exec yet; wait for the cwd to show.
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !slices.Contains(findOrphans(root, nil), orphan) {
		if time.Now().After(deadline) {
			t.Fatalf("orphan %d in %s not found: %v", orphan, dir, findOrphans(root, nil))
		}
		<-tick.C
	}
	if got := findOrphans(root, map[int]bool{orphan: true}); slices.Contains(got, orphan) {
		t.Errorf("kept pid reported: %v", got)
	}
	got := killOrphans(context.Background(), root, nil, time.Second)
	if !slices.Contains(got, orphan) || slices.Contains(got, bystander) {
		t.Errorf("killOrphans = %v, want %d and not %d", got, orphan, bystander)
	}
	if anyAlive([]int{orphan}) {
		t.Errorf("orphan %d still alive", orphan)
	}
	if !anyAlive([]int{bystander}) {
		t.Errorf("bystander %d was killed", bystander)
	}
}
