package examplebuild

import (
	"archive/tar"
	"compress/gzip"
	"os"
	"testing"
)

// TestTarGzForTest checks the cached artifacts: the same path twice, and a
// tar.gz holding an executable bin/hello as large as the plain build.
func TestTarGzForTest(t *testing.T) {
	exe := ForTest(t, "1.0.0", false)
	if again := ForTest(t, "1.0.0", false); again != exe {
		t.Errorf("second ForTest = %s, want the cached %s", again, exe)
	}
	fi, err := os.Stat(exe)
	if err != nil || fi.Mode().Perm()&0o100 == 0 {
		t.Fatalf("%s: %v %v", exe, fi, err)
	}
	f, err := os.Open(TarGzForTest(t, "1.0.0", false))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	found := false
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		if h.Name == TarEntry {
			found = h.Size == fi.Size() && h.Mode&0o755 == 0o755
		}
	}
	if !found {
		t.Errorf("tar.gz has no executable %s of %d bytes", TarEntry, fi.Size())
	}
}
