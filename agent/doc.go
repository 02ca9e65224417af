// Package agent is the dcroll agent: the daemon on every machine that runs
// its services and rolls them to what HEAD says, one machine at a time
// under each service's quorum, in the order of the deploy queue.
//
// # Pure core, thin driver
//
// The rules live in one pure function, [Decide]: given a [Snapshot] (this
// machine's local state, HEAD's entry for the service, the deploy queue,
// /dc/control, /dc/current/<svc>, /dc/down/<svc>, whether it holds a turn,
// and the time) it returns a [Decision]: Wait (with a human reason such as
// "quorum: 3 healthy, need 3 after me" or "window closed until 01:00 UTC"),
// Stage, TakeTurn, SpendAndStep (upgrade, settings or removal), WriteHalt, Adopt, StartVersion (the
// returning-machine rule), MarkDone, ClearDown, ReleaseTurn or Nothing. It
// does no I/O; decide_test.go checks it table by table.
//
// [Run] is the driver. Per service a worker loops:
//
//	boot: start (or adopt) the version in <data-dir>/<svc>/state.json,
//	      finishing a step interrupted by kill -9 on a healthy version
//	      (no ZooKeeper needed; if it is unreachable nothing else happens)
//	loop:
//	    read a snapshot through a znodes.WatchSet (one watch per path,
//	        unchanged paths answered without a round trip; an event only
//	        nudges a channel of buffer 1), budget first; what is read
//	        depends on what the machine may do (read.go): a bystander its
//	        own three nodes, the turn holder the service counted from
//	        children lists (znodes.ReadAvailability), a machine running
//	        nothing during a rollout the whole fleet once
//	    d := Decide(snapshot)
//	    act: stage in the background (fetch, verify, lock, unpack, then
//	         /dc/staging), queue for the turn in the background (TurnLock),
//	         spend the budget in one Multi {turn given up, budget set with
//	         the entry's spend count, step record create}, upgrade (stop,
//	         start, wait healthy; on failure halt the entry and revert;
//	         the end of a step is one Multi: running payload, /dc/up marker,
//	         step record deleted), reload settings
//	    wait for a nudge, a poll tick, a session change, a turn or a stage
//
// # Layout, by owner
//
//	decide.go   the pure rule (Decide, Snapshot, Decision); domains.go its
//	            upgrade-domain and wave rules
//	read.go     the snapshot read (what each machine reads, and why)
//	worker.go   the loop-owned driver: session, watch set, turn, staging,
//	            boot, the health loop, publication; no lock of its own
//	step.go     one step: spend, stop/start/reload, wait, revert, halt,
//	            finish; member records
//	local.go    the per-service local state (state.json, supervisor,
//	            health verdict, phase) behind its own lock; snapshot()
//	            hands out copies to the health loop, /status and payloads
//	health.go   release health times and the step's probe interval (the
//	            rule itself: supervise.Tracker)
//	state.go    the state.json format (crash-safety record, atomic save)
//	trust.go    the signed-HEAD gate; agent.go the runtime and Run;
//	            config.go every default, once; status.go /status;
//	            metrics.go /metrics; fetch.go blob fetchers; orphans.go
//	            processes left by a killed agent
//
// A suspended ZooKeeper session starts nothing new; a lost session drops the
// turn and staging entry (Registration re-creates /dc/current/<svc>/<m> and
// /dc/agents/<m>), and the loop decides again from scratch. Services are
// never stopped because ZooKeeper is unreachable, and they outlive the
// agent: the next agent adopts them from their PID files. A process an agent
// killed with SIGKILL started but never recorded (so nobody adopts it) is
// found by its working directory under <data-dir>/<svc>/versions and stopped
// before anything else is started: one instance per service and machine.
//
// /metrics serves Prometheus metrics and /status a JSON [Status] with each
// service's last decision and its reason.
package agent
