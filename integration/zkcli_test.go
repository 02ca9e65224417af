package integration

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"dcroll/coordinator"
	"dcroll/integration/zktest"
	"dcroll/spec"
	"dcroll/znodes"
)

const zkCli = "/usr/share/zookeeper/bin/zkCli.sh"

// zkCliGet runs ZooKeeper's own CLI (a Java client that shares no code with
// dcroll) and returns the last line of its output.
func zkCliRun(t *testing.T, addr string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, zkCli, append([]string{"-server", addr}, args...)...)
	cmd.Env = append(os.Environ(), "ZOO_LOG_DIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("zkCli.sh %v: %v\n%s", args, err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// TestZkCliSeesDocumentedLayout checks, with ZooKeeper's own client, that a
// push leaves the documented layout with JSON payloads under /dc.
func TestZkCliSeesDocumentedLayout(t *testing.T) {
	if testing.Short() {
		t.Skip("starts ZooKeeper and the Java CLI")
	}
	if _, err := os.Stat(zkCli); err != nil {
		t.Skip("zkCli.sh not installed (apt-get install zookeeper)")
	}
	srv := zktest.Start(t)
	c, err := znodes.Dial(context.Background(), znodes.Options{Servers: srv.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.EnsureSkeleton(); err != nil {
		t.Fatal(err)
	}
	hex := strings.Repeat("ab", 32)
	if _, err := c.Create(c.Paths().Blob(hex), znodes.MustEncode(&znodes.Blob{ID: "sha256:" + hex, Size: 1}), 0); err != nil {
		t.Fatal(err)
	}
	sp, err := spec.Parse("s.yaml", []byte("name: layout\nservices:\n  db: {version: \"1\", artifact: sha256:"+hex+", run: [./db]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := coordinator.Push(context.Background(), c, sp, coordinator.PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	ls := zkCliRun(t, srv.Addr(), "ls", "/dc")
	for _, want := range []string{"head", "specs", "history", "deploy", "current", "staging", "turns", "budget", "down", "agents", "progress", "blobs", "election"} {
		if !strings.Contains(ls, want) {
			t.Errorf("ls /dc = %s: missing %s", ls, want)
		}
	}
	var head struct {
		V      int    `json:"v"`
		SpecID string `json:"spec_id"`
		Name   string `json:"name"`
	}
	raw := zkCliRun(t, srv.Addr(), "get", "/dc/head")
	if err := json.Unmarshal([]byte(raw), &head); err != nil {
		t.Fatalf("get /dc/head is not JSON: %v: %s", err, raw)
	}
	if head.V != 1 || head.SpecID != sp.ID() || head.Name != "layout" {
		t.Fatalf("head = %+v", head)
	}
	var stored map[string]any
	raw = zkCliRun(t, srv.Addr(), "get", "/dc/specs/"+sp.ID())
	if err := json.Unmarshal([]byte(raw), &stored); err != nil || stored["name"] != "layout" {
		t.Fatalf("get /dc/specs/<id>: %v: %s", err, raw)
	}
}
