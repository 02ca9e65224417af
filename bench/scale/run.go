package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"dcroll/coordinator"
	"dcroll/spec"
)

// racksFor is the number of racks at a size: cfg.Racks, but at least two
// machines per rack (N=10 gets 5 racks).
func racksFor(n, racks int) int {
	return max(1, min(racks, n/2))
}

// specYAML is the spec of one build: max_parallel and quorum as given,
// domain (e.g. "rack") when non-empty. It goes through spec.Parse, so a
// field this version of spec does not know is an error naming it.
func specYAML(name, build, artifact, healthAddr string, minHealthy time.Duration, quorum, maxParallel int, domain string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "name: %s\nservices:\n  %s:\n", name, Service)
	fmt.Fprintf(&b, "    version: %q\n    artifact: %q\n    run: [\"./svc\"]\n", build, artifact)
	fmt.Fprintf(&b, "    health:\n      tcp: %q\n      timeout: 2s\n      min_healthy: %s\n      deadline: 2m\n", healthAddr, minHealthy)
	fmt.Fprintf(&b, "    quorum: %d\n    max_parallel: %d\n", quorum, maxParallel)
	if domain != "" {
		fmt.Fprintf(&b, "    domain: %s\n", domain)
	}
	return b.String()
}

func (e *env) spec(name, build string, quorum, maxParallel int, domain string) (*spec.Spec, error) {
	y := specYAML(name, build, e.blobs[build], e.healthAddr, e.cfg.MinHealthy, quorum, maxParallel, domain)
	sp, err := spec.Parse(name+".yaml", []byte(y))
	if err != nil && domain != "" && strings.Contains(err.Error(), "domain") {
		return nil, fmt.Errorf("%w: %v", errUnsupported, err)
	}
	return sp, err
}

func (e *env) push(sp *spec.Spec, supersede bool) error {
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
	defer cancel()
	_, err := coordinator.Push(ctx, e.conn, sp, coordinator.PushOptions{By: "bench-scale", Supersede: supersede})
	return err
}

// queueDone reports whether every deploy entry is done.
func (e *env) queueDone() (bool, error) {
	q, err := coordinator.ReadQueue(e.conn)
	if err != nil {
		return false, err
	}
	return len(q) > 0 && coordinator.Active(q) == nil, nil
}

