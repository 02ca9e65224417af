// Package checker judges the safety of a rollout from what the services
// themselves did, trusting neither ZooKeeper nor the agent or coordinator
// code: it shares no code with them and reads nothing they write. Its two
// sources are the event log every hello instance appends to
// ($HELLO_EVENT_LOG, see examples/hello) and its own probes of every
// instance's /healthz.
//
// # Use
//
//	c, err := checker.Start(ctx, checker.Config{EventLog: log, Instances: ..., Rules: ...})
//	c.Mark("push v2")
//	... push, inject faults (c.Excuse(svc, m, true) before killing m) ...
//	rep := c.Judge(checker.Expect{Since: "push v2", Targets: ..., Final: ..., Bad: ...})
//	c.Stop()
//	if !rep.OK() { t.Error(rep) }
//
// Start after the services are up (or Mark once they are and judge Since
// the mark): an instance with no event yet counts as not healthy. Versions
// are those hello reports, its -X main.version.
//
// # Main loop
//
// Start runs one goroutine per instance: GET HealthURL (no keep-alive, 2s
// timeout), record {start, end, status, JSON version, error}, wait for
// the next tick of ProbeInterval. Judge probes every instance once more
// (unless stopped), reads the whole event log, and then computes everything
// from the records alone:
//
//	per instance: merge log events and probes into a step function
//	    (healthy?, logged version) -- the timeline
//	every instant at which any timeline or Excuse changes, from Since to
//	    the end (Judge, or Stop): count per service, update the figures,
//	    extend or close a breach
//	dependency order, end state, time to finish
//
// # Merging the log and the probes
//
// The log tells when an instance claims to be healthy; the probes catch
// what the log cannot say (a SIGKILL, a hang, a process that never logged).
// Neither is trusted alone: an instance counts as healthy at t only if both
// sources say healthy at t.
//
//   - Log: healthy from an `up` event until its next event (`unhealthy` or
//     `down`); before its first event an instance is not healthy. The state
//     at Since comes from the events before it.
//   - Probes: a probe fails on no answer (refused, reset, timeout), a status
//     other than 200, an answer without a JSON "version", or a version the
//     log did not show between the probe's start and its end (the version
//     logged at its start, or by an event while it ran). A failed probe
//     makes the instance not healthy from the probe's START (the earliest
//     instant the failure may have begun) until the END of the next good
//     probe (the latest instant at which health may have come back) or the
//     first event logged after the failure was certain (when the dial was
//     refused, else when the probe ended), whichever is first. So an
//     outage nobody logged (SIGKILL, a hang) lasts from the first failed
//     probe until the instance logs again or answers well; an event logged
//     while a probe was failing cannot hide that failure.
//     A good probe alone never makes an instance healthy: the log must say
//     `up` too.
//
// The uncertainty of a probe thus always counts against the instance: one
// in flight when an instance goes away counts from its start, one that
// heals it only from its end. A harness that moves on the moment an
// instance is back (unlike an agent, which waits min_healthy) can therefore
// see a breach of a few milliseconds; let every instance be probed twice
// before the next step (see settle in checker_test.go).
//
// Events are ordered by their own timestamps; the probes by the checker's
// wall clock (all on one host). hello writes `up` only once /healthz already
// answers 200 and `unhealthy`/`down` before it stops doing so, so the two
// sources agree except around the instants probes happen to catch.
//
// # Rules
//
// At every instant in the judged period, for every service:
//
//   - quorum: healthy instances >= QuorumCount, or if that is 0
//     ceil(QuorumPercent x members / 100). An excused instance counts as
//     healthy only if it is measured healthy: excusing never helps quorum.
//   - max parallel: instances not healthy and not excused <= MaxParallel
//     (0 means 1).
//   - racks: racks with an instance not healthy and not excused <= 1.
//
// A breach over consecutive instants is one violation line: its start
// (offset since Start), its duration, the worst value and every instance
// involved.
//
// Dependency order: for B with DependsOn A, both in Expect.Targets, the
// first `up` of each instance of B on B's target (in the judged period)
// must come when A is done: A was complete (every member healthy on A's
// target) at some earlier instant and has stayed so since, where a member
// excused meanwhile still counts (the test broke it, not the rollout).
// A dependency with no members is a violation (it cannot be checked).
//
// End state: the last probe of each instance (the final round of Judge, or
// the last before Stop) and its timeline at the end. Each Expect.Final entry
// must answer 200 with that version and be healthy on it by the timeline;
// no instance may answer (any status) with a version in Expect.Bad.
//
// Also violations, never ignored: a line of the log that does not parse
// (named by its line number), an event of a known service from a machine
// that is no member, a missing event log, an unknown Since mark, an Excuse
// naming no member. Lines of services with no members are skipped.
//
// Figures per service over the judged period: members, the resolved
// quorum, the fewest healthy, the most unhealthy (not excused) and the most
// racks unhealthy at once. Report.Finish is from Since to the last `up` on
// a target version.
package checker
