package supervise

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"dcroll/internal/units"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// Artifact formats recognized by [Unpack].
const (
	FormatExecutable = "executable"
	FormatTar        = "tar"
	FormatTarGzip    = "tar.gz"
)

// maxSymlinkHops bounds symlink resolution while checking an archive.
const maxSymlinkHops = 40

// Unpack makes the artifact blob at artifactPath runnable under destRoot and
// returns the directory: destRoot/<version>-<first 12 hex of the blob's sha256>.
//
// The blob is a tar or gzip-compressed tar archive (recognized by its magic
// bytes), extracted as is, or anything else, taken to be a plain executable
// and copied, mode 0755, to exe inside the directory. exe is the spec's
// run[0] ("./hello" -> <dir>/hello) and must stay inside the directory; it is
// ignored for archives.
//
// The directory is built under a temporary name and renamed into place, so it
// either exists complete or not at all; when it already exists it is reused
// as is (Unpack is idempotent). Archive entries with absolute paths, ".."
// components, links leading outside the directory, or device/fifo types are
// refused; the error names the entry.
func Unpack(ctx context.Context, artifactPath, destRoot, version, exe string) (string, error) {
	sum, format, err := inspect(artifactPath)
	if err != nil {
		return "", fmt.Errorf("unpack %s: %w", artifactPath, err)
	}
	if format == FormatExecutable {
		if exe, err = localName(exe); err != nil {
			return "", fmt.Errorf("unpack %s: plain executable needs run[0] inside the artifact directory: %w", artifactPath, err)
		}
	}
	dir := filepath.Join(destRoot, safeVersion(version)+"-"+sum[:12])
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		if format == FormatExecutable {
			if _, err := os.Stat(filepath.Join(dir, exe)); err != nil {
				return "", fmt.Errorf("unpack %s: %s exists but has no %s (artifact unpacked for another run[0]?); remove the directory", artifactPath, dir, exe)
			}
		}
		return dir, nil
	}
	if err := os.MkdirAll(destRoot, 0o755); err != nil {
		return "", fmt.Errorf("unpack %s: %w", artifactPath, err)
	}
	tmp, err := os.MkdirTemp(destRoot, ".unpack-"+filepath.Base(dir)+"-")
	if err != nil {
		return "", fmt.Errorf("unpack %s: %w", artifactPath, err)
	}
	defer os.RemoveAll(tmp) // no-op after the rename
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("unpack %s: %w", artifactPath, err)
	}
	if format == FormatExecutable {
		err = copyExecutable(ctx, artifactPath, tmp, exe)
	} else {
		err = extractTar(ctx, artifactPath, format == FormatTarGzip, tmp)
	}
	if err != nil {
		return "", fmt.Errorf("unpack %s: %w", artifactPath, err)
	}
	if err := syncDir(tmp); err != nil {
		return "", fmt.Errorf("unpack %s: %w", artifactPath, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		// Someone else unpacked the same artifact concurrently: use theirs.
		if errors.Is(err, syscall.EEXIST) || errors.Is(err, syscall.ENOTEMPTY) {
			return dir, nil
		}
		return "", fmt.Errorf("unpack %s: %w", artifactPath, err)
	}
	_ = syncDir(destRoot)
	return dir, nil
}

// DetectFormat tells how [Unpack] would treat the blob at path.
func DetectFormat(path string) (string, error) {
	_, f, err := inspect(path)
	return f, err
}

// inspect hashes the blob and detects its format.
func inspect(p string) (sum, format string, err error) {
	f, err := os.Open(p)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	head := make([]byte, 512)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", "", err
	}
	head = head[:n]
	switch {
	case len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b:
		format = FormatTarGzip
	case isTarHeader(head):
		format = FormatTar
	default:
		format = FormatExecutable
	}
	h := sha256.New()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", "", err
	}
	if _, err := io.Copy(h, f); err != nil {
		return "", "", err
	}
	return hex.EncodeToString(h.Sum(nil)), format, nil
}

// isTarHeader reports whether b starts with a POSIX/GNU tar header.
func isTarHeader(b []byte) bool {
	return len(b) >= 262 && bytes.Equal(b[257:262], []byte("ustar"))
}

// safeVersion makes a version label usable as a directory name component.
func safeVersion(v string) string {
	b := []byte(v)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '+'
		if !ok {
			b[i] = '_'
		}
	}
	if len(b) == 0 || b[0] == '.' {
		return "v" + string(b)
	}
	return string(b)
}

// localName cleans a relative slash-separated name and checks that it stays
// inside its directory.
func localName(name string) (string, error) {
	if name == "" {
		return "", errors.New("empty name")
	}
	if path.IsAbs(name) || filepath.IsAbs(name) {
		return "", fmt.Errorf("%q is an absolute path", name)
	}
	c := path.Clean(name)
	if c == "." || !filepath.IsLocal(filepath.FromSlash(c)) {
		return "", fmt.Errorf("%q leaves the directory", name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("%q has a \"..\" component", name)
		}
	}
	return filepath.FromSlash(c), nil
}

