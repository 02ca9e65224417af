package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"dcroll/spec"
	"dcroll/znodes"
)

// planNow is the clock of the plan tests: noon UTC.
var planNow = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// planMember writes m's member record of svc in rack and, when live, a
// healthy running registration.
func planMember(t *testing.T, c *znodes.Conn, svc, m, rack string, live bool) {
	t.Helper()
	p := c.Paths()
	for _, dir := range []string{p.Members(svc), p.Current(svc)} {
		if err := c.EnsurePath(dir); err != nil {
			t.Fatal(err)
		}
	}
	at := time.Date(2026, 12, 1, 20, 31, 0, 0, time.UTC)
	mem := &znodes.Member{Machine: m, Service: svc, Rack: rack, DC: "par1", Joined: at, Version: "1", Seen: at}
	if _, err := c.Create(p.Member(svc, m), znodes.MustEncode(mem), 0); err != nil {
		t.Fatal(err)
	}
	if !live {
		return
	}
	cur := &znodes.Current{Machine: m, Service: svc, Rack: rack, DC: "par1", Version: "1", State: znodes.StateRunning, Healthy: true}
	if _, err := c.Create(p.CurrentMachine(svc, m), znodes.MustEncode(cur), zk.FlagEphemeral); err != nil {
		t.Fatal(err)
	}
}

// planBase pushes v1 (done) with db on m1..m3 (rack r1, all available)
// and returns v2: db 1 -> 2 on a new build.
func planBase(t *testing.T, c *znodes.Conn) *spec.Spec {
	t.Helper()
	if _, err := Push(context.Background(), c, mustSpec(t, specYAML("v1", "1", blobA, "1", blobB, "64")), PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	markAllDone(t, c)
	for _, m := range []string{"m1", "m2", "m3"} {
		planMember(t, c, "db", m, "r1", true)
	}
	return mustSpec(t, specYAML("v2", "2", blobC, "1", blobB, "64"))
}

func warningCodes(np *NightPlan) []string {
	var codes []string
	for _, w := range np.Warnings {
		codes = append(codes, w.Code)
	}
	return codes
}

func TestPlanWarnings(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, c *znodes.Conn, v2 *spec.Spec) *spec.Spec // returns the spec to plan
		want  []string                                                     // warning codes, exactly
		text  string                                                       // in the text rendering
	}{
		{"none", nil, nil, "deploy order: db (upgrade)"},
		{"closed window", func(t *testing.T, c *znodes.Conn, v2 *spec.Spec) *spec.Spec {
			return mustSpec(t, "window: {start: \"01:00\", end: \"05:00\", timezone: UTC}\n"+specYAML("v2", "2", blobC, "1", blobB, "64"))
		}, []string{WarnWindowClosed}, "the window is closed now; it opens at 2026-12-02 01:00 UTC"},
		{"pause", func(t *testing.T, c *znodes.Conn, v2 *spec.Spec) *spec.Spec {
			if err := Pause(c, "alice", "investigating"); err != nil {
				t.Fatal(err)
			}
			return v2
		}, []string{WarnPaused}, "rollouts are paused by alice since"},
		{"quorum as large as the members", func(t *testing.T, c *znodes.Conn, v2 *spec.Spec) *spec.Spec {
			return mustSpec(t, strings.Replace(specYAML("v2", "2", blobC, "1", blobB, "64"), "quorum: 2", "quorum: 3", 1))
		}, []string{WarnQuorum, WarnHeadroom}, "db: quorum 3 of its 3 members (m1,m2,m3) leaves none free to step"},
		{"absent member", func(t *testing.T, c *znodes.Conn, v2 *spec.Spec) *spec.Spec {
			planMember(t, c, "db", "m4", "r1", false)
			return v2
		}, []string{WarnAbsent}, "db: m4 is absent (last seen 1 at 2026-12-01 20:31:00): it holds the entry back"},
		{"mid-step member", func(t *testing.T, c *znodes.Conn, v2 *spec.Spec) *spec.Spec {
			addStep(t, c, "db", "m3")
			return v2
		}, []string{WarnUnavailable, WarnHeadroom}, "db: m3 is mid-step"}, // m1's step would leave 1 of quorum 2
		{"bad build", func(t *testing.T, c *znodes.Conn, v2 *spec.Spec) *spec.Spec {
			addBad(t, c, v2, "db", false)
			return v2
		}, []string{WarnBadBuild}, "halted a rollout on m2 at 2026-12-01 22:10:03 UTC: not healthy after 1m; push needs a fixed build, or --force"},
		{"unfinished rollout", func(t *testing.T, c *znodes.Conn, v2 *spec.Spec) *spec.Spec {
			if _, err := Push(context.Background(), c, v2, PushOptions{By: "test"}); err != nil {
				t.Fatal(err)
			}
			return mustSpec(t, specYAML("v3", "3", blobA, "1", blobB, "64"))
		}, []string{WarnUnfinished}, "a rollout is unfinished: db(pending); push needs --supersede"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := env(t)
			sp := planBase(t, c)
			if tc.setup != nil {
				sp = tc.setup(t, c, sp)
			}
			before := dump(t, c)
			np, err := PlanNight(context.Background(), c, sp, planNow)
			if err != nil {
				t.Fatal(err)
			}
			if after := dump(t, c); !reflect.DeepEqual(before, after) {
				t.Fatalf("a plan changed ZooKeeper:\n%s", diff(before, after))
			}
			if got := warningCodes(np); !slices.Equal(got, tc.want) {
				t.Fatalf("warnings = %v, want %v: %+v", got, tc.want, np.Warnings)
			}
			if !np.HasChanges() {
				t.Fatal("no changes planned")
			}
			var buf bytes.Buffer
			if err := np.WriteText(&buf); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(buf.String(), tc.text) {
				t.Fatalf("text does not mention %q:\n%s", tc.text, buf.String())
			}
		})
	}
}

