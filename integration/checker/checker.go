package checker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"
)

// Instance is one service instance the checker probes.
type Instance struct {
	Service   string
	Machine   string
	Rack      string
	HealthURL string // e.g. http://127.0.0.1:PORT/healthz
}

// Rules are the promises of one service.
type Rules struct {
	// QuorumCount is the minimum number of healthy instances; 0 means use
	// QuorumPercent.
	QuorumCount int
	// QuorumPercent is a percentage of the members (the Instances of the
	// service), rounded up.
	QuorumPercent int
	// MaxParallel is how many instances may be unhealthy (and not excused)
	// at once; 0 means 1.
	MaxParallel int
	// DependsOn names services that must finish their rollout first.
	DependsOn []string
}

// Config says what to watch and what was promised.
type Config struct {
	// EventLog is the file every hello instance appends to
	// ($HELLO_EVENT_LOG).
	EventLog string
	// Instances are the members: every instance of every service.
	Instances []Instance
	// Rules are the promises, by service. A service with members and no
	// entry gets the zero Rules (no quorum, at most 1 unhealthy); an entry
	// for a service without members is refused.
	Rules map[string]Rules
	// ProbeInterval is how often every HealthURL is probed; default 50ms.
	ProbeInterval time.Duration
}

const (
	defaultProbeInterval = 50 * time.Millisecond
	// probeTimeout bounds one probe; a timeout is a failed probe.
	probeTimeout = 2 * time.Second
	// maxBody is how much of a /healthz answer is read.
	maxBody = 64 << 10
)

// Event kinds of the event log.
const (
	evUp        = "up"
	evUnhealthy = "unhealthy"
	evDown      = "down"
)

type key struct{ service, machine string }

func (k key) String() string { return k.service + "/" + k.machine }

// probe is one GET of an instance's HealthURL.
type probe struct {
	start, end time.Time
	// known is when the outcome was certain: a refused connection is known
	// when the dial failed (often well before end is taken, under load);
	// anything else at end.
	known   time.Time
	code    int    // HTTP status; 0 when there was no answer
	version string // "version" of the JSON answer, "" if none
	err     string // transport or decoding error
}

// answered200 reports a 200 with a JSON version; whether that version is
// the logged one is decided by the timeline.
func (p probe) answered200() bool { return p.code == http.StatusOK && p.version != "" && p.err == "" }

func (p probe) describe() string {
	switch {
	case p.err != "" && p.code == 0:
		return p.err
	case p.err != "":
		return fmt.Sprintf("HTTP %d: %s", p.code, p.err)
	default:
		return fmt.Sprintf("HTTP %d version %q", p.code, p.version)
	}
}

type mark struct {
	label string
	at    time.Time
}

type excuse struct {
	at time.Time
	on bool
}

// Checker probes the instances and judges a rollout; make one with Start.
type Checker struct {
	cfg    Config
	start  time.Time
	client *http.Client
	index  map[key]int  // into cfg.Instances
	serial []sync.Mutex // per instance: one probe at a time

	ctx      context.Context // probing; canceled by Stop
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once
	stopped  chan struct{}

	mu        sync.Mutex
	probes    [][]probe // per instance, by start
	marks     []mark
	excuses   map[key][]excuse
	strays    []string // Excuse calls naming no member
	stoppedAt time.Time
}

// Start validates cfg and starts probing every instance's HealthURL every
// ProbeInterval until ctx ends or Stop. Events of the log are read by Judge.
func Start(ctx context.Context, cfg Config) (*Checker, error) {
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = defaultProbeInterval
	}
	if err := validate(cfg); err != nil {
		return nil, fmt.Errorf("checker: %w", err)
	}
	c := &Checker{
		cfg:     cfg,
		start:   now(),
		client:  &http.Client{Timeout: probeTimeout, Transport: &http.Transport{DisableKeepAlives: true}},
		index:   map[key]int{},
		serial:  make([]sync.Mutex, len(cfg.Instances)),
		stopped: make(chan struct{}),
		probes:  make([][]probe, len(cfg.Instances)),
		excuses: map[key][]excuse{},
	}
	for i, in := range cfg.Instances {
		c.index[key{in.Service, in.Machine}] = i
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	for i := range cfg.Instances {
		c.wg.Add(1)
		go c.probeLoop(i)
	}
	go func() {
		select {
		case <-ctx.Done():
			c.Stop()
		case <-c.stopped:
		}
	}()
	return c, nil
}

