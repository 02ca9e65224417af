package distrib

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/anacrolix/torrent/metainfo"

	"dcroll/integration/zktest"
)

// TestAria2Interop: aria2c downloads a published blob from our origin
// given the .torrent from WriteTorrent: once as published (tracker, seeder
// and web seed), once with the web seed removed from the .torrent (same
// infohash) so the bytes must come over BitTorrent from our seeder.
func TestAria2Interop(t *testing.T) {
	aria2, err := exec.LookPath("aria2c")
	if err != nil {
		t.Skip("aria2c not installed (apt-get install -y aria2); skipping the interop test")
	}
	c := testConn(t)
	o := startOrigin(t, c, OriginConfig{})
	const size = 8 << 20
	file, id := writeRandom(t, t.TempDir(), size)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := Publish(ctx, c, o.cfg.Store, []string{file}, PublishOptions{OriginURL: o.URL(), PieceLength: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	waitSeeding(t, o, id)
	var buf bytes.Buffer
	if err := WriteTorrent(c, id, &buf); err != nil {
		t.Fatal(err)
	}
	h, _ := ParseID(id)
	for _, tc := range []struct {
		name    string
		webSeed bool
	}{{"published", true}, {"bittorrent-only", false}} {
		t.Run(tc.name, func(t *testing.T) {
			mi, err := metainfo.Load(bytes.NewReader(buf.Bytes()))
			if err != nil {
				t.Fatal(err)
			}
			if !tc.webSeed {
				mi.UrlList = nil
			}
			dir := t.TempDir()
			tor := filepath.Join(dir, "blob.torrent")
			f, err := os.Create(tor)
			if err != nil {
				t.Fatal(err)
			}
			if err := mi.Write(f); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			before := o.cl.Stats()
			out := filepath.Join(dir, "out")
			cmd := exec.CommandContext(ctx, aria2, "--seed-time=0", "--enable-dht=false", "--bt-enable-lpd=false",
				"--enable-peer-exchange=false", "--console-log-level=warn", "--summary-interval=0",
				"--listen-port="+strconv.Itoa(zktest.FreePort(t)), "--bt-stop-timeout=60", "--dir", out, tor)
			b, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("aria2c: %v\n%s", err, b)
			}
			if got := sha256File(t, filepath.Join(out, h)); got != id {
				t.Fatalf("aria2c wrote %s, want %s", got, id)
			}
			after := o.cl.Stats()
			sent := after.BytesWrittenData.Int64() - before.BytesWrittenData.Int64()
			t.Logf("origin uploaded %d KiB over BitTorrent", sent>>10)
			if !tc.webSeed && sent < size {
				t.Fatalf("origin uploaded %d bytes over BitTorrent, want >= %d", sent, size)
			}
		})
	}
}