func TestPlanBatchesAndHeadroom(t *testing.T) {
	c := env(t)
	ctx := context.Background()
	v1 := mustSpec(t, specYAML("v1", "1", blobA, "1", blobB, "64"))
	if _, err := Push(ctx, c, v1, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	markAllDone(t, c)
	for _, m := range []struct{ name, rack string }{{"m1", "r1"}, {"m2", "r1"}, {"m3", "r1"}, {"m4", "r2"}, {"m5", "r2"}} {
		planMember(t, c, "db", m.name, m.rack, true)
	}
	y := strings.Replace(specYAML("v2", "2", blobC, "1", blobB, "64"), "quorum: 2", "quorum: 2\n    max_parallel: 2\n    health: {tcp: \"127.0.0.1:1\", min_healthy: 10s}", 1)
	np, err := PlanNight(ctx, c, mustSpec(t, y), planNow)
	if err != nil {
		t.Fatal(err)
	}
	if len(np.Warnings) != 0 || np.HeadID != v1.ID() {
		t.Fatalf("warnings %+v, head %s", np.Warnings, np.HeadID)
	}
	if len(np.Services) != 1 || np.Services[0].Service != "db" {
		t.Fatalf("services = %+v", np.Services)
	}
	s := np.Services[0]
	type batch struct {
		rack     string
		machines string
		headroom int
	}
	var got []batch
	for _, b := range s.Batches {
		got = append(got, batch{b.Rack, strings.Join(b.Machines, ","), *b.Headroom})
	}
	want := []batch{{"r1", "m1,m2", 1}, {"r1", "m3", 2}, {"r2", "m4,m5", 1}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("batches = %v, want %v", got, want)
	}
	step := 10*time.Second + PlanStepOverhead
	if s.Step != step || s.QuorumMin != 2 || len(s.Members) != 5 {
		t.Fatalf("step %s, quorum min %d, members %d", s.Step, s.QuorumMin, len(s.Members))
	}
	if !np.Start.Equal(planNow) || !np.Finish.Equal(planNow.Add(3*step)) || np.Nights != 1 {
		t.Fatalf("start %s finish %s nights %d", np.Start, np.Finish, np.Nights)
	}
	// One member down: the first batch would leave one below the quorum.
	addStep(t, c, "db", "m4")
	np, err = PlanNight(ctx, c, mustSpec(t, y), planNow)
	if err != nil {
		t.Fatal(err)
	}
	if h := *np.Services[0].Batches[0].Headroom; h != 0 {
		t.Fatalf("headroom with m4 mid-step = %d, want 0", h)
	}
	if b := np.Services[0].Batches[2]; !slices.Equal(b.Unavailable, []string{"m4"}) || *b.Headroom != 1 {
		t.Fatalf("last batch = %+v", b)
	}
	// Measured step times (the coordinator's night record) replace the
	// estimate: 12s per member, batches of max_parallel 2.
	rec := &znodes.Rollout{State: znodes.NightDone, Steps: map[string]znodes.StepStat{"db": {Seconds: 12, Samples: 4}}}
	if _, err := c.Create(c.Paths().Rollout(), znodes.MustEncode(rec), 0); err != nil {
		t.Fatal(err)
	}
	measured, err := PlanNight(ctx, c, mustSpec(t, y), planNow)
	if err != nil {
		t.Fatal(err)
	}
	if ms := measured.Services[0]; !ms.Measured || ms.Step != 24*time.Second || !measured.Finish.Equal(planNow.Add(3*24*time.Second)) {
		t.Fatalf("measured: step %s measured %v finish %s", ms.Step, ms.Measured, measured.Finish)
	}
	// JSON: snake_case, empty lists as [].
	raw, err := json.Marshal(np)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{`"spec_id":`, `"quorum_min":2`, `"max_parallel":2`, `"unavailable":[]`, `"headroom":1`} {
		if !bytes.Contains(raw, []byte(w)) {
			t.Errorf("JSON lacks %s: %s", w, raw)
		}
	}
}

func TestPlanWindowResumesNextNight(t *testing.T) {
	c := env(t)
	planBase(t, c)
	// A 1-minute window and 32s steps: one step a night.
	sp := mustSpec(t, "window: {start: \"12:00\", end: \"12:01\", timezone: UTC}\n"+specYAML("v2", "2", blobC, "1", blobB, "64"))
	np, err := PlanNight(context.Background(), c, sp, planNow)
	if err != nil {
		t.Fatal(err)
	}
	b := np.Services[0].Batches
	if len(b) != 3 || b[0].Resumes || !b[1].Resumes || !b[1].Start.Equal(planNow.Add(24*time.Hour)) || np.Nights != 3 {
		t.Fatalf("nights %d, batches %+v", np.Nights, b)
	}
	if len(np.Warnings) != 0 {
		t.Fatalf("warnings %+v", np.Warnings)
	}
}

func TestPlanDowngradeAndUnchanged(t *testing.T) {
	c := env(t)
	ctx := context.Background()
	v2 := mustSpec(t, specYAML("v2", "2.0.0", blobA, "1", blobB, "64"))
	if _, err := Push(ctx, c, v2, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	markAllDone(t, c)
	planMember(t, c, "db", "m1", "r1", true)
	planMember(t, c, "db", "m2", "r1", true)
	planMember(t, c, "db", "m3", "r1", true)
	np, err := PlanNight(ctx, c, mustSpec(t, specYAML("v1", "1.9.3", blobC, "1", blobB, "64")), planNow)
	if err != nil {
		t.Fatal(err)
	}
	if len(np.Services) != 1 || !np.Services[0].Downgrade {
		t.Fatalf("services = %+v", np.Services)
	}
	var buf bytes.Buffer
	np.WriteText(&buf)
	if !strings.Contains(buf.String(), "db 2.0.0 -> 1.9.3 (upgrade, DOWNGRADE): downgrade 2.0.0 -> 1.9.3") {
		t.Fatalf("text:\n%s", buf.String())
	}
	np, err = PlanNight(ctx, c, v2, planNow)
	if err != nil || !np.Unchanged || np.HasChanges() {
		t.Fatalf("plan of HEAD: %+v %v", np, err)
	}
}

func TestPushIfHead(t *testing.T) {
	c := env(t)
	ctx := context.Background()
	v1 := mustSpec(t, specYAML("v1", "1", blobA, "1", blobB, "64"))
	v2 := mustSpec(t, specYAML("v2", "2", blobC, "1", blobB, "64"))
	if _, err := Push(ctx, c, v1, PushOptions{By: "test", IfHead: v1.ID()[:8]}); !errors.Is(err, ErrHeadMoved) ||
		err.Error() != "push: HEAD is none, not "+v1.ID()[:8]+": nothing was changed; plan again (dcroll plan SPEC)" {
		t.Fatalf("first push if-head v1: %v", err)
	}
	if _, err := Push(ctx, c, v1, PushOptions{By: "test", IfHead: "none"}); err != nil {
		t.Fatal(err)
	}
	markAllDone(t, c)
	before := dump(t, c)
	for _, bad := range []string{"none", "ffff", v2.ID()[:6]} {
		for _, dry := range []bool{false, true} {
			if _, err := Push(ctx, c, v2, PushOptions{By: "test", IfHead: bad, DryRun: dry}); !errors.Is(err, ErrHeadMoved) ||
				!strings.HasPrefix(err.Error(), "push: HEAD is "+spec.ShortID(v1.ID())+", not ") {
				t.Fatalf("if-head %s: %v", bad, err)
			}
		}
	}
	if _, err := Push(ctx, c, v2, PushOptions{By: "test", IfHead: "ab"}); err == nil || errors.Is(err, ErrHeadMoved) {
		t.Fatalf("if-head ab: %v", err)
	}
	if after := dump(t, c); !reflect.DeepEqual(before, after) {
		t.Fatalf("a refused push changed ZooKeeper:\n%s", diff(before, after))
	}
	if _, err := Push(ctx, c, v2, PushOptions{By: "test", IfHead: strings.ToUpper(v1.ID()[:4])}); err != nil {
		t.Fatal(err)
	}
	if head, _, _ := ReadHead(c); head.SpecID != v2.ID() {
		t.Fatalf("HEAD = %s", head.SpecID)
	}
}
