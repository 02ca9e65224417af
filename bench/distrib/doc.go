// Command distrib benchmarks blob distribution on real test hosts: racks of
// network namespaces joined by tc-shaped links (package integration/netns).
//
// One run creates one random blob and measures, on the same fabric and blob,
// in this order (default modes):
//
//  1. rack: the dcroll swarm (distrib origin + rack-aware tracker + agents);
//  2. aria2c: the stock swarm, aria2c + opentracker (Debian packages), a
//     torrent of the same blob with the same piece length;
//  3. kill-chain, kill-gw: rack swarm, a chain member / the gateway of rack
//     r1 killed (SIGKILL) when it holds 30 % of the blob;
//  4. kill-origin: rack swarm, the origin (seeder, web seed and tracker)
//     killed when the gateways hold half the blob on average;
//  5. wan: rack swarm on two data centers (r0 + origin in dc1, the other
//     racks in dc2 behind a slower WAN link).
//
// Also available: random (tracker rack ordering off), central (every host
// GETs the blob from the seeder over HTTP at once), rack-gw (an experiment).
//
// For each mode it reports the time until every (surviving) host holds the
// verified blob, that time over the lower bound, median host, per-host
// timelines (first byte, half, done; bytes held every second in the JSON),
// the bytes that entered the racks over their uplinks (and crossed the WAN),
// and the CPU of the benchmark's process trees. The seeder sits on the core
// switch, so every rack must pull at least one copy through its uplink: the
// cross-rack anchor is S x racks (not S x (racks-1)).
//
// Usage (as root):
//
//	go run ./bench/distrib [-quick] [-size 128MiB] [-racks 3] [-hosts 8]
//	    [-host-mbit 16] [-uplink-mbit 32] [-seeder-mbit 48] [-out bench/results]
//	    [-modes rack,aria2c,kill-chain,kill-gw,kill-origin,wan] [-piece-length 0]
//	    [-request-window 0] [-chain-span 0] [-wan-mbit 8] [-wan-delay 20ms]
//	    [-notsent-lowat 0] [-keep] [-v]
//
// See bench/README.md for the fabric, the metrics and why these rates.
//
// The program re-executes itself inside the namespaces with hidden
// subcommands: "origin" (seeder), "host" (one machine's fetch) and "zk"
// (ZooKeeper reachable on the fabric). A host prints one JSON line when ready,
// waits for "go" on stdin, fetches (printing a progress line every 250 ms in
// the swarm modes), prints a "done" line, keeps seeding until "stop", then
// re-hashes the blob and prints a "verified" line.
package main
