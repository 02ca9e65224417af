package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"dcroll/internal/buildinfo"
)

// unsetenv unsets name for the test (restored afterwards).
func unsetenv(t *testing.T, name string) {
	t.Helper()
	t.Setenv(name, "")
	os.Unsetenv(name)
}

func TestResolveMovesFlagsBeforeArguments(t *testing.T) {
	app := &App{NewApp(nil, nil)}
	for _, tc := range []struct {
		in   []string
		want []string
	}{
		{[]string{"status", "--zk", "zk1:2181"}, []string{"dcroll", "--zk=zk1:2181", "status"}},
		{[]string{"--log-level", "debug", "status", "--root", "/x", "--json"}, []string{"dcroll", "--log-level=debug", "--root=/x", "status", "--json"}},
		{[]string{"pause", "investigating", "--zk=a:1", "now"}, []string{"dcroll", "--zk=a:1", "pause", "--", "investigating", "now"}},
		{[]string{"push", "spec.yaml", "--dry-run"}, []string{"dcroll", "push", "--dry-run", "--", "spec.yaml"}},
		{[]string{"push", "-n", "spec.yaml"}, []string{"dcroll", "push", "-n", "--", "spec.yaml"}},
		{[]string{"blob", "fetch", "ID", "--data-dir", "D", "ID2"}, []string{"dcroll", "blob", "fetch", "--data-dir=D", "--", "ID", "ID2"}},
		{[]string{"blob", "publish", "a.tgz", "--origin", "http://o:7070", "--tracker", "t1", "--tracker=t2"},
			[]string{"dcroll", "blob", "publish", "--origin=http://o:7070", "--tracker=t1", "--tracker=t2", "--", "a.tgz"}},
		{[]string{"machine", "clear", "m2", "-s", "store", "--force"}, []string{"dcroll", "machine", "clear", "-s=store", "--force", "--", "m2"}},
		{[]string{"machine", "--service", "db", "list"}, []string{"dcroll", "machine", "list", "--service=db"}},
		{[]string{"pause", "--", "--json", "-x"}, []string{"dcroll", "pause", "--", "--json", "-x"}},
		{[]string{"spec", "validate", "-"}, []string{"dcroll", "spec", "validate", "--", "-"}},
		{[]string{"blob", "publish", "--origin", "-", "--piece-length", "-1", "f"}, []string{"dcroll", "blob", "publish", "--origin=-", "--piece-length=-1", "--", "f"}},
		{[]string{"help", "blob", "publish"}, []string{"dcroll", "blob", "publish", "--help"}},
		{[]string{"blob", "help", "publish"}, []string{"dcroll", "blob", "publish", "--help"}},
		{[]string{"push", "-h"}, []string{"dcroll", "push", "--help"}},
		{[]string{"help"}, []string{"dcroll", "--help"}},
		{[]string{"--version"}, []string{"dcroll", "version"}},
		{nil, []string{"dcroll"}},
	} {
		inv, err := app.resolve(tc.in)
		if err != nil {
			t.Errorf("resolve %q: %v", tc.in, err)
			continue
		}
		if got := inv.argv("dcroll"); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("resolve %q = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestFlagsAnywhere(t *testing.T) {
	srv, zkf := zkWithBlob(t)
	addr := srv.Addr()
	// A global flag after the command.
	if out, errs, code := run(t, "status", "--zk", addr); code != 0 || !strings.Contains(out, "HEAD: none") {
		t.Fatalf("status --zk ADDR: %d %s %s", code, out, errs)
	}
	// A flag after the arguments is a flag, not part of the reason: pause
	// has no --json, so this is a usage error and nothing is written.
	before := snapshot(t, addr)
	if _, errs, code := run(t, zkf, "pause", "investigating", "--json"); code != 2 || !strings.Contains(errs, "unknown flag --json") {
		t.Fatalf("pause investigating --json: %d %s", code, errs)
	}
	if !reflect.DeepEqual(before, snapshot(t, addr)) {
		t.Fatal("a refused pause changed ZooKeeper")
	}
	if _, errs, code := run(t, "pause", "investigating", "--zk", addr, "db"); code != 0 {
		t.Fatalf("pause: %s", errs)
	}
	if out, _, _ := run(t, zkf, "status"); !strings.Contains(out, ": investigating db\n") {
		t.Fatalf("pause reason is not %q:\n%s", "investigating db", out)
	}
	// "--" ends the flags.
	if _, errs, code := run(t, zkf, "pause", "--", "--json"); code != 0 {
		t.Fatalf("pause -- --json: %s", errs)
	}
	if out, _, _ := run(t, zkf, "status"); !strings.Contains(out, ": --json\n") {
		t.Fatalf("pause reason is not --json:\n%s", out)
	}
	if _, errs, code := run(t, zkf, "resume"); code != 0 {
		t.Fatal(errs)
	}
	// A flag after the spec file.
	out, errs, code := run(t, "push", writeSpec(t, goodSpec("v1", "1")), "--dry-run", "--zk="+addr)
	if code != 0 || !strings.Contains(out, "dry run") {
		t.Fatalf("push SPEC --dry-run: %d %s %s", code, out, errs)
	}
	if out, _, _ := run(t, zkf, "history", "--json"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("push SPEC --dry-run wrote history: %s", out)
	}
}

func TestUsageErrorsExitTwo(t *testing.T) {
	unsetenv(t, "DCROLL_ORIGIN")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"psuh"}, `unknown command "psuh": did you mean "push"?`},
		{[]string{"help", "psuh"}, `did you mean "push"?`},
		{[]string{"blob", "pubish"}, `dcroll blob: unknown command "pubish": did you mean "publish"?`},
		{[]string{"blob"}, "dcroll blob: missing command: publish, list, torrent, fetch"},
		{[]string{"push", "--dry", "x.yaml"}, `unknown flag --dry: did you mean "--dry-run"?`},
		{[]string{"push", "--no-such-flag", "x"}, "unknown flag --no-such-flag"},
		{[]string{"status", "-q"}, "unknown flag -q"},
		{[]string{"push"}, "expected one spec file"},
		{[]string{"rollback", "a", "b"}, "at most one spec id"},
		{[]string{"history", "extra"}, `dcroll history: takes no arguments, got "extra"`},
		{[]string{"--zk"}, "flag --zk needs a value"},
		{[]string{"--log-level", "verbose", "history"}, `invalid value "verbose" for --log-level: want debug|info|warn|error`},
		{[]string{"history", "--log-format=yaml"}, `invalid value "yaml" for --log-format: want text|json`},
		{[]string{"--zk-timeout=soon", "history"}, "zk-timeout"},
		{[]string{"status", "--interval", "often"}, "interval"},
		{[]string{"blob", "publish", "build/api.tar.gz"}, "dcroll blob publish: --origin is required (or DCROLL_ORIGIN)"},
		{[]string{"completion", "powershell"}, "want bash|zsh|fish"},
		{[]string{"machine", "clear", "m1", "m2"}, "expected one machine"},
	} {
		_, errs, code := run(t, tc.args...)
		if code != 2 || !strings.Contains(errs, tc.want) || !strings.Contains(errs, "--help") {
			t.Errorf("dcroll %s: exit %d, %q; want exit 2 and %q and where to read more", strings.Join(tc.args, " "), code, errs, tc.want)
		}
	}
	t.Setenv("DCROLL_LOG_LEVEL", "verbose")
	if _, errs, code := run(t, "history"); code != 2 || !strings.Contains(errs, "debug|info|warn|error") {
		t.Errorf("DCROLL_LOG_LEVEL=verbose: exit %d %q", code, errs)
	}
	unsetenv(t, "DCROLL_LOG_LEVEL")
	// The real binary: the same exit statuses, one line on stderr.
	for _, args := range [][]string{{"psuh"}, {"--log-level", "verbose", "history"}, {"blob", "publish", "x"}, {"version", "extra"}} {
		if out := runBinary(t, 2, args...); strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.HasPrefix(out, "dcroll: ") {
			t.Errorf("dcroll %v: output %q is not one line", args, out)
		}
	}
}

