package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Orphans are service processes nobody supervises: an agent killed with
// SIGKILL between starting a process and recording it in its PID file leaves
// one behind, still holding the service's port, so that every later start
// fails. They are found by their working directory, which the supervisor
// sets to the unpacked version directory under <data-dir>/<svc>/versions:
// no other process has it.

// findOrphans returns the processes whose working directory is under root,
// except the pids in keep.
func findOrphans(root string, keep map[int]bool) []int {
	root, err := filepath.EvalSymlinks(root)
	if err != nil {
		return nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || keep[pid] {
			continue
		}
		if parentOf(pid) == self {
			continue // ours: supervised, or a health check command
		}
		cwd, err := os.Readlink("/proc/" + e.Name() + "/cwd")
		if err != nil {
			continue
		}
		if cwd == root || strings.HasPrefix(cwd, root+string(filepath.Separator)) {
			out = append(out, pid)
		}
	}
	return out
}

// killOrphans stops the processes findOrphans reports: SIGTERM to each one's
// process group (the supervisor makes every service a group leader), then
// SIGKILL after grace. It returns the pids it stopped.
func killOrphans(ctx context.Context, root string, keep map[int]bool, grace time.Duration) []int {
	pids := findOrphans(root, keep)
	if len(pids) == 0 {
		return nil
	}
	for _, pid := range pids {
		signalTree(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for anyAlive(pids) && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			deadline = time.Now()
		case <-t.C:
		}
	}
	for _, pid := range pids {
		signalTree(pid, syscall.SIGKILL)
	}
	for i := 0; i < 100 && anyAlive(pids); i++ {
		<-t.C
	}
	return pids
}

// signalTree signals pid's process group if pid leads one, else pid.
func signalTree(pid int, sig syscall.Signal) {
	if pgid, err := syscall.Getpgid(pid); err == nil && pgid == pid {
		if err := syscall.Kill(-pid, sig); err == nil || !errors.Is(err, syscall.ESRCH) {
			return
		}
	}
	_ = syscall.Kill(pid, sig)
}

// parentOf returns pid's parent pid (0 if unknown).
func parentOf(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

func anyAlive(pids []int) bool {
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		// "pid (comm) S ...": a zombie has exited.
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X' {
			return true
		}
	}
	return false
}
