package distrib

import (
	"bytes"
	"context"
	"crypto/sha1"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"

	"dcroll/znodes"
)

// craftBlob builds a Blob record for id whose metainfo has the given info,
// with a consistent infohash (so only the content checks can refuse it).
func craftBlob(t *testing.T, id string, size int64, info metainfo.Info) *znodes.Blob {
	t.Helper()
	if info.PieceLength == 0 {
		info.PieceLength = 1 << 20
	}
	if info.Pieces == nil {
		info.Pieces = make([]byte, 20*int((size+info.PieceLength-1)/info.PieceLength))
	}
	ib, err := bencode.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	mi := metainfo.MetaInfo{InfoBytes: ib}
	var buf bytes.Buffer
	if err := mi.Write(&buf); err != nil {
		t.Fatal(err)
	}
	return &znodes.Blob{ID: id, Size: size, InfoHash: mi.HashInfoBytes().HexString(), Metainfo: buf.Bytes()}
}

func evilInfos(h string, size int64) map[string]metainfo.Info {
	return map[string]metainfo.Info{
		"dot-dot name":         {Name: "../../evil", Length: size},
		"absolute name":        {Name: "/tmp/dcroll-evil", Length: size},
		"multi-file traversal": {Name: h, Files: []metainfo.FileInfo{{Length: size, Path: []string{"..", "..", "etc", "x"}}}},
		"multi-file absolute":  {Name: h, Files: []metainfo.FileInfo{{Length: size, Path: []string{"/etc/x"}}}},
		"multi-file safe":      {Name: h, Files: []metainfo.FileInfo{{Length: size, Path: []string{"a"}}}},
		"other name":           {Name: "innocent.bin", Length: size},
		"wrong length":         {Name: h, Length: size * 2},
		"v2":                   {Name: h, Length: size, MetaVersion: 2},
	}
}

func TestCheckBlobRefuses(t *testing.T) {
	h := strings.Repeat("ab", 32)
	id := IDOf(h)
	const size = 3 << 20
	for name, info := range evilInfos(h, size) {
		t.Run(name, func(t *testing.T) {
			_, err := checkBlob(craftBlob(t, id, size, info))
			if !errors.Is(err, ErrBadMetainfo) {
				t.Fatalf("checkBlob = %v, want ErrBadMetainfo", err)
			}
		})
	}
	t.Run("infohash mismatch", func(t *testing.T) {
		b := craftBlob(t, id, size, metainfo.Info{Name: h, Length: size})
		b.InfoHash = strings.Repeat("0", 40)
		if _, err := checkBlob(b); !errors.Is(err, ErrBadMetainfo) {
			t.Fatalf("checkBlob = %v, want ErrBadMetainfo", err)
		}
	})
	t.Run("good", func(t *testing.T) {
		if _, err := checkBlob(craftBlob(t, id, size, metainfo.Info{Name: h, Length: size})); err != nil {
			t.Fatal(err)
		}
	})
}

// TestHostileMetainfoWritesNothingOutside publishes hostile records in
// ZooKeeper and fetches them: every Fetch fails and nothing appears outside
// the node's data directory.
func TestHostileMetainfoWritesNothingOutside(t *testing.T) {
	c := testConn(t)
	outer := t.TempDir()
	dataDir := filepath.Join(outer, "a", "b", "data")
	n := startNode(t, c, "victim", "127.0.0.51", "r1", "dc1", func(cfg *NodeConfig) { cfg.DataDir = dataDir })
	before := listTree(t, outer)
	const size = 1 << 20
	i := 0
	for name := range evilInfos("", size) {
		i++
		sum := sha1.Sum([]byte(name))
		h := strings.Repeat("0", 24) + bytesHex(sum[:])
		info := evilInfos(h, size)[name]
		b := craftBlob(t, IDOf(h), size, info)
		if _, err := c.Create(c.Paths().Blob(h), znodes.MustEncode(b), 0); err != nil {
			t.Fatal(err)
		}
		_, err := n.Fetch(context.Background(), IDOf(h), nil)
		if !errors.Is(err, ErrBadMetainfo) {
			t.Errorf("%s: Fetch = %v, want ErrBadMetainfo", name, err)
		}
	}
	after := listTree(t, outer)
	for p := range after {
		if !before[p] && !strings.HasPrefix(p, filepath.Join("a", "b", "data")) {
			t.Errorf("created outside the data dir: %s", p)
		}
	}
	for _, p := range []string{"/tmp/dcroll-evil", filepath.Join(outer, "evil"), filepath.Join(outer, "a", "evil")} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s exists", p)
		}
	}
}

func listTree(t *testing.T, root string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out[rel] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func bytesHex(b []byte) string {
	const digits = "0123456789abcdef"
	var sb strings.Builder
	for _, c := range b {
		sb.WriteByte(digits[c>>4])
		sb.WriteByte(digits[c&15])
	}
	return sb.String()
}
