package supervise

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type tarEntry struct {
	name, body, link string
	typ              byte
	mode             int64
}

func writeTar(t *testing.T, path string, gz bool, entries []tarEntry) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, Size: int64(len(e.body))}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	if gz {
		var zb bytes.Buffer
		zw := gzip.NewWriter(&zb)
		zw.Write(data)
		zw.Close()
		data = zb.Bytes()
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestUnpackArchives(t *testing.T) {
	good := []tarEntry{
		{name: "bin/", typ: tar.TypeDir, mode: 0o755},
		{name: "bin/hello", body: "#!/bin/sh\necho hi\n", mode: 0o755},
		{name: "./etc/conf.txt", body: "conf"},
		{name: "current", typ: tar.TypeSymlink, link: "bin/hello"},
		{name: "etc/up", typ: tar.TypeSymlink, link: "../bin"},
		{name: "bin/hello2", typ: tar.TypeLink, link: "bin/hello"},
		{name: "self", typ: tar.TypeSymlink, link: "."},
	}
	for _, gz := range []bool{true, false} {
		name := map[bool]string{true: "tar.gz", false: "tar"}[gz]
		t.Run(name, func(t *testing.T) {
			tmp := t.TempDir()
			blob := filepath.Join(tmp, "blob")
			writeTar(t, blob, gz, good)
			if f, err := DetectFormat(blob); err != nil || f != name {
				t.Fatalf("DetectFormat = %q, %v; want %q", f, err, name)
			}
			root := filepath.Join(tmp, "versions")
			dir, err := Unpack(context.Background(), blob, root, "1.0.0", "ignored")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(filepath.Base(dir), "1.0.0-") || len(filepath.Base(dir)) != len("1.0.0-")+12 {
				t.Errorf("dir %s, want versions/1.0.0-<12 hex>", dir)
			}
			fi, err := os.Stat(filepath.Join(dir, "bin/hello"))
			if err != nil || fi.Mode().Perm() != 0o755 {
				t.Fatalf("bin/hello: %v %v", fi, err)
			}
			if b, _ := os.ReadFile(filepath.Join(dir, "etc/conf.txt")); string(b) != "conf" {
				t.Errorf("etc/conf.txt = %q", b)
			}
			if b, _ := os.ReadFile(filepath.Join(dir, "self/etc/up/hello2")); !strings.Contains(string(b), "echo hi") {
				t.Errorf("through symlink and hard link: %q", b)
			}
			// Idempotent: the existing directory is reused untouched.
			marker := filepath.Join(dir, "marker")
			os.WriteFile(marker, nil, 0o644)
			dir2, err := Unpack(context.Background(), blob, root, "1.0.0", "ignored")
			if err != nil || dir2 != dir {
				t.Fatalf("second Unpack = %s, %v; want %s", dir2, err, dir)
			}
			if _, err := os.Stat(marker); err != nil {
				t.Errorf("second Unpack replaced the directory: %v", err)
			}
			assertOnlyEntries(t, root, filepath.Base(dir))
		})
	}
}

func TestUnpackExecutable(t *testing.T) {
	tmp := t.TempDir()
	blob := filepath.Join(tmp, "blob")
	os.WriteFile(blob, []byte("\x7fELF not really"), 0o600)
	root := filepath.Join(tmp, "v")
	dir, err := Unpack(context.Background(), blob, root, "2.0 beta", "./hello")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(dir), "2.0_beta-") {
		t.Errorf("dir %s: want the version made safe", dir)
	}
	fi, err := os.Stat(filepath.Join(dir, "hello"))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("hello: %v %v", fi, err)
	}
	for _, bad := range []string{"../hello", "./bin/../hello", "/usr/bin/hello", "", "."} {
		if _, err := Unpack(context.Background(), blob, filepath.Join(tmp, "w"), "2", bad); err == nil {
			t.Errorf("run[0] %q: Unpack succeeded; want refusal", bad)
		}
	}
}

func TestUnpackRefusesEscapes(t *testing.T) {
	tests := []struct {
		name    string
		entries []tarEntry
		want    string // in the error: the entry's name
	}{
		{"dotdot", []tarEntry{{name: "ok"}, {name: "../evil", body: "x"}}, `"../evil"`},
		{"dotdot inside", []tarEntry{{name: "a/../../evil", body: "x"}}, `"a/../../evil"`},
		{"absolute", []tarEntry{{name: "/tmp/evil", body: "x"}}, `"/tmp/evil"`},
		{"symlink up", []tarEntry{{name: "l", typ: tar.TypeSymlink, link: "../outside"}}, `"l"`},
		{"symlink absolute", []tarEntry{{name: "l", typ: tar.TypeSymlink, link: "/etc/passwd"}}, `"l"`},
		{"symlink chain", []tarEntry{
			{name: "a", typ: tar.TypeSymlink, link: "."},
			{name: "l", typ: tar.TypeSymlink, link: "a/a/a/.."},
		}, `"l"`},
		{"write through escaping symlink", []tarEntry{
			{name: "a", typ: tar.TypeSymlink, link: "."},
			{name: "l", typ: tar.TypeSymlink, link: "a/a/a/.."},
			{name: "l/evil", body: "x"},
		}, `"l/evil"`},
		{"dotdot through symlink", []tarEntry{
			{name: "d", typ: tar.TypeSymlink, link: "."},
			{name: "d/x/../../evil", body: "x"},
		}, `"d/x/../../evil"`},
		{"hard link out", []tarEntry{{name: "h", typ: tar.TypeLink, link: "../../etc/passwd"}}, `"h"`},
		{"device", []tarEntry{{name: "null", typ: tar.TypeChar}}, `"null"`},
		{"duplicate", []tarEntry{{name: "f", body: "1"}, {name: "f", body: "2"}}, `"f"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			blob := filepath.Join(tmp, "blob.tgz")
			writeTar(t, blob, true, tc.entries)
			root := filepath.Join(tmp, "versions")
			_, err := Unpack(context.Background(), blob, root, "1", "x")
			if err == nil {
				t.Fatal("Unpack succeeded; want refusal")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name the entry %s", err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(tmp, "evil")); err == nil {
				t.Errorf("a file escaped the directory")
			}
			assertOnlyEntries(t, root) // nothing left behind, not even the temp dir
		})
	}
}

func TestUnpackNotTar(t *testing.T) {
	tmp := t.TempDir()
	blob := filepath.Join(tmp, "blob.gz")
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	zw.Write([]byte("just some text, not a tar"))
	zw.Close()
	os.WriteFile(blob, zb.Bytes(), 0o644)
	if _, err := Unpack(context.Background(), blob, filepath.Join(tmp, "v"), "1", "x"); err == nil || !strings.Contains(err.Error(), "tar") {
		t.Fatalf("gzip without tar: err = %v, want a tar error", err)
	}
}

// assertOnlyEntries checks that dir holds exactly the names given.
func assertOnlyEntries(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("%s holds %v, want %v", dir, got, names)
	}
}
