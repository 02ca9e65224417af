// Package obstest checks what a daemon serves to Prometheus in tests: it
// scrapes /metrics, lints the text with `promtool check metrics` (the test
// is skipped, saying why, when promtool is not installed; CI installs it
// with scripts/install-deps.sh) and reads /healthz.
package obstest

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

var client = &http.Client{Timeout: 5 * time.Second}

// Get returns the status code and body of GET url.
func Get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// Promtool returns the path of promtool, or skips the test.
func Promtool(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian package prometheus; scripts/install-deps.sh installs it): cannot lint /metrics")
	}
	return p
}

// Lint runs `promtool check metrics` on an exposition text and fails the
// test with promtool's complaints.
func Lint(t testing.TB, what, text string) {
	t.Helper()
	cmd := exec.Command(Promtool(t), "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Errorf("promtool check metrics of %s: %v\n%s", what, err, out.String())
	}
}

// Families lists the metric family names of an exposition text (from its
// # TYPE lines) with their types.
func Families(text string) map[string]string {
	out := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			out[f[2]] = f[3]
		}
	}
	return out
}

// Scrape GETs base+"/metrics", lints it and checks that every family in
// want is there with the given type ("" = any type) and that no family in
// absent is. It returns the text.
func Scrape(t testing.TB, base string, want map[string]string, absent ...string) string {
	t.Helper()
	code, text := Get(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET %s/metrics: %d: %s", base, code, text)
	}
	Lint(t, base+"/metrics", text)
	fams := Families(text)
	for name, typ := range want {
		got, ok := fams[name]
		switch {
		case !ok:
			t.Errorf("%s/metrics has no %s", base, name)
		case typ != "" && got != typ:
			t.Errorf("%s/metrics: %s is a %s, want %s", base, name, got, typ)
		}
	}
	for _, name := range absent {
		if _, ok := fams[name]; ok {
			t.Errorf("%s/metrics still has %s", base, name)
		}
	}
	return text
}

// Common are the families every dcroll daemon serves.
var Common = map[string]string{
	"dcroll_build_info":          "gauge",
	"go_goroutines":              "gauge",
	"go_memstats_alloc_bytes":    "gauge",
	"process_cpu_seconds_total":  "counter",
	"process_start_time_seconds": "gauge",
}

// With returns Common plus more.
func With(more map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range Common {
		out[k] = v
	}
	for k, v := range more {
		out[k] = v
	}
	return out
}

// Healthz GETs base+"/healthz" and checks its status code; with 200 the
// body must be "ok", otherwise it must say why (non-empty).
func Healthz(t testing.TB, base string, wantCode int) string {
	t.Helper()
	code, body := Get(t, base+"/healthz")
	body = strings.TrimSpace(body)
	if code != wantCode {
		t.Errorf("GET %s/healthz: %d %q, want %d", base, code, body, wantCode)
	}
	if code == http.StatusOK && body != "ok" {
		t.Errorf("GET %s/healthz: 200 with %q, want ok", base, body)
	}
	if code != http.StatusOK && body == "" {
		t.Errorf("GET %s/healthz: %d with no reason", base, code)
	}
	return body
}
