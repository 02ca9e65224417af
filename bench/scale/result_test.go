package main

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	v := []float64{5, 1, 4, 2, 3}
	for _, tc := range []struct {
		p, want float64
	}{{0, 1}, {50, 3}, {100, 5}, {25, 2}, {99, 4.96}, {-1, 1}, {101, 5}} {
		if got := percentile(v, tc.p); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("percentile(%v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if !math.IsNaN(percentile(nil, 50)) {
		t.Error("percentile of nothing is not NaN")
	}
	if got := percentile([]float64{7}, 99); got != 7 {
		t.Errorf("one value: %v", got)
	}
	if v[0] != 5 {
		t.Error("percentile sorted its input")
	}
}

func TestRatio(t *testing.T) {
	if got := ratio(10, 2); got != 5 {
		t.Errorf("ratio(10, 2) = %v", got)
	}
	for _, b := range []float64{0, -1, math.NaN()} {
		if !math.IsNaN(ratio(1, b)) {
			t.Errorf("ratio(1, %v) is a number", b)
		}
	}
	if finite(math.NaN()) != 0 || finite(math.Inf(1)) != 0 || finite(2.5) != 2.5 {
		t.Error("finite")
	}
}

func TestParseMntr(t *testing.T) {
	m := parseMntr("zk_version\t3.8.0-x, built on 2024\nzk_packets_received\t120\nzk_watch_count\t42\n" +
		"zk_sum_node_created_watch_count\t1\nzk_sum_node_deleted_watch_count\t2\nzk_sum_node_changed_watch_count\t3\n" +
		"zk_sum_node_children_watch_count\t4\nzk_cnt_readlatency\t10\nzk_cnt_updatelatency\t5\nzk_avg_latency\t0.5\n")
	if m["zk_packets_received"] != 120 || m["zk_watch_count"] != 42 || m["zk_avg_latency"] != 0.5 {
		t.Errorf("parsed %v", m)
	}
	if _, ok := m["zk_version"]; ok {
		t.Error("non-numeric value kept")
	}
	if m.notifications() != 10 || m.reads() != 10 || m.writes() != 5 {
		t.Errorf("notifications %v reads %v writes %v", m.notifications(), m.reads(), m.writes())
	}
}

func TestWindow(t *testing.T) {
	at := time.Unix(1000, 0)
	a := sample{At: at, M: mntr{"zk_packets_received": 100, "zk_cnt_readlatency": 50, "zk_cnt_updatelatency": 10, "zk_sum_node_changed_watch_count": 7}, ZKCPU: time.Second, hasCPU: true}
	b := sample{At: at.Add(10 * time.Second), M: mntr{"zk_packets_received": 400, "zk_cnt_readlatency": 250, "zk_cnt_updatelatency": 60, "zk_sum_node_changed_watch_count": 27}, ZKCPU: 3 * time.Second, hasCPU: true}
	w := between(a, b)
	if w.Seconds != 10 || w.PacketsReceived != 300 || w.Reads != 200 || w.Writes != 50 || w.Notifications != 20 || w.ZKCPUSeconds != 2 || w.requests() != 250 {
		t.Errorf("between: %+v", w)
	}
	rest := window{Seconds: 5, PacketsReceived: 50, Reads: 50, Writes: 40, Notifications: 0}
	n := w.net(rest) // rest over 10 s: 100 received, 100 reads, 80 writes (more than measured: 0)
	if n.PacketsReceived != 200 || n.Reads != 100 || n.Writes != 0 || n.Notifications != 20 {
		t.Errorf("net: %+v", n)
	}
	p := n.per(4)
	if p.Reads != 25 || p.Notifications != 5 || p.Seconds != 2.5 {
		t.Errorf("per: %+v", p)
	}
	if (window{Reads: 3}).per(0) != (window{}) {
		t.Error("per(0) is not empty")
	}
}

