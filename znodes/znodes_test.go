package znodes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"dcroll/integration/zkserver"
	"dcroll/integration/zktest"

	"github.com/go-zookeeper/zk"
)

// Timings of the tests: zktest's server ticks every 200ms, so sessions can
// be 400ms..4s.
const (
	testSession = 1500 * time.Millisecond
	waitLong    = 15 * time.Second // deadline of every wait in these tests
)

// The tests share one real ZooKeeper server (each test has its own root),
// started on first use and stopped by TestMain; tests that need their own
// server or ensemble start it with zktest.
var shared struct {
	once sync.Once
	dir  string
	s    *zkserver.Server
	err  error
}

// startZK returns the address of the shared ZooKeeper server. Like
// zktest.Start, it skips the test under -short.
func startZK(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a real ZooKeeper: skipped with -short")
	}
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if shared.dir, shared.err = os.MkdirTemp("", "znodes-zk-"); shared.err == nil {
			shared.s, shared.err = zkserver.Start(ctx, zkserver.Options{Dir: shared.dir})
		}
	})
	if shared.err != nil {
		t.Fatalf("start zookeeper: %v", shared.err)
	}
	return shared.s.Addr()
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.s != nil {
		if code != 0 {
			tail := strings.Split(strings.TrimRight(shared.s.LogTail(), "\n"), "\n")
			os.Stderr.WriteString("last lines of the shared zookeeper's log:\n" + strings.Join(tail[max(0, len(tail)-40):], "\n") + "\n")
		}
		if err := shared.s.Stop(); err != nil {
			os.Stderr.WriteString("stop zookeeper: " + err.Error() + "\n")
		}
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// testRoot gives every test its own dcroll root on the shared server, also
// across -count repetitions.
func testRoot(t *testing.T) string {
	roots.Lock()
	defer roots.Unlock()
	if r, ok := roots.m[t]; ok {
		return r
	}
	roots.n++
	r := fmt.Sprintf("/%s-%d", strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()), roots.n)
	roots.m[t] = r
	t.Cleanup(func() {
		roots.Lock()
		delete(roots.m, t)
		roots.Unlock()
	})
	return r
}

var roots = struct {
	sync.Mutex
	m map[*testing.T]string
	n int
}{m: map[*testing.T]string{}}

// logSink captures log records so tests can wait for a recipe to report a
// state that has no other observable effect; it also prints with -v.
type logSink struct {
	mu      sync.Mutex
	msgs    []string
	changed chan struct{}
}

func (s *logSink) Enabled(context.Context, slog.Level) bool { return true }
func (s *logSink) WithAttrs([]slog.Attr) slog.Handler       { return s }
func (s *logSink) WithGroup(string) slog.Handler            { return s }
func (s *logSink) Handle(_ context.Context, r slog.Record) error {
	s.mu.Lock()
	s.msgs = append(s.msgs, r.Message)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	if testing.Verbose() && r.Level >= slog.LevelInfo {
		var b strings.Builder
		b.WriteString(r.Time.Format("15:04:05.000 ") + r.Level.String() + " " + r.Message)
		r.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
		os.Stderr.WriteString(b.String() + "\n")
	}
	return nil
}

func newLogSink() *logSink { return &logSink{changed: make(chan struct{})} }

// wait blocks until a message containing msg was logged.
func (s *logSink) wait(t *testing.T, msg string) {
	t.Helper()
	deadline := time.After(waitLong)
	for {
		s.mu.Lock()
		ch := s.changed
		for _, m := range s.msgs {
			if strings.Contains(m, msg) {
				s.mu.Unlock()
				return
			}
		}
		s.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no log %q within %s", msg, waitLong)
		}
	}
}

// stateRec records every state change of a Conn.
type stateRec struct {
	mu      sync.Mutex
	seq     []stateAt
	changed chan struct{}
}

type stateAt struct {
	st  SessionState
	gen uint64
}

func (r *stateRec) record(st SessionState, gen uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq = append(r.seq, stateAt{st, gen})
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *stateRec) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seq)
}

// since returns the states recorded from index i on.
func (r *stateRec) since(i int) []stateAt {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]stateAt(nil), r.seq[i:]...)
}

// waitFor waits until the states from index i on contain want in order.
func (r *stateRec) waitFor(t *testing.T, i int, want ...stateAt) {
	t.Helper()
	deadline := time.After(waitLong)
	for {
		r.mu.Lock()
		ch, got := r.changed, r.seq[i:]
		k := 0
		for _, s := range got {
			if k < len(want) && s == want[k] {
				k++
			}
		}
		r.mu.Unlock()
		if k == len(want) {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("states %v do not contain %v within %s", r.since(i), want, waitLong)
		}
	}
}

type dialOpt func(*Options)

func withSession(d time.Duration) dialOpt { return func(o *Options) { o.SessionTimeout = d } }
func withClock(c Clock) dialOpt           { return func(o *Options) { o.Clock = c } }
func withLog(s *logSink) dialOpt          { return func(o *Options) { o.Logger = slog.New(s) } }
func withStates(r *stateRec) dialOpt {
	return func(o *Options) { o.onState = r.record }
}

// dial connects to addr with the test's root and a short session; the Conn
// is closed at cleanup.
func dial(t *testing.T, addr string, opts ...dialOpt) *Conn {
	t.Helper()
	o := Options{Servers: addr, Root: testRoot(t), SessionTimeout: testSession, ConnectTimeout: 10 * time.Second,
		Logger: slog.New(newLogSink())}
	for _, f := range opts {
		f(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	c, err := Dial(ctx, o)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(c.Close)
	if err := c.EnsureSkeleton(); err != nil {
		t.Fatalf("skeleton: %v", err)
	}
	return c
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newStateRec() *stateRec { return &stateRec{changed: make(chan struct{})} }

// runBG runs f in a goroutine until the returned stop is called (or the test
// ends); stop cancels f's context and returns f's error.
func runBG(t *testing.T, f func(ctx context.Context) error) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(waitLong):
				err = errors.New("did not stop within the deadline")
			}
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

// recv waits for a value on ch or fails the test.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLong):
		t.Fatalf("%s: nothing within %s", what, waitLong)
	}
	panic("unreachable")
}

// waitFor polls cond until it holds.
func waitFor(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	zktest.WaitFor(t, waitLong, what, cond)
}

// owner returns the ephemeral owner of p as seen by c (0 when missing).
func owner(t *testing.T, c *zk.Conn, p string) (int64, bool) {
	t.Helper()
	ok, st, err := c.Exists(p)
	if err != nil {
		t.Fatalf("exists %s: %v", p, err)
	}
	if !ok {
		return 0, false
	}
	return st.EphemeralOwner, true
}

// TestDecodeRefusesOversizedPayloads: a payload above MaxPayload is
// refused before it is parsed.
func TestDecodeRefusesOversizedPayloads(t *testing.T) {
	big := make([]byte, MaxPayload+1)
	copy(big, `{"v":1,"machine":"m1"}`)
	var c Current
	if err := Decode(big, &c); err == nil || !strings.Contains(err.Error(), "exceeds the") {
		t.Fatalf("oversized payload: %v", err)
	}
	if err := Decode([]byte(`{"v":1,"machine":"m1"}`), &c); err != nil || c.Machine != "m1" {
		t.Fatalf("normal payload: %v", err)
	}
}
