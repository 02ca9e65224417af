package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

// stubbedApp is the dcroll app with every command body replaced by one
// that records that it ran: completion must never run one.
func stubbedApp(out *bytes.Buffer) (*App, *[]string) {
	ran := new([]string)
	app := NewApp(out, out)
	var stub func([]*cli.Command)
	stub = func(cmds []*cli.Command) {
		for _, c := range cmds {
			name := c.Name
			c.Action = func(*cli.Context) error { *ran = append(*ran, name); return nil }
			c.Before, c.After = nil, nil
			stub(c.Subcommands)
		}
	}
	stub(app.Commands)
	app.Action = func(*cli.Context) error { *ran = append(*ran, "dcroll"); return nil }
	return &App{app}, ran
}

// commandPaths lists every command and subcommand path.
func commandPaths(cmds []*cli.Command, prefix []string) [][]string {
	var paths [][]string
	for _, c := range cmds {
		p := append(slices.Clone(prefix), c.Name)
		paths = append(paths, p)
		paths = append(paths, commandPaths(c.Subcommands, p)...)
	}
	return paths
}

// TestCompletionNeverRunsACommand runs, for every command, the command
// lines the completion scripts send (and those older urfave/cli scripts
// sent: --generate-bash-completion after "--", after a partial flag, in the
// middle, as the value of a flag) and checks that no command body ran and
// that ZooKeeper is unchanged.
func TestCompletionNeverRunsACommand(t *testing.T) {
	srv, zkf := zkWithBlob(t)
	if _, errs, code := run(t, zkf, "push", writeSpec(t, goodSpec("v1", "1"))); code != 0 {
		t.Fatal(errs)
	}
	c := dialT(t, srv.Addr())
	addMember(t, c, "db", "m1")
	before := snapshot(t, srv.Addr())

	var out bytes.Buffer
	app, ran := stubbedApp(&out)
	tails := [][]string{
		{""}, {"-"}, {"--"}, {"--j"}, {"--", ""}, {"--", "--"}, {"--", "x", ""}, {"x", ""}, {"x", "--"},
		{"--zk", ""}, {"--log-level", ""}, {"--log-level=", ""}, {"--output", ""}, {"-s", ""}, {"help", ""},
	}
	legacy := [][]string{
		{legacyComplete}, {"--", legacyComplete}, {"--", "--", legacyComplete}, {"reason", legacyComplete},
		{"--json", legacyComplete}, {legacyComplete, "x"}, {"--zk", legacyComplete}, {"--service", legacyComplete},
		{"--", "x", legacyComplete}, {"-", legacyComplete},
	}
	paths := append(commandPaths(app.Commands, nil), nil)
	lines := 0
	for _, path := range paths {
		for _, global := range [][]string{nil, {zkf}} {
			var argvs [][]string
			for _, tail := range tails {
				words := slices.Concat(global, path, tail)
				argvs = append(argvs, slices.Concat([]string{"dcroll", completeCommand}, words))
			}
			for _, tail := range legacy {
				argvs = append(argvs, slices.Concat([]string{"dcroll"}, global, path, tail))
				argvs = append(argvs, slices.Concat([]string{"dcroll"}, path, tail, global))
			}
			for _, argv := range argvs {
				lines++
				out.Reset()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := app.RunContext(ctx, argv)
				cancel()
				if err != nil {
					t.Errorf("%q: %v", argv, err)
				}
				if len(*ran) > 0 {
					t.Fatalf("%q ran the body of %v", argv, *ran)
				}
			}
		}
	}
	t.Logf("%d completion command lines over %d commands", lines, len(paths))
	// The real binary, with the lines that once paused, resumed and pushed.
	for _, args := range [][]string{
		{"pause", "--", legacyComplete}, {"pause", legacyComplete}, {"resume", legacyComplete},
		{"push", legacyComplete}, {"push", "--", legacyComplete}, {"rollback", "--", legacyComplete},
		{"machine", "remove", "m1", "--", legacyComplete}} {
		runBinary(t, 0, append([]string{zkf}, args...)...)
	}
	for _, args := range [][]string{{completeCommand, zkf, "pause", "--", ""}, {completeCommand, zkf, "resume", ""}, {completeCommand, "push", zkf, "--", "--"}} {
		runBinary(t, 0, args...)
	}
	if after := snapshot(t, srv.Addr()); !reflect.DeepEqual(before, after) {
		t.Fatalf("completion changed ZooKeeper:\nbefore %v\nafter  %v", before, after)
	}
}

