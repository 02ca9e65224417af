package coordinator

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"dcroll/internal/obs"
	"dcroll/spec"
	"dcroll/znodes"
)

// The dashboard is a static page (web/index.html, app.js, app.css) that
// always loads, even with ZooKeeper down, and renders what it receives on
// /api/events: a server-sent event stream of DashboardView snapshots. One
// nightSource per handler reads ZooKeeper at most once per poll interval,
// shared by every connected browser, and only while one is connected
// (there is no background goroutine: the streams' own loops drive it).
//
//	browser ──GET /──────────▶ shell + the last snapshot inline (first paint)
//	        ──GET /api/events▶ loop every pollInterval:
//	                             nightSource.get ── ok, changed ──▶ event: snapshot
//	                                             ── ok, same ─────▶ event: heartbeat (every heartbeatInterval)
//	                                             ── failed ───────▶ event: stale {error, since}
//
// A read that fails (or a session that is not connected) turns into a
// "stale" event, never into a dropped stream: the page keeps the last data,
// greyed, and the next good read sends a fresh snapshot. If the server
// itself goes away, the browser's EventSource reconnects by itself.

//go:embed web
var dashboardWeb embed.FS

const (
	// dashPoll is how often each stream asks for a snapshot; reads are
	// shared, so ZooKeeper sees about one per dashPoll however many
	// browsers watch.
	dashPoll = time.Second
	// dashHeartbeat: a stream sends at least one event this often, so the
	// page can tell a quiet night from a dead connection.
	dashHeartbeat = 5 * time.Second
	// dashReadTimeout bounds how long a stream waits for ZooKeeper before
	// it reports the data stale (the read itself goes on in the background
	// and serves the next request).
	dashReadTimeout = 3 * time.Second
	// dashWriteTimeout bounds one write of the stream.
	dashWriteTimeout = 10 * time.Second
	// dashHistory is how many HEAD moves a snapshot carries, newest first.
	dashHistory = 30
	// dashTextMax truncates halt reasons and registration details: a
	// failed health check's reason can carry the whole response body.
	dashTextMax = 300
)

// Dashboard serves the web dashboard (/, with its live stream at
// /api/events and one snapshot at /api/night), the status API
// (/api/status), Prometheus metrics (/metrics), all read from znode
// state, and /healthz (200 "ok" while the ZooKeeper session is connected,
// 503 with the reason otherwise).
func Dashboard(c *znodes.Conn) http.Handler { return dashboard(c, nil) }

