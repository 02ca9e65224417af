package coordinator

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"dcroll/integration/zktest"
	"dcroll/znodes"
)

// sseEvent is one server-sent event as a browser's EventSource sees it.
type sseEvent struct {
	Event, Data, Retry string
}

// sseStream reads the events of one /api/events response.
type sseStream struct {
	t      *testing.T
	events chan sseEvent
	cancel context.CancelFunc
}

// openStream GETs url and parses its event stream in the background (the
// goroutine ends when the test's cleanup cancels the request).
func openStream(t *testing.T, url string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		cancel()
		t.Fatalf("GET %s: %s, Content-Type %q", url, resp.Status, ct)
	}
	s := &sseStream{t: t, events: make(chan sseEvent, 64), cancel: cancel}
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(s.events)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev != (sseEvent{}) {
					select {
					case s.events <- ev:
					case <-ctx.Done():
						return
					}
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.Event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				if ev.Data != "" {
					t.Errorf("event %q has two data lines: the page would join them", ev.Event)
				}
				ev.Data = strings.TrimPrefix(line, "data: ")
			case strings.HasPrefix(line, "retry: "):
				ev.Retry = strings.TrimPrefix(line, "retry: ")
			case strings.HasPrefix(line, ":"):
			default:
				t.Errorf("stream line %q is no server-sent event field", line)
			}
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return s
}

// next returns the next event, failing the test after timeout.
func (s *sseStream) next(timeout time.Duration) sseEvent {
	s.t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case ev, ok := <-s.events:
		if !ok {
			s.t.Fatal("event stream ended")
		}
		return ev
	case <-timer.C:
		s.t.Fatalf("no event within %s", timeout)
	}
	return sseEvent{}
}

// until skips events until one named event arrives.
func (s *sseStream) until(event string, timeout time.Duration) sseEvent {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			s.t.Fatalf("no %q event within %s", event, timeout)
		}
		if ev := s.next(left); ev.Event == event {
			return ev
		}
	}
}

// fakeSource is a nightSource over a scripted read.
type fakeSource struct {
	mu    sync.Mutex
	body  string
	err   error
	reads atomic.Int32
}

func (f *fakeSource) set(body string, err error) {
	f.mu.Lock()
	f.body, f.err = body, err
	f.mu.Unlock()
}

func (f *fakeSource) source() *nightSource {
	return &nightSource{
		read: func() ([]byte, error) {
			f.reads.Add(1)
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.err != nil {
				return nil, f.err
			}
			return []byte(f.body), nil
		},
		state:   func() znodes.SessionState { return znodes.Connected },
		maxAge:  5 * time.Millisecond,
		timeout: time.Second,
		now:     time.Now,
	}
}

// TestEventsFraming: the stream starts with a retry hint, sends a snapshot
// (one data line), then heartbeats while nothing changes, a snapshot on a
// change, a stale event (with error and since) when reads fail, and a
// snapshot again, unasked, once they succeed.
func TestEventsFraming(t *testing.T) {
	f := &fakeSource{}
	f.set(`{"n":1}`, nil)
	d := &dashServer{src: f.source(), poll: 10 * time.Millisecond, heartbeat: 50 * time.Millisecond}
	srv := httptest.NewServer(http.HandlerFunc(d.events))
	t.Cleanup(srv.Close) // after the stream's cleanup: Close waits for open requests
	s := openStream(t, srv.URL)

	if ev := s.next(5 * time.Second); ev.Retry != "2000" || ev.Event != "" {
		t.Fatalf("first frame %+v, want retry: 2000", ev)
	}
	if ev := s.next(5 * time.Second); ev.Event != "snapshot" || ev.Data != `{"n":1}` {
		t.Fatalf("second frame %+v, want the snapshot", ev)
	}
	ev := s.next(5 * time.Second)
	if ev.Event != "heartbeat" {
		t.Fatalf("unchanged data: got %+v, want a heartbeat", ev)
	}
	var hb heartbeatEvent
	if err := json.Unmarshal([]byte(ev.Data), &hb); err != nil || hb.At.IsZero() {
		t.Fatalf("heartbeat data %q: %v", ev.Data, err)
	}

	f.set(`{"n":2}`, nil)
	if ev := s.until("snapshot", 5*time.Second); ev.Data != `{"n":2}` {
		t.Fatalf("changed data: snapshot %q", ev.Data)
	}

	failed := time.Now()
	f.set("", errors.New("read HEAD: zk: could not connect to a server"))
	ev = s.until("stale", 5*time.Second)
	var st staleEvent
	if err := json.Unmarshal([]byte(ev.Data), &st); err != nil {
		t.Fatalf("stale data %q: %v", ev.Data, err)
	}
	if !strings.Contains(st.Error, "could not connect") || st.Since.Before(failed.Add(-time.Second)) || st.At.Before(st.Since) {
		t.Fatalf("stale event %+v: want the error and since when", st)
	}
	// While it fails: stale again once per heartbeat, with the same since.
	ev = s.next(5 * time.Second)
	var again staleEvent
	if err := json.Unmarshal([]byte(ev.Data), &again); ev.Event != "stale" || err != nil || !again.Since.Equal(st.Since) {
		t.Fatalf("still failing: %+v (%v), want stale since %s", ev, err, st.Since)
	}

	f.set(`{"n":2}`, nil) // the same data as before the outage: sent anyway
	if ev := s.until("snapshot", 5*time.Second); ev.Data != `{"n":2}` {
		t.Fatalf("after recovery: snapshot %q", ev.Data)
	}
}

