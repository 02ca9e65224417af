package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"dcroll/distrib"
	"dcroll/distrib/mlock"
	"dcroll/znodes"
)

// blobLocker is implemented by fetchers that keep blobs locked in memory
// (distrib.Node).
type blobLocker interface {
	Lock(id string) (*mlock.Region, error)
	Unlock(id string) error
}

// fetchLocker is implemented by fetchers that check the lock budget before
// downloading and lock the blob once fetched (distrib.Node).
type fetchLocker interface {
	FetchLocked(ctx context.Context, id string, onProgress func(znodes.BlobProgress)) (string, *mlock.Region, error)
}

// blobKeeper is implemented by fetchers that garbage-collect their store
// (distrib.Node): ids are kept and seeded, everything else removed.
type blobKeeper interface {
	Keep(ids []string, previous []string) error
}

var (
	_ Fetcher     = (*distrib.Node)(nil)
	_ blobLocker  = (*distrib.Node)(nil)
	_ fetchLocker = (*distrib.Node)(nil)
	_ blobKeeper  = (*distrib.Node)(nil)
)

// DirFetcher serves blobs from a directory of files named by their sha256
// hex digest (tests, air-gapped machines). It verifies nothing beyond the
// name: use it only with trusted directories.
type DirFetcher struct{ Dir string }

// Fetch returns Dir/<hex> if it exists.
func (f DirFetcher) Fetch(ctx context.Context, id string, onProgress func(znodes.BlobProgress)) (string, error) {
	h, err := distrib.ParseID(id)
	if err != nil {
		return "", err
	}
	p := filepath.Join(f.Dir, h)
	fi, err := os.Stat(p)
	if err != nil {
		return "", fmt.Errorf("fetch %s: %w", id, err)
	}
	if onProgress != nil {
		onProgress(znodes.BlobProgress{Blob: id, Bytes: fi.Size(), Total: fi.Size(), Source: "local", Done: true})
	}
	return p, nil
}
