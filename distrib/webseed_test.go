package distrib

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"dcroll/znodes"
)

// TestWebSeedFallback: the origin serves HTTP only, so the swarm has no
// seeder; after StallTimeout the node adds the web seed and completes.
func TestWebSeedFallback(t *testing.T) {
	c := testConn(t)
	o := startOrigin(t, c, OriginConfig{DisableBitTorrent: true})
	file, id := writeRandom(t, t.TempDir(), 6<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	blobs, err := Publish(ctx, c, o.cfg.Store, []string{file}, PublishOptions{OriginURL: o.URL()})
	if err != nil {
		t.Fatal(err)
	}

	// The web seed URL serves ranges.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, blobs[0].URLs[0], nil)
	req.Header.Set("Range", "bytes=10-19")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || len(body) != 10 {
		t.Fatalf("range request: %s, %d bytes", resp.Status, len(body))
	}

	n := startNode(t, c, "lonely", "127.0.0.61", "r1", "dc1", func(cfg *NodeConfig) { cfg.StallTimeout = time.Second })
	var sources = map[string]bool{}
	p, err := n.Fetch(ctx, id, func(bp znodes.BlobProgress) { sources[bp.Source] = true })
	if err != nil {
		t.Fatal(err)
	}
	if got := sha256File(t, p); got != id {
		t.Fatalf("content %s, want %s", got, id)
	}
	pr := n.Progress()[0]
	if pr.Source != SourceWebSeed || !sources[SourceSwarm] || pr.FromOther < 6<<20 {
		t.Fatalf("progress %+v, sources seen %v: want swarm then webseed, all bytes from other", pr, sources)
	}
}