func validate(cfg Config) error {
	if cfg.EventLog == "" {
		return errors.New("no EventLog")
	}
	if len(cfg.Instances) == 0 {
		return errors.New("no Instances")
	}
	seen := map[key]bool{}
	for _, in := range cfg.Instances {
		k := key{in.Service, in.Machine}
		if in.Service == "" || in.Machine == "" || strings.ContainsAny(in.Service+in.Machine, " \t\n") {
			return fmt.Errorf("instance %q/%q: service and machine must be non-empty words", in.Service, in.Machine)
		}
		if seen[k] {
			return fmt.Errorf("instance %s listed twice", k)
		}
		seen[k] = true
		u, err := url.Parse(in.HealthURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("instance %s: HealthURL %q is not an http(s) URL", k, in.HealthURL)
		}
	}
	has := map[string]bool{}
	for _, in := range cfg.Instances {
		has[in.Service] = true
	}
	for svc, r := range cfg.Rules {
		if r.QuorumCount < 0 || r.QuorumPercent < 0 || r.QuorumPercent > 100 || r.MaxParallel < 0 {
			return fmt.Errorf("rules of %s: %+v out of range", svc, r)
		}
		if !has[svc] {
			return fmt.Errorf("rules of %s: the service has no instances (a quorum of nothing is always broken): drop its rules", svc)
		}
	}
	return nil
}

// now is the wall clock without its monotonic reading, comparable with the
// parsed times of the event log.
func now() time.Time { return time.Now().Round(0) }