// runSize measures one fleet size.
func runSize(ctx context.Context, cfg Config, n int, log *slog.Logger) (res SizeResult) {
	racks := racksFor(n+cfg.Real, cfg.Racks)
	total := n + cfg.Real
	res = SizeResult{N: n, Real: cfg.Real, Machines: total, Racks: racks}
	log = log.With("n", n)
	dir := filepath.Join(cfg.Work, fmt.Sprintf("n%d", n))
	e, err := newEnv(ctx, cfg, n, dir, log)
	defer e.close()
	fail := func(err error) SizeResult {
		res.Err = err.Error()
		log.Error("size failed", "err", err)
		return res
	}
	if err != nil {
		return fail(err)
	}
	log.Info("zookeeper up", "addr", e.zk.Addr(), "pid", e.zk.PID())
	// A fresh JVM compiles as it goes: warm it up, then measure.
	if _, err = rtt(ctx, e.conn.ZK(), "/scale-rtt", 3*cfg.RTTN); err != nil {
		return fail(err)
	}
	if res.RTTIdle, err = rtt(ctx, e.conn.ZK(), "/scale-rtt", cfg.RTTN); err != nil {
		return fail(err)
	}
	log.Info("idle round trips", "write_ms", res.RTTIdle.WriteMS, "read_ms", res.RTTIdle.ReadMS)
	if err := e.startHealth(); err != nil {
		return fail(err)
	}
	if err := e.publish(); err != nil {
		return fail(err)
	}
	if err := e.startCoordinator(); err != nil {
		return fail(err)
	}

	// Bootstrap: v1 is a new service, every machine starts it.
	res.BenchRSSBeforeBoot, _ = procRSS(os.Getpid())
	sp1, err := e.spec("scale-v1", "1", total-1, 1, "")
	if err != nil {
		return fail(err)
	}
	if err := e.push(sp1, false); err != nil {
		return fail(fmt.Errorf("push v1: %w", err))
	}
	t0 := time.Now()
	e.startInstances(racks)
	if err := e.startReal(racks); err != nil {
		return fail(err)
	}
	log.Info("agents started; waiting for v1 everywhere", "machines", total, "racks", racks)
	bootTimeout := cfg.BootTimeout
	if bootTimeout == 0 {
		bootTimeout = 3*time.Minute + time.Duration(total)*500*time.Millisecond
	}
	lastLog := time.Now()
	err = waitFor(ctx, bootTimeout, 500*time.Millisecond, "bootstrap v1", func() (bool, error) {
		run := runningVersion(e.events.poll())
		on := 0
		for _, v := range run {
			if v == "1" {
				on++
			}
		}
		if time.Since(lastLog) > 10*time.Second {
			log.Info("bootstrap", "running_v1", on, "of", total)
			lastLog = time.Now()
		}
		if on < total {
			return false, nil
		}
		return e.queueDone()
	})
	if err != nil {
		return fail(err)
	}
	res.BootstrapSeconds = time.Since(t0).Seconds()
	log.Info("bootstrap done", "seconds", res.BootstrapSeconds)

	// At rest.
	// Longer at larger sizes: the bootstrap's last reads die down, and
	// the rest window covers several poll intervals of every agent.
	scale := time.Duration(total) * 10 * time.Millisecond
	if err := sleepCtx(ctx, cfg.Settle+scale); err != nil {
		return fail(err)
	}
	res.BenchRSSAfterBoot, _ = procRSS(os.Getpid())
	if n > 0 {
		res.BenchRSSPerAgent = max(0, res.BenchRSSAfterBoot-res.BenchRSSBeforeBoot) / int64(n)
	}
	a, err := takeSample(ctx, e.zk.Addr(), e.zk.PID())
	if err != nil {
		return fail(err)
	}
	if err := sleepCtx(ctx, cfg.Rest+scale); err != nil {
		return fail(err)
	}
	b, err := takeSample(ctx, e.zk.Addr(), e.zk.PID())
	if err != nil {
		return fail(err)
	}
	res.RestRates = between(a, b)
	res.WatchesAtRest = b.M["zk_watch_count"]
	res.WatchesPerMachine = res.WatchesAtRest / float64(total)
	res.Connections = b.M["zk_num_alive_connections"]
	for _, p := range e.realPIDs() {
		if v, err := procRSS(p); err == nil {
			res.RealRSSRest = max(res.RealRSSRest, v)
		}
	}
	if res.RTTRest, err = rtt(ctx, e.conn.ZK(), "/scale-rtt", cfg.RTTN); err != nil {
		return fail(err)
	}
	log.Info("at rest", "watches", res.WatchesAtRest, "per_machine", res.WatchesPerMachine,
		"requests_per_s", res.RestRates.requests()/res.RestRates.Seconds, "write_rtt_ms", res.RTTRest.WriteMS)

	// One at a time.
	rctx, stopRSS := context.WithCancel(ctx)
	peaks := watchRSS(rctx, e.realPIDs(), 200*time.Millisecond)
	defer stopRSS()
	sp2, err := e.spec("scale-v2", "2", total-1, 1, "")
	if err != nil {
		return fail(err)
	}
	limit := total
	if cfg.Steps > 0 && cfg.Steps < total && n >= cfg.StepsMinN {
		limit = cfg.Steps
	}
	res.OneByOne = e.rollout(ctx, "one at a time", sp2, "2", total, limit, false, res.RTTIdle, res.RestRates, log)

	// domain: rack: a whole rack at a time (max_parallel and quorum leave
	// room for the largest rack).
	perRack := (total + racks - 1) / racks
	sp3, err := e.spec("scale-v3", "3", total-perRack, perRack, "rack")
	switch {
	case errors.Is(err, errUnsupported):
		res.Domain = &RolloutResult{Mode: "domain: rack", Build: "3", MaxParallel: perRack, Quorum: total - perRack, Unsupported: err.Error()}
		log.Warn("domain: rack not measured", "err", err)
	case err != nil:
		res.Domain = &RolloutResult{Mode: "domain: rack", Err: err.Error()}
	default:
		res.Domain = e.rollout(ctx, "domain: rack", sp3, "3", total, total, true, res.RTTIdle, res.RestRates, log)
	}
	if d, o := res.Domain, res.OneByOne; d != nil && o != nil && d.Complete && o.PaceP50MS > 0 {
		d.StepEquivalents = d.Seconds / (o.PaceP50MS / 1000)
	}
	for _, p := range e.realPIDs() {
		res.RealRSSPeak = max(res.RealRSSPeak, peaks.get(p))
	}
	return res
}

