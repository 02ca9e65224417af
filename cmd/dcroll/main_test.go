package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"dcroll/integration/zkserver"
	"dcroll/integration/zktest"
	"dcroll/znodes"
)

// run executes the dcroll CLI in-process and returns stdout, stderr and the
// exit status main would use.
func run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := NewApp(&out, &errb).RunContext(ctx, append([]string{"dcroll"}, args...))
	if err != nil {
		return out.String(), oneLine(err), exitCode(err)
	}
	return out.String(), errb.String(), 0
}

const blobHex = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

func writeSpec(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "spec.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func goodSpec(name, ver string) string {
	return `name: ` + name + `
services:
  db:
    version: "` + ver + `"
    artifact: sha256:` + blobHex + `
    run: ["./db"]
    quorum: 2
  api:
    version: "1"
    artifact: sha256:` + blobHex + `
    run: ["./api"]
    depends_on: [db]
`
}

// snapshot lists every znode path and data under the root, read with a raw
// connection independent of the code under test.
func snapshot(t *testing.T, addr string) map[string]string {
	t.Helper()
	zc := zktest.Connect(t, addr, 5*time.Second)
	out := map[string]string{}
	var walk func(p string)
	walk = func(p string) {
		data, _, err := zc.Get(p)
		if err != nil {
			return
		}
		out[p] = string(data)
		kids, _, _ := zc.Children(p)
		for _, k := range kids {
			walk(strings.TrimSuffix(p, "/") + "/" + k)
		}
	}
	walk("/dc")
	return out
}