// TestNightSourceSharesReads: streams asking at the same time share one
// read, and a read that hangs turns into a stale result after the timeout
// instead of a hung stream.
func TestNightSourceSharesReads(t *testing.T) {
	release := make(chan struct{})
	var reads atomic.Int32
	src := &nightSource{
		read: func() ([]byte, error) {
			reads.Add(1)
			<-release
			return []byte(`{}`), nil
		},
		state:   func() znodes.SessionState { return znodes.Connected },
		maxAge:  time.Minute,
		timeout: 200 * time.Millisecond,
		now:     time.Now,
	}
	var wg sync.WaitGroup
	results := make([]nightRead, 8)
	for i := range results {
		wg.Go(func() { results[i] = src.get(context.Background()) })
	}
	wg.Wait()
	for i, r := range results {
		if r.err == nil || !strings.Contains(r.err.Error(), "did not answer") {
			t.Errorf("get %d while ZooKeeper hangs: %v, want a timeout", i, r.err)
		}
	}
	close(release)
	zktest.WaitFor(t, 5*time.Second, "the hung read to land", func() (bool, error) {
		r := src.get(context.Background())
		return r.err == nil && string(r.body) == "{}", nil
	})
	if n := reads.Load(); n != 1 {
		t.Errorf("%d reads for concurrent gets, want 1 shared read", n)
	}

	src.state = func() znodes.SessionState { return znodes.Suspended }
	src.maxAge = 0
	if r := src.get(context.Background()); r.err == nil || !strings.Contains(r.err.Error(), "suspended") {
		t.Errorf("suspended session: %v, want the session state as the error", r.err)
	}
	if reads.Load() != 1 {
		t.Error("read ZooKeeper without a connected session")
	}
}