// rollout pushes sp (build) and measures until limit machines serve it
// (and, when limit is every machine, until the entry is done).
func (e *env) rollout(ctx context.Context, mode string, sp *spec.Spec, build string, total, limit int, supersede bool, idle RTT, rest window, log *slog.Logger) *RolloutResult {
	svc := sp.Services[Service]
	r := &RolloutResult{Mode: mode, Build: build, MaxParallel: svc.MaxParallel, Quorum: svc.Quorum.Count,
		StepsTotal: total, TimeSource: TimeSource}
	log = log.With("mode", mode)
	s0, err := takeSample(ctx, e.zk.Addr(), e.zk.PID())
	if err != nil {
		r.Err = err.Error()
		return r
	}
	tPush := time.Now()
	if err := e.push(sp, supersede); err != nil {
		r.Err = fmt.Sprintf("push: %v", err)
		return r
	}
	timeout := e.cfg.RolloutTimeout
	if timeout == 0 && svc.MaxParallel > 1 { // a batch per rack
		timeout = 3*time.Minute + time.Duration((limit+svc.MaxParallel-1)/svc.MaxParallel)*(e.cfg.MinHealthy+20*time.Second)
	} else if timeout == 0 {
		timeout = 3*time.Minute + time.Duration(limit)*(e.cfg.MinHealthy+3*time.Second)
	}
	// Samples: first = the first machine serving after every machine
	// staged (staging is a one-time cost per machine and rollout, not a
	// per-step one: with -steps it would fall entirely into the few
	// measured steps); lastUp = the limit-th machine serving; last = the
	// end (the entry done, or the next machine down after a partial
	// measurement).
	var first, lastUp, last sample
	haveFirst, haveLastUp, staged := false, false, false
	firstUps, lastUps, stagedUps := 0, 0, 0
	var st []step
	lastLog, lastQueue, lastStaging := time.Now(), time.Time{}, time.Time{}
	stagingDir := e.conn.Paths().Staging(Service)
	err = waitFor(ctx, timeout, 20*time.Millisecond, mode+" rollout", func() (bool, error) {
		st = steps(eventsSince(e.events.poll(), tPush), build)
		ups := 0
		for _, s := range st {
			if !s.Up.IsZero() {
				ups++
			}
		}
		if !staged && time.Since(lastStaging) >= 250*time.Millisecond {
			lastStaging = time.Now()
			// a machine that stepped has removed its staging entry
			if names, _, err := e.conn.ZK().Children(stagingDir); err == nil && len(names)+ups >= total {
				staged, stagedUps = true, ups
				r.StagedSeconds = time.Since(tPush).Seconds()
			}
		}
		if !haveFirst && ups >= 1 && ((staged && ups > stagedUps) || (!staged && ups >= limit)) {
			s, err := takeSample(ctx, e.zk.Addr(), e.zk.PID())
			if err != nil {
				return false, err
			}
			first, firstUps, haveFirst = s, ups, true
		}
		if time.Since(lastLog) > 10*time.Second {
			log.Info("rolling", "stepped", ups, "of", limit, "staged", staged)
			lastLog = time.Now()
		}
		if ups < limit {
			return false, nil
		}
		if !haveLastUp {
			s, err := takeSample(ctx, e.zk.Addr(), e.zk.PID())
			if err != nil {
				return false, err
			}
			lastUp, lastUps, haveLastUp = s, ups, true
		}
		if limit < total { // partial: also wait for the next machine to go down (the last overhead)
			if len(st) > limit {
				s, err := takeSample(ctx, e.zk.Addr(), e.zk.PID())
				last = s
				return err == nil, err
			}
			return false, nil
		}
		if time.Since(lastQueue) < 200*time.Millisecond {
			return false, nil
		}
		lastQueue = time.Now()
		done, err := e.queueDone()
		if done {
			r.Complete = true
			r.DoneSeconds = time.Since(tPush).Seconds()
			last, err = takeSample(ctx, e.zk.Addr(), e.zk.PID())
		}
		return done && err == nil, err
	})
	if err != nil {
		r.Err = err.Error()
		log.Warn("rollout not finished", "err", err)
		if last.M == nil {
			last, _ = takeSample(ctx, e.zk.Addr(), e.zk.PID())
		}
	}
	// Keep only the measured steps (a partial rollout goes on): the first
	// limit machines down, and the next one's down, which closes the last
	// overhead.
	withNext := st[:min(len(st), limit+1)]
	var measured []step
	for _, s := range st[:min(len(st), limit)] {
		if !s.Up.IsZero() {
			measured = append(measured, s)
		}
	}
	r.StepsMeasured = len(measured)
	r.Periods, r.MaxDown = busyPeriods(measured)
	nb, gaps := batches(measured, e.domains(), e.cfg.MinHealthy)
	r.Batches = nb
	if svc.MaxParallel > 1 {
		g := durationsMS(gaps)
		r.BatchGapP50MS, r.BatchGapP99MS = finite(percentile(g, 50)), finite(percentile(g, 99))
	}
	ov := durationsMS(overheads(withNext, e.cfg.MinHealthy))
	if svc.MaxParallel == 1 {
		r.OverheadsMS = ov
		r.OverheadP50MS, r.OverheadP99MS = finite(percentile(ov, 50)), finite(percentile(ov, 99))
		r.OverheadP50RT = finite(ratio(r.OverheadP50MS, idle.WriteMS))
		r.OverheadP99RT = finite(ratio(r.OverheadP99MS, idle.WriteMS))
	}
	var downs, pace []float64
	for i, s := range measured {
		downs = append(downs, float64(s.Up.Sub(s.Down))/float64(time.Millisecond))
		if i > 0 {
			pace = append(pace, float64(s.Up.Sub(measured[i-1].Up))/float64(time.Millisecond))
		}
	}
	r.DownP50MS, r.PaceP50MS = finite(percentile(downs, 50)), finite(percentile(pace, 50))
	if len(measured) > 0 {
		r.Seconds = measured[len(measured)-1].Up.Sub(tPush).Seconds()
	}
	if r.StepsMeasured >= 2 && r.StepsMeasured < total {
		paceS := measured[len(measured)-1].Up.Sub(measured[0].Up).Seconds() / float64(len(measured)-1)
		r.ExtrapolatedSeconds = r.Seconds + float64(total-r.StepsMeasured)*paceS
	}
	if last.M != nil {
		r.Whole = between(s0, last)
		r.ZKCores = finite(ratio(r.Whole.ZKCPUSeconds, r.Whole.Seconds))
		if haveFirst && haveLastUp && lastUps > firstUps {
			r.Steady = between(first, lastUp)
			r.SteadySteps = lastUps - firstUps
			stepsIn := float64(r.SteadySteps)
			r.PerStep = r.Steady.per(stepsIn)
			r.PerStepNet = r.Steady.net(rest).per(stepsIn)
			r.PerStepNoPings = r.Steady.withoutPings(first, lastUp, e.cfg.SessionTimeout).per(stepsIn)
		}
		if !staged {
			r.Notes = append(r.Notes, "staging was not seen complete before the last measured step: the per-step window includes staging")
		}
		if svc.MaxParallel > 1 && r.StepsMeasured > 0 {
			// domain mode: per machine over the whole rollout
			r.PerStep = r.Whole.per(float64(r.StepsMeasured))
			r.PerStepNet = r.Whole.net(rest).per(float64(r.StepsMeasured))
			r.PerStepNoPings = r.Whole.withoutPings(s0, last, e.cfg.SessionTimeout).per(float64(r.StepsMeasured))
		}
	}
	log.Info("rollout measured", "steps", r.StepsMeasured, "seconds", r.Seconds, "overhead_p50_ms", r.OverheadP50MS,
		"overhead_rt", r.OverheadP50RT, "periods", r.Periods, "notifications_per_step", r.PerStep.Notifications,
		"requests_per_step_net", r.PerStepNet.requests())
	return r
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