func (c *Checker) probeLoop(i int) {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.ProbeInterval)
	defer t.Stop()
	for {
		c.probeOnce(c.ctx, i)
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probeOnce probes instance i and records the result, unless ctx ended
// meanwhile (a probe cut short by Stop says nothing about the instance).
func (c *Checker) probeOnce(ctx context.Context, i int) {
	c.serial[i].Lock()
	defer c.serial[i].Unlock()
	if ctx.Err() != nil {
		return
	}
	p := c.get(ctx, c.cfg.Instances[i].HealthURL)
	if ctx.Err() != nil {
		return
	}
	c.mu.Lock()
	c.probes[i] = append(c.probes[i], p)
	c.mu.Unlock()
}

func (c *Checker) get(ctx context.Context, u string) probe {
	p := probe{start: now()}
	var mu sync.Mutex // the trace may be called from a dialing goroutine
	var dialFailed time.Time
	trace := &httptrace.ClientTrace{ConnectDone: func(_, _ string, err error) {
		if err != nil {
			mu.Lock()
			if dialFailed.IsZero() {
				dialFailed = now()
			}
			mu.Unlock()
		}
	}}
	p.code, p.version, p.err = c.fetch(httptrace.WithClientTrace(ctx, trace), u)
	p.end = now()
	p.known = p.end
	mu.Lock()
	if p.code == 0 && !dialFailed.IsZero() && dialFailed.Before(p.end) {
		p.known = dialFailed
	}
	mu.Unlock()
	return p
}

// fetch GETs u: the status (0 without an answer), the JSON version, and
// what went wrong.
func (c *Checker) fetch(ctx context.Context, u string) (code int, version, problem string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, "", err.Error()
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, "", shortErr(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return resp.StatusCode, "", shortErr(err)
	}
	var st struct {
		Version string `json:"version"`
	}
	switch {
	case json.Unmarshal(b, &st) != nil:
		problem = "answer is not JSON"
	case st.Version == "":
		problem = "answer has no version"
	}
	return resp.StatusCode, st.Version, problem
}

// shortErr keeps the cause ("connection refused", "timeout") of a client
// error, which otherwise repeats the URL and the addresses.
func shortErr(err error) string {
	var errno syscall.Errno
	var ne net.Error
	switch {
	case errors.As(err, &errno):
		return errno.Error()
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "EOF"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// Excuse says the test itself injected a fault on this instance (crashed
// it, killed its machine) from now on (on) or until now (!on). An excused
// instance that is not healthy still counts against quorum, but not
// against MaxParallel or the rack rule.
func (c *Checker) Excuse(service, machine string, on bool) {
	k := key{service, machine}
	t := now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.index[k]; !ok {
		c.strays = append(c.strays, fmt.Sprintf("%s: Excuse(%s, %t) names no member", c.off(t), k, on))
		return
	}
	c.excuses[k] = append(c.excuses[k], excuse{t, on})
}

// Mark records a named instant; Expect.Since judges from it. A label marked
// twice means its latest instant.
func (c *Checker) Mark(label string) {
	t := now()
	c.mu.Lock()
	c.marks = append(c.marks, mark{label, t})
	c.mu.Unlock()
}

// Stop stops probing and waits for the probes in flight; later calls do
// nothing. Judge then judges up to the instant of Stop.
func (c *Checker) Stop() {
	c.stopOnce.Do(func() {
		c.cancel()
		c.wg.Wait()
		c.mu.Lock()
		c.stoppedAt = now()
		c.mu.Unlock()
		close(c.stopped)
	})
}

func (c *Checker) isStopped() bool {
	select {
	case <-c.stopped:
		return true
	default:
		return false
	}
}

// off formats t as an offset from Start.
func (c *Checker) off(t time.Time) string { return off(c.start, t) }

func off(start, t time.Time) string {
	d := t.Sub(start).Round(time.Millisecond)
	if d < 0 {
		return "-" + (-d).String()
	}
	return "+" + d.String()
}

func dur(d time.Duration) string { return d.Round(time.Millisecond).String() }

// Expect is what a rollout must have achieved.
type Expect struct {
	// Since judges only what happened after this Mark ("" = from Start);
	// the state at that instant comes from earlier events and probes.
	Since string
	// Targets are the new versions of this rollout, by service (for the
	// dependency order and the time to finish).
	Targets map[string]string
	// Final: service -> machine -> version that must serve, healthy, at the
	// end; a machine not listed is not checked.
	Final map[string]map[string]string
	// Bad are versions no instance may be serving at the end.
	Bad []string
}

// Figures sum up one service over the judged period.
type Figures struct {
	Service           string
	Members           int
	Quorum            int // resolved to a count
	MinHealthy        int
	MaxUnhealthy      int // not excused
	MaxRacksUnhealthy int // racks with an unhealthy instance (not excused) at once
}

// Report is the verdict of Judge.
type Report struct {
	// Violations are one line each: what, when (offset since Start) and
	// which instances.
	Violations []string
	Services   map[string]Figures
	// Finish is from the Since mark to the last `up` of a target version
	// (0 if none).
	Finish time.Duration
}

// OK reports no violations.
func (r Report) OK() bool { return len(r.Violations) == 0 }

// String is a compact table of the figures, the finish time and the
// violations.
func (r Report) String() string {
	var b bytes.Buffer
	w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "service\tmembers\tquorum\tmin healthy\tmax unhealthy\tmax racks unhealthy")
	names := make([]string, 0, len(r.Services))
	for s := range r.Services {
		names = append(names, s)
	}
	sort.Strings(names)
	for _, s := range names {
		f := r.Services[s]
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\n", f.Service, f.Members, f.Quorum, f.MinHealthy, f.MaxUnhealthy, f.MaxRacksUnhealthy)
	}
	w.Flush()
	fmt.Fprintf(&b, "finish %s, %d violations\n", dur(r.Finish), len(r.Violations))
	for _, v := range r.Violations {
		fmt.Fprintf(&b, "  %s\n", v)
	}
	return b.String()
}

// Judge judges everything recorded so far (up to Stop, if stopped) against
// the rules and e. Unless the checker is stopped it first probes every
// instance once more, and that round is the end state.
func (c *Checker) Judge(e Expect) Report {
	if !c.isStopped() {
		c.finalRound()
	}
	s := c.snapshot()
	data, err := os.ReadFile(c.cfg.EventLog)
	if err != nil {
		data = nil
	}
	return judge(s, data, err, e)
}

func (c *Checker) finalRound() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*probeTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for i := range c.cfg.Instances {
		wg.Go(func() { c.probeOnce(ctx, i) })
	}
	wg.Wait()
}

// snapshot is everything Judge needs, copied.
type snapshot struct {
	start, end time.Time
	insts      []Instance
	rules      map[string]Rules
	probes     [][]probe
	marks      []mark
	excuses    map[key][]excuse
	strays     []string
	logPath    string
}

func (c *Checker) snapshot() snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := snapshot{
		start:   c.start,
		end:     c.stoppedAt,
		insts:   c.cfg.Instances,
		rules:   c.cfg.Rules,
		probes:  make([][]probe, len(c.probes)),
		marks:   slices.Clone(c.marks),
		excuses: map[key][]excuse{},
		strays:  slices.Clone(c.strays),
		logPath: c.cfg.EventLog,
	}
	if s.end.IsZero() {
		s.end = now()
	}
	for i, ps := range c.probes {
		s.probes[i] = slices.Clone(ps)
	}
	for k, ex := range c.excuses {
		s.excuses[k] = slices.Clone(ex)
	}
	return s
}

