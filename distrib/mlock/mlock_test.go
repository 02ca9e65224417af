package mlock

import (
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// writeFile writes size random bytes, fsyncs and evicts the file from the
// page cache (drop_caches when writable, and POSIX_FADV_DONTNEED always).
func writeEvicted(t *testing.T, path string, size int) {
	t.Helper()
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	evict(t, path)
}

func evict(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("1\n"), 0); err != nil {
		t.Logf("drop_caches not writable (%v); relying on POSIX_FADV_DONTNEED", err)
	}
}

func TestLockedFileStaysResident(t *testing.T) {
	dir := t.TempDir()
	locked := filepath.Join(dir, "locked")
	unlocked := filepath.Join(dir, "unlocked")
	const size = 4 << 20
	writeEvicted(t, locked, size)
	writeEvicted(t, unlocked, size)

	l := NewLocker(64 << 20)
	r, err := l.Lock(locked)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Unlock()
	if got := l.Locked(); got != size {
		t.Fatalf("Locked() = %d, want %d", got, size)
	}
	// Try to evict both again: the locked pages must survive.
	evict(t, locked)
	evict(t, unlocked)

	res, total, err := Resident(locked)
	if err != nil {
		t.Fatal(err)
	}
	if res != total || total != size {
		t.Fatalf("locked file: %d of %d bytes resident, want all %d", res, total, size)
	}
	res, total, err = Resident(unlocked)
	if err != nil {
		t.Fatal(err)
	}
	if res > total/2 {
		t.Fatalf("unlocked file: %d of %d bytes resident after eviction, want (almost) none", res, total)
	}
	if err := r.Unlock(); err != nil {
		t.Fatal(err)
	}
	if got := l.Locked(); got != 0 {
		t.Fatalf("Locked() after Unlock = %d, want 0", got)
	}
	if err := r.Unlock(); err != nil {
		t.Fatalf("second Unlock: %v", err)
	}
}

func TestBudgetRefusal(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "blob")
	writeEvicted(t, p, 2<<20)
	l := NewLocker(3 << 20)
	r, err := l.Lock(p)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Unlock()
	for _, tc := range []struct {
		name string
		size int64
		ok   bool
	}{
		{"fits", 1 << 20, true},
		{"over", 1<<20 + 1, false},
		{"huge", 1 << 40, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := l.Check(tc.size)
			if tc.ok != (err == nil) {
				t.Fatalf("Check(%d) = %v, want ok=%v", tc.size, err, tc.ok)
			}
			if err != nil && (!errors.Is(err, ErrBudget) || strings.Contains(err.Error(), "\n")) {
				t.Fatalf("want one-line ErrBudget, got %q", err)
			}
		})
	}
	if _, err := l.Lock(p); !errors.Is(err, ErrBudget) {
		t.Fatalf("second Lock over budget: %v, want ErrBudget", err)
	}
}

const childEnv = "DCROLL_MLOCK_RLIMIT_CHILD"

// TestRlimitRefusal re-executes the test binary so that lowering
// RLIMIT_MEMLOCK and dropping CAP_IPC_LOCK do not affect this process.
func TestRlimitRefusal(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		rlimitChild(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestRlimitRefusal$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+t.TempDir())
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", out)
	if err != nil {
		t.Fatalf("child failed: %v", err)
	}
	if !strings.Contains(string(out), "CHILD-OK") {
		t.Fatal("child did not run its checks")
	}
}

func rlimitChild(t *testing.T) {
	// Capabilities are per thread: pin this goroutine, drop CAP_IPC_LOCK
	// from the thread's effective set, and do every check from it.
	runtime.LockOSThread()
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		t.Fatal(err)
	}
	data[0].Effective &^= 1 << unix.CAP_IPC_LOCK
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		t.Fatal(err)
	}
	if HasCapIPCLock() {
		t.Fatal("CAP_IPC_LOCK still effective")
	}
	const limit = 256 << 10
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: limit, Max: limit}); err != nil {
		t.Fatal(err)
	}
	l := NewLocker(0)
	if err := l.Check(64 << 10); err != nil {
		t.Fatalf("Check below the limit: %v", err)
	}
	err := l.Check(1 << 20)
	if !errors.Is(err, ErrLimit) {
		t.Fatalf("Check above the limit = %v, want ErrLimit", err)
	}
	msg := err.Error()
	for _, want := range []string{"256.0 KiB", "1.0 MiB", "LimitMEMLOCK=infinity", "limits.d/dcroll.conf", "CAP_IPC_LOCK"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("message %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Fatalf("message is not one line: %q", msg)
	}
	p := filepath.Join(os.Getenv(childEnv), "blob")
	writeEvicted(t, p, 1<<20)
	if _, err := l.Lock(p); !errors.Is(err, ErrLimit) {
		t.Fatalf("Lock above the limit = %v, want ErrLimit", err)
	}
	t.Log("CHILD-OK")
}