// dashboard is Dashboard; el, when set, is this coordinator's candidacy,
// exported as dcroll_coordinator_leader.
func dashboard(c *znodes.Conn, el *znodes.Election) http.Handler {
	reg := obs.NewRegistry()
	reg.MustRegister(&statusCollector{c: c})
	if el != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "dcroll_coordinator_leader", Help: "1 while this coordinator is the elected leader (advances the deploy queue), 0 otherwise.",
		}, func() float64 {
			if el.IsLeader() {
				return 1
			}
			return 0
		}))
	}
	d := &dashServer{src: newNightSource(c), poll: dashPoll, heartbeat: dashHeartbeat}
	static, err := fs.Sub(dashboardWeb, "web")
	if err != nil {
		panic(err) // the embedded directory is part of the binary
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", obs.MetricsHandler(reg))
	mux.Handle("/healthz", obs.Healthz(obs.ZooKeeper(func() *znodes.Conn { return c })))
	mux.HandleFunc("/api/status", func(w http.ResponseWriter, r *http.Request) {
		st, err := ReadStatus(c)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(st) // the client went away: nothing to do
	})
	mux.HandleFunc("/api/night", d.night)
	mux.HandleFunc("/api/events", d.events)
	mux.Handle("/static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("/", d.page)
	return mux
}

// DashboardView is one snapshot of the night as the dashboard shows it
// (/api/night, and every "snapshot" event of /api/events).
type DashboardView struct {
	// Root is the data center's root znode (the commands need --root
	// when it is not the default).
	Root string `json:"root"`
	// Status is ReadStatus without services[].machines (the raw
	// registrations, which members already summarize).
	Status *Status `json:"status"`
	// Rollout is the leading coordinator's night record; null until one
	// was written.
	Rollout *znodes.Rollout `json:"rollout"`
	// History holds the latest HEAD moves, newest first; HistoryTotal
	// counts them all.
	History      []HistoryLine `json:"history"`
	HistoryTotal int           `json:"history_total"`
	// Rollback is where `dcroll rollback` (no argument) would move HEAD:
	// HEAD's predecessor; nil when there is none.
	Rollback *DashSpecRef `json:"rollback,omitempty"`
	// Halt is the halted entry of the queue, with what to run next.
	Halt *DashHalt `json:"halt,omitempty"`
	// Downloads are the blobs still in flight (finished ones are left out).
	Downloads []DashDownload `json:"downloads"`
	// Agents are the registered agents with their mlocked memory.
	Agents []DashAgent `json:"agents"`
}

// DashSpecRef names a stored spec.
type DashSpecRef struct {
	ID    string `json:"id"`
	Short string `json:"short"`
	Name  string `json:"name,omitempty"`
}

// DashHalt is a halted deploy entry, its reason once (not per machine)
// and the commands an operator runs next.
type DashHalt struct {
	Service   string    `json:"service"`
	Version   string    `json:"version"`
	Machine   string    `json:"machine,omitempty"`
	Reason    string    `json:"reason"` // at most dashTextMax characters
	Truncated bool      `json:"truncated,omitempty"`
	Since     time.Time `json:"since,omitzero"`
	// Resume retries the halted entry (once its cause is fixed);
	// RollbackCmd moves HEAD back to the previous spec ("" when HEAD has
	// none: push a fixed spec instead).
	Resume      string `json:"resume"`
	RollbackCmd string `json:"rollback_cmd,omitempty"`
}

// DashDownload is one blob a machine is still fetching, in human units.
type DashDownload struct {
	Machine string `json:"machine"`
	Blob    string `json:"blob"` // short id
	Percent int    `json:"percent"`
	Bytes   string `json:"bytes"` // "12.0 MiB"
	Total   string `json:"total"`
	Rate    string `json:"rate"` // "3.2 MiB/s"
	Source  string `json:"source,omitempty"`
	Peers   int    `json:"peers"`
	Error   string `json:"error,omitempty"`
}

// DashAgent is a registered agent.
type DashAgent struct {
	Machine     string   `json:"machine"`
	DC          string   `json:"dc"`
	Rack        string   `json:"rack"`
	Services    []string `json:"services"`
	PeerAddr    string   `json:"peer_addr,omitempty"`
	LockedBytes int64    `json:"locked_bytes"`
	Locked      string   `json:"locked"` // human units
}

// ReadDashboard reads one DashboardView.
func ReadDashboard(c *znodes.Conn) (*DashboardView, error) {
	st, err := ReadStatus(c)
	if err != nil {
		return nil, err
	}
	ro, err := ReadRollout(c)
	if err != nil {
		return nil, err
	}
	hist, err := ReadHistory(c)
	if err != nil {
		return nil, err
	}
	return buildDashboardView(c.Paths().Root, st, ro, hist), nil
}

// buildDashboardView derives what the page shows from what was read.
func buildDashboardView(root string, st *Status, ro *znodes.Rollout, hist []HistoryLine) *DashboardView {
	v := &DashboardView{Root: root, Status: st, Rollout: ro, HistoryTotal: len(hist),
		History: []HistoryLine{}, Downloads: []DashDownload{}, Agents: []DashAgent{}}
	for i := range st.Services {
		st.Services[i].Machines = []znodes.Current{}
		for j := range st.Services[i].Members {
			m := &st.Services[i].Members[j]
			m.Detail, _ = truncateText(m.Detail, dashTextMax)
		}
	}
	for i := len(hist) - 1; i >= 0 && len(v.History) < dashHistory; i-- {
		v.History = append(v.History, hist[i])
	}
	if h := st.Head; h != nil && h.Prev != "" {
		v.Rollback = &DashSpecRef{ID: h.Prev, Short: spec.ShortID(h.Prev)}
		for i := len(hist) - 1; i >= 0; i-- {
			if hist[i].To == h.Prev {
				v.Rollback.Name = hist[i].Name
				break
			}
		}
	}
	if a := Active(st.Queue); a != nil && a.State == znodes.DeployHalted {
		flags := ""
		if root != znodes.DefaultRoot {
			flags = " --root " + root
		}
		reason, cut := truncateText(oneLineText(a.Reason), dashTextMax)
		v.Halt = &DashHalt{Service: a.Service, Version: a.Version, Machine: a.Machine, Reason: reason, Truncated: cut,
			Since: a.Updated, Resume: "dcroll" + flags + " resume"}
		if v.Rollback != nil {
			v.Halt.RollbackCmd = "dcroll" + flags + " rollback " + v.Rollback.Short
		}
	}
	for _, p := range st.Progress {
		for _, b := range p.Blobs {
			if b.Done {
				continue
			}
			dl := DashDownload{Machine: p.Machine, Blob: spec.ShortID(strings.TrimPrefix(b.Blob, "sha256:")),
				Bytes: humanBytes(b.Bytes), Total: humanBytes(b.Total), Rate: humanRate(b.RateBps),
				Source: b.Source, Peers: b.Peers, Error: b.Error}
			if b.Total > 0 {
				dl.Percent = int(b.Bytes * 100 / b.Total)
			}
			v.Downloads = append(v.Downloads, dl)
		}
	}
	for _, a := range st.Agents {
		v.Agents = append(v.Agents, DashAgent{Machine: a.Machine, DC: a.DC, Rack: a.Rack, Services: a.Services,
			PeerAddr: a.PeerAddr, LockedBytes: a.LockedBytes, Locked: humanBytes(a.LockedBytes)})
	}
	return v
}

// humanBytes writes n in binary units: 512 B, 1.5 KiB, 12.0 MiB, 8.0 GiB.
func humanBytes(n int64) string {
	if n < 1024 && n > -1024 {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n)
	for _, unit := range []string{"KiB", "MiB", "GiB", "TiB"} {
		f /= 1024
		if (f < 1024 && f > -1024) || unit == "TiB" {
			if f < 100 && f > -100 {
				return fmt.Sprintf("%.1f %s", f, unit)
			}
			return fmt.Sprintf("%.0f %s", f, unit)
		}
	}
	panic("unreachable")
}

// humanRate writes a transfer rate in bytes per second: 3.2 MiB/s.
func humanRate(bps float64) string { return humanBytes(int64(bps)) + "/s" }

// truncateText cuts s to at most max runes, ending it with "…"; cut says
// whether it did.
func truncateText(s string, max int) (string, bool) {
	r := []rune(s)
	if len(r) <= max {
		return s, false
	}
	return string(r[:max-1]) + "…", true
}

// oneLineText folds the lines of a multi-line reason (a health check's
// response body) into one.
func oneLineText(s string) string { return strings.Join(strings.Fields(s), " ") }

// nightRead is one read of a nightSource: the snapshot's JSON, or the
// error and since when reads have been failing.
type nightRead struct {
	at    time.Time
	body  []byte // json.Marshal of a DashboardView (HTML-safe: <, >, & escaped)
	err   error
	since time.Time // first failure of the current run of failures
}

// nightSource reads DashboardViews for every stream of one handler: a
// read younger than maxAge is shared, and at most one read is in flight.
type nightSource struct {
	read    func() ([]byte, error)
	state   func() znodes.SessionState
	maxAge  time.Duration
	timeout time.Duration
	now     func() time.Time

	mu       sync.Mutex
	last     *nightRead    // the latest result, good or failed
	good     []byte        // the latest good body, served inline with the page
	inflight chan struct{} // closed when the read in flight is done
}

func newNightSource(c *znodes.Conn) *nightSource {
	return &nightSource{
		read: func() ([]byte, error) {
			v, err := ReadDashboard(c)
			if err != nil {
				return nil, err
			}
			return json.Marshal(v)
		},
		state:   func() znodes.SessionState { st, _, _ := c.State(); return st },
		maxAge:  dashPoll / 2,
		timeout: dashReadTimeout,
		now:     time.Now,
	}
}

// get returns a read no older than maxAge, waiting at most timeout (or
// until ctx is done) for ZooKeeper.
func (s *nightSource) get(ctx context.Context) nightRead {
	s.mu.Lock()
	if s.last != nil && s.now().Sub(s.last.at) < s.maxAge {
		r := *s.last
		s.mu.Unlock()
		return r
	}
	// Without a connected session a read would only wait in the client's
	// queue until the session is back; say so at once.
	if st := s.state(); st != znodes.Connected {
		r := s.recordLocked(nil, fmt.Errorf("zookeeper session %s: reconnecting", st))
		s.mu.Unlock()
		return r
	}
	done := s.inflight
	if done == nil {
		done = make(chan struct{})
		s.inflight = done
		// The read is not cancellable (go-zookeeper has no contexts); it
		// ends when ZooKeeper answers or the client gives the request up
		// (no server, session closed), and its result serves the next get.
		go func() {
			body, err := s.read()
			s.mu.Lock()
			s.recordLocked(body, err)
			s.inflight = nil
			s.mu.Unlock()
			close(done)
		}()
	}
	s.mu.Unlock()
	timer := time.NewTimer(s.timeout)
	defer timer.Stop()
	select {
	case <-done:
		s.mu.Lock()
		defer s.mu.Unlock()
		return *s.last
	case <-timer.C:
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.recordLocked(nil, fmt.Errorf("zookeeper did not answer within %s", s.timeout))
	case <-ctx.Done():
		return nightRead{at: s.now(), err: ctx.Err()}
	}
}

// recordLocked stores a result and returns it; a failure keeps the time
// the failures began.
func (s *nightSource) recordLocked(body []byte, err error) nightRead {
	r := nightRead{at: s.now(), body: body, err: err}
	if err != nil {
		r.since = r.at
		if s.last != nil && s.last.err != nil {
			r.since = s.last.since
		}
	} else {
		s.good = body
	}
	s.last = &r
	return r
}

// lastGood is the latest good snapshot, nil before the first.
func (s *nightSource) lastGood() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.good
}

