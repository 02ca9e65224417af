package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Targets (issue 8, "Scale benchmark").
const (
	targetOverheadRTT = 5.0 // median per-step overhead <= 5 write round trips
	targetGrowth      = 2.0 // notifications and requests per step within 2x from the smallest to the largest size
	targetDomainSlack = 1.25
	targetAgentRSS    = 40 << 20 // real agent VmRSS
	targetDomainN     = 1000     // the domain target is about a 1000-machine service...
	targetDomainRacks = 20       // ...in 20 racks
)

// TimeSource says where step times come from.
const TimeSource = "the services themselves: the wrapper script appends `up`/`down` with `date +%s.%N` on start and in its SIGTERM trap"

// Result is one benchmark run: every size side by side.
type Result struct {
	Date   time.Time    `json:"date"`
	Config Config       `json:"config"`
	Host   HostInfo     `json:"host"`
	Sizes  []SizeResult `json:"sizes"`
	Checks []Check      `json:"checks"`
	Notes  []string     `json:"notes,omitempty"`
}

// HostInfo describes the machine the run shared with others.
type HostInfo struct {
	CPUs       int     `json:"cpus"`
	Load1Start float64 `json:"load1_start"`
	Load1End   float64 `json:"load1_end"`
	GoVersion  string  `json:"go_version"`
}

// RTT is a round-trip measurement on a scratch node (sequential requests).
type RTT struct {
	N          int     `json:"n"`
	WriteMS    float64 `json:"write_ms"` // median Set
	WriteP99MS float64 `json:"write_p99_ms"`
	ReadMS     float64 `json:"read_ms"` // median Get
	ReadP99MS  float64 `json:"read_p99_ms"`
}

// SizeResult is one fleet size.
type SizeResult struct {
	N        int `json:"n"`        // in-process agents
	Real     int `json:"real"`     // real dcroll agent processes
	Machines int `json:"machines"` // N + Real: members of the service
	Racks    int `json:"racks"`

	RTTIdle RTT `json:"rtt_idle"` // before any agent connected
	RTTRest RTT `json:"rtt_rest"` // fleet connected, no rollout

	BootstrapSeconds float64 `json:"bootstrap_seconds"` // push v1 until every machine runs it and the entry is done
	// At rest (after bootstrap, nothing happening): server-side watches,
	// connections, and the background rates (pings, poll re-reads).
	WatchesAtRest     float64 `json:"watches_at_rest"`
	WatchesPerMachine float64 `json:"watches_per_machine"`
	Connections       float64 `json:"connections"`
	RestRates         window  `json:"rest_window"` // counts over RestRates.Seconds
	// RSS: a real agent at rest and its peak during the rollouts, and the
	// benchmark process per in-process agent (after bootstrap, minus
	// before the agents started).
	RealRSSRest        int64 `json:"real_rss_rest_bytes"`
	RealRSSPeak        int64 `json:"real_rss_peak_bytes"`
	BenchRSSPerAgent   int64 `json:"bench_rss_per_agent_bytes"`
	BenchRSSAfterBoot  int64 `json:"bench_rss_after_boot_bytes"`
	BenchRSSBeforeBoot int64 `json:"bench_rss_before_boot_bytes"`

	OneByOne *RolloutResult `json:"one_at_a_time,omitempty"`
	Domain   *RolloutResult `json:"domain_rack,omitempty"`
	Err      string         `json:"err,omitempty"`
}