// zkWithBlob starts a real ZooKeeper with blobHex published and returns it
// with the --zk flag that points at it.
func zkWithBlob(t *testing.T) (*zkserver.Server, string) {
	t.Helper()
	srv := zktest.Start(t)
	c, err := znodes.Dial(context.Background(), znodes.Options{Servers: srv.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.EnsureSkeleton(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(c.Paths().Blob(blobHex), znodes.MustEncode(&znodes.Blob{ID: "sha256:" + blobHex}), 0); err != nil {
		t.Fatal(err)
	}
	return srv, "--zk=" + srv.Addr()
}

func TestCLIBadInputChangesNothing(t *testing.T) {
	srv, zkf := zkWithBlob(t)
	if _, errs, code := run(t, zkf, "push", writeSpec(t, goodSpec("v1", "1"))); code != 0 {
		t.Fatalf("push v1: %s", errs)
	}
	before := snapshot(t, srv.Addr())

	cases := []struct {
		name, spec string
		want       []string // words the one-line error must contain
	}{
		{"malformed yaml", "name: x\nservices: [oops\n", []string{"spec.yaml"}},
		{"cycle", strings.Replace(goodSpec("v2", "2"), `    quorum: 2`, "    quorum: 2\n    depends_on: [api]", 1), []string{"cycle", "api", "db"}},
		{"unknown dependency", strings.Replace(goodSpec("v2", "2"), "depends_on: [db]", "depends_on: [dbx]", 1), []string{"dbx", "depends_on"}},
		{"unknown field", strings.Replace(goodSpec("v2", "2"), "quorum: 2", "quorom: 2", 1), []string{"quorom"}},
		{"unpublished blob", strings.Replace(goodSpec("v2", "2"), "sha256:"+blobHex+"\n    run: [\"./db\"]", "sha256:"+strings.Repeat("b", 64)+"\n    run: [\"./db\"]", 1), []string{"not published", "dcroll blob publish"}},
		{"rollout unfinished", goodSpec("v2", "2"), []string{"unfinished", "--supersede"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, errs, code := run(t, zkf, "push", writeSpec(t, tc.spec))
			if code == 0 {
				t.Fatal("push succeeded")
			}
			if strings.Contains(errs, "\n") {
				t.Errorf("error is not one line: %q", errs)
			}
			for _, w := range tc.want {
				if !strings.Contains(errs, w) {
					t.Errorf("error %q does not mention %q", errs, w)
				}
			}
			if after := snapshot(t, srv.Addr()); !reflect.DeepEqual(before, after) {
				t.Error("a refused push changed ZooKeeper")
			}
		})
	}
}

// TestMain lets the test binary act as the dcroll binary for subprocess
// tests (real exit codes, real os.Args).
func TestMain(m *testing.M) {
	if os.Getenv("DCROLL_TEST_AS_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runBinary runs this test binary as dcroll and checks its exit status.
func runBinary(t *testing.T, wantCode int, args ...string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Args[0] = "dcroll"
	cmd.Env = append(os.Environ(), "DCROLL_TEST_AS_MAIN=1")
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if code != wantCode {
		t.Fatalf("dcroll %v: exit %d, want %d: %s", args, code, wantCode, out)
	}
	return string(out)
}

func TestBinaryExitCodes(t *testing.T) {
	out := runBinary(t, 1, "--zk=127.0.0.1:1", "--zk-timeout=500ms", "history")
	if !strings.HasPrefix(out, "dcroll: ") || strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Errorf("error output %q is not one line starting with dcroll:", out)
	}
	runBinary(t, 2, "rollback", "a", "b")
	bad := writeSpec(t, "name: x\nservices:\n  a: {version: 1, artifact: nope, run: [x]}\n")
	out = runBinary(t, 1, "spec", "validate", bad)
	if !strings.Contains(out, "artifact") {
		t.Errorf("validate error %q does not name the field", out)
	}
}

func TestCLIZooKeeperDown(t *testing.T) {
	// run's 30s context turns a hang into a different error, failing this.
	_, errs, code := run(t, "--zk=127.0.0.1:1", "--zk-timeout=1s", "status")
	if code != 1 || !strings.Contains(errs, "unreachable") || !strings.Contains(errs, "--zk") {
		t.Fatalf("code %d, err %q", code, errs)
	}
}

func TestCLIPushStatusHistoryRollback(t *testing.T) {
	_, zkf := zkWithBlob(t)
	out, errs, code := run(t, zkf, "push", "--dry-run", writeSpec(t, goodSpec("v1", "1")))
	if code != 0 || !strings.Contains(out, "dry run") || !strings.Contains(out, "db") {
		t.Fatalf("dry run: %d %s %s", code, out, errs)
	}
	if out, _, _ := run(t, zkf, "history", "--json"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("dry run wrote history: %s", out)
	}
	if _, errs, code := run(t, zkf, "push", writeSpec(t, goodSpec("v1", "1"))); code != 0 {
		t.Fatal(errs)
	}
	out, _, code = run(t, zkf, "status", "--json")
	var st struct {
		Head  struct{ Name string }
		Queue []struct{ Service string }
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != 0 {
		t.Fatalf("status --json: %v: %s", err, out)
	}
	if st.Head.Name != "v1" || len(st.Queue) != 2 || st.Queue[0].Service != "db" {
		t.Fatalf("status = %+v", st)
	}
	if _, errs, code := run(t, zkf, "push", "--supersede", writeSpec(t, goodSpec("v2", "2"))); code != 0 {
		t.Fatal(errs)
	}
	if out, errs, code := run(t, zkf, "rollback"); code != 0 || !strings.Contains(out, "rollback") {
		t.Fatalf("rollback: %s %s", out, errs)
	}
	out, _, _ = run(t, zkf, "history", "--json")
	var h []znodes.HistoryEntry
	if err := json.Unmarshal([]byte(out), &h); err != nil {
		t.Fatal(err)
	}
	if len(h) != 3 || h[2].Action != "rollback" || h[2].Name != "v1" {
		t.Fatalf("history = %+v", h)
	}
	if out, _, code := run(t, zkf, "spec", "show", h[1].To[:8]); code != 0 || !strings.Contains(out, "version: \"2\"") {
		t.Fatalf("spec show: %s", out)
	}
}

func TestCLIUsageAndCompletion(t *testing.T) {
	if _, _, code := run(t, "push"); code != 2 {
		t.Errorf("push without a spec: exit %d, want 2", code)
	}
	if _, _, code := run(t, "push", "--no-such-flag", "x"); code != 2 {
		t.Errorf("unknown flag: exit %d, want 2", code)
	}
	out, _, code := run(t, "completion", "bash")
	if code != 0 || !strings.Contains(out, "complete -o bashdefault") {
		t.Errorf("completion bash: %d %q", code, out)
	}
	out = runBinary(t, 0, "--generate-bash-completion")
	for _, cmd := range []string{"push", "rollback", "status", "history"} {
		if !strings.Contains(out, cmd) {
			t.Errorf("completion candidates %q lack %s", out, cmd)
		}
	}
	out, _, _ = run(t, "push", "--help")
	if !strings.Contains(out, "--supersede") || !strings.Contains(out, "Examples") {
		t.Errorf("push --help does not teach: %s", out)
	}
}
