package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"dcroll/distrib"
	"dcroll/integration/zktest"
	"dcroll/znodes"
)

// publishEnv is a real ZooKeeper and a running origin serving originStore.
type publishEnv struct {
	zkf         string // --zk=...
	addr        string // ZooKeeper address
	originURL   string
	originStore string
}

func startPublishEnv(t *testing.T) *publishEnv {
	t.Helper()
	srv := zktest.Start(t)
	c, err := znodes.Dial(context.Background(), znodes.Options{Servers: srv.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.EnsureSkeleton(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	st, err := distrib.OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	o, err := distrib.NewOrigin(distrib.OriginConfig{Store: st, Conn: c, ListenAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler), DisableBitTorrent: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("origin: %v", err)
		}
	})
	return &publishEnv{zkf: "--zk=" + srv.Addr(), addr: srv.Addr(), originURL: o.URL(), originStore: dir}
}

// payload writes a small random file and returns its path and blob hex.
func payload(t *testing.T, name string) (string, string) {
	t.Helper()
	b := make([]byte, 4096)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return p, hex.EncodeToString(sum[:])
}

// TestBlobPublishWrongStore: a --store the origin does not serve fails
// before anything is recorded; the right store publishes.
func TestBlobPublishWrongStore(t *testing.T) {
	e := startPublishEnv(t)
	file, h := payload(t, "db.tar.gz")
	before := snapshot(t, e.addr)
	out, errs, code := run(t, e.zkf, "blob", "publish", "--store", t.TempDir(), "--origin", e.originURL, file)
	t.Logf("wrong store: exit %d stdout %q err %q", code, out, errs)
	want := "origin " + e.originURL + " answers 404 for sha256:" + h + ": is --store"
	if code != 1 || !strings.Contains(errs, want) || !strings.Contains(errs, "the directory `dcroll origin --store` serves?") {
		t.Fatalf("wrong store: exit %d, %q; want exit 1 and %q", code, errs, want)
	}
	if after := snapshot(t, e.addr); !reflect.DeepEqual(before, after) {
		t.Errorf("a failed publish changed ZooKeeper: %v", after)
	}

	out, errs, code = run(t, e.zkf, "blob", "publish", "--store", e.originStore, "--origin", e.originURL, file)
	if code != 0 || !strings.HasPrefix(out, "sha256:"+h) {
		t.Fatalf("right store: exit %d, %q %q", code, out, errs)
	}
	if _, ok := snapshot(t, e.addr)["/dc/blobs/"+h]; !ok {
		t.Errorf("right store: /dc/blobs/%s not written", h)
	}
}

// TestBlobPublishURLWithoutScheme: --origin and --tracker must be URLs.
func TestBlobPublishURLWithoutScheme(t *testing.T) {
	e := startPublishEnv(t)
	file, _ := payload(t, "db.tar.gz")
	hostPort := strings.TrimPrefix(e.originURL, "http://")
	before := snapshot(t, e.addr)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--origin", hostPort}, `--origin "` + hostPort + `": write a URL with a scheme, e.g. http://` + hostPort},
		{[]string{"--origin", e.originURL, "--tracker", "10.0.0.2:7080/announce"}, `--tracker "10.0.0.2:7080/announce": write a URL with a scheme, e.g. http://10.0.0.2:7080/announce`},
		{[]string{"--origin", "ftp://build1:7070"}, `--origin "ftp://build1:7070": write an http or https URL, e.g. http://build1:7070`},
		{[]string{"--origin", "localhost:7070"}, `--origin "localhost:7070": write a URL with a scheme, e.g. http://localhost:7070`},
		{[]string{"--origin", "http://"}, `--origin "http://": write a URL with a scheme and a host, e.g. http://127.0.0.1:7070`},
	} {
		args := append(append([]string{e.zkf, "blob", "publish", "--store", e.originStore}, tc.args...), file)
		out, errs, code := run(t, args...)
		t.Logf("%v: exit %d stdout %q err %q", tc.args, code, out, errs)
		if code != 2 || errs != tc.want {
			t.Errorf("%v: exit %d, %q; want exit 2, %q", tc.args, code, errs, tc.want)
		}
	}
	if after := snapshot(t, e.addr); !reflect.DeepEqual(before, after) {
		t.Errorf("a refused publish changed ZooKeeper: %v", after)
	}
}

const publishSpec = `name: nightly
services:
  store:
    version: "1"
    artifact: sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
    run: ["./store"]
  web:
    version: "1"
    artifact: sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
    run: ["./web"]
`

// TestBlobPublishSpecChecksFirst: a misspelt service, a missing file or a
// broken spec is refused before anything is published or rewritten.
func TestBlobPublishSpecChecksFirst(t *testing.T) {
	e := startPublishEnv(t)
	file, h := payload(t, "x.tar.gz")
	specFile := writeSpec(t, publishSpec)
	badSpec := writeSpec(t, "name: nightly\nservices:\n  store: {version: 1, run: [x], quorum: lots}\n")
	before := snapshot(t, e.addr)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"misspelt service", []string{"--spec", specFile, "stroe=" + file}, 2, `blob publish --spec ` + specFile + `: unknown service "stroe" (did you mean "store"?)`},
		{"unknown service", []string{"--spec", specFile, "zzzzzz=" + file}, 2, `blob publish --spec ` + specFile + `: unknown service "zzzzzz" (services: store, web)`},
		{"service twice", []string{"--spec", specFile, "store=" + file, "store=" + file}, 2, `blob publish --spec ` + specFile + `: service "store" given twice`},
		{"missing file", []string{"--spec", specFile, "store=" + file, "web=" + file + ".missing"}, 1, "publish " + file + ".missing: stat " + file + ".missing: no such file or directory"},
		{"broken spec", []string{"--spec", badSpec, "store=" + file}, 1, badSpec + ":3: services.store.quorum"},
	} {
		args := append([]string{e.zkf, "blob", "publish", "--store", e.originStore, "--origin", e.originURL}, tc.args...)
		out, errs, code := run(t, args...)
		t.Logf("%s: exit %d stdout %q err %q", tc.name, code, out, errs)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("%s: exit %d, %q; want exit %d, %q", tc.name, code, errs, tc.code, tc.want)
		}
	}
	if after := snapshot(t, e.addr); !reflect.DeepEqual(before, after) {
		t.Errorf("a refused publish changed ZooKeeper: %v", after)
	}
	if b, _ := os.ReadFile(specFile); string(b) != publishSpec {
		t.Errorf("a refused publish rewrote the spec:\n%s", b)
	}
	if _, err := os.Stat(filepath.Join(e.originStore, "sha256", h)); err == nil {
		t.Logf("note: blob imported into the store (harmless, content-addressed)")
	}

	out, errs, code := run(t, e.zkf, "blob", "publish", "--store", e.originStore, "--origin", e.originURL, "--spec", specFile, "store="+file)
	if code != 0 || !strings.HasPrefix(out, "sha256:"+h) {
		t.Fatalf("good publish: exit %d %q %q", code, out, errs)
	}
	if b, _ := os.ReadFile(specFile); !strings.Contains(string(b), "artifact: sha256:"+h) {
		t.Errorf("spec not rewritten:\n%s", b)
	}
}
