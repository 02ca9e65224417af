package distrib

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseID(t *testing.T) {
	h := strings.Repeat("0f", 32)
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"sha256:" + h, true},
		{h, true},
		{"sha256:" + strings.ToUpper(h), false},
		{"sha256:" + h[:63], false},
		{"sha256:" + h + "0", false},
		{"sha256:../" + h[3:], false},
		{"md5:" + h, false},
		{"", false},
	} {
		got, err := ParseID(tc.in)
		if tc.ok != (err == nil) || (tc.ok && got != h) {
			t.Errorf("ParseID(%q) = %q, %v; want ok=%v", tc.in, got, err, tc.ok)
		}
	}
}

func TestStore(t *testing.T) {
	ctx := context.Background()
	st, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	src, id := writeRandom(t, t.TempDir(), 1<<20+3)
	got, err := st.Import(ctx, src)
	if err != nil || got != id {
		t.Fatalf("Import = %q, %v; want %q", got, err, id)
	}
	if !st.Has(id) {
		t.Fatal("Has after Import = false")
	}
	if again, err := st.Import(ctx, src); err != nil || again != id {
		t.Fatalf("second Import = %q, %v", again, err)
	}
	p, _ := st.Path(id)
	if sha256File(t, p) != id {
		t.Fatal("stored content differs")
	}
	if err := st.Verify(ctx, id); err != nil {
		t.Fatal(err)
	}
	ids, err := st.List()
	if err != nil || len(ids) != 1 || ids[0] != id {
		t.Fatalf("List = %v, %v", ids, err)
	}
	// Stray files in blobs/ are not blobs.
	if err := os.WriteFile(filepath.Join(st.Dir(), "blobs", "junk"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if ids, _ := st.List(); len(ids) != 1 {
		t.Fatalf("List with junk = %v", ids)
	}
	if ents, _ := os.ReadDir(filepath.Join(st.Dir(), "tmp")); len(ents) != 0 {
		t.Fatalf("tmp not cleaned: %v", ents)
	}
	if err := st.Remove(id); err != nil || st.Has(id) {
		t.Fatalf("Remove: %v, Has=%v", err, st.Has(id))
	}
	if err := st.Remove(id); err != nil {
		t.Fatalf("Remove missing: %v", err)
	}
	if _, err := st.Path("sha256:../../etc/passwd"); err == nil {
		t.Fatal("Path accepted a traversal")
	}
}

func TestStoreImportCopiesAcrossFilesystems(t *testing.T) {
	// /dev/shm is usually another file system than the temp dir: Import
	// must copy (and hash) instead of linking.
	if _, err := os.Stat("/dev/shm"); err != nil {
		t.Skip("no /dev/shm")
	}
	dir, err := os.MkdirTemp("/dev/shm", "distrib-")
	if err != nil {
		t.Skip(err)
	}
	defer os.RemoveAll(dir)
	src, id := writeRandom(t, dir, 64<<10)
	st, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := st.Import(context.Background(), src); err != nil || got != id {
		t.Fatalf("Import = %q, %v; want %q", got, err, id)
	}
	if err := st.Verify(context.Background(), id); err != nil {
		t.Fatal(err)
	}
}

func TestChoosePieceLength(t *testing.T) {
	for _, tc := range []struct {
		size, want int64
	}{
		{1, DefaultPieceLength},
		{16 << 20, DefaultPieceLength},
		{int64(maxPieces) * DefaultPieceLength, DefaultPieceLength},
		{int64(maxPieces)*DefaultPieceLength + 1, 2 * DefaultPieceLength},
		{1 << 40, 64 << 20},
	} {
		got := ChoosePieceLength(tc.size)
		if got != tc.want {
			t.Errorf("ChoosePieceLength(%d) = %d, want %d", tc.size, got, tc.want)
		}
		if pieces := (tc.size + got - 1) / got; pieces > maxPieces {
			t.Errorf("size %d: %d pieces", tc.size, pieces)
		}
	}
}