func TestZooKeeperRefusedAtOnce(t *testing.T) {
	start := time.Now()
	_, errs, code := run(t, "--zk=127.0.0.1:1", "--zk-timeout=10s", "history")
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("a refused connection took %s to report", took)
	}
	for _, want := range []string{"connection refused at 127.0.0.1:1", "echo ruok | nc 127.0.0.1 1", "--zk / DCROLL_ZK"} {
		if !strings.Contains(errs, want) {
			t.Errorf("error %q does not say %q", errs, want)
		}
	}
	if code != 1 || strings.Contains(errs, "make zk") {
		t.Errorf("exit %d, %q: want 1 and no make zk (there is no Makefile where dcroll is installed)", code, errs)
	}
}

func TestVersion(t *testing.T) {
	bi := buildinfo.Get()
	want := "dcroll " + bi.Version + " (commit " + bi.Commit + ", " + bi.GoVersion + ")\n"
	for _, args := range [][]string{{"--version"}, {"version"}, {"--zk=x:1", "version"}} {
		if out, errs, code := run(t, args...); code != 0 || out != want {
			t.Errorf("dcroll %v: %d %q %q, want %q", args, code, out, errs, want)
		}
	}
	if out, _, _ := run(t, "version", "--json"); !strings.Contains(out, `"go_version": "`+bi.GoVersion+`"`) {
		t.Errorf("version --json: %s", out)
	}
	if testing.Short() {
		return
	}
	exe := filepath.Join(t.TempDir(), "dcroll")
	build := exec.Command("go", "build", "-o", exe, "-ldflags", "-X main.version=v1.2.3 -X main.commit=abc1234", ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(exe, "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "dcroll v1.2.3 (commit abc1234, go") {
		t.Fatalf("-ldflags -X main.version: %v %q", err, out)
	}
}

func TestHelpCommand(t *testing.T) {
	for _, tc := range [][2][]string{
		{{"help", "push"}, {"push", "--help"}},
		{{"help", "blob", "publish"}, {"blob", "publish", "--help"}},
		{{"blob", "help", "publish"}, {"blob", "publish", "-h"}},
		{{"help", "machine"}, {"machine", "--help"}},
		{{"help"}, {"--help"}},
	} {
		got, errs, code := run(t, tc[0]...)
		want, _, _ := run(t, tc[1]...)
		if code != 0 || got != want || !strings.Contains(got, "USAGE") {
			t.Errorf("dcroll %v: %d %q, want the output of dcroll %v:\n%s", tc[0], code, errs, tc[1], got)
		}
	}
	if out, _, _ := run(t, "machine", "--help"); strings.Contains(out, "help, h") {
		t.Errorf("machine --help lists a help subcommand:\n%s", out)
	}
}

// TestHelpExamplesResolve checks that every example command line of every
// --help text is a valid invocation: known commands and flags, required
// flags given, arguments only where the command takes some.
func TestHelpExamplesResolve(t *testing.T) {
	unsetenv(t, "DCROLL_ORIGIN")
	app := &App{NewApp(nil, nil)}
	texts := []string{app.Description}
	var walk func([]*cli.Command)
	walk = func(cmds []*cli.Command) {
		for _, c := range cmds {
			texts = append(texts, c.Description)
			walk(c.Subcommands)
		}
	}
	walk(app.Commands)
	n := 0
	for _, text := range texts {
		text = strings.ReplaceAll(text, "\\\n", " ")
		for _, line := range strings.Split(text, "\n") {
			line = strings.TrimSpace(line)
			if !strings.HasPrefix(line, "dcroll ") {
				continue
			}
			line, _, _ = strings.Cut(line, "#")
			for _, sep := range []string{" | ", " && ", " > "} {
				line, _, _ = strings.Cut(line, sep)
			}
			if strings.ContainsAny(line, "<>()") { // prose, not a command line
				continue
			}
			n++
			if _, err := app.resolve(strings.Fields(line)[1:]); err != nil {
				t.Errorf("help example %q: %v", line, err)
			}
		}
	}
	if n < 20 {
		t.Fatalf("only %d examples found", n)
	}
}
