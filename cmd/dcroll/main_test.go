package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"dcroll/coordinator"
	"dcroll/integration/zkserver"
	"dcroll/integration/zktest"
	"dcroll/spec"
	"dcroll/znodes"
)

// run executes the dcroll CLI in-process and returns stdout, stderr and the
// exit status main would use.
func run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	// Locked: the ZooKeeper library's goroutines may still log a line
	// after its connection was closed and Run returned.
	var out, errb lockedBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := Run(ctx, &out, &errb, append([]string{"dcroll"}, args...))
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
	// db has two members: m1 registered now, m2 absent and mid-step; a db
	// build with another run line halted a rollout.
	c := dialT(t, srv.Addr())
	addMember(t, c, "db", "m1")
	addMember(t, c, "db", "m2")
	register(t, c, "db", "m1")
	addStep(t, c, "db", "m2")
	badDB := strings.Replace(goodSpec("v2", "2"), `run: ["./db"]`, `run: ["./db", "--fast"]`, 1)
	addBad(t, c, badDB, "db")
	before := snapshot(t, srv.Addr())

	cases := []struct {
		name string
		spec string   // pushed (after args) when not ""
		args []string // the command; default push
		want []string // words the one-line error must contain
	}{
		{"malformed yaml", "name: x\nservices: [oops\n", nil, []string{"spec.yaml"}},
		{"cycle", strings.Replace(goodSpec("v2", "2"), `    quorum: 2`, "    quorum: 2\n    depends_on: [api]", 1), nil, []string{"cycle", "api", "db"}},
		{"unknown dependency", strings.Replace(goodSpec("v2", "2"), "depends_on: [db]", "depends_on: [dbx]", 1), nil, []string{"dbx", "depends_on"}},
		{"unknown field", strings.Replace(goodSpec("v2", "2"), "quorum: 2", "quorom: 2", 1), nil, []string{"quorom"}},
		{"unpublished blob", strings.Replace(goodSpec("v2", "2"), "sha256:"+blobHex+"\n    run: [\"./db\"]", "sha256:"+strings.Repeat("b", 64)+"\n    run: [\"./db\"]", 1), nil, []string{"not published", "dcroll blob publish"}},
		{"rollout unfinished", goodSpec("v2", "2"), nil, []string{"unfinished", "--supersede"}},
		{"bad build", badDB, []string{"push", "--supersede"}, []string{"push: db 2 (build ", "halted a rollout on m2 at 2026-12-01 22:10:03 UTC", "--force"}},
		{"bad build, dry run", badDB, []string{"push", "--supersede", "--dry-run"}, []string{"halted a rollout", "--force"}},
		{"quorum larger than members", strings.Replace(goodSpec("v2", "2"), "quorum: 2", "quorum: 3", 1), []string{"push", "--supersede"},
			[]string{"push: db: quorum 3 is larger than its 2 members (m1,m2): lower the quorum or add machines"}},
		{"machine remove registered", "", []string{"machine", "remove", "m1"}, []string{"m1 is registered now", "stop its agent first, or --force"}},
		{"machine remove unknown", "", []string{"machine", "remove", "m3"}, []string{`no machine "m3"`, `did you mean "m1"?`}},
		{"machine remove unknown service", "", []string{"machine", "remove", "m2", "--service", "dbb"}, []string{`did you mean "db"?`}},
		{"machine clear without step", "", []string{"machine", "clear", "m1", "--service", "db"}, []string{"m1 has no step record in db, nothing to clear (mid-step: m2)"}},
		{"machine clear not a member", "", []string{"machine", "clear", "m1", "--service", "api"}, []string{`no machine "m1" in api`}},
		{"machine list unknown service", "", []string{"machine", "list", "--service", "apx"}, []string{`did you mean "api"?`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{zkf}, tc.args...)
			if tc.args == nil {
				args = append(args, "push")
			}
			if tc.spec != "" {
				args = append(args, writeSpec(t, tc.spec))
			}
			_, errs, code := run(t, args...)
			if code != 1 {
				t.Fatalf("exit %d, want 1: %s", code, errs)
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
				t.Error("a refused command changed ZooKeeper")
			}
		})
	}
}

