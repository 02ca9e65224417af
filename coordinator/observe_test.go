package coordinator

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path"
	"strings"
	"testing"
	"time"

	"dcroll/integration/zktest"
	"dcroll/internal/obs/obstest"
	"dcroll/znodes"
)

// TestCoordinatorMetricsAndHealth: every coordinator's /metrics passes
// promtool and has the build, Go and process families; exactly one of two
// says dcroll_coordinator_leader 1; /healthz is 200 "ok" while connected
// and 503 with the reason once the session is gone.
func TestCoordinatorMetricsAndHealth(t *testing.T) {
	obstest.Promtool(t)
	c := env(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc := make(chan string, 2)
	errc := make(chan error, 2)
	for _, id := range []string{"c1", "c2"} {
		go func() {
			errc <- Run(ctx, Config{Conn: c, ID: id, HTTPAddr: "127.0.0.1:0", Interval: 50 * time.Millisecond, Listening: func(a string) { addrc <- a }})
		}()
	}
	addrs := []string{"http://" + <-addrc, "http://" + <-addrc}
	leaders := func() (int, error) {
		n := 0
		for _, a := range addrs {
			_, text := obstest.Get(t, a+"/metrics")
			switch {
			case strings.Contains(text, "\ndcroll_coordinator_leader 1\n"):
				n++
			case !strings.Contains(text, "\ndcroll_coordinator_leader 0\n"):
				return 0, nil
			}
		}
		return n, nil
	}
	zktest.WaitFor(t, 10*time.Second, "one coordinator says it leads", func() (bool, error) {
		n, err := leaders()
		return n == 1, err
	})
	for _, a := range addrs {
		obstest.Scrape(t, a, obstest.With(map[string]string{"dcroll_coordinator_leader": "gauge", "dcroll_zookeeper_up": "gauge"}))
		obstest.Healthz(t, a, http.StatusOK)
	}
	cancel()
	for range 2 {
		<-errc
	}

	gone, err := znodes.Dial(context.Background(), znodes.Options{Servers: c.ZK().Server()})
	if err != nil {
		t.Fatal(err)
	}
	gone.Close()
	srv := httptest.NewServer(Dashboard(gone))
	defer srv.Close()
	if body := obstest.Healthz(t, srv.URL, http.StatusServiceUnavailable); !strings.Contains(body, "zookeeper") {
		t.Errorf("/healthz of a closed session says %q, want the reason", body)
	}
}

// TestStatusJSONEmptyLists: an empty data center's status has empty lists,
// not nulls.
func TestStatusJSONEmptyLists(t *testing.T) {
	c := env(t)
	srv := httptest.NewServer(Dashboard(c))
	defer srv.Close()
	_, body := obstest.Get(t, srv.URL+"/api/status")
	var doc map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	for _, k := range []string{"services", "queue", "agents"} {
		if got := strings.TrimSpace(string(doc[k])); got != "[]" {
			t.Errorf(`"%s": %s, want []`, k, got)
		}
	}
}

// TestElectionNodeIsJSON: the coordinator's election node holds a JSON
// payload with its id, host, pid and since, like every other znode.
func TestElectionNodeIsJSON(t *testing.T) {
	c := env(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, Config{Conn: c, ID: "c1", Interval: 50 * time.Millisecond}) }()
	defer func() { cancel(); <-errc }()
	dir := c.Paths().Election(ElectionName)
	var data []byte
	zktest.WaitFor(t, 10*time.Second, "an election node", func() (bool, error) {
		kids, _, err := c.ZK().Children(dir)
		if err != nil || len(kids) == 0 {
			return false, err
		}
		data, _, err = c.ZK().Get(path.Join(dir, kids[0]))
		return err == nil, err
	})
	var cand map[string]any
	if err := json.Unmarshal(data, &cand); err != nil {
		t.Fatalf("election node holds %q, not JSON: %v", data, err)
	}
	for _, k := range []string{"v", "id", "host", "pid", "since"} {
		if _, ok := cand[k]; !ok {
			t.Errorf("election payload %s has no %q", data, k)
		}
	}
	if cand["id"] != "c1" {
		t.Errorf("election payload id = %v, want c1", cand["id"])
	}
	if id, err := znodes.LeaderOf(c, ElectionName); err != nil || id != "c1" {
		t.Errorf("LeaderOf = %q, %v; want c1", id, err)
	}
}

// TestPushJSONEmptyLists: an unchanged push prints plan, entries and queue
// as [], never null.
func TestPushJSONEmptyLists(t *testing.T) {
	c := env(t)
	sp := mustSpec(t, specYAML("v1", "1", blobA, "1", blobB, "64"))
	if _, err := Push(context.Background(), c, sp, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	res, err := Push(context.Background(), c, sp, PushOptions{By: "test"})
	if err != nil || !res.Unchanged {
		t.Fatalf("second push: %+v %v, want unchanged", res, err)
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{`"plan":[]`, `"entries":[]`, `"queue":[]`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("unchanged push JSON lacks %s: %s", k, b)
		}
	}
}

// TestPushJSONSnakeCase: push --json names every field in snake_case.
func TestPushJSONSnakeCase(t *testing.T) {
	c := env(t)
	res, err := Push(context.Background(), c, mustSpec(t, specYAML("v1", "1", blobA, "1", blobB, "64")), PushOptions{By: "test", DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Plan []map[string]json.RawMessage `json:"plan"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Plan) == 0 {
		t.Fatalf("no plan in %s", b)
	}
	for _, ch := range doc.Plan {
		for k := range ch {
			if k != strings.ToLower(k) {
				t.Errorf("plan key %q is not snake_case: %s", k, b)
			}
		}
		for _, k := range []string{"service", "kind", "to"} {
			if _, ok := ch[k]; !ok {
				t.Errorf("plan change lacks %q: %s", k, b)
			}
		}
	}
}
