package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeAgentConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAgentConfigFileAndSizes: config errors name file, line and field;
// sizes take the same forms in YAML and in --mlock-budget. The cases stop
// before the agent starts (no --data-dir), which shows the config parsed.
func TestAgentConfigFileAndSizes(t *testing.T) {
	typo := writeAgentConfig(t, "machine: m1\nrack: r1\nservice: [store]\n")
	good := writeAgentConfig(t, "machine: m1\nservices: [store]\nmlock_budget: 8GiB\npoll_interval: 4s\nstop_grace: 1m\n")
	badDur := writeAgentConfig(t, "machine: m1\npoll_interval: 4\n")
	const noDataDir = "agent: --data-dir is required (where state, blobs and versions live)"
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--config", typo}, 1, typo + `:3: unknown field "service" (did you mean "services"?)`},
		{[]string{"--config", badDur}, 1, badDur + `:2: poll_interval: "4" is not a duration: write e.g. 4s, 500ms or 1m30s`},
		{[]string{"--config", good}, 2, noDataDir},
		{[]string{"--mlock-budget", "8GB"}, 2, noDataDir},
		{[]string{"--mlock-budget", "8 gib"}, 2, noDataDir},
		{[]string{"--mlock-budget", "-1"}, 2, noDataDir},
		{[]string{"--congestion-control", "reno"}, 2, noDataDir},
		{[]string{"--congestion-control", "BBR v2"}, 2, `--congestion-control: congestion control "BBR v2": want an algorithm of this kernel (cubic, reno, bbr: /proc/sys/net/ipv4/tcp_available_congestion_control) or "system" for its default`},
		{[]string{"--mlock-budget", "8G"}, 2, `--mlock-budget: "8G" is ambiguous: write 8GiB (binary) or 8GB (decimal); sizes are plain bytes (1048576), binary 8GiB/512MiB/64KiB, or decimal 8GB/512MB/64KB; case-insensitive, a space is allowed (8 GiB)`},
	} {
		out, errs, code := run(t, append([]string{"agent"}, tc.args...)...)
		t.Logf("%v: exit %d stdout %q err %q", tc.args, code, out, errs)
		if code != tc.code || errs != tc.want {
			t.Errorf("agent %v: exit %d, %q; want exit %d, %q", tc.args, code, errs, tc.code, tc.want)
		}
	}
	out, _, _ := run(t, "agent", "--help")
	if !strings.Contains(out, "8GB/512MB/64KB") {
		t.Errorf("agent --help does not document size forms:\n%s", out)
	}
}