// logEvent is one line of the event log.
type logEvent struct {
	at      time.Time
	line    int
	version string
	kind    string
	pid     int
}

// parseLog parses the event log into events per member; everything that is
// not a well-formed line is a violation naming its line number, and so is a
// line of a known service from a machine that is no member.
func parseLog(data []byte, index map[key]int, services map[string]bool) (map[int][]logEvent, []string) {
	evs := map[int][]logEvent{}
	var bad []string
	lines := strings.Split(string(data), "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1] // the newline ending the last line
	}
	strays := map[key]int{}
	for i, l := range lines {
		n := i + 1
		f := strings.Split(l, " ")
		if len(f) != 6 || slices.Contains(f, "") {
			bad = append(bad, fmt.Sprintf("event log line %d: want 6 space-separated fields: %q", n, l))
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, f[0])
		if err != nil {
			bad = append(bad, fmt.Sprintf("event log line %d: bad time: %q", n, l))
			continue
		}
		kind := f[4]
		if kind != evUp && kind != evUnhealthy && kind != evDown {
			bad = append(bad, fmt.Sprintf("event log line %d: unknown event %q: %q", n, kind, l))
			continue
		}
		ps, ok := strings.CutPrefix(f[5], "pid=")
		pid, err := strconv.Atoi(ps)
		if !ok || err != nil || pid <= 0 {
			bad = append(bad, fmt.Sprintf("event log line %d: bad pid: %q", n, l))
			continue
		}
		k := key{f[1], f[2]}
		i, ok := index[k]
		if !ok {
			if services[k.service] {
				if _, seen := strays[k]; !seen {
					strays[k] = n
					bad = append(bad, fmt.Sprintf("event log line %d: %s is not a member", n, k))
				}
			}
			continue // another service: not ours to judge
		}
		evs[i] = append(evs[i], logEvent{at: at, line: n, version: f[3], kind: kind, pid: pid})
	}
	for i := range evs {
		sort.SliceStable(evs[i], func(a, b int) bool { return evs[i][a].at.Before(evs[i][b].at) })
	}
	return evs, bad
}

// state is what the timeline says of one instance from an instant on.
type state struct {
	healthy bool
	version string // of the last log event, "" if none
	why     string // why not healthy
}

type change struct {
	at time.Time
	state
}

// timeline is one instance's state as a step function.
type timeline struct {
	evs     []logEvent
	changes []change
}

// at is the state at t (the zero state, not healthy, before any change).
func (tl *timeline) at(t time.Time) state {
	i := sort.Search(len(tl.changes), func(i int) bool { return tl.changes[i].at.After(t) })
	if i == 0 {
		return state{why: "no event"}
	}
	return tl.changes[i-1].state
}

// lastEvent is the index of the last event at or before t, or -1.
func lastEvent(evs []logEvent, t time.Time) int {
	return sort.Search(len(evs), func(i int) bool { return evs[i].at.After(t) }) - 1
}

// badSpan is a span [from, to) in which probes say the instance is not
// healthy.
type badSpan struct {
	from, to time.Time
	why      string
}