// RolloutResult is one measured rollout.
type RolloutResult struct {
	Mode        string `json:"mode"` // "one at a time" or "domain: rack"
	Build       string `json:"build"`
	MaxParallel int    `json:"max_parallel"`
	Quorum      int    `json:"quorum"`
	// Unsupported: the spec of this run refused the mode (nothing measured).
	Unsupported string `json:"unsupported,omitempty"`

	StepsTotal    int  `json:"steps_total"`    // machines to step
	StepsMeasured int  `json:"steps_measured"` // machines that stepped within the measurement
	Complete      bool `json:"complete"`       // the deploy entry was done within the measurement
	// Seconds is push until the last measured machine served the new
	// version; DoneSeconds push until the entry was done (complete only).
	Seconds     float64 `json:"seconds"`
	DoneSeconds float64 `json:"done_seconds,omitempty"`
	// Extrapolated (when only the first steps were measured): Seconds +
	// (StepsTotal - StepsMeasured) x the measured pace between the first
	// and the last measured step.
	ExtrapolatedSeconds float64 `json:"extrapolated_seconds,omitempty"`
	// Periods: stretches with at least one machine down (a step of the
	// fleet); MaxDown: most machines down at once.
	Periods int `json:"periods"`
	MaxDown int `json:"max_down"`
	// Batches: runs of machines of the same rack in down order (one per
	// rack when a whole rack steps at once); BatchGap: from the last
	// machine of a batch serving to the first of the next going down.
	Batches       int     `json:"batches"`
	BatchGapP50MS float64 `json:"batch_gap_p50_ms,omitempty"`
	BatchGapP99MS float64 `json:"batch_gap_p99_ms,omitempty"`

	// Per-step overhead (one at a time): machine i serving (its up +
	// min_healthy) to machine i+1 going down.
	OverheadsMS   []float64 `json:"overheads_ms,omitempty"`
	OverheadP50MS float64   `json:"overhead_p50_ms"`
	OverheadP99MS float64   `json:"overhead_p99_ms"`
	OverheadP50RT float64   `json:"overhead_p50_round_trips"` // / idle write RTT
	OverheadP99RT float64   `json:"overhead_p99_round_trips"`
	DownP50MS     float64   `json:"down_p50_ms"` // a machine's down -> up
	PaceP50MS     float64   `json:"pace_p50_ms"` // up_i -> up_{i+1}

	// ZooKeeper work: Whole is push until the end of the measurement;
	// Steady is from the first to the last measured machine serving
	// (StepsMeasured - 1 steps), PerStep that divided by the steps, and
	// PerStepNet the same minus the at-rest background rate.
	// StagedSeconds: push until every machine had staged the build (or
	// stepped); SteadySteps: the steps in Steady.
	StagedSeconds float64 `json:"staged_seconds"`
	SteadySteps   int     `json:"steady_steps"`
	Whole         window  `json:"whole"`
	Steady        window  `json:"steady"`
	PerStep       window  `json:"per_step"`
	PerStepNet    window  `json:"per_step_net"`
	// PerStepNoPings: PerStep without the sessions' pings (computed from
	// the connection count and the ping interval): event-driven work plus
	// the agents' periodic re-reads.
	PerStepNoPings window  `json:"per_step_no_pings"`
	ZKCores        float64 `json:"zk_cpu_cores"` // ZooKeeper CPU over Whole / its seconds
	TimeSource     string  `json:"time_source"`
	// StepEquivalents (domain: rack): the rollout's time in one-at-a-time
	// steps of the same size (DoneSeconds / that rollout's pace).
	StepEquivalents float64  `json:"step_equivalents,omitempty"`
	Notes           []string `json:"notes,omitempty"`
	Err             string   `json:"err,omitempty"`
}

// Check is one target, passed or missed.
type Check struct {
	Target string `json:"target"`
	Got    string `json:"got"`
	Want   string `json:"want"`
	Pass   bool   `json:"pass"`
	// Measured is false when nothing could be measured (then Pass is false too).
	Measured bool `json:"measured"`
}

func (c Check) verdict() string {
	switch {
	case !c.Measured:
		return "not measured"
	case c.Pass:
		return "pass"
	}
	return "miss"
}

// requests are the ZooKeeper requests of a window: reads (which include
// pings) and writes.
func (w window) requests() float64 { return w.Reads + w.Writes }