// TestDashboardStaleAndRecovers: against a real ZooKeeper that is killed
// and restarted, /api/events says stale (the stream stays open) and sends
// a fresh snapshot by itself once ZooKeeper is back; / always loads.
func TestDashboardStaleAndRecovers(t *testing.T) {
	srv := zktest.Start(t)
	c, err := znodes.Dial(context.Background(), znodes.Options{Servers: srv.Addr(), SessionTimeout: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.EnsureSkeleton(); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{blobA, blobB} {
		if _, err := c.Create(c.Paths().Blob(strings.TrimPrefix(b, "sha256:")), znodes.MustEncode(&znodes.Blob{ID: b, Size: 1}), 0); err != nil {
			t.Fatal(err)
		}
	}
	sp := mustSpec(t, specYAML("v1", "1", blobA, "1", blobB, "64"))
	if _, err := Push(context.Background(), c, sp, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	web := httptest.NewServer(Dashboard(c))
	t.Cleanup(web.Close) // after the stream's cleanup: Close waits for open requests
	s := openStream(t, web.URL+"/api/events")
	var v DashboardView
	if err := json.Unmarshal([]byte(s.until("snapshot", 10*time.Second).Data), &v); err != nil {
		t.Fatal(err)
	}
	if v.Status == nil || v.Status.Head == nil || v.Status.Head.SpecID != sp.ID() || v.Rollout != nil || len(v.History) != 1 {
		t.Fatalf("snapshot: %+v", v)
	}

	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	ev := s.until("stale", 20*time.Second)
	var st staleEvent
	if err := json.Unmarshal([]byte(ev.Data), &st); err != nil || st.Error == "" || st.Since.IsZero() {
		t.Fatalf("stale event %q: %v", ev.Data, err)
	}
	t.Logf("stale: %s", ev.Data)
	// The page shell loads while ZooKeeper is down, with the last data.
	resp, err := http.Get(web.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	page := new(strings.Builder)
	if _, err := fmt.Fprint(page, readAll(t, resp)); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(page.String(), `id="initial"`) || !strings.Contains(page.String(), sp.ID()) {
		t.Errorf("/ during the outage: %s, want the shell with the last snapshot:\n%.400s", resp.Status, page)
	}
	if resp, err := http.Get(web.URL + "/api/night"); err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/api/night during the outage: %v %v, want 503", resp, err)
	} else {
		resp.Body.Close()
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(s.until("snapshot", 30*time.Second).Data), &v); err != nil || v.Status.Head.SpecID != sp.ID() {
		t.Fatalf("after the restart: %+v %v", v, err)
	}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		b.WriteString(sc.Text())
		b.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestHumanUnits(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"},
		{12 << 20, "12.0 MiB"}, {512 << 20, "512 MiB"}, {8 << 30, "8.0 GiB"},
		{3 << 40, "3.0 TiB"}, {5000 << 40, "5000 TiB"},
	} {
		if got := humanBytes(tc.n); got != tc.want {
			t.Errorf("humanBytes(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
	if got := humanRate(3.25 * (1 << 20)); got != "3.2 MiB/s" {
		t.Errorf("humanRate = %q, want 3.2 MiB/s", got)
	}
}

// TestDashboardView: a halt is one banner with its reason once (long
// bodies truncated) and the exact commands, the rollback target is HEAD's
// predecessor, finished downloads are left out, sizes are human.
func TestDashboardView(t *testing.T) {
	body := "status 500: " + strings.Repeat("<html>oops</html>\n", 100)
	st := &Status{
		Head: &znodes.Head{SpecID: "bbbbbbbbbbbbbbbbbbbb", Prev: "aaaaaaaaaaaaaaaaaaaa", Name: "v2"},
		Queue: []QueueEntry{
			{Node: "d-1", DeployEntry: znodes.DeployEntry{Service: "store", Version: "2.0.0", State: znodes.DeployDone}},
			{Node: "d-2", DeployEntry: znodes.DeployEntry{Service: "web", Version: "3.0.0", State: znodes.DeployHalted, Machine: "m4", Reason: body}},
		},
		Services: []ServiceStatus{{Service: "web", Machines: []znodes.Current{{Machine: "m4"}},
			Members: []MemberStatus{{Machine: "m4", Detail: body}}}},
		Agents: []znodes.Agent{{Machine: "m4", LockedBytes: 96 << 20}},
		Progress: []znodes.Progress{{Machine: "m4", Blobs: []znodes.BlobProgress{
			{Blob: "sha256:" + strings.Repeat("c", 64), Bytes: 3 << 20, Total: 12 << 20, RateBps: 1 << 20},
			{Blob: "sha256:" + strings.Repeat("d", 64), Bytes: 1, Total: 1, Done: true},
		}}},
	}
	hist := []HistoryLine{
		{HistoryEntry: znodes.HistoryEntry{To: "aaaaaaaaaaaaaaaaaaaa", Name: "v1"}, Outcome: OutcomeDone},
		{HistoryEntry: znodes.HistoryEntry{From: "aaaaaaaaaaaaaaaaaaaa", To: "bbbbbbbbbbbbbbbbbbbb", Name: "v2"}, Outcome: OutcomeHalted},
	}
	v := buildDashboardView("/dc-test", st, nil, hist)
	h := v.Halt
	if h == nil || h.Service != "web" || h.Machine != "m4" || !h.Truncated || len([]rune(h.Reason)) > dashTextMax || strings.Contains(h.Reason, "\n") {
		t.Fatalf("halt = %+v", h)
	}
	if h.Resume != "dcroll --root /dc-test resume" || h.RollbackCmd != "dcroll --root /dc-test rollback aaaaaaaaaaaa" {
		t.Errorf("commands %q, %q", h.Resume, h.RollbackCmd)
	}
	if v.Rollback == nil || v.Rollback.Name != "v1" {
		t.Errorf("rollback target %+v, want v1", v.Rollback)
	}
	if len(v.History) != 2 || v.History[0].Name != "v2" {
		t.Errorf("history not newest first: %+v", v.History)
	}
	if d := v.Status.Services[0].Members[0].Detail; len([]rune(d)) > dashTextMax {
		t.Errorf("member detail not truncated (%d runes)", len(d))
	}
	if len(v.Status.Services[0].Machines) != 0 {
		t.Error("raw registrations sent twice")
	}
	if len(v.Downloads) != 1 || v.Downloads[0].Percent != 25 || v.Downloads[0].Bytes != "3.0 MiB" || v.Downloads[0].Total != "12.0 MiB" || v.Downloads[0].Rate != "1.0 MiB/s" {
		t.Errorf("downloads %+v, want only the one in flight, in MiB", v.Downloads)
	}
	if len(v.Agents) != 1 || v.Agents[0].Locked != "96.0 MiB" {
		t.Errorf("agents %+v", v.Agents)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "<html>") {
		t.Error("snapshot JSON holds raw <: it could end the inline script")
	}
	if v := buildDashboardView(znodes.DefaultRoot, &Status{Head: &znodes.Head{SpecID: "x"}, Queue: st.Queue}, nil, nil); v.Halt.Resume != "dcroll resume" || v.Halt.RollbackCmd != "" {
		t.Errorf("default root, no predecessor: %+v", v.Halt)
	}
}