// buildTimeline merges an instance's log events and probes, events and
// probes after end ignored. The rule (see the package doc):
//
//   - by the log, the instance is healthy from an `up` until its next event;
//   - a failed probe (no answer, not 200, no JSON version, or a version the
//     log did not show from the probe's start to its end) makes it not
//     healthy from the probe's start until the end of the next good probe
//     or the first event logged after the failure was known (probe.known:
//     the failed dial, else the probe's end), whichever comes first;
//   - healthy = healthy by the log and by the probes.
func buildTimeline(evs []logEvent, probes []probe, end time.Time) *timeline {
	evs = evs[:lastEvent(evs, end)+1]
	var ps []probe
	for _, p := range probes {
		if !p.start.After(end) {
			ps = append(ps, p)
		}
	}
	good := make([]bool, len(ps))
	for i, p := range ps {
		good[i] = p.answered200() && versionLogged(evs, p)
	}
	forever := time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC) // not cleared
	// healedAt[i]: the end of the first good probe after probe i.
	healedAt := make([]time.Time, len(ps))
	next := forever
	for i := len(ps) - 1; i >= 0; i-- {
		healedAt[i] = next
		if good[i] {
			next = ps[i].end
		}
	}
	var spans []badSpan
	for i, p := range ps {
		if good[i] {
			continue
		}
		to := healedAt[i]
		known := p.known
		if known.IsZero() || known.Before(p.start) {
			known = p.end
		}
		if k := lastEvent(evs, known) + 1; k < len(evs) && evs[k].at.Before(to) {
			to = evs[k].at
		}
		why := "probe: " + p.describe()
		if p.answered200() {
			why = fmt.Sprintf("probe: version %q, log says %q", p.version, logVersion(evs, p.start))
		}
		if n := len(spans); n > 0 && !p.start.After(spans[n-1].to) {
			if to.After(spans[n-1].to) {
				spans[n-1].to = to
			}
			continue
		}
		spans = append(spans, badSpan{p.start, to, why})
	}
	var bounds []time.Time
	for _, e := range evs {
		bounds = append(bounds, e.at)
	}
	for _, s := range spans {
		bounds = append(bounds, s.from, s.to)
	}
	slices.SortFunc(bounds, func(a, b time.Time) int { return a.Compare(b) })
	bounds = slices.CompactFunc(bounds, func(a, b time.Time) bool { return a.Equal(b) })
	tl := &timeline{evs: evs}
	si := 0
	for _, b := range bounds {
		var st state
		if i := lastEvent(evs, b); i < 0 {
			st.why = "no event"
		} else {
			ev := evs[i]
			st.version = ev.version
			st.healthy = ev.kind == evUp
			if !st.healthy {
				st.why = "log: " + ev.kind
			}
		}
		for si < len(spans) && !spans[si].to.After(b) {
			si++
		}
		if si < len(spans) && !spans[si].from.After(b) && st.healthy {
			st.healthy, st.why = false, spans[si].why
		}
		if n := len(tl.changes); n > 0 && tl.changes[n-1].state == st {
			continue
		}
		tl.changes = append(tl.changes, change{b, st})
	}
	return tl
}

func logVersion(evs []logEvent, t time.Time) string {
	if i := lastEvent(evs, t); i >= 0 {
		return evs[i].version
	}
	return ""
}

// versionLogged: the probe's version is the logged one at its start or
// that of an event logged while it ran.
func versionLogged(evs []logEvent, p probe) bool {
	i := lastEvent(evs, p.start)
	if i >= 0 && evs[i].version == p.version {
		return true
	}
	for j := i + 1; j < len(evs) && !evs[j].at.After(p.end); j++ {
		if evs[j].version == p.version {
			return true
		}
	}
	return false
}

// excusedAt: the last Excuse call at or before t said on.
func excusedAt(ex []excuse, t time.Time) bool {
	i := sort.Search(len(ex), func(i int) bool { return ex[i].at.After(t) })
	return i > 0 && ex[i-1].on
}

// run is an ongoing breach of one rule, coalesced over consecutive
// instants.
type run struct {
	from  time.Time
	worst int
	who   map[string][]string // instance (or rack) -> notes, in order seen
}

// note is an instance (or rack) involved in a breach, and why.
type note struct{ name, note string }

type svcInfo struct {
	name    string
	members []int // into insts
	rules   Rules
	quorum  int
	maxPar  int
	fig     Figures
	runs    [3]*run // quorum, parallel, racks
}

const (
	ruleQuorum = iota
	ruleParallel
	ruleRacks
)

type violation struct {
	at   time.Time
	text string
}