func dialT(t *testing.T, addr string) *znodes.Conn {
	t.Helper()
	c, err := znodes.Dial(context.Background(), znodes.Options{Servers: addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func addMember(t *testing.T, c *znodes.Conn, svc, m string) {
	t.Helper()
	if err := c.EnsurePath(c.Paths().Members(svc)); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 1, 20, 31, 0, 0, time.UTC)
	if _, err := c.Create(c.Paths().Member(svc, m), znodes.MustEncode(&znodes.Member{Machine: m, Service: svc, Rack: "r1", DC: "par1", Version: "1", Joined: at, Seen: at}), 0); err != nil {
		t.Fatal(err)
	}
}

// register creates m's live registration of svc (ephemeral, on c's session).
func register(t *testing.T, c *znodes.Conn, svc, m string) {
	t.Helper()
	if err := c.EnsurePath(c.Paths().Current(svc)); err != nil {
		t.Fatal(err)
	}
	cur := &znodes.Current{Machine: m, Service: svc, Rack: "r1", DC: "par1", Version: "1", State: znodes.StateRunning, Healthy: true}
	if _, err := c.Create(c.Paths().CurrentMachine(svc, m), znodes.MustEncode(cur), zk.FlagEphemeral); err != nil {
		t.Fatal(err)
	}
}

func addStep(t *testing.T, c *znodes.Conn, svc, m string) {
	t.Helper()
	if err := c.EnsurePath(c.Paths().Down(svc)); err != nil {
		t.Fatal(err)
	}
	d := &znodes.Down{Machine: m, Rack: "r1", Kind: "upgrade", From: "1", To: "2", At: time.Date(2026, 12, 1, 22, 0, 0, 0, time.UTC)}
	if _, err := c.Create(c.Paths().DownMachine(svc, m), znodes.MustEncode(d), 0); err != nil {
		t.Fatal(err)
	}
}

// addBad records the build of svc in the spec text y as having halted a rollout.
func addBad(t *testing.T, c *znodes.Conn, y, svc string) string {
	t.Helper()
	sp, err := spec.Parse("bad.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	s := sp.Services[svc]
	key := znodes.BadKey(s.BuildID(), "")
	b := &znodes.BadBuild{Key: key, Service: svc, Version: s.Version, Build: s.BuildID(), Kind: "upgrade", SpecID: sp.ID(),
		Reason: "not healthy after 1m", Machine: "m2", At: time.Date(2026, 12, 1, 22, 10, 3, 0, time.UTC)}
	if _, err := c.Create(c.Paths().Bad(key), znodes.MustEncode(b), 0); err != nil {
		t.Fatal(err)
	}
	return key
}

func TestCLIMachineAndBadCommands(t *testing.T) {
	srv, zkf := zkWithBlob(t)
	if _, errs, code := run(t, zkf, "push", writeSpec(t, goodSpec("v1", "1"))); code != 0 {
		t.Fatalf("push v1: %s", errs)
	}
	c := dialT(t, srv.Addr())
	for _, m := range []string{"m1", "m2", "m3"} {
		addMember(t, c, "db", m)
	}
	register(t, c, "db", "m1")
	register(t, c, "db", "m2")
	addStep(t, c, "db", "m3")

	out, errs, code := run(t, zkf, "status")
	if code != 0 || !strings.Contains(out, "2/3 available (quorum 2)") || !regexp.MustCompile(`m3 .*mid-step \(upgrade 1 -> 2`).MatchString(out) {
		t.Fatalf("status: %d %s %s", code, out, errs)
	}
	out, _, code = run(t, zkf, "machine", "list")
	if code != 0 || !regexp.MustCompile(`db\s+m1\s+par1/r1\s+available\s+1\s`).MatchString(out) || !strings.Contains(out, "LAST SEEN") {
		t.Fatalf("machine list: %d %s", code, out)
	}
	if _, errs, code := run(t, zkf, "machine", "clear", "m3"); code != 2 || !strings.Contains(errs, "--service is required") {
		t.Fatalf("clear without --service: %d %s", code, errs)
	}
	if out, errs, code := run(t, zkf, "machine", "clear", "m3", "--service", "db"); code != 0 || !strings.Contains(out, "cleared m3's upgrade step in db") {
		t.Fatalf("clear: %d %s %s", code, out, errs)
	}
	out, _, _ = run(t, zkf, "status")
	if !regexp.MustCompile(`m3\s+par1/r1\s+1\s+absent \(last seen 1 at 2026-12-01 20:31:00\)`).MatchString(out) {
		t.Fatalf("status does not show m3 absent:\n%s", out)
	}
	out, _, _ = run(t, zkf, "status", "--json")
	var st struct {
		Services []struct {
			Service string
			Members []struct{ Machine, State string }
		}
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	var states []string
	for _, s := range st.Services {
		for _, m := range s.Members {
			states = append(states, s.Service+"/"+m.Machine+":"+m.State)
		}
	}
	if want := []string{"db/m1:available", "db/m2:available", "db/m3:absent"}; !reflect.DeepEqual(states, want) {
		t.Fatalf("status --json members = %v, want %v", states, want)
	}
	if out, errs, code := run(t, zkf, "machine", "remove", "m3"); code != 0 || !strings.Contains(out, "removed m3 from db") {
		t.Fatalf("remove: %d %s %s", code, out, errs)
	}
	out, _, _ = run(t, zkf, "machine", "list", "--json")
	var rows []struct{ Service, Machine string }
	if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) != 2 {
		t.Fatalf("machine list --json after remove: %v %s", err, out)
	}

	// Bad builds: listed, refused, forced.
	if out, _, _ := run(t, zkf, "bad", "list"); !strings.Contains(out, "no bad builds") {
		t.Fatalf("bad list (none): %s", out)
	}
	v2 := strings.Replace(goodSpec("v2", "2"), `run: ["./db"]`, `run: ["./db", "--fast"]`, 1)
	v2 = strings.Replace(v2, "quorum: 2", "quorum: 1", 1) // two members left: one may step
	key := addBad(t, c, v2, "db")
	if out, _, _ := run(t, zkf, "bad", "list"); !strings.Contains(out, key) || !strings.Contains(out, "not healthy after 1m") {
		t.Fatalf("bad list: %s", out)
	}
	out, errs, code = run(t, zkf, "push", "--supersede", "--force", writeSpec(t, v2))
	if code != 0 || !strings.Contains(out, "forced past bad build "+key) {
		t.Fatalf("push --force: %d %s %s", code, out, errs)
	}
	if out, _, _ := run(t, zkf, "bad", "list", "--json"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("bad list after --force: %s", out)
	}

	// A halted service pushed again with the same build stays halted.
	q, err := coordinator.ReadQueue(c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := coordinator.Halt(c, q[0], "not healthy after 1m", "m2"); err != nil {
		t.Fatal(err)
	}
	out, errs, code = run(t, zkf, "push", "--supersede", writeSpec(t, strings.Replace(v2, "name: v2", "name: v2b", 1)))
	if code != 0 || !strings.Contains(out, "superseded halted db 2 (halted on m2: not healthy after 1m)") || !strings.Contains(out, "db stays halted") ||
		!strings.Contains(out, "unfinished in the superseded rollout; HALTED: still halted") {
		t.Fatalf("push over a halt: %d %s %s", code, out, errs)
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
	for _, cmd := range [][]string{{"push"}, {"rollback"}, {"machine"}, {"machine", "list"}, {"machine", "remove"}, {"machine", "clear"}, {"bad"}, {"status"}} {
		out, _, _ = run(t, append(cmd, "--help")...)
		if !strings.Contains(out, "Examples") {
			t.Errorf("%v --help does not teach: %s", cmd, out)
		}
	}
	for cmd, flag := range map[string]string{"push": "--force", "rollback": "--force", "coordinator": "--no-members-after"} {
		if out, _, _ = run(t, cmd, "--help"); !strings.Contains(out, flag) {
			t.Errorf("%s --help lacks %s", cmd, flag)
		}
	}
	out, _, _ = run(t, "push", "--help")
	if !strings.Contains(out, "--supersede") {
		t.Errorf("push --help lacks --supersede: %s", out)
	}
}
