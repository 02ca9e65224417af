package coordinator

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"dcroll/integration/zktest"
	"dcroll/spec"
	"dcroll/znodes"
)

// addMember writes a persistent member record, as an agent's first
// registration does.
func addMember(t *testing.T, c *znodes.Conn, svc, m, version string) {
	t.Helper()
	p := c.Paths()
	if err := c.EnsurePath(p.Members(svc)); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 1, 20, 31, 0, 0, time.UTC)
	mem := &znodes.Member{Machine: m, Service: svc, Rack: "r1", DC: "par1", Joined: at, Version: version, Seen: at}
	if _, err := c.Create(p.Member(svc, m), znodes.MustEncode(mem), 0); err != nil {
		t.Fatal(err)
	}
}

// registerAt writes m's ephemeral registration of svc and returns its path.
func registerAt(t *testing.T, c *znodes.Conn, svc, m, version, specID string, healthy bool) string {
	t.Helper()
	p := c.Paths()
	if err := c.EnsurePath(p.Current(svc)); err != nil {
		t.Fatal(err)
	}
	cur := &znodes.Current{Machine: m, Service: svc, Rack: "r1", DC: "par1", Version: version, SpecID: specID, State: znodes.StateRunning, Healthy: healthy}
	path, err := c.Create(p.CurrentMachine(svc, m), znodes.MustEncode(cur), zk.FlagEphemeral)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// addStep writes m's persistent step record of svc.
func addStep(t *testing.T, c *znodes.Conn, svc, m string) string {
	t.Helper()
	p := c.Paths()
	if err := c.EnsurePath(p.Down(svc)); err != nil {
		t.Fatal(err)
	}
	d := &znodes.Down{Machine: m, Rack: "r1", Kind: "upgrade", From: "1", To: "2", At: time.Now()}
	path, err := c.Create(p.DownMachine(svc, m), znodes.MustEncode(d), 0)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// haltEntry halts svc's entry as its agent would (without a bad record).
func haltEntry(t *testing.T, c *znodes.Conn, svc, machine, reason string) {
	t.Helper()
	q, err := ReadQueue(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range q {
		if e.Service == svc {
			if ok, err := Halt(c, e, reason, machine); err != nil || !ok {
				t.Fatalf("halt %s: %v %v", svc, ok, err)
			}
			return
		}
	}
	t.Fatalf("no entry for %s", svc)
}

// addBad records svc's build of sp (with settings when settings) as bad,
// as the halting agent does, and returns the key.
func addBad(t *testing.T, c *znodes.Conn, sp *spec.Spec, svc string, settings bool) string {
	t.Helper()
	s := sp.Services[svc]
	key, kind := znodes.BadKey(s.BuildID(), ""), "upgrade"
	if settings {
		key, kind = znodes.BadKey(s.BuildID(), znodes.SettingsHash(s.Settings)), "settings"
	}
	b := &znodes.BadBuild{Key: key, Service: svc, Version: s.Version, Build: s.BuildID(), Kind: kind, SpecID: sp.ID(),
		Reason: "not healthy after 1m", Machine: "m2", At: time.Date(2026, 12, 1, 22, 10, 3, 0, time.UTC)}
	if _, err := c.Create(c.Paths().Bad(key), znodes.MustEncode(b), 0); err != nil {
		t.Fatal(err)
	}
	return key
}

func lastHistory(t *testing.T, c *znodes.Conn) znodes.HistoryEntry {
	t.Helper()
	h, err := History(c)
	if err != nil || len(h) == 0 {
		t.Fatalf("history: %v %v", h, err)
	}
	return h[len(h)-1]
}

// haltedV2 pushes v1 (done), then v2 (db 1 -> 2 on a new build) and halts
// db's entry on m2.
func haltedV2(t *testing.T, c *znodes.Conn) (v1, v2 *spec.Spec) {
	t.Helper()
	ctx := context.Background()
	v1 = mustSpec(t, specYAML("v1", "1", blobA, "1", blobB, "64"))
	if _, err := Push(ctx, c, v1, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	markAllDone(t, c)
	v2 = mustSpec(t, specYAML("v2", "2", blobC, "1", blobB, "64"))
	if _, err := Push(ctx, c, v2, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	haltEntry(t, c, "db", "m2", "not healthy after 1m")
	return v1, v2
}

func TestSupersedeHaltedEntry(t *testing.T) {
	ctx := context.Background()
	t.Run("same build stays halted", func(t *testing.T) {
		c := env(t)
		_, v2 := haltedV2(t, c)
		// Only api changes: the plan leaves db alone, but db must keep an
		// entry, still halted.
		v2b := mustSpec(t, specYAML("v2b", "2", blobC, "2", blobC, "64"))
		if _, err := Push(ctx, c, v2b, PushOptions{By: "test"}); !errors.Is(err, ErrRolloutInProgress) {
			t.Fatalf("push over a halted rollout without --supersede: %v", err)
		}
		res, err := Push(ctx, c, v2b, PushOptions{By: "test", Supersede: true})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := queueServices(t, c), []string{"db@2:upgrade:halted", "api@2:upgrade:pending"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("queue = %v, want %v", got, want)
		}
		q, _ := ReadQueue(c)
		db := q[0]
		if db.Reason != "still halted from the superseded rollout: not healthy after 1m" || db.Machine != "m2" ||
			db.Build != v2.Services["db"].BuildID() || db.FromVersion != "1" || db.SpecID != v2b.ID() {
			t.Fatalf("carried db entry = %+v", db.DeployEntry)
		}
		if q[1].Build != v2b.Services["api"].BuildID() {
			t.Fatalf("api entry build = %q", q[1].Build)
		}
		want := []SupersededHalt{{Service: "db", Version: "2", Build: v2.Services["db"].BuildID(), Machine: "m2", Reason: "not healthy after 1m", StillHalted: true}}
		if !reflect.DeepEqual(res.SupersededHalts, want) {
			t.Fatalf("superseded halts = %+v", res.SupersededHalts)
		}
		h := lastHistory(t, c)
		if !reflect.DeepEqual(h.SupersededHalts, []string{"db 2: halted on m2: not healthy after 1m"}) || !h.Superseded ||
			!reflect.DeepEqual(h.Services, []string{"db", "api"}) {
			t.Fatalf("history = %+v", h)
		}
		// Superseding again does not stack the prefix; resume retries it.
		v2c := mustSpec(t, specYAML("v2c", "2", blobC, "2", blobC, "65"))
		if _, err := Push(ctx, c, v2c, PushOptions{By: "test", Supersede: true}); err != nil {
			t.Fatal(err)
		}
		q, _ = ReadQueue(c)
		if q[0].State != znodes.DeployHalted || q[0].Reason != "still halted from the superseded rollout: not healthy after 1m" {
			t.Fatalf("db after a second supersede = %+v", q[0].DeployEntry)
		}
		if r, err := Resume(c, "test"); err != nil || !reflect.DeepEqual(r.Retried, []string{"db"}) {
			t.Fatalf("resume = %+v %v", r, err)
		}
	})
	t.Run("new build is pending", func(t *testing.T) {
		c := env(t)
		haltedV2(t, c)
		v3 := mustSpec(t, specYAML("v3", "3", blobB, "1", blobB, "64"))
		res, err := Push(ctx, c, v3, PushOptions{By: "test", Supersede: true})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := queueServices(t, c), []string{"db@3:upgrade:pending"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("queue = %v, want %v", got, want)
		}
		if len(res.SupersededHalts) != 1 || res.SupersededHalts[0].StillHalted || res.SupersededHalts[0].Service != "db" {
			t.Fatalf("superseded halts = %+v", res.SupersededHalts)
		}
		if h := lastHistory(t, c); len(h.SupersededHalts) != 1 {
			t.Fatalf("history does not record the superseded halt: %+v", h)
		}
	})
	t.Run("same build with force is pending", func(t *testing.T) {
		c := env(t)
		haltedV2(t, c)
		v2b := mustSpec(t, specYAML("v2b", "2", blobC, "2", blobC, "64"))
		res, err := Push(ctx, c, v2b, PushOptions{By: "test", Supersede: true, Force: true})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := queueServices(t, c), []string{"db@2:upgrade:pending", "api@2:upgrade:pending"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("queue = %v, want %v", got, want)
		}
		if len(res.SupersededHalts) != 1 || res.SupersededHalts[0].StillHalted {
			t.Fatalf("superseded halts = %+v", res.SupersededHalts)
		}
	})
	t.Run("settings fix on the same build is pending", func(t *testing.T) {
		c := env(t)
		v1 := mustSpec(t, specYAML("v1", "1", blobA, "1", blobB, "64"))
		if _, err := Push(ctx, c, v1, PushOptions{By: "test"}); err != nil {
			t.Fatal(err)
		}
		markAllDone(t, c)
		bad := mustSpec(t, specYAML("bad", "1", blobA, "1", blobB, "0"))
		if _, err := Push(ctx, c, bad, PushOptions{By: "test"}); err != nil {
			t.Fatal(err)
		}
		haltEntry(t, c, "db", "m1", "reload failed")
		fix := mustSpec(t, specYAML("fix", "1", blobA, "1", blobB, "32"))
		if _, err := Push(ctx, c, fix, PushOptions{By: "test", Supersede: true}); err != nil {
			t.Fatal(err)
		}
		if got, want := queueServices(t, c), []string{"db@1:settings:pending"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("queue = %v, want %v", got, want)
		}
	})
}

func TestSupersedeWithEmptyPlanKeepsUnfinishedServices(t *testing.T) {
	c := env(t)
	ctx := context.Background()
	v1 := mustSpec(t, specYAML("v1", "1", blobA, "1", blobB, "64"))
	if _, err := Push(ctx, c, v1, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	q, _ := ReadQueue(c)
	if _, err := MarkDone(c, q[0]); err != nil { // db done, api unfinished
		t.Fatal(err)
	}
	// Same services, another label: an empty plan.
	renamed := mustSpec(t, specYAML("v1-renamed", "1", blobA, "1", blobB, "64"))
	res, err := Push(ctx, c, renamed, PushOptions{By: "test", Supersede: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Plan) != 0 || !res.Superseded {
		t.Fatalf("plan = %+v, superseded %v", res.Plan, res.Superseded)
	}
	if got, want := queueServices(t, c), []string{"api@1:new:pending"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("queue = %v, want %v (api still has machines to start)", got, want)
	}
	q, _ = ReadQueue(c)
	if q[0].SpecID != renamed.ID() || q[0].Build != renamed.Services["api"].BuildID() {
		t.Fatalf("carried entry = %+v", q[0].DeployEntry)
	}
}

func TestPushRefusesBadBuild(t *testing.T) {
	c := env(t)
	ctx := context.Background()
	v1 := mustSpec(t, specYAML("v1", "1", blobA, "1", blobB, "64"))
	if _, err := Push(ctx, c, v1, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	markAllDone(t, c)
	v2 := mustSpec(t, specYAML("v2", "2", blobC, "1", blobB, "64"))
	key := addBad(t, c, v2, "db", false)
	before := dump(t, c)
	for _, dry := range []bool{false, true} {
		_, err := Push(ctx, c, v2, PushOptions{By: "test", DryRun: dry})
		want := "push: db 2 (build " + v2.Services["db"].BuildID() + ") halted a rollout on m2 at 2026-12-01 22:10:03 UTC: not healthy after 1m; push a fixed build, or --force to try it again"
		if !errors.Is(err, ErrBadBuild) || err.Error() != want {
			t.Fatalf("dry run %v: err = %v\nwant %s", dry, err, want)
		}
	}
	if after := dump(t, c); !reflect.DeepEqual(before, after) {
		t.Fatalf("a refused push changed ZooKeeper:\n%s", diff(before, after))
	}
	res, err := Push(ctx, c, v2, PushOptions{By: "test", Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(res.Forced, []string{key}) {
		t.Fatalf("forced = %v", res.Forced)
	}
	if ok, _, _ := c.ZK().Exists(c.Paths().Bad(key)); ok {
		t.Fatal("forced push left the bad record")
	}
	if h := lastHistory(t, c); !reflect.DeepEqual(h.Forced, []string{key}) {
		t.Fatalf("history forced = %v", h.Forced)
	}
	// A settings change that halted: these settings on this build are bad,
	// other settings are not.
	markAllDone(t, c)
	v3 := mustSpec(t, specYAML("v3", "2", blobC, "1", blobB, "0"))
	addBad(t, c, v3, "db", true)
	if _, err := Push(ctx, c, v3, PushOptions{By: "test"}); !errors.Is(err, ErrBadBuild) || !strings.Contains(err.Error(), "these settings") {
		t.Fatalf("bad settings: %v", err)
	}
	if _, err := Push(ctx, c, mustSpec(t, specYAML("v3b", "2", blobC, "1", blobB, "1")), PushOptions{By: "test"}); err != nil {
		t.Fatalf("other settings on the same build: %v", err)
	}
}

func TestRollbackToHaltedSpecRefused(t *testing.T) {
	c := env(t)
	ctx := context.Background()
	v1, v2 := haltedV2(t, c)
	addBad(t, c, v2, "db", false)
	res, err := Rollback(ctx, c, "", PushOptions{By: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.SupersededHalts) != 1 || res.SupersededHalts[0].StillHalted {
		t.Fatalf("rollback superseded halts = %+v", res.SupersededHalts)
	}
	if head, _, _ := ReadHead(c); head.SpecID != v1.ID() {
		t.Fatalf("HEAD = %s, want v1", head.SpecID)
	}
	markAllDone(t, c)
	before := dump(t, c)
	_, err = Rollback(ctx, c, "", PushOptions{By: "test"}) // back to v2, whose db build halted
	if !errors.Is(err, ErrBadBuild) || !strings.HasPrefix(err.Error(), "rollback: db 2 (build ") {
		t.Fatalf("rollback to a halted spec: %v", err)
	}
	if after := dump(t, c); !reflect.DeepEqual(before, after) {
		t.Fatalf("a refused rollback changed ZooKeeper:\n%s", diff(before, after))
	}
	if _, err := Rollback(ctx, c, "", PushOptions{By: "test", Force: true}); err != nil {
		t.Fatal(err)
	}
}

func TestPushRefusesQuorumLargerThanMembers(t *testing.T) {
	c := env(t)
	ctx := context.Background()
	addMember(t, c, "db", "m1", "1")
	addMember(t, c, "db", "m2", "1")
	// A new service starts on its machines without steps: any quorum (the
	// fleet may still be assembling).
	if _, err := Push(ctx, c, mustSpec(t, strings.Replace(specYAML("v1", "1", blobA, "1", blobB, "64"), "quorum: 2", "quorum: 3", 1)), PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	markAllDone(t, c)
	before := dump(t, c)
	for _, tc := range []struct{ quorum, want string }{
		{"quorum: 3", "push: db: quorum 3 is larger than its 2 members (m1,m2): lower the quorum or add machines"},
		{"quorum: 2", "push: db: quorum 2 of its 2 members (m1,m2) leaves none free to step: lower the quorum or add machines"},
		{`quorum: "100%"`, "push: db: quorum 100% of its 2 members (m1,m2) leaves none free to step: lower the quorum or add machines"},
	} {
		up := mustSpec(t, strings.Replace(specYAML("v2", "2", blobA, "1", blobB, "64"), "quorum: 2", tc.quorum, 1))
		for _, dry := range []bool{false, true} {
			_, err := Push(ctx, c, up, PushOptions{By: "test", DryRun: dry})
			if !errors.Is(err, ErrQuorumTooLarge) || err.Error() != tc.want {
				t.Fatalf("%s, dry run %v: err = %v, want %q", tc.quorum, dry, err, tc.want)
			}
		}
	}
	if after := dump(t, c); !reflect.DeepEqual(before, after) {
		t.Fatalf("a refused push changed ZooKeeper:\n%s", diff(before, after))
	}
	// One member free to step: accepted.
	ok := mustSpec(t, strings.Replace(specYAML("v2", "2", blobA, "1", blobB, "64"), "quorum: 2", "quorum: 1", 1))
	if _, err := Push(ctx, c, ok, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
}

const threeServices = `name: %s
services:
  db:
    version: "1"
    artifact: ` + blobA + `
    run: ["./db"]
  api:
    version: "1"
    artifact: ` + blobB + `
    run: ["./api"]
    depends_on: [db]
  web:
    version: "1"
    artifact: ` + blobC + `
    run: ["./web"]
    depends_on: [api]
`

func TestPushQueuesRemovedServices(t *testing.T) {
	c := env(t)
	ctx := context.Background()
	v1 := mustSpec(t, strings.Replace(threeServices, "%s", "v1", 1))
	if _, err := Push(ctx, c, v1, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	markAllDone(t, c)
	onlyDB := mustSpec(t, "name: v2\nservices:\n  db:\n    version: \"1\"\n    artifact: "+blobA+"\n    run: [\"./db\"]\n")
	if _, err := Push(ctx, c, onlyDB, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	// Dependents are stopped first: web, then api.
	if got, want := queueServices(t, c), []string{"web@:removed:pending", "api@:removed:pending"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("queue = %v, want %v", got, want)
	}
	q, _ := ReadQueue(c)
	for _, e := range q {
		if e.FromVersion != "1" || e.SpecID != onlyDB.ID() || e.Build != "" {
			t.Fatalf("removal entry = %+v", e.DeployEntry)
		}
	}
	if h := lastHistory(t, c); !reflect.DeepEqual(h.Services, []string{"web", "api"}) {
		t.Fatalf("history services = %v", h.Services)
	}
	// An unfinished removal survives a supersede whose plan does not have it.
	again := mustSpec(t, "name: v3\nservices:\n  db:\n    version: \"1\"\n    artifact: "+blobA+"\n    run: [\"./db\"]\n    quorum: 1\n    max_parallel: 2\n")
	if _, err := Push(ctx, c, again, PushOptions{By: "test", Supersede: true}); err != nil {
		t.Fatal(err)
	}
	if got, want := queueServices(t, c), []string{"web@:removed:pending", "api@:removed:pending"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("queue after supersede = %v, want %v", got, want)
	}
}

func newAdvancer(c *znodes.Conn, now *time.Time, after time.Duration) *advancer {
	return &advancer{c: c, log: slog.New(slog.DiscardHandler), now: func() time.Time { return *now }, noMembersAfter: after}
}

func TestAdvancerCountsAbsentMembers(t *testing.T) {
	c := env(t)
	sp := mustSpec(t, specYAML("v1", "1", blobA, "1", blobB, "64"))
	if _, err := Push(context.Background(), c, sp, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"m1", "m2", "m3"} {
		addMember(t, c, "db", m, "1")
	}
	registerAt(t, c, "db", "m1", "1", sp.ID(), true)
	registerAt(t, c, "db", "m2", "1", sp.ID(), true)
	now := time.Now()
	a := newAdvancer(c, &now, time.Hour)
	state := func() string {
		t.Helper()
		if err := a.once(); err != nil {
			t.Fatal(err)
		}
		return strings.Join(queueServices(t, c), " ")
	}
	if got := state(); got != "db@1:new:pending api@1:new:pending" {
		t.Fatalf("m3 absent: queue %s", got)
	}
	registerAt(t, c, "db", "m3", "1", sp.ID(), true)
	step := addStep(t, c, "db", "m3")
	if got := state(); got != "db@1:new:pending api@1:new:pending" {
		t.Fatalf("m3 mid-step: queue %s", got)
	}
	if err := c.ZK().Delete(step, -1); err != nil {
		t.Fatal(err)
	}
	if got := state(); got != "db@1:new:done api@1:new:pending" {
		t.Fatalf("every member done: queue %s", got)
	}
}

func TestAdvancerHaltsServiceWithoutMembers(t *testing.T) {
	c := env(t)
	sp := mustSpec(t, specYAML("v1", "1", blobA, "1", blobB, "64"))
	if _, err := Push(context.Background(), c, sp, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	a := newAdvancer(c, &now, 10*time.Minute)
	for _, d := range []time.Duration{0, 9 * time.Minute, time.Minute - time.Second} {
		now = now.Add(d)
		if err := a.once(); err != nil {
			t.Fatal(err)
		}
		if q, _ := ReadQueue(c); q[0].State != znodes.DeployPending {
			t.Fatalf("halted before the deadline: %+v", q[0].DeployEntry)
		}
	}
	now = now.Add(time.Second)
	if err := a.once(); err != nil {
		t.Fatal(err)
	}
	q, _ := ReadQueue(c)
	want := "no machine has registered service db for 10m0s: start agents with --service db, or remove db from the spec"
	if q[0].State != znodes.DeployHalted || q[0].Reason != want {
		t.Fatalf("entry = %+v, want halted: %s", q[0].DeployEntry, want)
	}
	// A removal with no members is done: nothing runs the service.
	markAllDone(t, c)
	if _, err := Push(context.Background(), c, mustSpec(t, "name: v2\nservices:\n  db:\n    version: \"1\"\n    artifact: "+blobA+"\n    run: [\"./db\"]\n    quorum: 2\n    settings: {cache: \"64\"}\n"), PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	if err := a.once(); err != nil {
		t.Fatal(err)
	}
	if got := queueServices(t, c); !reflect.DeepEqual(got, []string{"api@:removed:done"}) {
		t.Fatalf("removal without members: %v", got)
	}
}

func TestRunHaltsServiceWithoutMembers(t *testing.T) {
	c := env(t)
	sp := mustSpec(t, specYAML("v1", "1", blobA, "1", blobB, "64"))
	if _, err := Push(context.Background(), c, sp, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- Run(ctx, Config{Conn: c, ID: "c1", Interval: 20 * time.Millisecond, NoMembersAfter: 300 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	}()
	zktest.WaitFor(t, 10*time.Second, "db halted for want of members", func() (bool, error) {
		q, err := ReadQueue(c)
		return err == nil && q[0].State == znodes.DeployHalted && strings.Contains(q[0].Reason, "no machine has registered service db for 300ms"), err
	})
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestMachineListRemoveClear(t *testing.T) {
	c := env(t)
	addMember(t, c, "db", "m1", "1")
	addMember(t, c, "db", "m2", "1")
	addMember(t, c, "api", "m1", "1")
	registerAt(t, c, "db", "m1", "1", "", true)
	addStep(t, c, "db", "m2")

	rows, err := Machines(c, "")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rows {
		got = append(got, r.Service+"/"+r.Machine+":"+r.State)
	}
	if want := []string{"api/m1:absent", "db/m1:available", "db/m2:mid-step"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("machines = %v, want %v", got, want)
	}
	if _, err := Machines(c, "dbb"); !errors.Is(err, ErrUnknownService) || !strings.Contains(err.Error(), `did you mean "db"?`) {
		t.Fatalf("unknown service: %v", err)
	}

	before := dump(t, c)
	refusals := []struct {
		name string
		do   func() error
		is   error
		want string
	}{
		{"remove registered", func() error { _, err := RemoveMachine(c, "m1", RemoveOptions{}); return err }, ErrRegistered,
			"machine remove: m1 is registered now in db (its agent runs): stop its agent first, or --force"},
		{"remove unknown", func() error { _, err := RemoveMachine(c, "m12", RemoveOptions{}); return err }, ErrUnknownMachine,
			`machine remove: no machine "m12": did you mean "m1"?`},
		{"remove unknown service", func() error { _, err := RemoveMachine(c, "m1", RemoveOptions{Service: "apo"}); return err }, ErrUnknownService,
			`did you mean "api"?`},
		{"clear without step", func() error { _, err := ClearStep(c, "m1", "api", false); return err }, ErrNoStep,
			"machine clear: m1 has no step record in api, nothing to clear (no member of api is mid-step)"},
		{"clear unknown machine", func() error { _, err := ClearStep(c, "m3", "db", false); return err }, ErrUnknownMachine,
			`did you mean "m1"?`},
	}
	for _, r := range refusals {
		err := r.do()
		if !errors.Is(err, r.is) || !strings.Contains(err.Error(), r.want) {
			t.Errorf("%s: err = %v, want %v: %s", r.name, err, r.is, r.want)
		}
	}
	if after := dump(t, c); !reflect.DeepEqual(before, after) {
		t.Fatalf("a refused command changed ZooKeeper:\n%s", diff(before, after))
	}

	// m2 died mid-step: clear the step, then remove it.
	d, err := ClearStep(c, "m2", "db", false)
	if err != nil || d.Machine != "m2" || d.To != "2" {
		t.Fatalf("clear m2: %+v %v", d, err)
	}
	if rows, _ := Machines(c, "db"); rows[1].State != "absent" {
		t.Fatalf("m2 after clear: %+v", rows[1])
	}
	res, err := RemoveMachine(c, "m2", RemoveOptions{})
	if err != nil || !reflect.DeepEqual(res.Services, []string{"db"}) || len(res.Deleted) != 1 {
		t.Fatalf("remove m2: %+v %v", res, err)
	}
	// m1 is registered in db: --force removes it everywhere.
	addStep(t, c, "db", "m1")
	if _, err := ClearStep(c, "m1", "db", false); !errors.Is(err, ErrRegistered) {
		t.Fatalf("clear a registered machine's step: %v", err)
	}
	res, err = RemoveMachine(c, "m1", RemoveOptions{Force: true})
	if err != nil || !reflect.DeepEqual(res.Services, []string{"api", "db"}) || len(res.Deleted) != 3 {
		t.Fatalf("remove --force m1: %+v %v", res, err)
	}
	rows, _ = Machines(c, "")
	if len(rows) != 1 || rows[0].Machine != "m1" || rows[0].NoRecord != true {
		t.Fatalf("after removing: %+v (only m1's live registration remains)", rows)
	}
}

func TestRemoveMachineFencesARegistration(t *testing.T) {
	c := env(t)
	addMember(t, c, "db", "m1", "1")
	registerAt(t, c, "db", "m2", "1", "", true) // creates /dc/current/db
	// An agent registers m1 between the command's reads and its
	// transaction: the transaction must fail.
	ops := assertAbsent(c, "db", "m1")
	registerAt(t, c, "db", "m1", "1", "", true)
	ops = append(ops, &zk.DeleteRequest{Path: c.Paths().Member("db", "m1"), Version: 0})
	if _, err := c.Multi(ops...); !errors.Is(err, zk.ErrNodeExists) {
		t.Fatalf("multi = %v, want ErrNodeExists", err)
	}
	if ok, _, _ := c.ZK().Exists(c.Paths().Member("db", "m1")); !ok {
		t.Fatal("member record deleted")
	}
}

func TestStatusShowsAbsentMember(t *testing.T) {
	c := env(t)
	sp := mustSpec(t, specYAML("v1", "1", blobA, "1", blobB, "64"))
	if _, err := Push(context.Background(), c, sp, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"m1", "m2", "m3"} {
		addMember(t, c, "db", m, "1")
	}
	registerAt(t, c, "db", "m1", "1", sp.ID(), true)
	registerAt(t, c, "db", "m2", "1", sp.ID(), true)
	st, err := ReadStatus(c)
	if err != nil {
		t.Fatal(err)
	}
	var db *ServiceStatus
	for i := range st.Services {
		if st.Services[i].Service == "db" {
			db = &st.Services[i]
		}
	}
	if db == nil || db.Total != 3 || db.Available != 2 || db.Quorum != 2 || len(db.Members) != 3 {
		t.Fatalf("db status = %+v", db)
	}
	m3 := db.Members[2]
	if m3.Machine != "m3" || m3.State != "absent" || m3.Registered || m3.Version != "1" || m3.Why != "absent (last seen 1 at 2026-12-01 20:31:00)" {
		t.Fatalf("m3 = %+v", m3)
	}
}

// TestNewQueue covers the pure queue computation without ZooKeeper.
func TestNewQueue(t *testing.T) {
	v1 := mustSpec(t, specYAML("v1", "1", blobA, "1", blobB, "64"))
	v2 := mustSpec(t, specYAML("v2", "2", blobC, "1", blobB, "64"))
	now := time.Unix(0, 0)
	old := func(svc, version, kind, state, build string) QueueEntry {
		return QueueEntry{Node: "d-" + svc, DeployEntry: znodes.DeployEntry{Service: svc, Version: version, FromVersion: "0", SpecID: v1.ID(),
			Kind: kind, State: state, Build: build, Reason: "boom", Machine: "m9"}}
	}
	cases := []struct {
		name       string
		head, next *spec.Spec
		old        []QueueEntry
		force      bool
		want       []string // service@version:kind:state:from
		halts      int
	}{
		{"first push", nil, v1, nil, false, []string{"db@1:new:pending:", "api@1:new:pending:"}, 0},
		{"upgrade", v1, v2, nil, false, []string{"db@2:upgrade:pending:1"}, 0},
		{"carried unfinished", v1, v2, []QueueEntry{old("api", "1", "upgrade", "rolling", v1.Services["api"].BuildID())}, false,
			[]string{"db@2:upgrade:pending:1", "api@1:upgrade:pending:0"}, 0},
		{"carried halted same build", v1, v2, []QueueEntry{old("api", "1", "upgrade", "halted", v1.Services["api"].BuildID())}, false,
			[]string{"db@2:upgrade:pending:1", "api@1:upgrade:halted:0"}, 1},
		{"carried halted forced", v1, v2, []QueueEntry{old("api", "1", "upgrade", "halted", v1.Services["api"].BuildID())}, true,
			[]string{"db@2:upgrade:pending:1", "api@1:upgrade:pending:0"}, 1},
		{"legacy halted entry without build: same version", v1, v2, []QueueEntry{old("api", "1", "upgrade", "halted", "")}, false,
			[]string{"db@2:upgrade:pending:1", "api@1:upgrade:halted:0"}, 1},
		{"halted, new build in the plan", v1, v2, []QueueEntry{old("db", "1", "upgrade", "halted", v1.Services["db"].BuildID())}, false,
			[]string{"db@2:upgrade:pending:1"}, 1},
		{"done entries are not carried", v1, v2, []QueueEntry{old("api", "1", "upgrade", "done", "")}, false,
			[]string{"db@2:upgrade:pending:1"}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			plan, err := spec.Plan(tc.head, tc.next)
			if err != nil {
				t.Fatal(err)
			}
			entries, halts, err := newQueue(tc.head, tc.next, tc.next.ID(), plan, tc.old, map[string]*spec.Spec{v1.ID(): v1}, tc.force, now)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range entries {
				got = append(got, e.Service+"@"+e.Version+":"+e.Kind+":"+e.State+":"+e.FromVersion)
				if e.Kind != znodes.KindRemoved && e.Build != tc.next.Services[e.Service].BuildID() {
					t.Errorf("%s: build %q", e.Service, e.Build)
				}
			}
			if !reflect.DeepEqual(got, tc.want) || len(halts) != tc.halts {
				t.Fatalf("entries = %v (halts %d), want %v (halts %d)", got, len(halts), tc.want, tc.halts)
			}
		})
	}
}

// TestResumeClearsBadRecordOfRetriedEntry: resuming a halted entry is
// trusting its build again; the bad-build record it left goes with the
// halt, in the same transaction, and a push of the build is accepted.
func TestResumeClearsBadRecordOfRetriedEntry(t *testing.T) {
	c := env(t)
	ctx := context.Background()
	sp := mustSpec(t, specYAML("v1", "1", blobA, "1", blobB, "64"))
	if _, err := Push(ctx, c, sp, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	haltEntry(t, c, "db", "m2", "not healthy")
	q, err := ReadQueue(c)
	if err != nil {
		t.Fatal(err)
	}
	var db QueueEntry
	for _, e := range q {
		if e.Service == "db" {
			db = e
		}
	}
	build := sp.Services["db"].BuildID()
	bad := &znodes.BadBuild{Key: znodes.BadKey(build, ""), Service: "db", Version: "1", Build: build, Kind: "upgrade",
		Reason: "not healthy", Machine: "m2", Entry: db.Node, At: time.Now()}
	if _, err := c.Create(c.Paths().Bad(bad.Key), znodes.MustEncode(bad), 0); err != nil {
		t.Fatal(err)
	}
	res, err := Resume(c, "test")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Retried) != 1 || len(res.Cleared) != 1 || res.Cleared[0] != bad.Key {
		t.Fatalf("resume = %+v, want db retried and its bad record %s cleared", res, bad.Key)
	}
	if ok, _, err := c.ZK().Exists(c.Paths().Bad(bad.Key)); err != nil || ok {
		t.Fatalf("bad record still there after resume (%v)", err)
	}
}