func judge(s snapshot, data []byte, logErr error, e Expect) Report {
	rep := Report{Services: map[string]Figures{}}
	var early []string // not tied to an instant
	var vs []violation
	early = append(early, s.strays...)

	index := map[key]int{}
	services := map[string]bool{}
	for i, in := range s.insts {
		index[key{in.Service, in.Machine}] = i
		services[in.Service] = true
	}
	if logErr != nil {
		early = append(early, fmt.Sprintf("event log %s: %v", s.logPath, logErr))
	}
	evs, bad := parseLog(data, index, services)
	early = append(early, bad...)

	since := s.start
	if e.Since != "" {
		found := false
		for _, m := range s.marks {
			if m.label == e.Since {
				since, found = m.at, true
			}
		}
		if !found {
			early = append(early, fmt.Sprintf("Expect.Since: no mark %q; judged from Start", e.Since))
		}
	}
	if since.After(s.end) {
		since = s.end
	}

	tls := make([]*timeline, len(s.insts))
	for i := range s.insts {
		tls[i] = buildTimeline(evs[i], s.probes[i], s.end)
	}
	excused := func(i int, t time.Time) bool {
		in := s.insts[i]
		return excusedAt(s.excuses[key{in.Service, in.Machine}], t)
	}

	// The services: members, resolved rules.
	var svcs []*svcInfo
	byName := map[string]*svcInfo{}
	get := func(name string) *svcInfo {
		if si, ok := byName[name]; ok {
			return si
		}
		si := &svcInfo{name: name, rules: s.rules[name]}
		byName[name] = si
		svcs = append(svcs, si)
		return si
	}
	for i, in := range s.insts {
		si := get(in.Service)
		si.members = append(si.members, i)
	}
	for name := range s.rules {
		get(name)
	}
	sort.Slice(svcs, func(a, b int) bool { return svcs[a].name < svcs[b].name })
	for _, si := range svcs {
		n := len(si.members)
		si.quorum = si.rules.QuorumCount
		if si.quorum == 0 {
			si.quorum = (si.rules.QuorumPercent*n + 99) / 100
		}
		si.maxPar = si.rules.MaxParallel
		if si.maxPar == 0 {
			si.maxPar = 1
		}
		si.fig = Figures{Service: si.name, Members: n, Quorum: si.quorum, MinHealthy: math.MaxInt}
	}

	// Every instant in the judged period at which something changes.
	instants := []time.Time{since}
	for _, tl := range tls {
		for _, ch := range tl.changes {
			if ch.at.After(since) && !ch.at.After(s.end) {
				instants = append(instants, ch.at)
			}
		}
	}
	for _, ex := range s.excuses {
		for _, x := range ex {
			if x.at.After(since) && !x.at.After(s.end) {
				instants = append(instants, x.at)
			}
		}
	}
	slices.SortFunc(instants, func(a, b time.Time) int { return a.Compare(b) })
	instants = slices.CompactFunc(instants, func(a, b time.Time) bool { return a.Equal(b) })

	name := func(i int) string { return s.insts[i].Machine }
	closeRun := func(si *svcInfo, rule int, to time.Time) {
		r := si.runs[rule]
		if r == nil {
			return
		}
		si.runs[rule] = nil
		who := make([]string, 0, len(r.who))
		for w, notes := range r.who {
			if len(notes) > 0 {
				w += " (" + strings.Join(notes, "; ") + ")"
			}
			who = append(who, w)
		}
		sort.Strings(who)
		list := strings.Join(who, ", ")
		when := fmt.Sprintf("%s for %s", off(s.start, r.from), dur(to.Sub(r.from)))
		var text string
		switch rule {
		case ruleQuorum:
			text = fmt.Sprintf("%s: %s below quorum: %d healthy < %d of %d members (not healthy: %s)", when, si.name, r.worst, si.quorum, len(si.members), list)
		case ruleParallel:
			text = fmt.Sprintf("%s: %s max parallel: %d unhealthy (not excused) > %d (%s)", when, si.name, r.worst, si.maxPar, list)
		case ruleRacks:
			text = fmt.Sprintf("%s: %s racks: unhealthy instances (not excused) in %d racks at once > 1 (%s)", when, si.name, r.worst, list)
		}
		vs = append(vs, violation{r.from, text})
	}
	track := func(si *svcInfo, rule int, t time.Time, breached bool, worse func(a, b int) bool, value int, who []note) {
		if !breached {
			closeRun(si, rule, t)
			return
		}
		r := si.runs[rule]
		if r == nil {
			r = &run{from: t, worst: value, who: map[string][]string{}}
			si.runs[rule] = r
		}
		if worse(value, r.worst) {
			r.worst = value
		}
		for _, w := range who {
			notes := r.who[w.name]
			if w.note != "" && !slices.Contains(notes, w.note) {
				notes = append(notes, w.note)
			}
			r.who[w.name] = notes
		}
	}
	less := func(a, b int) bool { return a < b }
	more := func(a, b int) bool { return a > b }
	for _, t := range instants {
		for _, si := range svcs {
			healthy := 0
			var sick, counted []note
			racks := map[string][]string{}
			for _, i := range si.members {
				st := tls[i].at(t)
				if st.healthy {
					healthy++
					continue
				}
				if excused(i, t) {
					sick = append(sick, note{name(i), st.why + ", excused"})
					continue
				}
				sick = append(sick, note{name(i), st.why})
				counted = append(counted, note{name: name(i)})
				rk := s.insts[i].Rack
				racks[rk] = append(racks[rk], name(i))
			}
			var rackList []note
			for rk, ms := range racks {
				for _, m := range ms {
					rackList = append(rackList, note{fmt.Sprintf("rack %q", rk), m})
				}
			}
			f := &si.fig
			f.MinHealthy = min(f.MinHealthy, healthy)
			f.MaxUnhealthy = max(f.MaxUnhealthy, len(counted))
			f.MaxRacksUnhealthy = max(f.MaxRacksUnhealthy, len(racks))
			track(si, ruleQuorum, t, healthy < si.quorum, less, healthy, sick)
			track(si, ruleParallel, t, len(counted) > si.maxPar, more, len(counted), counted)
			track(si, ruleRacks, t, len(racks) > 1, more, len(racks), rackList)
		}
	}
	for _, si := range svcs {
		for rule := range si.runs {
			closeRun(si, rule, s.end)
		}
		if si.fig.MinHealthy == math.MaxInt {
			si.fig.MinHealthy = 0
		}
		rep.Services[si.name] = si.fig
	}

	vs = append(vs, checkOrder(s, e, since, tls, byName, excused)...)
	vs = append(vs, checkEnd(s, e, tls)...)

	// Finish: the last `up` of a target version in the judged period.
	for i, in := range s.insts {
		target, ok := e.Targets[in.Service]
		if !ok {
			continue
		}
		for _, ev := range tls[i].evs {
			if ev.kind == evUp && ev.version == target && ev.at.After(since) {
				rep.Finish = max(rep.Finish, ev.at.Sub(since))
			}
		}
	}

	sort.SliceStable(vs, func(a, b int) bool { return vs[a].at.Before(vs[b].at) })
	rep.Violations = early
	for _, v := range vs {
		rep.Violations = append(rep.Violations, v.text)
	}
	return rep
}