// dashServer serves the page and its stream.
type dashServer struct {
	src       *nightSource
	poll      time.Duration
	heartbeat time.Duration
}

// staleEvent is the data of a "stale" event (and of a failed /api/night).
type staleEvent struct {
	Error string    `json:"error"`
	Since time.Time `json:"since"` // reads have been failing since
	At    time.Time `json:"at"`    // the server's clock now
}

// heartbeatEvent is the data of a "heartbeat" event: the last snapshot
// is still current at At.
type heartbeatEvent struct {
	At time.Time `json:"at"`
}

// page serves the shell, with the latest snapshot inline when one can be
// had quickly: the page paints at once, and it loads even when ZooKeeper
// is down (the stream then says stale, and recovers).
func (d *dashServer) page(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" && r.URL.Path != "/index.html" {
		http.NotFound(w, r)
		return
	}
	shell, err := dashboardWeb.ReadFile("web/index.html")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	body := d.src.get(ctx).body
	if body == nil {
		body = d.src.lastGood()
	}
	inline := []byte("<!-- no snapshot yet: the stream brings it -->")
	if body != nil {
		// json.Marshal escapes <, > and &, so the JSON cannot end the script.
		inline = append(append([]byte(`<script id="initial" type="application/json">`), body...), "</script>"...)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(bytes.Replace(shell, []byte("<!--INITIAL-->"), inline, 1)) // a write error: the browser left
}

