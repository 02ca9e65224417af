package distrib

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/anacrolix/torrent/metainfo"

	"dcroll/integration/zktest"
	"dcroll/znodes"
)

func TestPublishAndFetchThreeNodes(t *testing.T) {
	c := testConn(t)
	o := startOrigin(t, c, OriginConfig{})
	file, id := writeRandom(t, t.TempDir(), 12<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	blobs, err := Publish(ctx, c, o.cfg.Store, []string{file}, PublishOptions{OriginURL: o.URL(), PieceLength: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	b := blobs[0]
	h, _ := ParseID(id)
	if b.ID != id || b.Size != 12<<20 || b.PieceLength != 1<<20 {
		t.Fatalf("published %+v", b)
	}
	again, err := Publish(ctx, c, o.cfg.Store, []string{file}, PublishOptions{OriginURL: o.URL()})
	if err != nil {
		t.Fatal(err)
	}
	if again[0].InfoHash != b.InfoHash || !again[0].PublishedAt.Equal(b.PublishedAt) {
		t.Fatalf("republish changed the record: %+v vs %+v", again[0], b)
	}
	missing, err := MissingBlobs(c, []string{id, IDOf(fmt.Sprintf("%064x", 7))})
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) != 1 || missing[0] != IDOf(fmt.Sprintf("%064x", 7)) {
		t.Fatalf("MissingBlobs = %v", missing)
	}
	var tor bytes.Buffer
	if err := WriteTorrent(c, id, &tor); err != nil {
		t.Fatal(err)
	}
	mi, err := metainfo.Load(&tor)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := mi.UnmarshalInfo()
	if info.Name != h || len(mi.UrlList) != 1 || mi.UrlList[0] != o.URL()+"/blobs/"+h || mi.Announce != o.URL()+"/announce" {
		t.Fatalf("torrent: name %q urls %v announce %q", info.Name, mi.UrlList, mi.Announce)
	}
	waitSeeding(t, o, id)

	var nodes []*Node
	for i := range 3 {
		nodes = append(nodes, startNode(t, c, fmt.Sprintf("m%d", i), fmt.Sprintf("127.0.0.%d", 11+i), "r1", "dc1", nil))
	}
	var wg sync.WaitGroup
	paths := make([]string, len(nodes))
	errs := make([]error, len(nodes))
	start := time.Now()
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			paths[i], errs[i] = n.Fetch(ctx, id, nil)
		}()
	}
	wg.Wait()
	t.Logf("3 nodes fetched 12 MiB in %s", time.Since(start))
	for i, n := range nodes {
		if errs[i] != nil {
			t.Fatalf("node %d: %v", i, errs[i])
		}
		if got := sha256File(t, paths[i]); got != id {
			t.Fatalf("node %d: content %s, want %s", i, got, id)
		}
		ps := n.Progress()
		if len(ps) != 1 || !ps[0].Done || ps[0].Bytes != b.Size || ps[0].Source != SourceSwarm {
			t.Fatalf("node %d progress %+v", i, ps)
		}
		t.Logf("node %d: rack %d dc %d other %d", i, ps[0].FromRack, ps[0].FromDC, ps[0].FromOther)
	}

	// A second Fetch is local.
	var last znodes.BlobProgress
	if p, err := nodes[0].Fetch(ctx, id, func(p znodes.BlobProgress) { last = p }); err != nil || p != paths[0] || !last.Done {
		t.Fatalf("second fetch: %q %v %+v", p, err, last)
	}

	// Progress reaches ZooKeeper.
	pctx, pcancel := context.WithCancel(ctx)
	pdone := make(chan error, 1)
	go func() { pdone <- nodes[1].RunProgress(pctx) }()
	zktest.WaitFor(t, 10*time.Second, "progress znode", func() (bool, error) {
		var p znodes.Progress
		if _, err := c.GetJSON(c.Paths().Progress("m1"), &p); err != nil {
			return false, nil
		}
		return len(p.Blobs) == 1 && p.Blobs[0].Done && p.Blobs[0].Blob == id, nil
	})
	pcancel()
	if err := <-pdone; err != nil {
		t.Fatal(err)
	}

	// Keep: previous blobs stay, unreferenced ones go.
	if err := nodes[2].Keep(nil, []string{id}); err != nil {
		t.Fatal(err)
	}
	if !nodes[2].Store().Has(id) {
		t.Fatal("Keep removed a previous blob")
	}
	if err := nodes[2].Keep(nil, nil); err != nil {
		t.Fatal(err)
	}
	if nodes[2].Store().Has(id) {
		t.Fatal("Keep left an unreferenced blob")
	}
}

func TestFetchUnpublished(t *testing.T) {
	c := testConn(t)
	n := startNode(t, c, "m0", "127.0.0.2", "r1", "dc1", nil)
	_, err := n.Fetch(context.Background(), IDOf(fmt.Sprintf("%064x", 1)), nil)
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Fetch of unpublished blob: %v, want ErrNotFound", err)
	}
}