func complete(t *testing.T, words ...string) []string {
	t.Helper()
	var out bytes.Buffer
	app, ran := stubbedApp(&out)
	if err := app.RunContext(context.Background(), append([]string{"dcroll", completeCommand}, words...)); err != nil {
		t.Fatal(err)
	}
	if len(*ran) > 0 {
		t.Fatalf("completing %q ran %v", words, *ran)
	}
	return strings.Fields(out.String())
}

func TestCompletionCandidates(t *testing.T) {
	srv, zkf := zkWithBlob(t)
	out, errs, code := run(t, zkf, "push", "--json", writeSpec(t, goodSpec("v1", "1")))
	if code != 0 {
		t.Fatal(errs)
	}
	specID := strings.Split(strings.Split(out, `"spec_id": "`)[1], `"`)[0]
	addMember(t, dialT(t, srv.Addr()), "db", "m1")
	t.Setenv("DCROLL_ZK", srv.Addr())

	for _, tc := range []struct {
		words         []string
		want, exclude []string // want: exactly these when exclude is nil
	}{
		{[]string{""}, []string{"push", "rollback", "status", "blob", "completion", "version"}, []string{"help", "h", completeCommand}},
		{[]string{"p"}, []string{"push", "plan", "pause", "promote"}, nil},
		{[]string{"push", ""}, []string{fileMarker}, nil},
		{[]string{"push", "x.yaml", ""}, []string{}, nil},
		{[]string{"push", "--"}, []string{"--dry-run", "--supersede", "--force", "--json", "--zk", "--log-level", "--help"}, []string{"--watch"}},
		{[]string{"push", "--", ""}, []string{fileMarker}, nil},
		{[]string{"push", "--", "--"}, []string{fileMarker}, []string{"--dry-run"}},
		{[]string{"status", "--z"}, []string{"--zk", "--zk-auth", "--zk-tls-ca", "--zk-tls-cert", "--zk-tls-key", "--zk-timeout"}, nil},
		{[]string{"--zk", ""}, []string{}, nil},
		{[]string{"--zk", "x"}, []string{}, nil},
		{[]string{"--zk", "a:1", ""}, []string{"push"}, []string{}},
		{[]string{"--log-level", ""}, []string{"debug", "info", "warn", "error"}, nil},
		{[]string{"status", "--log-format", "j"}, []string{"json"}, nil},
		{[]string{"--log-level=w"}, []string{"--log-level=warn"}, nil},
		{[]string{"agent", "--config", ""}, []string{fileMarker}, nil},
		{[]string{"blob", ""}, []string{"publish", "list", "torrent", "fetch"}, nil},
		{[]string{"blob", "publish", "--origin", ""}, []string{}, nil},
		{[]string{"blob", "publish", ""}, []string{fileMarker}, nil},
		{[]string{"spec", ""}, []string{"validate", "show"}, nil},
		{[]string{"spec", "validate", "a.yaml", ""}, []string{fileMarker}, nil},
		{[]string{"completion", ""}, []string{"bash", "zsh", "fish"}, nil},
		{[]string{"help", "bl"}, []string{"blob"}, nil},
		{[]string{"help", "blob", ""}, []string{"publish", "list", "torrent", "fetch"}, nil},
		{[]string{"pause", ""}, []string{}, nil},
		{[]string{"pause", "--", ""}, []string{}, nil},
		{[]string{"machine", "clear", "--service", ""}, []string{}, nil},
		{[]string{"rollback", ""}, []string{specID}, nil},
		{[]string{"spec", "show", specID[:3]}, []string{specID}, nil},
		{[]string{"blob", "torrent", ""}, []string{blobHex}, nil},
		{[]string{"blob", "fetch", blobHex, "--data-dir", "/d", ""}, []string{blobHex}, nil},
		{[]string{"machine", "remove", ""}, []string{"m1"}, nil},
		{[]string{"--zk=127.0.0.1:1", "rollback", ""}, []string{}, nil},
		{[]string{"rollback", "--zk", "127.0.0.1:1", ""}, []string{}, nil},
	} {
		got := complete(t, tc.words...)
		if tc.exclude == nil {
			if !slices.Equal(got, tc.want) {
				t.Errorf("complete %q = %q, want %q", tc.words, got, tc.want)
			}
			continue
		}
		for _, w := range tc.want {
			if !slices.Contains(got, w) {
				t.Errorf("complete %q = %q, lacks %q", tc.words, got, w)
			}
		}
		for _, x := range tc.exclude {
			if slices.Contains(got, x) {
				t.Errorf("complete %q = %q, offers %q", tc.words, got, x)
			}
		}
	}
	// Legacy protocol: the candidates of the same position.
	if got := strings.Fields(runBinary(t, 0, "push", legacyComplete)); !slices.Equal(got, []string{fileMarker}) {
		t.Errorf("push --generate-bash-completion = %q", got)
	}
	if got := strings.Fields(runBinary(t, 0, "--log", legacyComplete)); !slices.Equal(got, []string{"--log-level", "--log-format"}) {
		t.Errorf("--log --generate-bash-completion (a partial flag) = %q", got)
	}
}