// finish derives the checks from the sizes.
func (r *Result) finish() {
	r.Checks = nil
	// 1. Median overhead, every size.
	for _, s := range r.Sizes {
		o := s.OneByOne
		if o == nil || len(o.OverheadsMS) == 0 {
			r.Checks = append(r.Checks, Check{Target: fmt.Sprintf("median step overhead, N=%d", s.N), Want: "<= 5 round trips"})
			continue
		}
		r.Checks = append(r.Checks, Check{Target: fmt.Sprintf("median step overhead, N=%d", s.N),
			Got:  fmt.Sprintf("%.0f ms = %.1f RT", o.OverheadP50MS, o.OverheadP50RT),
			Want: "<= 5 round trips", Pass: o.OverheadP50RT <= targetOverheadRTT, Measured: true})
	}
	// 2. Growth of notifications and requests per step, smallest to largest.
	var lo, hi *SizeResult
	for i := range r.Sizes {
		s := &r.Sizes[i]
		if s.OneByOne == nil || s.OneByOne.StepsMeasured < 2 {
			continue
		}
		if lo == nil || s.N < lo.N {
			lo = s
		}
		if hi == nil || s.N > hi.N {
			hi = s
		}
	}
	for _, m := range []struct {
		name string
		f    func(window) float64
		pick func(*RolloutResult) window
	}{{"watch notifications per step", func(w window) float64 { return w.Notifications }, func(o *RolloutResult) window { return o.PerStep }},
		{"ZooKeeper requests per step (without pings)", window.requests, func(o *RolloutResult) window { return o.PerStepNoPings }},
		{"ZooKeeper requests per step (net of the rest rate)", window.requests, func(o *RolloutResult) window { return o.PerStepNet }}} {
		c := Check{Target: m.name + " growth", Want: "<= 2x from smallest to largest N"}
		if lo != nil && hi != nil && lo != hi {
			a, b := m.f(m.pick(lo.OneByOne)), m.f(m.pick(hi.OneByOne))
			g := ratio(b, a)
			c.Got = fmt.Sprintf("%.0f (N=%d) -> %.0f (N=%d): %.1fx", a, lo.N, b, hi.N, g)
			c.Pass, c.Measured = g <= targetGrowth, !math.IsNaN(g)
		}
		r.Checks = append(r.Checks, c)
	}
	// 3. Domain rollout of the largest size.
	c := Check{Target: "domain: rack rollout in about one step per rack", Want: fmt.Sprintf("<= %.2f x racks steps of time and batches, at the largest N (target: %d machines in %d racks)", targetDomainSlack, targetDomainN, targetDomainRacks)}
	for _, s := range r.Sizes {
		d := s.Domain
		if d == nil || d.Unsupported != "" || d.Err != "" || !d.Complete {
			if d != nil && d.Unsupported != "" {
				c.Got = "spec has no domain yet"
			}
			continue
		}
		c.Got = fmt.Sprintf("%.0f one-at-a-time steps of time (%.1f s), %d rack batches, %d racks (N=%d)", d.StepEquivalents, d.Seconds, d.Batches, s.Racks, s.N)
		c.Measured = d.StepEquivalents > 0
		c.Pass = c.Measured && d.StepEquivalents <= targetDomainSlack*float64(s.Racks) && float64(d.Batches) <= targetDomainSlack*float64(s.Racks)
	}
	r.Checks = append(r.Checks, c)
	// 4. Real agent RSS, the peak over every size.
	var peak int64
	for _, s := range r.Sizes {
		peak = max(peak, s.RealRSSPeak, s.RealRSSRest)
	}
	rc := Check{Target: "real dcroll agent RSS (peak)", Want: "<= 40 MiB"}
	if peak > 0 {
		rc.Got, rc.Pass, rc.Measured = mib(peak), peak <= targetAgentRSS, true
	}
	r.Checks = append(r.Checks, rc)
}

// finite is v, or 0 for NaN and infinities (JSON has neither).
func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

func mib(b int64) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}

