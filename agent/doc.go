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
//	    read a snapshot (watches armed once per path; an event only nudges
//	        a channel of buffer 1), budget version first
//	    d := Decide(snapshot)
//	    act: stage in the background (fetch, verify, lock, unpack, then
//	         /dc/staging), queue for the turn in the background (TurnLock),
//	         spend the budget in one Multi {turn check, budget set, down
//	         marker create}, upgrade (stop, start, wait healthy; on failure
//	         halt the entry and revert), reload settings, mark done
//	    wait for a nudge, a poll tick, a session change, a turn or a stage
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
