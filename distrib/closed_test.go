package distrib

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

// TestWebSeedServesOnlyPublished: a file in the origin's store is not
// served until a /dc/blobs record publishes it (HEAD, without content,
// answers for the whole store).
func TestWebSeedServesOnlyPublished(t *testing.T) {
	c := testConn(t)
	st, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	o := startOrigin(t, c, OriginConfig{Store: st, DisableBitTorrent: true})
	file, _ := writeRandom(t, t.TempDir(), 64<<10)
	id, err := st.Import(context.Background(), file)
	if err != nil {
		t.Fatal(err)
	}
	get := func() int {
		t.Helper()
		resp, err := http.Get(o.URL() + "/blobs/" + strings.TrimPrefix(id, "sha256:"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(); code != http.StatusNotFound {
		t.Fatalf("unpublished blob: HTTP %d, want 404", code)
	}
	// HEAD (no content) still answers: publish asks it before writing.
	resp, err := http.Head(o.URL() + "/blobs/" + strings.TrimPrefix(id, "sha256:"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HEAD of a stored blob: HTTP %d", resp.StatusCode)
	}
	if _, err := Publish(context.Background(), c, st, []string{file}, PublishOptions{OriginURL: o.URL()}); err != nil {
		t.Fatal(err)
	}
	if code := get(); code != http.StatusOK {
		t.Fatalf("published blob: HTTP %d, want 200", code)
	}
}

// TestFetchRefusesOversizedRecord: a blob record larger than the node's
// cap is refused before anything is downloaded.
func TestFetchRefusesOversizedRecord(t *testing.T) {
	c := testConn(t)
	o := startOrigin(t, c, OriginConfig{})
	file, _ := writeRandom(t, t.TempDir(), 256<<10)
	bs, err := Publish(context.Background(), c, o.cfg.Store, []string{file}, PublishOptions{OriginURL: o.URL()})
	if err != nil {
		t.Fatal(err)
	}
	n := startNode(t, c, "m1", "127.0.0.1", "r1", "dc1", func(cfg *NodeConfig) { cfg.MaxBlobSize = 128 << 10 })
	_, err = n.Fetch(context.Background(), bs[0].ID, nil)
	if err == nil || !strings.Contains(err.Error(), "more than this node's cap") {
		t.Fatalf("fetch over the cap: %v", err)
	}
	if n.store.Has(bs[0].ID) {
		t.Fatal("the blob was downloaded anyway")
	}
}