// checkOrder: no instance of B logs its first `up` on B's target (in the
// judged period) unless every dependency A in Targets has been complete
// (every member healthy on A's target) at some instant before, and stayed
// so since, an excused member counting as complete after that instant.
func checkOrder(s snapshot, e Expect, since time.Time, tls []*timeline, byName map[string]*svcInfo, excused func(int, time.Time) bool) []violation {
	var vs []violation
	names := make([]string, 0, len(e.Targets))
	for b := range e.Targets {
		names = append(names, b)
	}
	sort.Strings(names)
	for _, b := range names {
		bi := byName[b]
		if bi == nil {
			continue
		}
		for _, a := range bi.rules.DependsOn {
			targetA, ok := e.Targets[a]
			if !ok {
				continue
			}
			ai := byName[a]
			if ai == nil || len(ai.members) == 0 {
				vs = append(vs, violation{since, fmt.Sprintf("%s depends on %s, which has no members: order not checkable", b, a)})
				continue
			}
			done := completion(s, ai, targetA, tls, excused)
			for _, i := range bi.members {
				for _, ev := range tls[i].evs {
					if ev.kind != evUp || ev.version != e.Targets[b] || ev.at.Before(since) {
						continue
					}
					if !done(ev.at) {
						var missing []string
						for _, j := range ai.members {
							if st := tls[j].at(ev.at); !st.healthy || st.version != targetA {
								missing = append(missing, fmt.Sprintf("%s (%s %s)", s.insts[j].Machine, st.version, describeState(st)))
							}
						}
						why := "not complete on " + targetA + ": " + strings.Join(missing, ", ")
						if len(missing) == 0 { // complete, but not since a full completion
							why = "a member broke (not excused) since it was last complete on " + targetA
						}
						vs = append(vs, violation{ev.at, fmt.Sprintf("%s: %s up on %s (event log line %d) before %s was done: %s %s",
							off(s.start, ev.at), key{b, s.insts[i].Machine}, ev.version, ev.line, a, a, why)})
					}
					break // only the first target up of each instance
				}
			}
		}
	}
	return vs
}