func TestProcParsers(t *testing.T) {
	stat := "4242 (java (zk)) S 1 4242 4242 0 -1 4194560 12345 0 0 0 250 75 0 0 20 0 40 0 1000 0 0"
	if got, err := parseProcStatCPU(stat); err != nil || got != 325 {
		t.Errorf("parseProcStatCPU = %d, %v; want 325", got, err)
	}
	if _, err := parseProcStatCPU("garbage"); err == nil {
		t.Error("no error for garbage")
	}
	status := "Name:\tdcroll\nVmPeak:\t  900000 kB\nVmRSS:\t   23456 kB\nThreads:\t9\n"
	if got, err := parseVmRSS(status); err != nil || got != 23456<<10 {
		t.Errorf("parseVmRSS = %d, %v", got, err)
	}
	if _, err := parseVmRSS("Name:\tx\n"); err == nil {
		t.Error("no error without VmRSS")
	}
}

func TestParseEvent(t *testing.T) {
	e, ok := parseEvent("up 1764650000.123456789 m0001 2 4242")
	if !ok || e.Kind != "up" || e.Machine != "m0001" || e.Version != "2" || e.At != time.Unix(1764650000, 123456789) {
		t.Errorf("parsed %+v, %v", e, ok)
	}
	e, ok = parseEvent("down 1764650000.5 m0002 1 7")
	if !ok || e.At != time.Unix(1764650000, 500000000) {
		t.Errorf("short fraction: %+v, %v", e, ok)
	}
	for _, bad := range []string{"", "sideways 1 m 1 1", "up notatime m 1 1", "up 1.2"} {
		if _, ok := parseEvent(bad); ok {
			t.Errorf("parsed %q", bad)
		}
	}
}

// ev builds an event at ms milliseconds.
func ev(kind string, ms int, machine, version string) event {
	return event{Kind: kind, At: time.UnixMilli(int64(ms)), Machine: machine, Version: version}
}

func TestStepsOverheadsPeriods(t *testing.T) {
	// one at a time: a down 0 up 100; b down 200 up 300; c down 390 up 500; d down 600 (not up yet)
	evs := []event{
		ev("up", -1000, "a", "1"), ev("up", -1000, "b", "1"), ev("up", -1000, "c", "1"),
		ev("down", 0, "a", "1"), ev("up", 100, "a", "2"),
		ev("down", 200, "b", "1"), ev("up", 300, "b", "2"),
		ev("down", 390, "c", "1"), ev("up", 500, "c", "2"),
		ev("down", 600, "d", "1"),
		ev("down", 700, "a", "2"), // a later restart of a: not a second step
	}
	st := steps(eventsSince(evs, time.UnixMilli(0)), "2")
	if len(st) != 4 || st[0].Machine != "a" || st[3].Machine != "d" || !st[3].Up.IsZero() || st[2].Up != time.UnixMilli(500) {
		t.Fatalf("steps: %+v", st)
	}
	ov := overheads(st, 50*time.Millisecond)
	want := []time.Duration{50 * time.Millisecond, 40 * time.Millisecond, 50 * time.Millisecond}
	if len(ov) != len(want) {
		t.Fatalf("overheads %v", ov)
	}
	for i := range ov {
		if ov[i] != want[i] {
			t.Errorf("overhead %d = %v, want %v", i, ov[i], want[i])
		}
	}
	if p, m := busyPeriods(st); p != 4 || m != 1 {
		t.Errorf("busyPeriods = %d, %d; want 4, 1", p, m)
	}
	// two racks at a time: {a,b} down 0..100, {c,d} 100..250 (hand-over at 100: no overlap)
	dom := []step{
		{Machine: "a", Down: time.UnixMilli(0), Up: time.UnixMilli(90)},
		{Machine: "b", Down: time.UnixMilli(5), Up: time.UnixMilli(100)},
		{Machine: "c", Down: time.UnixMilli(100), Up: time.UnixMilli(200)},
		{Machine: "d", Down: time.UnixMilli(120), Up: time.UnixMilli(250)},
	}
	if p, m := busyPeriods(dom); p != 2 || m != 2 {
		t.Errorf("domain busyPeriods = %d, %d; want 2, 2", p, m)
	}
	racks := map[string]string{"a": "r0", "b": "r0", "c": "r1", "d": "r1"}
	if n, gaps := batches(dom, racks, 10*time.Millisecond); n != 2 || len(gaps) != 1 || gaps[0] != -10*time.Millisecond {
		t.Errorf("batches = %d, %v; want 2, [-10ms]", n, gaps)
	}
	if n, gaps := batches(st[:3], map[string]string{"a": "r0", "b": "r1", "c": "r0"}, 0); n != 3 || len(gaps) != 2 || gaps[0] != 100*time.Millisecond || gaps[1] != 90*time.Millisecond {
		t.Errorf("one at a time batches = %d, %v", n, gaps)
	}
	run := runningVersion(evs)
	if run["a"] != "" || run["b"] != "2" || run["c"] != "2" || run["d"] != "" {
		t.Errorf("runningVersion: %v", run)
	}
}