// night serves one snapshot, or 503 with the stale event's JSON.
func (d *dashServer) night(w http.ResponseWriter, r *http.Request) {
	rd := d.src.get(r.Context())
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if rd.err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(staleEvent{Error: rd.err.Error(), Since: rd.since, At: rd.at})
		return
	}
	_, _ = w.Write(rd.body)
}

// events streams server-sent events until the client goes away: a
// "snapshot" whenever the view changed, a "heartbeat" when nothing did for
// a heartbeat interval, a "stale" when reading failed (at once, then once
// per heartbeat interval while it fails).
func (d *dashServer) events(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no") // proxies: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	ctx := r.Context()
	// retry: how long the browser waits before reconnecting a dropped stream.
	if _, err := fmt.Fprint(w, "retry: 2000\n\n"); err != nil {
		return
	}
	if err := rc.Flush(); err != nil {
		return
	}
	tick := time.NewTicker(d.poll)
	defer tick.Stop()
	var sent []byte // the last snapshot sent; nil after a stale event
	var lastEvent time.Time
	for {
		rd := d.src.get(ctx)
		if ctx.Err() != nil {
			return
		}
		// A browser that stops reading (a suspended laptop) must not hold
		// this goroutine in a blocked write until TCP gives up.
		err := rc.SetWriteDeadline(time.Now().Add(dashWriteTimeout))
		if errors.Is(err, http.ErrNotSupported) {
			err = nil
		}
		switch {
		case err != nil:
		case rd.err != nil:
			if sent != nil || rd.at.Sub(lastEvent) >= d.heartbeat {
				err = writeEvent(w, "stale", mustJSON(staleEvent{Error: rd.err.Error(), Since: rd.since, At: rd.at}))
				sent, lastEvent = nil, rd.at
			}
		case !bytes.Equal(rd.body, sent):
			err = writeEvent(w, "snapshot", rd.body)
			sent, lastEvent = rd.body, rd.at
		case rd.at.Sub(lastEvent) >= d.heartbeat:
			err = writeEvent(w, "heartbeat", mustJSON(heartbeatEvent{At: rd.at}))
			lastEvent = rd.at
		}
		if err == nil {
			err = rc.Flush()
		}
		if err != nil {
			return // the browser went away; it reconnects if it wants more
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// writeEvent writes one server-sent event; data is one line of JSON.
func writeEvent(w http.ResponseWriter, event string, data []byte) error {
	if bytes.ContainsAny(data, "\r\n") {
		return errors.New("event data must be one line") // json.Marshal never writes newlines
	}
	_, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data)
	return err
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only plain structs of strings and times are passed
	}
	return b
}
