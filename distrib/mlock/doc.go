// Package mlock keeps blob files resident in memory, the way `vmtouch -l`
// does: map the file read-only and shared, mlock(2) the mapping, hold it
// until Unlock. Because the mapping is shared with the page cache, the
// service that reads the blob (by read(2) or its own mmap) hits the locked
// pages and the kernel never evicts them while a new blob is downloaded.
//
// mlock is limited by RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK.
// Check verifies both the dcroll budget and that limit before anything is
// downloaded, so a rollout fails early with a one-line fix instead of
// after a multi-gigabyte transfer.
//
//	l := mlock.NewLocker(64 << 30)
//	if err := l.Check(size); err != nil { refuse }
//	r, err := l.Lock(path)   // pages are resident when it returns
//	defer r.Unlock()
package mlock
