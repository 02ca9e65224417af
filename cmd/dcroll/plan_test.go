package main

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"dcroll/coordinator"
	"dcroll/spec"
	"dcroll/znodes"
)

func specID(t *testing.T, y string) string {
	t.Helper()
	sp, err := spec.Parse("x.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return sp.ID()
}

func TestPlanExitCodes(t *testing.T) {
	srv, zkf := zkWithBlob(t)
	v1, v2 := writeSpec(t, goodSpec("v1", "1")), writeSpec(t, goodSpec("v2", "2"))
	// Before the first push: every service is new, nothing warns.
	if out, errs, code := run(t, zkf, "plan", v1); code != exitPlanChanges || !strings.Contains(out, "plan: HEAD none -> ") {
		t.Fatalf("first plan: exit %d %s\n%s", code, errs, out)
	}
	if _, errs, code := run(t, zkf, "push", v1); code != 0 {
		t.Fatalf("push v1: %s", errs)
	}
	if out, errs, code := run(t, zkf, "plan", v1); code != 0 || !strings.Contains(out, "nothing to do") {
		t.Fatalf("plan of HEAD: exit %d %s\n%s", code, errs, out)
	}
	// The v1 rollout is unfinished (nobody marked it done): a warning.
	out, _, code := run(t, zkf, "plan", v2)
	if code != exitPlanWarnings || !strings.Contains(out, "push needs --supersede") {
		t.Fatalf("plan over an unfinished rollout: exit %d\n%s", code, out)
	}
	c := dialT(t, srv.Addr())
	markDone(t, c)
	for _, m := range []string{"m1", "m2", "m3"} {
		addMember(t, c, "db", m)
		register(t, c, "db", m)
	}
	before := snapshot(t, srv.Addr())
	out, errs, code := run(t, zkf, "plan", v2)
	if code != exitPlanChanges {
		t.Fatalf("clean plan: exit %d %s\n%s", code, errs, out)
	}
	for _, w := range []string{"deploy order: db (settings)", "HEADROOM", "m1[r1 1 available]"} {
		if !strings.Contains(out, w) {
			t.Errorf("plan text lacks %q:\n%s", w, out)
		}
	}
	out, _, code = run(t, zkf, "plan", "--json", v2)
	var np struct {
		HeadID   string `json:"head_id"`
		Warnings []any  `json:"warnings"`
		Services []struct {
			Batches []struct {
				Machines []string `json:"machines"`
			} `json:"batches"`
		} `json:"services"`
	}
	if err := json.Unmarshal([]byte(out), &np); err != nil || code != exitPlanChanges || np.Warnings == nil || len(np.Services) != 1 || len(np.Services[0].Batches) != 3 {
		t.Fatalf("plan --json: exit %d %v\n%s", code, err, out)
	}
	if np.HeadID != specID(t, goodSpec("v1", "1")) {
		t.Fatalf("head_id = %s", np.HeadID)
	}
	if _, _, code := run(t, zkf, "plan"); code != 2 {
		t.Fatalf("plan without a spec: exit %d, want 2", code)
	}
	if _, _, code := run(t, zkf, "plan", v1, v2); code != 2 {
		t.Fatalf("plan with two specs: exit %d, want 2", code)
	}
	if _, _, code := run(t, zkf, "plan", v1+".missing"); code != 1 {
		t.Fatalf("plan of a missing file: exit %d, want 1", code)
	}
	if after := snapshot(t, srv.Addr()); !reflect.DeepEqual(before, after) {
		t.Fatal("dcroll plan changed ZooKeeper")
	}
	// The binary: the status alone, nothing on stderr.
	if out := runBinary(t, exitPlanChanges, zkf, "plan", "--json", v2); strings.Contains(out, "dcroll:") {
		t.Fatalf("binary printed an error: %s", out)
	}
	if _, errs, code := run(t, zkf, "pause", "investigating"); code != 0 {
		t.Fatal(errs)
	}
	if out := runBinary(t, exitPlanWarnings, zkf, "plan", v2); !strings.Contains(out, "rollouts are paused") || strings.Contains(out, "dcroll:") {
		t.Fatalf("paused plan: %s", out)
	}
	// push --dry-run prints the same plan, then what it would write.
	out, errs, code = run(t, zkf, "push", "--dry-run", v2)
	if code != 0 || !strings.Contains(out, "warnings (1):") || !strings.Contains(out, "dry run: push would move HEAD") ||
		strings.Index(out, "BATCH") > strings.Index(out, "dry run:") {
		t.Fatalf("push --dry-run: exit %d %s\n%s", code, errs, out)
	}
	out, _, code = run(t, zkf, "push", "--dry-run", "--json", v2)
	if code != 0 || !strings.Contains(out, `"night": {`) {
		t.Fatalf("push --dry-run --json: exit %d\n%s", code, out)
	}
}

func TestPushIfHeadCLI(t *testing.T) {
	srv, zkf := zkWithBlob(t)
	v1, v2 := writeSpec(t, goodSpec("v1", "1")), writeSpec(t, goodSpec("v2", "2"))
	id1 := specID(t, goodSpec("v1", "1"))
	if _, errs, code := run(t, zkf, "push", "--if-head", id1[:4], v1); code != 1 || !strings.Contains(errs, "HEAD is none, not "+id1[:4]) {
		t.Fatalf("if-head before the first push: exit %d %s", code, errs)
	}
	if _, errs, code := run(t, zkf, "push", "--if-head=none", v1); code != 0 {
		t.Fatalf("push --if-head=none: %s", errs)
	}
	markDone(t, dialT(t, srv.Addr()))
	before := snapshot(t, srv.Addr())
	for _, tc := range []struct {
		ifHead string
		code   int
		want   string
	}{
		{"none", 1, "push: HEAD is " + spec.ShortID(id1) + ", not none: nothing was changed"},
		{"ffff", 1, "not ffff"},
		{"abc", 2, "want at least 4 hex digits"},
		{"zzzz", 2, "want at least 4 hex digits"},
	} {
		_, errs, code := run(t, zkf, "push", v2, "--if-head", tc.ifHead)
		if code != tc.code || !strings.Contains(errs, tc.want) || strings.Contains(errs, "\n") {
			t.Errorf("--if-head %s: exit %d %q, want %d %q", tc.ifHead, code, errs, tc.code, tc.want)
		}
	}
	if after := snapshot(t, srv.Addr()); !reflect.DeepEqual(before, after) {
		t.Fatal("a refused push changed ZooKeeper")
	}
	if _, errs, code := run(t, zkf, "push", "--if-head", id1[:6], v2); code != 0 {
		t.Fatalf("push --if-head %s: %s", id1[:6], errs)
	}
}

// markDone marks every deploy entry done, as the agents would.
func markDone(t *testing.T, c *znodes.Conn) {
	t.Helper()
	q, err := coordinator.ReadQueue(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range q {
		if _, err := coordinator.MarkDone(c, e); err != nil {
			t.Fatal(err)
		}
	}
}