func describeState(st state) string {
	if st.healthy {
		return "healthy"
	}
	return st.why
}

// completion returns whether service a counts as done at t: complete
// (every member healthy on target) at some instant at or before t and,
// from then to t, every member healthy on target or excused.
func completion(s snapshot, a *svcInfo, target string, tls []*timeline, excused func(int, time.Time) bool) func(time.Time) bool {
	var ts []time.Time
	for _, i := range a.members {
		for _, ch := range tls[i].changes {
			ts = append(ts, ch.at)
		}
		in := s.insts[i]
		for _, x := range s.excuses[key{in.Service, in.Machine}] {
			ts = append(ts, x.at)
		}
	}
	slices.SortFunc(ts, func(x, y time.Time) int { return x.Compare(y) })
	ts = slices.CompactFunc(ts, func(x, y time.Time) bool { return x.Equal(y) })
	ok := make([]bool, len(ts))
	prev := false
	for k, t := range ts {
		strict, relaxed := true, true
		for _, i := range a.members {
			st := tls[i].at(t)
			on := st.healthy && st.version == target
			strict = strict && on
			relaxed = relaxed && (on || excused(i, t))
		}
		prev = strict || (relaxed && prev)
		ok[k] = prev
	}
	return func(t time.Time) bool {
		k := sort.Search(len(ts), func(k int) bool { return ts[k].After(t) })
		return k > 0 && ok[k-1]
	}
}

// checkEnd judges the end state from each instance's last probe (the final
// round of Judge, or the last before Stop) and its timeline at the end.
func checkEnd(s snapshot, e Expect, tls []*timeline) []violation {
	var vs []violation
	last := func(i int) (probe, bool) {
		for k := len(s.probes[i]) - 1; k >= 0; k-- {
			if p := s.probes[i][k]; !p.start.After(s.end) {
				return p, true
			}
		}
		return probe{}, false
	}
	at := s.end
	endOff := "end (" + off(s.start, at) + ")"
	svcs := make([]string, 0, len(e.Final))
	for svc := range e.Final {
		svcs = append(svcs, svc)
	}
	sort.Strings(svcs)
	for _, svc := range svcs {
		ms := make([]string, 0, len(e.Final[svc]))
		for m := range e.Final[svc] {
			ms = append(ms, m)
		}
		sort.Strings(ms)
		for _, m := range ms {
			want := e.Final[svc][m]
			k := key{svc, m}
			i := -1
			for j, in := range s.insts {
				if in.Service == svc && in.Machine == m {
					i = j
				}
			}
			if i < 0 {
				vs = append(vs, violation{at, fmt.Sprintf("%s: %s must serve %s: not a member", endOff, k, want)})
				continue
			}
			p, ok := last(i)
			st := tls[i].at(at)
			switch {
			case !ok:
				vs = append(vs, violation{at, fmt.Sprintf("%s: %s must serve %s healthy: never probed", endOff, k, want)})
			case !p.answered200() || p.version != want:
				vs = append(vs, violation{at, fmt.Sprintf("%s: %s must serve %s healthy: last probe: %s", endOff, k, want, p.describe())})
			case !st.healthy || st.version != want:
				vs = append(vs, violation{at, fmt.Sprintf("%s: %s must serve %s healthy: log says %s (%s)", endOff, k, want, st.version, describeState(st))})
			}
		}
	}
	for i, in := range s.insts {
		p, ok := last(i)
		if ok && p.version != "" && slices.Contains(e.Bad, p.version) {
			vs = append(vs, violation{at, fmt.Sprintf("%s: %s serves bad version %s (last probe: %s)", endOff, key{in.Service, in.Machine}, p.version, p.describe())})
		}
	}
	return vs
}
