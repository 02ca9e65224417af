package coordinator

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"dcroll/integration/zktest"
	"dcroll/spec"
	"dcroll/znodes"
)

const (
	blobA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	blobB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	blobC = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
)

func specYAML(name, dbVer, dbBlob, apiVer, apiBlob string, settings string) string {
	return fmt.Sprintf(`name: %s
services:
  db:
    version: %q
    artifact: %s
    run: ["./db"]
    quorum: 2
    settings: {cache: %q}
  api:
    version: %q
    artifact: %s
    run: ["./api"]
    depends_on: [db]
`, name, dbVer, dbBlob, settings, apiVer, apiBlob)
}

func mustSpec(t *testing.T, y string) *spec.Spec {
	t.Helper()
	sp, err := spec.Parse("test.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

// env is a real ZooKeeper with published blobs and a connection.
func env(t *testing.T) *znodes.Conn {
	t.Helper()
	srv := zktest.Start(t)
	c, err := znodes.Dial(context.Background(), znodes.Options{Servers: srv.Addr(), SessionTimeout: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.EnsureSkeleton(); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{blobA, blobB, blobC} {
		hex := strings.TrimPrefix(b, "sha256:")
		if _, err := c.Create(c.Paths().Blob(hex), znodes.MustEncode(&znodes.Blob{ID: b, Size: 1}), 0); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// dump returns every znode path with its data under root, read with a raw
// client: the independent view used to prove that failed operations change
// nothing.
func dump(t *testing.T, c *znodes.Conn) map[string]string {
	t.Helper()
	out := map[string]string{}
	var walk func(p string)
	walk = func(p string) {
		data, _, err := c.ZK().Get(p)
		if err != nil {
			t.Fatalf("dump %s: %v", p, err)
		}
		out[p] = string(data)
		kids, _, err := c.ZK().Children(p)
		if err != nil {
			t.Fatalf("dump %s: %v", p, err)
		}
		for _, k := range kids {
			walk(p + "/" + k)
		}
	}
	walk(c.Paths().Root)
	return out
}

func queueServices(t *testing.T, c *znodes.Conn) []string {
	t.Helper()
	q, err := ReadQueue(c)
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, e := range q {
		s = append(s, e.Service+"@"+e.Version+":"+e.Kind+":"+e.State)
	}
	return s
}

func markAllDone(t *testing.T, c *znodes.Conn) {
	t.Helper()
	q, err := ReadQueue(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range q {
		if _, err := MarkDone(c, e); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPushRollbackHistory(t *testing.T) {
	c := env(t)
	ctx := context.Background()
	v1 := mustSpec(t, specYAML("v1", "1", blobA, "1", blobB, "64"))
	res, err := Push(ctx, c, v1, PushOptions{By: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Unchanged || len(res.Queue) != 2 {
		t.Fatalf("first push: %+v", res)
	}
	// Dependency order: db before api.
	if got, want := queueServices(t, c), []string{"db@1:new:pending", "api@1:new:pending"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("queue = %v, want %v", got, want)
	}
	// Same spec again: nothing changes.
	before := dump(t, c)
	res, err = Push(ctx, c, v1, PushOptions{By: "test"})
	if err != nil || !res.Unchanged {
		t.Fatalf("re-push: %+v %v", res, err)
	}
	if after := dump(t, c); !reflect.DeepEqual(before, after) {
		t.Fatal("re-pushing HEAD changed ZooKeeper")
	}
	// Unfinished rollout: refused without --supersede, and nothing changes.
	v2 := mustSpec(t, specYAML("v2", "2", blobC, "1", blobB, "64"))
	if _, err := Push(ctx, c, v2, PushOptions{By: "test"}); !errors.Is(err, ErrRolloutInProgress) {
		t.Fatalf("push over unfinished rollout: %v", err)
	}
	if after := dump(t, c); !reflect.DeepEqual(before, after) {
		t.Fatal("a refused push changed ZooKeeper")
	}
	markAllDone(t, c)
	res, err = Push(ctx, c, v2, PushOptions{By: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := queueServices(t, c), []string{"db@2:upgrade:pending"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("queue after v2 = %v, want %v (only the changed service)", got, want)
	}
	markAllDone(t, c)
	// Settings-only change is marked as such.
	v3 := mustSpec(t, specYAML("v3", "2", blobC, "1", blobB, "128"))
	if _, err := Push(ctx, c, v3, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	q, _ := ReadQueue(c)
	if len(q) != 1 || !q[0].SettingsOnly || q[0].Kind != string(spec.ChangeSettings) {
		t.Fatalf("settings-only push queue: %+v", q)
	}
	// Rollback with an unfinished queue: supersedes; HEAD back to v2; v3 still stored.
	res, err = Rollback(ctx, c, "", PushOptions{By: "test"})
	if err != nil {
		t.Fatal(err)
	}
	head, _, _ := ReadHead(c)
	if head.SpecID != v2.ID() || head.Action != znodes.ActionRollback || head.Prev != v3.ID() {
		t.Fatalf("head after rollback: %+v", head)
	}
	if _, err := LoadSpec(c, v3.ID()); err != nil {
		t.Fatalf("rolled-back-from spec must stay stored: %v", err)
	}
	if !res.Superseded {
		t.Fatal("rollback over an unfinished queue should supersede it")
	}
	// Rollback to a named prefix.
	markAllDone(t, c)
	if _, err := Rollback(ctx, c, v1.ID()[:8], PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	if got, want := queueServices(t, c), []string{"db@1:upgrade:pending"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("queue after rollback to v1 = %v, want %v", got, want)
	}
	h, err := History(c)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range h {
		actions = append(actions, e.Action+":"+e.Name)
	}
	if want := []string{"push:v1", "push:v2", "push:v3", "rollback:v2", "rollback:v1"}; !reflect.DeepEqual(actions, want) {
		t.Fatalf("history = %v, want %v", actions, want)
	}
}

func TestPushIsAtomic(t *testing.T) {
	c := env(t)
	ctx := context.Background()
	v1 := mustSpec(t, specYAML("v1", "1", blobA, "1", blobB, "64"))
	if _, err := Push(ctx, c, v1, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	markAllDone(t, c)
	before := dump(t, c)
	v2 := mustSpec(t, specYAML("v2", "2", blobC, "2", blobC, "64"))
	// Force the transaction to fail at its very last op, after the spec,
	// HEAD, history and queue ops.
	_, err := Push(ctx, c, v2, PushOptions{By: "test", extraOps: []any{&zk.CheckVersionRequest{Path: c.Paths().Head(), Version: 999}}})
	if err == nil {
		t.Fatal("push with a failing op succeeded")
	}
	if after := dump(t, c); !reflect.DeepEqual(before, after) {
		t.Fatalf("a failed push changed ZooKeeper:\n%s", diff(before, after))
	}
}

func TestPushRefusesUnpublishedBlobs(t *testing.T) {
	c := env(t)
	before := dump(t, c)
	missing := "sha256:" + strings.Repeat("d", 64)
	sp := mustSpec(t, specYAML("v1", "1", missing, "1", blobB, "64"))
	_, err := Push(context.Background(), c, sp, PushOptions{By: "test"})
	if !errors.Is(err, ErrMissingBlobs) || !strings.Contains(err.Error(), missing) {
		t.Fatalf("err = %v, want ErrMissingBlobs naming %s", err, missing)
	}
	if after := dump(t, c); !reflect.DeepEqual(before, after) {
		t.Fatal("a refused push changed ZooKeeper")
	}
}

func TestConcurrentPushesSerialize(t *testing.T) {
	c := env(t)
	ctx := context.Background()
	specs := []*spec.Spec{
		mustSpec(t, specYAML("a", "1", blobA, "1", blobB, "1")),
		mustSpec(t, specYAML("b", "2", blobA, "1", blobB, "1")),
		mustSpec(t, specYAML("c", "3", blobA, "1", blobB, "1")),
	}
	errs := make(chan error, len(specs))
	for _, sp := range specs {
		go func() {
			_, err := Push(ctx, c, sp, PushOptions{By: "test", Supersede: true})
			errs <- err
		}()
	}
	ok := 0
	for range specs {
		err := <-errs
		switch {
		case err == nil:
			ok++
		case errors.Is(err, ErrConcurrentPush):
		default:
			t.Fatalf("unexpected error: %v", err)
		}
	}
	if ok == 0 {
		t.Fatal("no push succeeded")
	}
	h, _ := History(c)
	if len(h) != ok {
		t.Fatalf("%d pushes succeeded but history has %d entries", ok, len(h))
	}
	// The queue belongs to the final HEAD only.
	head, _, _ := ReadHead(c)
	q, _ := ReadQueue(c)
	for _, e := range q {
		if e.SpecID != head.SpecID {
			t.Fatalf("queue entry %s belongs to %s, HEAD is %s", e.Node, e.SpecID, head.SpecID)
		}
	}
}

func TestPauseResume(t *testing.T) {
	c := env(t)
	ctx := context.Background()
	if _, err := Push(ctx, c, mustSpec(t, specYAML("v1", "1", blobA, "1", blobB, "64")), PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	if err := Pause(c, "test", "investigating"); err != nil {
		t.Fatal(err)
	}
	ctl, _, _ := ReadControl(c)
	if !ctl.Paused || ctl.Reason != "investigating" {
		t.Fatalf("control = %+v", ctl)
	}
	// Halt the active entry as an agent would.
	q, _ := ReadQueue(c)
	d := q[0].DeployEntry
	d.State, d.Reason, d.Machine = znodes.DeployHalted, "not healthy after 1m", "m3"
	if _, err := c.ZK().Set(c.Paths().DeployEntry(q[0].Node), znodes.MustEncode(&d), q[0].ZVersion); err != nil {
		t.Fatal(err)
	}
	res, err := Resume(c, "test")
	if err != nil {
		t.Fatal(err)
	}
	if !res.Unpaused || !reflect.DeepEqual(res.Retried, []string{"db"}) {
		t.Fatalf("resume = %+v", res)
	}
	q, _ = ReadQueue(c)
	if q[0].State != znodes.DeployRolling || q[0].Reason != "" {
		t.Fatalf("entry after resume: %+v", q[0])
	}
}

func TestStatus(t *testing.T) {
	c := env(t)
	sp := mustSpec(t, specYAML("v1", "1", blobA, "1", blobB, "64"))
	if _, err := Push(context.Background(), c, sp, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	p := c.Paths()
	for i, m := range []string{"m1", "m2", "m3"} {
		if err := c.EnsurePath(p.Current("db")); err != nil {
			t.Fatal(err)
		}
		cur := &znodes.Current{Machine: m, Service: "db", Version: "1", SpecID: sp.ID(), State: znodes.StateRunning, Healthy: i != 2}
		if _, err := c.Create(p.CurrentMachine("db", m), znodes.MustEncode(cur), zk.FlagEphemeral); err != nil {
			t.Fatal(err)
		}
	}
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
	if db == nil || len(db.Machines) != 3 || db.Healthy != 2 || db.Quorum != 2 || db.Target != "1" {
		t.Fatalf("db status = %+v", db)
	}
	// The pushed queue is visible, db first.
	if a := Active(st.Queue); a == nil || a.Service != "db" {
		t.Fatalf("active entry = %+v", a)
	}
}

func diff(a, b map[string]string) string {
	var lines []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			lines = append(lines, "- "+k)
		} else if w != v {
			lines = append(lines, "~ "+k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			lines = append(lines, "+ "+k)
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
