package coordinator

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"dcroll/integration/zktest"
	"dcroll/znodes"
)

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b)
}

// TestRunAdvancesQueueAndServesDashboard: the elected coordinator marks the
// active entry done once every machine runs the target, and only then; the
// dashboard, status API and metrics read the same znodes.
func TestRunAdvancesQueueAndServesDashboard(t *testing.T) {
	c := env(t)
	sp := mustSpec(t, specYAML("v1", "1", blobA, "1", blobB, "64"))
	if _, err := Push(context.Background(), c, sp, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	p := c.Paths()
	register := func(svc, m string, healthy bool) string {
		cur := &znodes.Current{Machine: m, Service: svc, Version: "1", SpecID: sp.ID(), State: znodes.StateRunning, Healthy: healthy}
		if err := c.EnsurePath(p.Current(svc)); err != nil {
			t.Fatal(err)
		}
		path, err := c.Create(p.CurrentMachine(svc, m), znodes.MustEncode(cur), zk.FlagEphemeral)
		if err != nil {
			t.Fatal(err)
		}
		return path
	}
	register("db", "m1", true)
	unhealthy := register("db", "m2", false)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc := make(chan string, 2)
	errc := make(chan error, 2)
	for _, id := range []string{"c1", "c2"} {
		go func() {
			errc <- Run(ctx, Config{Conn: c, ID: id, HTTPAddr: "127.0.0.1:0", Interval: 50 * time.Millisecond, Listening: func(a string) { addrc <- a },
				Mount: map[string]http.Handler{"/announce": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "tracker "+id) })}})
		}()
	}
	addr := <-addrc
	<-addrc
	zktest.WaitFor(t, 10*time.Second, "a coordinator leader", func() (bool, error) {
		id, _ := znodes.LeaderOf(c, ElectionName)
		return id == "c1" || id == "c2", nil
	})
	// db is not complete (m2 unhealthy): the entry must stay pending over
	// several advance rounds.
	for range 5 {
		q, _ := ReadQueue(c)
		if q[0].State == znodes.DeployDone {
			t.Fatal("entry marked done while a machine is unhealthy")
		}
		if _, err := ReadStatus(c); err != nil {
			t.Fatal(err)
		}
	}
	cur := &znodes.Current{Machine: "m2", Service: "db", Version: "1", SpecID: sp.ID(), State: znodes.StateRunning, Healthy: true}
	if _, err := c.ZK().Set(unhealthy, znodes.MustEncode(cur), -1); err != nil {
		t.Fatal(err)
	}
	zktest.WaitFor(t, 10*time.Second, "db entry done", func() (bool, error) {
		q, err := ReadQueue(c)
		return err == nil && q[0].State == znodes.DeployDone && q[1].State == znodes.DeployPending, err
	})

	var st Status
	if err := json.Unmarshal([]byte(get(t, "http://"+addr+"/api/status")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Head == nil || st.Head.SpecID != sp.ID() || len(st.Queue) != 2 {
		t.Fatalf("api/status = %+v", st)
	}
	metrics := get(t, "http://"+addr+"/metrics")
	for _, want := range []string{`dcroll_service_healthy{service="db"} 2`, `dcroll_deploy_entries{state="done"} 1`, `dcroll_zookeeper_up 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if got := get(t, "http://"+addr+"/announce"); !strings.HasPrefix(got, "tracker c") {
		t.Errorf("mounted /announce answered %q", got)
	}
	page := get(t, "http://"+addr+"/")
	if !strings.Contains(page, "dcroll data center") || !strings.Contains(page, "m2") {
		t.Errorf("dashboard page lacks machines: %.300s", page)
	}
	cancel()
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}
