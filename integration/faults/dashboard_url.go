package faults

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dcroll/integration/zktest"
)

// Binary is the dcroll binary the cluster built (for tests that start
// other dcroll commands, e.g. dcroll dashboard).
func (c *Cluster) Binary() string { return c.bin }

// DashboardURL returns the base URL ("http://127.0.0.1:PORT/") of the
// scenario's coordinator dashboard: the addr of the last "dashboard
// listening" record of its log (a restarted coordinator appends a new one).
func (s *Scenario) DashboardURL(t testing.TB) string {
	t.Helper()
	return WaitLogAddr(t, filepath.Join(s.Dir, "coordinator.log"), "dashboard listening", 30*time.Second)
}

// WaitLogAddr waits until the JSON slog file at path holds a record with
// msg and an "addr" attribute, and returns the addr of the last such
// record.
func WaitLogAddr(t testing.TB, path, msg string, timeout time.Duration) string {
	t.Helper()
	var addr string
	zktest.WaitFor(t, timeout, fmt.Sprintf("%q in %s", msg, filepath.Base(path)), func() (bool, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return false, nil // not created yet
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == msg && strings.HasPrefix(rec.Addr, "http") {
				addr = rec.Addr
			}
		}
		return addr != "", nil
	})
	return addr
}