func copyExecutable(ctx context.Context, src, dir, exe string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	dst := filepath.Join(dir, exe)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, units.ContextReader(ctx, in)); err != nil {
		out.Close()
		return err
	}
	if err := out.Chmod(0o755); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// extractTar extracts the archive at src into dir (an empty directory).
func extractTar(ctx context.Context, src string, gz bool, dir string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = bufio.NewReaderSize(f, 1<<16)
	if gz {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
		defer zr.Close()
		r = zr
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()

	tr := tar.NewReader(units.ContextReader(ctx, r))
	var links []string // symlinks, checked once everything is extracted
	type dirMode struct {
		name string
		mode fs.FileMode
	}
	var dirs []dirMode
	entries := 0
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if entries == 0 && !gz {
				return fmt.Errorf("not a valid tar archive: %w", err)
			}
			return fmt.Errorf("read tar: %w", err)
		}
		entries++
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		name, err := localName(strings.TrimPrefix(hdr.Name, "./"))
		if err != nil {
			if c := path.Clean(hdr.Name); c == "." && hdr.Typeflag == tar.TypeDir {
				continue // the archive's own root
			}
			return fmt.Errorf("refusing tar entry %q: %w", hdr.Name, err)
		}
		perm := fs.FileMode(hdr.Mode) & 0o777
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o755); err != nil {
				return fmt.Errorf("tar entry %q: %w", hdr.Name, err)
			}
			dirs = append(dirs, dirMode{name, perm | 0o700})
		case tar.TypeReg:
			if err := mkParent(root, name); err != nil {
				return fmt.Errorf("tar entry %q: %w", hdr.Name, err)
			}
			out, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("tar entry %q: %w", hdr.Name, err)
			}
			_, err = io.Copy(out, tr)
			if err == nil {
				err = out.Chmod(perm)
			}
			if err == nil {
				err = out.Sync()
			}
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("tar entry %q: %w", hdr.Name, err)
			}
		case tar.TypeSymlink:
			target := hdr.Linkname
			if target == "" || path.IsAbs(target) {
				return fmt.Errorf("refusing tar entry %q: symlink to %q leaves the directory", hdr.Name, target)
			}
			if j := path.Join(path.Dir(filepath.ToSlash(name)), target); j != "." && !filepath.IsLocal(filepath.FromSlash(j)) {
				return fmt.Errorf("refusing tar entry %q: symlink to %q leaves the directory", hdr.Name, target)
			}
			if err := mkParent(root, name); err != nil {
				return fmt.Errorf("tar entry %q: %w", hdr.Name, err)
			}
			if err := root.Symlink(target, name); err != nil {
				return fmt.Errorf("tar entry %q: %w", hdr.Name, err)
			}
			links = append(links, name)
		case tar.TypeLink:
			old, err := localName(strings.TrimPrefix(hdr.Linkname, "./"))
			if err != nil {
				return fmt.Errorf("refusing tar entry %q: hard link to %q: %w", hdr.Name, hdr.Linkname, err)
			}
			if err := mkParent(root, name); err != nil {
				return fmt.Errorf("tar entry %q: %w", hdr.Name, err)
			}
			if err := root.Link(old, name); err != nil {
				return fmt.Errorf("tar entry %q: %w", hdr.Name, err)
			}
		default:
			return fmt.Errorf("refusing tar entry %q: unsupported type %q (only files, directories and links)", hdr.Name, hdr.Typeflag)
		}
	}
	if entries == 0 {
		return errors.New("empty tar archive")
	}
	// A symlink's target may itself go through other symlinks of the
	// archive; resolve each one for real now that they all exist.
	for _, l := range links {
		out, err := escapes(dir, l)
		if err != nil {
			return fmt.Errorf("tar entry %q: %w", filepath.ToSlash(l), err)
		}
		if out {
			return fmt.Errorf("refusing tar entry %q: symlink resolves outside the directory", filepath.ToSlash(l))
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := root.Chmod(dirs[i].name, dirs[i].mode); err != nil {
			return fmt.Errorf("tar entry %q: %w", dirs[i].name, err)
		}
	}
	return nil
}

func mkParent(root *os.Root, name string) error {
	if d := filepath.Dir(name); d != "." {
		return root.MkdirAll(d, 0o755)
	}
	return nil
}

// escapes resolves rel inside dir, following symlinks on disk, and reports
// whether the resolution ever leaves dir. Missing components are resolved
// lexically.
func escapes(dir, rel string) (bool, error) {
	todo := strings.Split(filepath.ToSlash(rel), "/")
	var stack []string
	hops := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) == 0 {
				return true, nil
			}
			stack = stack[:len(stack)-1]
			continue
		}
		p := filepath.Join(append([]string{dir}, append(stack, c)...)...)
		fi, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			stack = append(stack, c)
		case err != nil:
			return false, err
		case fi.Mode()&fs.ModeSymlink != 0:
			hops++
			if hops > maxSymlinkHops {
				return false, errors.New("too many levels of symbolic links")
			}
			t, err := os.Readlink(p)
			if err != nil {
				return false, err
			}
			if path.IsAbs(t) {
				return true, nil
			}
			todo = append(strings.Split(t, "/"), todo...)
		default:
			stack = append(stack, c)
		}
	}
	return false, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
