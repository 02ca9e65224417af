// Command scale measures what a rollout costs ZooKeeper as the fleet grows
// (issue 8, "Scale benchmark"): for each size N (-sizes 10,100,1000) it
// starts one ZooKeeper 3.8 (integration/zkserver), an origin, a
// coordinator (coordinator.Run), N agents in this process (agent.Run
// each, with its own ZooKeeper session, data dir, machine name and rack:
// the real driver and decision code; blobs from a directory through
// agent.DirFetcher) and -real real `dcroll agent` processes (BitTorrent
// from the origin), all members of one service.
//
// The service is a shell script that appends "up <unix.ns> <machine>
// <version>" to a shared event log when it starts and "down ..." when it
// gets SIGTERM, then sleeps; its health check is a TCP port of this
// process that always accepts, so an instance counts as healthy
// -min-healthy after it started. Step times come from that event log.
//
// Per size: push v1 and wait until every machine runs it (bootstrap);
// at rest: watches (mntr zk_watch_count), background request rates,
// round trips (sequential Sets and Gets on a scratch node), RSS; then a
// rollout v1 -> v2 one at a time (max_parallel 1; -steps K measures only
// the first K steps and extrapolates the total), and, when the spec knows
// `domain: rack`, a rollout v2 -> v3 a rack at a time. Per step: overhead
// (machine i serving to machine i+1 going down, in ms and in write round
// trips), mntr deltas (requests, writes, packets, watch notifications),
// ZooKeeper CPU from /proc/<pid>/stat; the peak VmRSS of the real agents.
//
// Usage:
//
//	go run ./bench/scale [-sizes 10,100,1000] [-steps 60] [-racks 20] [-real 2]
//	    [-min-healthy 50ms] [-out bench/results] [-keep] [-v]
//	go run ./bench/scale -render bench/results/scale-DATE.json   # re-render the markdown
//
// Every child process (ZooKeeper, real agents, services) and the scratch
// directory ($TMPDIR/scale-bench-*) are removed on exit and on Ctrl-C; a
// crashed run's leftovers are removed by the next run. Results:
// bench/results/scale-<date>.{json,md}; see bench/README.md.
package main
