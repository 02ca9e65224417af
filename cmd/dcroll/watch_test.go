package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"dcroll/coordinator"
	"dcroll/integration/zktest"
	"dcroll/znodes"
)

// watchEnv pushes goodSpec v1 (queue: db, api) and returns the --zk flag
// and a connection to drive the queue with.
func watchEnv(t *testing.T) (string, *znodes.Conn) {
	t.Helper()
	srv, zkf := zkWithBlob(t)
	if _, errs, code := run(t, zkf, "push", writeSpec(t, goodSpec("v1", "1"))); code != 0 {
		t.Fatalf("push v1: %s", errs)
	}
	return zkf, dialT(t, srv.Addr())
}

func queue(t *testing.T, c *znodes.Conn) []coordinator.QueueEntry {
	t.Helper()
	q, err := coordinator.ReadQueue(c)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func haltFirst(t *testing.T, c *znodes.Conn, reason, machine string) {
	t.Helper()
	if ok, err := coordinator.Halt(c, queue(t, c)[0], reason, machine); err != nil || !ok {
		t.Fatalf("halt: %v %v", ok, err)
	}
}

func markAll(t *testing.T, c *znodes.Conn) {
	t.Helper()
	for _, e := range queue(t, c) {
		if ok, err := coordinator.MarkDone(c, e); err != nil || !ok {
			t.Fatalf("mark done: %v %v", ok, err)
		}
	}
}

// jsonLines decodes every line of out as one JSON object.
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	return lines
}

func TestStatusWatchExitsHalted(t *testing.T) {
	zkf, c := watchEnv(t)
	haltFirst(t, c, "health deadline passed", "m2")
	out, _, code := run(t, zkf, "status", "--watch", "--interval=20ms")
	if code != exitHalted {
		t.Fatalf("exit %d, want %d:\n%s", code, exitHalted, out)
	}
	for _, want := range []string{"HALTED: db 1: health deadline passed on m2", "dcroll resume", "dcroll rollback"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	out, _, code = run(t, zkf, "status", "--watch", "--json")
	if l := jsonLines(t, out); code != exitHalted || len(l) != 1 || l[0]["outcome"] != "halted" {
		t.Fatalf("--json: exit %d: %s", code, out)
	}
	// Without --watch, status reports and exits 0, halted or not.
	if _, errs, code := run(t, zkf, "status"); code != 0 {
		t.Fatalf("status: exit %d: %s", code, errs)
	}
}

func TestStatusWatchExitsNoProgress(t *testing.T) {
	zkf, c := watchEnv(t)
	haltFirst(t, c, coordinator.ProgressDeadlinePrefix+"30m0s on db: m2 staging: see dcroll status; dcroll resume to retry", "")
	out, _, code := run(t, zkf, "status", "--watch", "--interval=20ms")
	if code != exitNoProgress || !strings.Contains(out, "HALTED: db 1: no progress for 30m0s on db: m2 staging") {
		t.Fatalf("exit %d, want %d:\n%s", code, exitNoProgress, out)
	}
	out, _, code = run(t, zkf, "status", "--watch", "--json")
	if l := jsonLines(t, out); code != exitNoProgress || len(l) != 1 || l[0]["outcome"] != "no progress" {
		t.Fatalf("--json: exit %d: %s", code, out)
	}
}

// TestStatusWatchFollowsToDone: --watch --json prints a line per change
// (rolling with the elapsed time, then done) and exits 0 when the queue is
// done.
func TestStatusWatchFollowsToDone(t *testing.T) {
	zkf, c := watchEnv(t)
	var out lockedBuffer
	errc := make(chan error, 1)
	go func() {
		errc <- Run(context.Background(), &out, &out, []string{"dcroll", zkf, "status", "--watch", "--json", "--interval=20ms"})
	}()
	zktest.WaitFor(t, 10*time.Second, "a first line", func() (bool, error) { return strings.Contains(out.String(), "\n"), nil })
	if ok, err := coordinator.MarkDone(c, queue(t, c)[0]); err != nil || !ok {
		t.Fatal(ok, err)
	}
	zktest.WaitFor(t, 10*time.Second, "a second line", func() (bool, error) { return strings.Count(out.String(), "\n") >= 2, nil })
	markAll(t, c)
	var err error
	select {
	case err = <-errc:
	case <-time.After(10 * time.Second):
		t.Fatal("status --watch did not exit when the queue was done")
	}
	if err != nil {
		t.Fatalf("exit %d: %v", exitCode(err), err)
	}
	l := jsonLines(t, out.String())
	if len(l) != 3 {
		t.Fatalf("want 3 lines (rolling, db done, all done), got %d:\n%s", len(l), out.String())
	}
	if l[0]["outcome"] != "rolling" || l[0]["elapsed"] == nil || l[1]["outcome"] != "rolling" || l[2]["outcome"] != "done" {
		t.Fatalf("outcomes: %v %v %v", l[0]["outcome"], l[1]["outcome"], l[2]["outcome"])
	}
	if _, ok := l[0]["queue"]; !ok {
		t.Fatal("a line lacks the status")
	}
	// Done already: text mode exits 0 at once.
	if text, errs, code := run(t, zkf, "status", "--watch"); code != 0 || !strings.Contains(text, "Done") {
		t.Fatalf("exit %d: %s\n%s", code, errs, text)
	}
}

func TestStatusWatchInterrupted(t *testing.T) {
	zkf, _ := watchEnv(t)
	var out lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		errc <- Run(ctx, &out, &out, []string{"dcroll", zkf, "status", "--watch", "--interval=20ms"})
	}()
	zktest.WaitFor(t, 10*time.Second, "the elapsed time", func() (bool, error) { return strings.Contains(out.String(), "Rolling for "), nil })
	cancel()
	select {
	case err := <-errc:
		if code := exitCode(err); code != exitInterrupted {
			t.Fatalf("exit %d (%v), want %d", code, err, exitInterrupted)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("status --watch ignored the interrupt")
	}
}

func TestHistoryOutcomeColumn(t *testing.T) {
	lines := coordinator.HistoryOutcomes([]znodes.HistoryEntry{
		{Action: "push", To: "aaaa", Name: "v1", Services: []string{"db"}},
		{Action: "push", To: "bbbb", Name: "v2", Superseded: true, SupersededHalts: []string{"db 2: halted on m2: bad"}},
		{Action: "rollback", To: "aaaa", Name: "v1", Superseded: true},
	}, nil)
	var b bytes.Buffer
	if err := printHistory(&b, lines); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"OUTCOME", "halted (db)", "rolled back", "  done  "} {
		if !strings.Contains(out, want) {
			t.Errorf("history lacks %q:\n%s", want, out)
		}
	}
	j, _ := json.Marshal(lines[0])
	if !strings.Contains(string(j), `"outcome":"halted"`) || !strings.Contains(string(j), `"outcome_service":"db"`) || !strings.Contains(string(j), `"name":"v1"`) {
		t.Errorf("json = %s", j)
	}
}
