// Package faults is dcroll's fault-matrix suite: real `dcroll agent`
// processes on five "machines" of one host (m1..m3 in rack r1, m4 and m5
// in r2), each running two examples/hello services, store (quorum 3,
// max_parallel 1) and web (depends on store, quorum 60%, max_parallel 2),
// against a real three-node ZooKeeper ensemble, with blobs from a real
// origin over BitTorrent and a real `dcroll coordinator` process. The suite
// breaks things (kill -9, SIGSTOP, crashed machines, expired sessions, a
// killed ZooKeeper leader, a lost ZooKeeper quorum, operator moves landing
// mid-step) and judges the result from the services' own word: the verdict
// is dcroll/integration/checker's, which reads only the event log every
// hello instance appends to and its own /healthz probes. ZooKeeper is read
// only for the operator-visible outcome (completed, or halted with a
// reason) and to pick the moments of some faults, never for safety.
//
// # Harness
//
//	Cluster      one per test: ensemble, dcroll binary (built without -race),
//	             example builds v1, v2, v3 (broken: /healthz 500), v4;
//	             KillLeader, LoseQuorum(outage), Heal
//	Scenario     one per row (or shared by rows of one world): root znode
//	             /dc-<name>, origin, coordinator process, checker, machines;
//	             Bootstrap (v1 everywhere), Spec/Push/Rollback, WaitOutcome,
//	             WaitHalted, WaitCompleted, Never (an observation window),
//	             WaitEvent (event log), WaitAnyLog (agent JSON logs), Judge
//	Machine      Start/Stop/Kill/Freeze/Thaw the agent, KillService,
//	             Crash/Recover (checker.Excuse until healthy again),
//	             Partition/Heal, ExpireSession (through its own proxies to
//	             the ensemble), WaitUnregistered, Hello
//
// Every wait polls with a deadline; the only timed waits are the faults'
// own durations (a quorum outage, an observation window in which nothing
// may happen). Teardown kills every process the scenario started (services
// outlive agents by design: they are found by working directory) and, on
// failure, prints the checker report, the outcome and the end of every log
// (kept in $DCROLL_IT_KEEP_LOGS/<row> if set).
//
// # The table
//
// faults_test.go has one row per scenario: its faults, its expected
// outcome, and what the checker must find (checker.Expect). Each row logs
// the checker's report: per service the members, the quorum, the fewest
// healthy at once, the most unhealthy at once, the most racks unhealthy at
// once, and the time to finish. One row is a negative control: agents with
// DCROLL_TEST_UNSAFE_RULES=1 ignore quorum, max_parallel and racks, and the
// checker must report violations. The rows of the "domains" world
// (domains_test.go, appended to the table) run six machines in three
// racks and two data centers and check spec domain and waves with
// checker.CheckDomains and checker.CheckWaves.
//
// Run it with `make test-faults` (go test -race -timeout 15m
// ./integration/faults/); -short skips it.
package faults
