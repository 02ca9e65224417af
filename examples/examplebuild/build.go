// Package examplebuild builds the example service (examples/hello) for
// tests and demos: a given version, optionally the "broken" build whose
// /healthz always answers 500, as a plain executable or as a tar.gz
// artifact holding bin/hello.
//
// Build compiles into a directory of your choice. Cached and the ForTest
// helpers keep the results in the user cache directory
// (dcroll-examplebuild/), keyed by the hello source, the Go version and the
// build options, so a test run compiles each variant at most once and later
// runs not at all.
package examplebuild

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// TarEntry is where the executable sits inside the tar.gz artifacts.
const TarEntry = "bin/hello"

// Build compiles examples/hello with -X main.version=version (and
// -X main.broken=true when broken) into outDir and returns the executable's
// path (outDir/hello-<version>).
func Build(ctx context.Context, outDir, version string, broken bool) (string, error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", fmt.Errorf("build hello %s: %w", version, err)
	}
	out := filepath.Join(outDir, "hello-"+version)
	if err := build(ctx, root, out, version, broken); err != nil {
		return "", err
	}
	return out, nil
}

func build(ctx context.Context, root, out, version string, broken bool) error {
	ldflags := fmt.Sprintf("-X main.version=%s -X main.broken=%t", version, broken)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", ldflags, "-o", out, "./examples/hello")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build hello %s: go build: %w: %s", version, err, strings.TrimSpace(string(b)))
	}
	return nil
}

// TarGz writes a gzip-compressed tar at out holding the file exe as
// TarEntry (bin/hello, mode 0755).
func TarGz(exe, out string) error {
	in, err := os.Open(exe)
	if err != nil {
		return fmt.Errorf("tar %s: %w", exe, err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return fmt.Errorf("tar %s: %w", exe, err)
	}
	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("tar %s: %w", exe, err)
	}
	defer os.Remove(tmp)
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	err = tw.WriteHeader(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: fi.ModTime()})
	if err == nil {
		err = tw.WriteHeader(&tar.Header{Name: TarEntry, Typeflag: tar.TypeReg, Mode: 0o755, Size: fi.Size(), ModTime: fi.ModTime()})
	}
	if err == nil {
		_, err = io.Copy(tw, in)
	}
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = zw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, out)
	}
	if err != nil {
		return fmt.Errorf("tar %s: %w", exe, err)
	}
	return nil
}

var (
	mu    sync.Mutex
	cache = map[string]string{} // key -> path, this process
)

// Cached returns the path of hello built for version/broken, building it
// only if no cached build matches the current source. With tarGz it
// returns a tar.gz artifact (bin/hello) instead of the executable.
func Cached(ctx context.Context, version string, broken, tarGz bool) (string, error) {
	mu.Lock()
	defer mu.Unlock()
	memo := fmt.Sprintf("%s/%t/%t", version, broken, tarGz)
	if p, ok := cache[memo]; ok {
		return p, nil
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return "", err
	}
	src, err := os.ReadFile(filepath.Join(root, "examples", "hello", "main.go"))
	if err != nil {
		return "", fmt.Errorf("build hello: %w", err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%t\x00", runtime.Version(), version, broken)
	h.Write(src)
	key := hex.EncodeToString(h.Sum(nil))[:16]
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	dir := filepath.Join(base, "dcroll-examplebuild", key)
	exe := filepath.Join(dir, "hello")
	if _, err := os.Stat(exe); err != nil {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", fmt.Errorf("build hello: %w", err)
		}
		// Build beside and rename: concurrent test binaries may race here.
		tmp, err := os.CreateTemp(dir, ".hello-*")
		if err != nil {
			return "", fmt.Errorf("build hello: %w", err)
		}
		tmp.Close()
		defer os.Remove(tmp.Name())
		if err := build(ctx, root, tmp.Name(), version, broken); err != nil {
			return "", err
		}
		if err := os.Rename(tmp.Name(), exe); err != nil {
			return "", fmt.Errorf("build hello: %w", err)
		}
	}
	out := exe
	if tarGz {
		out = filepath.Join(dir, "hello.tar.gz")
		if _, err := os.Stat(out); err != nil {
			if err := TarGz(exe, out); err != nil {
				return "", err
			}
		}
	}
	cache[memo] = out
	return out, nil
}

// ForTest returns the cached executable of hello for version (see Cached),
// failing t if it cannot be built.
func ForTest(t testing.TB, version string, broken bool) string {
	t.Helper()
	p, err := Cached(context.Background(), version, broken, false)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TarGzForTest returns the cached tar.gz artifact (bin/hello) of hello for
// version (see Cached), failing t if it cannot be built.
func TarGzForTest(t testing.TB, version string, broken bool) string {
	t.Helper()
	p, err := Cached(context.Background(), version, broken, true)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error
)

// moduleRoot finds the dcroll module: from this source file, else from
// `go env GOMOD` in the working directory.
func moduleRoot(ctx context.Context) (string, error) {
	rootOnce.Do(func() {
		if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
			d := filepath.Join(filepath.Dir(file), "..", "..")
			if _, err := os.Stat(filepath.Join(d, "examples", "hello", "main.go")); err == nil {
				rootDir = filepath.Clean(d)
				return
			}
		}
		b, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
		mod := strings.TrimSpace(string(b))
		if err != nil || mod == "" || mod == os.DevNull {
			rootErr = errors.New("build hello: cannot find the dcroll module (run from inside it)")
			return
		}
		rootDir = filepath.Dir(mod)
	})
	return rootDir, rootErr
}