func TestRacksAndNames(t *testing.T) {
	for _, tc := range []struct{ n, racks, want int }{{12, 20, 6}, {102, 20, 20}, {1002, 20, 20}, {1, 20, 1}} {
		if got := racksFor(tc.n, tc.racks); got != tc.want {
			t.Errorf("racksFor(%d, %d) = %d, want %d", tc.n, tc.racks, got, tc.want)
		}
	}
	if machineName(0) != "m0001" || realName(1) != "real2" || rackOf(21, 20) != "r01" {
		t.Error("names")
	}
	if _, err := parseSizes("10, 100,1000"); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"", "10,x", "0", "-5"} {
		if _, err := parseSizes(bad); err == nil {
			t.Errorf("parseSizes(%q) accepted", bad)
		}
	}
}

func TestSpecYAML(t *testing.T) {
	y := specYAML("scale-v2", "2", "sha256:"+strings.Repeat("a", 64), "127.0.0.1:5000", 50*time.Millisecond, 101, 1, "")
	for _, want := range []string{"version: \"2\"", "tcp: \"127.0.0.1:5000\"", "min_healthy: 50ms", "quorum: 101", "max_parallel: 1"} {
		if !strings.Contains(y, want) {
			t.Errorf("spec lacks %q:\n%s", want, y)
		}
	}
	if strings.Contains(y, "domain") {
		t.Error("domain without asking")
	}
	if d := specYAML("x", "3", "a", "h:1", time.Second, 1, 5, "rack"); !strings.Contains(d, "domain: rack\n") {
		t.Errorf("no domain:\n%s", d)
	}
	if s := serviceScript("2"); !strings.Contains(s, "build 2") || !strings.Contains(s, "trap 'ev down; exit 0' TERM") {
		t.Errorf("script:\n%s", s)
	}
}