// num formats a float for a table: "-" for NaN, no decimals from 100.
func num(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "-"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// Markdown renders the run: one column per size.
func (r *Result) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# bench/scale %s\n\n", r.Date.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "Per size: N in-process agents (agent.Run each, own ZooKeeper session) + %d real `dcroll agent` processes, one service, one ZooKeeper 3.8 (standalone, heap %s), a coordinator; min_healthy %s (a TCP health check that always passes), session timeout %s, poll interval %s, health interval %s. Machine: %d CPUs, shared (load %.1f at start, %.1f at end).\n\n",
		r.Config.Real, r.Config.ZKHeap, r.Config.MinHealthy, r.Config.SessionTimeout,
		orDefault(r.Config.PollInterval, "5s"), orDefault(r.Config.HealthInterval, "1s"), r.Host.CPUs, r.Host.Load1Start, r.Host.Load1End)
	fmt.Fprintf(&b, "Step times: %s.\n\n", TimeSource)

	head := "| | " + strings.Join(mapSizes(r.Sizes, func(s SizeResult) string { return fmt.Sprintf("N=%d", s.N) }), " | ") + " |\n"
	b.WriteString(head)
	b.WriteString("|---|" + strings.Repeat("---:|", len(r.Sizes)) + "\n")
	row := func(name string, f func(s SizeResult) string) {
		b.WriteString("| " + name + " | " + strings.Join(mapSizes(r.Sizes, f), " | ") + " |\n")
	}
	one := func(f func(o *RolloutResult) string) func(SizeResult) string {
		return func(s SizeResult) string {
			if s.OneByOne == nil {
				return "-"
			}
			return f(s.OneByOne)
		}
	}
	row("machines (racks)", func(s SizeResult) string { return fmt.Sprintf("%d (%d)", s.Machines, s.Racks) })
	row("write RTT idle / at rest (ms, median)", func(s SizeResult) string {
		return fmt.Sprintf("%s / %s", num(s.RTTIdle.WriteMS), num(s.RTTRest.WriteMS))
	})
	row("read RTT idle / at rest (ms, median)", func(s SizeResult) string {
		return fmt.Sprintf("%s / %s", num(s.RTTIdle.ReadMS), num(s.RTTRest.ReadMS))
	})
	row("bootstrap v1 (s)", func(s SizeResult) string { return num(s.BootstrapSeconds) })
	row("watches at rest (per machine)", func(s SizeResult) string {
		return fmt.Sprintf("%.0f (%s)", s.WatchesAtRest, num(s.WatchesPerMachine))
	})
	row("at rest: requests/s (of which writes/s)", func(s SizeResult) string {
		if s.RestRates.Seconds <= 0 {
			return "-"
		}
		return fmt.Sprintf("%s (%s)", num(s.RestRates.requests()/s.RestRates.Seconds), num(s.RestRates.Writes/s.RestRates.Seconds))
	})
	row("**one at a time**: steps measured / total", one(func(o *RolloutResult) string {
		return fmt.Sprintf("%d / %d", o.StepsMeasured, o.StepsTotal)
	}))
	row("step overhead median / p99 (ms)", one(func(o *RolloutResult) string {
		return fmt.Sprintf("%s / %s", num(o.OverheadP50MS), num(o.OverheadP99MS))
	}))
	row("step overhead median / p99 (write RTTs)", one(func(o *RolloutResult) string {
		return fmt.Sprintf("%s / %s", num(o.OverheadP50RT), num(o.OverheadP99RT))
	}))
	row("machine down->up / pace up->up (ms, median)", one(func(o *RolloutResult) string {
		return fmt.Sprintf("%s / %s", num(o.DownP50MS), num(o.PaceP50MS))
	}))
	row("staged everywhere after push (s) / steps in the per-step window", one(func(o *RolloutResult) string {
		return fmt.Sprintf("%s / %d", num(o.StagedSeconds), o.SteadySteps)
	}))
	row("per step: watch notifications", one(func(o *RolloutResult) string { return num(o.PerStep.Notifications) }))
	row("per step: requests (reads+writes) raw / without pings / net of rest", one(func(o *RolloutResult) string {
		return fmt.Sprintf("%s / %s / %s", num(o.PerStep.requests()), num(o.PerStepNoPings.requests()), num(o.PerStepNet.requests()))
	}))
	row("per step: writes raw / net", one(func(o *RolloutResult) string {
		return fmt.Sprintf("%s / %s", num(o.PerStep.Writes), num(o.PerStepNet.Writes))
	}))
	row("per step: packets received / sent (net)", one(func(o *RolloutResult) string {
		return fmt.Sprintf("%s / %s", num(o.PerStepNet.PacketsReceived), num(o.PerStepNet.PacketsSent))
	}))
	row("per step: ZooKeeper CPU (ms)", one(func(o *RolloutResult) string { return num(o.PerStep.ZKCPUSeconds * 1000) }))
	row("during the rollout: ZooKeeper / benchmark process CPU (cores), machine busy", one(func(o *RolloutResult) string {
		return fmt.Sprintf("%s / %s, %.0f %%", num(o.ZKCores), num(finite(ratio(o.Whole.BenchCPUSeconds, o.Whole.Seconds))), 100*o.Whole.MachineBusy)
	}))
	row("rollout time (s)", one(func(o *RolloutResult) string {
		switch {
		case o.Err != "":
			return "error"
		case o.ExtrapolatedSeconds > 0:
			return fmt.Sprintf("%s measured, **~%s extrapolated**", num(o.Seconds), num(o.ExtrapolatedSeconds))
		case o.Complete:
			return fmt.Sprintf("%s (last serving %s)", num(o.DoneSeconds), num(o.Seconds))
		}
		return num(o.Seconds) + " (incomplete)"
	}))
	dom := func(f func(o *RolloutResult) string) func(SizeResult) string {
		return func(s SizeResult) string {
			switch {
			case s.Domain == nil:
				return "-"
			case s.Domain.Unsupported != "":
				return "n/a"
			case s.Domain.Err != "":
				return "error"
			}
			return f(s.Domain)
		}
	}
	row("**domain: rack**: rollout time (s)", dom(func(o *RolloutResult) string {
		if !o.Complete {
			return num(o.Seconds) + " (incomplete)"
		}
		return fmt.Sprintf("%s (last serving %s)", num(o.DoneSeconds), num(o.Seconds))
	}))
	row("domain: rack: rack batches / periods (max down at once)", dom(func(o *RolloutResult) string {
		return fmt.Sprintf("%d / %d (%d)", o.Batches, o.Periods, o.MaxDown)
	}))
	row("domain: rack: in one-at-a-time steps of time", dom(func(o *RolloutResult) string { return num(o.StepEquivalents) }))
	row("domain: rack: gap between racks median / p99 (ms)", dom(func(o *RolloutResult) string {
		return fmt.Sprintf("%s / %s", num(o.BatchGapP50MS), num(o.BatchGapP99MS))
	}))
	row("domain: rack: per machine: notifications / requests without pings / net", dom(func(o *RolloutResult) string {
		return fmt.Sprintf("%s / %s / %s", num(o.PerStepNet.Notifications), num(o.PerStepNoPings.requests()), num(o.PerStepNet.requests()))
	}))
	row("real agent RSS at rest / peak", func(s SizeResult) string {
		return fmt.Sprintf("%s / %s", mib(s.RealRSSRest), mib(s.RealRSSPeak))
	})
	row("benchmark RSS per in-process agent", func(s SizeResult) string { return mib(s.BenchRSSPerAgent) })

	var notes []string
	for _, s := range r.Sizes {
		if s.Err != "" {
			notes = append(notes, fmt.Sprintf("N=%d: %s", s.N, oneLine(s.Err)))
		}
		for _, o := range []*RolloutResult{s.OneByOne, s.Domain} {
			if o == nil {
				continue
			}
			if o.Err != "" {
				notes = append(notes, fmt.Sprintf("N=%d %s: %s", s.N, o.Mode, oneLine(o.Err)))
			}
			for _, n := range o.Notes {
				notes = append(notes, fmt.Sprintf("N=%d %s: %s", s.N, o.Mode, n))
			}
			if o.Unsupported != "" {
				notes = append(notes, fmt.Sprintf("N=%d %s: not measured: %s", s.N, o.Mode, oneLine(o.Unsupported)))
			}
			if o.ExtrapolatedSeconds > 0 {
				notes = append(notes, fmt.Sprintf("N=%d %s: only the first %d of %d steps measured; the total is extrapolated at the measured pace (%s ms per step)",
					s.N, o.Mode, o.StepsMeasured, o.StepsTotal, num(o.PaceP50MS)))
			}
		}
	}
	notes = append(notes, r.Notes...)
	if len(notes) > 0 {
		b.WriteString("\n")
		for _, n := range notes {
			b.WriteString("- " + n + "\n")
		}
	}
	b.WriteString("\n| target | got | want | |\n|---|---|---|---|\n")
	for _, c := range r.Checks {
		got := c.Got
		if got == "" {
			got = "-"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", c.Target, got, c.Want, c.verdict())
	}
	b.WriteString("\nDefinitions: *overhead* = machine i+1's `down` - (machine i's `up` + min_healthy), in ms and in idle write round trips (median of sequential `Set`s of 200 bytes on a scratch node before any agent connected). *Per step* = ZooKeeper `mntr` deltas from the first machine serving after every machine staged (staging is once per machine and rollout) to the last measured machine serving, divided by the steps in between; for domain: rack, the whole rollout divided by the machines; *without pings* subtracts the sessions' pings (connections x seconds / (session timeout / 3), go-zookeeper's fixed ping rate), leaving event-driven work plus the agents' periodic re-reads (poll interval); *net* subtracts the whole at-rest rate (pings and periodic re-reads) measured just before the rollout: when that background is most of the traffic (N=1000) the difference is noisy. *Requests* = zk_cnt_readlatency + zk_cnt_updatelatency (reads include pings); *notifications* = the sum of zk_sum_node_{created,deleted,changed,children}_watch_count. *Periods* = stretches of time with at least one machine down; *rack batches* = runs of same-rack machines in the order they went down; *in one-at-a-time steps of time* = push to the last machine serving / the one-at-a-time pace (median up to next up) at the same size; *gap between racks* = first `down` of a rack - (last `up` of the previous rack + min_healthy).\n")
	return b.String()
}

func orDefault(d time.Duration, def string) string {
	if d == 0 {
		return def
	}
	return d.String()
}

func mapSizes(s []SizeResult, f func(SizeResult) string) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = f(x)
	}
	return out
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 400 {
		s = s[:400] + "..."
	}
	return s
}

// Write stores scale-<date>.json and .md in dir and returns the base path.
func (r *Result) Write(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	base := filepath.Join(dir, "scale-"+r.Date.UTC().Format("20060102-150405"))
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(base+".json", append(data, '\n'), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(base+".md", []byte(r.Markdown()), 0o644); err != nil {
		return "", err
	}
	return base, nil
}
