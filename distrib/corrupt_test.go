package distrib

import (
	"context"
	"os"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// TestCorruptPeerIsSurvived: node "bad" completes a blob, then its stored
// file is overwritten with garbage while its torrent still claims every
// piece. With the origin throttled, node "good" gets most pieces offered by
// "bad" first; they fail their piece hash, "bad" is banned, and "good"
// still completes with the right sha256.
func TestCorruptPeerIsSurvived(t *testing.T) {
	c := testConn(t)
	o := startOrigin(t, c, OriginConfig{UploadRateLimiter: rate.NewLimiter(2<<20, 256<<10)})
	const size = 4 << 20
	file, id := writeRandom(t, t.TempDir(), size)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := Publish(ctx, c, o.cfg.Store, []string{file}, PublishOptions{OriginURL: o.URL(), PieceLength: 256 << 10}); err != nil {
		t.Fatal(err)
	}
	waitSeeding(t, o, id)

	bad := startNode(t, c, "bad", "127.0.0.41", "r1", "dc1", nil)
	p, err := bad.Fetch(ctx, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Corrupt every piece in place: the seeding mmap shares these pages.
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	junk := make([]byte, 4096)
	for i := range junk {
		junk[i] = 0xA5
	}
	for off := int64(0); off < size; off += 64 << 10 {
		if _, err := f.WriteAt(junk, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if sha256File(t, p) == id {
		t.Fatal("corruption did not change the file")
	}
	sentBefore := uploaded(bad)

	good := startNode(t, c, "good", "127.0.0.42", "r1", "dc1", func(cfg *NodeConfig) { cfg.StallTimeout = 30 * time.Second })
	gp, err := good.Fetch(ctx, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := sha256File(t, gp); got != id {
		t.Fatalf("good node stored %s, want %s", got, id)
	}
	sent := uploaded(bad) - sentBefore
	pr := good.Progress()[0]
	t.Logf("corrupt peer sent %d KiB; good node: rack %d KiB, other %d KiB, source %s", sent>>10, pr.FromRack>>10, pr.FromOther>>10, pr.Source)
	if sent == 0 {
		t.Fatal("the corrupt peer sent nothing: the test did not exercise bad data")
	}
}

func uploaded(n *Node) int64 {
	st := n.Client().Stats()
	return st.BytesWrittenData.Int64()
}
