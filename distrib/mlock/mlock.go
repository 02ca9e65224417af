package mlock

import (
	"dcroll/internal/units"
	"errors"
	"fmt"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Fix is the remedy printed with every refusal.
const Fix = `raise it: systemd LimitMEMLOCK=infinity, /etc/security/limits.d/dcroll.conf "dcroll - memlock unlimited", or grant CAP_IPC_LOCK`

// ErrBudget is wrapped by refusals caused by the dcroll budget.
var ErrBudget = errors.New("mlock budget exceeded")

// ErrLimit is wrapped by refusals caused by RLIMIT_MEMLOCK.
var ErrLimit = errors.New("RLIMIT_MEMLOCK too low")

// Locker accounts for locked memory against a budget. Safe for concurrent use.
type Locker struct {
	budget int64 // <= 0: no dcroll budget (only the rlimit applies)

	mu     sync.Mutex
	locked int64
}

// NewLocker returns a Locker allowing at most budget bytes locked
// (0 or negative: no budget of its own, only RLIMIT_MEMLOCK applies).
func NewLocker(budget int64) *Locker { return &Locker{budget: budget} }

// Locked returns the bytes currently locked through this Locker.
func (l *Locker) Locked() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.locked
}

// Budget returns the configured budget (0: none).
func (l *Locker) Budget() int64 { return l.budget }

// Check reports whether size more bytes could be locked now: it checks the
// budget and, unless the process holds CAP_IPC_LOCK, RLIMIT_MEMLOCK. Call it
// before downloading a blob that will be locked.
func (l *Locker) Check(size int64) error {
	l.mu.Lock()
	locked := l.locked
	l.mu.Unlock()
	need := locked + size
	if l.budget > 0 && need > l.budget {
		return fmt.Errorf("%w: need %s locked (%s held + %s), budget is %s: raise the agent's mlock budget or lock fewer blobs",
			ErrBudget, units.HumanBytes(need), units.HumanBytes(locked), units.HumanBytes(size), units.HumanBytes(l.budget))
	}
	if HasCapIPCLock() {
		return nil
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl); err != nil {
		return fmt.Errorf("mlock: read RLIMIT_MEMLOCK: %w", err)
	}
	if rl.Cur == unix.RLIM_INFINITY {
		return nil
	}
	if uint64(need) > rl.Cur {
		return fmt.Errorf("%w: RLIMIT_MEMLOCK is %s, need %s to mlock the blob; %s", ErrLimit, units.HumanBytes(int64(rl.Cur)), units.HumanBytes(need), Fix)
	}
	return nil
}

// HasCapIPCLock reports whether the calling thread has CAP_IPC_LOCK in its
// effective set (then RLIMIT_MEMLOCK does not apply).
func HasCapIPCLock() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[unix.CAP_IPC_LOCK/32].Effective&(1<<(unix.CAP_IPC_LOCK%32)) != 0
}

// Region is a locked, read-only mapping of one file.
type Region struct {
	l    *Locker
	path string
	data []byte
	once sync.Once
}

// Path is the locked file.
func (r *Region) Path() string { return r.path }

// Size is the number of bytes locked.
func (r *Region) Size() int64 { return int64(len(r.data)) }

// Lock maps path read-only and shared and locks it into memory. It returns
// once every page is resident. An empty file yields an empty Region.
func (l *Locker) Lock(path string) (*Region, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("mlock %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("mlock %s: %w", path, err)
	}
	size := fi.Size()
	if err := l.Check(size); err != nil {
		return nil, fmt.Errorf("mlock %s: %w", path, err)
	}
	r := &Region{l: l, path: path}
	if size == 0 {
		return r, nil
	}
	if int64(int(size)) != size {
		return nil, fmt.Errorf("mlock %s: %d bytes does not fit the address space", path, size)
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mlock %s: mmap: %w", path, err)
	}
	if err := unix.Mlock(data); err != nil {
		_ = unix.Munmap(data)
		if errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EAGAIN) {
			var rl unix.Rlimit
			_ = unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl)
			return nil, fmt.Errorf("mlock %s: %w (%v): RLIMIT_MEMLOCK is %s, need %s; %s", path, ErrLimit, err, units.HumanBytes(int64(rl.Cur)), units.HumanBytes(size), Fix)
		}
		return nil, fmt.Errorf("mlock %s: %w", path, err)
	}
	r.data = data
	l.mu.Lock()
	l.locked += size
	l.mu.Unlock()
	return r, nil
}

// Unlock unlocks and unmaps the region. Safe to call more than once.
func (r *Region) Unlock() error {
	var err error
	r.once.Do(func() {
		if r.data == nil {
			return
		}
		if e := unix.Munlock(r.data); e != nil {
			err = fmt.Errorf("munlock %s: %w", r.path, e)
		}
		if e := unix.Munmap(r.data); e != nil && err == nil {
			err = fmt.Errorf("munmap %s: %w", r.path, e)
		}
		r.l.mu.Lock()
		r.l.locked -= int64(len(r.data))
		r.l.mu.Unlock()
		r.data = nil
	})
	return err
}

// Resident reports how many bytes of path are in the page cache, using
// mincore(2) on a fresh read-only mapping (which faults nothing in).
func Resident(path string) (resident, total int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, fmt.Errorf("resident %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, fmt.Errorf("resident %s: %w", path, err)
	}
	total = fi.Size()
	if total == 0 {
		return 0, 0, nil
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(total), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return 0, total, fmt.Errorf("resident %s: mmap: %w", path, err)
	}
	defer unix.Munmap(data)
	page := int64(os.Getpagesize())
	pages := (total + page - 1) / page
	vec := make([]byte, pages)
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&data[0])), uintptr(len(data)), uintptr(unsafe.Pointer(&vec[0])))
	if errno != 0 {
		return 0, total, fmt.Errorf("resident %s: mincore: %w", path, errno)
	}
	for i, v := range vec {
		if v&1 == 0 {
			continue
		}
		if int64(i) == pages-1 {
			resident += total - int64(i)*page
		} else {
			resident += page
		}
	}
	return resident, total, nil
}
