package main

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// unitsDir holds the systemd units and their example environment files.
const unitsDir = "../../deploy/systemd"

// installedBinary is where the units expect dcroll.
const installedBinary = "/usr/local/bin/dcroll"

// daemons are the dcroll commands shipped as units, with their unit files.
var daemons = []string{"agent", "coordinator", "origin"}

// unitFile is a parsed unit: section -> key -> values (in order).
type unitFile map[string]map[string][]string

func (u unitFile) get(section, key string) string {
	vs := u[section][key]
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

func readUnit(t *testing.T, path string) unitFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not a key=value in a section: %q", path, n, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// buildDcroll builds this command into a temporary directory.
func buildDcroll(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "dcroll")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestSystemdUnitsVerify runs `systemd-analyze verify` on each unit, with
// ExecStart pointing at a freshly built dcroll (verify checks that the
// binary exists and is executable). Any warning fails the test.
func TestSystemdUnitsVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not found: install Debian's systemd package (scripts/install-deps.sh does)")
	}
	bin := buildDcroll(t)
	dir := t.TempDir()
	for _, d := range daemons {
		t.Run(d, func(t *testing.T) {
			name := "dcroll-" + d + ".service"
			b, err := os.ReadFile(filepath.Join(unitsDir, name))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), "ExecStart="+installedBinary+" ") {
				t.Fatalf("%s: ExecStart does not run %s", name, installedBinary)
			}
			unit := filepath.Join(dir, name)
			if err := os.WriteFile(unit, []byte(strings.ReplaceAll(string(b), "ExecStart="+installedBinary, "ExecStart="+bin)), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(analyze, "verify", "--man=no", unit).CombinedOutput()
			if err != nil || len(strings.TrimSpace(string(out))) > 0 {
				t.Errorf("systemd-analyze verify %s: %v\n%s", name, err, out)
			}
		})
	}
}

var envLineRE = regexp.MustCompile(`^#?\s*(DCROLL_[A-Z0-9_]+)=(.*)$`)

// TestSystemdUnitsMatchCLI checks the units against the daemons' flags:
// each unit runs its command with an environment file that lists every
// DCROLL_* variable the command reads (and no other), each with a comment,
// keeps its state in its StateDirectory, restarts on failure, and runs as
// the dedicated user. The agent's unit keeps the services running across an
// agent restart and lets it mlock.
func TestSystemdUnitsMatchCLI(t *testing.T) {
	app := NewApp(io.Discard, io.Discard)
	sysusers, err := os.ReadFile(filepath.Join(unitsDir, "dcroll.sysusers.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range daemons {
		t.Run(d, func(t *testing.T) {
			name := "dcroll-" + d + ".service"
			u := readUnit(t, filepath.Join(unitsDir, name))
			cmd := findCommand(app.Commands, d)
			if cmd == nil {
				t.Fatalf("dcroll has no %s command", d)
			}
			argsVar := "DCROLL_" + strings.ToUpper(d) + "_ARGS"
			if got, want := u.get("Service", "ExecStart"), installedBinary+" "+d+" $"+argsVar; got != want {
				t.Errorf("ExecStart=%s, want %s", got, want)
			}
			if got, want := u.get("Service", "EnvironmentFile"), "/etc/dcroll/"+d+".env"; got != want {
				t.Errorf("EnvironmentFile=%s, want %s", got, want)
			}
			if got := u.get("Service", "Restart"); got != "on-failure" {
				t.Errorf("Restart=%s, want on-failure", got)
			}
			if u.get("Service", "RestartSec") == "" {
				t.Errorf("no RestartSec (the default 100ms spins on a ZooKeeper outage)")
			}
			user := u.get("Service", "User")
			if user == "" || user == "root" {
				t.Errorf("User=%q: want the dedicated user", user)
			} else if !regexp.MustCompile(`(?m)^u\s+` + regexp.QuoteMeta(user) + `\s`).Match(sysusers) {
				t.Errorf("User=%s is not declared in dcroll.sysusers.conf", user)
			}

			// The environment file: exactly the variables the command reads.
			want := map[string]bool{argsVar: true}
			for _, fl := range append(append([]cli.Flag(nil), app.Flags...), cmd.Flags...) {
				for _, e := range flagEnvVars(fl) {
					want[e] = true
				}
			}
			envPath := filepath.Join(unitsDir, d+".env")
			b, err := os.ReadFile(envPath)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(string(b), "\n")
			values := map[string]string{}
			for i, line := range lines {
				m := envLineRE.FindStringSubmatch(line)
				if m == nil {
					continue
				}
				if !want[m[1]] {
					t.Errorf("%s:%d: dcroll %s reads no %s", envPath, i+1, d, m[1])
				}
				if i == 0 || !strings.HasPrefix(lines[i-1], "# ") || envLineRE.MatchString(lines[i-1]) {
					t.Errorf("%s:%d: %s has no comment above it", envPath, i+1, m[1])
				}
				if !strings.HasPrefix(line, "#") {
					values[m[1]] = m[2]
				}
				delete(want, m[1])
			}
			for e := range want {
				t.Errorf("%s does not document %s, which dcroll %s reads", envPath, e, d)
			}
			// The extra flags are flags of the command.
			if _, errs := parseInvocation(app, append([]string{"dcroll", d}, strings.Fields(values[argsVar])...)); len(errs) > 0 {
				t.Errorf("%s=%s: %v", argsVar, values[argsVar], errs)
			}

			// State lives in the StateDirectory.
			stateVar := map[string]string{"agent": "DCROLL_DATA_DIR", "origin": "DCROLL_STORE"}[d]
			if sd := u.get("Service", "StateDirectory"); stateVar != "" {
				if sd == "" {
					t.Errorf("no StateDirectory for %s", stateVar)
				} else if got, want := values[stateVar], "/var/lib/"+sd; got != want {
					t.Errorf("%s=%s, want the StateDirectory %s", stateVar, got, want)
				}
			} else if sd != "" {
				t.Errorf("StateDirectory=%s, but dcroll %s keeps no local state", sd, d)
			}

			if d == "origin" {
				if _, err := reachable(values["DCROLL_ORIGIN_LISTEN"]); err != nil {
					t.Errorf("DCROLL_ORIGIN_LISTEN (the tracker hands it out): %v", err)
				}
			}
			if d != "agent" {
				return
			}
			for key, want := range map[string]string{
				"KillMode":            "process", // the services survive an agent restart
				"LimitMEMLOCK":        "infinity",
				"AmbientCapabilities": "CAP_IPC_LOCK",
			} {
				if got := u.get("Service", key); got != want {
					t.Errorf("%s=%s, want %s", key, got, want)
				}
			}
			if pl := values["DCROLL_PEER_LISTEN"]; pl != "" {
				if _, err := reachable(pl); err != nil {
					t.Errorf("DCROLL_PEER_LISTEN: %v", err)
				}
			}
		})
	}
}

// flagEnvVars are the environment variables a flag reads.
func flagEnvVars(f cli.Flag) []string {
	if e, ok := f.(interface{ GetEnvVars() []string }); ok {
		return e.GetEnvVars()
	}
	return nil
}