// TestResultChecksAndMarkdown feeds made-up sizes through finish and
// Markdown: verdicts, ratios and that the JSON has no NaN.
func TestResultChecksAndMarkdown(t *testing.T) {
	small := SizeResult{N: 10, Real: 2, Machines: 12, Racks: 6, RTTIdle: RTT{WriteMS: 1, ReadMS: 0.5},
		RealRSSRest: 20 << 20, RealRSSPeak: 30 << 20,
		OneByOne: &RolloutResult{Mode: "one at a time", StepsMeasured: 12, StepsTotal: 12, Complete: true, DoneSeconds: 5,
			OverheadsMS: []float64{3, 4}, OverheadP50MS: 4, OverheadP50RT: 4,
			PerStep: window{Notifications: 10, Reads: 20, Writes: 5}, PerStepNet: window{Notifications: 10, Reads: 15, Writes: 5},
			PerStepNoPings: window{Reads: 18, Writes: 5}},
		Domain: &RolloutResult{Mode: "domain: rack", Unsupported: "spec: unknown field \"domain\""}}
	big := SizeResult{N: 1000, Real: 2, Machines: 1002, Racks: 20, RTTIdle: RTT{WriteMS: 1},
		RealRSSRest: 35 << 20, RealRSSPeak: 45 << 20,
		OneByOne: &RolloutResult{Mode: "one at a time", StepsMeasured: 60, StepsTotal: 1002, Seconds: 60, ExtrapolatedSeconds: 1000, PaceP50MS: 990,
			OverheadsMS: []float64{300}, OverheadP50MS: 300, OverheadP50RT: 300,
			PerStep: window{Notifications: 15}, PerStepNet: window{Notifications: 15, Reads: 2000, Writes: 10},
			PerStepNoPings: window{Reads: 30, Writes: 10}},
		Domain: &RolloutResult{Mode: "domain: rack", Complete: true, Periods: 40, Batches: 22, DoneSeconds: 20, Seconds: 19, StepEquivalents: 20.2}}
	r := &Result{Date: time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC), Config: Config{Real: 2, MinHealthy: 50 * time.Millisecond}, Sizes: []SizeResult{small, big}}
	r.finish()
	got := map[string]string{}
	for _, c := range r.Checks {
		got[c.Target] = c.verdict()
	}
	want := map[string]string{
		"median step overhead, N=10":                                "pass",
		"median step overhead, N=1000":                              "miss",
		"watch notifications per step growth":                       "pass", // 10 -> 15
		"ZooKeeper requests per step (net of the rest rate) growth": "miss", // 20 -> 2010
		"ZooKeeper requests per step (without pings) growth":        "pass", // 23 -> 40
		"domain: rack rollout in about one step per rack":           "pass", // 22 <= 25
		"real dcroll agent RSS (peak)":                              "miss", // 45 MiB
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	md := r.Markdown()
	for _, s := range []string{"| | N=10 | N=1000 |", "~1000 extrapolated", "n/a", "not measured: spec: unknown field", "| real dcroll agent RSS (peak) | 45.0 MiB | <= 40 MiB | miss |", "22 / 40 (0)"} {
		if !strings.Contains(md, s) {
			t.Errorf("markdown lacks %q:\n%s", s, md)
		}
	}
	if _, err := json.Marshal(r); err != nil {
		t.Errorf("json: %v", err)
	}
	// nothing measured: not measured, not pass
	empty := &Result{Sizes: []SizeResult{{N: 10, Err: "zookeeper did not start"}}}
	empty.finish()
	for _, c := range empty.Checks {
		if c.Pass || c.Measured {
			t.Errorf("%s: %+v with nothing measured", c.Target, c)
		}
	}
	if !strings.Contains(empty.Markdown(), "N=10: zookeeper did not start") {
		t.Error("size error not in markdown")
	}
}

func TestWithoutPings(t *testing.T) {
	a := sample{M: mntr{"zk_num_alive_connections": 100}}
	b := sample{M: mntr{"zk_num_alive_connections": 200}}
	// 150 sessions x 10 s / (6 s / 3) = 750 pings
	w := window{Seconds: 10, Reads: 1000, Writes: 40, PacketsReceived: 1040, PacketsSent: 700}.withoutPings(a, b, 6*time.Second)
	if w.Reads != 250 || w.Writes != 40 || w.PacketsReceived != 290 || w.PacketsSent != 0 {
		t.Errorf("withoutPings: %+v", w)
	}
}

func TestParseProcStatTotal(t *testing.T) {
	busy, total, err := parseProcStatTotal("cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 1 2 3 4\n")
	if err != nil || busy != 160 || total != 1000 {
		t.Errorf("parseProcStatTotal = %d, %d, %v; want 160, 1000", busy, total, err)
	}
	if _, _, err := parseProcStatTotal("intr 1 2 3\n"); err == nil {
		t.Error("no error without a cpu line")
	}
}
