package distrib

import (
	"context"
	"crypto/sha256"
	"dcroll/internal/units"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// IDPrefix starts every blob id: "sha256:" + 64 lowercase hex digits.
const IDPrefix = "sha256:"

// ErrNotFound is wrapped when a blob is not in the store or not published.
var ErrNotFound = errors.New("blob not found")

// ParseID checks a blob id and returns its hex digest. A bare 64-digit hex
// is accepted too.
func ParseID(id string) (string, error) {
	h := strings.TrimPrefix(id, IDPrefix)
	if len(h) != 64 {
		return "", fmt.Errorf("invalid blob id %q: want sha256:<64 lowercase hex digits>", id)
	}
	for _, c := range h {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", fmt.Errorf("invalid blob id %q: want sha256:<64 lowercase hex digits>", id)
		}
	}
	return h, nil
}

// IDOf returns the blob id of a hex digest.
func IDOf(hexDigest string) string { return IDPrefix + hexDigest }

// Store is a content-addressed directory:
//
//	<dir>/blobs/<sha256hex>         complete, verified blobs (read-only files)
//	<dir>/partial/<infohash>/<hex>  downloads in progress (mmap storage)
//	<dir>/tmp/                      imports and HTTP downloads before their rename
//
// Paths are built from validated hex digests only, never from torrent
// metainfo names.
type Store struct {
	dir string
}

// OpenStore creates the layout under dir if needed.
func OpenStore(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("open store: empty directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	s := &Store{dir: abs}
	for _, d := range []string{s.blobsDir(), s.partialRoot(), s.tmpDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("open store %s: %w", dir, err)
		}
	}
	return s, nil
}

// Dir is the store's root directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) blobsDir() string    { return filepath.Join(s.dir, "blobs") }
func (s *Store) partialRoot() string { return filepath.Join(s.dir, "partial") }
func (s *Store) tmpDir() string      { return filepath.Join(s.dir, "tmp") }

// partialDir is the mmap storage directory of one download.
func (s *Store) partialDir(infoHashHex string) string {
	return filepath.Join(s.partialRoot(), infoHashHex)
}

// Path returns where the complete blob id lives (whether or not it exists).
func (s *Store) Path(id string) (string, error) {
	h, err := ParseID(id)
	if err != nil {
		return "", err
	}
	return filepath.Join(s.blobsDir(), h), nil
}

// Has reports whether the complete blob is in the store.
func (s *Store) Has(id string) bool {
	p, err := s.Path(id)
	if err != nil {
		return false
	}
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// Import copies file into the store, hashing while copying, and returns its
// id. The copy is renamed into place atomically; when file is on the same
// file system it is hard-linked instead of copied (after hashing it).
func (s *Store) Import(ctx context.Context, file string) (string, error) {
	h, err := hashFile(ctx, file)
	if err != nil {
		return "", fmt.Errorf("import %s: %w", file, err)
	}
	id := IDOf(h)
	dst, _ := s.Path(id)
	if s.Has(id) {
		return id, nil
	}
	tmp := filepath.Join(s.tmpDir(), fmt.Sprintf("import-%s-%d", h[:16], os.Getpid()))
	_ = os.Remove(tmp)
	if err := os.Link(file, tmp); err == nil {
		// The link shares the inode: re-hash to close the window in which
		// the source changed after hashing.
		h2, err := hashFile(ctx, tmp)
		if err != nil || h2 != h {
			_ = os.Remove(tmp)
			if err == nil {
				err = fmt.Errorf("file changed while importing")
			}
			return "", fmt.Errorf("import %s: %w", file, err)
		}
	} else {
		h2, err := copyHashed(ctx, file, tmp)
		if err != nil {
			_ = os.Remove(tmp)
			return "", fmt.Errorf("import %s: %w", file, err)
		}
		if h2 != h {
			_ = os.Remove(tmp)
			return "", fmt.Errorf("import %s: file changed while importing", file)
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("import %s: %w", file, err)
	}
	return id, nil
}

// adopt moves a verified file (same file system) into the store under id.
func (s *Store) adopt(id, path string) (string, error) {
	dst, err := s.Path(id)
	if err != nil {
		return "", err
	}
	if err := os.Rename(path, dst); err != nil {
		return "", fmt.Errorf("store %s: %w", id, err)
	}
	return dst, nil
}

// List returns the ids of the complete blobs, sorted.
func (s *Store) List() ([]string, error) {
	ents, err := os.ReadDir(s.blobsDir())
	if err != nil {
		return nil, fmt.Errorf("list store %s: %w", s.dir, err)
	}
	var ids []string
	for _, e := range ents {
		if _, err := ParseID(e.Name()); err == nil && e.Type().IsRegular() {
			ids = append(ids, IDOf(e.Name()))
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// Remove deletes a complete blob. Removing a missing blob is not an error.
func (s *Store) Remove(id string) error {
	p, err := s.Path(id)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", id, err)
	}
	return nil
}

// Verify re-hashes the stored blob and checks it against its id.
func (s *Store) Verify(ctx context.Context, id string) error {
	p, err := s.Path(id)
	if err != nil {
		return err
	}
	want, _ := ParseID(id)
	got, err := hashFile(ctx, p)
	if err != nil {
		return fmt.Errorf("verify %s: %w", id, err)
	}
	if got != want {
		return fmt.Errorf("verify %s: content hashes to sha256:%s", id, got)
	}
	return nil
}

func hashFile(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, units.ContextReader(ctx, f)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func copyHashed(ctx context.Context, src, dst string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(out, h), units.ContextReader(ctx, in)); err != nil {
		out.Close()
		return "", err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return "", err
	}
	if err := out.Close(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