// TestCompletionScripts runs the scripts in their shells (those installed)
// against this test binary as dcroll.
func TestCompletionScripts(t *testing.T) {
	srv, zkf := zkWithBlob(t)
	before := snapshot(t, srv.Addr())
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	wrapper := fmt.Sprintf("#!/bin/sh\nDCROLL_TEST_AS_MAIN=1 exec %q \"$@\"\n", exe)
	if err := os.WriteFile(filepath.Join(bin, "dcroll"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "nightly.yaml"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	for _, script := range []string{bashCompletion, zshCompletion, fishCompletion} {
		if strings.Contains(script, legacyComplete) || !strings.Contains(script, completeCommand) {
			t.Errorf("a script does not use dcroll %s:\n%s", completeCommand, script)
		}
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	for _, tc := range []struct {
		line string // the command line; the cursor is at its end
		want string // COMPREPLY, one per line
	}{
		{"dcroll pa", "pause"},
		{"dcroll " + zkf + " pause --", "--zk\n--root\n--zk-auth\n--zk-tls-ca\n--zk-tls-cert\n--zk-tls-key\n--zk-timeout\n--log-level\n--log-format\n--version\n--help"},
		{"dcroll " + zkf + " pause -- ", ""},
		{"dcroll " + zkf + " resume ", ""},
		{"dcroll push ", "nightly.yaml"},
		{"dcroll push --dr", "--dry-run"},
		{"dcroll --log-level ", "debug\ninfo\nwarn\nerror"},
		{"dcroll --zk ", ""},
		{"dcroll " + zkf + " blob torrent ", blobHex},
		{"dcroll completion ", "bash\nzsh\nfish"},
	} {
		script := bashCompletion + `
COMP_LINE=` + shellQuote(tc.line) + `
read -ra COMP_WORDS <<< "$COMP_LINE"
[[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
_dcroll_complete
printf '%s\n' "${COMPREPLY[@]}"
`
		cmd := exec.Command("bash", "--norc", "--noprofile", "-c", script)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", tc.line, err, out)
		}
		if got := strings.TrimSpace(string(out)); got != tc.want {
			t.Errorf("bash %q<TAB> = %q, want %q", tc.line, got, tc.want)
		}
	}
	if after := snapshot(t, srv.Addr()); !reflect.DeepEqual(before, after) {
		t.Fatal("completion in bash changed ZooKeeper")
	}
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
